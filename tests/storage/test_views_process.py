"""The analysts' views written by a process of their own (server/storage/views_process.py).

Real ArcticDB on LMDB in a tmp folder, a real service and a real writer process: the service
process builds no view frame; a writer killed mid-run is restarted, logged once with its
cause, and neither loses nor doubles a row; a stop ends it; mem:// and `views_process=false`
keep the views' thread.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable

import arcticdb as adb
import grpc
import pytest
from arcticdb.exceptions import NoDataFoundException

from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.app import STOP_RESERVE_SECONDS
from server.domain.book import PositionView
from server.storage.views import ArcticViews
from server.storage.views_process import ViewsProcess, local_folder
from tests.api.protocol import acks, pb_fill
from tests.conftest import ServerThread, start_test_server


def wait_until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def ingest(server: ServerThread, *events: object) -> None:
    with grpc.insecure_channel(server.address) as channel:
        acks(pb_grpc.PortfolioManagerStub(channel), *events)


def sequences(
    server: ServerThread, library: str, symbol: str, column: str = "sequence"
) -> list[int]:
    """What the service's own read side finds (it reads what the writer wrote afresh). A
    read that lands between the writer's new version and its pruning of the one the read
    found raises NoDataFoundException: read again, as any reader of a pruned symbol does."""
    found = getattr(server.running.store.views, library)
    for _ in range(10):
        if not found.has_symbol(symbol):
            return []
        try:
            return [int(s) for s in found.read(symbol).data[column]]
        except NoDataFoundException:
            time.sleep(0.05)
    raise AssertionError(f"{library}/{symbol}: no version could be read")


def writing(server: ServerThread) -> tuple[ViewsProcess, int]:
    """The service's views writer once it has written a first fill and is idle (a writer
    stopped inside a store transaction would hold the library's lock, the checkpoints' too),
    and its pid."""
    writer = server.running.views_writer
    assert writer is not None
    ingest(server, pb_fill("BUY", 1, 100))
    wait_until(lambda: sequences(server, "fills", "A1") == [1])
    wait_until(lambda: not server.running.service.projector.writing)
    assert writer.pid is not None
    return writer, writer.pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_views_are_written_by_their_own_process_not_the_services(tmp_path, monkeypatch):
    store = f"lmdb://{tmp_path}/store"

    def not_here(*args: object, **kwargs: object) -> None:
        raise AssertionError("a view frame built in the service process")

    # In this (the service's) process, building any view frame fails the test.
    monkeypatch.setattr(ArcticViews, "_append_rows", not_here)
    monkeypatch.setattr(ArcticViews, "_upsert", not_here)
    server = start_test_server(store=store)
    try:
        writer = server.running.views_writer
        assert writer is not None
        ingest(server, pb_fill("BUY", 10, 100), pb_fill("SELL", 4, 110))
        wait_until(lambda: sequences(server, "fills", "A1") == [1, 2])
        wait_until(lambda: len(sequences(server, "positions", "S1", "last_sequence")) == 1)
        assert writer.pid is not None and writer.pid != os.getpid()
        assert server.running.service.projector.healthy
        pid = writer.pid
    finally:
        server.stop()
    assert not alive(pid)  # stopped with the service


def test_a_writer_killed_mid_run_is_restarted_and_loses_or_doubles_nothing(tmp_path, caplog):
    store = f"lmdb://{tmp_path}/store"
    server = start_test_server(store=store)
    try:
        writer, first = writing(server)
        sending = threading.Thread(
            target=lambda: [ingest(server, pb_fill("BUY", 1, 100 + n)) for n in range(60)]
        )
        with caplog.at_level(logging.INFO, logger="portfolio.views"):
            sending.start()
            time.sleep(0.5)
            os.kill(first, signal.SIGKILL)
            sending.join()
            wait_until(lambda: sequences(server, "fills", "A1") == list(range(1, 62)))
            wait_until(lambda: server.running.service.projector.healthy)
        assert writer.pid not in (None, first) and writer.restarts >= 1
        deaths = [r for r in caplog.records if r.getMessage().startswith("views writer process")]
        assert [r.levelname for r in deaths] == ["ERROR", "INFO"]  # once; and once it is back
        assert "SIGKILL" in deaths[0].getMessage()
    finally:
        server.stop()
    # and a restart of the service writes nothing twice either
    again = start_test_server(store=store)
    try:
        ingest(again, pb_fill("BUY", 1, 200))
        wait_until(lambda: sequences(again, "fills", "A1") == list(range(1, 63)))
    finally:
        again.stop()


def test_a_writer_that_ended_between_writes_is_restarted_by_the_watch(tmp_path):
    store = f"lmdb://{tmp_path}/store"
    server = start_test_server(store=store)
    try:
        writer, first = writing(server)
        os.kill(first, signal.SIGTERM)
        wait_until(lambda: writer.pid not in (None, first))
        assert writer.last_death.startswith("killed by signal SIGTERM")
        ingest(server, pb_fill("BUY", 1, 101))
        wait_until(lambda: sequences(server, "fills", "A1") == [1, 2])
    finally:
        server.stop()


@pytest.mark.parametrize(("store", "views_process"), [("mem://", True), ("lmdb", False)])
def test_mem_stores_and_the_setting_off_keep_the_views_thread(tmp_path, store, views_process):
    uri = store if store == "mem://" else f"lmdb://{tmp_path}/store"
    server = start_test_server(store=uri, views_process=views_process)
    try:
        assert server.running.views_writer is None
        assert server.running.store.views.writer is None
        ingest(server, pb_fill("BUY", 1, 100))
        views = server.running.store.views
        wait_until(lambda: views.fills.has_symbol("A1"))
    finally:
        server.stop()


def test_the_writer_answers_with_what_a_failing_symbol_could_not_take(tmp_path):
    """A symbol the writer's store refuses comes back as ViewsIncomplete naming it, with the
    service's own events to hand over again (the other symbols are written)."""
    from server.application.ports import ViewsIncomplete
    from server.domain.events import journaled_limits
    from tests.domain.builders import fill

    store = f"lmdb://{tmp_path}/store"
    arctic = adb.Arctic(store)
    arctic.get_library("fills", create_if_missing=True).write("A3", _frame())
    del arctic
    gc.collect()  # LMDB: one open instance per path and process
    writer = ViewsProcess(store)
    writer.start()
    try:
        with journaled_limits():
            events = [(1, fill("BUY", 1, 10, account="A3")), (2, fill("BUY", 1, 10))]
        settings = {"hold_limit": 100, "history_seconds": None}
        positions: list[PositionView] = []
        with pytest.raises(ViewsIncomplete) as raised:
            writer.record(settings, events, positions, [], [], [])
        assert "fills/A3" in raised.value.failing
        assert raised.value.events == [events[0]]  # the very objects handed over
        written = adb.Arctic(store).get_library("fills").read("A1").data
        assert list(written["sequence"]) == [2]
    finally:
        assert writer.stop(5)


def _frame() -> object:
    import pandas as pd

    return pd.DataFrame({"other": [1]})


def test_only_local_stores_have_a_folder_to_share():
    assert local_folder("mem://") is None
    assert local_folder("s3://127.0.0.1:bucket?port=9000") is None
    assert str(local_folder("lmdb:///tmp/x")) == "/tmp/x"


def test_a_stop_right_after_the_start_writes_the_views_without_an_error(tmp_path, caplog):
    """A service stopped before its writer has opened the views ends that writer and writes
    its last views itself: nothing is left to the next start, no error is logged."""
    store = f"lmdb://{tmp_path}/store"
    server = start_test_server(store=store)
    with caplog.at_level(logging.INFO):
        try:
            ingest(server, pb_fill("BUY", 1, 100))
        finally:
            server.stop()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    again = start_test_server(store=store)
    try:
        assert again.running.recovery.views_backlog == []
        assert sequences(again, "fills", "A1") == [1]
    finally:
        again.stop()


def test_a_stop_gives_up_a_views_write_that_would_pass_its_limit(tmp_path, caplog):
    """A writer that hangs mid-write (stopped here by SIGSTOP; a million rows' close kept one
    busy past the stop's limit, which then exited 1): the stop waits for the write only as
    long as its limit leaves after its reserve, ends the writer, and says so; nothing is
    lost, the next start writes the views from the journal."""
    store = f"lmdb://{tmp_path}/store"
    server = start_test_server(store=store)
    _, pid = writing(server)
    os.kill(pid, signal.SIGSTOP)
    try:
        ingest(server, pb_fill("BUY", 1, 101))
        time.sleep(1.5)  # the projector hands the write over within its 1 s interval
        limit = time.monotonic() + STOP_RESERVE_SECONDS + 2.0
        with caplog.at_level(logging.INFO):
            server.stop(lambda: max(0.0, limit - time.monotonic()))
        assert time.monotonic() < limit  # exited at once past it, as `serve` would
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    assert not alive(pid)
    assert "the views' last write did not finish before the stop's limit" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    again = start_test_server(store=store)
    try:
        wait_until(lambda: sequences(again, "fills", "A1") == [1, 2])
    finally:
        again.stop()
