"""One writer per store: two ArcticDB writers to one symbol silently lose acknowledged rows."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO


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
