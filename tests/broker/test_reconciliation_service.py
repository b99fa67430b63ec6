"""Reconciliation end to end: a real service on a loopback port reconciles against the real
`ib_async` client connected to the fake TWS, and is asked through gRPC."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

import arcticdb as adb
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.broker.ib import IbBroker
from tests.broker.fake_tws import FakeContract, FakeTws
from tests.conftest import TEST_CONFIG, ServerThread, start_test_server
from tws.connection import IbConnection, ReconnectPolicy
from tws.contracts import ContractMap

AAPL = FakeContract(265598, "AAPL")
MSFT = FakeContract(272093, "MSFT")
ES = FakeContract(
    495512563, "ES", "FUT", last_trade_date="20261218", multiplier="50", exchange="CME"
)
CONTRACTS = {"265598": "AAPL", "272093": "MSFT", "495512563": "ES-202612"}
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
T0 = 1_767_364_200


@dataclass
class Rig:
    tws: FakeTws
    server: ServerThread
    channel: grpc.aio.Channel
    sent: int = 0

    @property
    def pm(self) -> pb_grpc.PortfolioManagerStub:
        return pb_grpc.PortfolioManagerStub(self.channel)

    async def health(self, name: str) -> int:
        stub = health_pb2_grpc.HealthStub(self.channel)
        answer = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        return int(answer.status)

    async def wait_health(self, name: str, status: int, timeout: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while await self.health(name) != status:
            assert asyncio.get_running_loop().time() < deadline, f"{name} never {status}"
            await asyncio.sleep(0.05)

    async def wait_connected(self) -> None:
        await self.wait_health("broker", SERVING)

    async def fills(self, *fills: tuple[str, str, str, str, str]) -> None:
        """(strategy, instrument, side, quantity, price) each, in account U123."""
        first, self.sent = self.sent, self.sent + len(fills)
        events = [
            pb.ExecutionEvent(
                fill=pb.Fill(
                    fill_id=f"f-{index}", account_id="U123",
                    strategy_id=strategy, instrument_id=instrument,
                    side=pb.SIDE_BUY if side == "BUY" else pb.SIDE_SELL, quantity=quantity,
                    price=price, timestamp=Timestamp(seconds=T0 + index),
                )
            )
            for index, (strategy, instrument, side, quantity, price) in enumerate(fills, first)
        ]  # fmt: skip
        responses = self.pm.Ingest(iter([pb.IngestRequest(batch_id="b", events=events)]))
        async for response in responses:
            assert all(ack.result == pb.EVENT_RESULT_ACCEPTED for ack in response.acks)

    async def reconcile(self, account_id: str = "U123") -> pb.Reconciliation:
        return await self.pm.Reconcile(pb.ReconcileRequest(account_id=account_id), timeout=10)


@pytest.fixture
def contract_map(tmp_path: Path) -> Path:
    path = tmp_path / "contracts.json"
    path.write_text(json.dumps(CONTRACTS))
    return path


@asynccontextmanager
async def rig(contract_map: Path, **config: object) -> AsyncIterator[Rig]:
    tws = FakeTws(accounts=("U123",))
    await tws.start()
    connection = IbConnection(
        "127.0.0.1", tws.port, 91, readonly=True, connect_timeout=2,
        reconnect=ReconnectPolicy(initial=0.05, maximum=0.2),
    )  # fmt: skip
    broker = IbBroker(connection, ContractMap.load(contract_map), request_timeout=3)
    config.setdefault("reconcile_seconds", 0)
    server = start_test_server(broker=broker, **config)
    channel = grpc.aio.insecure_channel(server.address)
    try:
        yield Rig(tws, server, channel)
    finally:
        await channel.close()
        await asyncio.to_thread(server.stop)
        await tws.stop()


@pytest.fixture
async def live(contract_map: Path) -> AsyncIterator[Rig]:
    async with rig(contract_map) as running:
        await running.wait_connected()
        yield running


def line_of(report: pb.Reconciliation, instrument_id: str) -> pb.ReconciliationLine:
    (line,) = [line for line in report.lines if line.instrument_id == instrument_id]
    return line


def statuses(report: pb.Reconciliation) -> dict[str, str]:
    return {
        line.instrument_id: pb.ReconciliationStatus.Name(line.status).removeprefix(
            "RECONCILIATION_STATUS_"
        )
        for line in report.lines
    }


async def test_a_clean_match(live: Rig):
    await live.fills(("S1", "AAPL", "BUY", "100", "10"), ("S2", "AAPL", "BUY", "50", "13"))
    live.tws.set_position("U123", AAPL, "150", "11.0023")  # IB's cost includes commissions
    report = await live.reconcile()
    assert statuses(report) == {"AAPL": "MATCHED"}
    line = line_of(report, "AAPL")
    assert (line.broker_quantity, line.attributed_quantity, line.residual_quantity) == (
        "150",
        "150",
        "0",
    )
    assert {s.strategy_id: s.quantity for s in line.strategies} == {"S1": "100", "S2": "50"}
    assert report.clean and report.discrepancies == 0 and report.broker_positions == 1
    assert not line.HasField("residual_position")
    assert await live.health("reconciliation") == SERVING
    latest = await live.pm.GetReconciliation(pb.GetReconciliationRequest(account_id="U123"))
    assert latest == report


async def test_a_broker_position_the_service_never_saw(contract_map: Path):
    async with rig(contract_map) as live:
        live.tws.set_position("U123", AAPL, "10", "10")
        live.tws.set_position("U123", ES, "-2", "300012.5")  # per contract: x 50
        live.tws.set_portfolio_item("U123", ES, "-2", "6010", "-601000", "300012.5", "-975", "0")
        await live.wait_connected()  # the connection's first sync brings the portfolio rows
        await live.fills(("S1", "AAPL", "BUY", "10", "10"))
        report = await live.reconcile()
        assert statuses(report) == {"AAPL": "MATCHED", "ES-202612": "UNATTRIBUTED"}
        row = line_of(report, "ES-202612").residual_position
        assert (row.strategy_id, row.level, row.quantity, row.avg_cost, row.multiplier) == (
            "UNATTRIBUTED",
            pb.POSITION_LEVEL_RESIDUAL,
            "-2",
            "6000.25",
            "50",
        )
        # Valued at the broker's market price: the service has no price of its own for it.
        assert (row.market_price, row.unrealized_pnl) == ("6010", "-975")
        assert report.discrepancies == 1 and not report.clean
        # One run is not enough to count (a fill may be on its way); the next one confirms it.
        assert await live.health("reconciliation") == SERVING
        await live.reconcile()
        await live.wait_health("reconciliation", NOT_SERVING)
        # Reconciliation never books anything: the strategies' view is unchanged.
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await live.pm.GetPosition(
                pb.GetPositionRequest(account_id="U123", instrument_id="ES-202612")
            )
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_residual_shows_in_the_report_and_the_consolidated_book(live: Rig):
    await live.fills(("S1", "MSFT", "BUY", "100", "300"))
    live.tws.set_position("U123", MSFT, "150", "302")
    report = await live.reconcile()
    line = line_of(report, "MSFT")
    assert statuses(report) == {"MSFT": "RESIDUAL"}
    # 150 x 302 = 45300 at the broker, 30000 attributed: the other 50 cost 306 each.
    assert (line.residual_position.quantity, line.residual_position.avg_cost) == ("50", "306")
    assert line.residual_position.strategy_id == "RESIDUAL"
    book = await live.pm.GetConsolidatedPosition(
        pb.GetConsolidatedPositionRequest(account_id="U123", instrument_id="MSFT")
    )
    assert book.broker_quantity == "150"
    assert book.reconciliation_status == pb.RECONCILIATION_STATUS_RESIDUAL
    assert book.residual_position.quantity == "50"
    assert book.account_position.quantity == "100"  # the strategies' book is not rewritten
    assert book.reconciled_at == report.reconciled_at
    # The broker catches up (the missing fill arrives): the next run is clean again.
    await live.fills(("S1", "MSFT", "BUY", "50", "306"))
    again = await live.reconcile()
    assert statuses(again) == {"MSFT": "MATCHED"} and again.clean
    await live.wait_health("reconciliation", SERVING)


async def test_two_strategies_on_opposite_sides_netting_to_zero(live: Rig):
    await live.fills(("S1", "AAPL", "BUY", "100", "10"), ("S2", "AAPL", "SELL", "100", "11"))
    report = await live.reconcile()  # the broker holds nothing
    assert statuses(report) == {"AAPL": "FLAT_ATTRIBUTED"} and report.clean
    line = line_of(report, "AAPL")
    assert {s.strategy_id: s.quantity for s in line.strategies} == {"S1": "100", "S2": "-100"}
    for strategy, quantity in (("S1", "100"), ("S2", "-100")):
        row = await live.pm.GetPosition(
            pb.GetPositionRequest(account_id="U123", instrument_id="AAPL", strategy_id=strategy)
        )
        assert row.quantity == quantity


async def test_a_flat_broker_position_keeps_its_attribution(live: Rig):
    await live.fills(
        ("S1", "AAPL", "BUY", "20", "10"),
        ("S2", "AAPL", "SELL", "20", "10.5"),
    )
    live.tws.set_position("U123", AAPL, "0", "0")  # closed today: TWS still lists it as 0
    report = await live.reconcile()
    assert statuses(report) == {"AAPL": "FLAT_ATTRIBUTED"}
    assert line_of(report, "AAPL").broker_quantity == "0"


async def test_a_paper_account_is_never_reconciled(live: Rig):
    await live.pm.DefineAccount(
        pb.DefineAccountRequest(
            account=pb.Account(account_id="P1", kind=pb.ACCOUNT_KIND_PAPER, base_currency="USD")
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await live.reconcile("P1")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "paper" in (refused.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as never:
        await live.pm.GetReconciliation(pb.GetReconciliationRequest(account_id="P1"))
    assert never.value.code() == grpc.StatusCode.NOT_FOUND


async def test_bad_requests_name_the_field(live: Rig):
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await live.reconcile("")
    assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as bad_page:
        await live.pm.ListReconciliations(
            pb.ListReconciliationsRequest(account_id="U123", page_token="garbage")
        )
    assert bad_page.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in (bad_page.value.details() or "")


async def test_history_is_paged_newest_first(live: Rig):
    await live.fills(("S1", "AAPL", "BUY", "1", "10"))
    live.tws.set_position("U123", AAPL, "1", "10")
    runs = [await live.reconcile() for _ in range(3)]
    first = await live.pm.ListReconciliations(
        pb.ListReconciliationsRequest(account_id="U123", page_size=2)
    )
    assert [r.sequence for r in first.reconciliations] == [runs[2].sequence, runs[1].sequence]
    rest = await live.pm.ListReconciliations(
        pb.ListReconciliationsRequest(
            account_id="U123", page_size=2, page_token=first.next_page_token
        )
    )
    assert [r.sequence for r in rest.reconciliations] == [runs[0].sequence]
    assert rest.next_page_token == ""
    # Older runs keep their counts but only their differences.
    assert rest.reconciliations[0].matched == 1 and not rest.reconciliations[0].lines


async def test_while_the_broker_is_down_reconciliation_is_unavailable(live: Rig):
    live.tws.accepting = False
    await live.tws.drop_clients()
    await live.wait_health("broker", NOT_SERVING)
    with pytest.raises(grpc.aio.AioRpcError) as down:
        await live.reconcile()
    assert down.value.code() == grpc.StatusCode.UNAVAILABLE
    live.tws.accepting = True
    await live.wait_health("broker", SERVING)
    assert (await live.reconcile()).clean


async def test_without_a_broker_reconcile_is_unavailable():
    server = start_test_server()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as none:
                await pb_grpc.PortfolioManagerStub(channel).Reconcile(
                    pb.ReconcileRequest(account_id="U123")
                )
        assert none.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await asyncio.to_thread(server.stop)


async def test_runs_periodically_and_are_published(contract_map: Path):
    async with rig(contract_map, reconcile_seconds=0.2) as running:
        updates = running.pm.SubscribeUpdates(
            pb.SubscribeUpdatesRequest(account_id="U123", include_reconciliations=True)
        )
        await running.wait_connected()
        await running.fills(("S1", "AAPL", "BUY", "5", "10"))
        running.tws.set_position("U123", AAPL, "7", "10")
        async with asyncio.timeout(10):  # runs before the fill report nothing
            async for update in updates:
                if update.kind == pb.UPDATE_KIND_RECONCILIATION and update.reconciliation.lines:
                    break
        assert update.reconciliation.account_id == "U123"
        assert statuses(update.reconciliation) == {"AAPL": "RESIDUAL"}
        line = line_of(update.reconciliation, "AAPL")
        assert line.residual_position.quantity == "2"
        updates.cancel()


async def test_reports_and_residual_rows_survive_a_restart_and_reach_the_store(
    contract_map: Path, tmp_path: Path
):
    store = f"lmdb://{tmp_path / 'store'}"
    async with rig(contract_map, store=store) as running:
        await running.wait_connected()
        await running.fills(("S1", "MSFT", "BUY", "100", "300"))
        running.tws.set_position("U123", MSFT, "150", "302")
        running.tws.set_position("U123", ES, "1", "300000")
        before = await running.reconcile()
    async with rig(contract_map, store=store) as restarted:
        after = await restarted.pm.GetReconciliation(pb.GetReconciliationRequest(account_id="U123"))
        assert after == before
    arctic = adb.Arctic(store)
    portfolio = arctic.get_library("portfolio").read("U123").data
    residual = portfolio[portfolio.level == "RESIDUAL"].set_index("instrument_id")
    assert residual.loc["MSFT", "quantity"] == "50"
    assert residual.loc["MSFT", "strategy_id"] == "RESIDUAL"
    assert residual.loc["ES-202612", "strategy_id"] == "UNATTRIBUTED"
    assert "RESIDUAL" not in arctic.get_library("positions").list_symbols()
    report = arctic.get_library("reconciliations").read("U123").data
    assert set(report.status) == {"RESIDUAL", "UNATTRIBUTED"}
    assert Decimal(report.set_index("instrument_id").loc["MSFT", "residual_avg_cost"]) == 306


async def test_the_paper_broker_reports_the_book_itself():
    """`--broker paper`: no broker, the service's own book stands in for it: runs match."""
    server = ServerThread(replace(TEST_CONFIG, broker="paper"))
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            running = Rig(FakeTws(), server, channel)
            await running.fills(
                ("S1", "AAPL", "BUY", "3", "10.5"), ("S2", "AAPL", "SELL", "1", "11")
            )
            report = await running.reconcile()
            assert statuses(report) == {"AAPL": "MATCHED"} and report.clean
            assert line_of(report, "AAPL").broker_quantity == "2"
            assert await running.health("broker") == SERVING
    finally:
        await asyncio.to_thread(server.stop)


async def test_only_the_brokers_accounts_are_reconciled(contract_map: Path):
    async with rig(contract_map, reconcile_seconds=0.1) as running:
        await running.wait_connected()
        # An account of another broker (live, undefined here), with a position of its own.
        (response,) = [
            response
            async for response in running.pm.Ingest(
                iter([pb.IngestRequest(batch_id="x", events=[pb.ExecutionEvent(fill=pb.Fill(
                    fill_id="elsewhere-1", account_id="ELSEWHERE", strategy_id="S1",
                    instrument_id="AAPL", side=pb.SIDE_BUY, quantity="5", price="10",
                    timestamp=Timestamp(seconds=T0)))])])
            )
        ]  # fmt: skip
        assert response.acks[0].result == pb.EVENT_RESULT_ACCEPTED
        with pytest.raises(grpc.aio.AioRpcError) as foreign:
            await running.reconcile("ELSEWHERE")
        assert foreign.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "U123" in (foreign.value.details() or "")
        async with asyncio.timeout(5):  # the periodic runs cover U123, the broker's account
            while True:
                try:
                    await running.pm.GetReconciliation(
                        pb.GetReconciliationRequest(account_id="U123")
                    )
                    break
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.05)
        with pytest.raises(grpc.aio.AioRpcError) as never:
            await running.pm.GetReconciliation(pb.GetReconciliationRequest(account_id="ELSEWHERE"))
        assert never.value.code() == grpc.StatusCode.NOT_FOUND
