"""A checkpoint's snapshot copies every row (a million on a large book): the service takes it
in steps between two groups of the committer, answering queries between its steps, and no
event applies until it is taken, so the snapshot is the book at one sequence."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.application import checkpoints
from server.application.ports import Checkpoint
from server.domain import steps
from server.domain.ledger import Ledger
from tests.api.protocol import acks, pb_fill
from tests.conftest import start_test_server
from tests.domain.builders import fill

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


async def test_a_failed_snapshot_is_logged_and_taken_again_an_interval_later(monkeypatch, caplog):
    """A bug in a snapshot: logged with its cause, nothing held or written, the service goes
    on (the journal is the truth), and the next is tried an interval later, not at every
    group (each try copies the whole book)."""
    tries: list[int] = []
    real_snapshotting = checkpoints.snapshotting

    def failing_once(ledger):  # type: ignore[no-untyped-def]
        tries.append(ledger.applied_sequence)
        if len(tries) == 1:
            raise RuntimeError("a bug in the snapshot")
        return (yield from real_snapshotting(ledger))

    monkeypatch.setattr(checkpoints, "snapshotting", failing_once)

    class Store:
        def __init__(self) -> None:
            self.saved: list[int] = []

        def save_checkpoint(self, checkpoint: Checkpoint) -> None:
            self.saved.append(checkpoint.sequence)

    ledger = Ledger()
    store = Store()
    with ThreadPoolExecutor(1) as executor:
        checkpointer = checkpoints.Checkpointer(store, executor, every=2, seconds=0)  # type: ignore[arg-type]
        checkpointer.resume(ledger, 0)
        for n in range(7):
            event = fill("BUY", 1, 10, instrument=f"I{n}")
            ledger.apply(event, ledger.admit(event).sequence)
            checkpointer.after_apply(ledger)
            await asyncio.sleep(0.01)  # the turn runs
        await checkpointer.stop()
    assert "a bug in the snapshot" in caplog.text
    assert tries == [2, 4, 6]  # after the failure at 2, not again at 3
    assert store.saved == [4, 6]  # 4 written at the turn of 6, 6 at the stop
