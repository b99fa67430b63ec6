"""The marks feed: IB market prices of every held instrument, and the FX rates the book needs,
streamed into the service's `StreamMarks`, so that unrealized P&L and exposure move with the
market instead of sitting at the last fill's price.

Run it as its own process (`scripts/marks`, `python -m relay.marks_feed --help`) beside the
relay, with its own API client id. Market data needs neither the master client id nor a
read-write connection: it connects read-only.

- Which instruments: those the service's book holds (account-level rows that are not flat, in
  every account), read every --refresh-seconds. The book, not TWS's `reqPositions`, is the truth
  of what is held across strategies (and it holds paper accounts TWS never sees). An instrument
  id becomes an IB conId through the relay's --contract-map read backwards, or is the conId
  itself; `reqContractDetails` then gives the exchange and currency market data needs (stocks
  are asked on SMART, IB's consolidated quote). When an instrument goes flat its market data
  is cancelled (`cancelMktData`).
- FX rates: each pair the book needs (a row's currency against its account's base currency)
  and every --fx-pairs pair, as an IB CASH contract on IDEALPRO in whichever direction IB lists
  it: EUR.USD is base EUR, quote USD.
- Which ticks: bid (1), ask (2), last (4) and close (9), or the delayed ones (66, 67, 68, 75).
  --price midpoint marks at (bid + ask) / 2, else the last trade, else the previous close;
  --price last prefers the last trade, then the midpoint, then the close. FX rates are priced
  the same way. A crossed quote (bid above ask) is no quote.
- Exact decimals: ib_async parses TWS's text into floats; each is read back through its repr
  (`tws.amounts`), never through float arithmetic. NaN, IB's unset value and -1 (IB's "no
  price") are no price.
- Coalescing: ticks only replace the latest quote per contract; every --interval one batch
  carries each quote that changed since the last one: at most one mark per instrument (and one
  rate per pair) per interval. Every quote is also resent at least once a minute, so that a
  service restarted in between starts from current prices.
- Reconnects: after every (re)connect to TWS the feed sets the market data type and subscribes
  again to everything held. While the service is unreachable the latest quotes wait, and all
  of them go once it answers. A batch the service refuses is sent again entry by entry, so one
  bad price is logged and dropped without holding back the others.
- Refused credentials: a service that refuses the feed's marks or its reading of the book
  (UNAUTHENTICATED, PERMISSION_DENIED: a principal without the marks or a reader role) answered;
  it is not down. Each refusal is said at ERROR once when it starts (or its status changes) and
  once at INFO when it clears, and counted (`stats.refusals`); refused marks are retried with
  back-off (--interval doubling up to 10 s), so a corrected auth file on the service takes
  effect without a restart, and then every latest quote goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, localcontext

from ib_async import Contract, Ticker

from client import AsyncPortfolioClient, PortfolioError, PositionLevel
from client.marks import MAX_MARK_BATCH, FxRate, MarkAck, MarkPrice
from relay.health import Refusals, is_refusal
from relay.marks_config import MarketDataType, MarksConfig, PriceChoice, parse_args
from relay.relay import PORTFOLIO_CHANNEL_OPTIONS
from tws.amounts import optional_amount
from tws.connection import IbConnection, ReconnectPolicy, quiet_ib_async
from tws.contracts import ContractMap, ContractMapError

__all__ = ["MarksFeed", "MarksStats", "Quote", "main", "quote_of", "run", "tick_price"]

log = logging.getLogger("portfolio.marks")

#: While the service refuses the feed's marks, sends wait this long at most between tries.
REFUSED_RETRY_MAX_SECONDS = 10.0

#: IB's "no price" in a price tick.
_NO_PRICE = Decimal(-1)
#: Every quote goes at least this often (seconds), changed or not.
RESEND_SECONDS = 60.0
_FX_EXCHANGE = "IDEALPRO"
_Work = Callable[[], Awaitable[None]]
#: TWS errors that mean "no market data for this contract", with what to do about it.
_DATA_ERRORS = {
    200: "no such contract at TWS",
    354: "market data not subscribed: add the permission, or run with --market-data-type delayed",
    10089: "market data needs additional subscriptions (delayed data may be available)",
    10090: "part of the market data is not subscribed",
    10091: "market data needs additional subscriptions",
    10167: "showing delayed market data (no live subscription)",
    10168: "delayed market data is not enabled for this account",
}


def tick_price(value: float | int) -> Decimal | None:
    """A price from ib_async, exactly as TWS wrote it; None for no price (unset, NaN, -1)."""
    price = optional_amount(value)
    return None if price is None or price == _NO_PRICE else price


@dataclass(frozen=True, slots=True)
class Quote:
    """What TWS last said about one contract (None: not said, or no price)."""

    bid: Decimal | None
    ask: Decimal | None
    last: Decimal | None
    close: Decimal | None
    time: datetime

    @property
    def figures(self) -> tuple[Decimal | None, ...]:
        return self.bid, self.ask, self.last, self.close

    @property
    def midpoint(self) -> Decimal | None:
        if self.bid is None or self.ask is None:
            return None
        with localcontext() as exact:
            exact.prec = 80  # halving a decimal adds at most one digit: exact
            return (self.bid + self.ask) / 2

    def price(self, choice: PriceChoice) -> Decimal | None:
        """The mark `choice` asks for, with the fallbacks the module docstring lists."""
        if choice is PriceChoice.LAST:
            order = (self.last, self.midpoint, self.close)
        else:
            order = (self.midpoint, self.last, self.close)
        return next((p for p in order if p is not None), None)


def quote_of(ticker: Ticker, now: datetime | None = None) -> Quote:
    """The ticker's prices as exact decimals; a crossed bid/ask counts as neither."""
    bid, ask = tick_price(ticker.bid), tick_price(ticker.ask)
    if bid is not None and ask is not None and bid > ask:
        bid = ask = None
    moment = ticker.time if ticker.time is not None and ticker.time.tzinfo else None
    return Quote(
        bid, ask, tick_price(ticker.last), tick_price(ticker.close), moment or now or _now()
    )


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class MarksStats:
    """What the feed has done since it started (logs, tests, a health surface)."""

    #: Marks and FX rates the service applied.
    marks_applied: int = 0
    fx_rates_applied: int = 0
    #: Older than what the service held: ignored by it.
    stale: int = 0
    #: Marks and rates the service refused (each logged with its reason) and dropped.
    refused: int = 0
    #: Sends that did not reach the service (their quotes wait and go later).
    send_failures: int = 0
    #: Sends and book reads the service refused for the feed's credentials (retried).
    refusals: int = 0
    #: Market data lines open now (one per contract).
    subscriptions: int = 0
    subscribed_total: int = 0
    cancelled_total: int = 0
    #: Held instruments and needed pairs with no IB contract (logged once each).
    unresolved: tuple[str, ...] = ()
    #: TWS errors about market data (permissions, unknown contracts).
    market_data_errors: int = 0
    service_reachable: bool = True


@dataclass(slots=True)
class _Line:
    """One market data subscription: a contract, and what its price feeds."""

    contract: Contract
    instrument_ids: frozenset[str]
    #: (base, quote) when the line is also an FX rate (a CASH contract).
    fx: tuple[str, str] | None
    #: None while not subscribed on the current connection.
    ticker: Ticker | None = None
    quote: Quote | None = None
    sent_at: float = field(default=float("-inf"))  # monotonic


@dataclass(slots=True)
class _Wanted:
    contract: Contract
    instrument_ids: set[str] = field(default_factory=set)
    fx: tuple[str, str] | None = None


class MarksFeed:
    """IB ticks in, marks and FX rates out; `start()` returns at once, `stop()` sends the
    latest quotes and stops."""

    def __init__(
        self,
        connection: IbConnection,
        client: AsyncPortfolioClient,
        contract_map: ContractMap | None = None,
        *,
        market_data_type: MarketDataType = MarketDataType.LIVE,
        price: PriceChoice = PriceChoice.MIDPOINT,
        interval: float = 1.0,
        refresh_seconds: float = 5.0,
        fx_pairs: Iterable[tuple[str, str]] = (),
        resend_seconds: float = RESEND_SECONDS,
        request_timeout: float = 10.0,
    ) -> None:
        self._connection = connection
        self._client = client
        contracts = contract_map or ContractMap()
        self._con_ids = {instrument: con_id for con_id, instrument in contracts.ids.items()}
        self.market_data_type = market_data_type
        self.price = price
        self._interval = interval
        self._refresh_seconds = refresh_seconds
        self._fx_pairs = frozenset(fx_pairs)
        self._resend_seconds = resend_seconds
        self._request_timeout = request_timeout
        self.stats = MarksStats()
        # Whether the service refuses the feed's credentials, per kind of call.
        self._marks_refused = Refusals("the marks feed's marks", log)
        self._book_refused = Refusals("the marks feed's reading of the book", log)
        self._refused_retry = ReconnectPolicy(
            initial=interval, factor=2.0, maximum=max(interval, REFUSED_RETRY_MAX_SECONDS)
        )
        self._refused_sends = 0  # in a row
        self._retry_at = float("-inf")  # monotonic: no send before, while refused
        self._lines: dict[int, _Line] = {}  # conId -> line
        self._contracts: dict[int, Contract] = {}  # conId -> the contract TWS described
        self._fx_contracts: dict[frozenset[str], Contract] = {}
        self._held: tuple[frozenset[str], frozenset[tuple[str, str]]] = (frozenset(), frozenset())
        self._dirty: set[int] = set()
        self._resend_all = False
        self._refreshing = asyncio.Lock()
        self._logged: set[object] = set()  # what was logged once already
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        connection.add_on_connected(self._on_connected)

    @property
    def connection(self) -> IbConnection:
        return self._connection

    def subscribed(self) -> dict[str, int]:
        """Instrument id (or "EUR.USD" for an FX line) -> the conId subscribed for it."""
        found: dict[str, int] = {}
        for con_id, line in self._lines.items():
            if line.ticker is None:
                continue
            for instrument_id in line.instrument_ids:
                found[instrument_id] = con_id
            if line.fx is not None:
                found[".".join(line.fx)] = con_id
        return found

    def latest(self, instrument_id: str) -> Quote | None:
        """The latest quote behind an instrument's marks (or an "EUR.USD" rate), if any."""
        for line in self._lines.values():
            if instrument_id in line.instrument_ids or (
                line.fx is not None and ".".join(line.fx) == instrument_id
            ):
                return line.quote
        return None

    # -----------------------------------------------------------------------------------------
    # Life cycle

    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        ib = self._connection.ib
        ib.pendingTickersEvent += self._on_tickers
        ib.errorEvent += self._on_error
        self._tasks = [
            asyncio.create_task(self._every(self._interval, self.flush), name="marks flush"),
            asyncio.create_task(
                self._every(self._refresh_seconds, self.refresh), name="marks refresh"
            ),
        ]
        await self._connection.start()

    async def stop(self) -> None:
        """Stops listening, sends the quotes not sent yet (once) and disconnects."""
        if not self._running:
            return
        self._running = False
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        ib = self._connection.ib
        ib.pendingTickersEvent -= self._on_tickers
        ib.errorEvent -= self._on_error
        with contextlib.suppress(Exception):
            await self.flush()
        await self._connection.stop()
        for line in self._lines.values():
            line.ticker = None
        self.stats.subscriptions = 0
        log.info("marks feed stopped: %s", self.stats)

    async def _every(self, seconds: float, work: _Work) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await work()
            except Exception:
                log.exception("marks feed: %s failed", getattr(work, "__name__", work))

    async def _on_connected(self) -> None:
        """A new connection has no subscriptions: set the data type, subscribe again."""
        for line in self._lines.values():
            line.ticker = None
        self._connection.ib.reqMarketDataType(int(self.market_data_type))
        log.info(
            "market data type %s (%d)", self.market_data_type.name.lower(), self.market_data_type
        )
        await self.refresh()

    # -----------------------------------------------------------------------------------------
    # Which contracts to watch

    async def refresh(self, *, read_book: bool = True) -> None:
        """Reads what the book holds and (un)subscribes to match: what went flat is cancelled,
        what is new is subscribed."""
        async with self._refreshing:
            if read_book:
                held = await self._read_book()
                if held is not None:
                    self._held = held
            if not self._connection.connected:
                return
            wanted = await self._wanted(*self._held)
            if self._connection.connected:
                self._apply(wanted)

    async def _read_book(self) -> tuple[frozenset[str], frozenset[tuple[str, str]]] | None:
        instruments: set[str] = set()
        pairs: set[tuple[str, str]] = set()
        try:
            async for row in self._client.iter_positions(
                level=PositionLevel.ACCOUNT, page_size=1000
            ):
                if not row.quantity:
                    continue
                instruments.add(row.instrument_id)
                if row.currency and row.base_currency and row.currency != row.base_currency:
                    pairs.add((row.currency, row.base_currency))
        except PortfolioError as error:
            if is_refusal(error):
                self.stats.refusals += 1
                self._service_answered()
                self._book_refused.refused(
                    error, "the instruments held are read again at each refresh"
                )
            else:
                self._service_failed(f"reading the book: {error}")
            return None
        self._service_answered()
        self._book_refused.accepted()
        return frozenset(instruments), frozenset(pairs)

    async def _wanted(
        self, instruments: frozenset[str], needed_pairs: frozenset[tuple[str, str]]
    ) -> dict[int, _Wanted]:
        wanted: dict[int, _Wanted] = {}
        unresolved: list[str] = []
        for instrument_id in sorted(instruments):
            contract = await self._instrument_contract(instrument_id)
            if contract is None:
                unresolved.append(instrument_id)
                continue
            wanted.setdefault(contract.conId, _Wanted(contract)).instrument_ids.add(instrument_id)
        pairs = {frozenset(p): p for p in sorted(needed_pairs | self._fx_pairs)}
        for pair in pairs.values():
            contract = await self._fx_contract(pair)
            if contract is None:
                unresolved.append(".".join(pair))
                continue
            entry = wanted.setdefault(contract.conId, _Wanted(contract))
            entry.fx = (contract.symbol, contract.currency)
        self.stats.unresolved = tuple(unresolved)
        return wanted

    def _con_id(self, instrument_id: str) -> int | None:
        con_id = self._con_ids.get(instrument_id)
        if con_id is not None:
            return con_id
        if instrument_id.isascii() and instrument_id.isdigit() and int(instrument_id) > 0:
            return int(instrument_id)
        return None

    async def _instrument_contract(self, instrument_id: str) -> Contract | None:
        con_id = self._con_id(instrument_id)
        if con_id is None:
            self._once(
                ("unmapped", instrument_id),
                "no marks for %s: it is neither in the contract map nor a conId",
                instrument_id,
            )
            return None
        contract = self._contracts.get(con_id)
        if contract is None:
            contract = await self._describe(Contract(conId=con_id))
            if contract is None:
                self._once(
                    ("undescribed", con_id),
                    "no marks for %s: TWS describes no contract with conId %d",
                    instrument_id,
                    con_id,
                )
                return None
            self._contracts[con_id] = contract
        return contract

    async def _fx_contract(self, pair: tuple[str, str]) -> Contract | None:
        key = frozenset(pair)
        contract = self._fx_contracts.get(key)
        if contract is not None:
            return contract
        base, quote = pair
        for symbol, currency in ((base, quote), (quote, base)):
            asked = Contract(secType="CASH", symbol=symbol, currency=currency)
            asked.exchange = _FX_EXCHANGE
            contract = await self._describe(asked)
            if contract is not None:
                self._fx_contracts[key] = contract
                return contract
        self._once(("fx", key), "no FX rate %s.%s: TWS lists no CASH contract for it", *pair)
        return None

    async def _describe(self, contract: Contract) -> Contract | None:
        """The contract as TWS details it, with an exchange market data can be asked on."""
        try:
            details = await asyncio.wait_for(
                self._connection.ib.reqContractDetailsAsync(contract), self._request_timeout
            )
        except (ConnectionError, TimeoutError) as error:
            log.warning("contract details of %s: %s", contract, error or type(error).__name__)
            return None
        if not details or details[0].contract is None:
            return None
        found: Contract = details[0].contract
        if found.secType == "STK" or not found.exchange:
            found.exchange = _FX_EXCHANGE if found.secType == "CASH" else "SMART"
        return found

    def _apply(self, wanted: dict[int, _Wanted]) -> None:
        ib = self._connection.ib
        for con_id in [c for c in self._lines if c not in wanted]:
            gone = self._lines.pop(con_id)
            self._dirty.discard(con_id)
            if gone.ticker is not None:
                ib.cancelMktData(gone.contract)
                self.stats.cancelled_total += 1
                log.info("market data of %s cancelled: no longer held", _describe(gone))
        for con_id, want in wanted.items():
            line = self._lines.get(con_id) or _Line(want.contract, frozenset(), None)
            self._lines[con_id] = line
            ids = frozenset(want.instrument_ids)
            if (ids, want.fx) != (line.instrument_ids, line.fx):
                line.instrument_ids, line.fx = ids, want.fx
                self._dirty.add(con_id)  # a new use of a known quote goes out now
            if line.ticker is None:
                line.ticker = ib.reqMktData(line.contract, "", False, False)
                self.stats.subscribed_total += 1
                log.info("market data of %s subscribed", _describe(line))
        self.stats.subscriptions = sum(1 for line in self._lines.values() if line.ticker)

    # -----------------------------------------------------------------------------------------
    # Ticks (eventkit drops a handler's exception silently: each logs its own)

    def _on_tickers(self, tickers: set[Ticker]) -> None:
        try:
            for ticker in tickers:
                contract = ticker.contract
                line = self._lines.get(contract.conId) if contract is not None else None
                if line is None or line.ticker is not ticker:
                    continue
                quote = quote_of(ticker)
                if line.quote is None or quote.figures != line.quote.figures:
                    line.quote = quote
                    self._dirty.add(contract.conId)  # type: ignore[union-attr]
        except Exception:
            log.exception("marks feed failed to read ticks")

    def _on_error(self, req_id: int, code: int, message: str, contract: Contract | None) -> None:
        try:
            if code not in _DATA_ERRORS or contract is None:
                return
            line = self._lines.get(contract.conId)
            if line is None:
                return
            self.stats.market_data_errors += 1
            self._once(
                ("tws", contract.conId, code),
                "market data of %s: IB error %d %s (%s)",
                _describe(line),
                code,
                message,
                _DATA_ERRORS[code],
            )
        except Exception:
            log.exception("marks feed failed to handle IB error %s", code)

    # -----------------------------------------------------------------------------------------
    # Sending

    async def flush(self) -> None:
        """Sends every quote that changed since the last flush (and any not sent for
        --resend-seconds, or all after the service was unreachable)."""
        now = time.monotonic()
        if self._marks_refused.refusal is not None and now < self._retry_at:
            return  # refused: the quotes wait for the next try (back-off)
        if self._resend_all:
            due = set(self._lines)
        else:
            due = self._dirty | {
                c for c, line in self._lines.items() if now - line.sent_at >= self._resend_seconds
            }
        marks: list[MarkPrice] = []
        rates: list[FxRate] = []
        sent: list[int] = []
        for con_id in sorted(due):
            line = self._lines.get(con_id)
            if line is None or line.quote is None:
                continue
            price = line.quote.price(self.price)
            if price is None:
                continue
            sent.append(con_id)
            marks += _marks(line, line.quote, price)
            if line.fx is not None and price > 0:
                rates.append(
                    FxRate(base=line.fx[0], quote=line.fx[1], rate=price, timestamp=line.quote.time)
                )
        self._dirty -= due
        if not marks and not rates:
            return
        resend_all, self._resend_all = self._resend_all, False
        try:
            acks = await self._client.send_marks(marks, rates, batch_size=MAX_MARK_BATCH)
            if any(ack.rejected for ack in acks):
                acks = await self._isolate(marks, rates)
        except PortfolioError as error:
            self._dirty |= set(sent)
            self._resend_all = True
            if is_refusal(error):
                self._refused(error, now)
            else:
                self.stats.send_failures += 1
                self._service_failed(f"sending marks: {error}")
            return
        except BaseException:
            self._dirty |= set(sent)
            self._resend_all = self._resend_all or resend_all
            raise
        self._service_answered()
        self._refused_sends = 0
        self._marks_refused.accepted("sending every latest quote")
        for ack in acks:
            self.stats.marks_applied += ack.marks_applied
            self.stats.fx_rates_applied += ack.fx_rates_applied
            self.stats.stale += ack.marks_stale + ack.fx_rates_stale
        for con_id in sent:
            line = self._lines.get(con_id)
            if line is not None:
                line.sent_at = now

    async def _isolate(self, marks: list[MarkPrice], rates: list[FxRate]) -> list[MarkAck]:
        """Sends each entry of a refused batch alone: the bad ones are logged and dropped."""
        acks = await self._client.send_marks(marks, rates, batch_size=1)
        entries: list[MarkPrice | FxRate] = [*marks, *rates]
        for entry, ack in zip(entries, acks, strict=True):
            if ack.rejected:
                self.stats.refused += 1
                what = (
                    f"mark of {entry.instrument_id}"
                    if isinstance(entry, MarkPrice)
                    else f"FX rate {entry.base}.{entry.quote}"
                )
                log.warning("service refused the %s: %s", what, ack.rejected_reason)
        return [ack for ack in acks if not ack.rejected]

    def _refused(self, error: PortfolioError, now: float) -> None:
        """The service answered, refusing the feed's marks: said once, retried with back-off."""
        self.stats.refusals += 1
        self._refused_sends += 1
        delay = self._refused_retry.delay(self._refused_sends)
        self._retry_at = now + delay
        self._service_answered()
        self._marks_refused.refused(
            error, f"latest quotes wait, retried with back-off (next in {delay:.1f} s)"
        )

    def _service_failed(self, what: str) -> None:
        if self.stats.service_reachable:
            log.warning("portfolio service unreachable (%s); latest quotes wait", what)
        self.stats.service_reachable = False
        self._resend_all = True

    def _service_answered(self) -> None:
        if not self.stats.service_reachable:
            log.info("portfolio service answers again; sending every latest quote")
        self.stats.service_reachable = True

    def _once(self, key: object, message: str, *args: object) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning(message, *args)


def _marks(line: _Line, quote: Quote, price: Decimal) -> list[MarkPrice]:
    return [
        MarkPrice(
            instrument_id=instrument_id,
            timestamp=quote.time,
            mark=price,
            bid=quote.bid if quote.ask is not None else None,
            ask=quote.ask if quote.bid is not None else None,
            last=quote.last,
        )
        for instrument_id in sorted(line.instrument_ids)
    ]


def _describe(line: _Line) -> str:
    c = line.contract
    names = sorted(line.instrument_ids) + ([".".join(line.fx)] if line.fx else [])
    return f"{'/'.join(names)} (conId {c.conId} {c.secType} {c.exchange})"


# ---------------------------------------------------------------------------------------------
# The process


async def run(config: MarksConfig) -> None:
    """Runs the feed until SIGTERM or SIGINT, then stops it gracefully."""
    contracts = ContractMap.load(config.contract_map) if config.contract_map else ContractMap()
    connection = IbConnection(
        config.tws_host,
        config.tws_port,
        config.client_id,
        readonly=True,
        connect_timeout=config.connect_timeout,
    )
    credentials = config.credentials  # relay/credentials.py: TLS, mTLS, token
    client = AsyncPortfolioClient(
        config.service, channel_options=PORTFOLIO_CHANNEL_OPTIONS, **credentials.client_options()
    )
    async with client:
        feed = MarksFeed(
            connection,
            client,
            contracts,
            market_data_type=config.market_data_type,
            price=config.price,
            interval=config.interval,
            refresh_seconds=config.refresh_seconds,
            fx_pairs=config.fx_pairs,
        )
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        log.info(
            "marks of %s (%s data, %s, every %.3g s) to the portfolio service at %s, %s",
            connection.name,
            config.market_data_type.name.lower(),
            config.price.value,
            config.interval,
            config.service,
            credentials.describe(),
        )
        await feed.start()
        try:
            await stopping.wait()
        finally:
            log.info("stopping")
            await feed.stop()


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    level = logging.getLevelName(config.log_level.upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_ib_async(level)
    try:
        asyncio.run(run(config))
    except ContractMapError as error:
        log.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
