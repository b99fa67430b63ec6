"""A graceful stop takes its checkpoint only if it fits before the stop's limit: at 1M rows a
checkpoint takes about 10 s, and one cut off at the limit is lost work and an exit 1. The
store is a real one on LMDB; the disk is slow (each checkpoint write takes 0.2 s more)."""

from __future__ import annotations

import gc
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from server.app import StopDeadline
from server.application.checkpoints import STOP_MARGIN, Checkpointer
from server.application.ports import Checkpoint
from server.domain.ledger import Ledger
from server.storage.arctic import ArcticEventStore
from tests.domain.builders import fill

SLOW = 0.2  # seconds more each checkpoint write takes


class SlowDisk(ArcticEventStore):
    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        time.sleep(SLOW)
        super().save_checkpoint(checkpoint)


def _book(ledger: Ledger, instrument: str) -> None:
    event = fill("BUY", 1, 10, instrument=instrument)
    ledger.apply(event, ledger.admit(event).sequence)


def _stored(uri: str) -> int:
    gc.collect()  # LMDB: one open instance per path and process
    store = ArcticEventStore(uri)
    try:
        found = store.latest_checkpoint()
        return 0 if found is None else found.sequence
    finally:
        store.close()


async def test_a_stop_leaves_out_a_checkpoint_that_would_not_fit_before_its_limit(tmp_path, caplog):
    uri = f"lmdb://{tmp_path}/store"
    ledger = Ledger()
    store = SlowDisk(uri)
    try:
        with ThreadPoolExecutor(1) as executor:
            checkpointer = Checkpointer(store, executor, every=1000, seconds=0)
            checkpointer.resume(ledger, 0)
            _book(ledger, "I1")
            # Nothing measured yet: taken, whatever the time left (it cannot be told).
            await checkpointer.stop(time_left=lambda: 0.0)
            assert checkpointer.saved_sequence == 1
            assert checkpointer.write_seconds is not None and checkpointer.write_seconds >= SLOW
            _book(ledger, "I2")
            with caplog.at_level(logging.WARNING, logger="portfolio.checkpoint"):
                await checkpointer.stop(time_left=lambda: SLOW * STOP_MARGIN * 0.9)
            assert checkpointer.saved_sequence == 1
            assert "no checkpoint at stop" in caplog.text
            assert "replays from sequence 1" in caplog.text
            await checkpointer.stop(time_left=lambda: 30.0)  # time enough
            assert checkpointer.saved_sequence == 2
            await checkpointer.stop()  # no limit (a test's stop): nothing newer to write
    finally:
        store.close()
    del store
    assert _stored(uri) == 2


def test_the_stop_deadline_counts_down_from_the_stop_s_start():
    deadline = StopDeadline(5.0)
    assert deadline.time_left() == 5.0  # not started: the whole limit
    deadline.start()
    try:
        time.sleep(0.05)
        assert 4.0 < deadline.time_left() < 4.96
    finally:
        deadline.cancel()  # its timer would exit the process at the limit
