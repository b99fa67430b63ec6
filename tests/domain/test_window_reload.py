"""A restart rebuilds the rows' restatement windows from the journal's texts without building
each Fill (restatement.WindowReader), and leaves the totals as checkpointed when a row comes
out as checkpointed; when one does not (a bug), the journal's figures are kept, and counted."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.codec import FIELD_SEPARATOR, VERSION_MARK
from server.domain.events import ExecutionEvent, Fill
from server.domain.ledger import Ledger
from server.domain.restatement import WindowedFill, WindowReader
from server.domain.state import capture, capture_rows, restore
from tests.domain.restart import journaled, record
from tests.domain.test_execution_order import (
    DEFINITIONS,
    FILL,
    book_state,
    make_fill,
    new_ledger,
)

AMOUNT = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal(10**9), places=6)


def exactly(read: WindowedFill) -> tuple[object, ...]:
    """Every field, amounts by their text too (the same exponent, not only the same value)."""
    return tuple(str(value) if isinstance(value, Decimal) else value for value in read)


@settings(max_examples=300, deadline=None)
@given(FILL, st.integers(0, 999), AMOUNT, AMOUNT, st.sampled_from(["0", "0.35", "1.50", "2"]))
def test_a_fills_text_reads_as_its_decoded_fill(spec, number, quantity, price, commission):
    fill = dataclasses.replace(
        make_fill(number, spec), quantity=quantity, price=price, commission=Decimal(commission)
    )
    reader = WindowReader()
    expected = exactly(WindowReader.of(Fill.from_text(fill.text())))
    assert exactly(reader.read(fill.text())) == expected
    assert exactly(reader.read(fill.text())) == expected  # its amounts shared this time
    # a text of another layout (here a version mark) goes through the codec
    marked = f"{VERSION_MARK}1{FIELD_SEPARATOR}{fill.text()}"
    assert exactly(reader.read(marked)) == expected


def test_a_row_that_differs_from_its_checkpoint_is_kept_as_its_journal_gives_it():
    """Found when its window is read back (here all at once), told, and counted."""
    live = new_ledger()
    journal: list[tuple[int, ExecutionEvent]] = [(n + 1, d) for n, d in enumerate(DEFINITIONS)]
    spec = {"account": "A1", "strategy": "S1", "instrument": "AAPL", "side": "BUY", "quantity": 3,
            "price": 100, "cents": 0, "commission": "1", "fee_currency": "EUR"}  # fmt: skip
    journal += record(live, *(make_fill(n, spec) for n in range(3)))
    rows = capture_rows(live)
    for row, _ in rows:  # a checkpoint that lost a fill's quantity and fee
        row.quantity -= 3
        row.other_fees = None
    after = Ledger()
    restore(after, rows, capture(live))
    assert book_state(after) != book_state(live)
    differ = after.reload_correctable(
        ((sequence, journaled(e)) for sequence, e in journal if isinstance(e, Fill)),
        live.book.anchors(),
    )
    assert differ == []  # the windows stay in the journal until first needed
    told: list[object] = []
    after.book.on_differ = told.append
    assert after.book.materialize_windows(limit=10) == 0
    assert sorted(told) == sorted(row.key for row, _ in rows)
    assert after.book.windows_differ == 2
    assert book_state(after) == book_state(live)  # rows and totals, the EUR fees' included
