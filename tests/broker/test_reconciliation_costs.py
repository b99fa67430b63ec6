"""Reconciliation compares like with like (issue 13, item 3): IB's `avgCost` includes the
commissions (and is per contract for derivatives), so the service's cost is compared with its
fees in. A real service reconciles against the real ib_async client on the fake TWS."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.broker.ib import IbBroker
from server.domain.reconciliation import ReconcilePolicy, cost_tolerance
from tests.broker.fake_tws import FakeContract, FakeTws
from tests.conftest import ServerThread, start_test_server
from tws.connection import IbConnection, ReconnectPolicy
from tws.contracts import ContractMap

pytestmark = pytest.mark.timeout(60)

PENNY = FakeContract(111, "PNY")  # a $2 stock
BIG = FakeContract(222, "BIG")  # a $500 stock
CALL = FakeContract(
    333, "XYZ", "OPT", last_trade_date="20261218", strike="50", right="C", multiplier="100"
)
CONTRACTS = {"111": "PNY", "222": "BIG", "333": "XYZ-C50"}
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
        async with asyncio.timeout(timeout):
            while await self.health(name) != status:
                await asyncio.sleep(0.05)

    async def fill(self, instrument: str, side: str, quantity: str, price: str,
                   commission: str, strategy: str = "S1") -> None:  # fmt: skip
        self.sent += 1
        event = pb.ExecutionEvent(
            fill=pb.Fill(
                fill_id=f"f-{self.sent}", account_id="U123", strategy_id=strategy,
                instrument_id=instrument, side=pb.SIDE_BUY if side == "BUY" else pb.SIDE_SELL,
                quantity=quantity, price=price, commission=commission,
                timestamp=Timestamp(seconds=T0 + self.sent),
            )
        )  # fmt: skip
        request = pb.IngestRequest(batch_id=f"b-{self.sent}", events=[event])
        async for response in self.pm.Ingest(iter([request])):
            assert [ack.result for ack in response.acks] == [pb.EVENT_RESULT_ACCEPTED]

    async def reconcile(self) -> pb.Reconciliation:
        return await self.pm.Reconcile(pb.ReconcileRequest(account_id="U123"), timeout=10)


@asynccontextmanager
async def rig(tmp_path: Path, **config: object) -> AsyncIterator[Rig]:
    contract_map = tmp_path / "contracts.json"
    contract_map.write_text(json.dumps(CONTRACTS))
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
        running = Rig(tws, server, channel)
        await running.wait_health("broker", SERVING)
        option = pb.Instrument(
            instrument_id="XYZ-C50", currency="USD", asset_class=pb.ASSET_CLASS_OPTION,
            multiplier="100", underlying="XYZ", strike="50", expiry="2026-12-18",
            right=pb.OPTION_RIGHT_CALL,
        )  # fmt: skip
        await running.pm.DefineInstrument(pb.DefineInstrumentRequest(instrument=option))
        yield running
    finally:
        await channel.close()
        await asyncio.to_thread(server.stop)
        await tws.stop()


def statuses(report: pb.Reconciliation) -> dict[str, str]:
    return {
        line.instrument_id: pb.ReconciliationStatus.Name(line.status).removeprefix(
            "RECONCILIATION_STATUS_"
        )
        for line in report.lines
    }


async def test_commissions_in_ibs_average_cost_are_no_mismatch(tmp_path: Path) -> None:
    async with rig(tmp_path) as live:
        # A $2 stock bought with a 5% commission: IB's avgCost is (200 + 10) / 100.
        await live.fill("PNY", "BUY", "100", "2", "10")
        live.tws.set_position("U123", PENNY, "100", "2.1")
        # A $0.05 option (x100) with a 13% commission: IB's avgCost is per contract,
        # (10 x 0.05 x 100 + 6.5) / 10 = 5.65.
        await live.fill("XYZ-C50", "BUY", "10", "0.05", "6.5")
        live.tws.set_position("U123", CALL, "10", "5.65")
        # A short sale: IB's average is the proceeds net of the commission, (1000 - 5) / 2.
        await live.fill("BIG", "SELL", "2", "500", "5")
        live.tws.set_position("U123", BIG, "-2", "497.5")
        for _ in range(3):  # more than --reconcile-confirm-runs
            report = await live.reconcile()
            assert statuses(report) == {"PNY": "MATCHED", "XYZ-C50": "MATCHED", "BIG": "MATCHED"}
            assert report.clean
        assert await live.health("reconciliation") == SERVING


async def test_a_real_cost_difference_still_shows(tmp_path: Path) -> None:
    async with rig(tmp_path) as live:
        await live.fill("BIG", "BUY", "10", "500", "1")  # 500.1 a share with the commission
        live.tws.set_position("U123", BIG, "10", "503.5")  # 0.68% more: beyond 0.5%
        await live.fill("XYZ-C50", "BUY", "10", "0.05", "6.5")
        live.tws.set_position("U123", CALL, "10", "6.5")  # 0.065 a unit against 0.0565
        report = await live.reconcile()
        assert statuses(report) == {"BIG": "COST_MISMATCH", "XYZ-C50": "COST_MISMATCH"}
        await live.reconcile()
        await live.wait_health("reconciliation", NOT_SERVING)
        (line,) = [line for line in report.lines if line.instrument_id == "BIG"]
        assert "with its fees" in line.note, line.note


def test_the_tolerance_is_relative_with_an_absolute_floor_per_unit() -> None:
    policy = ReconcilePolicy(cost_tolerance=Decimal("0.005"), cost_floor=Decimal("0.0001"))
    assert cost_tolerance(Decimal("500"), policy) == Decimal("2.5")
    assert cost_tolerance(Decimal("0.0565"), policy) == Decimal("0.0002825")
    assert cost_tolerance(Decimal("0.001"), policy) == Decimal("0.0001")  # the floor
    assert cost_tolerance(Decimal("0"), policy) == Decimal("0.0001")


# ---------------------------------------------------------------------------------------------
# Cash per currency


async def transfer(live: Rig, transfer_id: str, amount: str, currency: str) -> None:
    message = pb.CashTransfer(transfer_id=transfer_id, account_id="U123", currency=currency,
                              amount=amount, timestamp=Timestamp(seconds=T0))  # fmt: skip
    request = pb.IngestRequest(batch_id=transfer_id, events=[pb.ExecutionEvent(transfer=message)])
    async for response in live.pm.Ingest(iter([request])):
        assert [ack.result for ack in response.acks] == [pb.EVENT_RESULT_ACCEPTED]


def cash_lines(report: pb.Reconciliation) -> dict[str, tuple[str, str, str, str]]:
    return {
        line.currency: (
            pb.ReconciliationStatus.Name(line.status).removeprefix("RECONCILIATION_STATUS_"),
            line.broker_cash,
            line.service_cash,
            line.difference,
        )
        for line in report.cash
    }


async def test_cash_per_currency_is_a_line_of_the_report(tmp_path: Path) -> None:
    async with rig(tmp_path) as live:
        await transfer(live, "t-1", "100000", "USD")
        await live.fill("PNY", "BUY", "100", "2", "10")  # 200 and a commission of 10
        live.tws.set_position("U123", PENNY, "100", "2.1")
        live.tws.set_account_value("U123", "CashBalance", "99790", "USD")
        live.tws.set_account_value("U123", "CashBalance", "5000", "EUR")  # not booked here
        live.tws.set_account_value("U123", "CashBalance", "105400", "BASE")  # IB's total
        live.tws.set_account_value("U123", "TotalCashValue", "105400", "BASE")
        await asyncio.sleep(0.2)  # the pushed account values reach the adapter
        report = await live.reconcile()
        assert cash_lines(report) == {
            "EUR": ("CASH_MISMATCH", "5000", "0", "5000"),
            "USD": ("MATCHED", "99790", "99790", "0"),
        }
        assert statuses(report) == {"PNY": "MATCHED"}
        assert (report.matched, report.discrepancies, report.clean) == (2, 1, False)
        (eur,) = [line for line in report.cash if line.currency == "EUR"]
        assert eur.discrepancy and "cash EUR: broker 5000 vs service 0" in eur.note
        assert (
            await live.pm.GetReconciliation(pb.GetReconciliationRequest(account_id="U123"))
            == report
        )
        await live.reconcile()  # the second run in a row confirms it
        await live.wait_health("reconciliation", NOT_SERVING)

        await transfer(live, "t-2", "5000", "EUR")  # the shop books the deposit
        again = await live.reconcile()
        assert again.clean and cash_lines(again)["EUR"][0] == "MATCHED"
        await live.wait_health("reconciliation", SERVING)
        history = await live.pm.ListReconciliations(
            pb.ListReconciliationsRequest(account_id="U123", page_size=5)
        )
        assert [len(run.cash) for run in history.reconciliations] == [2, 2, 2]


@pytest.mark.parametrize("checkpoint_every", [1, 10_000], ids=["checkpoint", "journal"])
async def test_cash_lines_are_journaled_with_the_snapshot(
    tmp_path: Path, checkpoint_every: int
) -> None:
    """A restart rebuilds the runs with their cash lines, from a checkpoint or the journal."""
    store = f"lmdb://{tmp_path / 'store'}"
    async with rig(tmp_path, store=store, checkpoint_every=checkpoint_every) as live:
        await transfer(live, "t-1", "1000", "USD")
        live.tws.set_account_value("U123", "CashBalance", "990", "USD")
        await asyncio.sleep(0.2)
        report = await live.reconcile()
        assert cash_lines(report) == {"USD": ("CASH_MISMATCH", "990", "1000", "-10")}
    server = await asyncio.to_thread(start_test_server, store=store)
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            pm = pb_grpc.PortfolioManagerStub(channel)
            again = await pm.GetReconciliation(pb.GetReconciliationRequest(account_id="U123"))
    finally:
        await asyncio.to_thread(server.stop)
    assert again == report


async def test_total_cash_value_stands_in_for_cash_balance(tmp_path: Path) -> None:
    async with rig(tmp_path) as live:
        await transfer(live, "t-1", "1000.5", "USD")
        live.tws.set_account_value("U123", "TotalCashValue", "1000.50", "USD")
        await asyncio.sleep(0.2)
        report = await live.reconcile()
        assert cash_lines(report) == {"USD": ("MATCHED", "1000.5", "1000.5", "0")}
