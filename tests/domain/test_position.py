import dataclasses
from decimal import Decimal

import pytest

from server.domain.ledger import Ledger, Result
from server.domain.position import ChangeKind, Position, PositionKey, restored
from tests.domain.builders import fill, worked_example_fills

PRECISION = Decimal("1e-9")
KEY = PositionKey("A1", "S1", "AAPL")


def book_fills(*fills, ledger=None):
    ledger = ledger or Ledger()
    outcomes = [ledger.record(f) for f in fills]
    assert all(o.result is Result.ACCEPTED for o in outcomes)
    return ledger


def row(ledger, key=KEY):
    return ledger.book.view(ledger.book.get(key))


def test_worked_example_after_fourth_fill_is_short_30_at_9():
    ledger = book_fills(*worked_example_fills()[:4])
    position = row(ledger)
    assert position.quantity == -30
    assert position.avg_cost == 9
    assert position.realized_pnl == -10


def test_worked_example_ends_flat_with_realized_20_fees_3_60_net_16_40():
    ledger = book_fills(*worked_example_fills())
    position = row(ledger)
    assert position.quantity == 0
    assert position.realized_pnl == 20
    assert position.fees == Decimal("3.60")
    assert position.net_pnl == Decimal("16.40")
    assert position.unrealized_pnl == 0
    assert position.trade_count == 5


def test_adding_averages_cost_and_fees_stay_out_of_it():
    ledger = book_fills(fill("BUY", 100, 10, commission=5), fill("BUY", 50, 12, commission=5))
    position = row(ledger)
    assert position.quantity == 150
    assert position.cost_basis == 1600
    assert position.avg_cost == Decimal("10.666666667")  # 1600 / 150, rounded for display
    assert position.fees == 10


def test_reduction_keeps_the_rounding_remainder_in_the_basis():
    # 1600 * 1 / 150 = 10.6666...: the share released is rounded, the rest stays.
    ledger = book_fills(fill("BUY", 100, 10), fill("BUY", 50, 12), fill("SELL", 1, 11))
    position = row(ledger)
    assert position.cost_basis == Decimal("1600") - Decimal("10.666666667")
    assert position.realized_pnl == Decimal("11") - Decimal("10.666666667")
    # Closing the remaining 149 one at a time releases the rest exactly.
    for _ in range(149):
        book_fills(fill("SELL", 1, 11), ledger=ledger)
    position = row(ledger)
    assert position.quantity == 0
    assert position.cost_basis == 0
    assert position.realized_pnl == 150 * 11 - 1600


def test_flip_closes_everything_and_opens_the_remainder_at_the_fill_price():
    ledger = book_fills(fill("BUY", 10, 100, at_ns=1000), fill("SELL", 25, 110, at_ns=2000))
    position = row(ledger)
    assert position.quantity == -15
    assert position.avg_cost == 110
    assert position.realized_pnl == 100
    assert position.opened_at_ns == 2000


def test_short_reduction_realizes_the_mirror():
    ledger = book_fills(fill("SELL", 10, 50), fill("BUY", 4, 45))
    position = row(ledger)
    assert position.quantity == -6
    assert position.avg_cost == 50
    assert position.realized_pnl == 20


def test_flat_row_stays_with_its_history():
    ledger = book_fills(fill("BUY", 5, 20, commission=1), fill("SELL", 5, 21, commission=1))
    position = row(ledger)
    assert position.quantity == 0
    assert position.avg_cost == 0
    assert position.realized_pnl == 5
    assert position.fees == 2
    assert position.opened_at_ns == 0
    assert position.trade_count == 2


def test_multiplier_scales_realized_and_unrealized():
    from server.domain.events import InstrumentDefinition
    from server.domain.instruments import InstrumentRegistry

    ledger = Ledger(
        InstrumentRegistry(
            [InstrumentDefinition(instrument_id="ES", currency="USD", multiplier=Decimal(50))]
        )
    )
    book_fills(
        fill("BUY", 2, "5000.25", instrument="ES"),
        fill("SELL", 1, "5010.25", instrument="ES"),
        ledger=ledger,
    )
    position = row(ledger, PositionKey("A1", "S1", "ES"))
    assert position.realized_pnl == 500  # 10 points * 1 contract * 50
    assert position.unrealized_pnl == 500  # marked at the last fill, 5010.25
    assert position.market_value == Decimal("250512.5")


def test_change_kinds_follow_the_quantity():
    ledger = Ledger()
    kinds = [
        ledger.record(f).changes[0].kind
        for f in (fill("BUY", 1, 1), fill("BUY", 1, 1), fill("SELL", 3, 1), fill("BUY", 1, 1))
    ]
    assert kinds == [ChangeKind.OPENED, ChangeKind.MODIFIED, ChangeKind.MODIFIED, ChangeKind.CLOSED]


@pytest.mark.parametrize(
    ("first", "second", "realized"),
    [
        (("BUY", "0.5", "64000.12"), ("SELL", "0.5", "64100.37"), Decimal("50.125")),
        (("SELL", "3", "0.0003"), ("BUY", "3", "0.0001"), Decimal("0.0006")),
        (("BUY", "7", "-37.63"), ("SELL", "7", "-10.5"), Decimal("189.91")),
    ],
)
def test_round_trip_realizes_exactly_proceeds_minus_cost(first, second, realized):
    ledger = book_fills(fill(*first), fill(*second))
    assert row(ledger).realized_pnl == realized


def every_field() -> dict[str, object]:
    """A row's stored fields, each a value of its own and none its default (a field left out,
    or two swapped, shows)."""
    return dict(
        key=PositionKey("A", "S", "I"), multiplier=Decimal(50), quantity=Decimal(-3),
        cost_basis=Decimal("-301.5"), realized_pnl=Decimal("12.25"),
        realized_pnl_base=Decimal("11"), base_currency="EUR", fees=Decimal("1.5"),
        other_fees={"JPY": Decimal(200)}, trade_count=4, opened_at_ns=10, updated_at_ns=20,
        last_sequence=7, currency="USD", booked_through_ns=15, booked_through_id="f-3",
    )  # fmt: skip


def test_a_copy_holds_every_field_but_the_window_and_the_price_detached():
    # Every field set to something other than its default: a field the copy forgot (one
    # added since) would come out at its default.
    row = Position(**every_field(), window=None, valued_at=Decimal("100.5"))
    defaults = Position(key=PositionKey("", "", ""), multiplier=Decimal(1))
    copied = row.copy()
    for field in dataclasses.fields(Position):
        if field.name in ("window", "valued_at"):
            assert getattr(copied, field.name) == getattr(defaults, field.name)
        else:
            assert getattr(copied, field.name) == getattr(row, field.name), field.name
            if field.name not in ("key", "window"):
                assert getattr(row, field.name) != getattr(defaults, field.name), field.name
    assert copied.other_fees is not row.other_fees  # a later fee of the row is not the copy's


def test_a_restored_row_is_the_row_its_fields_make() -> None:
    # Every field a value of its own: two positional arguments swapped would show.
    fields = every_field()
    made = restored(*fields.values())
    assert made == Position(**fields)  # type: ignore[arg-type]
    assert (made.window, made.valued_at) == (None, Decimal(0))
    names = [f.name for f in dataclasses.fields(Position) if f.name not in ("window", "valued_at")]
    assert names == list(fields)  # restored's parameters follow the fields
