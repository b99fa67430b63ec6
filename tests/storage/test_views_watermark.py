"""The views' watermark waits for position rows not yet written: a `positions` (or `portfolio`)
symbol that fails, and rows waiting for the next `position_history` snapshot, hold it below
their last change, durably, so that a restart (which hands over only the rows changed after the
watermark) hands them over again. Real ArcticDB on LMDB; the service with the views written by
a thread and by their own process."""

from __future__ import annotations

import gc

import arcticdb as adb
import pandas as pd
import pytest

from server.application.ports import ViewsIncomplete
from server.domain.position import PositionKey
from server.storage.arctic import ArcticEventStore
from server.storage.views import ArcticViews
from tests.api.protocol import BASE_SECONDS, pb_fill
from tests.conftest import start_test_server
from tests.domain.builders import fill
from tests.storage.test_views_history import Clock
from tests.storage.test_views_history import _view as history_view
from tests.storage.test_views_process import ingest, wait_until

T0 = BASE_SECONDS * 10**9
FOREIGN = pd.DataFrame({"other": [1]})  # a frame no position view can extend: writes fail


def _view(strategy: str, quantity: int, sequence: int):
    return history_view("A1", strategy, "AAPL", quantity, sequence)


def test_a_failing_positions_symbol_holds_the_watermark_below_its_rows(tmp_path):
    views = ArcticViews(adb.Arctic(f"lmdb://{tmp_path}/store"))
    views.clock = clock = Clock()
    views.history_seconds = None
    views.positions.write("S1", FOREIGN)
    views.record([(1, fill("BUY", 1, 10, strategy="S2"))], [_view("S2", 1, 1)])
    assert views.saved_through() == 1
    with pytest.raises(ViewsIncomplete) as failed:
        views.record([(2, fill("BUY", 2, 10, strategy="S1"))], [_view("S1", 2, 2)])
    assert "positions/S1" in failed.value.failing
    assert failed.value.keys == {PositionKey("A1", "S1", "AAPL")}
    with pytest.raises(ViewsIncomplete):  # S1 backs off; the others go on
        views.record([(3, fill("BUY", 3, 10, strategy="S2"))], [_view("S2", 4, 3)])
    assert views.recorded_through == 1  # S1's row, last changed at 2, is not written
    assert views.saved_through() == 1
    views.positions.delete("S1")  # repaired; its row handed over again after the back-off
    clock.now += 2
    views.record([], [_view("S1", 2, 2)])
    assert views.saved_through() == 3
    assert list(views.positions.read("S1").data["qty"]) == [2.0]


def test_rows_waiting_for_the_history_snapshot_hold_the_watermark_until_a_stop_takes_it(
    tmp_path,
):
    views = ArcticViews(adb.Arctic(f"lmdb://{tmp_path}/store"))
    views.clock = clock = Clock()
    views.wall_clock_ns = lambda: T0 + int(clock.now * 10**9)
    views.history_seconds = 60
    views.record([(1, fill("BUY", 1, 10))], [_view("S1", 1, 1)])  # the first write snapshots
    clock.now += 10
    views.record([(2, fill("BUY", 1, 10))], [_view("S1", 2, 2)])
    views.record([(3, fill("BUY", 1, 10))], [_view("S1", 3, 3)])
    assert views.saved_through() == 1  # rows changed at 2 and 3 wait for the next snapshot
    views.flush_history()
    assert views.saved_through() == 3
    assert views.position_history.read("A1").data["qty"].tolist() == [1.0, 3.0]


def quantities(store: str, library: str) -> dict[tuple[str, str], float]:
    arctic = adb.Arctic(store)
    found = {}
    views = arctic.get_library(library)
    for symbol in views.list_symbols():
        frame = views.read(symbol).data
        for key, qty in zip(frame["strategy_id"], frame["qty"], strict=True):
            found[(symbol, key)] = float(qty)
    return found


def watermark(store: str) -> int:
    metadata = adb.Arctic(store).get_library("checkpoints").read_metadata("views_through")
    return int(metadata.metadata["sequence"])


@pytest.mark.parametrize("views_process", [True, False], ids=["process", "thread"])
def test_a_positions_symbol_failing_at_the_stop_is_complete_after_the_restart(
    tmp_path, views_process
):
    """The stop leaves the watermark below the failing symbol's row (its checkpoint is at the
    journal's end: the restart hands every row over again); the symbol repaired, the views
    end complete."""
    store = f"lmdb://{tmp_path}/store"
    prepared = ArcticEventStore(store)
    prepared.views.positions.write("S1", FOREIGN)
    prepared.close()
    del prepared
    gc.collect()  # LMDB: one open instance per path and process

    server = start_test_server(store=store, views_process=views_process)
    try:
        projector = server.running.service.projector
        ingest(server, pb_fill("BUY", 5, 100, strategy="S2"))  # 1
        ingest(server, pb_fill("BUY", 3, 100, strategy="S1"))  # 2: its row is not written
        ingest(server, pb_fill("BUY", 1, 100, strategy="S2"))  # 3
        wait_until(lambda: "positions/S1" in projector.failing_symbols)
        views = server.running.store.views
        wait_until(lambda: views.positions.has_symbol("S2"))
        wait_until(lambda: len(views.fills.read("A1").data) == 3)
    finally:
        server.stop()
    gc.collect()
    assert watermark(store) == 1
    arctic = adb.Arctic(store)
    arctic.get_library("positions").delete("S1")  # the operator repairs the symbol
    del arctic
    gc.collect()

    again = start_test_server(store=store, views_process=views_process)
    try:
        assert [sequence for sequence, _ in again.running.recovery.views_backlog] == [2, 3]
        projector = again.running.service.projector
        views = again.running.store.views
        wait_until(lambda: views.positions.has_symbol("S1") and projector.healthy)
    finally:
        again.stop()
    gc.collect()
    assert quantities(store, "positions") == {("S1", "S1"): 3.0, ("S2", "S2"): 6.0}
    assert watermark(store) == 3
    assert list(adb.Arctic(store).get_library("fills").read("A1").data["sequence"]) == [1, 2, 3]


@pytest.mark.parametrize("views_process", [True, False], ids=["process", "thread"])
def test_a_stop_takes_the_history_snapshot_its_rows_wait_for(tmp_path, views_process):
    """Rows changed since the last `position_history` snapshot are snapshotted at the stop
    (the next start hands over no row: it would not snapshot them)."""
    store = f"lmdb://{tmp_path}/store"
    server = start_test_server(
        store=store, views_process=views_process, position_history_seconds=3600.0
    )
    try:
        history = server.running.store.views.position_history
        ingest(server, pb_fill("BUY", 5, 100))  # the first write snapshots
        wait_until(lambda: history.has_symbol("A1"))
        ingest(server, pb_fill("BUY", 2, 100, instrument="MSFT"))  # waits for the next one
        wait_until(lambda: server.running.store.views.positions.has_symbol("S1") and len(
            server.running.store.views.positions.read("S1").data) == 2)  # fmt: skip
    finally:
        server.stop()
    gc.collect()
    assert watermark(store) == 2
    history = adb.Arctic(store).get_library("position_history").read("A1").data
    strategy = history[history["level"] == "STRATEGY"]
    assert strategy[["instrument_id", "qty"]].values.tolist() == [["AAPL", 5.0], ["MSFT", 2.0]]
    gc.collect()
    again = start_test_server(store=store, views_process=views_process)
    try:
        assert again.running.recovery.views_backlog == []
    finally:
        again.stop()
