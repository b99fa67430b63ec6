"""What a checkpoint's two halves hold: each row's round trips and last close in the book,
beside the row; those of rows no longer in the book (evicted) in the state half. Either way
a restart reads them all back."""

from __future__ import annotations

import gc
from decimal import Decimal

import arcticdb as adb
import pytest

from server.application.ports import Checkpoint, StorageUnavailable
from server.domain.book import Price
from server.domain.marks import MarkSource
from server.domain.performance import RoundTrips
from server.domain.pnl_history import RowClose
from server.domain.position import Position, PositionKey
from server.domain.state import LedgerState
from server.storage.arctic import BOOK, CHECKPOINTS, STATE, ArcticEventStore

D = Decimal
HELD = PositionKey("A1", "S1", "X")
EVICTED = PositionKey("A1", "S2", "Y")


def test_what_rows_no_longer_in_the_book_had_is_kept_in_the_state_half(tmp_path):
    uri = f"lmdb://{tmp_path}/store"
    row = Position(key=HELD, multiplier=D(1), quantity=D(10), cost_basis=D(100), currency="USD")
    state = LedgerState(
        perf_open=[(HELD, 1, D("0.00"), D("0.35")), (EVICTED, -1, D(2), D(0))],
        perf_trips=[(HELD, RoundTrips(1, 1, 0, D(5))), (EVICTED, RoundTrips(2, 0, 2))],
        pnl_last_closes=[(HELD, RowClose(D(10), D("10.5"))), (EVICTED, RowClose(D(0), None))],
    )
    store = ArcticEventStore(uri)
    try:
        price = Price(D("10.5"), MarkSource.LAST_FILL, 1, "f1")
        store.save_checkpoint(Checkpoint(1, [(row, price)], state))
        back = store.latest_checkpoint()
    finally:
        store.close()
    assert back is not None
    assert back.state.perf_open == state.perf_open
    assert back.state.perf_trips == state.perf_trips
    assert back.state.pnl_last_closes == state.pnl_last_closes
    del store
    gc.collect()  # LMDB: one open instance per path and process
    # The state half holds the evicted row's only; the book the held row's.
    halves = adb.Arctic(uri).get_library(CHECKPOINTS)
    sections = halves.read(STATE).data["section"].tolist()
    assert sorted(sections) == ["perf_open", "perf_trips", "pnl_last_closes"]
    book = halves.read(BOOK).data
    assert book[["open_trip_sign", "trips_count", "close_quantity"]].values.tolist() == [
        [1, 1, "10"]
    ]


def _held(quantity: int) -> Position:
    return Position(
        key=HELD, multiplier=D(1), quantity=D(quantity), cost_basis=D(10 * quantity),
        currency="USD",
    )  # fmt: skip


def test_a_checkpoint_cut_off_between_its_halves_leaves_the_one_before_it_whole(tmp_path):
    """The process dies (a crash, or a stop's time limit: at 1M rows a stop's checkpoint takes
    longer than the limit) after a checkpoint's state half is written and before its book
    half: the next start reads the checkpoint before it, both halves, instead of replaying
    the whole journal (every journaled event applied again). Once a checkpoint is
    whole, the ones before it go."""
    uri = f"lmdb://{tmp_path}/store"
    price = Price(D("10"), MarkSource.LAST_FILL, 1, "f1")
    store = ArcticEventStore(uri)
    try:
        store.save_checkpoint(Checkpoint(1, [(_held(1), price)], LedgerState()))
        writes = store.checkpoints.write

        def dies_before_the_book(symbol: str, *args: object, **kwargs: object) -> object:
            if symbol == BOOK:
                raise OSError("killed")
            return writes(symbol, *args, **kwargs)

        store.checkpoints.write = dies_before_the_book  # type: ignore[method-assign]
        with pytest.raises(StorageUnavailable):
            store.save_checkpoint(Checkpoint(2, [(_held(2), price)], LedgerState()))
    finally:
        store.close()
    del store
    gc.collect()  # LMDB: one open instance per path and process
    store = ArcticEventStore(uri)  # the next start
    try:
        back = store.latest_checkpoint()
        assert back is not None
        assert (back.sequence, [row.quantity for row, _ in back.rows]) == (1, [1])
        store.save_checkpoint(Checkpoint(3, [(_held(3), price)], LedgerState()))
        back = store.latest_checkpoint()
        assert back is not None
        assert (back.sequence, [row.quantity for row, _ in back.rows]) == (3, [3])
        for half in (BOOK, STATE):
            assert len(store.checkpoints.list_versions(half)) == 1
    finally:
        store.close()
