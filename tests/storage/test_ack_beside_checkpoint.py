"""An ack never waits behind a checkpoint's write: the group commit's appends run on their own
thread, not on the one checkpoints are written on (a checkpoint of a large book takes seconds).

The store is the real ArcticDB on LMDB; its checkpoint write is held on cue (a slow disk cannot
be summoned on this machine)."""

from __future__ import annotations

import threading
import time

import grpc

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.application.ports import Checkpoint
from server.storage.arctic import ArcticEventStore
from tests.api.protocol import pb_fill
from tests.conftest import start_test_server


class SlowCheckpoints(ArcticEventStore):
    writing = threading.Event()
    release = threading.Event()

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        self.writing.set()
        self.release.wait(30)
        super().save_checkpoint(checkpoint)


def test_fills_are_acknowledged_while_a_checkpoint_is_being_written(tmp_path):
    SlowCheckpoints.writing.clear()
    SlowCheckpoints.release.clear()
    server = start_test_server(
        open_store=SlowCheckpoints, store=f"lmdb://{tmp_path}/store", checkpoint_every=2
    )
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)

            def ingest(fill_id: str) -> int:
                request = pb.IngestRequest(
                    batch_id=fill_id, events=[pb_fill("BUY", 1, 5, fill_id=fill_id)]
                )
                (answer,) = stub.Ingest(iter([request]), timeout=10)
                return answer.acks[0].sequence

            # Checkpoints are written one round late: the snapshot held at 2 is written at 4.
            for number in range(1, 5):
                assert ingest(f"f{number}") == number
            assert SlowCheckpoints.writing.wait(10), "no checkpoint was written"

            began = time.monotonic()
            assert ingest("f5") == 5  # acknowledged while the checkpoint is still held
            assert time.monotonic() - began < 5
            SlowCheckpoints.release.set()
            assert ingest("f6") == 6
    finally:
        SlowCheckpoints.release.set()
        server.stop()
