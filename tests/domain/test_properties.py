"""Properties of the engine that must hold for any fills and any marks."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.book import ALL
from server.domain.events import Fill, InstrumentDefinition, Side
from server.domain.instruments import InstrumentRegistry
from server.domain.ledger import Ledger
from server.domain.marks import Mark
from server.domain.position import PositionKey
from server.domain.totals import Totals

ACCOUNTS = ["A1", "A2"]
STRATEGIES = ["S1", "S2", "S3"]
MULTIPLIERS = {"AAPL": Decimal(1), "ES": Decimal(50), "BTC": Decimal("0.001")}

prices = st.decimals(min_value="-5", max_value="5000", places=4, allow_nan=False)
quantities = st.decimals(min_value="0.001", max_value="500", places=3, allow_nan=False)


@st.composite
def fill_events(draw: st.DrawFn, count: int) -> Fill:
    return Fill(
        fill_id=f"f{count}",
        account_id=draw(st.sampled_from(ACCOUNTS)),
        strategy_id=draw(st.sampled_from(STRATEGIES)),
        instrument_id=draw(st.sampled_from(sorted(MULTIPLIERS))),
        side=draw(st.sampled_from(Side)),
        quantity=draw(quantities),
        price=draw(prices),
        commission=draw(st.decimals(min_value="0", max_value="5", places=2)),
        timestamp_ns=10**18 + count,
    )


@st.composite
def histories(draw: st.DrawFn) -> list[Fill | tuple[str, Decimal]]:
    """Fills with marks in between."""
    events: list[Fill | tuple[str, Decimal]] = []
    for count in range(draw(st.integers(1, 40))):
        if draw(st.booleans()) and count % 3 == 0:
            events.append((draw(st.sampled_from(sorted(MULTIPLIERS))), draw(prices)))
        events.append(draw(fill_events(count)))
    return events


def new_ledger() -> Ledger:
    instruments = [
        InstrumentDefinition(instrument_id=i, currency="USD", multiplier=m)
        for i, m in MULTIPLIERS.items()
    ]
    return Ledger(InstrumentRegistry(instruments))


def run(events: list[Fill | tuple[str, Decimal]]) -> Ledger:
    ledger = new_ledger()
    for time_ns, event in enumerate(events, start=1):
        if isinstance(event, Fill):
            ledger.record(event)
        else:
            ledger.book.set_mark(Mark(*event, time_ns))
    return ledger


def keys(events: list[Fill | tuple[str, Decimal]]) -> set[PositionKey]:
    found = set()
    for event in events:
        if isinstance(event, Fill):
            found.add(PositionKey(event.account_id, event.strategy_id, event.instrument_id))
            found.add(PositionKey(event.account_id, "", event.instrument_id))
    return found


@settings(max_examples=150, deadline=None)
@given(histories())
def test_strategies_add_up_to_the_account_book(events):
    ledger = run(events)
    book = ledger.book
    totals: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for key in keys(events):
        view = book.view(book.get(key))
        sign = -1 if key.is_account_level else 1
        totals[(key.account_id, key.instrument_id)] += sign * (
            view.realized_pnl + view.unrealized_pnl
        )
        totals[(key.account_id, key.instrument_id, "qty")] += sign * view.quantity  # type: ignore[index]
    assert all(value == 0 for value in totals.values())


@settings(max_examples=150, deadline=None)
@given(histories())
def test_quantities_are_the_signed_sum_of_fills(events):
    ledger = run(events)
    expected: dict[PositionKey, Decimal] = defaultdict(Decimal)
    for event in events:
        if isinstance(event, Fill):
            expected[PositionKey(event.account_id, event.strategy_id, event.instrument_id)] += (
                event.signed_quantity
            )
    for key, quantity in expected.items():
        assert ledger.book.get(key).quantity == quantity


@settings(max_examples=150, deadline=None)
@given(st.lists(fill_events(0), min_size=1, max_size=30), st.sampled_from(sorted(MULTIPLIERS)))
def test_a_history_that_ends_flat_realizes_proceeds_minus_costs(fills, instrument):
    ledger = new_ledger()
    fills = [
        Fill(
            **{
                **{n.name: getattr(f, n.name) for n in dataclasses.fields(f)},
                "fill_id": f"f{i}",
                "account_id": "A1",
                "strategy_id": "S1",
                "instrument_id": instrument,
            }
        )
        for i, f in enumerate(fills)
    ]
    net = sum((f.signed_quantity for f in fills), Decimal(0))
    closing_side = Side.SELL if net > 0 else Side.BUY
    if net:
        fills.append(
            Fill(
                fill_id="close",
                account_id="A1",
                strategy_id="S1",
                instrument_id=instrument,
                side=closing_side,
                quantity=abs(net),
                price=Decimal("7.25"),
                timestamp_ns=1,
            )
        )
    for f in fills:
        ledger.record(f)
    cash = sum((-f.signed_quantity * f.price for f in fills), Decimal(0)) * MULTIPLIERS[instrument]
    row = ledger.book.get(PositionKey("A1", "S1", instrument))
    assert row.quantity == 0
    assert row.cost_basis == 0
    assert row.realized_pnl == cash
    account = ledger.book.get(PositionKey("A1", "", instrument))
    assert account.realized_pnl == cash


@settings(max_examples=100, deadline=None)
@given(histories())
def test_replaying_the_same_events_gives_the_same_state(events):
    first, second = run(events), run(events + [e for e in events if isinstance(e, Fill)])
    for key in keys(events):
        assert first.book.view(first.book.get(key)) == second.book.view(second.book.get(key))
    assert first.sequence == second.sequence


@settings(max_examples=100, deadline=None)
@given(histories())
def test_running_totals_equal_a_recount(events):
    ledger = run(events)
    book = ledger.book
    for account in [*ACCOUNTS, ALL]:
        rows = [k for k in keys(events) if k.is_account_level and account in (ALL, k.account_id)]
        recount = Totals(currency="USD" if rows else "")  # one currency here
        for key in rows:
            recount.add(book.get(key), book.mark(key.instrument_id))
        assert book.account_totals(account) == recount
    for strategy in STRATEGIES:
        rows = [key for key in keys(events) if key.strategy_id == strategy]
        recount = Totals(currency="USD" if rows else "")
        for key in rows:
            recount.add(book.get(key), book.mark(key.instrument_id))
        assert book.strategy_totals(strategy) == recount
