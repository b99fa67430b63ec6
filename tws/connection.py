"""One `ib_async.IB` connection to TWS / IB Gateway that keeps itself up.

TWS restarts daily, gateways get cut off, and a client id may still be held by a connection
that has not closed yet: so connecting is a loop, not a call. `IbConnection` connects with a
time-out, and whenever a connect attempt fails or the connection drops it tries again after an
exponential back-off (reset by every successful connect). Every transition is logged and
reported to `on_state` (the service's health), and `on_connected` callbacks run after each
(re)connect, so that users can catch up on what they missed while it was down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ib_async import IB

__all__ = ["IbConnection", "ReconnectPolicy"]

log = logging.getLogger("portfolio.broker.ib")

OnConnected = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """How long to wait before connect attempt n+1 after n consecutive failures."""

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < self.initial or self.factor < 1:
            raise ValueError(f"invalid reconnect policy {self}")

    def delay(self, failures: int) -> float:
        """Seconds to wait after `failures` (>= 1) consecutive failures or drops."""
        exponent = min(max(failures, 1) - 1, 64)
        return float(min(self.maximum, self.initial * self.factor**exponent))


def quiet_ib_async(level: int) -> None:
    """ib_async logs every message it receives at INFO: keep that for DEBUG runs."""
    if level > logging.DEBUG:
        logging.getLogger("ib_async").setLevel(logging.WARNING)


class IbConnection:
    """Owns one `IB`; `start()` returns at once and a background task keeps it connected."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 4002,
        client_id: int = 1,
        *,
        readonly: bool = True,
        connect_timeout: float = 10.0,
        account: str = "",
        reconnect: ReconnectPolicy | None = None,
        on_state: Callable[[bool], None] | None = None,
        ib: IB | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.readonly = readonly
        self.connect_timeout = connect_timeout
        self.account = account
        self.reconnect = reconnect or ReconnectPolicy()
        self._on_state = on_state
        self._on_connected: list[OnConnected] = []
        self._ib = ib or IB()
        self._up = False
        self._lost = asyncio.Event()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ib.disconnectedEvent += self._on_disconnected

    @property
    def ib(self) -> IB:
        """The `ib_async` client: its state (positions, trades, fills) and events."""
        return self._ib

    @property
    def name(self) -> str:
        return f"ib {self.host}:{self.port} client {self.client_id}"

    @property
    def connected(self) -> bool:
        """True while the API connection is up and synchronized."""
        return self._up and self._ib.isConnected()

    def add_on_connected(self, callback: OnConnected) -> None:
        """Runs `callback` after every successful (re)connect, before loss is watched for."""
        self._on_connected.append(callback)

    async def start(self) -> None:
        """Begins connecting in the background; returns at once."""
        if self._task is None:
            self._task = asyncio.create_task(self._keep_connected(), name=f"{self.name} keeper")

    async def stop(self) -> None:
        """Stops reconnecting and disconnects; safe to call twice."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._ib.disconnect() is not None:  # None: there was no connection
            log.info("disconnected from ib %s:%d (stopping)", self.host, self.port)
            await asyncio.sleep(0)  # let the transport run its connection_lost callback
        self._set_state(False)

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Until connected (raises TimeoutError after `timeout` seconds)."""
        async with asyncio.timeout(timeout):
            while not self.connected:
                await self._changed.wait()

    async def wait_disconnected(self, timeout: float | None = None) -> None:
        """Until the connection is down (raises TimeoutError after `timeout` seconds)."""
        async with asyncio.timeout(timeout):
            while self.connected:
                await self._changed.wait()

    # -----------------------------------------------------------------------------------------

    async def _keep_connected(self) -> None:
        failures = 0
        while True:
            self._lost.clear()
            try:
                await self._connect_once()
            except Exception as error:  # whatever the socket or ib_async raised: try again
                failures += 1
                delay = self.reconnect.delay(failures)
                log.warning("ib connect failed: %s; retrying in %.1f s", _describe(error), delay)
                await asyncio.sleep(delay)
                continue
            failures = 0
            self._set_state(True)
            accounts = ",".join(self._ib.managedAccounts())
            log.info(
                "connected to ib %s:%d as client %d (accounts %s)",
                self.host,
                self.port,
                self.client_id,
                accounts,
            )
            await self._run_on_connected()
            await self._lost.wait()
            self._set_state(False)
            failures = 1
            delay = self.reconnect.delay(failures)
            log.warning("ib connection lost; reconnecting in %.1f s", delay)
            await asyncio.sleep(delay)

    async def _connect_once(self) -> None:
        """One attempt. A peer that closes before the API is ready (a client id in use, a
        gateway that is starting) fails the attempt at once rather than after the time-out."""
        attempt = asyncio.ensure_future(
            self._ib.connectAsync(
                self.host,
                self.port,
                clientId=self.client_id,
                timeout=self.connect_timeout,
                readonly=self.readonly,
                account=self.account,
            )
        )
        closed = _FirstMessage()
        socket_events = self._ib.client.conn.disconnected
        socket_events += closed.record
        try:
            await asyncio.wait({attempt, closed.future}, return_when=asyncio.FIRST_COMPLETED)
            if not attempt.done():
                attempt.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await attempt
                reason = closed.future.result() or "closed by the peer before the API was ready"
                raise ConnectionError(reason)
            attempt.result()
        finally:
            socket_events -= closed.record
            closed.future.cancel()
            if not attempt.done():
                attempt.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await attempt
        if not self._ib.isConnected():
            raise ConnectionError("the connection closed while synchronizing")
        self._lost.clear()  # a drop after this point is a loss of this connection

    async def _run_on_connected(self) -> None:
        for callback in self._on_connected:
            try:
                await callback()
            except Exception:
                log.exception("ib on-connected callback %r failed", callback)

    def _on_disconnected(self) -> None:
        self._lost.set()
        self._notify()

    def _set_state(self, up: bool) -> None:
        if up == self._up:
            return
        self._up = up
        self._notify()
        if self._on_state is not None:
            try:
                self._on_state(up)
            except Exception:
                log.exception("ib on_state callback failed")

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


class _FirstMessage:
    """Holds the first message an `ib_async` event emits (a bound method, so that eventkit's
    weak reference to it lives as long as this object)."""

    def __init__(self) -> None:
        self.future: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def record(self, message: str) -> None:
        if not self.future.done():
            self.future.set_result(message)


def _describe(error: BaseException) -> str:
    text = str(error)
    if isinstance(error, TimeoutError) or not text:
        return f"{type(error).__name__} {text}".strip()
    return text
