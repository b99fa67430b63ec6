"""Keeps the analysts' views in step with commits, off the ack path.

Work that arrives while a write is running is coalesced into the next one, like group commit.
The store writes each view symbol on its own: what one failing symbol could not take is kept
and handed over again when that symbol's back-off ends, while every other symbol goes on (the
views only ever move forward, and a row written twice is written once). A failure is logged
once when it starts, with its cause, and once when it ends; `failing_symbols` and `healthy`
say what is wrong now, and `on_health` hears when that changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Executor
from decimal import Decimal

from server.application.ports import (
    EventStore,
    OrderTransition,
    ReconciliationRun,
    Sequenced,
    ViewsIncomplete,
)
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
        max_retry_seconds: float = 60.0,
    ) -> None:
        self._store = store
        self._min_interval = min_interval
        self._next_write = 0.0
        self._scheduled = False
        self._executor = executor
        self._precision = precision
        self._retry_seconds = retry_seconds
        self._max_retry_seconds = max_retry_seconds
        self._events: list[Sequenced] = []
        self._transitions: list[OrderTransition] = []
        self._runs: list[ReconciliationRun] = []
        self._rows: dict[PositionKey, tuple[Position, Decimal]] = {}
        self._marks: tuple[list[Mark], list[FxRate]] | None = None
        self._running: asyncio.Future[bool] | None = None
        self._fresh = False  # work submitted since the last write began
        self._retry: asyncio.TimerHandle | None = None
        self._delay = retry_seconds  # back-off of a write that failed as a whole
        self.failures = 0
        # Symbol ("fills/U123") -> why its writes fail now; they are retried with back-off.
        self.failing_symbols: dict[str, str] = {}
        # Symbol -> why the store can never hold it; its rows are dropped (the journal has them).
        self.skipped_symbols: dict[str, str] = {}
        self.fault = ""  # why the last write failed as a whole ("" when it did not)
        self.on_health: Callable[[bool], None] = lambda healthy: None

    @property
    def healthy(self) -> bool:
        """No view is failing now (symbols skipped for good are reported apart)."""
        return not self.failing_symbols and not self.fault

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
        self._fresh = True
        self._schedule()

    def submit_marks(self, marks: list[Mark], rates: list[FxRate]) -> None:
        """The latest marks and rates, all of them: replaces any not written yet."""
        self._marks = (marks, rates)
        self._fresh = True
        self._schedule()

    def _pending(self) -> bool:
        return bool(self._events or self._rows or self._marks or self._runs)

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
        if self._running is None and self._fresh:
            self._write()

    async def drained(self, attempts: int = 3) -> None:
        """Writes what is pending now and waits for it (on shutdown); what still fails is
        caught up from the journal at the next start."""
        for _ in range(attempts):
            if self._running is None and self._pending():
                self._write()
            if self._running is None:
                break
            await asyncio.gather(asyncio.shield(self._running), return_exceptions=True)
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    def _write(self) -> None:
        events, rows, transitions = self._events, list(self._rows.values()), self._transitions
        marks, runs = self._marks, self._runs
        self._events, self._rows, self._transitions, self._marks = [], {}, [], None
        self._runs = []
        self._fresh = False
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
    ) -> bool:
        """Writes a batch; True when it went to the views (not only marks)."""
        incomplete: ViewsIncomplete | None = None
        if events or rows or runs:
            views = [position_view(row, mark, self._precision) for row, mark in rows]
            try:
                self._store.record_views(events, views, transitions, runs)
            except ViewsIncomplete as error:  # the marks do not wait for a failing symbol
                incomplete = error
        if marks is not None:
            self._store.record_marks(*marks)
        if incomplete is not None:
            raise incomplete
        return bool(events or rows or runs)

    def _written(
        self,
        done: asyncio.Future[bool],
        events: list[Sequenced],
        rows: list[tuple[Position, Decimal]],
        transitions: list[OrderTransition],
        marks: tuple[list[Mark], list[FxRate]] | None,
        runs: list[ReconciliationRun],
    ) -> None:
        self._running = None
        was_healthy = self.healthy
        error = done.exception()
        retry_in: float | None = None
        if error is None:
            if done.result():  # every symbol written: none failing now
                self._symbols_now({}, {})
            self._whole_write(None)
        elif isinstance(error, ViewsIncomplete):
            self._whole_write(None)
            self._symbols_now(error.failing, error.skipped)
            left = {sequence for sequence, _ in error.events}
            self._requeue(
                error.events,
                [(row, mark) for row, mark in rows if row.key in error.keys],
                [item for item in transitions if item.sequence in left],
                None,
                error.runs,
            )
            retry_in = error.retry_in
        else:
            self.failures += 1
            self._whole_write(error)
            self._requeue(events, rows, transitions, marks, runs)
            retry_in = self._delay
            self._delay = min(self._delay * 2, self._max_retry_seconds)
        if self.healthy != was_healthy:
            self.on_health(self.healthy)
        if retry_in is not None and self._pending():
            self._retry_after(retry_in)
        if self._fresh:
            self._schedule()

    def _requeue(
        self,
        events: list[Sequenced],
        rows: list[tuple[Position, Decimal]],
        transitions: list[OrderTransition],
        marks: tuple[list[Mark], list[FxRate]] | None,
        runs: list[ReconciliationRun],
    ) -> None:
        """Puts back what was not written, ahead of what came since (each symbol's rows stay
        in sequence order)."""
        self._events[:0] = events
        self._transitions[:0] = transitions
        self._runs[:0] = runs
        if self._marks is None:
            self._marks = marks
        for row, mark in rows:
            self._rows.setdefault(row.key, (row, mark))

    def _retry_after(self, seconds: float) -> None:
        if self._retry is not None:
            self._retry.cancel()
        loop = asyncio.get_running_loop()
        self._retry = loop.call_later(max(seconds, self._min_interval), self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        if self._running is None and self._pending():
            self._write()

    def _whole_write(self, error: BaseException | None) -> None:
        """Logs a write that failed as a whole once per cause, and its end."""
        if error is None:
            if self.fault:
                log.info("views written again")
            self.fault, self._delay = "", self._retry_seconds
            return
        cause = f"{type(error).__name__}: {error}"
        if cause != self.fault:
            log.warning("views not updated, retrying with back-off: %s", cause)
        self.fault = cause

    def _symbols_now(self, failing: dict[str, str], skipped: dict[str, str]) -> None:
        """Logs symbols once when they start failing (one line per cause: a full disk fails
        every symbol at once), once when they are written again, and once when skipped."""
        started: dict[str, list[str]] = defaultdict(list)
        for symbol, cause in failing.items():
            if symbol not in self.failing_symbols:
                started[cause].append(symbol)
        for cause, names in started.items():
            log.warning(
                "view %s not written, retrying with back-off (the other views go on): %s",
                _names(names),
                cause,
            )
        ended = sorted(self.failing_symbols.keys() - failing.keys())
        if ended:
            log.info("view %s written again", _names(ended))
        new = {
            symbol: reason
            for symbol, reason in skipped.items()
            if symbol not in self.skipped_symbols
        }
        for symbol, reason in new.items():
            log.warning(
                "view %s skipped for good: %s (the journal keeps its events)", symbol, reason
            )
        self.failing_symbols = dict(failing)
        self.skipped_symbols.update(new)


def _names(symbols: list[str], shown: int = 5) -> str:
    """Some symbols by name, and how many more."""
    more = len(symbols) - shown
    return ", ".join(symbols[:shown]) + (f" and {more} more" if more > 0 else "")
