"""The relay's health surface: `grpc.health.v1` on `--health-port` (off by default).

A relay that cannot see still runs, and nothing it sends says so: the service only notices
fills that never come. So the relay says it itself, on three names an alerting system can
watch, and logs one line per change of any of them:

- `tws`: connected to TWS and seeing (not blind after IB error 1100 / 2110, not hung);
- `visibility`: the relay is TWS's master API client, as far as it can tell (TWS lists
  another client's filled orders whose executions it never reports to the relay: NOT_SERVING);
  UNKNOWN until the first catch-up after a connect has checked;
- `dead_letters`: NOT_SERVING while the dead-letter file holds events (refused by the service
  or unmappable) that have not been replayed;
- `authorization`: NOT_SERVING while the service refuses the relay's ingest calls for its
  credentials (UNAUTHENTICATED: no or an unknown token or certificate; PERMISSION_DENIED: a
  principal without the relay role or the account), until an ingest succeeds; UNKNOWN until
  the service first answered one. The events wait in the outbox and are retried with back-off,
  so a corrected auth file on the service takes effect without a restart of the relay.

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

from client import PortfolioError

__all__ = [
    "AUTHORIZATION",
    "DEAD_LETTERS",
    "TWS",
    "VISIBILITY",
    "Refusals",
    "RelayHealth",
    "Watched",
    "is_refusal",
]

log = logging.getLogger("portfolio.relay.health")

TWS, VISIBILITY, DEAD_LETTERS = "tws", "visibility", "dead_letters"
AUTHORIZATION = "authorization"

#: The service's answers that mean "not you" (credentials, role, account), not "not now".
_REFUSING = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})

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


def is_refusal(error: BaseException) -> bool:
    """Whether the service refused the caller's credentials (not an outage: it answered)."""
    return isinstance(error, PortfolioError) and error.code in _REFUSING


class Refusals:
    """Whether the service refuses one kind of call for the caller's credentials.

    A refusal is not an outage and retrying does not cure it (an operator has to fix the auth
    file or the credentials), but retrying is right: once fixed, what waited goes through and
    nothing is lost. So it is said at ERROR once when it starts (or its status changes), once
    at INFO when it clears, counted, and shown on health; the retries in between are quiet.
    """

    def __init__(self, what: str, logger: logging.Logger) -> None:
        #: What is refused, for the log: "the relay's events".
        self._what = what
        self._log = logger
        #: The standing refusal, None while accepted (or not known).
        self.refusal: PortfolioError | None = None
        #: Calls refused since the start.
        self.count = 0
        self._answered = False

    def refused(self, error: PortfolioError, consequence: str) -> None:
        """Records a refusal; `consequence` says what happens to what was refused."""
        self.count += 1
        changed = self.refusal is None or self.refusal.code != error.code
        self.refusal = error
        self._answered = True
        self._log.log(
            logging.ERROR if changed else logging.DEBUG,
            "portfolio service refuses %s: %s; %s (fix the credentials or the principal's role "
            "in the service's auth file)",
            self._what,
            error,
            consequence,
        )

    def accepted(self, state: str = "") -> None:
        """Records a call that went through (clears a refusal, said once)."""
        self._answered = True
        if self.refusal is None:
            return
        self.refusal = None
        self._log.info(
            "portfolio service accepts %s again after %d refusals%s",
            self._what,
            self.count,
            f"; {state}" if state else "",
        )

    def health(self) -> tuple[bool | None, str]:
        """For the health surface: refused (False), accepted (True), not known yet (None)."""
        if self.refusal is not None:
            return False, f"the service refuses {self._what}: {self.refusal}"
        if not self._answered:
            return None, f"the service has not answered for {self._what} yet"
        return True, f"the service accepts {self._what}"
