"""A checkpoint's snapshot copies every row (a million on a large book): the service takes it
in steps between two groups of the committer, answering queries between its steps, and no
event applies until it is taken, so the snapshot is the book at one sequence."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.application import checkpoints
from server.application.ports import Checkpoint
from server.domain import steps
from tests.api.protocol import acks, pb_fill
from tests.conftest import start_test_server

STEP_SECONDS = 0.15  # each step made slow: a stand-in for 20,000 rows


def test_queries_are_answered_between_the_steps_of_a_snapshot_and_events_wait_for_it(
    monkeypatch,
):
    monkeypatch.setattr(steps, "COPIES_PER_STEP", 1)
    stepping = threading.Event()
    taken: list[tuple[float, Checkpoint]] = []
    real_snapshotting = checkpoints.snapshotting

    def slow(ledger):  # type: ignore[no-untyped-def]
        stepping.set()
        snapshot = real_snapshotting(ledger)
        while True:
            time.sleep(STEP_SECONDS)  # this step's work, made slow
            try:
                next(snapshot)
            except StopIteration as done:
                taken.append((time.monotonic(), done.value))
                return done.value
            yield

    monkeypatch.setattr(checkpoints, "snapshotting", slow)
    server = start_test_server(checkpoint_every=4, checkpoint_seconds=3600.0)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            # One group of four: the snapshot is due after it (8 rows: 9 steps, 1.35 s).
            acks(stub, *[pb_fill("BUY", 10, 100, instrument=f"I{n}") for n in range(4)])
            assert stepping.wait(10)
            with ThreadPoolExecutor(1) as pool:
                later = pool.submit(
                    lambda: (acks(stub, pb_fill("BUY", 1, 100, instrument="I9")), time.monotonic())
                )
                position = stub.GetPosition(
                    pb.GetPositionRequest(account_id="A1", strategy_id="S1", instrument_id="I0"),
                    timeout=10,
                )
                assert not taken, "answered only once the snapshot was taken"
                assert position.quantity == "10"
                (ack,), acked_at = later.result(timeout=30)
        assert ack.sequence == 5
        (taken_at, snapshot), *_ = taken
        assert acked_at > taken_at  # the fill sent meanwhile applied after the snapshot
        assert snapshot.sequence == 4 and len(snapshot.rows) == 8
        assert {row.key.instrument_id for row, _ in snapshot.rows} == {"I0", "I1", "I2", "I3"}
    finally:
        server.stop()
