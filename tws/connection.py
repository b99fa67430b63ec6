"""One `ib_async.IB` connection to TWS / IB Gateway that keeps itself up.

TWS restarts daily, gateways get cut off, and a client id may still be held by a connection
that has not closed yet: so connecting is a loop, not a call. `IbConnection` connects with a
time-out, and whenever a connect attempt fails or the connection drops it tries again after an
exponential back-off (reset by every successful connect). Every transition is logged and
reported to `on_state` (the service's health), and `on_connected` callbacks run after each
(re)connect, so that users can catch up on what they missed while it was down.

A connection can be up and still not see: TWS says so with error 1100 (its link to IB's
servers is lost) or 2110 (TWS to server broken), and nothing more until 1101 / 1102 (restored:
data lost / kept); meanwhile it answers from what it last knew. And a TWS that hangs keeps the
socket open and answers nothing: only a request that times out notices it, so a heartbeat
(`reqCurrentTime` every `heartbeat_seconds`) marks the link hung when no answer comes within
`heartbeat_timeout`. `seeing` is connected and neither blind nor hung; `on_state` reports its
changes, and `epoch` counts every change of what the link can see (a connect, blindness, a
restore, a hang), so that a caller can tell an answer taken across one (positions from before a
restore) from a fresh one. A restore (1101 / 1102, or a hung TWS answering again) runs the
`on_connected` callbacks too: what happened meanwhile may not have reached us.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ib_async import IB, Contract

from tws.tasks import cancel_and_wait

__all__ = ["BLINDING_ERRORS", "RESTORING_ERRORS", "IbConnection", "ReconnectPolicy"]

log = logging.getLogger("portfolio.broker.ib")

OnConnected = Callable[[], Awaitable[None]]

#: IB error codes after which TWS no longer sees IB's servers (connectivity lost; TWS to
#: server broken), and those that say it sees them again (restored: data lost / maintained).
BLINDING_ERRORS = frozenset({1100, 2110})
RESTORING_ERRORS = frozenset({1101, 1102})


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
        heartbeat_seconds: float = 10.0,
        heartbeat_timeout: float = 5.0,
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
        self._ib.errorEvent += self._on_error
        # 0: no heartbeat (the hang of a TWS is then noticed only by requests that time out).
        self.heartbeat_seconds = heartbeat_seconds
        self.heartbeat_timeout = heartbeat_timeout
        self._blind = ""  # why TWS cannot see IB's servers ("": it can)
        self._hung = False
        self._seeing = False  # as last reported to on_state
        self.epoch = 0
        #: When (time.time_ns) the link last began to see: a connect or a restore.
        self.seeing_since_ns = 0
        self._side_tasks: set[asyncio.Task[None]] = set()
        # One catch-up at a time: a restore during a connect's catch-up waits for it.
        self._catching_up = asyncio.Lock()

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

    @property
    def blind(self) -> bool:
        """TWS said it lost IB's servers (1100, 2110) and has not said they are back."""
        return bool(self._blind)

    @property
    def hung(self) -> bool:
        """The last heartbeat went unanswered within its time-out."""
        return self._hung

    @property
    def seeing(self) -> bool:
        """Connected, and neither blind nor hung: what TWS answers is current."""
        return self.connected and not self._blind and not self._hung

    @property
    def impairment(self) -> str:
        """Why the link cannot be trusted now ("" while it is `seeing`)."""
        if not self.connected:
            return "not connected"
        if self._blind:
            return f"blind since {self._blind}"
        if self._hung:
            return f"hung: no answer to a heartbeat within {self.heartbeat_timeout} s"
        return ""

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
            await cancel_and_wait([task])
        side, self._side_tasks = self._side_tasks, set()
        await cancel_and_wait(side)
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
            # A new session: TWS says again if it is blind (during the connect, at the latest).
            self._blind, self._hung = "", False
            try:
                await self._connect_once()
            except Exception as error:  # whatever the socket or ib_async raised: try again
                failures += 1
                delay = self.reconnect.delay(failures)
                log.warning("ib connect failed: %s; retrying in %.1f s", _describe(error), delay)
                await asyncio.sleep(delay)
                continue
            failures = 0
            self.epoch += 1
            self.seeing_since_ns = time.time_ns()
            self._set_state(True)
            accounts = ",".join(self._ib.managedAccounts())
            log.info(
                "connected to ib %s:%d as client %d (accounts %s)",
                self.host,
                self.port,
                self.client_id,
                accounts,
            )
            heartbeat = None
            if self.heartbeat_seconds > 0:
                heartbeat = asyncio.create_task(self._heartbeat(), name=f"{self.name} heartbeat")
            try:
                await self._run_on_connected()
                await self._lost.wait()
            finally:
                if heartbeat is not None:
                    heartbeat.cancel()
                    await asyncio.gather(heartbeat, return_exceptions=True)
            self.epoch += 1
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
                await cancel_and_wait([attempt])
                reason = closed.future.result() or "closed by the peer before the API was ready"
                raise ConnectionError(reason)
            attempt.result()
        finally:
            socket_events -= closed.record
            closed.future.cancel()
            if not attempt.done():
                await cancel_and_wait([attempt])
        if not self._ib.isConnected():
            raise ConnectionError("the connection closed while synchronizing")
        self._lost.clear()  # a drop after this point is a loss of this connection

    async def _run_on_connected(self) -> None:
        async with self._catching_up:
            for callback in self._on_connected:
                try:
                    await callback()
                except Exception:
                    log.exception("ib on-connected callback %r failed", callback)

    def _on_disconnected(self) -> None:
        self._lost.set()
        self._notify()

    def _on_error(self, req_id: int, code: int, message: str, contract: Contract | None) -> None:
        """TWS's connectivity notices (eventkit drops a handler's exception: none raised)."""
        if code in BLINDING_ERRORS:
            if not self._blind:
                log.warning("ib %s is blind: error %d: %s", self.name, code, message)
            self._blind = f"IB error {code}: {message}"
            self._changed_sight()
        elif code in RESTORING_ERRORS and self._blind:
            log.warning("ib %s sees again: error %d: %s", self.name, code, message)
            self._blind = ""
            self._restored()

    async def _heartbeat(self) -> None:
        """Asks TWS the time every `heartbeat_seconds`: a TWS that does not answer within
        `heartbeat_timeout` is hung (it keeps the socket, so nothing else would tell)."""
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                await asyncio.wait_for(self._ib.reqCurrentTimeAsync(), self.heartbeat_timeout)
            except TimeoutError:
                if not self._hung:
                    log.warning(
                        "ib %s is hung: no answer to a heartbeat within %.1f s",
                        self.name,
                        self.heartbeat_timeout,
                    )
                    self._hung = True
                    self._changed_sight()
                continue
            except ConnectionError:
                return  # the keeper sees the loss
            if self._hung:
                log.warning("ib %s answers again", self.name)
                self._hung = False
                self._restored()

    def _restored(self) -> None:
        """The link sees again: a new epoch, and the on-connected callbacks catch up."""
        self._changed_sight()
        if self.seeing:
            self.seeing_since_ns = time.time_ns()
            task = asyncio.get_running_loop().create_task(
                self._run_on_connected(), name=f"{self.name} catch-up"
            )
            self._side_tasks.add(task)
            task.add_done_callback(self._side_tasks.discard)

    def _changed_sight(self) -> None:
        self.epoch += 1
        self._report()
        self._notify()

    def _set_state(self, up: bool) -> None:
        if up == self._up:
            return
        self._up = up
        self._notify()
        self._report()

    def _report(self) -> None:
        """Tells `on_state` whether the link sees, when that changed."""
        seeing = self._up and not self._blind and not self._hung
        if seeing == self._seeing:
            return
        self._seeing = seeing
        if self._on_state is not None:
            try:
                self._on_state(seeing)
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
