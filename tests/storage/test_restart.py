"""State survives a restart field for field, on a real ArcticDB in LMDB."""

from __future__ import annotations

import itertools
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import arcticdb as adb
import boto3
import grpc
import pytest

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.storage.lock import StoreLocked
from tests.api.protocol import acks, ingest, pb_fill, pb_status
from tests.conftest import ServerThread, start_test_server


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[int]:
    """An S3-compatible emulator (moto) on 127.0.0.1, for the same suite on object storage."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    moto = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            client.list_buckets()
            break
        except Exception:
            assert time.monotonic() < deadline, "moto did not start"
            time.sleep(0.1)
    yield port
    moto.terminate()
    moto.wait(timeout=10)


_buckets = itertools.count()


@pytest.fixture
def s3_store(s3_endpoint) -> str:
    """A fresh bucket on the emulator, as an ArcticDB URI."""
    bucket = f"portfolio-{next(_buckets)}"
    boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{s3_endpoint}",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    return f"s3://127.0.0.1:{bucket}?port={s3_endpoint}&access=test&secret=test"


@pytest.fixture(params=["lmdb", "s3"])
def store(request, tmp_path) -> str:
    if request.param == "lmdb":
        return f"lmdb://{tmp_path}/store"
    return request.getfixturevalue("s3_store")


def open_stub(server: ServerThread):
    channel = grpc.insecure_channel(server.address)
    return channel, pb_grpc.PortfolioManagerStub(channel)


def everything(stub) -> tuple:
    """Every observable row and total, to compare before and after a restart."""
    rows = []
    for level in (pb.POSITION_LEVEL_STRATEGY, pb.POSITION_LEVEL_ACCOUNT):
        page = stub.ListPositions(
            pb.ListPositionsRequest(level=level, include_flat=True, page_size=1000)
        )
        rows.extend(page.positions)
    summary = stub.GetPortfolioSummary(pb.GetPortfolioSummaryRequest())
    # Round trips in progress carry over a restart (the checkpoint's book holds them), and
    # so does every other figure a client reads per account and strategy.
    scopes = sorted(
        {(row.account_id, "") for row in rows}
        | {("", row.strategy_id) for row in rows if row.strategy_id}
        | {(row.account_id, row.strategy_id) for row in rows if row.strategy_id}
    )
    trace = _answer(stub.GetTracePosition, pb.GetTracePositionRequest(trace_id="t"))
    if isinstance(trace, pb.TracePosition):
        # A live trace expires a TTL after its latest leg was applied; after a restart, after
        # the store's note that the leg was journaled (server/storage/receipts.py), a few ms
        # earlier: both are bounds on its receipt, neither the exact time.
        trace.ClearField("expires_at")
    answers: list[object] = [trace]
    for account, strategy in scopes:
        answers += [
            _answer(stub.GetPerformance, pb.GetPerformanceRequest(
                account_id=account, strategy_id=strategy)),
            _answer(stub.GetPnlHistory, pb.GetPnlHistoryRequest(
                account_id=account, strategy_id=strategy)),
            _answer(stub.GetRiskMetrics, pb.GetRiskMetricsRequest(
                account_id=account, strategy_id=strategy)),
            _answer(stub.ListOpenOrders, pb.ListOpenOrdersRequest(
                account_id=account, strategy_id=strategy, page_size=1000)),
        ]  # fmt: skip
        if account and not strategy:
            answers.append(stub.GetBalances(pb.GetBalancesRequest(account_id=account)))
        if strategy and not account:
            request = pb.GetStrategyPortfolioRequest(strategy_id=strategy, include_flat=True)
            answers.append(stub.GetStrategyPortfolio(request))
    return rows, summary, answers


def _answer(call, request) -> object:
    """The answer, or the status code of a refusal (a scope a call does not take): the same
    either way before and after a restart."""
    try:
        return call(request)
    except grpc.RpcError as error:
        return error.code()


def mixed_history():
    events = []
    for i in range(60):
        side = "BUY" if i % 3 else "SELL"
        events.append(
            pb_fill(
                side,
                10 + i,
                f"{100 + i % 7}.25",
                strategy=f"S{i % 3}",
                instrument=f"I{i % 4}",
                account=f"A{i % 2}",
                commission="0.5",
                trace_id="t" if i % 10 == 0 else "",
            )
        )
        if i % 15 == 0:
            events.append(pb_status(f"u{i}", "SUBMITTED", order_id=str(i)))
    return events


@pytest.mark.parametrize(
    ("store", "checkpoint_every"),
    # On S3 only the run that checkpoints every 7 events: it writes and reads checkpoints
    # and replays a tail, as the other does, at 16 s a run on the emulator.
    [("lmdb", 7), ("lmdb", 10_000), ("s3", 7)],
    indirect=["store"],
)
def test_state_after_a_restart_equals_the_state_before(store, checkpoint_every):
    events = mixed_history()
    first = start_test_server(store=store, checkpoint_every=checkpoint_every)
    channel, stub = open_stub(first)
    with channel:
        for start in range(0, len(events), 9):
            ingest(stub, events[start : start + 9])
        before = everything(stub)
    first.stop()

    second = start_test_server(store=store, checkpoint_every=checkpoint_every)
    try:
        channel, stub = open_stub(second)
        with channel:
            after = everything(stub)
            assert after == before
            assert after[1].as_of_sequence == len(events)
            # The relay replays everything: all duplicates, with their original sequences.
            (response,) = ingest(stub, events)
            assert {a.result for a in response.acks} == {pb.EVENT_RESULT_DUPLICATE}
            assert [a.sequence for a in response.acks] == list(range(1, len(events) + 1))
            # New events continue the sequence without a gap.
            assert acks(stub, pb_fill("BUY", 1, 1))[0].sequence == len(events) + 1
    finally:
        second.stop()


def test_a_first_run_on_an_empty_store(store):
    server = start_test_server(store=store)
    try:
        channel, stub = open_stub(server)
        with channel:
            summary = stub.GetPortfolioSummary(pb.GetPortfolioSummaryRequest())
            assert summary.as_of_sequence == 0
            assert acks(stub, pb_fill("BUY", 1, 1))[0].sequence == 1
    finally:
        server.stop()
    assert server.running.recovery.sequence == 0


def test_a_second_service_on_the_same_store_refuses_to_start(store):
    server = start_test_server(store=store)
    try:
        with pytest.raises(StoreLocked, match="one writer per store"):
            start_test_server(store=store)
    finally:
        server.stop()
    start_test_server(store=store).stop()  # free again once the first one stopped


def test_subscribers_resume_across_a_restart(store):
    first = start_test_server(store=store, checkpoint_every=5)
    channel, stub = open_stub(first)
    with channel:
        for i in range(12):  # separate commits: checkpoints are taken at 5 and 10
            acks(stub, pb_fill("BUY", 1, 10 + i))
        seen = stub.SubscribeUpdates(pb.SubscribeUpdatesRequest(from_sequence=1), timeout=10)
        last = [next(seen).sequence for _ in range(24)][-1]
        seen.cancel()
    first.stop()
    assert last == 12

    second = start_test_server(store=store, checkpoint_every=5)
    try:
        channel, stub = open_stub(second)
        with channel:
            acks(stub, pb_fill("SELL", 12, 30))
            resumed = stub.SubscribeUpdates(
                pb.SubscribeUpdatesRequest(from_sequence=last + 1), timeout=10
            )
            update = next(resumed)
            assert (update.sequence, update.position.quantity) == (13, "0")
            resumed.cancel()
            # Updates replayed from the journal carry the rows as they were then. The stop
            # saved the snapshot taken at 10, so the replayed tail covers 11 and 12.
            again = stub.SubscribeUpdates(
                pb.SubscribeUpdatesRequest(from_sequence=11, level=pb.POSITION_LEVEL_STRATEGY),
                timeout=10,
            )
            assert [next(again).position.quantity for _ in range(3)] == ["11", "12", "0"]
            again.cancel()
    finally:
        second.stop()


def test_same_timestamp_and_out_of_order_fills_are_all_kept(store):
    from google.protobuf.timestamp_pb2 import Timestamp

    same, earlier = Timestamp(seconds=1_767_300_000), Timestamp(seconds=1_767_200_000)
    events = [
        pb_fill("BUY", 1, 10, timestamp=same),
        pb_fill("BUY", 2, 11, timestamp=same),
        pb_fill("BUY", 3, 12, timestamp=earlier),  # a late fill
        pb_fill("SELL", 6, 13, timestamp=same),
    ]
    first = start_test_server(store=store)
    channel, stub = open_stub(first)
    with channel:
        assert [a.sequence for a in acks(stub, *events)] == [1, 2, 3, 4]
    first.stop()
    second = start_test_server(store=store)
    try:
        channel, stub = open_stub(second)
        with channel:
            position = stub.GetPosition(
                pb.GetPositionRequest(account_id="A1", instrument_id="AAPL")
            )
            assert (position.quantity, position.trade_count) == ("0", 4)
            assert position.realized_pnl == str(6 * 13 - (10 + 22 + 36))
    finally:
        second.stop()


@pytest.mark.parametrize("checkpoint_every", [3, 10_000])
def test_a_correction_after_a_restart_finds_the_fill_it_corrects(tmp_path, checkpoint_every):
    """The correctable fills come back from the checkpoint's window and the journal, so a
    correction sent after a restart replaces its fill instead of being refused."""
    store = f"lmdb://{tmp_path}/store"
    first_correction = pb_fill("BUY", 100, 11, fill_id="x.02", corrects="x.01")
    first = start_test_server(store=store, checkpoint_every=checkpoint_every)
    channel, stub = open_stub(first)
    with channel:
        ingest(stub, [pb_fill("BUY", 100, 10, fill_id="x.01")])
        ingest(stub, [pb_fill("BUY", 1, 10, instrument=f"F{i}") for i in range(8)])
        # One correction before the restart, which recovery must replay the same way.
        ingest(stub, [first_correction])
        ingest(stub, [pb_fill("BUY", 1, 10, instrument=f"G{i}") for i in range(8)])
    first.stop()
    second = start_test_server(store=store, checkpoint_every=checkpoint_every)
    try:
        channel, stub = open_stub(second)
        with channel:
            (ack,) = acks(stub, pb_fill("BUY", 100, 12, fill_id="x.03", corrects="x.01"))
            assert ack.result == pb.EVENT_RESULT_ACCEPTED
            row = stub.GetPosition(
                pb.GetPositionRequest(account_id="A1", instrument_id="AAPL", strategy_id="S1")
            )
            assert (row.quantity, row.avg_cost) == ("100", "12")
            (again,) = acks(stub, first_correction)
            assert again.result == pb.EVENT_RESULT_DUPLICATE
    finally:
        second.stop()
    corrections = adb.Arctic(store).get_library("corrections").read("A1").data
    assert list(corrections.correction_id) == ["x.02", "x.03"]
    assert set(corrections.corrects) == {"x.01"}
    fills = adb.Arctic(store).get_library("fills").read("A1").data
    assert "x.02" not in set(fills.fill_id)


def test_an_instrument_whose_latest_fill_moved_away_is_valued_the_same_after_a_restart(
    tmp_path,
):
    """A correction moves SAP's latest fill (S2's, at 101) to AAPL: SAP is valued at the fill
    before (S1's, at 100), before a restart and after it (the checkpoint is taken after the
    correction). Before the fix, SAP kept 101 (an AAPL price) live and read back as a last
    fill price of 0 after the restart: S1's unrealized P&L 10, then -1000."""
    store = f"lmdb://{tmp_path}/store"
    first = start_test_server(store=store)
    channel, stub = open_stub(first)
    request = pb.GetPositionRequest(account_id="A1", strategy_id="S1", instrument_id="SAP")
    with channel:
        acks(
            stub,
            pb_fill("BUY", 10, 100, strategy="S1", instrument="SAP", fill_id="f1"),
            pb_fill("BUY", 5, 101, strategy="S2", instrument="SAP", fill_id="f2"),
        )
        acks(stub, pb_fill("BUY", 5, 101, strategy="S2", fill_id="f3", corrects="f2"))
        before = stub.GetPosition(request)
    first.stop()  # the checkpoint at the stop holds the book after the correction
    second = start_test_server(store=store)
    try:
        assert second.running.recovery.replayed == 0
        channel, stub = open_stub(second)
        with channel:
            after = stub.GetPosition(request)
    finally:
        second.stop()
    assert (before.market_price, before.unrealized_pnl) == ("100", "0")
    assert after == before
