"""The execution relay: the real ib_async client against a fake TWS, a real portfolio service on
a loopback port, and the pure mapping from ib_async's objects to the SDK's events."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import grpc
import pytest
from ib_async import CommissionReport, Contract, Execution, Order, OrderStatus, Trade
from ib_async import Fill as IbFill
from ib_async.objects import TradeLogEntry
from ib_async.util import UNSET_DOUBLE, UNSET_INTEGER

from client import AsyncPortfolioClient, Fill, OrderStatusUpdate, PortfolioError, Position, Side
from client import OrderStatus as Status
from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from relay.executions import (
    Attribution,
    UnmappableEvent,
    corrected_exec_id,
    fill_event,
    order_status,
    status_update,
)
from relay.pending import CommissionWait
from relay.relay import PORTFOLIO_CHANNEL_OPTIONS, ExecutionRelay
from relay.relay_config import RelayConfig, parse_args
from tests.broker.fake_tws import FakeContract, FakeTws
from tests.conftest import ServerThread, start_test_server
from tws.amounts import MissingAmount, amount, amount_from_text, optional_amount
from tws.connection import IbConnection, ReconnectPolicy
from tws.contracts import ContractMap

pytestmark = pytest.mark.timeout(30)

ACCOUNT = "U123"
FAST = ReconnectPolicy(initial=0.05, factor=2.0, maximum=0.4)
QUANTUM = Decimal("1e-9")  # the test service's --precision

AAPL = FakeContract(265598, "AAPL")
MSFT = FakeContract(272093, "MSFT")
ES = FakeContract(
    495512563, "ES", sec_type="FUT", last_trade_date="20261218", multiplier="50", exchange="CME"
)
CONTRACTS = ContractMap.from_entries({"265598": "AAPL", "495512563": "ES-202612"})
INSTRUMENTS = {AAPL: "AAPL", MSFT: "272093", ES: "ES-202612"}  # MSFT is unmapped: its conId
CLIENT_IDS = {"momo": 3, "meanrev": 4}


# ---------------------------------------------------------------------------------------------
# Fixtures


def new_relay(tws: FakeTws, client: AsyncPortfolioClient, **options) -> ExecutionRelay:
    connection = IbConnection(
        tws.host, tws.port, 900, readonly=False, connect_timeout=2.0, reconnect=FAST
    )
    settings = {"commission_wait": 2.0, "sweep_seconds": 0.5, "tick_seconds": 0.05}
    settings.update(options)
    return ExecutionRelay(connection, client, CONTRACTS, **settings)


@pytest.fixture
async def relay(tws: FakeTws, portfolio: AsyncPortfolioClient) -> AsyncIterator[ExecutionRelay]:
    relay = new_relay(tws, portfolio)
    await relay.start()
    await relay.connection.wait_connected(5)
    try:
        yield relay
    finally:
        await relay.stop()


async def eventually(condition: Callable[[], bool], timeout: float = 8.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def all_sent(relay: ExecutionRelay, fills: int) -> None:
    """Until `fills` fills went out and the service acked everything."""
    await eventually(lambda: relay.stats.fills_sent >= fills)
    await relay.drained(8)


# ---------------------------------------------------------------------------------------------
# An independent model of the book: average cost, as docs/accounting.md defines it


@dataclass
class Book:
    quantity: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)  # signed like the quantity
    realized: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)
    trades: int = 0

    def take(self, side: str, shares: Decimal, price: Decimal, commission: Decimal) -> None:
        delta = shares if side == "BOT" else -shares
        if not self.quantity or (self.quantity > 0) == (delta > 0):
            self.cost += delta * price
            self.quantity += delta
        else:
            held, closed = abs(self.quantity), min(abs(delta), abs(self.quantity))
            released = (
                self.cost
                if closed == held
                else (self.cost * closed / held).quantize(QUANTUM, ROUND_HALF_EVEN)
            )
            direction = 1 if self.quantity > 0 else -1
            self.realized += direction * closed * price - released
            self.cost -= released
            self.quantity += delta
            if closed < abs(delta):
                self.cost = self.quantity * price
        self.fees += commission
        self.trades += 1

    def assert_matches(self, row: Position) -> None:
        avg = (abs(self.cost) / abs(self.quantity)).quantize(QUANTUM) if self.quantity else 0
        assert (row.quantity, row.avg_cost, row.realized_pnl, row.fees, row.trade_count) == (
            self.quantity,
            avg,
            self.realized,
            self.fees,
            self.trades,
        ), row


@dataclass(frozen=True)
class Exec:
    """One execution the test makes TWS report."""

    exec_id: str
    contract: FakeContract
    side: str
    shares: str
    price: str
    commission: str
    order_ref: str = ""
    perm_id: int = 0
    order_id: int = 0

    def report(self, tws: FakeTws, *, live: bool = True) -> None:
        tws.add_execution(
            ACCOUNT,
            self.contract,
            self.exec_id,
            self.side,
            self.shares,
            self.price,
            order_id=self.order_id,
            perm_id=self.perm_id,
            client_id=CLIENT_IDS.get(self.order_ref, 0),
            order_ref=self.order_ref,
            commission=self.commission,
            live=live,
        )


def expected_books(executions: list[Exec], default: str = "UNASSIGNED") -> dict[tuple, Book]:
    """Per (strategy, instrument), and per (None, instrument) for the account-level book."""
    books: dict[tuple, Book] = {}
    for e in executions:
        instrument = INSTRUMENTS[e.contract]
        for strategy in (e.order_ref or default, None):
            books.setdefault((strategy, instrument), Book()).take(
                e.side, Decimal(e.shares), Decimal(e.price), Decimal(e.commission)
            )
    return books


async def assert_books(client: AsyncPortfolioClient, executions: list[Exec]) -> None:
    for (strategy, instrument), book in expected_books(executions).items():
        book.assert_matches(await client.get_position(ACCOUNT, instrument, strategy_id=strategy))


def random_executions(rng: random.Random, count: int, stem: int, perm_base: int) -> list[Exec]:
    """Executions of both strategies across the three instruments, each order partly filled in
    several executions, with buys and sells, plus some with no orderRef."""
    executions: list[Exec] = []
    perm = perm_base
    while len(executions) < count:
        perm += 1
        strategy = rng.choice(["momo", "meanrev", ""])
        contract = rng.choice([AAPL, MSFT, ES])
        side = rng.choice(["BOT", "BOT", "SLD"])
        base = {AAPL: 150, MSFT: 410, ES: 6000}[contract]
        for part in range(rng.randint(1, 4)):
            price = Decimal(base) + Decimal(rng.randint(-500, 500)) / 100
            executions.append(
                Exec(
                    exec_id=f"{stem:08x}.{perm:08x}.{part + 1:02d}.01",
                    contract=contract,
                    side=side,
                    shares=str(rng.randint(1, 30)),
                    price=str(price),
                    commission=str(Decimal(rng.randint(5, 150)) / 100),
                    order_ref=strategy,
                    perm_id=perm if strategy else 0,
                )
            )
    return executions[:count]


def order_status_of(channel: grpc.aio.Channel, perm_id: int) -> object:
    return pb_grpc.PortfolioManagerStub(channel).GetOrder(
        pb.GetOrderRequest(account_id=ACCOUNT, order_id=str(perm_id))
    )


# ---------------------------------------------------------------------------------------------
# (a) A live burst


async def test_a_live_fill_burst_books_exactly_the_right_positions(
    tws: FakeTws, relay: ExecutionRelay, portfolio: AsyncPortfolioClient
) -> None:
    rng = random.Random(7)
    executions: list[Exec] = []
    perm = 5000
    # Orders that TWS reports (ib_async knows their Trade): partial fills, each with a status.
    for number, (strategy, contract) in enumerate(
        [(s, c) for s in ("momo", "meanrev") for c in (AAPL, MSFT, ES)] * 2
    ):
        perm += 1
        side = "BOT" if number % 3 else "SLD"
        parts = [rng.randint(1, 40) for _ in range(rng.randint(3, 5))]
        total = sum(parts)
        tws.add_order(
            ACCOUNT,
            number + 1,
            perm,
            CLIENT_IDS[strategy],
            contract,
            "BUY" if side == "BOT" else "SELL",
            str(total),
            order_ref=strategy,
        )
        filled = 0
        for part, shares in enumerate(parts):
            filled += shares
            price = Decimal({AAPL: 150, MSFT: 410, ES: 6000}[contract]) + Decimal(
                rng.randint(-300, 300)
            ) / Decimal(100)
            e = Exec(
                f"0000e0d5.{perm:08x}.{part + 1:02d}.01",
                contract,
                side,
                str(shares),
                str(price),
                str(Decimal(rng.randint(10, 99)) / 100),
                order_ref=strategy,
                perm_id=perm,
                order_id=number + 1,
            )
            executions.append(e)
            e.report(tws)
            status = "Filled" if filled == total else "Submitted"
            tws.set_order_status(perm, status, str(filled), str(total - filled), str(price))
    # Executions of an order with no orderRef, that TWS never reported (no Trade for it).
    for part in range(3):
        e = Exec(f"0000e0d6.00000001.{part + 1:02d}.01", AAPL, "SLD", "5", "151.5", "0.35")
        executions.append(e)
        e.report(tws)
    assert len(executions) >= 50

    await all_sent(relay, len(executions))

    await assert_books(portfolio, executions)
    unassigned = await portfolio.get_position(ACCOUNT, "AAPL", strategy_id="UNASSIGNED")
    assert unassigned.quantity == -15
    assert relay.stats.rejected == 0
    assert relay.stats.without_commission == 0


# ---------------------------------------------------------------------------------------------
# (b) A disconnect in the middle of a burst


async def test_a_disconnect_mid_burst_books_every_fill_exactly_once(
    tws: FakeTws, relay: ExecutionRelay, portfolio: AsyncPortfolioClient
) -> None:
    executions = random_executions(random.Random(11), 45, stem=0xB, perm_base=100)
    before, in_flight, offline, after = (
        executions[:20],
        executions[20:25],
        executions[25:37],
        executions[37:],
    )
    for e in before:
        e.report(tws)
    await all_sent(relay, len(before))

    for e in in_flight:  # reported live, then the line is cut: some may never arrive
        e.report(tws)
    tws.accepting = False
    await tws.drop_clients()
    await relay.connection.wait_disconnected(5)
    for e in offline:  # while disconnected: only reqExecutions will return these
        e.report(tws, live=False)
    tws.accepting = True
    await relay.connection.wait_connected(5)
    for e in after:
        e.report(tws)

    await all_sent(relay, len(executions))

    await assert_books(portfolio, executions)
    assert relay.stats.accepted == len(executions)  # each fill booked once, no status here
    # The catch-up after the reconnect resent what the service had: acked DUPLICATE.
    assert relay.stats.duplicates >= len(before)
    assert relay.stats.rejected == 0


async def test_a_restarted_relay_resends_everything_as_duplicates(
    tws: FakeTws, portfolio: AsyncPortfolioClient
) -> None:
    executions = random_executions(random.Random(5), 12, stem=0xC, perm_base=300)
    first = new_relay(tws, portfolio)
    await first.start()
    await first.connection.wait_connected(5)
    for e in executions:
        e.report(tws)
    await all_sent(first, len(executions))
    await first.stop()

    second = new_relay(tws, portfolio)  # no memory of what the first one sent
    await second.start()
    try:
        await eventually(lambda: second.stats.duplicates >= len(executions))
        await second.drained(5)
        assert (second.stats.accepted, second.stats.rejected) == (0, 0)
    finally:
        await second.stop()
    await assert_books(portfolio, executions)


# ---------------------------------------------------------------------------------------------
# (c) Corrections


async def test_an_execution_correction_replaces_the_fill(
    tws: FakeTws, relay: ExecutionRelay, portfolio: AsyncPortfolioClient
) -> None:
    original = Exec("0001f4e8.6571a1b2.01.01", AAPL, "BOT", "100", "10", "1", "momo", 9001)
    original.report(tws)
    await all_sent(relay, 1)
    booked = await portfolio.get_position(ACCOUNT, "AAPL", strategy_id="momo")
    assert booked.quantity == 100

    corrected = Exec("0001f4e8.6571a1b2.01.02", AAPL, "BOT", "90", "10.05", "0.9", "momo", 9001)
    corrected.report(tws)
    await all_sent(relay, 2)
    again = Exec("0001f4e8.6571a1b2.01.03", AAPL, "BOT", "95", "10.04", "0.95", "momo", 9001)
    again.report(tws)  # names the original too, not the .02 it follows
    await all_sent(relay, 3)

    assert relay.stats.rejected == 0
    for strategy in ("momo", None):
        row = await portfolio.get_position(ACCOUNT, "AAPL", strategy_id=strategy)
        assert (row.quantity, row.avg_cost) == (Decimal(95), Decimal("10.04"))


# ---------------------------------------------------------------------------------------------
# (d) Order statuses


async def test_order_statuses_reach_the_service(
    tws: FakeTws, relay: ExecutionRelay, service: ServerThread
) -> None:
    tws.add_order(ACCOUNT, 11, 7001, 3, AAPL, "BUY", "100", "momo", status="PreSubmitted")
    tws.set_order_status(7001, "Submitted", "0", "100")
    Exec("00007001.aa.01.01", AAPL, "BOT", "40", "150.1", "0.4", "momo", 7001, 11).report(tws)
    tws.set_order_status(7001, "Submitted", "40", "60", "150.1", "150.1")
    Exec("00007001.aa.02.01", AAPL, "BOT", "60", "150.2", "0.6", "momo", 7001, 11).report(tws)
    tws.set_order_status(7001, "Filled", "100", "0", "150.16", "150.2")
    tws.add_order(ACCOUNT, 12, 7002, 4, MSFT, "SELL", "50", "meanrev")
    tws.set_order_status(7002, "Cancelled", "0", "50")
    await eventually(lambda: relay.stats.statuses_sent >= 6)
    await all_sent(relay, 2)

    async with grpc.aio.insecure_channel(service.address) as channel:
        filled = await order_status_of(channel, 7001)
        cancelled = await order_status_of(channel, 7002)

    history = [pb.OrderStatus.Name(t.update.status) for t in filled.history]
    assert history == [
        "ORDER_STATUS_PRE_SUBMITTED",
        "ORDER_STATUS_SUBMITTED",
        "ORDER_STATUS_PARTIALLY_FILLED",
        "ORDER_STATUS_FILLED",
    ]
    assert [t.flag for t in filled.history] == [""] * 4
    times = [t.update.timestamp.ToNanoseconds() for t in filled.history]
    assert times == sorted(set(times))  # strictly increasing
    assert (filled.status, filled.is_open) == (pb.ORDER_STATUS_FILLED, False)
    assert (filled.strategy_id, filled.instrument_id, filled.side) == ("momo", "AAPL", pb.SIDE_BUY)
    assert (filled.perm_id, filled.order_ref) == ("7001", "momo")
    assert (filled.filled_quantity, filled.remaining_quantity) == ("100", "0")
    assert (filled.avg_fill_price, filled.booked_quantity) == ("150.16", "100")
    assert (filled.quantity_mismatch, filled.booked_fills) == ("0", 2)
    assert (cancelled.status, cancelled.strategy_id) == (pb.ORDER_STATUS_CANCELLED, "meanrev")
    assert cancelled.side == pb.SIDE_SELL


# ---------------------------------------------------------------------------------------------
# Commission reports, sweeps, an unreachable service


async def test_a_late_commission_report_is_waited_for(
    tws: FakeTws, relay: ExecutionRelay, portfolio: AsyncPortfolioClient
) -> None:
    tws.add_execution(ACCOUNT, AAPL, "00000c01.01.01", "BOT", "10", "150", commission="1.25",
                      commission_report=False)  # fmt: skip
    await asyncio.sleep(0.3)
    assert relay.stats.fills_sent == 0  # held back: its commission is not known yet
    tws.send_commission_report("00000c01.01.01")
    await all_sent(relay, 1)
    row = await portfolio.get_position(ACCOUNT, "AAPL", strategy_id="UNASSIGNED")
    assert (row.quantity, row.fees) == (10, Decimal("1.25"))
    assert relay.stats.without_commission == 0


async def test_without_a_commission_report_a_fill_goes_after_the_wait(
    tws: FakeTws, portfolio: AsyncPortfolioClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="portfolio.relay")
    relay = new_relay(tws, portfolio, commission_wait=0.3)
    await relay.start()
    try:
        await relay.connection.wait_connected(5)
        tws.add_execution(ACCOUNT, AAPL, "00000c02.01.01", "BOT", "10", "150", commission="2",
                          commission_report=False)  # fmt: skip
        await all_sent(relay, 1)
        assert relay.stats.without_commission == 1
        assert "fill 00000c02.01.01 sent without commission" in caplog.text
        tws.send_commission_report("00000c02.01.01")  # late: sent as a commission amendment
        await eventually(lambda: "came after the fill was sent without one" in caplog.text)
        await relay.drained(5)
    finally:
        await relay.stop()
    row = await portfolio.get_position(ACCOUNT, "AAPL", strategy_id="UNASSIGNED")
    assert (row.quantity, row.fees) == (10, 2)


async def test_the_sweep_catches_executions_no_live_event_announced(
    tws: FakeTws, relay: ExecutionRelay, portfolio: AsyncPortfolioClient
) -> None:
    await tws.wait_for_request(7, count=2)  # the connect's and the catch-up's
    e = Exec("00000d01.01.01", MSFT, "SLD", "3", "410.25", "0.3", "meanrev", 42)
    e.report(tws, live=False)  # only a later reqExecutions will return it: a sweep's
    await all_sent(relay, 1)
    row = await portfolio.get_position(ACCOUNT, "272093", strategy_id="meanrev")
    assert (row.quantity, row.avg_cost, row.fees) == (-3, Decimal("410.25"), Decimal("0.3"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_nothing_is_dropped_while_the_service_is_unreachable(tws: FakeTws) -> None:
    port = _free_port()
    executions = random_executions(random.Random(3), 8, stem=0xE, perm_base=700)
    async with AsyncPortfolioClient(
        f"127.0.0.1:{port}", channel_options=PORTFOLIO_CHANNEL_OPTIONS
    ) as client:
        relay = new_relay(tws, client, send_retry=ReconnectPolicy(0.1, 2.0, 0.5))
        await relay.start()
        service = None
        try:
            await relay.connection.wait_connected(5)
            for e in executions:
                e.report(tws)
            await eventually(lambda: relay.stats.fills_sent == len(executions))
            await asyncio.sleep(0.5)  # a few failed attempts
            assert relay.waiting >= len(executions)
            service = await asyncio.to_thread(start_test_server, port=port)
            await relay.drained(8)
            assert relay.stats.accepted == len(executions)
            await assert_books(client, executions)
        finally:
            await relay.stop()
            if service is not None:
                await asyncio.to_thread(service.stop)


async def test_stop_flushes_and_leaves_no_tasks(
    tws: FakeTws, portfolio: AsyncPortfolioClient
) -> None:
    relay = new_relay(tws, portfolio, commission_wait=30.0)
    await relay.start()
    await relay.connection.wait_connected(5)
    tws.add_execution(ACCOUNT, AAPL, "00000f01.01.01", "BOT", "7", "150", commission_report=False)
    await eventually(lambda: relay.waiting == 1)
    await relay.stop()  # the waiting fill goes, without its commission, rather than never
    await relay.stop()
    row = await portfolio.get_position(ACCOUNT, "AAPL", strategy_id="UNASSIGNED")
    assert row.quantity == 7
    current = asyncio.current_task()
    leftovers = [
        t
        for t in asyncio.all_tasks()
        if t is not current
        and any(
            part in getattr(getattr(t.get_coro(), "cr_code", None), "co_filename", "")
            for part in ("/relay/", "/tws/")  # the relay's code and the TWS link it runs on
        )
    ]
    assert leftovers == []


async def test_the_relay_process_relays_and_stops_on_sigterm(
    tws: FakeTws, service: ServerThread, portfolio: AsyncPortfolioClient, tmp_path: Path
) -> None:
    contracts = tmp_path / "contracts.json"
    contracts.write_text(json.dumps({"265598": "AAPL"}))
    log_path = tmp_path / "relay.log"
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "relay", "--tws-port", str(tws.port),
            "--service", service.address, "--contract-map", str(contracts),
            "--default-strategy", "house",
            stderr=log_file, cwd=Path(__file__).parents[2],
            env={**os.environ, "RELAY_CLIENT_ID": "901", "RELAY_SWEEP_SECONDS": "0.5"},
        )  # fmt: skip
    try:
        await tws.wait_for_clients(1, timeout=10)
        tws.add_execution(ACCOUNT, AAPL, "0000aa01.01.01", "BOT", "10", "150.1", commission="1")

        async def booked() -> Decimal:
            try:
                row = await portfolio.get_position(ACCOUNT, "AAPL", strategy_id="house")
            except PortfolioError as error:
                if error.code is not grpc.StatusCode.NOT_FOUND:
                    raise
                return Decimal(0)
            return row.quantity

        async with asyncio.timeout(10):
            while await booked() != 10:
                await asyncio.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    logged = log_path.read_text()
    assert f"connected to ib 127.0.0.1:{tws.port} as client 901 (accounts U123)" in logged
    assert "relay stopped" in logged


# ---------------------------------------------------------------------------------------------
# (e) The pure mapping, with real ib_async objects

T = datetime(2026, 1, 2, 15, 30, 0, 250_000, tzinfo=UTC)
ATTRIBUTION = Attribution(CONTRACTS)


def ib_fill(
    exec_id: str = "0001f4e8.6571a1b2.01.01",
    side: str = "BOT",
    *,
    order_ref: str = "momo",
    report: CommissionReport | None = None,
) -> IbFill:
    execution = Execution(
        execId=exec_id,
        time=T,
        acctNumber=ACCOUNT,
        exchange="ISLAND",
        side=side,
        shares=100.0,
        price=150.1,
        permId=1_234_567,
        clientId=3,
        orderId=17,
        orderRef=order_ref,
    )
    if report is None:
        report = CommissionReport(execId=exec_id, commission=1.05, currency="USD")
    return IbFill(Contract(conId=265598, symbol="AAPL"), execution, report, T)


def test_an_execution_and_its_commission_report_make_a_fill() -> None:
    assert fill_event(ib_fill(), ATTRIBUTION) == Fill(
        fill_id="0001f4e8.6571a1b2.01.01",
        account_id=ACCOUNT,
        strategy_id="momo",
        instrument_id="AAPL",
        side=Side.BUY,
        quantity=Decimal(100),
        price=Decimal("150.1"),
        timestamp=T,
        commission=Decimal("1.05"),
        commission_currency="USD",
        order_ref="momo",
        order_id="1234567",
        venue="ISLAND",
    )


def test_a_fill_without_order_ref_goes_to_the_default_strategy() -> None:
    fill = ib_fill(side="SLD", order_ref="")
    assert fill_event(fill, ATTRIBUTION).strategy_id == "UNASSIGNED"
    assert fill_event(fill, Attribution(CONTRACTS, "house")).strategy_id == "house"
    assert fill_event(fill, ATTRIBUTION).side is Side.SELL
    unmapped = fill._replace(contract=Contract(conId=272093))
    assert fill_event(unmapped, ATTRIBUTION).instrument_id == "272093"


def test_commission_only_once_reported() -> None:
    for report in (CommissionReport(), CommissionReport("0001f4e8.6571a1b2.01.01", UNSET_DOUBLE)):
        event = fill_event(ib_fill(report=report), ATTRIBUTION)
        assert (event.commission, event.commission_currency) == (0, "")
    bare = fill_event(ib_fill(), ATTRIBUTION, with_commission=False)
    assert (bare.commission, bare.commission_currency) == (0, "")


def test_an_unknown_side_is_unmappable() -> None:
    with pytest.raises(UnmappableEvent, match="unknown side 'XXX'"):
        fill_event(ib_fill(side="XXX"), ATTRIBUTION)


@pytest.mark.parametrize(
    ("exec_id", "corrects"),
    [
        ("0001f4e8.6571a1b2.01.01", ""),
        ("0001f4e8.6571a1b2.01.02", "0001f4e8.6571a1b2.01.01"),
        ("0001f4e8.6571a1b2.01.03", "0001f4e8.6571a1b2.01.01"),  # the original, not .02
        ("0001f4e8.6571a1b2.01.11", "0001f4e8.6571a1b2.01.01"),
        ("0001f4e8.6571a1b2.01.00", ""),
        ("exec-1", ""),
        ("a.b", ""),
        (".02", ""),
    ],
)
def test_the_correction_rule(exec_id: str, corrects: str) -> None:
    assert corrected_exec_id(exec_id) == corrects
    assert fill_event(ib_fill(exec_id), ATTRIBUTION).corrects == corrects


@pytest.mark.parametrize(
    ("ib_status", "filled", "remaining", "status"),
    [
        ("PendingSubmit", 0, 100, Status.PENDING_SUBMIT),
        ("ApiPending", 0, 100, Status.PENDING_SUBMIT),
        ("PreSubmitted", 0, 100, Status.PRE_SUBMITTED),
        ("Submitted", 0, 100, Status.SUBMITTED),
        ("Submitted", 30, 70, Status.PARTIALLY_FILLED),
        ("Submitted", 100, 0, Status.SUBMITTED),
        ("PendingCancel", 30, 70, Status.PENDING_CANCEL),
        ("Cancelled", 30, 0, Status.CANCELLED),
        ("ApiCancelled", 0, 100, Status.CANCELLED),
        ("Filled", 100, 0, Status.FILLED),
        ("Inactive", 0, 100, Status.INACTIVE),
        ("ApiUpdate", 0, 100, None),
        ("ValidationError", 0, 100, None),
        ("", 0, 0, None),
    ],
)
def test_the_status_table(ib_status: str, filled: int, remaining: int, status) -> None:
    assert order_status(ib_status, Decimal(filled), Decimal(remaining)) is status


def trade(status: str = "Submitted", filled: float = 30.0, perm_id: int = 1_234_567) -> Trade:
    order = Order(
        orderId=17,
        clientId=4,
        permId=perm_id,
        action="SELL",
        totalQuantity=100.0,
        orderRef="meanrev",
        account=ACCOUNT,
    )
    state = OrderStatus(
        orderId=17,
        status=status,
        filled=filled,
        remaining=100.0 - filled,
        avgFillPrice=410.2 if filled else 0.0,
        permId=perm_id,
        clientId=4,
    )
    return Trade(Contract(conId=272093), order, state, [], [TradeLogEntry(T, status)])


def test_an_order_status_update() -> None:
    assert status_update(trade(), ATTRIBUTION, T) == OrderStatusUpdate(
        update_id="ib-1234567-Submitted-30-70",
        account_id=ACCOUNT,
        instrument_id="272093",
        status=Status.PARTIALLY_FILLED,
        strategy_id="meanrev",
        order_ref="meanrev",
        order_id="1234567",
        perm_id="1234567",
        filled_quantity=Decimal(30),
        remaining_quantity=Decimal(70),
        avg_fill_price=Decimal("410.2"),
        timestamp=T,
        side=Side.SELL,
    )
    unfilled = status_update(trade(filled=0.0), ATTRIBUTION, T)
    assert unfilled is not None
    assert (unfilled.status, unfilled.avg_fill_price) == (Status.SUBMITTED, None)
    # The same status reported again is the same update: a duplicate for the service.
    assert status_update(trade(), ATTRIBUTION, T + timedelta(seconds=5)).update_id == (
        "ib-1234567-Submitted-30-70"
    )


def test_no_status_update_without_perm_id_or_for_a_notice() -> None:
    assert status_update(trade(perm_id=0), ATTRIBUTION, T) is None
    assert status_update(trade(status="ApiUpdate"), ATTRIBUTION, T) is None


def _fifteen_digit_decimals(rng: random.Random) -> Iterator[str]:
    for _ in range(2_000):
        digits = rng.randint(1, 15)
        mantissa = rng.randint(1, 10**digits - 1)
        exponent = rng.randint(-digits - 3, 3)
        yield str(Decimal(mantissa).scaleb(exponent - (digits - 1) // 2))


def test_floats_become_the_decimal_text_tws_sent() -> None:
    price = 100.1
    assert amount(price, "price") == Decimal("100.1")
    assert Decimal(price) != Decimal("100.1")  # what a naive conversion would give
    assert str(amount(100.0, "shares")) == "100"
    assert str(amount(-0.0, "shares")) == "0"
    assert amount(7, "orderId") == 7
    for text in _fifteen_digit_decimals(random.Random(1)):
        assert amount(float(text), "x") == Decimal(text), text


def test_sentinels_and_non_finite_numbers_are_missing() -> None:
    for value in (UNSET_DOUBLE, UNSET_INTEGER, math.nan, math.inf, -math.inf):
        assert optional_amount(value) is None
        with pytest.raises(MissingAmount, match="commission: not set"):
            amount(value, "commission")
    assert amount_from_text("1000250.75") == Decimal("1000250.75")
    assert amount_from_text("1.7976931348623157E308") is None
    assert amount_from_text("INDIVIDUAL") is None


def test_the_commission_wait_keeps_each_instruments_order() -> None:
    now = [0.0]
    wait = CommissionWait(10.0, clock=lambda: now[0])
    first = ib_fill("x1.01", report=CommissionReport())  # no report yet
    second = ib_fill("x2.01")  # reported, but behind `first` on the same instrument
    other = ib_fill("y1.01")._replace(contract=Contract(conId=272093))
    for fill in (first, second, other):
        wait.add(fill)
    assert [r.fill.execution.execId for r in wait.release()] == ["y1.01"]
    first.commissionReport.execId, first.commissionReport.commission = "x1.01", 1.0
    assert [(r.fill.execution.execId, r.reported) for r in wait.release()] == [
        ("x1.01", True),
        ("x2.01", True),
    ]
    late = ib_fill("z1.01", report=CommissionReport())
    wait.add(late)
    now[0] = 9.9
    assert wait.release() == []
    now[0] = 10.0
    assert [(r.fill.execution.execId, r.reported) for r in wait.release()] == [("z1.01", False)]
    assert len(wait) == 0


def test_relay_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_args([]) == RelayConfig()
    monkeypatch.setenv("RELAY_TWS_PORT", "7497")
    monkeypatch.setenv("RELAY_COMMISSION_WAIT", "2.5")
    config = parse_args(["--client-id", "0", "--default-strategy", "house"])
    assert (config.tws_port, config.commission_wait) == (7497, 2.5)
    assert (config.client_id, config.default_strategy) == (0, "house")
    with pytest.raises(SystemExit):
        parse_args(["--sweep-seconds", "0"])
