"""One writer per store: two ArcticDB writers to one symbol silently lose acknowledged rows."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
import uuid
from pathlib import Path
from typing import IO

import arcticdb as adb
import pandas as pd

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


class WriterLease:
    """One writer per store where there is no file to lock (object storage): a lease record in
    the store, renewed every `renew_seconds`; a service finding another's fresh lease refuses
    to start. Taking the lease re-reads it after the store's read cache has expired, so two
    services started together do not both win."""

    SYMBOL = "writer"

    def __init__(self, library: adb.library.Library, renew_seconds: float = 5.0) -> None:
        self.library = library
        self.renew_seconds = renew_seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        holder = self._holder()
        if holder is not None:
            raise StoreLocked(holder)
        self.renew()
        time.sleep(CACHE_SECONDS)
        holder = self._holder()
        if holder is not None:
            raise StoreLocked(holder)

    def _holder(self) -> str | None:
        """A description of another service's live lease, or None."""
        if not self.library.has_symbol(self.SYMBOL):
            return None
        lease = self.library.read_metadata(self.SYMBOL).metadata or {}
        age = time.time() - float(lease.get("renewed_at", 0))
        if lease.get("owner") in (None, self.owner) or age > 3 * self.renew_seconds:
            return None
        return (
            f"another portfolio manager ({lease['owner']}) is writing to this store (lease "
            f"renewed {age:.1f}s ago); one writer per store: stop it first"
        )

    def renew(self) -> None:
        lease = {"owner": self.owner, "renewed_at": time.time()}
        if self.library.has_symbol(self.SYMBOL):
            self.library.write_metadata(self.SYMBOL, lease, prune_previous_versions=True)
        else:
            self.library.write(self.SYMBOL, pd.DataFrame(), metadata=lease)

    def release(self) -> None:
        with contextlib.suppress(Exception):
            self.library.write_metadata(
                self.SYMBOL, {"owner": None, "renewed_at": 0}, prune_previous_versions=True
            )
