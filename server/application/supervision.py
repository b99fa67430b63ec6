"""Watches the service's long-lived background tasks (the group commit, housekeeping,
reconciliation).

A task that dies leaves the service looking alive while it acknowledges nothing: the worst
kind of failure for a system others trust with their fills. So a task that ends with an error,
or ends at all while the service runs, is logged once with its cause, turns health NOT_SERVING
and sets `failed`, on which the process stops with a non-zero exit for its supervisor to
restart it from the journal.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("portfolio.supervision")


class Supervision:
    def __init__(self, on_failure: Callable[[str], None] = lambda cause: None) -> None:
        self.failed = asyncio.Event()
        self.cause = ""
        self._on_failure = on_failure

    def watch(self, task: asyncio.Task[Any]) -> None:
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return  # stopped on purpose
        error = task.exception()
        cause = (
            f"background task {task.get_name()!r} failed: {error!r}"
            if error is not None
            else f"background task {task.get_name()!r} ended on its own"
        )
        if self.failed.is_set():
            log.error("%s (the service is already stopping)", cause)
            return
        # The traceback, once: the task's own handler may have logged it already.
        log.critical("%s; the service stops and exits non-zero", cause, exc_info=error)
        self.cause = cause
        self.failed.set()
        self._on_failure(cause)
