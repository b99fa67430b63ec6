"""Commission reports that come before their execution, after the fill went without one, or
never (issue 13 item 6): fees and cash end right in the service. The real ib_async client
against the fake TWS and a real service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import grpc
import pytest

from client import AsyncPortfolioClient
from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from relay.dead_letters import DeadLetters
from relay.relay import ExecutionRelay
from tests.broker.fake_tws import FakeTws
from tests.broker.test_relay import AAPL, ACCOUNT, all_sent, eventually, new_relay
from tests.conftest import ServerThread

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def started(
    tws: FakeTws, portfolio: AsyncPortfolioClient, tmp_path: Path
) -> AsyncIterator[ExecutionRelay]:
    """A relay that waits 0.3 s for a commission report."""
    relay = relay_of(tws, portfolio, tmp_path)
    await relay.start()
    await relay.connection.wait_connected(5)
    try:
        yield relay
    finally:
        await relay.stop()


def relay_of(tws: FakeTws, portfolio: AsyncPortfolioClient, tmp_path: Path) -> ExecutionRelay:
    letters = DeadLetters(tmp_path / "dead.jsonl")
    return new_relay(tws, portfolio, commission_wait=0.3, dead_letters=letters)


async def cash(service: ServerThread, currency: str = "USD") -> Decimal:
    async with grpc.aio.insecure_channel(service.address) as channel:
        stub = pb_grpc.PortfolioManagerStub(channel)
        balances = await stub.GetBalances(pb.GetBalancesRequest(account_id=ACCOUNT))
    return sum((Decimal(b.cash) for b in balances.balances if b.currency == currency), Decimal(0))


async def fees_and_cash(
    portfolio: AsyncPortfolioClient, service: ServerThread
) -> tuple[Decimal, Decimal]:
    row = await portfolio.get_position(ACCOUNT, "AAPL", strategy_id="UNASSIGNED")
    return row.fees, await cash(service)


def execution(tws: FakeTws, exec_id: str, shares: str, price: str, commission: str,
              **options: object) -> None:  # fmt: skip
    tws.add_execution(ACCOUNT, AAPL, exec_id, "BOT", shares, price, commission=commission,
                      commission_report=False, **options)  # type: ignore[arg-type]  # fmt: skip


async def test_a_report_before_its_execution_is_joined_to_it(
    tws: FakeTws, started: ExecutionRelay, portfolio: AsyncPortfolioClient, service: ServerThread
) -> None:
    execution(tws, "0000cb01.01.01", "10", "150", "1.25", live=False)
    tws.send_commission_report("0000cb01.01.01")  # ib_async knows no such fill yet: drops it
    await asyncio.sleep(0.1)
    tws.send_execution("0000cb01.01.01")
    await all_sent(started, 1)
    assert started.stats.without_commission == 0
    assert started.stats.commissions_amended == 0
    assert await fees_and_cash(portfolio, service) == (Decimal("1.25"), Decimal("-1501.25"))


async def test_a_report_after_the_wait_amends_the_fill(
    tws: FakeTws, started: ExecutionRelay, portfolio: AsyncPortfolioClient, service: ServerThread
) -> None:
    execution(tws, "0000cb02.01.01", "10", "150", "2")
    await all_sent(started, 1)
    assert started.stats.without_commission == 1
    assert await fees_and_cash(portfolio, service) == (0, Decimal(-1500))

    tws.send_commission_report("0000cb02.01.01")
    await eventually(lambda: started.stats.commissions_amended == 1)
    await started.drained(5)
    assert await fees_and_cash(portfolio, service) == (2, Decimal(-1502))
    row = await portfolio.get_position(ACCOUNT, "AAPL", strategy_id="UNASSIGNED")
    assert (row.quantity, row.avg_cost, row.trade_count) == (10, 150, 1)  # only fees changed


async def test_a_report_that_never_comes_leaves_the_fill_without_commission(
    tws: FakeTws, started: ExecutionRelay, portfolio: AsyncPortfolioClient, service: ServerThread
) -> None:
    execution(tws, "0000cb03.01.01", "10", "150", "3")
    await all_sent(started, 1)
    await asyncio.sleep(0.5)
    assert (started.stats.without_commission, started.stats.commissions_amended) == (1, 0)
    assert await fees_and_cash(portfolio, service) == (0, Decimal(-1500))


async def test_partial_fills_commissions_reported_at_the_orders_completion(
    tws: FakeTws, started: ExecutionRelay, portfolio: AsyncPortfolioClient, service: ServerThread
) -> None:
    tws.add_order(ACCOUNT, 7, 8801, 3, AAPL, "BUY", "30", "")
    parts = [("0000cb04.000022a1.01.01", "150"), ("0000cb04.000022a1.02.01", "151"),
             ("0000cb04.000022a1.03.01", "152")]  # fmt: skip
    for exec_id, price in parts:
        execution(tws, exec_id, "10", price, "1.1", perm_id=8801, order_id=7)
    await all_sent(started, 3)  # each after the wait, without commission
    tws.set_order_status(8801, "Filled", "30", "0", "151", "152")
    for exec_id, _ in parts:  # IB reports them all at the order's completion
        tws.send_commission_report(exec_id)
    await eventually(lambda: started.stats.commissions_amended == 3)
    await started.drained(5)
    assert await fees_and_cash(portfolio, service) == (Decimal("3.3"), Decimal("-4533.3"))


async def test_a_restarted_relay_amends_a_fill_an_earlier_run_sent_without_commission(
    tws: FakeTws, portfolio: AsyncPortfolioClient, service: ServerThread, tmp_path: Path
) -> None:
    first = relay_of(tws, portfolio, tmp_path)
    await first.start()
    await first.connection.wait_connected(5)
    execution(tws, "0000cb05.01.01", "10", "150", "4")
    await all_sent(first, 1)
    await first.stop()
    tws.send_commission_report("0000cb05.01.01")  # nobody listens: TWS lists it from now on

    second = relay_of(tws, portfolio, tmp_path)  # lists the fill with its commission
    await second.start()
    try:
        await eventually(lambda: second.stats.commissions_amended == 1)
        await second.drained(5)
        assert (second.stats.rejected, second.stats.dead_lettered) == (0, 0)
    finally:
        await second.stop()
    assert await fees_and_cash(portfolio, service) == (4, Decimal(-1504))
    assert not (tmp_path / "dead.jsonl").exists()
