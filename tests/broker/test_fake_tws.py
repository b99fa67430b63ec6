"""The real `ib_async.IB` client against FakeTws: proof that the fake speaks the protocol the way
ib_async expects it, and a record of how ib_async reacts (which events need an openOrder first,
how fills and commission reports are attached)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from eventkit import Event
from ib_async import IB, AccountValue, ExecutionFilter, Stock
from ib_async.ib import StartupFetch, StartupFetchALL

from tests.broker.fake_tws import FakeContract, FakeTws

AAPL = FakeContract(265598, "AAPL", local_symbol="AAPL", trading_class="NMS")
MSFT = FakeContract(272093, "MSFT", local_symbol="MSFT", trading_class="NMS")
ES = FakeContract(
    495512563,
    "ES",
    "FUT",
    "20261218",
    multiplier="50",
    exchange="CME",
    local_symbol="ESZ6",
    trading_class="ES",
)
EXEC_1 = "0001f4e8.6571a1b2.01.01"
EXEC_1_CORRECTED = "0001f4e8.6571a1b2.01.02"
# without the startup reqExecutions, the fills of reqExecutionsAsync carry their commissions
NO_STARTUP_EXECUTIONS = StartupFetchALL & ~StartupFetch.EXECUTIONS
WAIT = 2.0


@pytest.fixture(autouse=True)
def _no_decoding_errors(caplog: pytest.LogCaptureFixture):
    """Every message the fake sends must decode, and every orderStatus must find its order."""
    yield
    bad = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR
        and (r.name == "ib_async.Decoder" or "No order found" in r.getMessage())
    ]
    assert not bad


@pytest.fixture
async def fake() -> AsyncIterator[FakeTws]:
    tws = FakeTws()
    await tws.start()
    yield tws
    await tws.stop()


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Any]]:
    """connect(tws, client_id, **connectAsync options) -> a connected IB, disconnected after."""
    clients: list[IB] = []

    async def _connect(tws: FakeTws, client_id: int, **options: Any) -> IB:
        ib = IB()
        clients.append(ib)
        options.setdefault("timeout", 5)
        await ib.connectAsync(tws.host, tws.port, clientId=client_id, **options)
        return ib

    yield _connect
    for ib in clients:
        ib.disconnect()


def expect(event: Event, predicate: Callable[..., bool] | None = None) -> asyncio.Future[Any]:
    """A future for the next emit of `event` matching `predicate`; register before acting."""
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def handler(*args: Any) -> None:
        if not future.done() and (predicate is None or predicate(*args)):
            future.set_result(args)

    event.connect(handler)
    future.add_done_callback(lambda _: event.disconnect(handler))
    return future


async def settle(ib: IB) -> None:
    """A round trip: everything the fake sent before has been handled by the client."""
    await asyncio.wait_for(ib.reqCurrentTimeAsync(), WAIT)


@pytest.mark.parametrize("readonly", [True, False])
@pytest.mark.parametrize("accounts", [("U123",), ("U1", "U2")])
async def test_connect_completes_quickly(connect, readonly: bool, accounts: tuple[str, ...]):
    tws = FakeTws(accounts=accounts)
    await tws.start()
    try:
        started = time.monotonic()
        ib = await connect(tws, 7, readonly=readonly, raiseSyncErrors=True)
        elapsed = time.monotonic() - started

        assert elapsed < 2.0
        assert ib.isConnected()
        assert ib.managedAccounts() == list(accounts)
        assert ib.client.serverVersion() == 176
        await tws.wait_for_clients(1)
        assert tws.connections == 1
        assert bool(tws.requests_of(5)) is not readonly  # reqOpenOrders only when trading
        assert bool(tws.requests_of(6)) is (len(accounts) == 1)  # one account: reqAccountUpdates
        assert [fields[2] for fields in tws.requests_of(76)] == list(accounts)
        assert len(tws.requests_of(7)) == 1  # reqExecutions, last
        assert isinstance(await ib.reqCurrentTimeAsync(), datetime)
    finally:
        await tws.stop()


async def test_positions_at_connect_and_live(fake: FakeTws, connect):
    fake.set_position("U123", AAPL, "100", "150.2512")
    fake.set_position("U123", ES, "-2", "250125.5")
    fake.set_position("U123", MSFT, "0", "0")  # flat: still a row
    ib = await connect(fake, 1, readonly=True)

    by_con_id = {p.contract.conId: p for p in ib.positions()}
    assert set(by_con_id) == {AAPL.con_id, ES.con_id}  # ib_async drops the flat row
    assert (by_con_id[AAPL.con_id].position, by_con_id[AAPL.con_id].avgCost) == (100, 150.2512)
    es = by_con_id[ES.con_id]
    assert (es.account, es.position, es.avgCost) == ("U123", -2, 250125.5)
    assert (es.contract.secType, es.contract.multiplier) == ("FUT", "50")
    assert es.contract.lastTradeDateOrContractMonth == "20261218"
    answered = await asyncio.wait_for(ib.reqPositionsAsync(), WAIT)
    assert {p.contract.conId: p.position for p in answered}[MSFT.con_id] == 0

    update = expect(ib.positionEvent, lambda p: p.contract.conId == MSFT.con_id)
    fake.set_position("U123", MSFT, "25", "410.5")
    (position,) = await asyncio.wait_for(update, WAIT)
    assert (position.position, position.avgCost) == (25, 410.5)
    assert MSFT.con_id in {p.contract.conId for p in ib.positions()}


async def test_account_values_and_portfolio(fake: FakeTws, connect):
    fake.set_account_value("U123", "NetLiquidation", "100250.75", "USD")
    fake.set_account_value("U123", "CashBalance", "5000.5", "EUR")
    fake.set_portfolio_item("U123", AAPL, "100", "151.5", "15150", "150.2512", "124.88", "0")
    ib = await connect(fake, 1, readonly=True)

    values = {(v.tag, v.currency): v for v in ib.accountValues()}
    assert values[("NetLiquidation", "USD")] == AccountValue(
        "U123", "NetLiquidation", "100250.75", "USD", ""
    )
    assert values[("CashBalance", "EUR")].value == "5000.5"
    (item,) = ib.portfolio()
    assert (item.account, item.contract.conId, item.position) == ("U123", AAPL.con_id, 100)
    assert (item.marketPrice, item.marketValue, item.averageCost) == (151.5, 15150, 150.2512)
    assert (item.unrealizedPNL, item.realizedPNL) == (124.88, 0)

    update = expect(ib.accountValueEvent, lambda v: v.tag == "NetLiquidation")
    fake.set_account_value("U123", "NetLiquidation", "99000", "USD")
    (value,) = await asyncio.wait_for(update, WAIT)
    assert value.value == "99000"
    summary = await asyncio.wait_for(ib.accountSummaryAsync(), WAIT)
    assert {(v.tag, v.value) for v in summary} == {("NetLiquidation", "99000")}


async def test_account_values_of_several_accounts(connect):
    tws = FakeTws(accounts=("U1", "U2"))
    await tws.start()
    try:
        tws.set_account_value("U1", "NetLiquidation", "1000", "USD")
        tws.set_account_value("U2", "NetLiquidation", "2000", "USD")
        ib = await connect(tws, 1, readonly=True)
        assert {(v.account, v.value) for v in ib.accountValues()} == {
            ("U1", "1000"),
            ("U2", "2000"),
        }
    finally:
        await tws.stop()


def _add_fills(tws: FakeTws) -> None:
    common: dict[str, Any] = {"order_id": 3, "perm_id": 8000, "client_id": 1}
    tws.add_execution(
        "U123",
        AAPL,
        EXEC_1,
        "BOT",
        "100",
        "150.25",
        order_ref="strat-a",
        commission="1.05",
        time="20260102 15:30:00 UTC",
        live=False,
        **common,
    )
    tws.add_execution(
        "U123",
        AAPL,
        EXEC_1_CORRECTED,
        "BOT",
        "100",
        "150.2",
        order_ref="strat-a",
        commission="1.05",
        time="20260102 15:30:00 UTC",
        live=False,
        **common,
    )
    tws.add_execution(
        "U123",
        ES,
        "0001f4e8.6571a1b3.01.01",
        "SLD",
        "2",
        "5001.25",
        order_ref="strat-b",
        commission="4.2",
        commission_currency="USD",
        realized_pnl="125.5",
        time="20260103 14:00:00 UTC",
        order_id=4,
        perm_id=8001,
        client_id=2,
        live=False,
    )


async def test_req_executions_returns_fills_with_commissions(fake: FakeTws, connect):
    _add_fills(fake)
    ib = await connect(fake, 1, readonly=True, fetchFields=NO_STARTUP_EXECUTIONS)

    fills = await asyncio.wait_for(ib.reqExecutionsAsync(), WAIT)
    by_id = {f.execution.execId: f for f in fills}
    assert list(by_id) == [EXEC_1, EXEC_1_CORRECTED, "0001f4e8.6571a1b3.01.01"]  # both kept
    es = by_id["0001f4e8.6571a1b3.01.01"]
    assert (es.execution.side, es.execution.shares, es.execution.price) == ("SLD", 2, 5001.25)
    assert (es.execution.orderRef, es.execution.acctNumber) == ("strat-b", "U123")
    assert (es.execution.permId, es.execution.clientId, es.execution.orderId) == (8001, 2, 4)
    assert es.execution.time == datetime(2026, 1, 3, 14, 0, tzinfo=UTC)
    assert (es.commissionReport.commission, es.commissionReport.currency) == (4.2, "USD")
    assert es.commissionReport.realizedPNL == 125.5
    assert es.contract.conId == ES.con_id
    assert by_id[EXEC_1_CORRECTED].execution.price == 150.2

    sells = await ib.reqExecutionsAsync(ExecutionFilter(side="SELL"))
    assert [f.execution.execId for f in sells] == ["0001f4e8.6571a1b3.01.01"]
    of_client = await ib.reqExecutionsAsync(ExecutionFilter(clientId=1, acctCode="U123"))
    assert {f.execution.execId for f in of_client} == {EXEC_1, EXEC_1_CORRECTED}
    since = await ib.reqExecutionsAsync(ExecutionFilter(time="20260103 00:00:00"))
    assert len(since) == 1

    fake.remove_execution(EXEC_1)
    remaining = await asyncio.wait_for(ib.reqExecutionsAsync(), WAIT)
    assert EXEC_1 not in {f.execution.execId for f in remaining}


async def test_after_default_connect_commissions_are_only_in_fills(fake: FakeTws, connect):
    """ib_async quirk: a fill already seen (here by connectAsync's own reqExecutions) comes back
    from reqExecutionsAsync as a new Fill whose commission report stays empty; the report lands
    on the Fill in ib.fills()."""
    _add_fills(fake)
    ib = await connect(fake, 1, readonly=True)

    again = await asyncio.wait_for(ib.reqExecutionsAsync(), WAIT)
    assert len(again) == 3
    assert {f.commissionReport.execId for f in again} == {""}
    assert {f.execution.execId: f.commissionReport.commission for f in ib.fills()}[EXEC_1] == 1.05


async def test_live_order_execution_and_status(fake: FakeTws, connect):
    ib = await connect(fake, 1)

    opened = expect(ib.openOrderEvent)
    fake.add_order("U123", 7, 9001, 1, ES, "BUY", "2", order_ref="strat-a", limit_price="5000.25")
    (trade,) = await asyncio.wait_for(opened, WAIT)
    await settle(ib)  # its orderStatus too
    assert [(t.order.permId, t.order.orderRef) for t in ib.trades()] == [(9001, "strat-a")]
    assert (trade.order.totalQuantity, trade.order.lmtPrice) == (2, 5000.25)
    assert (trade.orderStatus.status, trade.orderStatus.remaining) == ("Submitted", 2)

    filled = expect(ib.execDetailsEvent)
    reported = expect(ib.commissionReportEvent)
    fake.add_execution(
        "U123",
        ES,
        "0002.01.01",
        "BOT",
        "2",
        "5000.25",
        order_id=7,
        perm_id=9001,
        client_id=1,
        order_ref="strat-a",
        commission="4.2",
    )
    fill_trade, fill = await asyncio.wait_for(filled, WAIT)
    assert fill_trade is trade
    assert (fill.execution.execId, fill.execution.orderRef) == ("0002.01.01", "strat-a")
    _, _, report = await asyncio.wait_for(reported, WAIT)
    assert (report.execId, report.commission, report.currency) == ("0002.01.01", 4.2, "USD")

    status = expect(ib.orderStatusEvent, lambda t: t.orderStatus.status == "Filled")
    fake.set_order_status(9001, "Filled", "2", "0", avg_fill_price="5000.25")
    (done,) = await asyncio.wait_for(status, WAIT)
    assert done is trade
    assert (done.orderStatus.filled, done.orderStatus.avgFillPrice) == (2, 5000.25)
    assert done.isDone()
    assert [f.execution.execId for f in done.fills] == ["0002.01.01"]
    assert not await asyncio.wait_for(ib.reqOpenOrdersAsync(), WAIT)  # done: no longer open


async def test_status_for_an_unseen_order_sends_open_order_first(fake: FakeTws, connect):
    fake.add_order("U123", 8, 9002, 1, AAPL, "SELL", "10", order_ref="strat-c")
    ib = await connect(fake, 2, readonly=True)  # readonly: never asks for open orders
    assert not ib.trades()

    status = expect(ib.orderStatusEvent)
    fake.set_order_status(9002, "Cancelled", "0", "10")
    (trade,) = await asyncio.wait_for(status, WAIT)
    assert (trade.order.orderRef, trade.orderStatus.status) == ("strat-c", "Cancelled")


async def test_live_execution_without_open_order_fires_no_event(fake: FakeTws, connect):
    """ib_async keeps such a fill (ib.fills(), keyed by execId) but emits execDetailsEvent and
    commissionReportEvent only for a fill whose order it knows from an openOrder."""
    ib = await connect(fake, 1)
    seen: list[object] = []
    ib.execDetailsEvent += lambda *args: seen.append(args)
    ib.commissionReportEvent += lambda *args: seen.append(args)

    fake.add_execution("U123", AAPL, "0003.01.01", "BOT", "5", "150", perm_id=7777)
    await settle(ib)
    assert not seen
    (fill,) = ib.fills()
    assert (fill.execution.execId, fill.commissionReport.commission) == ("0003.01.01", 0)


async def test_commission_report_sent_later(fake: FakeTws, connect):
    ib = await connect(fake, 1)
    fake.add_order("U123", 9, 9003, 1, AAPL, "BUY", "5")
    fake.add_execution(
        "U123",
        AAPL,
        "0004.01.01",
        "BOT",
        "5",
        "150",
        order_id=9,
        perm_id=9003,
        client_id=1,
        commission="0.35",
        commission_report=False,
    )
    await settle(ib)
    (fill,) = ib.fills()
    assert fill.commissionReport.execId == ""

    reported = expect(ib.commissionReportEvent)
    fake.send_commission_report("0004.01.01")
    _, _, report = await asyncio.wait_for(reported, WAIT)
    assert report.commission == 0.35
    answered = await asyncio.wait_for(ib.reqExecutionsAsync(), WAIT)
    assert [f.execution.execId for f in answered] == ["0004.01.01"]


async def test_drop_reconnect_and_refused_connection(fake: FakeTws, connect):
    ib = await connect(fake, 3)
    dropped = expect(ib.disconnectedEvent)
    await fake.drop_clients()
    await asyncio.wait_for(dropped, WAIT)
    assert not ib.isConnected()

    await ib.connectAsync(fake.host, fake.port, clientId=3, timeout=5)
    assert ib.isConnected()
    assert fake.connections == 2
    await fake.wait_for_clients(1)

    fake.accepting = False
    refused = IB()
    started = time.monotonic()
    with pytest.raises((TimeoutError, ConnectionError)):
        await refused.connectAsync(fake.host, fake.port, clientId=4, timeout=0.5)
    assert time.monotonic() - started < 1.5
    assert not refused.isConnected()
    assert fake.connections == 2
    await settle(ib)  # the open connection is unaffected


async def test_error_reaches_error_event(fake: FakeTws, connect):
    ib = await connect(fake, 1)
    error = expect(ib.errorEvent)
    fake.send_error(-1, 1100, "Connectivity between IB and Trader Workstation has been lost.")
    req_id, code, message, _contract = await asyncio.wait_for(error, WAIT)
    assert (req_id, code) == (-1, 1100)
    assert message.startswith("Connectivity between IB")


async def test_two_clients_at_once(fake: FakeTws, connect):
    reconciler = await connect(fake, 11, readonly=True)
    relay = await connect(fake, 12)
    await fake.wait_for_clients(2)
    assert [fields[2] for fields in fake.requests_of(7)] == ["0", "0"]  # unfiltered, both

    fake.add_execution("U123", AAPL, "0005.01.01", "SLD", "1", "151")
    await settle(reconciler)
    await settle(relay)
    assert [f.execution.execId for f in reconciler.fills()] == ["0005.01.01"]
    assert [f.execution.execId for f in relay.fills()] == ["0005.01.01"]


async def test_unknown_and_unanswered_requests_are_harmless(fake: FakeTws, connect):
    ib = await connect(fake, 1)
    ib.client.send(999, 1, "whatever")
    await fake.wait_for_request(999)
    assert fake.requests_of(999) == [["1", "whatever"]]

    (ticker,) = await asyncio.wait_for(
        ib.reqTickersAsync(Stock(conId=AAPL.con_id, symbol="AAPL", exchange="SMART")), WAIT
    )
    assert ticker.contract.symbol == "AAPL"  # a snapshot with no data, but answered
    assert await asyncio.wait_for(ib.reqContractDetailsAsync(Stock("AAPL")), WAIT) == []
    await settle(ib)
    assert ib.isConnected()


@pytest.mark.parametrize("server_version", [157, 166, 177, 178])
async def test_layouts_decode_at_other_server_versions(connect, server_version: int):
    """The version-dependent fields (faProfile < 177, error json >= 166, pendingPriceRevision
    >= 178) are laid out as ib_async expects; setters also work from another thread."""
    tws = FakeTws(server_version=server_version)
    await tws.start()
    try:
        tws.add_order("U123", 5, 9001, 0, AAPL, "BUY", "2", order_ref="strat-v")
        ib = await connect(tws, 0, raiseSyncErrors=True)  # clientId 0 also sends reqAutoOpenOrders
        assert ib.client.serverVersion() == server_version
        assert [t.order.orderRef for t in ib.trades()] == ["strat-v"]

        filled = expect(ib.execDetailsEvent)
        error = expect(ib.errorEvent)
        tws.add_execution("U123", AAPL, "0006.01.01", "BOT", "2", "150", order_id=5, perm_id=9001)
        await asyncio.to_thread(tws.send_error, -1, 2104, "farm OK")  # blocks until applied
        await asyncio.wait_for(asyncio.gather(filled, error), WAIT)
        assert [f.execution.execId for f in ib.fills()] == ["0006.01.01"]
    finally:
        await tws.stop()
