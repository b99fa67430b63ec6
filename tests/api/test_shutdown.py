"""A stop with subscribers still reading: they are told to reconnect elsewhere (UNAVAILABLE),
the stop takes far less than its grace, and nothing is logged as an error."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time

import grpc

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from tests.api.protocol import acks, pb_fill
from tests.api.test_reference_and_cash import mark
from tests.conftest import start_test_server
from tests.service_process import start_service

GRACE = 10.0  # long: a stop that waits for the subscriptions would show


def _sync_subscriber(address: str, outcome: dict[str, object], ready: threading.Event) -> None:
    with grpc.insecure_channel(address) as channel:
        call = pb_grpc.PortfolioManagerStub(channel).SubscribeUpdates(
            pb.SubscribeUpdatesRequest(), timeout=60
        )
        try:
            for _ in call:
                ready.set()
        except grpc.RpcError as error:
            outcome["code"], outcome["details"] = error.code(), error.details()


async def _async_subscriber(address: str, ready: threading.Event) -> tuple[object, str]:
    async with grpc.aio.insecure_channel(address) as channel:
        call = pb_grpc.PortfolioManagerStub(channel).SubscribeUpdates(
            pb.SubscribeUpdatesRequest(), timeout=60
        )
        try:
            async for _ in call:
                ready.set()
        except grpc.RpcError as error:
            return error.code(), error.details() or ""
        return None, ""


def test_a_stop_ends_open_subscriptions_at_once_without_errors(caplog, tmp_path):
    caplog.set_level(logging.INFO)
    server = start_test_server(store=f"lmdb://{tmp_path}/store", grace_seconds=GRACE)
    address = server.address
    sync_outcome: dict[str, object] = {}
    sync_ready, async_ready = threading.Event(), threading.Event()
    sync_reader = threading.Thread(
        target=_sync_subscriber, args=(address, sync_outcome, sync_ready)
    )
    sync_reader.start()
    async_result: list[tuple[object, str]] = []
    async_reader = threading.Thread(
        target=lambda: async_result.append(asyncio.run(_async_subscriber(address, async_ready)))
    )
    async_reader.start()
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.PortfolioManagerStub(channel)
        assert acks(stub, pb_fill("BUY", "10", "100"))[0].result == pb.EVENT_RESULT_ACCEPTED
    assert sync_ready.wait(10) and async_ready.wait(10)  # both read an update or a heartbeat
    started = time.monotonic()
    server.call(server.running.stop(GRACE))
    took = time.monotonic() - started
    server._close_loop()
    sync_reader.join(10)
    async_reader.join(10)
    assert took < 2.0, f"stop took {took:.1f}s of a {GRACE:.0f}s grace"
    assert sync_outcome["code"] == grpc.StatusCode.UNAVAILABLE
    assert "reconnect" in str(sync_outcome["details"])
    assert async_result[0][0] == grpc.StatusCode.UNAVAILABLE
    assert "reconnect" in async_result[0][1]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]
    # The checkpoint was written: a restart recovers from it and replays nothing after it.
    again = start_test_server(store=f"lmdb://{tmp_path}/store")
    try:
        assert again.running.recovery.replayed == 0
    finally:
        again.stop()


def test_sigterm_with_a_subscriber_exits_at_once_without_error_lines(tmp_path):
    """The process as an operator stops it: exit 0 well within the grace, no ERROR line and no
    traceback on stderr, the subscriber told to reconnect elsewhere."""
    process, address = start_service(
        "--store", f"lmdb://{tmp_path}/store", "--grace-seconds", str(GRACE)
    )
    try:
        outcome: dict[str, object] = {}
        ready = threading.Event()
        reader = threading.Thread(target=_sync_subscriber, args=(address, outcome, ready))
        reader.start()
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            assert acks(stub, pb_fill("BUY", 1, 1))[0].result == pb.EVENT_RESULT_ACCEPTED
        assert ready.wait(10)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=GRACE + 10) == 0
        took = time.monotonic() - started
        reader.join(10)
        stderr = process.stderr.read()
        assert took < GRACE / 2, f"exit took {took:.1f}s of a {GRACE:.0f}s grace"
        assert outcome["code"] == grpc.StatusCode.UNAVAILABLE
        assert " ERROR " not in stderr and "Traceback" not in stderr, stderr
        assert "stopped at sequence 1" in stderr
    finally:
        process.kill()


async def _relay(address: str, acked: threading.Event) -> tuple[list[int], object, str]:
    """A relay's stream: one batch, then open and idle (as between fills) until the stop."""
    async with grpc.aio.insecure_channel(address) as channel:
        call = pb_grpc.PortfolioManagerStub(channel).Ingest(timeout=60)
        await call.write(pb.IngestRequest(batch_id="b1", events=[pb_fill("BUY", 1, 1)]))
        first = await call.read()
        acked.set()
        try:
            await call.read()
        except grpc.RpcError as error:
            return [a.result for a in first.acks], error.code(), error.details() or ""
        return [a.result for a in first.acks], None, ""


def test_a_stop_ends_an_idle_ingest_stream_after_answering_it(caplog):
    caplog.set_level(logging.INFO)
    server = start_test_server(grace_seconds=GRACE)
    acked = threading.Event()
    result: list[tuple[list[int], object, str]] = []
    relay = threading.Thread(
        target=lambda: result.append(asyncio.run(_relay(server.address, acked)))
    )
    relay.start()
    assert acked.wait(10)
    started = time.monotonic()
    server.call(server.running.stop(GRACE))
    took = time.monotonic() - started
    server._close_loop()
    relay.join(10)
    assert took < 2.0, f"stop took {took:.1f}s of a {GRACE:.0f}s grace"
    results, code, details = result[0]
    assert results == [pb.EVENT_RESULT_ACCEPTED]
    assert code == grpc.StatusCode.UNAVAILABLE and "resend" in details
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]


async def _marks_feed(address: str, acked: threading.Event) -> tuple[object, str]:
    """A marks feed's stream: one batch, then open and idle until the stop."""
    async with grpc.aio.insecure_channel(address) as channel:
        call = pb_grpc.PortfolioManagerStub(channel).StreamMarks(timeout=60)
        await call.write(pb.MarkBatch(batch_id="m1", marks=[mark("AAPL", 10, mark="100")]))
        await call.read()
        acked.set()
        try:
            await call.read()
        except grpc.RpcError as error:
            return error.code(), error.details() or ""
        return None, ""


def test_a_stop_ends_an_idle_marks_stream(caplog):
    caplog.set_level(logging.INFO)
    server = start_test_server(grace_seconds=GRACE)
    acked = threading.Event()
    result: list[tuple[object, str]] = []
    feed = threading.Thread(
        target=lambda: result.append(asyncio.run(_marks_feed(server.address, acked)))
    )
    feed.start()
    assert acked.wait(10)
    started = time.monotonic()
    server.call(server.running.stop(GRACE))
    took = time.monotonic() - started
    server._close_loop()
    feed.join(10)
    assert took < 2.0, f"stop took {took:.1f}s of a {GRACE:.0f}s grace"
    assert result[0][0] == grpc.StatusCode.UNAVAILABLE and "reconnect" in result[0][1]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]
