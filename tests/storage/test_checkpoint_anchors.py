"""A checkpoint keeps only the restatement anchors that are not empty (book version 5): a row
with fills inside the window and no anchor starts from nothing, while a checkpoint written
before (every windowed row anchored, no anchors meaning no windows) opens as it did. Real
ArcticDB on LMDB, the service started on the store."""

from __future__ import annotations

import gc

import arcticdb as adb
import pytest

from server.application.ports import Checkpoint
from server.domain.book import PositionBook
from server.domain.ledger import Ledger
from server.domain.position import PositionKey
from server.domain.restatement import anchor_of, bookings_of
from server.domain.state import capture, capture_rows
from server.storage.arctic import ArcticEventStore
from tests.conftest import start_test_server
from tests.domain.builders import BASE_NS, fill
from tests.storage.test_upgrade import rewrite_as_release

DAY = 86_400 * 10**9
# (S1, X) and its account row open three days before the window and trade inside it: their
# anchors hold the first fill. The Y rows open inside the window: empty anchors.
EVENTS = [
    fill("BUY", 10, 10, strategy="S1", instrument="X", at_ns=BASE_NS - 3 * DAY),
    fill("BUY", 5, 11, strategy="S1", instrument="X", at_ns=BASE_NS),
    fill("BUY", 7, 20, strategy="S2", instrument="Y", at_ns=BASE_NS + 1),
    fill("SELL", 3, 21, strategy="S3", instrument="Y", at_ns=BASE_NS + 2),
    fill("BUY", 1, 19, strategy="S3", instrument="Y", at_ns=BASE_NS + 3),
]
ANCHORED = {PositionKey("A1", "S1", "X"), PositionKey("A1", "", "X")}


def book_of(book: PositionBook) -> dict[PositionKey, tuple[object, ...]]:
    """Each row's figures, the fills of its window and its anchor's figures."""
    found = {}
    for row in book.rows():
        window = row.window
        anchor = anchor_of(row, window) if window is not None else None
        found[row.key] = (
            row.quantity, row.cost_basis, row.realized_pnl, row.fees, row.trade_count,
            row.booked_through,
            tuple(booking.fill_id for booking in bookings_of(window)) if window else (),
            (anchor.quantity, anchor.cost_basis, anchor.trade_count) if anchor else None,
        )  # fmt: skip
    return found


def journal(uri: str, anchors: str) -> Ledger:
    """Journals EVENTS through the store and checkpoints after the last: `anchors` "current"
    as the service writes them, "all" as a release before did (book version 4, every
    windowed row's anchor), "none" as one before windows (version 4 without anchors)."""
    store = ArcticEventStore(uri)
    ledger = Ledger()
    for sequence, event in enumerate(EVENTS, 1):
        ledger.apply(event, sequence)
        store.append([(sequence, event)])
    if anchors == "current":
        kept = ledger.book.anchors()
    elif anchors == "all":
        kept = [anchor_of(row, row.window).copy() for row in ledger.book.rows() if row.window]
    else:
        kept = []
    rows, state = capture_rows(ledger), capture(ledger)
    store.save_checkpoint(Checkpoint(len(EVENTS), rows, state, kept))
    store.close()
    del store
    gc.collect()  # LMDB: one open instance per path and process
    if anchors != "current":  # the checkpoint as the release before wrote it
        rewrite_as_release(uri, 4)
    return ledger


def anchor_rows(uri: str) -> int:
    frame = adb.Arctic(uri).get_library("checkpoints").read("book").data
    return int(frame["anchor"].sum())


def test_the_checkpoint_keeps_only_anchors_that_are_not_empty(tmp_path):
    uri = f"lmdb://{tmp_path}/store"
    live = journal(uri, "current")
    assert {anchor.key for anchor in live.book.anchors()} == ANCHORED
    gc.collect()
    assert anchor_rows(uri) == len(ANCHORED)  # of 5 windowed rows (3 anchors empty)


@pytest.mark.parametrize("anchors", ["current", "all"])
def test_a_restart_gives_the_same_book_from_either_checkpoint(tmp_path, anchors, caplog):
    uri = f"lmdb://{tmp_path}/store"
    live = journal(uri, anchors)
    server = start_test_server(store=uri)
    try:
        recovered = server.running.service.ledger
        assert server.running.recovery.checkpoint_sequence == len(EVENTS)
        assert server.running.recovery.replayed == 0
        # the windows stay in the journal until first needed: read back here, to compare
        assert recovered.book.materialize_windows(limit=100) == 0
        assert recovered.book.windows_differ == 0
        assert book_of(recovered.book) == book_of(live.book)
        assert {anchor.key for anchor in recovered.book.anchors()} == ANCHORED
    finally:
        server.stop()
    assert "differ from the checkpoint" not in caplog.text


def test_a_checkpoint_from_before_windows_reads_no_window(tmp_path):
    """Version 4 without anchors: the rows as checkpointed, no window rebuilt (as before)."""
    uri = f"lmdb://{tmp_path}/store"
    live = journal(uri, "none")
    server = start_test_server(store=uri)
    try:
        recovered = server.running.service.ledger.book
        assert all(row.window is None for row in recovered.rows())
        figures = {key: found[:6] for key, found in book_of(recovered).items()}
        assert figures == {key: found[:6] for key, found in book_of(live.book).items()}
    finally:
        server.stop()
