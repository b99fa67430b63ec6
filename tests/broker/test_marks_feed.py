"""The marks feed: the real ib_async client against the fake TWS's market data, a real
portfolio service on a loopback port; and the pure tick -> price rules."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from ib_async import Ticker
from ib_async.util import UNSET_DOUBLE

from client import AsyncPortfolioClient, Fill, Position, Side
from client.marks import MarkPrice, mark_batches
from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from relay.marks_config import MarketDataType, PriceChoice, parse_args, parse_fx_pair
from relay.marks_feed import MarksFeed, Quote, quote_of, tick_price
from relay.relay import PORTFOLIO_CHANNEL_OPTIONS
from tests.broker.fake_tws import FakeContract, FakeTws
from tests.conftest import ServerThread, start_test_server
from tws.connection import IbConnection, ReconnectPolicy
from tws.contracts import ContractMap

pytestmark = pytest.mark.timeout(60)

ACCOUNT = "U123"
FAST = ReconnectPolicy(initial=0.05, factor=2.0, maximum=0.4)
AAPL = FakeContract(265598, "AAPL")
SAP = FakeContract(14204, "SAP", exchange="IBIS", currency="EUR")  # unmapped: id "14204"
EURUSD = FakeContract(12087792, "EUR", sec_type="CASH", exchange="IDEALPRO", local_symbol="EUR.USD")
CONTRACTS = ContractMap.from_entries({"265598": "AAPL"})
BID, ASK, LAST, CLOSE = 1, 2, 4, 9
T0 = datetime(2026, 1, 2, 15, 30, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
async def tws() -> AsyncIterator[FakeTws]:
    fake = FakeTws(accounts=(ACCOUNT,))
    await fake.start()
    for contract in (AAPL, SAP, EURUSD):
        fake.add_contract_details(contract)
    try:
        yield fake
    finally:
        await fake.stop()


def new_feed(tws: FakeTws, client: AsyncPortfolioClient, **options: object) -> MarksFeed:
    connection = IbConnection(tws.host, tws.port, 901, connect_timeout=2.0, reconnect=FAST)
    settings: dict[str, object] = {"interval": 0.05, "refresh_seconds": 0.1}
    settings.update(options)
    return MarksFeed(connection, client, CONTRACTS, **settings)  # type: ignore[arg-type]


async def eventually(condition: Callable[[], bool], timeout: float = 8.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def book(client: AsyncPortfolioClient, fill_id: str, instrument: str, side: Side,
               quantity: str, price: str) -> None:  # fmt: skip
    fill = Fill(
        fill_id=fill_id,
        account_id=ACCOUNT,
        strategy_id="momo",
        instrument_id=instrument,
        side=side,
        quantity=Decimal(quantity),
        price=Decimal(price),
        timestamp=datetime.now(UTC),
    )
    (ack,) = await client.ingest([fill])
    assert ack.applied, ack


async def row(client: AsyncPortfolioClient, instrument: str) -> Position:
    return await client.get_position(ACCOUNT, instrument, strategy_id="momo")


async def until_marked(client: AsyncPortfolioClient, instrument: str, price: str) -> Position:
    """Until the service values the row at `price`; returns the row."""
    async with asyncio.timeout(8):
        while True:
            position = await row(client, instrument)
            if position.market_price == Decimal(price):
                return position
            await asyncio.sleep(0.03)


# ---------------------------------------------------------------------------------------------
# Against the fake TWS and a real service


async def test_marks_reach_the_service_exactly_with_delayed_data(
    tws: FakeTws, portfolio: AsyncPortfolioClient
) -> None:
    await book(portfolio, "f1", "AAPL", Side.BUY, "10", "100")
    tws.set_tick(AAPL.con_id, BID, "100.1")
    tws.set_tick(AAPL.con_id, ASK, "100.3")
    feed = new_feed(tws, portfolio, market_data_type=MarketDataType.DELAYED)
    await feed.start()
    try:
        # 100.2 exactly: the float mid of 100.1 and 100.3 is 100.19999999999999
        position = await until_marked(portfolio, "AAPL", "100.2")
        assert position.unrealized_pnl == Decimal("2.0")
        assert tws.requests_of(59)[-1] == ["1", "3"]  # reqMarketDataType delayed
        assert feed.subscribed() == {"AAPL": AAPL.con_id}
        tws.set_tick(AAPL.con_id, BID, "99.95")  # the delayed tick ids: 66, 67
        tws.set_tick(AAPL.con_id, ASK, "100.05")
        position = await until_marked(portfolio, "AAPL", "100")
        assert position.unrealized_pnl == 0
        assert feed.stats.refused == 0
    finally:
        await feed.stop()


async def test_ticks_are_coalesced_into_one_mark_per_interval(
    tws: FakeTws, portfolio: AsyncPortfolioClient
) -> None:
    await book(portfolio, "f1", "AAPL", Side.BUY, "10", "100")
    feed = new_feed(tws, portfolio, interval=3600, price=PriceChoice.LAST)  # flushed by hand
    await feed.start()
    try:
        await eventually(lambda: feed.subscribed() == {"AAPL": AAPL.con_id})
        for cents in range(1, 21):
            tws.set_tick(AAPL.con_id, LAST, f"101.{cents:02d}")
        last = Decimal("101.20")
        await eventually(lambda: (q := feed.latest("AAPL")) is not None and q.last == last)
        await feed.flush()
        assert feed.stats.marks_applied == 1
        await feed.flush()  # nothing new: nothing sent
        assert feed.stats.marks_applied == 1
        position = await row(portfolio, "AAPL")
        assert position.market_price == Decimal("101.20")
        assert position.unrealized_pnl == Decimal("12.00")
    finally:
        await feed.stop()


async def test_an_fx_rate_from_a_cash_contract_values_a_foreign_row_in_base_currency(
    tws: FakeTws, service: ServerThread, portfolio: AsyncPortfolioClient
) -> None:
    with grpc.insecure_channel(service.address) as channel:
        pb_grpc.PortfolioManagerStub(channel).DefineInstrument(
            pb.DefineInstrumentRequest(
                instrument=pb.Instrument(
                    instrument_id="14204",
                    symbol="SAP",
                    asset_class=pb.ASSET_CLASS_EQUITY,
                    currency="EUR",
                )
            ),
            timeout=5,
        )
    await book(portfolio, "f1", "14204", Side.BUY, "10", "120")
    tws.set_tick(SAP.con_id, LAST, "125.5")
    tws.set_tick(EURUSD.con_id, BID, "1.0841")
    tws.set_tick(EURUSD.con_id, ASK, "1.0843")
    feed = new_feed(tws, portfolio)
    await feed.start()
    try:
        async with asyncio.timeout(8):
            while True:
                position = await row(portfolio, "14204")
                if position.fx_rate is not None and position.market_price == Decimal("125.5"):
                    break
                await asyncio.sleep(0.03)
        assert position.base_currency == "USD"
        assert position.fx_rate == Decimal("1.0842")
        assert position.unrealized_pnl == Decimal("55.0")
        assert position.unrealized_pnl_base == Decimal("59.631")
        assert feed.subscribed() == {"14204": SAP.con_id, "EUR.USD": EURUSD.con_id}
        asked = [r for r in tws.requests_of(9) if r[4] == "CASH"]
        assert [(r[3], r[11]) for r in asked] == [("EUR", "USD")]  # as IB lists the pair
    finally:
        await feed.stop()


async def test_a_pair_ib_lists_the_other_way_round_is_asked_that_way(
    tws: FakeTws, service: ServerThread, portfolio: AsyncPortfolioClient
) -> None:
    toyota = FakeContract(13, "7203", exchange="TSEJ", currency="JPY")
    usdjpy = FakeContract(15016059, "USD", sec_type="CASH", exchange="IDEALPRO", currency="JPY")
    for contract in (toyota, usdjpy):
        tws.add_contract_details(contract)
    with grpc.insecure_channel(service.address) as channel:
        pb_grpc.PortfolioManagerStub(channel).DefineInstrument(
            pb.DefineInstrumentRequest(
                instrument=pb.Instrument(
                    instrument_id="13", symbol="7203", asset_class=pb.ASSET_CLASS_EQUITY,
                    currency="JPY",
                )
            ),
            timeout=5,
        )  # fmt: skip
    await book(portfolio, "f1", "13", Side.BUY, "100", "3000")
    tws.set_tick(usdjpy.con_id, BID, "149.99")
    tws.set_tick(usdjpy.con_id, ASK, "150.01")
    feed = new_feed(tws, portfolio)
    await feed.start()
    try:
        await eventually(lambda: "USD.JPY" in feed.subscribed())
        async with asyncio.timeout(8):
            while (await row(portfolio, "13")).fx_rate is None:
                await asyncio.sleep(0.03)
        assert (await row(portfolio, "13")).fx_rate == Decimal("0.006666666666666667")
        asked = [(r[3], r[11]) for r in tws.requests_of(9) if r[4] == "CASH"]
        assert asked == [("JPY", "USD"), ("USD", "JPY")]
    finally:
        await feed.stop()


async def test_a_market_data_permission_error_is_counted_and_logged_once(
    tws: FakeTws, portfolio: AsyncPortfolioClient, caplog: pytest.LogCaptureFixture
) -> None:
    await book(portfolio, "f1", "AAPL", Side.BUY, "10", "100")
    feed = new_feed(tws, portfolio)
    await feed.start()
    try:
        await eventually(lambda: tws.subscribed_con_ids() == {AAPL.con_id})
        req_id = int(tws.requests_of(1)[-1][1])
        for _ in range(2):
            tws.send_error(req_id, 354, "Requested market data is not subscribed.")
        await eventually(lambda: feed.stats.market_data_errors == 2)
        warned = [r for r in caplog.records if "IB error 354" in r.getMessage()]
        assert len(warned) == 1
        assert "--market-data-type delayed" in warned[0].getMessage()
    finally:
        await feed.stop()


async def test_a_flat_instrument_has_its_market_data_cancelled(
    tws: FakeTws, portfolio: AsyncPortfolioClient
) -> None:
    await book(portfolio, "f1", "AAPL", Side.BUY, "10", "100")
    feed = new_feed(tws, portfolio)
    await feed.start()
    try:
        await tws.wait_for_clients(1)
        await eventually(lambda: tws.subscribed_con_ids() == {AAPL.con_id})
        await book(portfolio, "f2", "AAPL", Side.SELL, "10", "101")
        await eventually(lambda: tws.subscribed_con_ids() == set())
        assert len(tws.requests_of(2)) == 1  # cancelMktData
        assert feed.subscribed() == {}
        assert feed.stats.cancelled_total == 1
        await book(portfolio, "f3", "AAPL", Side.BUY, "5", "102")  # held again: again
        await eventually(lambda: tws.subscribed_con_ids() == {AAPL.con_id})
    finally:
        await feed.stop()


async def test_a_tws_reconnect_subscribes_again(
    tws: FakeTws, portfolio: AsyncPortfolioClient
) -> None:
    await book(portfolio, "f1", "AAPL", Side.BUY, "10", "100")
    tws.set_tick(AAPL.con_id, LAST, "100.5")
    feed = new_feed(tws, portfolio, price=PriceChoice.LAST)
    await feed.start()
    try:
        await until_marked(portfolio, "AAPL", "100.5")
        await tws.drop_clients()
        await feed.connection.wait_disconnected(5)
        await feed.connection.wait_connected(5)
        await eventually(lambda: tws.subscribed_con_ids() == {AAPL.con_id})
        assert len(tws.requests_of(1)) == 2  # reqMktData, once per connection
        assert len(tws.requests_of(59)) == 2  # reqMarketDataType, once per connection
        tws.set_tick(AAPL.con_id, LAST, "100.75")
        await until_marked(portfolio, "AAPL", "100.75")
    finally:
        await feed.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_quotes_wait_while_the_service_is_down_and_go_when_it_is_back(
    tws: FakeTws,
) -> None:
    port = _free_port()
    first = await asyncio.to_thread(start_test_server, port=port)
    second: ServerThread | None = None
    async with AsyncPortfolioClient(
        f"127.0.0.1:{port}", channel_options=PORTFOLIO_CHANNEL_OPTIONS
    ) as client:
        await book(client, "f1", "AAPL", Side.BUY, "10", "100")
        tws.set_tick(AAPL.con_id, LAST, "100.5")
        feed = new_feed(tws, client, price=PriceChoice.LAST, refresh_seconds=3600)
        await feed.start()
        try:
            await until_marked(client, "AAPL", "100.5")
            await asyncio.to_thread(first.stop)
            tws.set_tick(AAPL.con_id, LAST, "104")  # the service is down: it waits
            await eventually(lambda: not feed.stats.service_reachable)
            failures = feed.stats.send_failures
            assert failures >= 1
            second = await asyncio.to_thread(start_test_server, port=port)
            async with AsyncPortfolioClient(second.address) as fresh:  # past the back-off
                await book(fresh, "f1", "AAPL", Side.BUY, "10", "100")  # a new, empty service
                position = await until_marked(fresh, "AAPL", "104")
            assert position.unrealized_pnl == 40
            # The service applies the mark before the feed reads its answer: wait for that.
            await eventually(lambda: feed.stats.service_reachable)
        finally:
            await feed.stop()
            if second is not None:
                await asyncio.to_thread(second.stop)


async def test_an_instrument_tws_cannot_describe_is_reported_not_fatal(
    tws: FakeTws, portfolio: AsyncPortfolioClient
) -> None:
    await book(portfolio, "f1", "AAPL", Side.BUY, "10", "100")
    await book(portfolio, "f2", "999999", Side.BUY, "1", "5")  # a conId TWS does not know
    await book(portfolio, "f3", "BTC-PERP", Side.BUY, "1", "5")  # neither mapped nor a conId
    tws.set_tick(AAPL.con_id, LAST, "100.5")
    feed = new_feed(tws, portfolio, price=PriceChoice.LAST)
    await feed.start()
    try:
        await until_marked(portfolio, "AAPL", "100.5")
        assert sorted(feed.stats.unresolved) == ["999999", "BTC-PERP"]
        assert feed.subscribed() == {"AAPL": AAPL.con_id}
    finally:
        await feed.stop()


async def test_the_marks_process_streams_and_stops_on_sigterm(
    tws: FakeTws, service: ServerThread, portfolio: AsyncPortfolioClient, tmp_path: Path
) -> None:
    contracts = tmp_path / "contracts.json"
    contracts.write_text('{"265598": "AAPL"}')
    await book(portfolio, "f1", "AAPL", Side.BUY, "10", "100")
    tws.set_tick(AAPL.con_id, BID, "100.25")
    tws.set_tick(AAPL.con_id, ASK, "100.75")
    log_path = tmp_path / "marks.log"
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "relay.marks_feed", "--tws-port", str(tws.port),
            "--service", service.address, "--contract-map", str(contracts),
            "--market-data-type", "frozen",
            stderr=log_file, cwd=Path(__file__).parents[2],
            env={**os.environ, "MARKS_INTERVAL": "0.1", "MARKS_REFRESH_SECONDS": "0.2"},
        )  # fmt: skip
    try:
        await until_marked(portfolio, "AAPL", "100.5")
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    logged = log_path.read_text()
    assert "market data type frozen (2)" in logged
    assert "marks feed stopped" in logged


# ---------------------------------------------------------------------------------------------
# The pure rules


def test_tick_prices_are_the_decimal_text_tws_sent_and_no_price_is_none() -> None:
    assert tick_price(100.1) == Decimal("100.1")
    assert str(tick_price(0.0001)) == "0.0001"
    assert tick_price(-1.0) is None  # IB's "no price"
    assert tick_price(math.nan) is None  # ib_async's unset
    assert tick_price(UNSET_DOUBLE) is None
    assert tick_price(math.inf) is None
    assert tick_price(-0.5) == Decimal("-0.5")  # spreads trade below zero


def _ticker(bid: float, ask: float, last: float, close: float = math.nan) -> Ticker:
    ticker = Ticker(time=T0)  # its constructor resets the prices: set them as ticks do
    ticker.bid, ticker.ask, ticker.last, ticker.close = bid, ask, last, close
    return ticker


def test_the_price_of_a_quote() -> None:
    quote = quote_of(_ticker(100.1, 100.3, 100.25))
    assert quote == Quote(Decimal("100.1"), Decimal("100.3"), Decimal("100.25"), None, T0)
    assert quote.price(PriceChoice.MIDPOINT) == Decimal("100.2")
    assert quote.price(PriceChoice.LAST) == Decimal("100.25")
    one_sided = quote_of(_ticker(100.1, -1.0, math.nan, 99.5))
    assert one_sided.price(PriceChoice.MIDPOINT) == Decimal("99.5")  # the close, at last
    crossed = quote_of(_ticker(100.4, 100.3, 100.35))
    assert (crossed.bid, crossed.ask) == (None, None)
    assert crossed.price(PriceChoice.MIDPOINT) == Decimal("100.35")
    assert quote_of(_ticker(math.nan, math.nan, math.nan)).price(PriceChoice.LAST) is None


def test_marks_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_args([])
    assert (config.market_data_type, config.price, config.client_id) == (
        MarketDataType.LIVE,
        PriceChoice.MIDPOINT,
        901,
    )
    monkeypatch.setenv("MARKS_MARKET_DATA_TYPE", "delayed-frozen")
    monkeypatch.setenv("MARKS_FX_PAIRS", "EUR.USD, usd/jpy")
    config = parse_args(["--price", "last", "--interval", "0.5"])
    assert config.market_data_type is MarketDataType.DELAYED_FROZEN
    assert config.fx_pairs == (("EUR", "USD"), ("USD", "JPY"))
    assert (config.price, config.interval) == (PriceChoice.LAST, 0.5)
    assert parse_args(["--market-data-type", "2"]).market_data_type is MarketDataType.FROZEN
    for bad in (["--market-data-type", "5"], ["--price", "vwap"], ["--fx-pairs", "EURUSD"]):
        with pytest.raises(SystemExit):
            parse_args(bad)
    with pytest.raises(ValueError, match="same currency"):
        parse_fx_pair("USD.USD")


def test_a_naive_timestamp_is_refused_before_sending() -> None:
    naive = MarkPrice(instrument_id="AAPL", mark=Decimal(1), timestamp=datetime(2026, 1, 2))
    with pytest.raises(ValueError, match="naive"):
        mark_batches([naive])
