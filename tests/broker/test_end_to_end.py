"""A live account end to end against the fake TWS: the relay streams the executions into the
service, the service reconciles periodically against the same TWS, and the reports say so."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from client import AsyncPortfolioClient
from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from relay.relay import ExecutionRelay
from server.broker.ib import IbBroker
from tests.broker.fake_tws import FakeContract, FakeTws
from tests.conftest import start_test_server
from tws.connection import IbConnection, ReconnectPolicy
from tws.contracts import ContractMap

pytestmark = pytest.mark.timeout(60)

AAPL = FakeContract(265598, "AAPL")
ES = FakeContract(
    495512563, "ES", sec_type="FUT", last_trade_date="20261218", multiplier="50", exchange="CME"
)
CONTRACTS = {"265598": "AAPL", "495512563": "ES-202612"}
FAST = ReconnectPolicy(initial=0.05, factor=2.0, maximum=0.4)


async def next_report(updates, predicate) -> pb.Reconciliation:
    async with asyncio.timeout(15):
        async for update in updates:
            if update.kind == pb.UPDATE_KIND_RECONCILIATION and predicate(update.reconciliation):
                return update.reconciliation
    raise AssertionError("the stream ended")


async def test_relay_then_service_then_periodic_reconciliation_then_report():
    tws = FakeTws(accounts=("U123",))
    await tws.start()
    contracts = ContractMap.from_entries(CONTRACTS)
    broker = IbBroker(
        IbConnection(tws.host, tws.port, 91, readonly=True, connect_timeout=2, reconnect=FAST),
        contracts,
    )
    server = await asyncio.to_thread(start_test_server, broker=broker, reconcile_seconds=0.3)
    channel = grpc.aio.insecure_channel(server.address)
    pm = pb_grpc.PortfolioManagerStub(channel)
    updates = pm.SubscribeUpdates(
        pb.SubscribeUpdatesRequest(account_id="U123", include_reconciliations=True)
    )
    client = AsyncPortfolioClient(server.address)
    relay = ExecutionRelay(
        IbConnection(tws.host, tws.port, 900, readonly=False, connect_timeout=2, reconnect=FAST),
        client, contracts, commission_wait=2.0, sweep_seconds=0.5, tick_seconds=0.05,
    )  # fmt: skip
    await relay.start()
    try:
        await relay.connection.wait_connected(5)
        # Two strategies trade AAPL on opposite sides, one trades ES; the broker nets them.
        orders = [
            (1, 1001, "momo", AAPL, "BUY", [("e1.01", "60", "190.5"), ("e2.01", "40", "190.7")]),
            (2, 1002, "meanrev", AAPL, "SELL", [("e3.01", "30", "191")]),
            (3, 1003, "momo", ES, "BUY", [("e4.01", "2", "6000.25")]),
        ]
        for order_id, perm_id, ref, contract, action, executions in orders:
            total = sum(int(shares) for _, shares, _ in executions)
            tws.add_order("U123", order_id, perm_id, 900, contract, action, str(total), ref)
            filled = 0
            for exec_id, shares, price in executions:
                filled += int(shares)
                tws.add_execution(
                    "U123", contract, f"0000e0d5.{exec_id}", "BOT" if action == "BUY" else "SLD",
                    shares, price, order_id=order_id, perm_id=perm_id, client_id=900,
                    order_ref=ref, commission="1.25", cum_qty=str(filled),
                )  # fmt: skip
            tws.set_order_status(perm_id, "Filled", str(total), "0", executions[-1][2])
        # What TWS then reports: AAPL 70 (100 - 30), ES 2 at a per-contract cost.
        tws.set_position("U123", AAPL, "70", "190.6")
        tws.set_position("U123", ES, "2", "300013.75")
        await relay.drained(10)
        clean = await next_report(updates, lambda report: report.broker_positions == 2)
        assert clean.clean, clean
        assert {line.instrument_id: line.status for line in clean.lines} == {
            "AAPL": pb.RECONCILIATION_STATUS_MATCHED,
            "ES-202612": pb.RECONCILIATION_STATUS_MATCHED,
        }
        aapl = next(line for line in clean.lines if line.instrument_id == "AAPL")
        assert {s.strategy_id: s.quantity for s in aapl.strategies} == {
            "momo": "100",
            "meanrev": "-30",
        }
        # Someone trades by hand in TWS, outside the relay's view: the next run reports it.
        tws.set_position("U123", AAPL, "75", "190.6")
        found = await next_report(updates, lambda report: not report.clean)
        (line,) = [line for line in found.lines if line.discrepancy]
        assert (line.instrument_id, line.status, line.residual_quantity) == (
            "AAPL",
            pb.RECONCILIATION_STATUS_RESIDUAL,
            "5",
        )
        latest = await pm.GetReconciliation(pb.GetReconciliationRequest(account_id="U123"))
        assert latest.sequence >= found.sequence and not latest.clean
    finally:
        updates.cancel()
        await relay.stop()
        await client.close()
        await channel.close()
        await asyncio.to_thread(server.stop)
        await tws.stop()
