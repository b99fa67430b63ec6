"""The relay's health surface: `grpc.health.v1` on `--health-port` (off by default).

A relay that cannot see still runs, and nothing it sends says so: the service only notices
fills that never come. So the relay says it itself, on three names an alerting system can
watch, and logs one line per change of any of them:

- `tws`: connected to TWS and seeing (not blind after IB error 1100 / 2110, not hung);
- `visibility`: the relay is TWS's master API client, as far as it can tell (TWS lists
  another client's filled orders whose executions it never reports to the relay: NOT_SERVING);
  UNKNOWN until the first catch-up after a connect has checked;
- `dead_letters`: NOT_SERVING while the dead-letter file holds events (refused by the service
  or unmappable) that have not been replayed.

The overall status `""` is SERVING while the relay runs. The state is read every `period`
seconds from the relay: reading is cheap, and a health check never waits on TWS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

__all__ = ["DEAD_LETTERS", "TWS", "VISIBILITY", "RelayHealth", "Watched"]

log = logging.getLogger("portfolio.relay.health")

TWS, VISIBILITY, DEAD_LETTERS = "tws", "visibility", "dead_letters"

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_UNKNOWN = health_pb2.HealthCheckResponse.UNKNOWN


class Watched(Protocol):
    """What the health surface reads from the relay."""

    def health(self) -> dict[str, tuple[bool | None, str]]:
        """Per name: healthy (None: not known yet) and why, in words for the log."""


class RelayHealth:
    """A gRPC health server on `host:port` (port 0: any free one) reporting `watched`."""

    def __init__(
        self, watched: Watched, port: int, *, host: str = "127.0.0.1", period: float = 0.5
    ) -> None:
        self._watched = watched
        self._address = f"{host}:{port}"
        self._period = period
        self._servicer = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._last: dict[str, bool | None] = {}
        self.port = 0

    async def start(self) -> int:
        """Serves and starts watching; returns the port bound."""
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)
        self.port = server.add_insecure_port(self._address)
        await server.start()
        self._server = server
        await self._servicer.set("", _SERVING)
        await self.refresh()
        self._task = asyncio.create_task(self._watch(), name="relay health")
        log.info("relay health on %s (port %d)", self._address, self.port)
        return self.port

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        server, self._server = self._server, None
        if server is not None:
            await self._servicer.enter_graceful_shutdown()
            await server.stop(1.0)

    async def refresh(self) -> None:
        """Reads the relay now and publishes (and logs) what changed."""
        for name, (healthy, why) in self._watched.health().items():
            if name in self._last and self._last[name] is healthy:
                continue
            self._last[name] = healthy
            status = _UNKNOWN if healthy is None else _SERVING if healthy else _NOT_SERVING
            await self._servicer.set(name, status)
            log.log(
                logging.WARNING if healthy is False else logging.INFO,
                "health %s: %s (%s)",
                name,
                health_pb2.HealthCheckResponse.ServingStatus.Name(status),
                why,
            )

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._period)
            try:
                await self.refresh()
            except Exception:
                log.exception("relay health refresh failed")
