"""Room to write on a local (LMDB) store: ArcticDB must never see a failed LMDB commit.

Measured with arcticdb 6.28.2 on tmpfs and ext4 (see tests/storage/test_disk_full.py): once an
LMDB commit has failed ("No space left on device", "Input/output error"), the process's heap is
corrupted. Retrying the append crashes it (SIGSEGV), before or after space is freed; so do a
read followed by garbage collection, reopening the library (SIGABRT "double free"), and even a
normal interpreter exit. Nothing in the process can touch ArcticDB again, so:

- every write to an LMDB library first checks that its filesystem is writable and keeps a
  reserve free (one `statvfs` and one empty write, microseconds), and refuses with
  StorageUnavailable without calling ArcticDB; the committer's retries then only repeat that
  check, and the service resumes by itself once space comes back;
- a commit that fails anyway (the disk filled between the check and the commit, an I/O error)
  ends the process at once with one line and exit code 74, before anything touches the
  corrupted heap; nothing acknowledged is lost (the group did not land; the relay resends it),
  and a supervisor restarts the service, which refuses to start until the store is usable.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from server.application.ports import StorageUnavailable

log = logging.getLogger("portfolio.storage")

MAX_RESERVE_BYTES = 64 * 1024 * 1024  # kept free for one write (a checkpoint, a compaction)
RESERVE_FRACTION = 0.05  # ... or this share of a small filesystem, whichever is less
EXIT_STORE_BROKEN = 74  # EX_IOERR
PROBE = "portfolio-writer.lock"  # the writer lock's file (lock.py): there while we write


class StoreUnusable(StorageUnavailable):
    """The store cannot be opened for writing (full, read-only, not permitted); the message
    names the path and the cause."""


class DiskGuard:
    """Checks a local store's filesystem before each write; see the module's docstring."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._probe: int | None = None  # a file of the store's, for an empty write
        self._passed_at = float("-inf")  # monotonic time of the last check that passed

    def problem(self) -> str | None:
        """Why a write must not be tried now, or None."""
        probe = self.folder
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent  # a store not created yet: its parent's filesystem
        try:
            stats = os.statvfs(probe)
        except OSError as error:
            return f"cannot inspect {probe}: {error.strerror}"
        if stats.f_flag & os.ST_RDONLY:
            return f"read-only filesystem at {self.folder}"
        if probe == self.folder:
            refused = self._write_refused()
            if refused:
                return refused
        free = stats.f_bavail * stats.f_frsize
        reserve = min(MAX_RESERVE_BYTES, int(stats.f_blocks * stats.f_frsize * RESERVE_FRACTION))
        if free <= reserve:
            return f"disk full: {free} bytes free at {self.folder} (keeps {reserve} free)"
        return None

    def _write_refused(self) -> str | None:
        """An empty write to a file of the store's: refused on a filesystem that errors
        turned read-only (ext4 `errors=remount-ro` shows as "emergency_ro", which statvfs
        does not report), or on a folder this user may not write to."""
        try:
            if self._probe is None:
                flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
                self._probe = os.open(self.folder / PROBE, flags, 0o644)
            os.pwrite(self._probe, b"", 0)
        except OSError as error:
            return f"cannot write to {self.folder}: {error.strerror}"
        return None

    def close(self) -> None:
        if self._probe is not None:
            os.close(self._probe)
            self._probe = None

    def check(self, max_age: float = 0.0) -> None:
        """Refuses (StorageUnavailable) a write the filesystem cannot take now. With `max_age`,
        a check passed less than that many seconds ago stands: for writes that a full disk
        fails safely (the write-ahead log's, a plain file cut back on error), where three
        system calls per write would each hand the GIL away and wait to take it back."""
        if max_age and time.monotonic() - self._passed_at < max_age:
            return
        problem = self.problem()
        if problem:
            self._passed_at = float("-inf")
            raise StorageUnavailable(problem)
        self._passed_at = time.monotonic()

    def failed(self, error: Exception) -> None:
        """After a write's error: a failed LMDB commit ends the process (see above)."""
        if "lmdb::" in str(error):
            stop_process(self.folder, error)


def stop_process(folder: Path, error: BaseException) -> None:
    """Ends the process now: after a failed LMDB commit, running on (or exiting normally)
    crashes it."""
    message = (
        f"store {folder} failed a write ({error}); ArcticDB cannot be used again in this "
        f"process: exiting with code {EXIT_STORE_BROKEN} (acknowledged events are kept; "
        "restart once the store is writable)"
    )
    log.critical("%s", message)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(EXIT_STORE_BROKEN)
