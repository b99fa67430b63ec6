"""The asyncio SDK against the real service, started empty for each test by `server_address`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from decimal import Decimal

import grpc
import pytest

from client import (
    AsyncPortfolioClient,
    EventResult,
    Fill,
    PortfolioError,
    PortfolioUpdate,
    PositionLevel,
    PositionQuery,
    Side,
    UpdateKind,
)

ACCOUNT, STRATEGY, INSTRUMENT = "A1", "S1", "AAPL"
FillFactory = Callable[..., Fill]


@pytest.fixture
async def client(server_address: str) -> AsyncIterator[AsyncPortfolioClient]:
    async with AsyncPortfolioClient(server_address) as client:
        yield client


async def take(updates: AsyncGenerator[PortfolioUpdate, None], count: int) -> list[PortfolioUpdate]:
    """The first `count` updates (within 30 s), then the subscription is closed."""
    taken: list[PortfolioUpdate] = []

    async def collect() -> None:
        async with contextlib.aclosing(updates):
            async for update in updates:
                taken.append(update)
                if len(taken) == count:
                    return

    await asyncio.wait_for(collect(), timeout=30)
    return taken


async def test_worked_example_is_accepted_in_sequence(
    client: AsyncPortfolioClient, worked_example: list[Fill]
) -> None:
    acks = await client.ingest(worked_example)
    assert [(a.event_id, a.sequence, a.result) for a in acks] == [
        (f"F{n}", n, EventResult.ACCEPTED) for n in range(1, 6)
    ]


async def test_worked_example_ends_flat_with_exact_pnl(
    client: AsyncPortfolioClient, worked_example: list[Fill]
) -> None:
    await client.ingest(worked_example, batch_size=2)
    position = await client.get_position(ACCOUNT, INSTRUMENT, strategy_id=STRATEGY)
    assert position.level is PositionLevel.STRATEGY
    assert position.quantity == Decimal(0)
    assert position.realized_pnl == Decimal(20)
    assert position.fees == Decimal("3.60")
    assert position.net_pnl == Decimal("16.40")
    assert position.trade_count == 5
    assert position.last_sequence == 5

    book = await client.get_position(ACCOUNT, INSTRUMENT)
    assert book.level is PositionLevel.ACCOUNT
    assert (book.quantity, book.realized_pnl, book.fees, book.net_pnl) == (
        Decimal(0),
        Decimal(20),
        Decimal("3.60"),
        Decimal("16.40"),
    )


async def test_short_after_the_fourth_fill(
    client: AsyncPortfolioClient, worked_example: list[Fill]
) -> None:
    await client.ingest(worked_example[:4])
    position = await client.get_position(ACCOUNT, INSTRUMENT, strategy_id=STRATEGY)
    assert position.quantity == Decimal(-30)
    assert position.avg_cost == Decimal(9)
    assert position.realized_pnl == Decimal(-10)
    assert position.fees == Decimal("3.30")


async def test_resending_fills_acks_duplicates_with_the_original_sequences(
    client: AsyncPortfolioClient, worked_example: list[Fill]
) -> None:
    await client.ingest(worked_example)
    acks = await client.ingest(worked_example, batch_size=1)
    assert [(a.event_id, a.sequence, a.result) for a in acks] == [
        (f"F{n}", n, EventResult.DUPLICATE) for n in range(1, 6)
    ]
    position = await client.get_position(ACCOUNT, INSTRUMENT, strategy_id=STRATEGY)
    assert position.trade_count == 5


async def test_invalid_fill_is_rejected_without_raising(
    client: AsyncPortfolioClient, make_fill: FillFactory
) -> None:
    acks = await client.ingest(
        [make_fill(1, Side.BUY, 10, 10), make_fill(2, Side.BUY, "0", 10, instrument_id="MSFT")]
    )
    assert [(a.event_id, a.sequence, a.result) for a in acks] == [
        ("F1", 1, EventResult.ACCEPTED),
        ("F2", 0, EventResult.REJECTED),
    ]
    assert "quantity" in acks[1].reason


async def test_unknown_position_is_not_found(client: AsyncPortfolioClient) -> None:
    with pytest.raises(PortfolioError) as caught:
        await client.get_position(ACCOUNT, INSTRUMENT, strategy_id=STRATEGY)
    assert caught.value.code == grpc.StatusCode.NOT_FOUND


async def test_blank_account_is_an_invalid_argument_naming_the_field(
    client: AsyncPortfolioClient,
) -> None:
    with pytest.raises(PortfolioError) as caught:
        await client.get_position("", INSTRUMENT, strategy_id=STRATEGY)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert any("account_id" in field for field, _ in caught.value.field_violations)


async def test_reads_agree_on_the_worked_example(
    client: AsyncPortfolioClient, worked_example: list[Fill]
) -> None:
    await client.ingest(worked_example)
    portfolio = await client.get_strategy_portfolio(STRATEGY, include_flat=True)
    assert portfolio.totals.net_pnl == Decimal("16.40")
    summary = await client.get_portfolio_summary(ACCOUNT)
    assert summary.account_totals.fees == Decimal("3.60")
    flat = [p async for p in client.iter_positions(account_id=ACCOUNT, include_flat=True)]
    assert [p.instrument_id for p in flat] == [INSTRUMENT]
    asked = PositionQuery(account_id=ACCOUNT, instrument_id=INSTRUMENT, strategy_id=STRATEGY)
    assert await client.query(asked) == flat[0]


async def test_subscription_replays_earlier_fills(
    client: AsyncPortfolioClient, worked_example: list[Fill]
) -> None:
    await client.ingest(worked_example)
    updates = await take(
        client.subscribe(account_id=ACCOUNT, level=PositionLevel.STRATEGY, from_sequence=1), 5
    )
    assert [u.sequence for u in updates] == [1, 2, 3, 4, 5]
    assert [u.event_id for u in updates] == ["F1", "F2", "F3", "F4", "F5"]
    assert updates[0].kind is UpdateKind.POSITION_OPENED
    assert updates[-1].kind is UpdateKind.POSITION_CLOSED
    assert [u.position.quantity if u.position else None for u in updates] == [
        Decimal(100),
        Decimal(150),
        Decimal(30),
        Decimal(-30),
        Decimal(0),
    ]


async def test_live_updates_follow_the_replay(
    client: AsyncPortfolioClient, worked_example: list[Fill]
) -> None:
    await client.ingest(worked_example[:3])
    subscription = client.subscribe(
        account_id=ACCOUNT, level=PositionLevel.STRATEGY, from_sequence=2
    )
    reader = asyncio.create_task(take(subscription, 4))
    # Sequences 2 and 3 are replayed; 4 and 5 arrive live, whenever the stream is up.
    await client.ingest(worked_example[3:])
    updates = await reader
    assert [u.sequence for u in updates] == [2, 3, 4, 5]
