"""The book is a function of what happened, not of when the service heard of it: any arrival
order of the same fills (and corrections, each after the fill it corrects) gives the rows and
totals of applying them in execution-time order, with each correction in its fill's place;
also across a restart from a checkpoint in the middle."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.book import ALL
from server.domain.events import ExecutionEvent, Fill, FillCorrection, FxFixing, Side
from server.domain.ledger import Ledger, Result
from server.domain.position import Position, PositionKey
from server.domain.restatement import Placement, bookings_of
from server.domain.totals import CurrencyMismatch, Totals
from tests.domain.builders import BASE_NS
from tests.domain.event_builders import instrument
from tests.domain.restart import record, restore_checkpoint

SECOND = 10**9
INSTRUMENTS = {"AAPL": "USD", "SAP": "EUR", "ES": "USD"}
DEFINITIONS: list[ExecutionEvent] = [
    instrument("AAPL"),
    instrument("SAP", "EUR"),
    instrument("ES", multiplier=50),
]


def figures(row: Position) -> tuple[object, ...]:
    """Every figure of a row but the sequence of the last event that touched it (the late
    fill's, by design)."""
    return (
        row.key, row.multiplier, row.quantity, row.cost_basis, row.realized_pnl,
        row.realized_pnl_base, row.fees, row.other_fee_items(), row.trade_count,
        row.opened_at_ns, row.updated_at_ns, row.currency, row.base_currency,
    )  # fmt: skip


def book_state(ledger: Ledger) -> dict[str, object]:
    book = ledger.book
    accounts = sorted(book.accounts())
    strategies = {(a, s) for a in accounts for s in book.strategies(a)}
    return {
        "rows": sorted(figures(row) for row in book.rows()),
        "accounts": {a: book.account_currency_totals(a) for a in [*accounts, ALL]},
        "strategies": {
            (a, s): book.strategy_currency_totals(s, a)
            for a, s in [*strategies, *((ALL, s) for _, s in strategies)]
        },
        "prices": {i: book.price(i) for i in INSTRUMENTS},
    }


def new_ledger() -> Ledger:
    ledger = Ledger()
    for definition in DEFINITIONS:
        ledger.record(definition)
    return ledger


# EUR/USD fixings journaled before every fill, stamped across the fills' times: realized P&L
# in base converts at each realizing fill's own time, whatever the arrival order of fills.
FIXINGS = [
    FxFixing(base="EUR", quote="USD", rate=Decimal(rate), timestamp_ns=BASE_NS + at_ms * 10**6)
    for rate, at_ms in (("1.1", 0), ("1.25", 400), ("1.05", 900))
]
DEFINITIONS += FIXINGS


FILL = st.fixed_dictionaries(
    {
        "account": st.sampled_from(["A1", "A2"]),
        "strategy": st.sampled_from(["S1", "S2"]),
        "instrument": st.sampled_from(sorted(INSTRUMENTS)),
        "side": st.sampled_from(["BUY", "SELL"]),
        "quantity": st.integers(1, 9),
        "price": st.integers(90, 110),
        "cents": st.integers(0, 5),  # a time collision now and then: ties go by fill id
        "commission": st.sampled_from(["0", "1", "0.35"]),
        "fee_currency": st.sampled_from(["", "USD", "EUR"]),
    }
)


def make_fill(number: int, spec: dict[str, object], *, fill_id: str = "") -> Fill:
    return Fill(
        fill_id=fill_id or f"f{number:03d}",
        account_id=str(spec["account"]),
        strategy_id=str(spec["strategy"]),
        instrument_id=str(spec["instrument"]),
        side=Side[str(spec["side"])],
        quantity=Decimal(int(spec["quantity"])),  # type: ignore[call-overload]
        price=Decimal(int(spec["price"])),  # type: ignore[call-overload]
        timestamp_ns=BASE_NS + int(spec["cents"]) * SECOND // 100 + number * SECOND // 10,  # type: ignore[call-overload]
        commission=Decimal(str(spec["commission"])),
        commission_currency=str(spec["fee_currency"]),
    )


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Fill], list[ExecutionEvent], list[Fill]]:
    """Fills (executed in time order), an arrival order with corrections mixed in after their
    fills, and the reference history: the fills in time order with each correction's content
    in its fill's place."""
    specs = draw(st.lists(FILL, min_size=1, max_size=14))
    fills = [make_fill(n, spec) for n, spec in enumerate(specs)]
    # Each fill at most this many places late (what a relay catching up does), or any order.
    arrival: list[ExecutionEvent] = list(draw(st.permutations(fills)))
    corrected = draw(st.lists(st.integers(0, len(fills) - 1), max_size=3, unique=True))
    reference = {fill.fill_id: fill for fill in fills}
    for number, target in enumerate(corrected):
        original = fills[target]
        content = draw(FILL)
        replacement = dataclasses.replace(
            make_fill(target, content, fill_id=f"c{number}"),
            # stays in its rows (a correction that moves a fill leaves a flat row behind)
            account_id=original.account_id,
            strategy_id=original.strategy_id,
            instrument_id=original.instrument_id,
            timestamp_ns=original.timestamp_ns + 7 * SECOND,  # reported later
        )
        correction = FillCorrection.replacing(original.fill_id, replacement)
        after = arrival.index(original) + 1
        arrival.insert(draw(st.integers(after, len(arrival))), correction)
        # in place: the corrected content, at the original's time and id (its place)
        reference[original.fill_id] = dataclasses.replace(
            replacement, fill_id=original.fill_id, timestamp_ns=original.timestamp_ns
        )
    in_order = sorted(reference.values(), key=lambda f: (f.timestamp_ns, f.fill_id))
    return fills, arrival, in_order


@settings(max_examples=300, deadline=None)
@given(histories())
def test_any_arrival_order_gives_the_book_of_execution_order(history):
    _, arrival, in_order = history
    reference = new_ledger()
    record(reference, *list(in_order))
    ledger = new_ledger()
    record(ledger, *arrival)
    assert book_state(ledger) == book_state(reference)


@settings(max_examples=150, deadline=None)
@given(histories(), st.data())
def test_the_same_after_a_restart_from_a_checkpoint_in_the_middle(history, data):
    _, arrival, in_order = history
    reference = new_ledger()
    record(reference, *list(in_order))
    cut = data.draw(st.integers(0, len(arrival)))
    before = new_ledger()
    journal: list[tuple[int, ExecutionEvent]] = [(n + 1, d) for n, d in enumerate(DEFINITIONS)]
    journal += record(before, *arrival[:cut])
    after = Ledger()  # empty, as a process that starts
    restore_checkpoint(after, before, journal)
    for sequence, event in journal:
        after.remember(event.kind, event.event_id, sequence, event.fingerprint())
    journal += record(after, *arrival[cut:])
    assert book_state(after) == book_state(reference)
    replayed = Ledger()  # a start with no checkpoint: the whole journal again
    for sequence, event in journal:
        assert replayed.admit(event).sequence == sequence
        replayed.apply(event, sequence)
    assert book_state(replayed) == book_state(reference)


SPEC = {"account": "A1", "strategy": "S1", "instrument": "AAPL", "side": "BUY", "quantity": 1,
        "price": 100, "cents": 0, "commission": "0", "fee_currency": ""}  # fmt: skip


def test_a_late_fill_restates_only_its_rows_and_says_so():
    ledger = new_ledger()
    spec = {**SPEC, "quantity": 10}
    first = make_fill(1, spec)
    late = make_fill(2, {**spec, "price": 80})
    sell = make_fill(3, {**spec, "side": "SELL", "quantity": 10, "price": 95})
    other = make_fill(4, {**spec, "strategy": "S2", "instrument": "SAP"})
    record(ledger, first, sell, other)
    outcome = ledger.record(late)
    assert outcome.applied.placement is Placement.RESTATED
    assert ledger.placements.get(outcome.sequence) is Placement.RESTATED
    assert {change.position.key.instrument_id for change in outcome.applied.rows} == {"AAPL"}
    row = ledger.book.get(PositionKey(first.account_id, "S1", "AAPL"))
    assert row is not None
    # bought 10 @100 and 10 @80, then sold 10 @95: avg 90, realized 50, 10 left at basis 900
    assert (row.quantity, row.realized_pnl, row.cost_basis) == (10, 50, 900)
    assert row.last_sequence == outcome.sequence


def test_a_fill_older_than_the_window_is_booked_flagged_and_counted():
    window = 60 * SECOND
    ledger = Ledger(correction_window_ns=window)
    spec = SPEC
    old = make_fill(1, spec)
    record(ledger, make_fill(2, spec))
    # an hour of fills: the first ones leave the window
    later = [
        dataclasses.replace(make_fill(3 + n, spec), timestamp_ns=BASE_NS + n * 30 * SECOND)
        for n in range(1, 120)
    ]
    record(ledger, *later)
    row = ledger.book.get(ledger.book.strategy_rows.keys()[0])
    assert row is not None and row.window is not None
    assert len(bookings_of(row.window)) <= 3  # only the window's fills are kept
    outcome = ledger.record(old)
    assert outcome.result is Result.ACCEPTED
    assert outcome.applied.placement is Placement.OUTSIDE_WINDOW
    assert ledger.book.misplaced == 1 and ledger.book.last_misplaced_sequence == outcome.sequence
    assert row.quantity == 121 and row.trade_count == 121  # booked, never lost


def test_a_commission_in_another_currency_stays_in_it():
    ledger = new_ledger()
    spec = {**SPEC, "instrument": "SAP", "commission": "5", "fee_currency": "USD"}
    sell = {**spec, "side": "SELL", "price": 200, "commission": "1", "fee_currency": ""}
    record(ledger, make_fill(1, spec), make_fill(2, sell))
    row = ledger.book.get(ledger.book.strategy_rows.keys()[0])
    assert row is not None
    assert (row.currency, row.realized_pnl, row.fees) == ("EUR", 100, 1)
    assert row.other_fee_items() == (("USD", Decimal(5)),)
    totals = ledger.book.strategy_currency_totals("S1", "A1")
    assert (totals["EUR"].fees, totals["EUR"].net_pnl) == (1, 99)
    assert (totals["USD"].fees, totals["USD"].net_pnl, totals["USD"].total_positions) == (5, -5, 0)


def test_rows_no_longer_touched_leave_their_fills_out_of_the_window_too():
    """Memory stays bounded by the window: a row that gets no more fills is folded as the
    window moves on (through the book's queue, not when it is next touched)."""
    window = 60 * SECOND
    ledger = Ledger(correction_window_ns=window)
    quiet = [dataclasses.replace(make_fill(n, SPEC), strategy_id="QUIET") for n in range(20)]
    record(ledger, *quiet)
    busy = {**SPEC, "instrument": "SAP"}
    busy_fills = [
        dataclasses.replace(make_fill(100 + n, busy), timestamp_ns=BASE_NS + n * 10 * SECOND)
        for n in range(1, 30)
    ]
    record(ledger, *busy_fills)
    for strategy in ("QUIET", ""):
        row = ledger.book.get(PositionKey("A1", strategy, "AAPL"))
        assert row is not None and row.window is None, strategy
        assert (row.quantity, row.trade_count) == (20, 20)
    busy_row = ledger.book.get(PositionKey("A1", "S1", "SAP"))
    assert busy_row is not None and busy_row.window is not None
    assert len(bookings_of(busy_row.window)) <= 7  # 60 s of fills 10 s apart
    assert len(ledger.book._expiry) <= 4  # one entry per windowed row, not per fill


def test_adding_totals_of_two_currencies_raises():
    ledger = new_ledger()
    record(ledger, make_fill(1, SPEC), make_fill(2, {**SPEC, "instrument": "SAP"}))
    by_currency = ledger.book.account_currency_totals("A1")
    assert {c: t.currency for c, t in by_currency.items()} == {"EUR": "EUR", "USD": "USD"}
    with pytest.raises(CurrencyMismatch, match="cannot add USD totals to EUR totals"):
        Totals.combined(by_currency.values())
    with pytest.raises(CurrencyMismatch):
        ledger.book.account_totals("A1")
    one = Ledger()
    record(one, make_fill(1, SPEC))
    assert one.book.account_totals("A1").currency == "USD"


def test_a_correction_of_a_fill_that_was_itself_late_lands_in_that_fills_place():
    """Fills at t1 and t3 arrive, then the t2 fill (late), then a correction of it: the book
    is that of t1, the corrected t2, t3 in that order."""
    spec = {**SPEC, "quantity": 10}
    first = make_fill(1, spec)
    late = make_fill(2, {**spec, "price": 80})
    sell = make_fill(3, {**spec, "side": "SELL", "price": 95})
    fixed = dataclasses.replace(
        late, fill_id="c2", price=Decimal(90), timestamp_ns=sell.timestamp_ns
    )
    ledger = new_ledger()
    record(ledger, first, sell, late)
    outcome = ledger.record(FillCorrection.replacing(late.fill_id, fixed))
    assert outcome.applied.placement is Placement.RESTATED  # the sell after it is re-applied
    reference = new_ledger()
    record(reference, first, dataclasses.replace(fixed, fill_id=late.fill_id,
                                                 timestamp_ns=late.timestamp_ns), sell)  # fmt: skip
    assert book_state(ledger) == book_state(reference)
    row = ledger.book.get(PositionKey("A1", "S1", "AAPL"))
    assert row is not None  # 10 @100 and 10 @90 (avg 95), sold 10 @95: realized 0
    assert (row.quantity, row.realized_pnl, row.cost_basis, row.trade_count) == (10, 0, 950, 3)


@settings(max_examples=40, deadline=None)
@given(history=histories())
def test_windows_share_no_figures_they_should_own(history):
    """Windows without a snapshot share one empty mapping and new rows keep no anchor copy
    (memory): whatever the arrival order, the shared mapping stays empty and the book is
    still that of execution order."""
    from server.domain import restatement

    _, arrival, in_order = history
    reference = new_ledger()
    record(reference, *list(in_order))
    ledger = new_ledger()
    record(ledger, *arrival)
    assert restatement._NO_SNAPSHOTS == {}
    assert book_state(ledger) == book_state(reference)
