"""What a checkpoint's two halves hold: each row's round trips and last close in the book,
beside the row; those of rows no longer in the book (evicted) in the state half. Either way
a restart reads them all back."""

from __future__ import annotations

import gc
from decimal import Decimal

import arcticdb as adb

from server.application.ports import Checkpoint
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
