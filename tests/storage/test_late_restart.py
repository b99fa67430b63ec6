"""Late statuses and back-filled trace legs survive a restart on a real ArcticDB in LMDB: from
a checkpoint, from the journal alone, and from a checkpoint written before histories were kept
in time order."""

from __future__ import annotations

import json
import signal
import threading
import time

import arcticdb as adb
import grpc
import pytest

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from tests.api.protocol import acks
from tests.api.test_backfilled_trace import backfilled_legs
from tests.api.test_late_status import history, late_partial_after_filled
from tests.conftest import ServerThread, start_test_server
from tests.polling import wait_for
from tests.service_process import start_service


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


# -- traces: a back-filled trace lives a TTL from its receipt, across a restart --------------


def get_trace(server: ServerThread, trace_id: str = "arb-1") -> pb.TracePosition | None:
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.PortfolioManagerStub(channel)
        try:
            return stub.GetTracePosition(pb.GetTracePositionRequest(trace_id=trace_id))
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return None


def ingest_backfilled_trace(server: ServerThread, trace_id: str = "arb-1") -> None:
    with grpc.insecure_channel(server.address) as channel:
        acks(pb_grpc.PortfolioManagerStub(channel), *backfilled_legs(trace_id))


@pytest.mark.parametrize("checkpoint_every", [1, 10_000])  # legs in a checkpoint; in the tail
def test_a_back_filled_trace_is_alive_after_a_restart_until_a_ttl_after_its_receipt(
    tmp_path, checkpoint_every
):
    store = f"lmdb://{tmp_path}/store"
    first = start_test_server(store=store, checkpoint_every=checkpoint_every)
    try:
        received = time.time_ns()
        ingest_backfilled_trace(first)
        before = get_trace(first)
    finally:
        first.stop()
    stopped = time.time_ns()
    assert before is not None
    second = start_test_server(store=store, checkpoint_every=checkpoint_every)
    try:
        after = get_trace(second)
    finally:
        second.stop()
    assert after is not None
    assert after.legs == before.legs
    assert after.net == before.net
    # Received between `received` and the stop: the restart never shortens its life.
    ttl = 300 * 10**9
    assert received + ttl <= after.expires_at.ToNanoseconds() <= stopped + ttl


def test_a_trace_that_expired_stays_expired_after_a_restart(tmp_path):
    store = f"lmdb://{tmp_path}/store"
    first = start_test_server(store=store, checkpoint_every=1, trace_ttl_seconds=0.5)
    try:
        ingest_backfilled_trace(first, "old")
        assert get_trace(first, "old") is not None
        assert wait_for(lambda: get_trace(first, "old") is None, seconds=10)
    finally:
        first.stop()
    second = start_test_server(store=store, checkpoint_every=1, trace_ttl_seconds=0.5)
    try:
        assert get_trace(second, "old") is None  # its receipt is known: not revived
    finally:
        second.stop()


def test_a_back_filled_trace_is_alive_after_a_crash(tmp_path):
    """Killed before any checkpoint: the legs are replayed from the journal, received by the
    journal's last write at the latest."""
    store = f"lmdb://{tmp_path}/store"
    process, address = start_service("--store", store, "--trace-ttl-seconds", "300")
    threading.Thread(target=process.stderr.read, daemon=True).start()  # type: ignore[union-attr]
    try:
        received = time.time_ns()
        with grpc.insecure_channel(address) as channel:
            acks(pb_grpc.PortfolioManagerStub(channel), *backfilled_legs())
        killed = time.time_ns()
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    second = start_test_server(store=store)
    try:
        after = get_trace(second)
        assert second.running.recovery.checkpoint_sequence == 0  # replayed from the journal
    finally:
        second.stop()
    assert after is not None
    assert [leg.instrument_id for leg in after.legs] == ["BTC-USD", "BTC-EUR"]
    ttl = 300 * 10**9
    assert received + ttl <= after.expires_at.ToNanoseconds() <= killed + ttl


def test_a_live_traces_legs_received_more_than_a_ttl_ago_come_back_with_it(tmp_path):
    """Leg A received at 0, leg B at 3 s, TTL 5 s, restart at about 5.5 s: A alone would be
    expired, but its trace lives on through B, so the restart rebuilds both legs."""
    store = f"lmdb://{tmp_path}/store"
    options = {"store": store, "checkpoint_every": 1, "trace_ttl_seconds": 5.0}
    first = start_test_server(**options)
    try:
        legs = backfilled_legs("long")
        received = time.monotonic()
        with grpc.insecure_channel(first.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            acks(stub, legs[0])
            time.sleep(3)
            acks(stub, legs[1])
        before = get_trace(first, "long")
    finally:
        first.stop()
    time.sleep(max(0.0, received + 5.5 - time.monotonic()))
    second = start_test_server(**options)
    try:
        after = get_trace(second, "long")
    finally:
        second.stop()
    assert before is not None and len(before.legs) == 2
    assert after is not None
    assert after.legs == before.legs
    assert after.net == before.net
