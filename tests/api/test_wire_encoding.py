"""The position message and the position update, built fast, are the same bytes as built field
by field (the reference below is the conversion as it was): random rows, amounts of every
exponent, missing rates, day starts and fees in other currencies."""

from __future__ import annotations

from dataclasses import fields, replace
from decimal import Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portfolio.v1 import portfolio_pb2 as pb
from server.api.updates import PLACEMENTS, UPDATE_KIND, encode_update, position_update_bytes
from server.api.wire import (
    MARK_SOURCE,
    fill_to_proto,
    position_to_proto,
    set_timestamp,
)
from server.application.publishing import PositionChanged
from server.domain.book import PositionView
from server.domain.decimals import EXACT, canonical
from server.domain.events import Fill, Side
from server.domain.ledger import Ledger
from server.domain.marks import MarkSource
from server.domain.pnl_history import RowClose
from server.domain.position import ACCOUNT_LEVEL, PositionKey
from server.domain.restatement import Placement


def reference_position(view: PositionView, into: pb.Position | None = None) -> pb.Position:
    """The row's message; `into` fills a field of an enclosing message in place (no copy).
    Base-currency figures the view cannot give (a missing rate) are left empty: missing,
    never a sum of two currencies."""
    key = view.key
    message = pb.Position() if into is None else into
    message.account_id = key.account_id
    message.strategy_id = key.strategy_id
    message.instrument_id = key.instrument_id
    message.level = (
        pb.POSITION_LEVEL_RESIDUAL
        if view.residual
        else pb.POSITION_LEVEL_ACCOUNT
        if key.is_account_level
        else pb.POSITION_LEVEL_STRATEGY
    )
    message.quantity = canonical(view.quantity)
    message.avg_cost = canonical(view.avg_cost)
    message.realized_pnl = canonical(view.realized_pnl)
    message.unrealized_pnl = canonical(view.unrealized_pnl)
    message.fees = canonical(view.fees)
    message.net_pnl = canonical(view.net_pnl)
    message.market_price = canonical(view.market_price)
    message.market_value = canonical(view.market_value)
    message.cost_basis = canonical(view.cost_basis)
    message.multiplier = canonical(view.multiplier)
    message.trade_count = view.trade_count
    message.last_sequence = view.last_sequence
    if view.opened_at_ns:
        set_timestamp(message.opened_at, view.opened_at_ns)
    if view.updated_at_ns:
        set_timestamp(message.updated_at, view.updated_at_ns)
    message.currency = view.currency
    message.mark_source = MARK_SOURCE[view.mark_source]
    if view.marked_at_ns:
        set_timestamp(message.marked_at, view.marked_at_ns)
    message.base_currency = view.base_currency
    for currency, fee in view.other_fees:
        message.other_fees.add(currency=currency, amount=canonical(fee))
    if view.fx_rate is not None:
        message.fx_rate = canonical(view.fx_rate)
    realized, change, fees, net = view.since_day_start()
    message.day_realized_pnl = canonical(realized)
    message.day_unrealized_change = canonical(change)
    message.day_fees = canonical(fees)
    message.day_net_pnl = canonical(net)
    in_base = view.in_base()
    for name, amount in (
        ("realized_pnl_base", in_base.realized_pnl),
        ("unrealized_pnl_base", in_base.unrealized_pnl),
        ("market_value_base", in_base.market_value),
        ("fees_base", in_base.fees),
        ("net_pnl_base", in_base.net_pnl),
    ):
        if amount is not None:
            setattr(message, name, canonical(amount))
    return message


def reference_update(change: PositionChanged) -> bytes:
    update = pb.PortfolioUpdate(
        sequence=change.sequence, kind=UPDATE_KIND[change.kind], event_id=change.fill.fill_id
    )
    reference_position(change.position, into=update.position)
    fill_to_proto(change.fill, change.corrects, into=update.fill)
    update.placement = PLACEMENTS[change.placement]
    return update.SerializeToString()


# Amounts as the engine makes them: any sign, trailing zeros, tiny and huge exponents (which
# str() shows in E notation), zeros of any exponent and -0.
amounts = st.builds(
    lambda digits, exponent, negative: Decimal((int(negative), tuple(digits), exponent)),
    st.lists(st.integers(0, 9), min_size=1, max_size=36),
    st.integers(-40, 12),
    st.booleans(),
)
maybe = st.none() | amounts
# Before 1970 too (negative seconds), and whole seconds (no nanos).
times = st.sampled_from(
    [0, 1, 999_999_999, 1_767_225_600_123_456_789, 5 * 10**9, -1, -(10**9), -(7 * 10**17) - 3]
)
# Texts of every kind: ASCII, Latin-1, wider, and longer than a one-byte length.
ids = st.sampled_from(["", "A1", "S-é", ACCOUNT_LEVEL, "x" * 40, "株式会社", "y" * 130])
currencies = st.sampled_from(["", "USD", "EUR", "€", "Ünï"])
closes = st.none() | st.builds(
    RowClose,
    realized_pnl=amounts,
    unrealized_pnl=amounts,
    fees=amounts,
    realized_pnl_base=maybe,
)


@st.composite
def views(draw: st.DrawFn) -> PositionView:
    quantity, realized, unrealized, fees = (draw(amounts) for _ in range(4))
    price = draw(amounts)
    same = draw(st.booleans())  # base figures equal to the row's (a rate of 1), or not
    fee_count = draw(st.integers(0, 2))
    return PositionView(
        key=PositionKey(draw(ids), draw(ids), draw(ids)),
        quantity=quantity,
        avg_cost=draw(amounts),
        cost_basis=draw(amounts),
        realized_pnl=realized,
        unrealized_pnl=unrealized,
        fees=fees,
        market_price=price,
        market_value=draw(amounts),
        multiplier=draw(st.sampled_from([Decimal(1), Decimal("100"), Decimal("0.5")])),
        trade_count=draw(st.integers(0, 2**31)),
        opened_at_ns=draw(times),
        updated_at_ns=draw(times),
        last_sequence=draw(st.integers(0, 2**63)),
        currency=draw(currencies),
        mark_source=draw(st.sampled_from(list(MarkSource))),
        marked_at_ns=draw(times),
        base_currency=draw(st.sampled_from(["", "USD", "JPY", "¥"])),
        fx_rate=Decimal(1) if same else draw(maybe),
        precision=draw(st.sampled_from([Decimal("1e-9"), Decimal("0.01")])),
        residual=draw(st.booleans()),
        other_fees=tuple((f"{draw(currencies)}{n}", draw(amounts)) for n in range(fee_count)),
        fee_rates=tuple(draw(maybe) for _ in range(fee_count)),
        realized_pnl_base=realized if same else draw(maybe),
        historic_base=draw(st.booleans()),
        day_start=draw(closes),
    )


@settings(max_examples=400, deadline=None)
@given(views())
def test_a_position_is_the_same_bytes_as_built_field_by_field(view: PositionView) -> None:
    expected = reference_position(view).SerializeToString()
    assert position_to_proto(view).SerializeToString() == expected
    into = pb.PortfolioUpdate().position
    assert position_to_proto(view, into=into).SerializeToString() == expected


def _fill(number: int, account: str, strategy: str, instrument: str, sell: bool) -> Fill:
    return Fill(
        fill_id=f"F{number}",
        account_id=account,
        strategy_id=strategy,
        instrument_id=instrument,
        side=Side.SELL if sell else Side.BUY,
        quantity=Decimal(number % 7 + 1) / 4,
        price=Decimal(100 + number % 13) + Decimal("0.125"),
        commission=Decimal("0.35"),
        commission_currency="USD",
        timestamp_ns=1_767_225_600 * 10**9 + number,
        order_ref="ord",
    )


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["A", "B"]),
            st.sampled_from(["S1", "S2", ""]),
            st.sampled_from(["I1", "I2"]),
            st.booleans(),
            st.sampled_from(list(Placement)),
            st.sampled_from(["", "F0"]),
            st.none() | amounts.filter(lambda amount: amount > 0),
        ),
        min_size=1,
        max_size=25,
    )
)
def test_a_position_update_is_the_same_bytes_as_built_as_a_message(fills) -> None:  # type: ignore[no-untyped-def]
    """Two updates per fill share the fill's encoding; a later fill, or the same fill with
    another `corrects`, is encoded again."""
    ledger = Ledger()
    for number, (account, strategy, instrument, sell, placement, corrects, rate) in enumerate(
        fills
    ):
        fill = _fill(number, account, strategy or "S0", instrument, sell)
        sequence = ledger.admit(fill).sequence
        for change in ledger.apply(fill, sequence).rows:
            for corrected in (corrects, "", corrects):
                update = PositionChanged(
                    sequence=sequence, kind=change.kind, fill=fill, row=change.position,
                    price=ledger.book.price(instrument), precision=ledger.book.precision,
                    base_currency="USD", fx_rate=rate, corrects=corrected, placement=placement,
                )  # fmt: skip
                expected = reference_update(update)
                assert position_update_bytes(update) == expected
                assert encode_update(update).message == expected


def _respelled(value: object) -> object:
    """The same value written with three more decimal places (Decimal('1.5') -> '1.5000')."""
    if isinstance(value, Decimal):
        with localcontext(EXACT):
            return value + Decimal((0, (0,), min(value.as_tuple().exponent, 0) - 3))  # type: ignore[operator]
    if isinstance(value, tuple):
        return tuple(_respelled(item) for item in value)
    if isinstance(value, RowClose):
        return replace(value, **{f.name: _respelled(getattr(value, f.name)) for f in fields(value)})
    return value


@settings(max_examples=200, deadline=None)
@given(views())
def test_a_position_depends_on_its_figures_values_only(view: PositionView) -> None:
    """What RowAnswers (answers.py) relies on to give the kept bytes for an equal view: amounts
    equal in value but written otherwise give the same bytes (the precision is the book's own)."""
    respelled = replace(
        view,
        **{
            f.name: _respelled(getattr(view, f.name))
            for f in fields(view)
            if f.name not in ("key", "precision")
        },
    )
    assert respelled == view
    expected = position_to_proto(view).SerializeToString()
    assert position_to_proto(respelled).SerializeToString() == expected


def test_net_pnl_is_sent_exact_at_the_widest_figures() -> None:
    """18 integer and 18 fraction digits: the thread's 28-digit context rounded the net."""
    view = PositionView(
        key=PositionKey("A", "S", "I"), quantity=Decimal(1), avg_cost=Decimal(2),
        cost_basis=Decimal(2), realized_pnl=Decimal("123456789012345678.123456789012345678"),
        unrealized_pnl=Decimal("0.000000000000000001"), fees=Decimal(0),
        market_price=Decimal(2), market_value=Decimal(2), multiplier=Decimal(1),
        trade_count=1, opened_at_ns=1, updated_at_ns=1, last_sequence=1,
        base_currency="USD", fx_rate=Decimal(1),
    )  # fmt: skip
    message = position_to_proto(view)
    assert message.net_pnl == message.day_net_pnl == "123456789012345678.123456789012345679"
    assert message.net_pnl_base == "123456789012345678.123456789012345679"


def test_long_texts_and_large_numbers_are_written_as_field_by_field() -> None:
    """Lengths past one byte (an amount of 300 digits, an id of 20,000 characters), numbers
    of every varint size, and the same refusal of a number a field cannot hold."""
    view = PositionView(
        key=PositionKey("A" * 20_000, "S", "I"), quantity=Decimal("1E+299"),
        avg_cost=Decimal("-1E-150"), cost_basis=Decimal(2), realized_pnl=Decimal(0),
        unrealized_pnl=Decimal(0), fees=Decimal(0), market_price=Decimal(2),
        market_value=Decimal(2), multiplier=Decimal(1), trade_count=2**32 - 1,
        opened_at_ns=2**62, updated_at_ns=-(2**62), last_sequence=2**64 - 1,
        marked_at_ns=16_384 * 10**9 + 16_383,
    )  # fmt: skip
    assert (
        position_to_proto(view).SerializeToString() == reference_position(view).SerializeToString()
    )
    for sequence in (1, 127, 128, 16_383, 16_384, 2**28, 2**35 + 1, 2**56):
        row = replace(view, last_sequence=sequence, trade_count=sequence % 2**32)
        assert (
            position_to_proto(row).SerializeToString()
            == reference_position(row).SerializeToString()
        )
    for refused in (replace(view, trade_count=2**32), replace(view, last_sequence=2**64)):
        with pytest.raises(ValueError, match="Value out of range"):
            reference_position(refused)
        with pytest.raises(ValueError, match="Value out of range"):
            position_to_proto(refused)
