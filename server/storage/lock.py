"""One writer per store: two ArcticDB writers to one symbol silently lose acknowledged rows."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Any

import arcticdb as adb
import pandas as pd

from server.application.ports import StorageUnavailable, WriterFenced

log = logging.getLogger("portfolio.storage")

CACHE_SECONDS = 2.5  # a Library serves a symbol's latest version from a cache for about 2 s


class StoreLocked(RuntimeError):
    """Another service already writes to this store."""


class WriterLock:
    """An exclusive lock on a local store folder, held for the life of the process; the
    operating system releases it when the process ends, however it ends."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "portfolio-writer.lock"
        self._file: IO[str] = open(self.path, "a+")  # noqa: SIM115 (held until release)
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "unknown"
            self._file.close()
            raise StoreLocked(
                f"another portfolio manager (pid {holder}) is writing to {folder}; "
                "one writer per store: stop it first"
            ) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(str(os.getpid()))
        self._file.flush()

    def release(self) -> None:
        if not self._file.closed:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()


def lease_seconds() -> float:
    """The writer lease's renewal period on object storage: PORTFOLIO_LEASE_SECONDS, default
    5 s (a lease lapses after three periods without renewal; tests shorten it)."""
    text = os.environ.get("PORTFOLIO_LEASE_SECONDS", "5")
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < 3600:
        raise RuntimeError(f"PORTFOLIO_LEASE_SECONDS={text!r}: give seconds, such as 5")
    return seconds


class WriterLease:
    """One writer per store where there is no file to lock (object storage): a lease record in
    the store, renewed every `renew_seconds`; a service finding another's fresh lease refuses
    to start. Taking the lease re-reads it after the store's read cache has expired, so two
    services started together do not both win. A thread of its own renews it (from taking it
    on), so neither a long recovery at start nor a busy journal thread lets it lapse.

    Fencing: each holder's record carries an epoch one above the last, and `check` runs
    before every journal append. A writer that was paused (not dead) past its lease finds
    another's record, or its own lease lapsed by its own clock, and stops for good
    (WriterFenced): it never appends again and never renews over the new holder's record.
    It stops one period before others may take over (three periods), so clock drift between
    hosts and an append in flight stay inside the lease. What this cannot close: a pause
    inside one append call (after the check) that outlasts the lease; ArcticDB's refusal of an
    append that does not continue the journal's sequence index guards most of that case."""

    SYMBOL = "writer"
    LAPSE_PERIODS = 3  # others may take the lease after this many periods without renewal
    STOP_PERIODS = 2  # ...and the holder stops writing after this many

    def __init__(self, library: adb.library.Library, renew_seconds: float = 5.0) -> None:
        self.library = library
        self.renew_seconds = renew_seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._fenced = ""
        lease = self._read()
        holder = self._holder(lease)
        if holder is not None:
            raise StoreLocked(holder)
        self.epoch = int(lease.get("epoch", 0)) + 1
        self._write()
        time.sleep(CACHE_SECONDS)
        lease = self._read()
        holder = self._holder(lease)
        if holder is not None:
            raise StoreLocked(holder)
        if lease.get("owner") != self.owner:
            raise StoreLocked("another portfolio manager took this store's lease at the same time")
        self._write()
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._keep, name="writer-lease", daemon=True)
        self._renewer.start()

    def _keep(self) -> None:
        failing = False
        while not self._stop.wait(self.renew_seconds):
            try:
                self.renew()
                if failing:
                    log.info("writer lease renewed again")
                failing = False
            except WriterFenced as error:
                log.critical("%s", error)
                return
            except Exception as error:  # the next period tries again; logged once a streak
                if not failing:
                    log.warning("writer lease not renewed: %s", error)
                failing = True

    def _read(self) -> dict[str, Any]:
        if not self.library.has_symbol(self.SYMBOL):
            return {}
        return dict(self.library.read_metadata(self.SYMBOL).metadata or {})

    def _holder(self, lease: dict[str, Any]) -> str | None:
        """A description of another service's live lease, or None."""
        age = time.time() - float(lease.get("renewed_at", 0))
        if (
            lease.get("owner") in (None, self.owner)
            or age > self.LAPSE_PERIODS * self.renew_seconds
        ):
            return None
        return (
            f"another portfolio manager ({lease['owner']}) is writing to this store (lease "
            f"renewed {age:.1f}s ago); one writer per store: stop it first"
        )

    def _write(self) -> None:
        started = time.monotonic()
        lease = {"owner": self.owner, "renewed_at": time.time(), "epoch": self.epoch}
        if self.library.has_symbol(self.SYMBOL):
            self.library.write_metadata(self.SYMBOL, lease, prune_previous_versions=True)
        else:
            self.library.write(self.SYMBOL, pd.DataFrame(), metadata=lease)
        self._renewed = started  # the lease runs from before the write, to be safe

    def check(self) -> None:
        """Raises WriterFenced once this service may no longer write (for good), and
        StorageUnavailable when the lease cannot be read now."""
        self.check_held()
        try:
            lease = self._read()
        except Exception as error:  # ArcticDB and the network raise their own
            raise StorageUnavailable(f"writer lease unreadable: {error}") from error
        if lease.get("owner") != self.owner or lease.get("epoch") != self.epoch:
            self._fence(
                f"writer lease lost: {lease.get('owner')} holds it now (epoch "
                f"{lease.get('epoch')}, ours was {self.epoch})"
            )

    def check_held(self) -> None:
        """`check` without reading the record (for writes other than the journal's): raises
        WriterFenced once fenced, or once the lease lapsed by this process's own clock."""
        if self._fenced:
            raise WriterFenced(self._fenced)
        age = time.monotonic() - self._renewed
        if age > self.STOP_PERIODS * self.renew_seconds:
            self._fence(f"writer lease lapsed: not renewed for {age:.1f}s")

    def _fence(self, why: str) -> None:
        self._fenced = f"{why}; this service may never write to the store again"
        raise WriterFenced(self._fenced)

    def renew(self) -> None:
        self.check()
        self._write()

    def release(self) -> None:
        self._stop.set()
        self._renewer.join(timeout=10)  # a renewal in flight must not outlive the release
        if self._fenced:
            return  # the record is another's now
        with contextlib.suppress(Exception):
            self.library.write_metadata(
                self.SYMBOL,
                {"owner": None, "renewed_at": 0, "epoch": self.epoch},
                prune_previous_versions=True,
            )
