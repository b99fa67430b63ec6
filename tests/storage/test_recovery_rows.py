"""A restart hands the analysts' views the rows they may miss, not every row of the book: the
rows the replayed journal changed when the views are written through the checkpoint, every
row when they are behind it (which rows changed since is then not known)."""

from __future__ import annotations

import gc

import arcticdb as adb

from server.application.ports import Checkpoint
from server.domain.ledger import Ledger
from server.domain.position import PositionKey
from server.domain.state import capture, capture_rows
from server.storage.arctic import ArcticEventStore
from tests.conftest import start_test_server
from tests.domain.builders import fill

ROWS = [("S1", "X"), ("S2", "X"), ("S3", "X"), ("S1", "Y"), ("S2", "Y"), ("S3", "Y")]
# Fills 1-6 open a row each; 7 and 8 come after the checkpoint, on (S1, X) and (S2, Y).
AFTER_CHECKPOINT = [("S1", "X"), ("S2", "Y")]


def journal(uri: str, views_through: int) -> Ledger:
    """Journals the fills straight through the store, a checkpoint after the sixth, and the
    views written (each event's rows, as the projector writes them) through `views_through`."""
    store = ArcticEventStore(uri)
    ledger = Ledger()
    events = [
        fill("BUY", 10, "10.5", strategy=strategy, instrument=instrument)
        for strategy, instrument in ROWS + AFTER_CHECKPOINT
    ]
    for sequence, event in enumerate(events, 1):
        applied = ledger.apply(event, sequence)
        store.append([(sequence, event)])
        if sequence <= views_through:
            views = [ledger.book.view(change.position) for change in applied.rows]
            store.record_views([(sequence, event)], views)
        if sequence == len(ROWS):
            rows, state = capture_rows(ledger), capture(ledger)
            store.save_checkpoint(Checkpoint(sequence, rows, state, ledger.book.anchors()))
    store.close()
    del store
    gc.collect()  # LMDB: one open instance per path and process
    return ledger


def quantities(uri: str) -> dict[tuple[str, str], float]:
    """The positions view: (strategy, instrument) -> quantity."""
    library = adb.Arctic(uri).get_library("positions")
    found = {}
    for symbol in library.list_symbols():
        frame = library.read(symbol).data
        for instrument, qty in zip(frame["instrument_id"], frame["qty"], strict=True):
            found[(symbol, instrument)] = float(qty)
    return found


EXPECTED = {(s, i): 20.0 if (s, i) in AFTER_CHECKPOINT else 10.0 for s, i in ROWS}


def test_views_written_through_the_checkpoint_get_the_replayed_rows_only(tmp_path):
    uri = f"lmdb://{tmp_path}/store"
    journal(uri, views_through=len(ROWS) + len(AFTER_CHECKPOINT))
    server = start_test_server(store=uri)
    try:
        recovery = server.running.recovery
        assert (recovery.checkpoint_sequence, recovery.replayed) == (6, 2)
        assert recovery.views_backlog == []
        assert {row.key for row, _ in recovery.rows} == {
            PositionKey("A1", strategy, instrument)
            for instrument in ("X", "Y")
            for strategy in ("", *(s for s, i in AFTER_CHECKPOINT if i == instrument))
        }
        assert len(server.running.service.ledger.book) == len(ROWS) + 2
    finally:
        server.stop()
    gc.collect()
    assert quantities(uri) == EXPECTED
    gc.collect()
    again = start_test_server(store=uri)  # the stop checkpointed: nothing to hand over
    try:
        assert again.running.recovery.rows == []
        assert again.running.recovery.views_backlog == []
    finally:
        again.stop()


def test_views_behind_the_checkpoint_get_every_row(tmp_path):
    uri = f"lmdb://{tmp_path}/store"
    journal(uri, views_through=4)  # the fifth and sixth rows were never written to the views
    server = start_test_server(store=uri)
    try:
        recovery = server.running.recovery
        assert recovery.checkpoint_sequence == 6
        assert [sequence for sequence, _ in recovery.views_backlog] == [5, 6, 7, 8]
        book = server.running.service.ledger.book
        assert sorted(row.key for row, _ in recovery.rows) == sorted(r.key for r in book.rows())
    finally:
        server.stop()
    gc.collect()
    assert quantities(uri) == EXPECTED
