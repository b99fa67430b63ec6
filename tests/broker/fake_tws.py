"""A protocol-level fake of TWS / IB Gateway, so that the real `ib_async` client can be tested
without a gateway: it speaks the framed text protocol of server versions 157-178 on 127.0.0.1.

Broker state (positions, account values, portfolio, orders, executions) is set by the test and
served the way TWS serves it: answered on the matching request, and pushed live to connected
clients where TWS would push it. Every request received is recorded for assertions.

Message layouts follow `ib_async` 2.1.0's decoder (see /work/shared/notes/tws-protocol.md).
Deliberate simplifications, where TWS is more particular:
- Open orders go to every client (TWS routes them to the placing client / clientId 0 / master);
  reqOpenOrders, reqAllOpenOrders and reqAutoOpenOrders all answer every order that is not done.
- reqExecutions honours the filter's clientId (if not 0), acctCode, symbol, secType, exchange,
  side (BUY/SELL against BOT/SLD) and time ("yyyymmdd hh:mm:ss", executions at or after it,
  compared as text, ignoring time zones).
- placeOrder and cancelOrder are not simulated: they are ignored (logged). A snapshot
  reqMktData is answered with its tickSnapshotEnd only; reqContractDetails with the contracts
  given to `add_contract_details` (by conId, or symbol + secType + currency), then its end.
  reqCompletedOrders answers every order in a done state (Filled, Cancelled, ...) as
  completedOrder, with its filled quantity.
- Streaming market data: reqMktData of a conId is answered with marketDataType and the ticks
  held for it (`set_tick`), and later ticks are pushed until cancelMktData; a session whose
  reqMarketDataType is 3 or 4 (delayed) gets the delayed tick ids (66, 67, 68, 75...).
- A clientId already in use is not rejected (TWS answers error 326), so that a quick reconnect
  never races the old connection's close.
- `master_client_id` (None: off) routes executions and commission reports as TWS does: those
  of an order of another client reach only that client and the master. `answering = False`
  makes a hung TWS: the sockets stay open, requests are recorded and held unanswered until
  `resume()`.

Setters may be called from another thread than the fake's event loop: they then run on that
loop and the caller waits until they are applied (so never from a thread the loop waits for).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import astuple, dataclass, field
from datetime import UTC, datetime
from typing import Concatenate, ParamSpec

__all__ = ["FakeContract", "FakeTws"]

_log = logging.getLogger(__name__)
P = ParamSpec("P")

# Order states after which TWS stops reporting an order as open (as ib_async's DoneStates).
_DONE_STATES = frozenset({"Filled", "Cancelled", "ApiCancelled", "Inactive"})
# Requests that need no answer: accepted silently instead of logged as unsupported.
_NO_ANSWER = frozenset({2, 59, 63, 75})  # cancelMktData, marketDataType, cancel summary/multi
_SIDES = {"BUY": "BOT", "SELL": "SLD"}


@dataclass(frozen=True)
class FakeContract:
    """The eleven contract fields TWS sends in positions, orders and executions."""

    con_id: int
    symbol: str
    sec_type: str = "STK"
    last_trade_date: str = ""
    strike: str = "0"
    right: str = ""
    multiplier: str = ""
    exchange: str = "SMART"
    currency: str = "USD"
    local_symbol: str = ""
    trading_class: str = ""

    def fields(self) -> list[object]:
        """conId, symbol, secType, lastTradeDate, strike, right, multiplier, exchange,
        currency, localSymbol, tradingClass: the declaration order is the wire order."""
        return list(astuple(self))


@dataclass(frozen=True)
class _Position:
    account: str
    contract: FakeContract
    quantity: str
    avg_cost: str


@dataclass(frozen=True)
class _PortfolioItem:
    account: str
    contract: FakeContract
    position: str
    market_price: str
    market_value: str
    avg_cost: str
    unrealized_pnl: str
    realized_pnl: str


@dataclass
class _Order:
    account: str
    order_id: int
    perm_id: int
    client_id: int
    contract: FakeContract
    action: str
    total_quantity: str
    order_ref: str
    order_type: str
    limit_price: str
    status: str
    filled: str = "0"
    remaining: str = "0"
    avg_fill_price: str = "0"
    last_fill_price: str = "0"


@dataclass
class _Execution:
    account: str
    contract: FakeContract
    exec_id: str
    side: str
    shares: str
    price: str
    order_id: int
    perm_id: int
    client_id: int
    order_ref: str
    time: str
    cum_qty: str
    avg_price: str
    commission: str
    commission_currency: str
    realized_pnl: str
    has_report: bool  # False until a commission report exists for it


@dataclass(eq=False)
class _Session:
    """One client connection past its handshake, and what it subscribed to."""

    writer: asyncio.StreamWriter
    version: int
    client_id: int
    positions: bool = False  # reqPositions active
    account_updates: str | None = None  # account of an active reqAccountUpdates
    account_multi: dict[int, str] = field(default_factory=dict)  # reqId -> account
    seen_orders: set[int] = field(default_factory=set)  # permIds sent as openOrder
    market_data: dict[int, int] = field(default_factory=dict)  # reqMktData reqId -> conId
    market_data_type: int = 1  # reqMarketDataType: 1 live, 2 frozen, 3 delayed, 4 both

    def send(self, *fields: object) -> None:
        if not self.writer.is_closing():
            self.writer.write(_frame(fields))


def _frame(fields: Iterable[object]) -> bytes:
    payload = "".join(f"{value}\0" for value in fields).encode()
    return struct.pack(">I", len(payload)) + payload


async def _read_frame(reader: asyncio.StreamReader) -> list[str]:
    (size,) = struct.unpack(">I", await reader.readexactly(4))
    fields = (await reader.readexactly(size)).decode(errors="backslashreplace").split("\0")
    if fields and fields[-1] == "":
        fields.pop()
    return fields


def _arg(args: Sequence[str], index: int, default: str = "") -> str:
    return args[index] if index < len(args) else default


def _to_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


def _time_key(text: str) -> str:
    """ "20260102 15:30:00 UTC" or "20260102-15:30:00" -> "20260102 15:30:00" (comparable)."""
    return text.replace("-", " ")[:17]


def _venue(contract: FakeContract) -> str:
    """The executing exchange of a fill: SMART is a router, not a venue."""
    return "ISLAND" if contract.exchange == "SMART" else contract.exchange


# --- outgoing message layouts (ib_async 2.1.0 decoder, server versions 157-178) ---


def _send_order(session: _Session, order: _Order) -> None:
    """openOrder + orderStatus, as TWS reports an order; the session has now seen it."""
    session.send(*_open_order_fields(order, session.version))
    session.send(*_order_status_fields(order))
    session.seen_orders.add(order.perm_id)


def _position_fields(p: _Position) -> list[object]:
    return [61, 3, p.account, *p.contract.fields(), p.quantity, p.avg_cost]


def _portfolio_fields(i: _PortfolioItem) -> list[object]:
    # contract (its exchange goes out as primaryExchange), position, marketPrice, marketValue,
    # averageCost, unrealizedPNL, realizedPNL, account
    values = [i.position, i.market_price, i.market_value, i.avg_cost, i.unrealized_pnl]
    return [7, 8, *i.contract.fields(), *values, i.realized_pnl, i.account]


def _order_status_fields(o: _Order) -> list[object]:
    # orderId, status, filled, remaining, avgFillPrice, permId, parentId, lastFillPrice,
    # clientId, whyHeld, mktCapPrice
    fill = [o.filled, o.remaining, o.avg_fill_price]
    return [3, o.order_id, o.status, *fill, o.perm_id, 0, o.last_fill_price, o.client_id, "", "0"]


def _exec_fields(req_id: int, e: _Execution, version: int) -> list[object]:
    fields: list[object] = [11, req_id, e.order_id, *e.contract.fields(), e.exec_id, e.time]
    # acctNumber, exchange, side, shares, price, permId, clientId, liquidation, cumQty,
    # avgPrice, orderRef, evRule, evMultiplier, modelCode, lastLiquidity (2: removed)
    fields += [e.account, _venue(e.contract), e.side, e.shares, e.price, e.perm_id, e.client_id]
    fields += [0, e.cum_qty, e.avg_price, e.order_ref, "", "", "", 2]
    if version >= 178:
        fields.append(0)  # pendingPriceRevision
    return fields


def _commission_fields(e: _Execution) -> list[object]:
    # execId,commission,currency,realizedPNL,yield,yieldRedemptionDate
    return [59, 1, e.exec_id, e.commission, e.commission_currency, e.realized_pnl, "", ""]


# The tick ids TWS uses for delayed data instead of the live ones.
_DELAYED_TICKS = {1: 66, 2: 67, 4: 68, 6: 72, 7: 73, 9: 75, 14: 76}


def _tick_fields(
    session: _Session, req_id: int, tick_type: int, price: str, size: str
) -> list[object]:
    if session.market_data_type in (3, 4):
        tick_type = _DELAYED_TICKS.get(tick_type, tick_type)
    return [1, 6, req_id, tick_type, price, size, 0]  # tickPrice ..., attrMask


def _contract_details_fields(
    req_id: str, c: FakeContract, min_tick: str, version: int
) -> list[object]:
    head: list[object] = [10] if version >= 164 else [10, 8]
    # symbol, secType, lastTradeDate, strike, right, exchange, currency, localSymbol,
    # marketName, tradingClass, conId, minTick (then mdSizeMultiplier before 164)
    fields = [*head, req_id, c.symbol, c.sec_type, c.last_trade_date, c.strike, c.right]
    fields += [c.exchange, c.currency, c.local_symbol, c.trading_class, c.trading_class]
    fields += [c.con_id, min_tick] + ([""] if version < 164 else [])
    # multiplier, orderTypes, validExchanges, priceMagnifier, underConId, longName,
    # primaryExchange, contractMonth, industry, category, subcategory, timeZoneId,
    # tradingHours, liquidHours, evRule, evMultiplier, no secIds; aggGroup, underSymbol,
    # underSecType, marketRuleIds, realExpirationDate, stockType
    fields += [c.multiplier, "LMT,MKT", c.exchange, 1, 0, c.symbol, "", "", "", "", "", ""]
    fields += ["", "", "", "", 0, "", "", "", "", "", ""]
    if version >= 164:
        fields += ["1", "1", "1"]  # minSize, sizeIncrement, suggestedSizeIncrement
    return fields


def _error_fields(req_id: int, code: int, message: str, version: int) -> list[object]:
    fields: list[object] = [4, 2, req_id, code, message]
    if version >= 166:
        fields.append("")  # advancedOrderRejectJson: ib_async requires the field
    return fields


def _open_order_fields(o: _Order, version: int) -> list[object]:
    """openOrder in decoder order; "" leaves ib_async's default for a numeric field."""
    fields: list[object] = [5, o.order_id, *o.contract.fields()]
    # action, totalQuantity, orderType, lmtPrice, auxPrice, tif, ocaGroup, account,
    # openClose, origin, orderRef, clientId, permId, outsideRth, hidden, discretionaryAmt,
    # goodAfterTime, sharesAllocation, faGroup, faMethod, faPercentage
    fields += [o.action, o.total_quantity, o.order_type, o.limit_price, "0", "DAY", ""]
    fields += [o.account, "O", 0, o.order_ref, o.client_id, o.perm_id, 0, 0, 0, "", ""]
    fields += ["", "", ""]
    if version < 177:
        fields.append("")  # faProfile
    # modelCode, goodTillDate, rule80A, percentOffset, settlingFirm, shortSaleSlot,
    # designatedLocation, exemptCode, auctionStrategy, startingPrice, stockRefPrice, delta,
    # stockRangeLower, stockRangeUpper, displaySize, blockOrder, sweepToFill, allOrNone,
    # minQty, ocaType, eTradeOnly, firmQuoteOnly, nbboPriceCap, parentId, triggerMethod,
    # volatility, volatilityType, deltaNeutralOrderType (empty: no more dn fields),
    # deltaNeutralAuxPrice
    fields += ["", "", "", "", "", 0, "", -1, 0, "", "", "", "", "", "", 0, 0, 0, ""]
    fields += [0, 0, 0, "", 0, 0, "", "", "", ""]
    # continuousUpdate, referencePriceType, trailStopPrice, trailingPercent, basisPoints,
    # basisPointsType, comboLegsDescrip; no combo legs, order combo legs, smart-routing
    # params; scaleInitLevelSize, scaleSubsLevelSize, scalePriceIncrement (empty: no more
    # scale fields); hedgeType (empty: no hedgeParam)
    fields += [0, "", "", "", "", "", "", 0, 0, 0, "", "", "", ""]
    # optOutSmartRouting, clearingAccount, clearingIntent, notHeld, deltaNeutralContract
    # present, algoStrategy (empty: no params)
    fields += [0, "", "", 0, 0, ""]
    # solicited, whatIf, status, 9 margin fields, commission, minCommission,
    # maxCommission, commissionCurrency, warningText, randomizeSize, randomizePrice
    fields += [0, 0, o.status, *[""] * 9, "", "", "", "", "", 0, 0]
    if o.order_type in ("PEG BENCH", "PEGBENCH"):
        fields += ["", "", "", "", ""]  # reference contract and change amounts
    fields.append(0)  # no conditions
    # adjustedOrderType, triggerPrice, trailStopPrice, lmtPriceOffset, adjustedStopPrice,
    # adjustedStopLimitPrice, adjustedTrailingAmount, adjustableTrailingUnit, softDollarTier
    # name/value/displayName, cashQty, dontUseAutoPriceForHedge, isOmsContainer,
    # discretionaryUpToLimitPrice, usePriceMgmtAlgo
    fields += ["", "", "", "", "", "", "", 0, "", "", "", "", 0, 0, 0, 0]
    if version >= 159:
        fields.append("")  # duration
    if version >= 160:
        fields.append("")  # postToAts
    if version >= 162:
        fields.append(0)  # autoCancelParent
    if version >= 170:
        fields += ["", "", "", "", ""]  # minTradeQty .. midOffsetAtHalf
    return fields


def _completed_order_fields(o: _Order, version: int) -> list[object]:
    """completedOrder in decoder order (no orderId, clientId or orderStatus: TWS reports a
    completed order's filled quantity and its completion time instead)."""
    fields: list[object] = [101, *o.contract.fields()]
    # action, totalQuantity, orderType, lmtPrice, auxPrice, tif, ocaGroup, account,
    # openClose, origin, orderRef, permId, outsideRth, hidden, discretionaryAmt,
    # goodAfterTime, faGroup, faMethod, faPercentage
    fields += [o.action, o.total_quantity, o.order_type, o.limit_price, "", "DAY", ""]
    fields += [o.account, "O", 0, o.order_ref, o.perm_id, 0, 0, "", "", "", "", ""]
    if version < 177:
        fields.append("")  # faProfile
    # modelCode .. deltaNeutralAuxPrice (23 fields; an empty deltaNeutralOrderType: no more)
    fields += [""] * 23
    # continuousUpdate, referencePriceType, trailStopPrice, trailingPercent,
    # comboLegsDescrip; no combo legs, order combo legs, smart-routing params;
    # scaleInitLevelSize, scaleSubsLevelSize, scalePriceIncrement; hedgeType;
    # clearingAccount, clearingIntent, notHeld, no deltaNeutralContract; algoStrategy;
    # solicited, status, randomizeSize, randomizePrice; no conditions
    fields += ["", "", "", "", "", 0, 0, 0, "", "", "", "", "", "", "", 0, ""]
    fields += ["", o.status, "", "", 0]
    # trailStopPrice, lmtPriceOffset, cashQty, dontUseAutoPriceForHedge, isOmsContainer,
    # autoCancelDate, filledQuantity, refFuturesConId, autoCancelParent, shareholder,
    # imbalanceOnly, routeMarketableToBbo, parentPermId, completedTime, completedStatus
    fields += ["", "", "", "", "", "", o.filled, "", "", "", "", "", ""]
    fields += [datetime.now(UTC).strftime("%Y%m%d %H:%M:%S UTC"), o.status]
    if version >= 170:
        fields += ["", "", "", "", ""]  # minTradeQty .. midOffsetAtHalf
    return fields


def _on_loop(
    method: Callable[Concatenate[FakeTws, P], None],
) -> Callable[Concatenate[FakeTws, P], None]:
    """Run a state change on the fake's event loop, so that tests may call a setter from any
    thread; from another thread the call blocks until applied (and raises what it raised)."""

    def run(self: FakeTws, /, *args: P.args, **kwargs: P.kwargs) -> None:
        loop = self._loop
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop:
            method(self, *args, **kwargs)
            return

        async def apply() -> None:
            method(self, *args, **kwargs)

        asyncio.run_coroutine_threadsafe(apply(), loop).result(timeout=10)

    functools.update_wrapper(run, method)
    return run


class FakeTws:
    """A TWS / IB Gateway on 127.0.0.1 for tests; see the module docstring for its limits."""

    def __init__(self, accounts: Sequence[str] = ("U123",), server_version: int = 176) -> None:
        self.accounts: tuple[str, ...] = tuple(accounts)
        self.server_version = server_version
        self.host = "127.0.0.1"
        self.port = 0
        self.accepting = True
        self.master_client_id: int | None = None
        self.answering = True
        self._held: list[tuple[_Session, list[str]]] = []
        self.connections = 0
        self.requests: list[tuple[int, list[str]]] = []
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sessions: set[_Session] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._positions: dict[tuple[str, int], _Position] = {}
        self._account_values: dict[tuple[str, str, str], str] = {}
        self._portfolio: dict[tuple[str, int], _PortfolioItem] = {}
        self._orders: dict[int, _Order] = {}
        self._executions: dict[str, _Execution] = {}
        self._ticks: dict[int, dict[int, tuple[str, str]]] = {}  # conId -> tickType -> price, size
        self._contract_details: dict[int, tuple[FakeContract, str]] = {}  # conId -> (c, minTick)
        self._handlers: dict[int, Callable[[_Session, list[str]], None]] = {
            1: self._on_req_mkt_data,
            2: self._on_cancel_mkt_data,
            5: self._on_req_open_orders,
            6: self._on_req_account_updates,
            7: self._on_req_executions,
            8: self._on_req_ids,
            9: self._on_req_contract_details,
            15: self._on_req_open_orders,  # reqAutoOpenOrders
            16: self._on_req_open_orders,  # reqAllOpenOrders
            17: self._on_req_managed_accounts,
            49: self._on_req_current_time,
            59: self._on_req_market_data_type,
            61: self._on_req_positions,
            62: self._on_req_account_summary,
            64: self._on_cancel_positions,
            74: self._on_req_positions_multi,
            76: self._on_req_account_updates_multi,
            77: self._on_cancel_account_updates_multi,
            99: self._on_req_completed_orders,
        }

    # --- lifecycle ---

    async def start(self) -> int:
        """Listen on 127.0.0.1 on a free port; returns it (also `self.port`)."""
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Close the listener and every client connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        await self._close_all()  # before wait_closed: from 3.12 it waits for the connections
        if server is not None:
            await server.wait_closed()
        self._loop = None  # setters now apply inline, from any thread

    async def drop_clients(self) -> None:
        """Abruptly close every client connection (a network cut); the listener keeps running."""
        await self._close_all()

    async def _close_all(self) -> None:
        self._sessions.clear()
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = list(self._handler_tasks)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=2.0)
            for task in pending:
                task.cancel()
        self._notify()

    # --- broker state (each setter also pushes what TWS would push live) ---

    @_on_loop
    def set_position(
        self, account: str, contract: FakeContract, quantity: str, avg_cost: str
    ) -> None:
        """Store a position (quantity "0" stays, as a flat row) and push it to reqPositions
        subscribers."""
        position = _Position(account, contract, quantity, avg_cost)
        self._positions[(account, contract.con_id)] = position
        for session in self._sessions:
            if session.positions:
                session.send(*_position_fields(position))

    @_on_loop
    def set_account_value(self, account: str, tag: str, value: str, currency: str) -> None:
        """Store an account value and push it to reqAccountUpdates(Multi) subscribers."""
        self._account_values[(account, tag, currency)] = value
        for session in self._sessions:
            if session.account_updates == account:
                session.send(6, 2, tag, value, currency, account)
            for req_id, wanted in session.account_multi.items():
                if wanted in ("", "All", account):
                    session.send(73, 1, req_id, account, "", tag, value, currency)

    @_on_loop
    def set_portfolio_item(
        self,
        account: str,
        contract: FakeContract,
        position: str,
        market_price: str,
        market_value: str,
        avg_cost: str,
        unrealized_pnl: str,
        realized_pnl: str,
    ) -> None:
        """Store a portfolio row and push it to reqAccountUpdates subscribers of the account."""
        values = (position, market_price, market_value, avg_cost, unrealized_pnl, realized_pnl)
        item = _PortfolioItem(account, contract, *values)
        self._portfolio[(account, contract.con_id)] = item
        for session in self._sessions:
            if session.account_updates == account:
                session.send(*_portfolio_fields(item))

    @_on_loop
    def add_order(
        self,
        account: str,
        order_id: int,
        perm_id: int,
        client_id: int,
        contract: FakeContract,
        action: str,
        total_quantity: str,
        order_ref: str = "",
        order_type: str = "LMT",
        limit_price: str = "0",
        status: str = "Submitted",
    ) -> None:
        """Store an order (keyed by permId: the same permId replaces it) and push openOrder +
        orderStatus to every client."""
        order = _Order(
            account,
            order_id,
            perm_id,
            client_id,
            contract,
            action,
            total_quantity,
            order_ref,
            order_type,
            limit_price,
            status,
            remaining=total_quantity,
        )
        self._orders[perm_id] = order
        for session in self._sessions:
            _send_order(session, order)

    @_on_loop
    def set_order_status(
        self,
        perm_id: int,
        status: str,
        filled: str,
        remaining: str,
        avg_fill_price: str = "0",
        last_fill_price: str = "0",
    ) -> None:
        """Update a stored order and push orderStatus, preceded by openOrder to a client that
        never saw the order (ib_async drops the status of an order it does not know)."""
        order = self._orders.get(perm_id)
        if order is None:
            raise KeyError(f"no order with permId {perm_id}")
        order.status, order.filled, order.remaining = status, filled, remaining
        order.avg_fill_price, order.last_fill_price = avg_fill_price, last_fill_price
        for session in self._sessions:
            if perm_id in session.seen_orders:
                session.send(*_order_status_fields(order))
            else:
                _send_order(session, order)

    @_on_loop
    def add_execution(
        self,
        account: str,
        contract: FakeContract,
        exec_id: str,
        side: str,
        shares: str,
        price: str,
        *,
        order_id: int = 0,
        perm_id: int = 0,
        client_id: int = 0,
        order_ref: str = "",
        time: str = "20260102 15:30:00 UTC",
        cum_qty: str = "",
        avg_price: str = "",
        commission: str = "0",
        commission_currency: str = "USD",
        realized_pnl: str = "0",
        live: bool = True,
        commission_report: bool = True,
    ) -> None:
        """Store an execution for reqExecutions (a correction is just another execId); when
        `live`, also push it now as execDetails with reqId -1, then its commissionReport."""
        execution = _Execution(
            account,
            contract,
            exec_id,
            side,
            shares,
            price,
            order_id,
            perm_id,
            client_id,
            order_ref,
            time,
            cum_qty or shares,
            avg_price or price,
            commission,
            commission_currency,
            realized_pnl,
            commission_report,
        )
        self._executions[exec_id] = execution
        if live:
            for session in self._sessions:
                if not self._sees(session, execution):
                    continue
                session.send(*_exec_fields(-1, execution, session.version))
                if commission_report:
                    session.send(*_commission_fields(execution))

    @_on_loop
    def send_commission_report(self, exec_id: str) -> None:
        """Push the commissionReport of a stored execution; reqExecutions answers it from now
        on too (for an execution added with commission_report=False)."""
        execution = self._executions.get(exec_id)
        if execution is None:
            raise KeyError(f"no execution {exec_id!r}")
        execution.has_report = True
        for session in self._sessions:
            if self._sees(session, execution):
                session.send(*_commission_fields(execution))

    @_on_loop
    def send_execution(self, exec_id: str) -> None:
        """Push a stored execution live (execDetails, reqId -1) without its commission report:
        with `send_commission_report` first, the report comes before its execution."""
        execution = self._executions.get(exec_id)
        if execution is None:
            raise KeyError(f"no execution {exec_id!r}")
        for session in self._sessions:
            session.send(*_exec_fields(-1, execution, session.version))

    def _sees(self, session: _Session, execution: _Execution) -> bool:
        """Whether TWS reports this execution to this client (see `master_client_id`)."""
        master = self.master_client_id
        return master is None or session.client_id in (execution.client_id, master)

    @_on_loop
    def resume(self) -> None:
        """A hung TWS answers again: the requests it held first, in their order."""
        self.answering = True
        held, self._held = self._held, []
        for session, fields in held:
            if session in self._sessions:
                self._answer(session, int(fields[0]), fields[1:])
        self._notify()

    @_on_loop
    def remove_execution(self, exec_id: str) -> None:
        """Forget an execution: reqExecutions no longer returns it."""
        if self._executions.pop(exec_id, None) is None:
            raise KeyError(f"no execution {exec_id!r}")

    @_on_loop
    def add_contract_details(self, contract: FakeContract, min_tick: str = "0.01") -> None:
        """Make reqContractDetails answer this contract (CASH: symbol EUR, currency USD)."""
        self._contract_details[contract.con_id] = (contract, min_tick)

    @_on_loop
    def set_tick(self, con_id: int, tick_type: int, price: str, size: str = "100") -> None:
        """Hold a price tick (1 bid, 2 ask, 4 last, 9 close; the price as TWS writes it, "-1"
        for none) and push it as tickPrice to every market data subscription of the conId."""
        self._ticks.setdefault(con_id, {})[tick_type] = (price, size)
        for session in self._sessions:
            for req_id, subscribed in session.market_data.items():
                if subscribed == con_id:
                    session.send(*_tick_fields(session, req_id, tick_type, price, size))

    def subscribed_con_ids(self) -> set[int]:
        """The conIds with a streaming market data subscription open now, on any client."""
        return {c for session in self._sessions for c in session.market_data.values()}

    @_on_loop
    def send_error(self, req_id: int, code: int, message: str) -> None:
        """Push an error message to every client."""
        for session in self._sessions:
            session.send(*_error_fields(req_id, code, message, session.version))

    # --- observation ---

    def requests_of(self, msg_id: int) -> list[list[str]]:
        """The fields (after the message id) of every request with that id, in arrival order."""
        return [fields for received_id, fields in self.requests if received_id == msg_id]

    async def wait_for_request(self, msg_id: int, count: int = 1, timeout: float = 5.0) -> None:
        """Until `count` requests with that id were received (and answered)."""
        await self._wait_until(
            lambda: len(self.requests_of(msg_id)) >= count,
            timeout,
            f"{count} request(s) with message id {msg_id}",
        )

    async def wait_for_clients(self, count: int = 1, timeout: float = 5.0) -> None:
        """Until at least `count` client connections are open (past their handshake)."""
        await self._wait_until(
            lambda: len(self._sessions) >= count, timeout, f"{count} open client(s)"
        )

    async def _wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not condition():
                    changed = self._changed
                    await changed.wait()
        except TimeoutError:
            raise TimeoutError(f"FakeTws: no {what} within {timeout} s") from None

    def _notify(self) -> None:
        """Wake every waiter; each re-checks its condition."""
        self._changed.set()
        self._changed = asyncio.Event()

    # --- connections ---

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client connection: handshake, then requests until it closes."""
        task = asyncio.current_task()
        if task is not None:
            self._handler_tasks.add(task)
        self._writers.add(writer)
        session: _Session | None = None
        try:
            if not self.accepting:
                _log.info("FakeTws: not accepting, closing a new connection")
                return
            session = await self._handshake(reader, writer)
            if session is None:
                return
            self._sessions.add(session)
            self.connections += 1
            session.send(9, 1, self._next_order_id())
            session.send(15, 1, ",".join(self.accounts))
            self._notify()
            while True:
                fields = await _read_frame(reader)
                if session not in self._sessions:
                    break  # dropped while reading
                self._on_request(session, fields)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away, or the connection was dropped
        except Exception:
            _log.exception("FakeTws: connection handler failed")
        finally:
            if session is not None:
                self._sessions.discard(session)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._handler_tasks.discard(task)
            self._notify()

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> _Session | None:
        """b"API\\0" + "vMIN..MAX" -> "version, time"; then wait for startApi (71)."""
        if await reader.readexactly(4) != b"API\0":
            _log.warning("FakeTws: connection without the API prefix, closing it")
            return None
        offered = (await _read_frame(reader) or [""])[0]
        version = self.server_version
        with contextlib.suppress(ValueError):
            client_max = int(offered.lstrip("v").split(" ")[0].split("..")[-1])
            version = min(version, client_max)
        now = datetime.now(UTC).strftime("%Y%m%d %H:%M:%S UTC")
        writer.write(_frame([version, now]))
        while True:
            fields = await _read_frame(reader)
            if fields and fields[0] == "71":
                return _Session(writer, version, _to_int(_arg(fields, 2, "0")))
            _log.info("FakeTws: ignoring %s before startApi", fields)

    def _on_request(self, session: _Session, fields: list[str]) -> None:
        """Record a request, then answer it; a failure is logged, never fatal."""
        try:
            msg_id = int(fields[0])
        except (IndexError, ValueError):
            _log.warning("FakeTws: unreadable request %r", fields)
            return
        args = fields[1:]
        self.requests.append((msg_id, args))
        if not self.answering:
            self._held.append((session, fields))
            self._notify()
            return
        self._answer(session, msg_id, args)

    def _answer(self, session: _Session, msg_id: int, args: list[str]) -> None:
        try:
            handler = self._handlers.get(msg_id)
            if handler is not None:
                handler(session, args)
            elif msg_id not in _NO_ANSWER:
                _log.info("FakeTws: ignoring unsupported request %d %r", msg_id, args)
        except Exception:
            _log.exception("FakeTws: failed to answer request %d %r", msg_id, args)
        finally:
            self._notify()

    def _next_order_id(self) -> int:
        return max((order.order_id for order in self._orders.values()), default=0) + 1

    # --- request handlers: args are the fields after the message id ---

    def _on_req_mkt_data(self, session: _Session, args: list[str]) -> None:
        # 1,11,reqId,contract...,genericTicks,snapshot,regulatorySnapshot,mktDataOptions
        if len(args) >= 4 and args[-3] == "1":
            session.send(57, 1, _arg(args, 1))  # tickSnapshotEnd: no data, but done
            return
        req_id, con_id = _to_int(_arg(args, 1)), _to_int(_arg(args, 2))
        if not con_id:
            session.send(*_error_fields(req_id, 200, "No security definition", session.version))
            return
        session.market_data[req_id] = con_id
        session.send(58, 1, req_id, session.market_data_type)
        for tick_type, (price, size) in self._ticks.get(con_id, {}).items():
            session.send(*_tick_fields(session, req_id, tick_type, price, size))

    def _on_cancel_mkt_data(self, session: _Session, args: list[str]) -> None:
        session.market_data.pop(_to_int(_arg(args, 1)), None)  # 2,2,reqId

    def _on_req_market_data_type(self, session: _Session, args: list[str]) -> None:
        session.market_data_type = _to_int(_arg(args, 1)) or 1  # 59,1,type

    def _on_req_open_orders(self, session: _Session, args: list[str]) -> None:
        for order in self._orders.values():
            if order.status not in _DONE_STATES:
                _send_order(session, order)
        session.send(53, 1)

    def _on_req_account_updates(self, session: _Session, args: list[str]) -> None:
        subscribe, account = _arg(args, 1), _arg(args, 2)
        if not account and len(self.accounts) == 1:
            account = self.accounts[0]
        if subscribe not in ("1", "True", "true"):
            session.account_updates = None
            return
        session.account_updates = account
        for (acct, tag, currency), value in self._account_values.items():
            if acct == account:
                session.send(6, 2, tag, value, currency, acct)
        for item in self._portfolio.values():
            if item.account == account:
                session.send(*_portfolio_fields(item))
        session.send(8, 1, datetime.now(UTC).strftime("%H:%M"))
        session.send(54, 1, account)

    def _on_req_executions(self, session: _Session, args: list[str]) -> None:
        # 7,3,reqId,clientId,acctCode,time,symbol,secType,exchange,side
        req_id = _arg(args, 1, "-1")
        client_id = _to_int(_arg(args, 2, "0"))
        account, since, symbol, sec_type, exchange, side = (_arg(args, i) for i in range(3, 9))
        for execution in self._executions.values():
            contract = execution.contract
            if (
                (client_id and execution.client_id != client_id)
                or (account and execution.account != account)
                or (since and _time_key(execution.time) < _time_key(since))
                or (symbol and contract.symbol != symbol)
                or (sec_type and contract.sec_type != sec_type)
                or (exchange and exchange not in (contract.exchange, _venue(contract)))
                or (side and execution.side != _SIDES.get(side.upper(), side.upper()))
                or not self._sees(session, execution)
            ):
                continue
            session.send(*_exec_fields(_to_int(req_id), execution, session.version))
            if execution.has_report:
                session.send(*_commission_fields(execution))
        session.send(55, 1, req_id)

    def _on_req_ids(self, session: _Session, args: list[str]) -> None:
        session.send(9, 1, self._next_order_id())

    def _on_req_contract_details(self, session: _Session, args: list[str]) -> None:
        # 9,8,reqId,conId,symbol,secType,lastTradeDate,strike,right,multiplier,exchange,...
        req_id, con_id = _arg(args, 1), _to_int(_arg(args, 2))
        symbol, sec_type, currency = _arg(args, 3), _arg(args, 4), _arg(args, 11)
        for contract, min_tick in self._contract_details.values():
            if (con_id and contract.con_id == con_id) or (
                not con_id
                and (contract.symbol, contract.currency) == (symbol, currency)
                and sec_type in ("", contract.sec_type)
            ):
                session.send(*_contract_details_fields(req_id, contract, min_tick, session.version))
        session.send(52, 1, req_id)  # contractDetailsEnd

    def _on_req_managed_accounts(self, session: _Session, args: list[str]) -> None:
        session.send(15, 1, ",".join(self.accounts))

    def _on_req_current_time(self, session: _Session, args: list[str]) -> None:
        session.send(49, 1, int(time.time()))

    def _on_req_positions(self, session: _Session, args: list[str]) -> None:
        session.positions = True
        for position in self._positions.values():
            session.send(*_position_fields(position))
        session.send(62, 1)

    def _on_cancel_positions(self, session: _Session, args: list[str]) -> None:
        session.positions = False

    def _on_req_account_summary(self, session: _Session, args: list[str]) -> None:
        # 62,1,reqId,group,tags
        req_id, tags = _arg(args, 1), set(_arg(args, 3).split(","))
        for (acct, tag, currency), value in self._account_values.items():
            if tag in tags:
                session.send(63, 1, req_id, acct, tag, value, currency)
        session.send(64, 1, req_id)

    def _on_req_positions_multi(self, session: _Session, args: list[str]) -> None:
        # 74,1,reqId,account,modelCode
        req_id, account, model_code = _arg(args, 1), _arg(args, 2), _arg(args, 3)
        for p in self._positions.values():
            if account in ("", "All", p.account):
                fields = [*p.contract.fields(), p.quantity, p.avg_cost, model_code]
                session.send(71, 1, req_id, p.account, *fields)
        session.send(72, 1, req_id)

    def _on_req_account_updates_multi(self, session: _Session, args: list[str]) -> None:
        # 76,1,reqId,account,modelCode,ledgerAndNLV
        req_id, account, model_code = _to_int(_arg(args, 1)), _arg(args, 2), _arg(args, 3)
        session.account_multi[req_id] = account
        for (acct, tag, currency), value in self._account_values.items():
            if account in ("", "All", acct):
                session.send(73, 1, req_id, acct, model_code, tag, value, currency)
        session.send(74, 1, req_id)

    def _on_cancel_account_updates_multi(self, session: _Session, args: list[str]) -> None:
        session.account_multi.pop(_to_int(_arg(args, 1)), None)

    def _on_req_completed_orders(self, session: _Session, args: list[str]) -> None:
        for order in self._orders.values():
            if order.status in _DONE_STATES:
                session.send(*_completed_order_fields(order, session.version))
        session.send(102)  # completedOrdersEnd
