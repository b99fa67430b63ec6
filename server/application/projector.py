"""Keeps the analysts' views in step with commits, off the ack path.

Work that arrives while a write is running is coalesced into the next one, like group commit;
a failed write is kept and retried with the next, since the views only ever move forward.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from decimal import Decimal

from server.application.ports import EventStore, OrderTransition, ReconciliationRun, Sequenced
from server.domain.book import position_view
from server.domain.marks import FxRate, Mark
from server.domain.position import Position, PositionKey

log = logging.getLogger("portfolio.views")


class ViewProjector:
    def __init__(
        self,
        store: EventStore,
        executor: Executor,
        precision: Decimal,
        retry_seconds: float = 1.0,
        min_interval: float = 0.25,
    ) -> None:
        self._store = store
        self._min_interval = min_interval
        self._next_write = 0.0
        self._scheduled = False
        self._executor = executor
        self._precision = precision
        self._retry_seconds = retry_seconds
        self._events: list[Sequenced] = []
        self._transitions: list[OrderTransition] = []
        self._runs: list[ReconciliationRun] = []
        self._rows: dict[PositionKey, tuple[Position, Decimal]] = {}
        self._marks: tuple[list[Mark], list[FxRate]] | None = None
        self._running: asyncio.Future[None] | None = None
        self.failures = 0

    def submit(
        self,
        events: list[Sequenced],
        rows: list[tuple[Position, Decimal]],
        transitions: list[OrderTransition] | None = None,
        runs: list[ReconciliationRun] | None = None,
    ) -> None:
        """Committed events, copies of the rows they changed with their marks then, how
        their status changes were judged, and the reconciliation runs they made."""
        self._events.extend(events)
        self._transitions.extend(transitions or ())
        self._runs.extend(runs or ())
        for row, mark in rows:
            self._rows[row.key] = (row, mark)
        self._schedule()

    def submit_marks(self, marks: list[Mark], rates: list[FxRate]) -> None:
        """The latest marks and rates, all of them: replaces any not written yet."""
        self._marks = (marks, rates)
        self._schedule()

    def _pending(self) -> bool:
        return bool(self._events or self._rows or self._marks)

    def _schedule(self) -> None:
        """Writes now, or once `min_interval` has passed since the last write began: a burst
        of commits becomes one write per symbol, and the views thread stays out of the
        journal's way."""
        if self._running is not None or self._scheduled:
            return
        loop = asyncio.get_running_loop()
        delay = self._next_write - loop.time()
        if delay <= 0:
            self._write()
        else:
            self._scheduled = True
            loop.call_later(delay, self._scheduled_write)

    def _scheduled_write(self) -> None:
        self._scheduled = False
        if self._running is None and self._pending():
            self._write()

    async def drained(self, attempts: int = 3) -> None:
        """Writes what is pending now and waits for it (on shutdown); what still fails is
        caught up from the journal at the next start."""
        for _ in range(attempts):
            if self._running is None and self._pending():
                self._write()
            if self._running is None:
                return
            await asyncio.gather(asyncio.shield(self._running), return_exceptions=True)

    def _write(self) -> None:
        events, rows, transitions = self._events, list(self._rows.values()), self._transitions
        marks, runs = self._marks, self._runs
        self._events, self._rows, self._transitions, self._marks = [], {}, [], None
        self._runs = []
        self._next_write = asyncio.get_running_loop().time() + self._min_interval
        self._running = asyncio.get_running_loop().run_in_executor(
            self._executor, self._record, events, rows, transitions, marks, runs
        )
        self._running.add_done_callback(
            lambda done: self._written(done, events, rows, transitions, marks, runs)
        )

    def _record(
        self,
        events: list[Sequenced],
        rows: list[tuple[Position, Decimal]],
        transitions: list[OrderTransition],
        marks: tuple[list[Mark], list[FxRate]] | None,
        runs: list[ReconciliationRun],
    ) -> None:
        if events or rows:
            views = [position_view(row, mark, self._precision) for row, mark in rows]
            self._store.record_views(events, views, transitions, runs)
        if marks is not None:
            self._store.record_marks(*marks)

    def _written(
        self,
        done: asyncio.Future[None],
        events: list[Sequenced],
        rows: list[tuple[Position, Decimal]],
        transitions: list[OrderTransition],
        marks: tuple[list[Mark], list[FxRate]] | None,
        runs: list[ReconciliationRun],
    ) -> None:
        self._running = None
        if done.exception() is None:
            if self._pending():
                self._schedule()
            return
        self.failures += 1
        log.warning("views not updated, will retry: %s", done.exception())
        self._events[:0] = events
        self._transitions[:0] = transitions
        self._runs[:0] = runs
        if self._marks is None:
            self._marks = marks
        for row, mark in rows:
            self._rows.setdefault(row.key, (row, mark))
        asyncio.get_running_loop().call_later(self._retry_seconds, self._retry)

    def _retry(self) -> None:
        if self._running is None and self._pending():
            self._write()
