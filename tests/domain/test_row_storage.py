"""How the book keeps its rows compactly, as behaviour: amounts shared by text (never merging
two figures that are equal numbers with different exponents), and what a row's window holds."""

from __future__ import annotations

import dataclasses
import heapq
from decimal import Decimal
from unittest.mock import patch

from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.events import FillCorrection
from server.domain.expiry import ExpiryQueue
from server.domain.ledger import Ledger, Result
from server.domain.position import Position, PositionKey
from server.domain.restatement import Placement, SharedAmounts, bookings_of
from tests.domain.builders import BASE_NS, fill


def test_an_amount_of_a_text_seen_before_is_the_one_kept_before():
    amounts = SharedAmounts()
    first = Decimal("100.25")
    assert amounts.shared(first) is first
    again = Decimal("100.25")
    assert again is not first
    assert amounts.shared(again) is first


def test_equal_numbers_of_other_texts_stay_themselves():
    amounts = SharedAmounts()
    for text in ("100", "100.0", "1E+2", "-0", "0", "0.00"):
        amount = Decimal(text)
        assert str(amounts.shared(amount)) == text


def test_the_table_starts_over_when_full():
    amounts = SharedAmounts(limit=3)
    kept = [amounts.shared(Decimal(n)) for n in range(3)]
    assert len(amounts) == 3
    amounts.shared(Decimal(3))  # full: starts over with this one
    assert len(amounts) == 1
    assert amounts.shared(Decimal(0)) is not kept[0]


def test_rows_share_the_amounts_of_their_fills_and_keep_each_figure_as_booked():
    ledger = Ledger()
    ledger.record(fill("BUY", "100", "10.50", strategy="S1", commission="0.35"))
    ledger.record(fill("BUY", "100", "10.50", strategy="S2", commission="0.35"))
    ledger.record(fill("BUY", "100.0", "10.5", strategy="S3", commission="0.350"))
    book = ledger.book
    one, two, three = (book.row_at(PositionKey("A1", s, "AAPL")) for s in ("S1", "S2", "S3"))
    assert one.quantity is two.quantity
    assert one.fees is two.fees
    assert (str(three.quantity), str(three.fees)) == ("100.0", "0.350")
    assert (str(one.cost_basis), str(three.cost_basis)) == ("1050.00", "1050.00")
    account = book.row_at(PositionKey("A1", "", "AAPL"))
    assert (account.quantity, str(account.fees)) == (Decimal(300), "1.050")


SECOND = 10**9
MINUTE = 60 * SECOND


def windowed_ledger() -> Ledger:
    return Ledger(correction_window_ns=MINUTE)


def strategy_row(ledger: Ledger, strategy: str = "S1") -> Position:
    return ledger.book.row_at(PositionKey("A1", strategy, "AAPL"))


def test_a_new_rows_lone_fill_is_restated_by_a_late_one_as_if_in_order():
    ledger = windowed_ledger()
    ledger.record(fill("BUY", 10, 100, at_ns=BASE_NS + 2 * SECOND))
    outcome = ledger.record(fill("BUY", 10, 80, at_ns=BASE_NS + SECOND))
    assert outcome.applied.placement is Placement.RESTATED
    ledger.record(fill("SELL", 5, 95, at_ns=BASE_NS + 3 * SECOND))
    row = strategy_row(ledger)
    assert (row.quantity, row.cost_basis, row.realized_pnl) == (15, 1350, 25)
    assert row.opened_at_ns == BASE_NS + SECOND
    assert [b.price for b in bookings_of(row.window)] == [80, 100, 95]


def test_a_correction_replaces_a_rows_lone_fill_in_its_place():
    ledger = windowed_ledger()
    original = fill("BUY", 10, 100, at_ns=BASE_NS + SECOND, fill_id="X1")
    ledger.record(original)
    replacement = dataclasses.replace(original, fill_id="X1.01", quantity=Decimal(7))
    assert ledger.record(FillCorrection.replacing("X1", replacement)).result is Result.ACCEPTED
    for strategy in ("S1", ""):
        row = strategy_row(ledger, strategy)
        assert (row.quantity, row.cost_basis, row.trade_count) == (7, 700, 1)
        assert [b.booked_id for b in bookings_of(row.window)] == ["X1.01"]


def test_a_lone_fill_leaves_the_window_and_an_older_fill_is_booked_outside_it():
    ledger = windowed_ledger()
    ledger.record(fill("BUY", 10, 100, at_ns=BASE_NS + 2 * SECOND, fill_id="F1"))
    ledger.record(fill("BUY", 1, 50, instrument="MSFT", at_ns=BASE_NS + 2 * MINUTE))
    row = strategy_row(ledger)
    assert row.window is None  # folded: nothing of it kept but the figures
    assert row.booked_through == (BASE_NS + 2 * SECOND, "F1")
    outcome = ledger.record(fill("SELL", 4, 90, at_ns=BASE_NS + SECOND))
    assert outcome.applied.placement is Placement.OUTSIDE_WINDOW
    assert (row.quantity, row.realized_pnl) == (6, -40)
    late = ledger.record(fill("SELL", 1, 110, at_ns=BASE_NS + 2 * MINUTE - SECOND))
    assert late.applied.placement is Placement.IN_ORDER
    assert (row.quantity, row.realized_pnl, row.trade_count) == (5, -30, 3)
    ledger.record(fill("BUY", 1, 50, instrument="MSFT", at_ns=BASE_NS + 4 * MINUTE))
    assert row.window is None
    assert not [key for _, key in ledger.book._expiry if key == row.key]


ENTRY = st.tuples(st.integers(0, 40), st.sampled_from(["A", "B", "C"]))


# runs of entries in time order, added at once (ExpiryQueue.extend)
RUN = st.lists(ENTRY, max_size=12).map(lambda entries: sorted(entries, key=lambda e: e[0]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(ENTRY, st.integers(0, 45), RUN), max_size=60), st.integers(1, 4))
def test_the_expiry_queue_gives_what_a_heap_of_entries_gives(steps, chunk):
    """Pushes (time, key), extends by runs in time order (a list) and takes out what is
    before a horizon (an int step), in chunks of `chunk` entries: the same entries come out
    as from a heap, in time order."""
    queue, heap = ExpiryQueue(), []
    with patch("server.domain.expiry.CHUNK", chunk):
        for step in steps:
            if isinstance(step, list):
                keys = [PositionKey("A1", name, "AAPL") for _, name in step]
                queue.extend([time_ns for time_ns, _ in step], keys)
                for (time_ns, _), key in zip(step, keys, strict=True):
                    heapq.heappush(heap, (time_ns, key))
                continue
            if isinstance(step, tuple):
                time_ns, name = step
                key = PositionKey("A1", name, "AAPL")
                queue.push(time_ns, key)
                heapq.heappush(heap, (time_ns, key))
                continue
            taken = []
            while (key := queue.pop_before(step)) is not None:
                taken.append(key)
            expected = []
            while heap and heap[0][0] < step:
                expected.append(heapq.heappop(heap))
            assert sorted(taken) == sorted(key for _, key in expected)
            assert len(queue) == len(heap)
            assert sorted(queue) == sorted(heap)
