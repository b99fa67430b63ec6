"""Checkpoints do not depend on one process living long: routine restarts replay a bounded tail.

Lives shorter than the checkpoint interval, ended gracefully or by SIGKILL once the time-based
checkpoint had time to run: the events replayed at each start must not grow with the journal.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from tests.api.protocol import acks, pb_fill
from tests.conftest import start_test_server
from tests.service_process import ENV, ROOT

CYCLES = 10
FILLS = 12  # per life: far fewer than the interval


def ingest_some(address: str, count: int) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.PortfolioManagerStub(channel)
        acks(stub, *[pb_fill("BUY" if i % 2 else "SELL", 1, 100 + i) for i in range(count)])


@pytest.mark.parametrize("checkpoint_every", [30, 10_000])
def test_graceful_restarts_replay_less_than_an_interval(tmp_path, checkpoint_every):
    store = f"lmdb://{tmp_path}/store"
    replayed = []
    for _ in range(CYCLES):
        server = start_test_server(
            store=store, checkpoint_every=checkpoint_every, checkpoint_seconds=3600.0
        )
        try:
            replayed.append(server.running.recovery.replayed)
            ingest_some(server.address, FILLS)
        finally:
            server.stop()
    last = start_test_server(store=store, checkpoint_every=checkpoint_every)
    try:
        replayed.append(last.running.recovery.replayed)
        assert last.running.recovery.sequence == CYCLES * FILLS
    finally:
        last.stop()
    assert max(replayed) < min(checkpoint_every, FILLS + 1), replayed


def test_a_subscriber_up_to_date_resumes_after_a_graceful_stop(tmp_path):
    """The stop's checkpoint may be at the last sequence: resuming from it + 1 still works."""
    store = f"lmdb://{tmp_path}/store"
    first = start_test_server(store=store, checkpoint_seconds=3600.0)
    try:
        ingest_some(first.address, 3)
    finally:
        first.stop()
    second = start_test_server(store=store)
    try:
        assert second.running.recovery.replayed == 0
        with grpc.insecure_channel(second.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            resumed = stub.SubscribeUpdates(pb.SubscribeUpdatesRequest(from_sequence=4), timeout=10)
            acks(stub, pb_fill("BUY", 1, 1))
            assert next(resumed).sequence == 4
            resumed.cancel()
    finally:
        second.stop()


def start_crashable(store: str, *flags: str):
    """The service in a subprocess; returns it, its address and its recovery log line."""
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "--port", "0", "--store", store, *flags],
        cwd=ROOT, env=ENV, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stderr is not None
    recovered = ""
    for line in process.stderr:
        if "recovered to sequence" in line:
            recovered = line
        found = re.search(r"listening on (127\.0\.0\.1:\d+)", line)
        if found:
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process, found.group(1), recovered
    raise AssertionError(f"the service did not start (exit {process.wait()})")


def replayed_in(line: str) -> int:
    found = re.search(r"(\d+) events replayed", line)
    assert found, line
    return int(found.group(1))


def test_killed_lives_replay_only_since_the_timed_checkpoint(tmp_path):
    store = f"lmdb://{tmp_path}/store"
    flags = ("--checkpoint-every", "10000", "--checkpoint-seconds", "0.2")
    replayed = []
    for _ in range(4):
        process, address, recovered = start_crashable(store, *flags)
        try:
            replayed.append(replayed_in(recovered))
            ingest_some(address, FILLS)
            time.sleep(1.0)  # several turns of the timer: the snapshot is taken, then written
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
    process, _, recovered = start_crashable(store, *flags)
    try:
        replayed.append(replayed_in(recovered))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert replayed == [0] * len(replayed), replayed


def test_a_crash_loop_of_short_lives_replays_no_more_and_more(tmp_path):
    """Killed before any checkpoint could be written: a start whose replay was longer than two
    intervals checkpoints what it recovered, so the next start replays only what came since."""
    store = f"lmdb://{tmp_path}/store"
    flags = ("--checkpoint-every", "20", "--checkpoint-seconds", "3600")
    replayed = []
    for _ in range(6):
        process, address, recovered = start_crashable(store, *flags)
        try:
            replayed.append(replayed_in(recovered))
            ingest_some(address, FILLS)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
    assert max(replayed) <= 2 * 20 + FILLS, replayed
    assert replayed[-1] < replayed[-2] or max(replayed) <= 2 * 20, replayed  # it came back down
