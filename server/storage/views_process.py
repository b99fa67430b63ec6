"""The analysts' views written by a process of their own, on a local (LMDB) store.

Why: writing the views builds pandas frames and calls ArcticDB for milliseconds at a time; on a
thread of the service that holds the GIL against the acks (issue 12: 21-27 us of the service's
CPU per fill, and the fill -> ack p99 under load). In a process of its own it costs the service
only handing each write over: events as the journal text they already carry (built once at
admission), the few changed rows pickled.

What stays in the service: the projector (server/application/projector.py) coalesces commits
into one write a second, keeps what a failing symbol could not take and hands it over again,
logs and shows health `views`; the store's `ArcticViews` stays the analysts' read side (the
orders that left memory are read back from it) and the home of the settings (`hold_limit`,
`history_seconds`), sent with every write. Only `ArcticViews.record` and `record_close` run in
the writer, on its own `ArcticViews` over the same libraries: ArcticDB on LMDB lets several
processes open one store, and every view symbol has one writer (this process), the journal,
checkpoints and marks another (the service).

Its cursor is the views' own watermark (`checkpoints/views_through`) and each symbol's last
sequence, read by the writer when it starts: a write handed over again (a writer that died
mid-write, a service restart catching up from the watermark) writes no row twice, and the
projector keeps every write until the writer has answered it, so none is lost.

Supervision: a writer that dies is restarted by the next write (and by `check`, which the
service runs every second); its death is logged once with its exit code and last error, and
the write it took fails as a whole (StorageUnavailable), so the projector shows it on health
`views`, keeps the batch and retries with back-off. A writer whose service died ends when its
pipe closes; a new one waits for the old one's lock on `portfolio-views.lock` (two writers of
one symbol would lose rows without an error). Stopping asks it to finish once the projector's
last write is done and waits `timeout` seconds, then ends it (nothing is lost: the watermark
says where the next start catches up). A service stopped before its writer has opened the
views (a second or two after its start) ends that writer, which never got a request, and
writes its last views itself, as on a thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from arcticdb.config import set_config_int

from server.application.ports import (
    OrderTransition,
    ReconciliationRun,
    Sequenced,
    StorageUnavailable,
    ViewsIncomplete,
)
from server.domain.balances import Balance, BalanceKey
from server.domain.book import PositionView
from server.domain.events import EVENT_KINDS, JournaledEvent
from server.log_format import configure_logging

log = logging.getLogger("portfolio.views")

LOCK_FILE = "portfolio-views.lock"
READY_SECONDS = 120.0  # a writer that has not opened the store by then is ended and retried
FIRST_RESTART, LAST_RESTART = 1.0, 60.0  # seconds between restarts of a writer that keeps dying
POLL_SECONDS = 0.25  # how often a wait for the writer checks it is still alive

# An event handed over: (sequence, kind, journal text), or (sequence, "", the event) for one
# without a journal text (none today; pickled as it is).
Encoded = tuple[int, str, object]


def local_folder(uri: str) -> Path | None:
    """The folder of an LMDB store (None for any other: mem:// cannot be shared by two
    processes, and on an object store the writer lease is the service's alone)."""
    if not uri.startswith("lmdb://"):
        return None
    return Path(urlsplit(uri).path)


def encode_events(events: Iterable[Sequenced]) -> list[Encoded]:
    return [
        (sequence, event.kind, event.text())
        if isinstance(event, JournaledEvent) and event.kind in EVENT_KINDS
        else (sequence, "", event)
        for sequence, event in events
    ]


def decode_events(encoded: Iterable[Encoded]) -> list[Sequenced]:
    return [
        (sequence, EVENT_KINDS[kind].from_text(str(item)) if kind else item)  # type: ignore[misc]
        for sequence, kind, item in encoded
    ]


def encode_balances(balances: Iterable[Balance]) -> list[tuple[object, ...]]:
    """Balances as plain tuples (their key, a tuple with its own constructor, does not
    pickle)."""
    return [
        (*balance.key, balance.cash, balance.reserved, balance.updated_at_ns,
         balance.last_sequence)
        for balance in balances
    ]  # fmt: skip


def decode_balances(encoded: Iterable[tuple[Any, ...]]) -> list[Balance]:
    return [
        Balance(BalanceKey(account_id, currency, chain_id), cash, reserved, updated, last)
        for account_id, currency, chain_id, cash, reserved, updated, last in encoded
    ]


def _incomplete_fields(error: ViewsIncomplete) -> dict[str, object]:
    """What the service needs of a ViewsIncomplete (its keyword-only constructor does not
    pickle): events and runs by sequence, the service puts back its own objects."""
    return {
        "failing": error.failing,
        "skipped": error.skipped,
        "events": [sequence for sequence, _ in error.events],
        "keys": error.keys,
        "runs": [run.reconciliation.sequence for run in error.runs],
        "retry_in": error.retry_in,
    }


class ViewsWriterDied(StorageUnavailable):
    """The writer process ended during a write (its rows are handed over again)."""


class ViewsProcess:
    """The service's end of the views writer: starts it, hands it each write and waits for its
    answer (on the projector's thread, the GIL released while waiting), restarts it if it died.
    """

    def __init__(
        self,
        uri: str,
        ready_seconds: float = READY_SECONDS,
        *,
        log_level: str = "info",
        log_format: str = "text",
    ) -> None:
        self.uri = uri
        self._logs = (log_level, log_format)  # the service's (--log-level, --log-format)
        self._context = multiprocessing.get_context("spawn")
        self._process: BaseProcess | None = None
        self._connection: multiprocessing.connection.Connection | None = None
        self._ready = False
        self._ready_seconds = ready_seconds
        self._lock = threading.Lock()  # one write at a time, and no restart during one
        self._stopped = False
        # Set at a stop: a writer still starting is not waited for.
        self._stop_deadline: float | None = None
        self._deaths = 0  # since the last answered write
        self._next_start = 0.0  # time.monotonic() before which no writer is started
        self.restarts = 0
        self.last_death = ""  # why the writer last ended unasked ("" while it never did)
        self._logged = ""  # the death cause logged last (logged once while it repeats)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Starts the writer without waiting for it (it opens the store meanwhile). From now
        on this process reads the views' versions afresh every time (ArcticDB caches them for
        a few seconds otherwise, and the writer prunes older ones: a cached version would no
        longer be there to read)."""
        set_config_int("VersionMap.ReloadInterval", 0)
        if self._process is not None and self._process.is_alive():
            return
        ours, theirs = self._context.Pipe()
        process = self._context.Process(
            target=run_writer,
            args=(self.uri, theirs, *self._logs),
            name="portfolio-views",
            daemon=True,
        )
        process.start()
        theirs.close()
        self._process, self._connection, self._ready = process, ours, False

    def check(self) -> bool:
        """Restarts a writer that ended unasked (logging why, once); True when it runs. Does
        not wait for a write in progress (which finds a dead writer itself)."""
        if not self._lock.acquire(blocking=False):
            return True
        try:
            if self._stopped or self._stop_deadline is not None:
                return False
            if self._process is not None and not self._process.is_alive():
                self._died()
            if self._process is None and time.monotonic() >= self._next_start:
                self.restarts += 1
                self.start()
            return self._process is not None
        finally:
            self._lock.release()

    def record(
        self,
        settings: dict[str, Any],
        events: Sequence[Sequenced],
        positions: Iterable[PositionView],
        transitions: Iterable[OrderTransition],
        runs: Sequence[ReconciliationRun],
        balances: Iterable[Balance],
    ) -> None:
        """ArcticViews.record, in the writer."""
        message = (
            "record", settings, encode_events(events), list(positions), list(transitions),
            list(runs), encode_balances(balances),
        )  # fmt: skip
        answer = self._call(message)
        if answer[0] == "incomplete":
            fields: dict[str, Any] = answer[1]
            left = set(fields["events"])
            runs_left = set(fields["runs"])
            raise ViewsIncomplete(
                failing=fields["failing"],
                skipped=fields["skipped"],
                events=[item for item in events if item[0] in left],
                keys=fields["keys"],
                runs=[run for run in runs if run.reconciliation.sequence in runs_left],
                retry_in=fields["retry_in"],
            )

    def record_close(
        self,
        settings: dict[str, Any],
        close_ns: int,
        positions: Iterable[PositionView],
        balances: Iterable[Balance],
    ) -> None:
        """ArcticViews.record_close, in the writer."""
        self._call(("close", settings, close_ns, list(positions), encode_balances(balances)))

    def _call(self, message: tuple[object, ...]) -> tuple[Any, ...]:
        with self._lock:
            if self._stopped:
                raise StorageUnavailable("the views writer is stopped")
            if self._process is not None and not self._process.is_alive():
                self._died()
            if self._process is None:
                wait = self._next_start - time.monotonic()
                if wait > 0 or self._stop_deadline is not None:
                    raise ViewsWriterDied(
                        f"views writer process ended ({self.last_death}); restarting in"
                        f" {max(wait, 0):.0f} s"
                    )
                self.restarts += 1
                self.start()
            try:
                self._wait_ready()
                assert self._connection is not None
                self._connection.send(message)
                answer = self._receive(None)
            except (OSError, EOFError) as error:  # the pipe broke: the writer is gone
                self._died(f"{type(error).__name__}: {error}")
                raise ViewsWriterDied(f"views writer process ended: {self.last_death}") from None
        if answer[0] == "error":
            raise StorageUnavailable(str(answer[1]))
        self._deaths = 0
        if self._logged and answer[0] != "error":
            log.info("views writer process writing again")
            self._logged = ""
        return answer

    def _wait_ready(self) -> None:
        if self._ready:
            return
        answer = self._receive(self._ready_seconds)
        if answer[0] != "ready":
            self._died(str(answer[1]) if len(answer) > 1 else repr(answer))
            raise ViewsWriterDied(f"views writer process did not start: {self.last_death}")
        self._ready = True

    def _receive(self, timeout: float | None) -> tuple[Any, ...]:
        """The writer's next message; ViewsWriterDied if it ends (or times out) first."""
        connection, process = self._connection, self._process
        assert connection is not None and process is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while not connection.poll(POLL_SECONDS):
            if not process.is_alive():
                if connection.poll(0):  # its last words (a fatal error) came before it ended
                    break
                self._died()
                raise ViewsWriterDied(f"views writer process ended: {self.last_death}")
            if not self._ready and self._stop_deadline is not None:
                self._end_unstarted()
                raise ViewsWriterDied("the service stops before the views writer started")
            if deadline is not None and time.monotonic() > deadline:
                process.kill()
                process.join(5)
                self._died(f"not ready after {timeout:.0f} s")
                raise ViewsWriterDied(f"views writer process ended: {self.last_death}")
        answer: tuple[Any, ...] = connection.recv()
        if answer[0] == "fatal":  # it is ending: why
            process.join(5)
            self._died(str(answer[1]))
            raise ViewsWriterDied(f"views writer process ended: {self.last_death}")
        return answer

    def _died(self, cause: str = "") -> None:
        """Notes a writer that ended unasked (logged once per cause); the next write starts
        another."""
        process = self._process
        if process is not None:
            process.join(1)
            code = process.exitcode
            if code is None:
                process.kill()
                process.join(5)
                code = process.exitcode
            ended = (
                f"killed by signal {signal.Signals(-code).name}"
                if code is not None and code < 0
                else f"exit code {code}"
            )
            cause = f"{ended}: {cause}" if cause else ended
        if self._connection is not None:
            self._connection.close()
        self._process = self._connection = None
        self._ready = False
        self._deaths += 1
        delay = min(FIRST_RESTART * 2 ** (self._deaths - 1), LAST_RESTART)
        self._next_start = time.monotonic() + delay
        self.last_death = cause
        if cause != self._logged and not self._stopped:  # not ended by a stop
            log.error("views writer process ended (%s); restarting it", cause)
            self._logged = cause

    def takes_writes(self) -> bool:
        """False once the service is stopping while the writer has not opened the views yet
        (a service stopped within a second or two of its start): that writer is ended, and
        the caller writes the views itself, as on a thread, rather than wait for it."""
        with self._lock:
            if self._stop_deadline is None or self._ready:
                return True
            connection, process = self._connection, self._process
            if connection is not None and process is not None and connection.poll(0):
                with contextlib.suppress(EOFError, OSError):
                    self._ready = connection.recv()[0] == "ready"
                if self._ready:
                    return True
            self._end_unstarted()
            return False

    def _end_unstarted(self) -> None:
        """Ends a writer that has not opened the views at a stop (nothing to lose: it never
        got a request); no other is started."""
        process, connection = self._process, self._connection
        self._stopped = True
        self._process = self._connection = None
        if process is not None:
            process.kill()
            process.join(5)
        if connection is not None:
            connection.close()

    def stopping(self) -> None:
        """The service is stopping: a writer still starting is not waited for (the service's
        last views write is then its own, see takes_writes), and none is started again."""
        self._stop_deadline = time.monotonic()

    def stop(self, timeout: float) -> bool:
        """Asks the writer to end and waits up to `timeout` s (then ends it); True if it ended
        on its own. Called after the projector's last write, or with 0 when that write did
        not finish in time: the thread waiting for it then gets ViewsWriterDied at once."""
        acquired = self._lock.acquire(timeout=max(timeout, 0.0))
        try:
            self._stopped = True
            process, connection = self._process, self._connection
            self._process = self._connection = None
            if process is None:
                return True
            if connection is not None and timeout > 0:  # (a hung writer's pipe may be full)
                with contextlib.suppress(OSError):
                    connection.send(("stop",))
            process.join(timeout)
            ended = not process.is_alive()
            if not ended:
                if timeout > 0:
                    log.warning("views writer process did not stop within %.1f s: ending it",
                                timeout)  # fmt: skip
                process.kill()
                process.join(5)
            if connection is not None:
                connection.close()
            return ended
        finally:
            if acquired:
                self._lock.release()


# -- the writer process ----------------------------------------------------------------------


def _lock_folder(folder: Path) -> int:
    """Waits for the views' lock (a writer of an earlier service may still be ending)."""
    folder.mkdir(parents=True, exist_ok=True)
    handle = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(handle, fcntl.LOCK_EX)
    os.ftruncate(handle, 0)
    os.write(handle, str(os.getpid()).encode())
    return handle


def run_writer(
    uri: str,
    connection: multiprocessing.connection.Connection,
    log_level: str = "info",
    log_format: str = "text",
) -> None:
    """The writer's life: opens the views, then writes what it is handed until asked to stop
    or until the service is gone (its pipe closed). It logs as the service does (its lines
    share the service's stderr, where a shipper may read JSON), named `views writer`."""
    configure_logging(log_level, log_format, force=True, process="views writer")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the group: the service
    # stops us once its last write is done
    try:
        views = _open(uri)
    except BaseException as error:
        with contextlib.suppress(OSError):
            connection.send(("fatal", f"cannot open the views: {type(error).__name__}: {error}"))
        raise SystemExit(1) from None
    log.info("views writer process %d: the views are open", os.getpid())
    connection.send(("ready", os.getpid()))
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return  # the service is gone
        except Exception as error:  # a request that does not unpickle: refused, not fatal
            connection.send(("error", f"views writer: bad request: {error!r}"))
            continue
        if message[0] == "stop":  # the projector's last write is done
            views.flush_history()
            return
        connection.send(_handle(views, message))


def _open(uri: str) -> Any:
    import arcticdb as adb

    from server.storage.disk import DiskGuard
    from server.storage.gate import gate_writes
    from server.storage.views import ArcticViews

    folder = local_folder(uri)
    if folder is None:
        raise ValueError(f"the views writer needs a local store, not {uri.split('?')[0]}")
    _lock_folder(folder)
    disk = DiskGuard(folder)
    arctic = adb.Arctic(uri)
    gate_writes(arctic, disk.check, disk.failed)  # LMDB must never see a failed commit
    views = ArcticViews(arctic)
    views.saved_through()  # a new writer never stores a watermark below the one stored
    return views


def _handle(views: Any, message: tuple[Any, ...]) -> tuple[object, ...]:
    try:
        kind, settings = message[0], message[1]
        views.hold_limit = settings["hold_limit"]
        views.history_seconds = settings["history_seconds"]
        if kind == "record":
            _, _, events, positions, transitions, runs, balances = message
            views.record(
                decode_events(events), positions, transitions, runs, decode_balances(balances)
            )
        elif kind == "close":
            _, _, close_ns, positions, balances = message
            views.record_close(close_ns, positions, decode_balances(balances))
        else:
            return ("error", f"unknown request {kind!r}")
    except ViewsIncomplete as error:
        return ("incomplete", _incomplete_fields(error))
    except Exception as error:
        lines = str(error).strip().splitlines()
        return ("error", f"{type(error).__name__}: {lines[0][:300] if lines else ''}")
    return ("ok",)
