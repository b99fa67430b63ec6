"""Events the service refuses and executions the relay cannot map are kept in a dead-letter file,
counted and logged, and replayed after a fix (issue 13): the real ib_async client against the
fake TWS and a real service."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import grpc
import pytest

from client import (
    AsyncPortfolioClient,
    CommissionAmendment,
    ExecutionEvent,
    Fill,
    OrderStatus,
    OrderStatusUpdate,
    Side,
)
from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from relay.dead_letters import DeadLetter, DeadLetters, replay
from relay.executions import Attribution
from relay.relay import ExecutionRelay
from tests.broker.fake_tws import FakeTws
from tests.broker.test_relay import AAPL, ACCOUNT, CONTRACTS, MSFT, all_sent, eventually, new_relay
from tests.conftest import ServerThread, start_test_server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def service() -> AsyncIterator[ServerThread]:
    """A service that refuses fills of instruments nobody defined."""
    running = await asyncio.to_thread(start_test_server, strict_instruments=True)
    try:
        yield running
    finally:
        await asyncio.to_thread(running.stop)


@pytest.fixture
def letters(tmp_path: Path) -> DeadLetters:
    return DeadLetters(tmp_path / "relay-dead-letters.jsonl")


@pytest.fixture
async def relay(
    tws: FakeTws, portfolio: AsyncPortfolioClient, letters: DeadLetters
) -> AsyncIterator[ExecutionRelay]:
    relay = new_relay(tws, portfolio, dead_letters=letters)
    await relay.start()
    await relay.connection.wait_connected(5)
    try:
        yield relay
    finally:
        await relay.stop()


async def define(service: ServerThread, instrument_id: str) -> None:
    async with grpc.aio.insecure_channel(service.address) as channel:
        instrument = pb.Instrument(instrument_id=instrument_id, currency="USD",
                                   asset_class=pb.ASSET_CLASS_EQUITY)  # fmt: skip
        request = pb.DefineInstrumentRequest(instrument=instrument)
        await pb_grpc.PortfolioManagerStub(channel).DefineInstrument(request)


def lines(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_a_refused_fill_is_kept_counted_logged_and_replayed_after_a_fix(
    tws: FakeTws, relay: ExecutionRelay, portfolio: AsyncPortfolioClient, service: ServerThread,
    letters: DeadLetters, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, logger="portfolio.relay")
    await define(service, "AAPL")  # MSFT is not defined: the strict service refuses its fill
    tws.add_execution(ACCOUNT, AAPL, "0000dd01.01.01", "BOT", "10", "150", commission="1")
    tws.add_execution(ACCOUNT, MSFT, "0000dd02.01.01", "SLD", "5", "410.5", commission="0.5",
                      order_ref="meanrev ")  # fmt: skip
    await all_sent(relay, 2)

    assert (relay.stats.accepted, relay.stats.rejected, relay.stats.dead_lettered) == (1, 1, 1)
    [letter] = lines(letters.path)
    assert (letter["kind"], letter["code"]) == ("fill", "FAILED_PRECONDITION")
    assert "272093" in str(letter["reason"])
    event = letter["event"]
    assert isinstance(event, dict)
    assert (event["fill_id"], event["strategy_id"], event["side"]) == (
        "0000dd02.01.01", "meanrev", "SELL"
    )  # fmt: skip
    assert (event["quantity"], event["price"], event["commission"]) == ("5", "410.5", "0.5")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "0000dd02.01.01" in errors[0].getMessage()
    assert str(letters.path) in errors[0].getMessage()

    # Replayed before the fix: refused again, kept.
    attribution = Attribution(CONTRACTS)
    result = await replay(letters.path, portfolio, attribution)
    assert (result.resent, result.accepted, result.kept) == (1, 0, 1)
    assert len(lines(letters.path)) == 1

    await define(service, "272093")  # the fix
    result = await replay(letters.path, portfolio, attribution)
    assert (result.resent, result.accepted, result.kept) == (1, 1, 0)
    assert lines(letters.path) == []
    row = await portfolio.get_position(ACCOUNT, "272093", strategy_id="meanrev")
    assert (row.quantity, row.avg_cost, row.fees) == (-5, Decimal("410.5"), Decimal("0.5"))
    # A fill the relay sends again later (a catch-up) is now a duplicate.
    result = await replay(letters.path, portfolio, attribution)
    assert result.resent == 0


async def test_an_unmappable_execution_is_kept_and_stays_until_it_maps(
    tws: FakeTws, relay: ExecutionRelay, portfolio: AsyncPortfolioClient,
    letters: DeadLetters, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.ERROR, logger="portfolio.relay")
    tws.add_execution(ACCOUNT, AAPL, "0000dd03.01.01", "XXX", "10", "150", commission="1")
    await eventually(lambda: relay.stats.dead_lettered == 1)
    [letter] = lines(letters.path)
    assert (letter["kind"], letter["code"]) == ("execution", "UNMAPPABLE")
    assert "unknown side 'XXX'" in str(letter["reason"])
    assert "execution 0000dd03.01.01 not relayed" in caplog.text
    await relay.sweep()  # seen again: not set aside twice
    assert relay.stats.dead_lettered == 1

    result = await replay(letters.path, portfolio, Attribution(CONTRACTS))
    assert (result.resent, result.kept) == (0, 1)
    [again] = lines(letters.path)
    assert again["event"] == letter["event"]


async def test_the_replay_command_resends_and_exits_0_when_nothing_is_left(
    tws: FakeTws, relay: ExecutionRelay, portfolio: AsyncPortfolioClient, service: ServerThread,
    letters: DeadLetters, tmp_path: Path,
) -> None:  # fmt: skip
    tws.add_execution(ACCOUNT, MSFT, "0000dd04.01.01", "BOT", "7", "400", commission="0.7")
    await all_sent(relay, 1)
    assert relay.stats.dead_lettered == 1

    async def replay_command() -> int:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "relay", "--replay-dead-letters",
            "--dead-letters", str(letters.path), "--service", service.address,
            cwd=Path(__file__).parents[2], env={**os.environ},
        )  # fmt: skip
        return await asyncio.wait_for(process.wait(), 30)

    assert await replay_command() == 1  # still refused: kept
    assert len(lines(letters.path)) == 1
    await define(service, "272093")
    assert await replay_command() == 0
    assert lines(letters.path) == []
    row = await portfolio.get_position(ACCOUNT, "272093", strategy_id="UNASSIGNED")
    assert (row.quantity, row.fees) == (7, Decimal("0.7"))


# ---------------------------------------------------------------------------------------------
# The file's lines: every SDK event comes back as it went in


def test_every_event_kind_round_trips_through_a_line(tmp_path: Path) -> None:
    moment = datetime(2026, 1, 2, 15, 30, 0, 250_000, tzinfo=UTC)
    events: list[ExecutionEvent] = [
        Fill(fill_id="x.01.02", account_id=ACCOUNT, strategy_id="momo", instrument_id="AAPL",
             side=Side.SELL, quantity=Decimal("0.000000001"), price=Decimal("-1.5E+3"),
             timestamp=moment, commission=Decimal("-0.25"), commission_currency="USD",
             order_ref="momo", order_id="77", venue="ISLAND", corrects="x.01.01"),
        OrderStatusUpdate(update_id="ib-77-Submitted-0-10", account_id=ACCOUNT, order_id="77",
                          instrument_id="AAPL", side=Side.BUY,
                          status=OrderStatus.SUBMITTED, remaining_quantity=Decimal(10)),
        CommissionAmendment(amendment_id="x.01.02/commission", account_id=ACCOUNT,
                            fill_id="x.01.02", commission=Decimal("1.05"),
                            commission_currency="USD", timestamp=moment),
    ]  # fmt: skip
    letters = DeadLetters(tmp_path / "d.jsonl")
    for event in events:
        letters.event(event, "refused", "INVALID_FIELD")
    read = [DeadLetter.from_json(line) for line in letters.path.read_text().splitlines()]
    assert [letter.restored(Attribution(CONTRACTS)) for letter in read] == events
    assert letters.count == 3
