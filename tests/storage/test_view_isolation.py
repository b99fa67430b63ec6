"""One view symbol the store refuses never stops the others; restarts catch up from a watermark.

Real ArcticDB on LMDB. Ids the store cannot hold as symbol names reach the views through
journals written before the door refused them; a symbol that fails for another reason (here a
schema the view does not match) is retried with back-off and logged once.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

import arcticdb as adb
import grpc
import pandas as pd
from grpc_health.v1 import health_pb2, health_pb2_grpc

from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.domain.events import journaled_limits
from server.storage.arctic import ArcticEventStore
from tests.api.protocol import acks, pb_fill, pb_status
from tests.conftest import ServerThread, start_test_server
from tests.domain.builders import fill

UNHOLDABLE = ["A*1", "A<2", "B>3", "Zürich", "A" * 255]


def wait_until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def ingest(server: ServerThread, *events) -> None:
    with grpc.insecure_channel(server.address) as channel:
        acks(pb_grpc.PortfolioManagerStub(channel), *events)


def symbols(store: str) -> dict[str, set[str]]:
    arctic = adb.Arctic(store)
    return {
        name: set(arctic.get_library(name).list_symbols())
        for name in ("fills", "orders", "positions", "portfolio")
    }


def test_ids_the_store_cannot_hold_stop_no_other_view(tmp_path):
    store = f"lmdb://{tmp_path}/store"
    journal = ArcticEventStore(store)  # a journal written before the door refused such ids
    with journaled_limits():
        old = [fill("BUY", 1, 10, account=account) for account in UNHOLDABLE]
        old.append(fill("BUY", 1, 10, account="A1", strategy="S<1"))
    journal.append(list(enumerate(old, start=1)))
    journal.close()
    del journal
    gc.collect()  # LMDB: one open instance per path and process

    server = start_test_server(store=store)
    try:
        ingest(server, pb_fill("BUY", 5, 100), pb_fill("SELL", 2, 11, account="A2", strategy="S2"))
        ingest(server, pb_status("u1", "SUBMITTED", order_id="7"))
        projector = server.running.service.projector
        # fills, portfolio, position_history and balances of each account; positions/S<1
        wait_until(lambda: len(projector.skipped_symbols) == 4 * len(UNHOLDABLE) + 1)
        assert projector.failing_symbols == {}
        assert projector.healthy
        assert "fills/A*1" in projector.skipped_symbols
        assert "positions/S<1" in projector.skipped_symbols
        assert "'*'" in projector.skipped_symbols["fills/A*1"]
    finally:
        server.stop()

    held = symbols(store)
    assert held["fills"] == {"A1", "A2"}
    assert held["orders"] == {"A1"}
    assert held["positions"] == {"S1", "S2"}
    assert held["portfolio"] == {"A1", "A2"}
    arctic = adb.Arctic(store)
    assert list(arctic.get_library("fills").read("A1").data["sequence"]) == [6, 7]
    del arctic

    again = start_test_server(store=store)
    try:  # the skipped symbols do not hold the views' catch-up back
        assert again.running.recovery.views_backlog == []
    finally:
        again.stop()


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def views_health(server) -> int:
    """The `views` service's status on the gRPC health service."""
    with grpc.insecure_channel(server.address) as channel:
        request = health_pb2.HealthCheckRequest(service="views")
        status: int = health_pb2_grpc.HealthStub(channel).Check(request, timeout=5).status
        return status


def test_a_failing_symbol_is_retried_alone_and_logged_once(tmp_path, caplog):
    store = f"lmdb://{tmp_path}/store"
    prepared = ArcticEventStore(store)  # A3's and A4's fills symbols hold frames the view
    for account in ("A3", "A4"):  # cannot extend
        prepared.views.fills.write(account, pd.DataFrame({"other": [1]}))
    prepared.close()
    del prepared
    gc.collect()  # LMDB: one open instance per path and process

    server = start_test_server(store=store)
    try:
        projector = server.running.service.projector
        fills = server.running.store.views.fills
        with caplog.at_level(logging.INFO, logger="portfolio.views"):
            ingest(
                server,
                pb_fill("BUY", 1, 10, account="A3"),
                pb_fill("BUY", 2, 10),
                pb_fill("BUY", 1, 10, account="A4"),
            )
            wait_until(lambda: fills.has_symbol("A1") and "fills/A3" in projector.failing_symbols)
            assert not projector.healthy
            wait_until(lambda: views_health(server) == NOT_SERVING)
            ingest(server, pb_fill("BUY", 3, 10, account="A3"), pb_fill("BUY", 4, 10))
            wait_until(lambda: len(fills.read("A1").data) == 2)  # A1 goes on
            time.sleep(2.5)  # A3 is tried again, backing off, while it keeps failing
            assert "fills/A3" in projector.failing_symbols
            fills.delete("A3")  # the operator repairs the symbols
            fills.delete("A4")
            wait_until(lambda: projector.healthy, timeout=30)
            assert list(fills.read("A3").data["sequence"]) == [1, 4]
            assert list(fills.read("A4").data["sequence"]) == [3]
            wait_until(lambda: views_health(server) == SERVING)
        # One line when they start failing (the same cause: one line for both), one when fixed.
        for account in ("A3", "A4"):
            lines = [r for r in caplog.records if f"fills/{account}" in r.getMessage()]
            assert [r.levelname for r in lines] == ["WARNING", "INFO"]
        failing = next(r.getMessage() for r in lines if r.levelname == "WARNING")
        assert "fills/A3, fills/A4" in failing and "Error" in failing  # with its cause
    finally:
        server.stop()


def test_a_restart_does_not_reread_the_journal_into_the_views(tmp_path):
    """An account that stopped trading long ago does not pin the views' catch-up to its last
    fill: every restart would otherwise hand the whole journal since to the views again."""
    store = f"lmdb://{tmp_path}/store"
    first = start_test_server(store=store)
    try:
        ingest(first, pb_fill("BUY", 1, 10, account="QUIET"))
        for i in range(30):
            ingest(first, pb_fill("BUY", 1, 10 + i, account="BUSY"))
    finally:
        first.stop()
    for _ in range(2):
        server = start_test_server(store=store)
        try:
            assert server.running.recovery.views_backlog == []
            ingest(server, pb_fill("SELL", 1, 20, account="BUSY"))
        finally:
            server.stop()
    arctic = adb.Arctic(store)
    assert list(arctic.get_library("fills").read("BUSY").data["sequence"]) == list(range(2, 34))


def test_a_symbol_that_holds_back_too_much_is_left_to_the_next_start(tmp_path):
    """Memory stays bounded while a symbol fails for long: past `hold_limit` events held back,
    it waits for the next start, whose catch-up from the journal writes it in order."""
    store = f"lmdb://{tmp_path}/store"
    prepared = ArcticEventStore(store)
    prepared.views.fills.write("A3", pd.DataFrame({"other": [1]}))
    prepared.close()
    del prepared
    gc.collect()

    server = start_test_server(store=store)
    try:
        server.running.store.views.hold_limit = 3
        projector = server.running.service.projector
        fills = server.running.store.views.fills
        ingest(server, *[pb_fill("BUY", 1, 10, account="A3") for _ in range(5)])
        wait_until(lambda: "fills/A3" in projector.failing_symbols)
        ingest(server, pb_fill("BUY", 1, 10))
        wait_until(lambda: "suspended" in projector.failing_symbols["fills/A3"])
        assert not projector._batch.events  # nothing held for it in memory any more
        fills.delete("A3")  # repaired, but its rows could only be written out of order now
        ingest(server, pb_fill("BUY", 1, 10, account="A3"), pb_fill("BUY", 1, 10))
        wait_until(lambda: len(fills.read("A1").data) == 2)
        assert not fills.has_symbol("A3") and not projector.healthy
    finally:
        server.stop()

    again = start_test_server(store=store)
    try:
        fills = again.running.store.views.fills
        wait_until(lambda: fills.has_symbol("A3") and len(fills.read("A3").data) == 6)
        assert list(fills.read("A3").data["sequence"]) == [1, 2, 3, 4, 5, 7]
        assert again.running.service.projector.healthy
    finally:
        again.stop()
