"""A row's view: built without the frozen dataclass's per-field setattr, figures in base currency
with a shortcut at a rate of 1, the day's figures without a close: the same values as the
general forms below (the code as it was), and exact at the widest figures the engine admits."""

from __future__ import annotations

import dataclasses
from decimal import Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.book import PositionView, position_view
from server.domain.decimals import EXACT, ONE
from server.domain.marks import MarkSource
from server.domain.pnl_history import NEW_DAY, RowClose
from server.domain.position import Position, PositionKey

# 18 integer and 18 fraction digits: the widest amount admitted (decimals.MAX_*_DIGITS).
WIDE = Decimal("123456789012345678.123456789012345678")
TINY = Decimal("0.000000000000000001")

amounts = st.builds(
    lambda digits, exponent, negative: Decimal((int(negative), tuple(digits), exponent)),
    st.lists(st.integers(0, 9), min_size=1, max_size=36),
    st.integers(-30, 6),
    st.booleans(),
)
maybe = st.none() | amounts
rates = st.sampled_from([ONE, Decimal(1), Decimal("1.000"), Decimal("0.5"), None]) | amounts


def reference_since_day_start(view: PositionView) -> tuple[Decimal, ...]:
    start = view.day_start or NEW_DAY
    with localcontext(EXACT):
        realized = view.realized_pnl - start.realized_pnl
        change = view.unrealized_pnl - start.unrealized_pnl
        fees = view.fees - start.fees
        return realized, change, fees, realized + change - fees


def _view(**figures: object) -> PositionView:
    defaults: dict[str, object] = {
        "key": PositionKey("A", "S", "I"), "quantity": Decimal(1), "avg_cost": Decimal(2),
        "cost_basis": Decimal(2), "realized_pnl": Decimal(0), "unrealized_pnl": Decimal(0),
        "fees": Decimal(0), "market_price": Decimal(2), "market_value": Decimal(2),
        "multiplier": Decimal(1), "trade_count": 1, "opened_at_ns": 1, "updated_at_ns": 1,
        "last_sequence": 1,
    }  # fmt: skip
    return PositionView(**{**defaults, **figures})  # type: ignore[arg-type]


@st.composite
def views(draw: st.DrawFn) -> PositionView:
    fee_count = draw(st.integers(0, 2))
    return _view(
        realized_pnl=draw(amounts),
        unrealized_pnl=draw(amounts),
        fees=draw(amounts),
        market_value=draw(amounts),
        fx_rate=draw(rates),
        precision=draw(st.sampled_from([Decimal("1e-9"), Decimal("0.01")])),
        other_fees=tuple((f"C{n}", draw(amounts)) for n in range(fee_count)),
        fee_rates=tuple(draw(st.sampled_from([ONE, None]) | amounts) for _ in range(fee_count)),
        realized_pnl_base=draw(maybe),
        historic_base=draw(st.booleans()),
        day_start=draw(st.none() | st.builds(RowClose, realized_pnl=amounts, fees=amounts)),
    )


@settings(max_examples=400, deadline=None)
@given(views())
def test_base_figures_are_those_of_every_figure_converted(view: PositionView) -> None:
    assert view.in_base() == view.converted_to_base()


@settings(max_examples=200, deadline=None)
@given(views())
def test_the_day_figures_are_the_differences_from_the_day_start(view: PositionView) -> None:
    assert view.since_day_start() == reference_since_day_start(view)


def test_net_pnl_is_exact_at_the_widest_figures() -> None:
    """The thread's default context (28 digits) rounded it: 123456789012345678.1234567890."""
    view = _view(realized_pnl=WIDE, unrealized_pnl=TINY, fees=Decimal(0), fx_rate=ONE)
    exact = Decimal("123456789012345678.123456789012345679")
    assert view.net_pnl == exact
    assert view.since_day_start()[3] == exact
    assert view.in_base().net_pnl == exact


def test_a_built_view_is_the_dataclass_and_as_frozen() -> None:
    row = Position(key=PositionKey("A", "S", "I"), multiplier=Decimal(100), currency="USD")
    row.quantity, row.cost_basis, row.realized_pnl = Decimal(3), Decimal("30.5"), Decimal(2)
    close = RowClose(realized_pnl=Decimal(1))
    precision = Decimal("1e-9")
    view = position_view(
        row, Decimal("10.25"), precision, base_currency="USD", fx_rate=ONE, day_start=close
    )
    with localcontext(EXACT):
        expected = PositionView(
            key=row.key, quantity=Decimal(3), avg_cost=row.avg_cost(precision),
            cost_basis=Decimal("30.5"), realized_pnl=Decimal(2),
            unrealized_pnl=row.unrealized_pnl(Decimal("10.25")), fees=row.fees,
            market_price=Decimal("10.25"), market_value=row.market_value(Decimal("10.25")),
            multiplier=Decimal(100), trade_count=row.trade_count,
            opened_at_ns=row.opened_at_ns, updated_at_ns=row.updated_at_ns,
            last_sequence=row.last_sequence, currency="USD", mark_source=MarkSource.LAST_FILL,
            marked_at_ns=row.updated_at_ns, base_currency="USD", fx_rate=ONE,
            precision=precision, realized_pnl_base=row.realized_pnl_base,
            historic_base=row.base_currency == "USD", day_start=close,
        )  # fmt: skip
    assert type(view) is PositionView
    for field in dataclasses.fields(PositionView):
        assert getattr(view, field.name) == getattr(expected, field.name), field.name
    assert view == expected
    assert hash(view) == hash(expected)
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.quantity = Decimal(4)  # type: ignore[misc]
    assert view.in_base() == view.converted_to_base()
