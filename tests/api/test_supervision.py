"""No background failure is silent: a commit task that dies fails the waiting acks, turns health
NOT_SERVING and makes the process exit non-zero; a stop always ends within its grace."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
from dataclasses import replace

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server import app
from server.application.committer import GroupCommitter
from server.application.ports import StorageUnavailable
from server.storage.arctic import ArcticEventStore
from tests.api.protocol import pb_fill
from tests.conftest import TEST_CONFIG
from tests.domain.builders import fill


class _PoisonStore:
    """A store whose append fails the way a bug does (not as StorageUnavailable)."""

    def append(self, group: object) -> None:
        raise OverflowError("Python int too large to convert to C long")


async def test_a_commit_failure_no_retry_can_mend_fails_the_waiters_and_ends_the_task():
    health: list[bool] = []
    committer = GroupCommitter(
        _PoisonStore(),  # type: ignore[arg-type]
        apply=lambda group: None,
        on_health=health.append,
    )
    task = committer.start()
    committer.submit([(1, fill("BUY", 1, 10))])
    with pytest.raises(StorageUnavailable, match="OverflowError"):
        await asyncio.wait_for(committer.wait_durable(1), 5)
    with pytest.raises(OverflowError):
        await asyncio.wait_for(task, 5)
    assert health == [False]
    with pytest.raises(StorageUnavailable, match="must restart"):
        committer.submit([(2, fill("BUY", 1, 10))])
    await asyncio.wait_for(committer.stop(), 5)  # returns: nothing left to drain


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _ingest_one(address: str) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.PortfolioManagerStub(channel)
        request = pb.IngestRequest(batch_id="b", events=[pb_fill("BUY", 1, 10)])
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stub.Ingest(iter([request]), timeout=10):
                pass
        return caught.value


async def _health(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
        status: int = answer.status
        return status


async def test_a_dead_commit_task_stops_the_process_with_a_non_zero_exit(monkeypatch):
    monkeypatch.setattr(ArcticEventStore, "append", _PoisonStore.append)
    port = _free_port()
    config = replace(TEST_CONFIG, port=port)
    serving = asyncio.create_task(app.serve(config))
    address = f"127.0.0.1:{port}"
    for _ in range(100):
        await asyncio.sleep(0.05)
        try:
            if await _health(address) == health_pb2.HealthCheckResponse.SERVING:
                break
        except grpc.aio.AioRpcError:
            continue
    error = await _ingest_one(address)
    assert error.code() == grpc.StatusCode.UNAVAILABLE  # not a hang
    assert "OverflowError" in (error.details() or "")
    assert await asyncio.wait_for(serving, 15) == 1


async def test_a_stop_stuck_in_a_store_call_exits_within_the_grace(monkeypatch):
    """The store hangs (an object store that stops answering): SIGTERM must still end it."""
    release = threading.Event()
    monkeypatch.setattr(ArcticEventStore, "append", lambda self, group: release.wait(60))
    exits: list[int] = []
    exited = threading.Event()

    def exit_now(why: str, code: int) -> None:  # stands in for os._exit, which would end pytest
        exits.append(code)
        exited.set()

    monkeypatch.setattr(app, "_exit_now", exit_now)
    monkeypatch.setattr(app, "STOP_MARGIN_SECONDS", 1.0)
    port = _free_port()
    serving = asyncio.create_task(app.serve(replace(TEST_CONFIG, port=port, grace_seconds=0.5)))
    address = f"127.0.0.1:{port}"
    try:
        for _ in range(100):
            await asyncio.sleep(0.05)
            try:
                await _health(address)
                break
            except grpc.aio.AioRpcError:
                continue
        stuck = asyncio.create_task(_ingest_one(address))
        await asyncio.sleep(0.3)
        os.kill(os.getpid(), signal.SIGTERM)
        started = asyncio.get_running_loop().time()
        assert await asyncio.to_thread(exited.wait, 10)
        assert asyncio.get_running_loop().time() - started < 0.5 + 1.0 + 1.0
        assert exits == [1]
        stuck.cancel()
        await asyncio.gather(stuck, return_exceptions=True)
    finally:
        release.set()
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
