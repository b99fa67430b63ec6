"""Shared fixtures: a real service on a loopback port, in a thread with its own event loop, so
that sync and asyncio clients alike can talk to it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.app import RunningServer, start_server
from server.config import ServiceConfig

# A real ArcticDB, in memory: tests that need state to survive a restart use LMDB in tmp_path.
# No trading-day closes (a close at a restart would add events between "before" and "after"):
# the P&L history's tests ask for a session.
# The latency limits are the deployment's (10 ms ack, 1 ms query by default); on a loaded
# two-core CI machine a test's own service crossed them and turned `ack_latency` NOT_SERVING
# under a test about something else. Tests of the limits set their own (test_thresholds.py).
TEST_CONFIG = ServiceConfig(
    store="mem://",
    port=0,
    heartbeat_seconds=0.2,
    grace_seconds=0.5,
    session_days="none",
    ack_p99_ms=1_000.0,
    query_p99_ms=1_000.0,
)


class ServerThread:
    """A running service on 127.0.0.1:<free port>; stop() shuts it down and joins."""

    def __init__(self, config: ServiceConfig, **start_options: object) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        try:
            self.running: RunningServer = self.call(start_server(config, **start_options))
        except BaseException:
            self._close_loop()
            raise
        self.address = f"127.0.0.1:{self.running.port}"

    def call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def stop(self, time_left: Callable[[], float] | None = None) -> None:
        """Stops as `serve` does, within `time_left` (the seconds before the stop's limit)
        when given."""
        self.call(self.running.stop(0.5, time_left))
        self._close_loop()

    def _close_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


def start_test_server(
    open_store: object = None, broker: object = None, **overrides: object
) -> ServerThread:
    options = {"open_store": open_store} if open_store else {}
    if broker is not None:
        options["broker"] = broker
    return ServerThread(replace(TEST_CONFIG, **overrides), **options)


def a_missed_close(**options: object) -> tuple[datetime, dict[str, object]]:
    """(its instant, the service options) of a session that closes every day, UTC, and closed
    five minutes ago: a service started now finds the close missed and journals it, late."""
    closed = datetime.now(UTC) - timedelta(minutes=5)
    session = {
        "session_close": closed.strftime("%H:%M"),
        "session_timezone": "UTC",
        "session_days": "all",
        **options,
    }
    return closed, session


@pytest.fixture
def server() -> Iterator[ServerThread]:
    running = start_test_server()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def server_address(server: ServerThread) -> str:
    return server.address


@pytest.fixture
def stub(server_address: str) -> Iterator[pb_grpc.PortfolioManagerStub]:
    with grpc.insecure_channel(server_address) as channel:
        yield pb_grpc.PortfolioManagerStub(channel)
