"""The blocking SDK against the real service, started empty for each test by `server_address`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterator
from decimal import Decimal

import grpc
import pytest

from client import (
    EventResult,
    Fill,
    PortfolioClient,
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
def client(server_address: str) -> Iterator[PortfolioClient]:
    with PortfolioClient(server_address) as client:
        yield client


def take(updates: Generator[PortfolioUpdate, None, None], count: int) -> list[PortfolioUpdate]:
    """The first `count` updates, then the subscription is closed."""
    taken: list[PortfolioUpdate] = []
    with contextlib.closing(updates):
        for update in updates:
            taken.append(update)
            if len(taken) == count:
                break
    return taken


def test_worked_example_is_accepted_in_sequence(
    client: PortfolioClient, worked_example: list[Fill]
) -> None:
    acks = client.ingest(worked_example)
    assert [(a.event_id, a.sequence, a.result) for a in acks] == [
        (f"F{n}", n, EventResult.ACCEPTED) for n in range(1, 6)
    ]


def test_worked_example_ends_flat_with_exact_pnl(
    client: PortfolioClient, worked_example: list[Fill]
) -> None:
    client.ingest(worked_example, batch_size=2)
    position = client.get_position(ACCOUNT, INSTRUMENT, strategy_id=STRATEGY)
    assert position.level is PositionLevel.STRATEGY
    assert (position.account_id, position.strategy_id, position.instrument_id) == (
        ACCOUNT,
        STRATEGY,
        INSTRUMENT,
    )
    assert position.quantity == Decimal(0)
    assert position.realized_pnl == Decimal(20)
    assert position.fees == Decimal("3.60")
    assert position.net_pnl == Decimal("16.40")
    assert position.trade_count == 5
    assert position.last_sequence == 5
    assert position.opened_at is None

    book = client.get_position(ACCOUNT, INSTRUMENT)
    assert book.level is PositionLevel.ACCOUNT
    assert book.strategy_id == ""
    assert (book.quantity, book.realized_pnl, book.fees, book.net_pnl) == (
        Decimal(0),
        Decimal(20),
        Decimal("3.60"),
        Decimal("16.40"),
    )


def test_short_after_the_fourth_fill(client: PortfolioClient, worked_example: list[Fill]) -> None:
    client.ingest(worked_example[:4])
    position = client.get_position(ACCOUNT, INSTRUMENT, strategy_id=STRATEGY)
    assert position.quantity == Decimal(-30)
    assert position.avg_cost == Decimal(9)
    assert position.realized_pnl == Decimal(-10)
    assert position.fees == Decimal("3.30")
    assert position.opened_at is not None
    assert position.opened_at == worked_example[3].timestamp


def test_resending_fills_acks_duplicates_with_the_original_sequences(
    client: PortfolioClient, worked_example: list[Fill]
) -> None:
    client.ingest(worked_example)
    acks = client.ingest(worked_example)
    assert [(a.event_id, a.sequence, a.result) for a in acks] == [
        (f"F{n}", n, EventResult.DUPLICATE) for n in range(1, 6)
    ]
    position = client.get_position(ACCOUNT, INSTRUMENT, strategy_id=STRATEGY)
    assert position.trade_count == 5
    assert position.fees == Decimal("3.60")


def test_invalid_fill_is_rejected_without_raising(
    client: PortfolioClient, make_fill: FillFactory
) -> None:
    acks = client.ingest(
        [
            make_fill(1, Side.BUY, 10, 10),
            make_fill(2, Side.BUY, "0", 10, instrument_id="MSFT"),
            make_fill(3, Side.BUY, 5, 11),
        ]
    )
    assert [a.result for a in acks] == [
        EventResult.ACCEPTED,
        EventResult.REJECTED,
        EventResult.ACCEPTED,
    ]
    rejected = acks[1]
    assert rejected.event_id == "F2"
    assert rejected.sequence == 0
    assert "quantity" in rejected.reason
    # Sequences are gap-free: the rejected fill took none.
    assert [acks[0].sequence, acks[2].sequence] == [1, 2]
    with pytest.raises(PortfolioError) as caught:
        client.get_position(ACCOUNT, "MSFT", strategy_id=STRATEGY)
    assert caught.value.code == grpc.StatusCode.NOT_FOUND


def test_unknown_position_is_not_found(client: PortfolioClient) -> None:
    with pytest.raises(PortfolioError) as caught:
        client.get_position(ACCOUNT, INSTRUMENT, strategy_id=STRATEGY)
    assert caught.value.code == grpc.StatusCode.NOT_FOUND


def test_blank_account_is_an_invalid_argument_naming_the_field(client: PortfolioClient) -> None:
    with pytest.raises(PortfolioError) as caught:
        client.get_position("", INSTRUMENT, strategy_id=STRATEGY)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert any("account_id" in field for field, _ in caught.value.field_violations)


def test_reads_agree_on_the_worked_example(
    client: PortfolioClient, worked_example: list[Fill]
) -> None:
    client.ingest(worked_example)

    portfolio = client.get_strategy_portfolio(STRATEGY, include_flat=True)
    assert [p.instrument_id for p in portfolio.positions] == [INSTRUMENT]
    assert portfolio.totals.realized_pnl == Decimal(20)
    assert portfolio.totals.fees == Decimal("3.60")
    assert portfolio.totals.net_pnl == Decimal("16.40")
    assert portfolio.as_of_sequence == 5

    summary = client.get_portfolio_summary(ACCOUNT)
    assert summary.account_totals.net_pnl == Decimal("16.40")
    assert summary.account_totals.open_positions == 0
    assert [s.strategy_id for s in summary.strategies] == [STRATEGY]
    assert summary.strategies[0].totals.realized_pnl == Decimal(20)

    assert client.list_positions(account_id=ACCOUNT).positions == ()
    flat = client.list_positions(account_id=ACCOUNT, include_flat=True)
    assert [p.instrument_id for p in flat.positions] == [INSTRUMENT]
    assert flat.next_page_token == ""
    assert list(client.iter_positions(account_id=ACCOUNT, include_flat=True)) == list(
        flat.positions
    )

    asked = PositionQuery(account_id=ACCOUNT, instrument_id=INSTRUMENT, strategy_id=STRATEGY)
    assert client.query(asked) == client.get_position(ACCOUNT, INSTRUMENT, strategy_id=STRATEGY)


def test_subscription_replays_earlier_fills(
    client: PortfolioClient, worked_example: list[Fill]
) -> None:
    client.ingest(worked_example)
    updates = take(
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
    assert [u.fill.fill_id if u.fill else None for u in updates] == ["F1", "F2", "F3", "F4", "F5"]
    assert updates[-1].position is not None
    assert updates[-1].position.net_pnl == Decimal("16.40")


def test_subscription_gets_both_rows_of_each_fill(
    client: PortfolioClient, worked_example: list[Fill]
) -> None:
    client.ingest(worked_example)
    updates = take(client.subscribe(from_sequence=4), 4)
    assert [u.sequence for u in updates] == [4, 4, 5, 5]
    rows = {(u.sequence, u.position.level if u.position else None) for u in updates}
    assert rows == {
        (4, PositionLevel.STRATEGY),
        (4, PositionLevel.ACCOUNT),
        (5, PositionLevel.STRATEGY),
        (5, PositionLevel.ACCOUNT),
    }
