"""A restart leaves the rows' restatement windows in the journal until first needed
(restatement.Deferred): whatever comes after it (fills in order, late fills that restate, fills
older than the window, corrections, commission amendments, FX rates, the window's start
passing the deferred fills), the book and every event's outcome and placement are those of a
run that never restarted."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.codec import FIELD_SEPARATOR, VERSION_MARK
from server.domain.events import CommissionAmendment, ExecutionEvent, Fill, FillCorrection
from server.domain.ledger import Ledger, Outcome
from server.domain.position import PositionKey
from server.domain.restatement import (
    Deferred,
    JournaledFills,
    JournalRows,
    RowWindow,
    WindowReader,
    deferred_of,
)
from tests.domain.restart import restore_checkpoint
from tests.domain.test_execution_order import DEFINITIONS, FILL, book_state, make_fill

SECOND = 10**9
WINDOW = 2 * SECOND  # the fills span up to 3.6 s: the window's start passes some of them


def new_ledger() -> Ledger:
    ledger = Ledger(correction_window_ns=WINDOW, restatement_window_ns=WINDOW)
    for definition in DEFINITIONS:
        ledger.record(definition)
    return ledger


def spread(fill: Fill, number: int) -> Fill:
    """make_fill's fills are 0.1 s apart; these 0.2 s (ties by id kept)."""
    return dataclasses.replace(fill, timestamp_ns=fill.timestamp_ns + number * SECOND // 10)


@st.composite
def arrivals(draw: st.DrawFn) -> list[ExecutionEvent]:
    """Fills executed in time order arriving up to a few places late (now and then many,
    older than the window), corrections and commission amendments after their fills."""
    specs = draw(st.lists(FILL, min_size=1, max_size=18))
    fills = [spread(make_fill(n, spec), n) for n, spec in enumerate(specs)]
    lateness = st.one_of(st.integers(0, 3), st.integers(0, 18))
    late = [draw(lateness) for _ in fills]
    arrival: list[ExecutionEvent] = [
        f for _, f in sorted(enumerate(fills), key=lambda item: item[0] + late[item[0]])
    ]
    for number, target in enumerate(draw(st.lists(st.integers(0, len(fills) - 1), max_size=3))):
        original = fills[target]
        after = arrival.index(original) + 1
        if draw(st.booleans()):
            content = draw(FILL)
            replacement = dataclasses.replace(
                make_fill(target, content, fill_id=f"c{number}"),
                account_id=original.account_id,
                strategy_id=draw(st.sampled_from([original.strategy_id, "S9"])),
                instrument_id=original.instrument_id,
                timestamp_ns=original.timestamp_ns + 3 * SECOND // 10,
            )
            event: ExecutionEvent = FillCorrection.replacing(original.fill_id, replacement)
        else:
            event = CommissionAmendment(
                amendment_id=f"m{number}", account_id=original.account_id,
                fill_id=original.fill_id, commission=Decimal(draw(st.sampled_from(["0", "2.5"]))),
                timestamp_ns=original.timestamp_ns + SECOND // 10,
                commission_currency=draw(st.sampled_from(["", "EUR"])),
            )  # fmt: skip
        arrival.insert(draw(st.integers(after, len(arrival))), event)
    return arrival


def outcome_of(outcome: Outcome) -> tuple[object, ...]:
    """What an event's sender and subscribers learn of it (rows by figures, placements)."""
    return (
        outcome.event_id, outcome.result, outcome.refused, outcome.sequence,
        tuple(
            (c.position.key, c.position.quantity, c.position.cost_basis, c.position.realized_pnl,
             c.position.realized_pnl_base, c.position.fees, c.placement)
            for c in outcome.changes
        ),
    )  # fmt: skip


def run(ledger: Ledger, events: list[ExecutionEvent]) -> list[tuple[object, ...]]:
    return [outcome_of(ledger.record(event)) for event in events]


def restarted(live: Ledger, journal: list[tuple[int, ExecutionEvent]]) -> Ledger:
    after = Ledger(correction_window_ns=WINDOW, restatement_window_ns=WINDOW)
    restore_checkpoint(after, live, journal)
    for sequence, event in journal:
        after.remember(event.kind, event.event_id, sequence, event.fingerprint())
    return after


@settings(max_examples=200, deadline=None)
@given(arrivals(), st.data())
def test_a_restart_anywhere_gives_the_book_and_outcomes_of_a_run_without_one(arrival, data):
    straight = new_ledger()
    expected = run(straight, arrival)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(arrival)), min_size=1, max_size=2)))
    live = new_ledger()
    journal: list[tuple[int, ExecutionEvent]] = [(n + 1, d) for n, d in enumerate(DEFINITIONS)]
    outcomes: list[tuple[object, ...]] = []
    done = 0
    for cut in [*cuts, len(arrival)]:
        for event in arrival[done:cut]:
            outcome = live.record(event)
            outcomes.append(outcome_of(outcome))
            if outcome.sequence:
                journal.append((outcome.sequence, event))
        done = cut
        if cut < len(arrival):
            live = restarted(live, journal)
    assert outcomes == expected
    assert book_state(live) == book_state(straight)
    # and the windows a checkpoint would keep now: the same anchors
    assert sorted(map(repr, live.book.anchors())) == sorted(map(repr, straight.book.anchors()))


@settings(max_examples=100, deadline=None)
@given(arrivals(), st.data())
def test_windows_read_back_at_once_give_the_same(arrival, data):
    """What a row holds while deferred, read back whole at any point, is its window."""
    straight = new_ledger()
    run(straight, arrival)
    cut = data.draw(st.integers(0, len(arrival)))
    live = new_ledger()
    journal: list[tuple[int, ExecutionEvent]] = [(n + 1, d) for n, d in enumerate(DEFINITIONS)]
    for event in arrival[:cut]:
        outcome = live.record(event)
        if outcome.sequence:
            journal.append((outcome.sequence, event))
    after = restarted(live, journal)
    more = data.draw(st.integers(cut, len(arrival)))
    run(after, arrival[cut:more])
    after.book.materialize_windows(limit=10**6)
    assert not any(deferred_of(row.window) for row in after.book.rows())
    run(after, arrival[more:])
    assert book_state(after) == book_state(straight)


def test_a_restart_defers_the_windows_and_an_in_order_fill_only_appends():
    live = new_ledger()
    fills = [spread(make_fill(n, {**SPEC, "quantity": n + 1}), n) for n in range(4)]
    journal: list[tuple[int, ExecutionEvent]] = [(n + 1, d) for n, d in enumerate(DEFINITIONS)]
    for fill in fills[:3]:
        journal.append((live.record(fill).sequence, fill))
    after = restarted(live, journal)
    row = after.book.get(next(iter(after.book.strategy_rows)))
    assert row is not None and isinstance(row.window, Deferred)
    after.record(fills[3])
    assert isinstance(row.window, RowWindow) and row.window.deferred is not None
    assert len(row.window.bookings) == 1  # only the new one; the three stay in the journal
    late = spread(make_fill(0, {**SPEC, "cents": 5}, fill_id="late"), 0)
    after.record(late)  # before them: the row's window is read back, then restated
    assert deferred_of(row.window) is None
    assert [b.fill_id for b in row.window.bookings] == ["f000", "late", "f001", "f002", "f003"]


SPEC = {"account": "A1", "strategy": "S1", "instrument": "AAPL", "side": "BUY", "quantity": 1,
        "price": 100, "cents": 0, "commission": "0", "fee_currency": ""}  # fmt: skip


IDS = st.sampled_from(["A", "B", "AB", "", "S1", "I1", "x" * 40])


@given(st.lists(st.tuples(IDS, IDS, IDS), max_size=40))
def test_the_windows_fills_are_grouped_by_their_row_columns_in_the_order_first_seen(rows):
    """Each fill's code names its own (account, strategy, instrument), one code a row (ids
    that are each other's prefixes or equal across columns stay apart), and each row's code
    its account-level row, one a (account, instrument)."""
    count = len(rows)
    strings = [np.array([row[i] for row in rows], dtype=object) for i in range(3)]
    texts = np.array([f"t{n}" for n in range(count)], dtype=object)
    numbers = np.arange(count, dtype=np.int64)
    grouped = JournalRows.of(JournaledFills(numbers, *strings, texts, numbers, texts))
    assert [grouped.keys[code] for code in grouped.codes] == rows
    assert grouped.keys == list(dict.fromkeys(rows))
    assert all(type(key) is PositionKey for key in grouped.keys)
    # each strategy row's account-level row, one code per (account, instrument)
    account_rows = [(a, "", i) for a, _, i in rows]
    assert [
        grouped.account_keys[grouped.account_codes[code]] for code in grouped.codes
    ] == account_rows
    assert grouped.account_keys == list(dict.fromkeys(account_rows))
    assert list(grouped.texts) == list(texts) and list(grouped.sequences) == list(numbers)


def test_a_fill_texts_row_is_read_without_decoding_and_as_decoded_for_another_layout():
    fill = make_fill(1, {**SPEC, "strategy": "S7", "instrument": "MSFT"})
    marked = f"{VERSION_MARK}1{FIELD_SEPARATOR}{fill.text()}"  # a marked text: decoded
    reader = WindowReader()
    assert reader.row(fill.text()) == reader.row(marked) == ("S7", "MSFT")


def test_a_row_whose_window_fills_were_all_corrected_away_keeps_its_figures_at_a_restart():
    """Its fill before the window stays (the anchor a checkpoint does not keep: no window)."""
    live = new_ledger()
    journal: list[tuple[int, ExecutionEvent]] = [(n + 1, d) for n, d in enumerate(DEFINITIONS)]
    early = spread(make_fill(0, {**SPEC, "strategy": "S2"}), 0)  # leaves the window
    moved = spread(make_fill(5, {**SPEC, "strategy": "S2"}), 5)
    later = [spread(make_fill(n, SPEC), n) for n in range(6, 14)]
    replacement = dataclasses.replace(moved, fill_id="c0", strategy_id="S9")
    for event in [early, moved, FillCorrection.replacing(moved.fill_id, replacement), *later]:
        journal.append((live.record(event).sequence, event))
    after = restarted(live, journal)  # failed here: the S2 row rebuilt from nothing
    assert book_state(after) == book_state(live)
