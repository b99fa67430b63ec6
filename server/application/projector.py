"""Keeps the analysts' views in step with commits, off the ack path.

Work that arrives while a write is running is coalesced into the next one, like group commit.
The store writes each view symbol on its own: what one failing symbol could not take is kept
and handed over again when that symbol's back-off ends, while every other symbol goes on (the
views only ever move forward, and a row written twice is written once). A failure is logged
once when it starts, with its cause, and once when it ends; `failing_symbols` and `healthy`
say what is wrong now, and `on_health` hears when that changes.

Each changed row is handed over with its account's base currency and the rate into it (and
the rates of the currencies of its fees in other currencies), taken on the event loop when
the row is submitted, like its mark: the views thread reads nothing the loop changes, and a
row's base figures are those of the rates in force when it changed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple

from server.application.ports import (
    EventStore,
    OrderTransition,
    ReconciliationRun,
    Sequenced,
    ViewsIncomplete,
)
from server.domain import steps
from server.domain.balances import Balance
from server.domain.book import PositionBook, PositionView, fee_rates, position_view
from server.domain.marks import FxRate, Mark
from server.domain.position import Position, PositionKey
from server.domain.steps import Steps, at_once

log = logging.getLogger("portfolio.views")

BaseOf = Callable[[str, str], tuple[str, Decimal | None]]
"""(account_id, currency) -> the account's base currency and the rate into it (None: none)."""


def _no_base(account_id: str, currency: str) -> tuple[str, Decimal | None]:
    return "", None


def _no_balances(account_id: str) -> list[Balance]:
    return []


def _no_rows(account_id: str) -> list[tuple[Position, Decimal]]:
    return []


def rows_of_account(book: PositionBook, account_id: str) -> Iterator[tuple[Position, Decimal]]:
    """Copies of every row of an account (account-level and strategies), each with its mark:
    what a day's close snapshots. Made as they are read (the close reads them in steps,
    before any other event applies)."""
    low, high = PositionKey(account_id, "", ""), PositionKey(account_id, "\U0010ffff", "")
    marks: dict[str, Decimal] = {}  # each instrument's once: it recurs in every strategy
    for index in (book.account_rows, book.strategy_rows):
        for key in index.irange(low, high):
            instrument_id = key.instrument_id
            mark = marks.get(instrument_id)
            if mark is None:
                mark = marks[instrument_id] = book.mark(instrument_id)
            yield index[key].copy(), mark


class _Row(NamedTuple):
    """A copy of a changed row with what its view needs, all taken on the event loop."""

    position: Position
    mark: Decimal
    base_currency: str
    fx_rate: Decimal | None
    # The rate into base currency of each currency the row has fees in besides its own.
    fee_rates: tuple[Decimal | None, ...]


class _Close(NamedTuple):
    """A day's close of an account: its rows and balances as the commit that journaled it
    left them, taken on the event loop."""

    close_ns: int
    rows: list[_Row]
    balances: list[Balance]


def _rate_into_base(base_of: BaseOf, account_id: str, currency: str) -> Decimal | None:
    return base_of(account_id, currency)[1]


@dataclass(slots=True)
class _Batch:
    """What the views still need: committed events, the latest copy of each row they changed
    (with its mark, base currency and rate then), how their status changes were judged, the
    reconciliation runs they made, and the latest marks and rates."""

    events: list[Sequenced] = field(default_factory=list)
    rows: dict[PositionKey, _Row] = field(default_factory=dict)
    transitions: list[OrderTransition] = field(default_factory=list)
    runs: list[ReconciliationRun] = field(default_factory=list)
    marks: tuple[list[Mark], list[FxRate]] | None = None
    # Copies of the cash balances the events moved, the latest of each (coalesced).
    balances: dict[tuple[str, str, str], Balance] = field(default_factory=dict)
    closes: list[_Close] = field(default_factory=list)  # days closed (history snapshots)

    def __bool__(self) -> bool:
        return bool(
            self.events or self.rows or self.marks or self.runs or self.balances or self.closes
        )

    @property
    def has_views(self) -> bool:
        """Anything for the views themselves (not only marks)."""
        return bool(self.events or self.rows or self.runs or self.balances or self.closes)

    def put_back(self, earlier: _Batch) -> None:
        """Takes back what a write could not write, ahead of what came since: each symbol's
        rows stay in sequence order, and a row changed since keeps its newer copy."""
        self.events[:0] = earlier.events
        self.transitions[:0] = earlier.transitions
        self.runs[:0] = earlier.runs
        if self.marks is None:
            self.marks = earlier.marks
        for key, row in earlier.rows.items():
            self.rows.setdefault(key, row)
        for balance_key, balance in earlier.balances.items():
            self.balances.setdefault(balance_key, balance)
        self.closes[:0] = earlier.closes


class ViewProjector:
    def __init__(
        self,
        store: EventStore,
        executor: Executor,
        precision: Decimal,
        retry_seconds: float = 1.0,
        min_interval: float = 1.0,
        max_retry_seconds: float = 60.0,
        base_of: BaseOf = _no_base,
    ) -> None:
        self._store = store
        self._base_of = base_of
        self._min_interval = min_interval
        self._next_write = 0.0
        self._scheduled = False
        self._executor = executor
        self._precision = precision
        self._retry_seconds = retry_seconds
        self._max_retry_seconds = max_retry_seconds
        self._batch = _Batch()
        self._running: asyncio.Future[bool] | None = None
        self._fresh = False  # work submitted since the last write began
        self._retry: asyncio.TimerHandle | None = None
        self._closed = False  # drained at a stop: nothing is written after
        self._delay = retry_seconds  # back-off of a write that failed as a whole
        self.failures = 0
        # Symbol ("fills/U123") -> why its writes fail now; they are retried with back-off.
        self.failing_symbols: dict[str, str] = {}
        # Symbol -> why the store can never hold it; its rows are dropped (the journal has them).
        self.skipped_symbols: dict[str, str] = {}
        self.fault = ""  # why the last write failed as a whole ("" when it did not)
        self.on_health: Callable[[bool], None] = lambda healthy: None
        # account_id -> its cash balances (the ledger's), read on the event loop at submit.
        self.balances_of: Callable[[str], list[Balance]] = _no_balances
        # account_id -> copies of all its rows with their marks, for a day's close.
        self.rows_of: Callable[[str], Iterable[tuple[Position, Decimal]]] = _no_rows

    @property
    def writing(self) -> bool:
        """Whether a write is under way or due (its writer may be inside a store
        transaction)."""
        return self._running is not None or self._scheduled

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
        their status changes were judged, and the reconciliation runs they made. Called on
        the event loop: each row's base currency and rate are taken here, not on the thread."""
        at_once(self.submitting(events, rows, transitions, runs))

    def submitting(
        self,
        events: list[Sequenced],
        rows: list[tuple[Position, Decimal]],
        transitions: list[OrderTransition] | None = None,
        runs: list[ReconciliationRun] | None = None,
    ) -> Steps[None]:
        """`submit` in steps: a day's close copies every row of its account, in steps of
        `ROWS_PER_STEP` (steps.py), before any other event applies. The batch is taken only
        after the last step: a write may start between steps (the mark feed's) and take the
        batch held then."""
        closes: list[_Close] = []
        for _, event in events:
            if event.kind == "day_close":  # every row and balance of the account, as now
                account_id = getattr(event, "account_id", "")
                close_ns = int(getattr(event, "timestamp_ns", 0))
                rows_now = yield from self._close_rows(account_id)
                balances = [b.copy() for b in self.balances_of(account_id)]
                closes.append(_Close(close_ns, rows_now, balances))
        batch = self._batch
        batch.events.extend(events)
        batch.transitions.extend(transitions or ())
        batch.runs.extend(runs or ())
        self._take_balances(events)
        for row, mark in rows:
            batch.rows[row.key] = self._row(row, mark)
        batch.closes.extend(closes)
        self._fresh = True
        self._schedule()

    def _row(self, row: Position, mark: Decimal) -> _Row:
        base_of = self._base_of
        account_id = row.key.account_id
        base, rate = base_of(account_id, row.currency)
        rates = fee_rates(row, functools.partial(_rate_into_base, base_of, account_id))
        return _Row(row, mark, base, rate, rates)

    def _close_rows(self, account_id: str) -> Steps[list[_Row]]:
        """Every row of the account for a day's close, as `_row` makes them, with each
        currency's base and rate asked once (a close takes a million rows on a large book, on
        the event loop; the rows of one account share its base currency); in steps."""
        rates: dict[str, tuple[str, Decimal | None]] = {}
        rate_into_base = functools.partial(_rate_into_base, self._base_of, account_id)
        made: list[_Row] = []
        step = steps.ROWS_PER_STEP
        for row, mark in self.rows_of(account_id):
            if len(made) % step == 0 and made:
                yield
            currency = row.currency
            found = rates.get(currency)
            if found is None:
                found = rates[currency] = self._base_of(account_id, currency)
            fees = fee_rates(row, rate_into_base) if row.other_fees else ()
            made.append(_Row(row, mark, found[0], found[1], fees))
        return made

    def _take_balances(self, events: list[Sequenced]) -> None:
        """Copies of the balances these events moved (their last change is one of them):
        looked up per account the events name, so the cost follows the events, not the book."""
        if not events:
            return
        first = min(sequence for sequence, _ in events)
        accounts = {getattr(event, "account_id", "") for _, event in events}
        for account_id in accounts - {""}:
            for balance in self.balances_of(account_id):
                if balance.last_sequence >= first:
                    self._batch.balances[balance.key] = balance.copy()

    def submit_marks(self, marks: list[Mark], rates: list[FxRate]) -> None:
        """The latest marks and rates, all of them: replaces any not written yet."""
        self._batch.marks = (marks, rates)
        self._fresh = True
        self._schedule()

    def _pending(self) -> bool:
        return bool(self._batch)

    def _schedule(self) -> None:
        """Writes now, or once `min_interval` (1 s) has passed since the last write began: a
        burst of commits becomes one write per symbol, and the views thread, which holds the
        GIL for milliseconds per write, stays out of the acks' way (at 1,000 one-fill batches
        a second: ack p50 6.8 ms with a write every 0.25 s, 2.3 ms once a second)."""
        if self._running is not None or self._scheduled or self._closed:
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
        if self._running is None and self._fresh and not self._closed:
            self._write()

    async def drained(self, attempts: int = 3, timeout: float | None = None) -> bool:
        """Writes what is pending now and waits for it (on shutdown), at most `timeout`
        seconds; then writes nothing more. False when a write was still under way at the
        timeout (a views writer that hangs, or a million rows' close): what is not written
        is caught up from the journal at the next start, as what still fails is."""
        loop = asyncio.get_running_loop()
        ends = None if timeout is None else loop.time() + timeout
        finished = True
        for _ in range(attempts):
            if self._running is None and self._pending():
                self._write()
            if self._running is None:
                break
            left = None if ends is None else max(0.0, ends - loop.time())
            done, _ = await asyncio.wait({self._running}, timeout=left)
            if not done:
                finished = False
                break
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        return finished

    def _write(self) -> None:
        batch, self._batch = self._batch, _Batch()
        self._fresh = False
        self._next_write = asyncio.get_running_loop().time() + self._min_interval
        self._running = asyncio.get_running_loop().run_in_executor(
            self._executor, self._record, batch
        )
        self._running.add_done_callback(lambda done: self._written(done, batch))

    def _record(self, batch: _Batch) -> bool:
        """Writes a batch; True when it went to the views (not only marks)."""
        incomplete: ViewsIncomplete | None = None
        for close in batch.closes:  # idempotent per close: a retried batch writes it once
            rows = [self._view(row) for row in close.rows]
            self._store.record_close(close.close_ns, rows, close.balances)
        if batch.has_views:
            views = [self._view(row) for row in batch.rows.values()]
            try:
                self._store.record_views(
                    batch.events,
                    views,
                    batch.transitions,
                    batch.runs,
                    list(batch.balances.values()),
                )
            except ViewsIncomplete as error:  # the marks do not wait for a failing symbol
                incomplete = error
        if batch.marks is not None:
            self._store.record_marks(*batch.marks)
        if incomplete is not None:
            raise incomplete
        return batch.has_views

    def _view(self, row: _Row) -> PositionView:
        return position_view(
            row.position,
            row.mark,
            self._precision,
            base_currency=row.base_currency,
            fx_rate=row.fx_rate,
            fee_rates=row.fee_rates,
        )

    def _written(self, done: asyncio.Future[bool], batch: _Batch) -> None:
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
            self._batch.put_back(
                _Batch(
                    events=error.events,
                    rows={key: row for key, row in batch.rows.items() if key in error.keys},
                    transitions=[item for item in batch.transitions if item.sequence in left],
                    runs=error.runs,
                )
            )
            retry_in = error.retry_in
        else:
            self.failures += 1
            self._whole_write(error)
            self._batch.put_back(batch)
            retry_in = self._delay
            self._delay = min(self._delay * 2, self._max_retry_seconds)
        if self.healthy != was_healthy:
            self.on_health(self.healthy)
        if retry_in is not None and self._pending():
            self._retry_after(retry_in)
        if self._fresh:
            self._schedule()

    def _retry_after(self, seconds: float) -> None:
        if self._closed:
            return
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
