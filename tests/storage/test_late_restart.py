"""Late statuses and back-filled trace legs survive a restart on a real ArcticDB in LMDB: from
a checkpoint, from the journal alone, and from a checkpoint written before histories were kept
in time order."""

from __future__ import annotations

import json

import arcticdb as adb
import grpc
import pytest

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from tests.api.protocol import acks
from tests.api.test_late_status import history, late_partial_after_filled
from tests.conftest import ServerThread, start_test_server


def get_order(server: ServerThread) -> pb.Order:
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.PortfolioManagerStub(channel)
        return stub.GetOrder(pb.GetOrderRequest(account_id="A1", order_id="7"))


def ingest_late_statuses(server: ServerThread) -> None:
    with grpc.insecure_channel(server.address) as channel:
        acks(pb_grpc.PortfolioManagerStub(channel), *late_partial_after_filled())


EXPECTED = [("u-sub", 1, False, ""), ("u-part", 20, True, ""), ("u-fill", 30, False, "")]


@pytest.mark.parametrize("checkpoint_every", [1, 10_000])  # from a checkpoint; journal only
def test_a_late_status_reads_back_the_same_after_a_restart(tmp_path, checkpoint_every):
    store = f"lmdb://{tmp_path}/store"
    first = start_test_server(store=store, checkpoint_every=checkpoint_every)
    try:
        ingest_late_statuses(first)
        before = get_order(first)
    finally:
        first.stop()
    assert history(before) == EXPECTED
    second = start_test_server(store=store, checkpoint_every=checkpoint_every)
    try:
        after = get_order(second)
    finally:
        second.stop()
    assert after == before
    assert after.status == pb.ORDER_STATUS_FILLED


def test_a_checkpoint_from_before_time_ordered_histories_reads_as_a_replay_would(tmp_path):
    store = f"lmdb://{tmp_path}/store"
    first = start_test_server(store=store, checkpoint_every=1)
    try:
        ingest_late_statuses(first)
        expected = get_order(first)
    finally:
        first.stop()
    # Rewrite the checkpointed order as the service before this change kept it: history in
    # arrival order, the late status flagged out of order.
    library = adb.Arctic(store).get_library("checkpoints")
    saved = library.read("state")
    assert saved.metadata["sequence"] == 3  # the checkpoint holds the whole history
    frame = saved.data.copy()
    for row, (section, text) in enumerate(zip(frame["section"], frame["record"], strict=True)):
        if section == "orders":
            record = json.loads(text)
            record["history"] = [
                [sequence, text, "out of order: timestamped before the order's last transition"
                 if sequence == 3 else "", replaced, corrects]
                for sequence, text, _, replaced, corrects, *_ in sorted(record["history"])
            ]  # fmt: skip
            frame.loc[row, "record"] = json.dumps(record, separators=(",", ":"))
    library.write("state", frame, metadata=saved.metadata, prune_previous_versions=True)
    del library
    second = start_test_server(store=store, checkpoint_every=1)
    try:
        assert get_order(second) == expected
    finally:
        second.stop()
