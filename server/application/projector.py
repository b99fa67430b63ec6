"""Keeps the analysts' views in step with commits, off the ack path.

Work that arrives while a write is running is coalesced into the next one, like group commit;
a failed write is kept and retried with the next, since the views only ever move forward.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from decimal import Decimal

from server.application.ports import EventStore, Sequenced
from server.domain.book import position_view
from server.domain.position import Position, PositionKey

log = logging.getLogger("portfolio.views")


class ViewProjector:
    def __init__(
        self, store: EventStore, executor: Executor, precision: Decimal, retry_seconds: float = 1.0
    ) -> None:
        self._store = store
        self._executor = executor
        self._precision = precision
        self._retry_seconds = retry_seconds
        self._events: list[Sequenced] = []
        self._rows: dict[PositionKey, tuple[Position, Decimal]] = {}
        self._running: asyncio.Future[None] | None = None
        self.failures = 0

    def submit(self, events: list[Sequenced], rows: list[tuple[Position, Decimal]]) -> None:
        """Committed events, and copies of the rows they changed with their marks then."""
        self._events.extend(events)
        for row, mark in rows:
            self._rows[row.key] = (row, mark)
        if self._running is None:
            self._write()

    async def drained(self) -> None:
        while self._running is not None:
            await asyncio.shield(self._running)

    def _write(self) -> None:
        events, rows = self._events, list(self._rows.values())
        self._events, self._rows = [], {}
        self._running = asyncio.get_running_loop().run_in_executor(
            self._executor, self._record, events, rows
        )
        self._running.add_done_callback(lambda done: self._written(done, events, rows))

    def _record(self, events: list[Sequenced], rows: list[tuple[Position, Decimal]]) -> None:
        views = [position_view(row, mark, self._precision) for row, mark in rows]
        self._store.record_views(events, views)

    def _written(
        self,
        done: asyncio.Future[None],
        events: list[Sequenced],
        rows: list[tuple[Position, Decimal]],
    ) -> None:
        self._running = None
        if done.exception() is None:
            if self._events or self._rows:
                self._write()
            return
        self.failures += 1
        log.warning("views not updated, will retry: %s", done.exception())
        self._events[:0] = events
        for row, mark in rows:
            self._rows.setdefault(row.key, (row, mark))
        asyncio.get_running_loop().call_later(self._retry_seconds, self._retry)

    def _retry(self) -> None:
        if self._running is None and (self._events or self._rows):
            self._write()
