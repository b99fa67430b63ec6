"""The SDK's reconciliation calls against a real service whose broker is its own book
(`--broker paper`), sync and asyncio alike; corrections go in as fills naming `corrects`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal

import pytest

from client import (
    AsyncPortfolioClient,
    EventResult,
    PortfolioClient,
    PortfolioError,
    PositionLevel,
    ReconciliationStatus,
    Side,
)
from tests.client.conftest import ACCOUNT, INSTRUMENT, STRATEGY, FillFactory
from tests.conftest import TEST_CONFIG, ServerThread


@pytest.fixture
def paper_broker_address() -> Iterator[str]:
    running = ServerThread(replace(TEST_CONFIG, broker="paper"))
    try:
        yield running.address
    finally:
        running.stop()


def test_reconcile_then_read_the_reports(paper_broker_address: str, make_fill: FillFactory):
    with PortfolioClient(paper_broker_address) as pm:
        original = make_fill(1, Side.BUY, 100, "10.5", fill_id="x.01")
        corrected = make_fill(2, Side.BUY, 100, "10.25", fill_id="x.02", corrects="x.01")
        acks = pm.ingest([original, corrected])
        assert [ack.result for ack in acks] == [EventResult.ACCEPTED] * 2
        position = pm.get_position(ACCOUNT, INSTRUMENT, strategy_id=STRATEGY)
        assert (position.quantity, position.avg_cost) == (100, Decimal("10.25"))
        report = pm.reconcile(ACCOUNT)
        assert report.clean and report.matched == 1 and report.reconciled_at is not None
        (line,) = report.lines
        assert line.status is ReconciliationStatus.MATCHED and not line.discrepancy
        assert line.strategies == ((STRATEGY, Decimal(100)),)
        assert line.residual_position is None and line.broker_quantity == 100
        assert pm.get_reconciliation(ACCOUNT) == report
        pm.reconcile(ACCOUNT)
        first = pm.list_reconciliations(ACCOUNT, page_size=1)
        assert first.reconciliations[0].sequence > report.sequence and first.next_page_token
        rest = pm.list_reconciliations(ACCOUNT, page_size=1, page_token=first.next_page_token)
        assert [r.sequence for r in rest.reconciliations] == [report.sequence]
        with pytest.raises(PortfolioError) as missing:
            pm.get_reconciliation("NOBODY")
        assert missing.value.code.name == "NOT_FOUND"


async def test_the_async_client_has_the_same_calls(
    paper_broker_address: str, make_fill: FillFactory
):
    async with AsyncPortfolioClient(paper_broker_address) as pm:
        await pm.ingest([make_fill(1, Side.SELL, 5, 20)])
        report = await pm.reconcile(ACCOUNT)
        assert report.clean
        assert await pm.get_reconciliation(ACCOUNT) == report
        page = await pm.list_reconciliations(ACCOUNT)
        assert page.reconciliations == (report,) and page.next_page_token == ""
        position = await pm.get_position(ACCOUNT, INSTRUMENT)
        assert position.level is PositionLevel.ACCOUNT and position.quantity == -5
