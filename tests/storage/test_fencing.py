"""One writer stays one writer on object storage: a service paused (not dead) past its writer
lease never appends after another took over.

Two services run as subprocesses on the S3 emulator (moto) with a 1 s lease (it lapses after
3 s without renewal; with 0.5 s, the second writer, sharing two cores with moto and the first,
was once unrenewed for 1.1 s and fenced itself, as it must); the first is paused with SIGSTOP,
the second takes over, the first is resumed with SIGCONT and sent more events."""

from __future__ import annotations

import signal
import time

import arcticdb as adb
import grpc
import pytest

from server.storage.lock import WriterLease
from tests import service_process
from tests.api.protocol import pb_fill
from tests.storage.test_disk_full import Service
from tests.storage.test_restart import s3_endpoint, s3_store  # noqa: F401 (fixtures)

LEASE = 1.0


@pytest.fixture
def short_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(service_process.ENV, "PORTFOLIO_LEASE_SECONDS", str(LEASE))


def test_a_paused_writer_never_appends_after_another_took_over(s3_store, short_lease):  # noqa: F811
    first = Service(s3_store)
    second = None
    try:
        assert [a.sequence for a in first.ingest(pb_fill("BUY", 10, 5, fill_id="f1"))] == [1]
        first.process.send_signal(signal.SIGSTOP)
        time.sleep(WriterLease.LAPSE_PERIODS * LEASE + 0.5)  # its lease lapses

        second = Service(s3_store)  # takes the lease over (and waits out the read cache)
        assert [a.sequence for a in second.ingest(pb_fill("BUY", 1, 5, fill_id="f2"))] == [2]

        first.process.send_signal(signal.SIGCONT)
        # Its client is refused with the reason; it never appends again, and it exits
        # non-zero by itself (it can never be the writer again: a supervisor restarts it).
        with pytest.raises(grpc.RpcError) as raised:
            first.ingest(pb_fill("BUY", 1, 5, fill_id="late-1"))
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "writer lease" in raised.value.details(), raised.value.details()
        assert first.process.wait(timeout=20) == 1
        with pytest.raises(grpc.RpcError):
            first.ingest(pb_fill("BUY", 1, 5, fill_id="late-2"))
        # The new writer goes on.
        assert [a.sequence for a in second.ingest(pb_fill("BUY", 1, 5, fill_id="f3"))] == [3]
        assert [a.sequence for a in second.ingest(pb_fill("BUY", 1, 5, fill_id="f4"))] == [4]
    finally:
        first.stop()
        if second is not None:
            assert second.stop() == 0, second.stderr()
    assert "writer lease lost" in first.stderr() or "writer lease lapsed" in first.stderr()

    journal = adb.Arctic(s3_store).get_library("journal").read("events").data
    assert list(journal["sequence"]) == [1, 2, 3, 4]  # gap-free, none doubled
    assert list(journal["event_id"]) == ["f1", "f2", "f3", "f4"]
