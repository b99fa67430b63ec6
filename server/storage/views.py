"""The analysts' views, kept in step with the journal after each commit, off the ack path.

- `fills` / `orders`, symbol = account_id: one row per fill / status change (an order's
  transition, with `flag` saying why it did not move the order, if it did not). A correction
  (same order, same status time, new content) replaces its transition's row with update().
  The index is the
  event's UTC time, nudged forward by the fewest nanoseconds that keep it strictly increasing
  (same-timestamp rows, late fills), since ArcticDB appends only in index order; the exact
  event time is the `fill_time` / `status_time` column, and `sequence` orders rows globally.
- `positions`, symbol = strategy_id, and `portfolio`, symbol = account_id (the account-level
  rows next to each strategy's rows): the latest state of each row. Only the rows a commit
  changed are written: update() of the changed rows' slots (resending every row of the span
  it replaces), append() for new rows. ArcticDB refuses update() on a non-timestamp index, so
  each row's slot number is stored as a timestamp (slot n = n ns after the epoch); the
  `timestamp` column is the row's last change, `slot` its number. Each row carries its
  `currency`, its account's `base_currency`, the `fx_rate` into it when the row last changed
  (empty: no quote) and its figures in base currency as the API gives them (`in_base`; empty
  when a rate they need is missing); `other_fees` lists the fees charged in other currencies
  than the row's as `USD=5;GBP=1.2` (by currency; empty when none).
  A symbol written by an earlier version (without those columns) is rewritten once with them,
  empty, when it is first written to: the libraries have a static schema, and append() or
  update() with new columns would be refused.

Each symbol is written on its own: one the store refuses (a transient fault, or a name it can
never hold: ids written before the door refused them) never holds back the others. A failing
symbol backs off on its own (1 s doubling to 60 s); a name the store can never hold is skipped
for good. The watermark `checkpoints/views_through` says through which sequence every event's
rows are written (or skipped): a restart catches the views up from there, not from the
journal's start. Position rows count too: a row not written (its `positions` or `portfolio`
symbol failing, or waiting for the next `position_history` snapshot) holds the watermark below
its last change, so a restart hands it over again (it hands only the rows changed after the
watermark, and every row when the watermark is behind the checkpoint). A stop takes the
pending history snapshot (`flush_history`), so that a clean stop leaves the watermark at the
journal's end.

On a local (LMDB) store these writes run in a process of their own (views_process.py): this
instance then hands `record` and `record_close` to it, and stays the service's read side.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import arcticdb as adb
import pandas as pd

from server.application.ports import (
    OrderTransition,
    ReconciliationRun,
    Sequenced,
    ViewsIncomplete,
)
from server.domain.balances import Balance, BalanceKey
from server.domain.book import PositionView
from server.domain.decimals import canonical
from server.domain.events import CommissionAmendment, Fill, FillCorrection, OrderStatusUpdate
from server.domain.position import PositionKey
from server.domain.reconciliation import Reconciliation
from server.storage.upcasters import current_view
from server.storage.view_layouts import (
    BALANCE_COLUMNS,
    COMMISSION_COLUMNS,
    CORRECTION_COLUMNS,
    FILL_COLUMNS,
    HISTORY_COLUMNS,
    LAYOUTS,
    POSITION_COLUMNS,
    POSITION_COLUMNS_V1,
    UnknownLayoutError,
    current_layout,
    numeric_commission,
    numeric_correction,
    numeric_fill,
    numeric_position,
    original_text,
    settled_fills,
)
from server.tracing import VIEWS_WRITE, traced

log = logging.getLogger("portfolio.views")

ORDER_COLUMNS = [
    "update_id", "sequence", "status_time", "order_key", "strategy_id", "order_ref", "order_id",
    "perm_id", "instrument_id", "side", "status", "filled_quantity", "remaining_quantity",
    "avg_fill_price", "flag", "replaced", "corrects",
]  # fmt: skip
RECONCILIATION_COLUMNS = [
    "snapshot_id", "sequence", "reconciled_at", "instrument_id", "status", "discrepancy",
    "broker_quantity", "broker_avg_cost", "broker_unit_cost", "account_quantity",
    "service_avg_cost", "attributed_quantity", "residual_quantity", "residual_owner",
    "residual_avg_cost", "strategies", "note", "broker_positions", "matched", "discrepancies",
]  # fmt: skip
POSITION_COLUMNS_BEFORE_CURRENCY = POSITION_COLUMNS_V1
MAX_RUNS = 4  # beyond this many runs of changed slots, one update() resends the whole span
COMPACT_EVERY = 500  # writes to one symbol between compactions of its segments
FIRST_RETRY, LAST_RETRY = 1.0, 60.0  # a failing symbol's back-off, seconds
# Events one failing symbol may hold back in memory; beyond, it waits for the next start,
# which catches it up from the journal (its rows cannot be written later out of order).
HOLD_LIMIT = 100_000
HISTORY_SECONDS = 60.0  # between position snapshots (--position-history-seconds)
WATERMARK = ("checkpoints", "views_through")  # library, symbol
LAYOUT_MARK = "views_layout"  # in checkpoints: the views' layout every symbol is upgraded to
VIEWS_LAYOUT = 2  # amounts as float64 beside their exact text (issue 14)
MAX_SYMBOL_CHARACTERS = 254  # measured on arcticdb 6.28: 255 fails
FREE_WINDOW_NS = 1_000  # a late fill's free nanosecond is looked for this many at a time
# Where a correction's or late commission's row is looked for, widening: a correction keeps
# its execution's time, a late commission comes seconds to hours after it; then the whole
# symbol. (before, after) the event's time, ns: a date range reads only its segments.
FIND_WINDOWS_NS = ((60 * 10**9, 60 * 10**9), (86_400 * 10**9, 60 * 10**9))


def unholdable(symbol: str) -> str:
    """Why ArcticDB can never hold `symbol` as a name ("" when it can): measured on 6.28,
    symbols must be 1 to 254 printable ASCII characters, none of `*`, `<`, `>`."""
    if not symbol:
        return "an empty name"
    if len(symbol) > MAX_SYMBOL_CHARACTERS:
        return f"{len(symbol)} characters (at most {MAX_SYMBOL_CHARACTERS})"
    for character in symbol:
        if not " " <= character <= "~" or character in "*<>":
            return f"the character {character!r} (printable ASCII only, and not * < >)"
    return ""


def label(library: str, symbol: str) -> str:
    """A symbol as logs and health name it (a long one cut short)."""
    return f"{library}/{symbol if len(symbol) <= 64 else symbol[:61] + '...'}"


def _cause(error: Exception) -> str:
    """An error in one line (ArcticDB's messages can run to pages)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:300] if lines else ''}"


@dataclass
class _Failing:
    """A symbol whose last write failed: why, and when to try again."""

    cause: str
    attempts: int
    retry_at: float  # time.monotonic()
    # The lowest sequence it holds back: of its events, or its rows' lowest last change
    # (0: nothing, e.g. the watermark itself, or history, held back by what is pending).
    first_unwritten: int
    suspended: bool = False  # too much held back: left to the next start's catch-up


def _utc(ns: Sequence[int]) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(list(ns), unit="ns", utc=True), name="timestamp")


@dataclass
class _EventLog:
    """An append-only symbol whose index must keep increasing."""

    last_index_ns: int = -1
    last_sequence: int = 0
    # orders only: (order_key, status time ns) -> the row's index ns, for corrections.
    transitions: dict[tuple[str, int], int] | None = None


def _fill_row(sequence: int, fill: Fill) -> tuple[object, ...]:
    return (
        fill.fill_id, sequence, fill.timestamp_ns, fill.strategy_id, fill.instrument_id,
        fill.side.name, canonical(fill.quantity), canonical(fill.price),
        canonical(fill.commission), fill.commission_currency, fill.order_ref, fill.order_id,
        fill.venue, fill.trace_id,
    )  # fmt: skip


def _correction_row(sequence: int, correction: FillCorrection) -> tuple[object, ...]:
    return (
        correction.correction_id, correction.corrects, sequence, correction.timestamp_ns,
        correction.strategy_id, correction.instrument_id, correction.side.name,
        canonical(correction.quantity), canonical(correction.price),
        canonical(correction.commission), correction.commission_currency,
        correction.order_ref, correction.order_id, correction.venue,
    )  # fmt: skip


def _commission_row(sequence: int, amendment: CommissionAmendment) -> tuple[object, ...]:
    return (
        amendment.amendment_id, amendment.fill_id, sequence, amendment.timestamp_ns,
        canonical(amendment.commission), amendment.commission_currency,
    )  # fmt: skip


def _reconciliation_rows(run: Reconciliation) -> list[tuple[object, ...]]:
    """One row per line; a run with no line still leaves one row (status NONE) saying it ran."""
    counts = (run.broker_positions, run.matched, run.discrepancies)
    if not run.lines:
        return [
            (run.snapshot_id, run.sequence, run.timestamp_ns, "", "NONE", False,
             *[""] * 9, "[]", "nothing held on either side", *counts)
        ]  # fmt: skip
    return [
        (
            run.snapshot_id, run.sequence, run.timestamp_ns, line.instrument_id,
            line.status.name, line.status.is_discrepancy, canonical(line.broker_quantity),
            canonical(line.broker_avg_cost), canonical(line.broker_unit_cost),
            canonical(line.account_quantity), canonical(line.service_avg_cost),
            canonical(line.attributed_quantity), canonical(line.residual_quantity),
            line.residual.owner if line.residual else "",
            canonical(line.residual.avg_cost) if line.residual else "",
            json.dumps([[strategy, canonical(q)] for strategy, q in line.strategies]),
            line.note, *counts,
        )
        for line in run.lines
    ]  # fmt: skip


def _order_row(
    sequence: int, update: OrderStatusUpdate, judged: OrderTransition | None
) -> tuple[object, ...]:
    transition = judged.transition if judged else None
    if judged is None:
        flag = ""
    elif transition is None:
        flag = "replaced by a later correction"
    else:
        flag = transition.flag
    return (
        update.update_id, sequence, update.timestamp_ns, judged.order_key if judged else "",
        update.strategy_id, update.order_ref, update.order_id, update.perm_id,
        update.instrument_id, update.side.name if update.side else "", update.status.name,
        canonical(update.filled_quantity), canonical(update.remaining_quantity),
        canonical(update.avg_fill_price) if update.avg_fill_price is not None else "",
        flag, bool(transition and transition.replaced), transition.corrects if transition else "",
    )  # fmt: skip


def in_base(view: PositionView) -> list[str]:
    """Realized, unrealized, fees, net and market value in the account's base currency, as
    the API's `*_base` fields give them (`PositionView.in_base`). Empty: a rate is missing."""
    figures = view.in_base()
    return [
        "" if amount is None else canonical(amount)
        for amount in (
            figures.realized_pnl,
            figures.unrealized_pnl,
            figures.fees,
            figures.net_pnl,
            figures.market_value,
        )
    ]


def other_fees_text(fees: Iterable[tuple[str, Decimal]]) -> str:
    """`USD=5;GBP=1.2`: fees in other currencies than the row's, one text column."""
    return ";".join(f"{currency}={canonical(amount)}" for currency, amount in fees)


def _position_row(slot: int, view: PositionView) -> tuple[object, ...]:
    """A row in the current layout: amounts as floats, each with its exact text."""
    key = view.key
    return numeric_position((
        slot, view.updated_at_ns, key.account_id, key.strategy_id, key.instrument_id,
        "RESIDUAL" if view.residual else "ACCOUNT" if key.is_account_level else "STRATEGY",
        canonical(view.quantity),
        canonical(view.avg_cost), canonical(view.cost_basis), canonical(view.realized_pnl),
        canonical(view.unrealized_pnl), canonical(view.fees), canonical(view.net_pnl),
        canonical(view.market_price), canonical(view.market_value), canonical(view.multiplier),
        view.trade_count, view.last_sequence,
        view.currency, view.base_currency,
        canonical(view.fx_rate) if view.fx_rate is not None else "",
        *in_base(view),
        other_fees_text(view.other_fees),
    ))  # fmt: skip


class ViewsWriter(Protocol):
    """Where views are written when not in this process (views_process.ViewsProcess)."""

    def record(
        self,
        settings: dict[str, Any],
        events: Sequence[Sequenced],
        positions: Iterable[PositionView],
        transitions: Iterable[OrderTransition],
        runs: Sequence[ReconciliationRun],
        balances: Iterable[Balance],
    ) -> None: ...

    def record_close(
        self,
        settings: dict[str, Any],
        close_ns: int,
        positions: Iterable[PositionView],
        balances: Iterable[Balance],
    ) -> None: ...

    def takes_writes(self) -> bool: ...


@dataclass
class _RowTable:
    """A symbol of position rows, one slot per row key."""

    slots: dict[tuple[str, str, str], int] = field(default_factory=dict)
    rows: list[tuple[object, ...]] = field(default_factory=list)  # by slot, as written


class ArcticViews:
    def __init__(self, arctic: adb.Arctic) -> None:
        # Libraries made now hold nothing to upgrade: not listed (a library's first
        # list_symbols waits about 1 s for its symbol list's lock, 5 s a start).
        self._new_libraries = {
            name
            for name in ("fills", "corrections", "commissions", "positions", "portfolio")
            if not arctic.has_library(name)
        }
        self.fills = arctic.get_library("fills", create_if_missing=True)
        self.orders = arctic.get_library("orders", create_if_missing=True)
        self.positions = arctic.get_library("positions", create_if_missing=True)
        self.portfolio = arctic.get_library("portfolio", create_if_missing=True)
        self.corrections = arctic.get_library("corrections", create_if_missing=True)
        self.commissions = arctic.get_library("commissions", create_if_missing=True)
        self.reconciliations = arctic.get_library("reconciliations", create_if_missing=True)
        self.position_history = arctic.get_library("position_history", create_if_missing=True)
        self.balances = arctic.get_library("balances", create_if_missing=True)
        # Seconds between snapshots of the rows changed since the last one (None: none).
        self.history_seconds: float | None = HISTORY_SECONDS
        self._history_pending: dict[PositionKey, PositionView] = {}
        self._history_first = 0  # the lowest last change of a pending row (0: none pending)
        self._history_at = -math.inf  # clock() of the last snapshot
        self._balances_pending: dict[BalanceKey, Balance] = {}
        self._snapshot_logs: dict[tuple[str, str], _EventLog] = {}
        self.wall_clock_ns = time.time_ns
        # The event log of each kind of journaled event that has one.
        self._library_of_kind = {
            "fill": self.fills, "status": self.orders, "correction": self.corrections,
            "commission": self.commissions,
            "broker_positions": self.reconciliations,
        }  # fmt: skip
        self._logs: dict[tuple[str, str], _EventLog] = {}
        self._tables: dict[tuple[str, str], _RowTable] = {}
        self._writes: dict[tuple[str, str], int] = defaultdict(int)
        self._watermark = arctic.get_library(WATERMARK[0], create_if_missing=True)
        self._failing: dict[tuple[str, str], _Failing] = {}
        self._skipped: dict[tuple[str, str], str] = {}
        self._handed_through = 0  # the highest sequence handed over
        self._saved_through = 0
        self.clock = time.monotonic
        self.hold_limit = HOLD_LIMIT
        # A process of their own writes the views when set (views_process.py): record() and
        # record_close() are handed to it, with this instance's settings; reads stay here.
        self.writer: ViewsWriter | None = None
        self.upgraded = self.upgrade()

    def upgrade(self) -> list[str]:
        """Brings every view symbol an earlier release wrote to the current layout, at start
        (see view_layouts); returns the symbols rewritten. A symbol of no known layout is
        left as it is (its writes fail and show on health, the others go on). Done once per
        store: `checkpoints/views_layout` says it was (a start then lists no symbol)."""
        marker = self._watermark
        if marker.has_symbol(LAYOUT_MARK):
            version = (marker.read_metadata(LAYOUT_MARK).metadata or {}).get("version", 0)
            if int(version) >= VIEWS_LAYOUT:
                return []
        rewritten = []
        # corrections and commissions first: a fills symbol's upgrade applies them
        for library in (self.corrections, self.commissions, self.fills, self.positions,
                        self.portfolio):  # fmt: skip
            if library.name in self._new_libraries:
                continue
            for symbol in library.list_symbols():
                try:
                    if self._current_layout(library, symbol):
                        rewritten.append(f"{library.name}/{symbol}")
                except UnknownLayoutError:
                    pass  # its first write fails, logged with this cause, and on health
        frame = pd.DataFrame({"version": [VIEWS_LAYOUT]}, dtype="int64")
        metadata = {"version": VIEWS_LAYOUT}
        marker.write(LAYOUT_MARK, frame, metadata=metadata, prune_previous_versions=True)
        if rewritten:
            more = f" and {len(rewritten) - 5} more" if len(rewritten) > 5 else ""
            log.info(
                "views upgraded to this release's columns: %s%s", ", ".join(rewritten[:5]), more
            )
        return rewritten

    def _settings(self) -> dict[str, Any]:
        """What a writer process is told with every write (tests and the service set them
        here)."""
        return {"hold_limit": self.hold_limit, "history_seconds": self.history_seconds}

    def _wrote(self, library: adb.library.Library, symbol: str) -> None:
        """Small appends fragment a symbol; compacting now and then keeps reads and appends
        flat over a long run."""
        key = (library.name, symbol)
        self._writes[key] += 1
        if self._writes[key] % COMPACT_EVERY == 0:
            try:
                library.compact_data(
                    symbol, rows_per_segment=COMPACT_EVERY, prune_previous_versions=True
                )
            except Exception as error:  # an optimisation: log and go on
                log.warning("compaction of %s/%s failed: %s", library.name, symbol, error)

    # -- fills and orders ------------------------------------------------------------------

    def _current_layout(self, library: adb.library.Library, symbol: str) -> bool:
        """current_layout, with an account's corrections and late commissions applied to the
        `fills` rows of a release that kept them only beside them."""
        if library is not self.fills:
            return current_layout(library, symbol)
        for beside in (self.corrections, self.commissions):
            if beside.has_symbol(symbol):
                current_layout(beside, symbol)
        return current_layout(library, symbol, functools.partial(self._settle, symbol))

    def _settle(self, symbol: str, frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
        beside = [
            library.read(symbol).data
            if library.has_symbol(symbol)
            else pd.DataFrame(columns=columns)
            for library, columns in (
                (self.corrections, CORRECTION_COLUMNS),
                (self.commissions, COMMISSION_COLUMNS),
            )
        ]
        frame, originals, through = settled_fills(frame, *beside)
        if originals:  # the rows the corrections replaced, kept with them
            item = self.corrections.read(symbol)
            corrections = item.data
            corrections["original"] = [
                originals.get(c, o) for c, o in zip(corrections["correction_id"],
                                                   corrections["original"], strict=True)
            ]  # fmt: skip
            self.corrections.write(
                symbol, corrections, metadata=item.metadata, prune_previous_versions=True
            )
        return frame, through

    def _log(self, library: adb.library.Library, symbol: str) -> _EventLog:
        key = (library.name, symbol)
        state = self._logs.get(key)
        if state is None:
            state = _EventLog()
            if library.has_symbol(symbol):
                if library is self.orders:  # an earlier release's layout: rewritten once
                    current_view(library, symbol, ORDER_COLUMNS)
                elif library.name in LAYOUTS:
                    self._current_layout(library, symbol)
                tail = library.tail(symbol, 1, columns=["sequence"]).data
                state.last_index_ns = int(tail.index[-1].value)
                state.last_sequence = int(tail["sequence"].iloc[-1])
                # Late fills, corrections and amendments write inside the symbol: the last
                # sequence written is in the metadata (the tail's, before this release).
                metadata = library.read_metadata(symbol).metadata
                if isinstance(metadata, dict) and "sequence" in metadata:
                    state.last_sequence = max(state.last_sequence, int(metadata["sequence"]))
            self._logs[key] = state
        return state

    @traced(VIEWS_WRITE)
    def record(
        self,
        events: Sequence[Sequenced],
        positions: Iterable[PositionView],
        transitions: Iterable[OrderTransition] = (),
        runs: Sequence[ReconciliationRun] = (),
        balances: Iterable[Balance] = (),
    ) -> None:
        """Writes each symbol's new rows on its own; raises ViewsIncomplete naming what was
        not written (and what to hand over again) when a symbol failed or was skipped."""
        if self.writer is not None and self.writer.takes_writes():
            self.writer.record(self._settings(), events, positions, transitions, runs, balances)
            return
        skipped_before = len(self._skipped)
        events_left = self._record_events(events, transitions)
        runs_left = self._record_runs(runs)
        residuals = [row for run in runs for row in run.residuals]
        changed = [*positions, *residuals]
        keys_left = self._record_positions(changed)
        self._record_history(changed)
        self._record_balances(balances)
        kept = {id(run) for run in runs_left}
        runs_left += [
            run
            for run in runs
            if id(run) not in kept and any(row.key in keys_left for row in run.residuals)
        ]
        self._handed_through = max(
            self._handed_through,
            max((sequence for sequence, _ in events), default=0),
            max((run.reconciliation.sequence for run in runs), default=0),
        )
        self._save_watermark()
        if (
            events_left
            or keys_left
            or runs_left
            or self._failing
            or (len(self._skipped) > skipped_before)
        ):
            now = self.clock()
            raise ViewsIncomplete(
                failing={label(*key): f.cause for key, f in self._failing.items()},
                skipped={label(*key): reason for key, reason in self._skipped.items()},
                events=sorted(events_left, key=lambda item: item[0]),
                keys=keys_left,
                runs=runs_left,
                retry_in=min(
                    (max(f.retry_at - now, 0.0) for f in self._failing.values() if not f.suspended),
                    default=None,
                ),
            )

    def _attempt(
        self, library: str, symbol: str, first: int, write: Callable[[], None], held: int = 0
    ) -> bool:
        """Runs one symbol's write unless it is backing off; True when its rows are done with
        (written; dropped for good because the store can never hold the symbol; or, for a
        symbol suspended after holding `hold_limit` events back, left to the next start)."""
        key = (library, symbol)
        reason = unholdable(symbol)
        if reason:
            self._skipped.setdefault(key, f"the store cannot hold a symbol with {reason}")
            return True
        failing = self._failing.get(key)
        if failing is not None and (failing.suspended or held > self.hold_limit):
            if not failing.suspended:
                failing.suspended = True
                failing.cause += (
                    f" (suspended after holding back {held:,} events: the next start catches"
                    " it up from the journal)"
                )
            return True
        now = self.clock()
        if failing is not None and now < failing.retry_at:
            return False
        try:
            write()
        except Exception as error:  # ArcticDB, the OS and the network all raise their own
            # What is cached about the symbol may be wrong now: read it again next time.
            self._logs.pop(key, None)
            self._tables.pop(key, None)
            attempts = failing.attempts + 1 if failing else 1
            held_back = failing.first_unwritten if failing else 0
            self._failing[key] = _Failing(
                _cause(error),
                attempts,
                now + min(FIRST_RETRY * 2 ** (attempts - 1), LAST_RETRY),
                min(first, held_back) if held_back else first,
            )
            return False
        self._failing.pop(key, None)
        return True

    @property
    def recorded_through(self) -> int:
        """Every event up to this sequence has its rows written, or skipped for good: its
        events' rows, and the position rows it changed (in `positions`, `portfolio` and the
        `position_history` snapshot)."""
        held_back = [f.first_unwritten for f in self._failing.values() if f.first_unwritten]
        if self._history_first:
            held_back.append(self._history_first)
        return min([self._handed_through, *(first - 1 for first in held_back)])

    def _save_watermark(self) -> None:
        through = self.recorded_through
        if through > self._saved_through and self._attempt(
            *WATERMARK, 0, functools.partial(self._write_watermark, through)
        ):
            self._saved_through = through

    def _write_watermark(self, through: int) -> None:
        frame = pd.DataFrame({"sequence": [through]}, dtype="int64")
        self._watermark.write(
            WATERMARK[1], frame, metadata={"sequence": through}, prune_previous_versions=True
        )

    def saved_through(self) -> int | None:
        """The watermark stored last (None: never stored, e.g. by an earlier version)."""
        if not self._watermark.has_symbol(WATERMARK[1]):
            return None
        metadata = self._watermark.read_metadata(WATERMARK[1]).metadata
        self._saved_through = int(metadata["sequence"])
        return self._saved_through

    def _record_events(
        self, events: Iterable[Sequenced], transitions: Iterable[OrderTransition]
    ) -> list[Sequenced]:
        """Writes each account's new executions (fills, corrections, late commissions: one
        append per run of in-order fills, an update() per late fill, correction or amendment)
        and status changes (one append, an update() per corrected transition); returns those
        not written."""
        judged = {item.sequence: item for item in transitions}
        grouped: dict[tuple[str, str], list[Sequenced]] = defaultdict(list)
        for sequence, event in events:
            if isinstance(event, Fill | FillCorrection | CommissionAmendment):
                grouped[("fill", event.account_id)].append((sequence, event))
            elif isinstance(event, OrderStatusUpdate):
                grouped[(event.kind, event.account_id)].append((sequence, event))
        left: list[Sequenced] = []
        for (kind, account_id), rows in grouped.items():
            library = self._library_of_kind[kind]
            write: Callable[[], None]
            if kind == "fill":
                write = functools.partial(self._write_executions, account_id, rows)
            else:
                state = functools.partial(self._log, library, account_id)
                write = functools.partial(self._write_orders, state, account_id, rows, judged)
            if not self._attempt(library.name, account_id, rows[0][0], write, len(rows)):
                left.extend(rows)
        return left

    def _write_orders(
        self,
        state_of: Callable[[], _EventLog],
        symbol: str,
        rows: list[Sequenced],
        judged: dict[int, OrderTransition],
    ) -> None:
        state = state_of()
        rows = [(s, e) for s, e in rows if s > state.last_sequence]
        if rows:
            self._append_events(self.orders, symbol, state, rows, judged)

    # -- executions: fills at their execution time, corrected and amended in place -----------

    def _write_executions(self, account_id: str, rows: list[Sequenced]) -> None:
        """In sequence order, so that a correction or amendment finds the row it changes:
        in-order fills are gathered into one append, anything else flushes them first."""
        fills = self._log(self.fills, account_id)
        run: list[tuple[int, Fill]] = []
        late: list[tuple[int, Fill]] = []
        run_last = fills.last_index_ns
        for sequence, event in rows:
            if isinstance(event, Fill):
                if sequence <= fills.last_sequence:
                    continue
                if event.timestamp_ns >= run_last:
                    run.append((sequence, event))
                    run_last = max(event.timestamp_ns, run_last + 1)
                else:
                    late.append((sequence, event))
                continue
            self._flush_fills(account_id, fills, run, late)
            run, late = [], []
            if isinstance(event, FillCorrection):
                self._correct(account_id, fills, sequence, event)
            elif isinstance(event, CommissionAmendment):
                self._amend(account_id, fills, sequence, event)
            run_last = max(run_last, fills.last_index_ns)
        self._flush_fills(account_id, fills, run, late)

    def _flush_fills(
        self,
        symbol: str,
        state: _EventLog,
        run: list[tuple[int, Fill]],
        late: list[tuple[int, Fill]],
    ) -> None:
        """Writes fills gathered in sequence order in one write: an append when all are in
        time order, else one update() of the span with the late ones and the rest together.
        One write each: a crash leaves the symbol through a sequence with nothing before it
        missing (the catch-up after a restart goes on from its last sequence)."""
        if late:
            self._insert_fills(symbol, state, run + late)
        else:
            self._append_fills(symbol, state, run)

    def _append_fills(self, symbol: str, state: _EventLog, run: list[tuple[int, Fill]]) -> None:
        table = [numeric_fill(_fill_row(s, e)) for s, e in run]
        times = [e.timestamp_ns for _, e in run]
        self._append_rows(self.fills, symbol, state, table, times, FILL_COLUMNS, "fill_time")

    def _free_index(self, symbol: str, time_ns: int, fill_id: str) -> int | None:
        """The first nanosecond at or after `time_ns` no row of `symbol` holds (update()
        replaces every row of the span it is given); None when the fill is there already
        (written before a restart whose catch-up hands it over again)."""
        start = time_ns
        while True:
            end = start + FREE_WINDOW_NS
            window = self.fills.read(
                symbol, date_range=(_utc([start])[0], _utc([end])[0]), columns=["fill_id"]
            ).data
            if fill_id and fill_id in set(window["fill_id"]):
                return None
            used = set(window.index.asi8.tolist())
            at = start
            while at in used:
                at += 1
            if at <= end:
                return at
            start = at

    def _insert_fills(self, symbol: str, state: _EventLog, late: list[tuple[int, Fill]]) -> None:
        """Fills go in at their execution times, all of one write in one update() of the span
        they fall in (its rows read and written back with them): a burst of fills out of time
        order (a relay catching up) costs one read and one update a write, not a pair per
        fill. A fill the span holds already (handed over again after a restart) is not
        written twice."""
        if not late:
            return
        last_sequence = max(sequence for sequence, _ in late)
        if not self.fills.has_symbol(symbol):  # nothing to merge with: in time order
            ordered = sorted(late, key=lambda item: (item[1].timestamp_ns, item[0]))
            self._append_fills(symbol, state, ordered)
            state.last_sequence = max(state.last_sequence, last_sequence)
            return
        low = min(event.timestamp_ns for _, event in late)
        high = max(event.timestamp_ns for _, event in late) + len(late) + FREE_WINDOW_NS
        existing = self.fills.read(symbol, date_range=(_utc([low])[0], _utc([high])[0])).data
        held = set(existing["fill_id"])
        used = set(existing.index.asi8.tolist())
        rows: list[tuple[object, ...]] = []
        index: list[int] = []
        for sequence, event in sorted(late, key=lambda item: (item[1].timestamp_ns, item[0])):
            if event.fill_id in held:
                continue
            at = event.timestamp_ns
            while at in used:
                at += 1
            used.add(at)
            rows.append(numeric_fill(_fill_row(sequence, event)))
            index.append(at)
        if rows:
            if max(index) > high:  # more collisions than the span read: read a larger one
                self._insert_fills_one_by_one(symbol, state, late)
                return
            new = self._frame_of(rows, index, FILL_COLUMNS, "fill_time")
            if len(existing):  # as written: the store gives times back without their zone
                existing["fill_time"] = pd.to_datetime(existing["fill_time"], utc=True)
                existing.index = _utc(existing.index.asi8.tolist())
            merged = pd.concat([existing, new]).sort_index(kind="stable") if len(existing) else new
            self.fills.update(
                symbol, merged, metadata={"sequence": last_sequence},
                prune_previous_versions=True,
            )  # fmt: skip
            state.last_index_ns = max(state.last_index_ns, max(index))
            self._wrote(self.fills, symbol)
        state.last_sequence = max(state.last_sequence, last_sequence)

    def _insert_fills_one_by_one(
        self, symbol: str, state: _EventLog, late: list[tuple[int, Fill]]
    ) -> None:
        for sequence, event in sorted(late, key=lambda item: item[0]):  # sequence order
            row = numeric_fill(_fill_row(sequence, event))
            self._insert_fill(symbol, state, row, event.timestamp_ns, sequence)

    def _insert_fill(
        self, symbol: str, state: _EventLog, row: tuple[object, ...], time_ns: int, sequence: int
    ) -> None:
        """A late fill goes in at its execution time (update() of an empty span inserts),
        not after the last row."""
        at = self._free_index(symbol, time_ns, str(row[0]))
        if at is not None:
            frame = self._frame_of([row], [at], FILL_COLUMNS, "fill_time")
            self.fills.update(
                symbol, frame, metadata={"sequence": sequence}, prune_previous_versions=True
            )
            state.last_index_ns = max(state.last_index_ns, at)
            self._wrote(self.fills, symbol)
        state.last_sequence = sequence

    def _find_fill(self, symbol: str, fill_id: str, near_ns: int) -> pd.DataFrame | None:
        """The `fills` row of an execution (by its id or its latest correction's): looked for
        near `near_ns` first (a correction keeps its execution's time, a late commission comes
        soon after), then over the whole symbol."""
        if not self.fills.has_symbol(symbol):
            return None
        query = adb.QueryBuilder()
        query = query[(query["fill_id"] == fill_id) | (query["corrected_by"] == fill_id)]
        ranges: list[tuple[pd.Timestamp, pd.Timestamp] | None] = [
            (_utc([near_ns - before])[0], _utc([near_ns + after])[0])
            for before, after in FIND_WINDOWS_NS
        ]
        for date_range in [*ranges, None]:
            frame = self.fills.read(symbol, date_range=date_range, query_builder=query).data
            if len(frame):
                return frame.iloc[-1:]
        return None

    @staticmethod
    def _stored_row(found: pd.DataFrame) -> tuple[list[object], int]:
        """A row as read back, as a list of values `_frame_of` takes, and its index."""
        values = list(found.iloc[0])
        at = FILL_COLUMNS.index("fill_time")
        values[at] = pd.Timestamp(values[at]).value
        return values, int(found.index.asi8[0])

    def _correct(
        self, symbol: str, fills: _EventLog, sequence: int, correction: FillCorrection
    ) -> None:
        """Keeps the correction and the row it replaces in `corrections`, then puts the
        replacement in that row's place in `fills` (moved, if it was executed at another
        time), keeping the execution's id, sequence and trace."""
        log_state = self._log(self.corrections, symbol)
        found: pd.DataFrame | None = None
        if sequence > log_state.last_sequence:
            found = self._find_fill(symbol, correction.corrects, correction.timestamp_ns)
            original = original_text(found.iloc[0]) if found is not None else ""
            row = numeric_correction(_correction_row(sequence, correction), original)
            self._append_rows(
                self.corrections, symbol, log_state, [row], [correction.timestamp_ns],
                CORRECTION_COLUMNS, "fill_time",
            )  # fmt: skip
        if sequence <= fills.last_sequence:
            return
        if found is None:
            found = self._find_fill(symbol, correction.corrects, correction.timestamp_ns)
        if found is None:
            log.warning("fills/%s: no row of %s for correction %s", symbol, correction.corrects,
                        correction.correction_id)  # fmt: skip
            fills.last_sequence = sequence
            return
        stored, at = self._stored_row(found)
        replacement = list(numeric_fill(_fill_row(sequence, correction.replacement())))
        for name in ("fill_id", "sequence", "trace_id"):
            replacement[FILL_COLUMNS.index(name)] = stored[FILL_COLUMNS.index(name)]
        replacement[FILL_COLUMNS.index("corrected_by")] = correction.correction_id
        stored_time = int(stored[FILL_COLUMNS.index("fill_time")])  # type: ignore[call-overload]
        if correction.timestamp_ns != stored_time:
            moved = _utc([at])[0]
            self.fills.delete_data_in_range(symbol, (moved, moved), prune_previous_versions=True)
            fresh = self._free_index(symbol, correction.timestamp_ns, "")
            at = fresh if fresh is not None else correction.timestamp_ns
        frame = self._frame_of([tuple(replacement)], [at], FILL_COLUMNS, "fill_time")
        self.fills.update(
            symbol, frame, metadata={"sequence": sequence}, prune_previous_versions=True
        )
        fills.last_sequence = sequence
        fills.last_index_ns = max(fills.last_index_ns, at)
        self._wrote(self.fills, symbol)

    def _amend(
        self, symbol: str, fills: _EventLog, sequence: int, amendment: CommissionAmendment
    ) -> None:
        """Keeps the late commission in `commissions` and sets it on the fill's row."""
        log_state = self._log(self.commissions, symbol)
        row = numeric_commission(_commission_row(sequence, amendment))
        self._append_rows(
            self.commissions, symbol, log_state, [row] if sequence > log_state.last_sequence
            else [], [amendment.timestamp_ns], COMMISSION_COLUMNS, "reported_at",
        )  # fmt: skip
        if sequence <= fills.last_sequence:
            return
        found = self._find_fill(symbol, amendment.fill_id, amendment.timestamp_ns)
        fills.last_sequence = sequence
        if found is None:
            log.warning("fills/%s: no row of %s for late commission %s", symbol,
                        amendment.fill_id, amendment.amendment_id)  # fmt: skip
            return
        stored, at = self._stored_row(found)
        stored[FILL_COLUMNS.index("commission")] = float(amendment.commission)
        stored[FILL_COLUMNS.index("commission_exact")] = canonical(amendment.commission)
        if amendment.commission_currency:
            stored[FILL_COLUMNS.index("commission_currency")] = amendment.commission_currency
        stored[FILL_COLUMNS.index("amended_by")] = amendment.amendment_id
        frame = self._frame_of([tuple(stored)], [at], FILL_COLUMNS, "fill_time")
        self.fills.update(
            symbol, frame, metadata={"sequence": sequence}, prune_previous_versions=True
        )
        self._wrote(self.fills, symbol)

    def _record_runs(self, runs: Iterable[ReconciliationRun]) -> list[ReconciliationRun]:
        """Appends each account's reconciliation reports; returns the runs not written."""
        by_account: dict[str, list[ReconciliationRun]] = defaultdict(list)
        for run in runs:
            by_account[run.reconciliation.account_id].append(run)
        left: list[ReconciliationRun] = []
        for account_id, account_runs in by_account.items():
            reports = sorted((run.reconciliation for run in account_runs), key=lambda r: r.sequence)
            write = functools.partial(self._write_reports, account_id, reports)
            if not self._attempt(self.reconciliations.name, account_id, reports[0].sequence, write):
                left.extend(account_runs)
        return left

    def _write_reports(self, account_id: str, reports: list[Reconciliation]) -> None:
        state = self._log(self.reconciliations, account_id)
        table = [
            row
            for report in reports
            if report.sequence > state.last_sequence
            for row in _reconciliation_rows(report)
        ]
        times = [int(row[2]) for row in table]  # type: ignore[call-overload]
        self._append_rows(
            self.reconciliations, account_id, state, table, times,
            RECONCILIATION_COLUMNS, "reconciled_at",
        )  # fmt: skip

    def _append_events(
        self,
        library: adb.library.Library,
        symbol: str,
        state: _EventLog,
        rows: list[Sequenced],
        judged: dict[int, OrderTransition],
    ) -> None:
        appended: list[tuple[object, ...]] = []
        times = []
        pending: dict[tuple[str, int], int] = {}  # (order_key, time) -> index in appended
        for sequence, event in rows:
            assert isinstance(event, OrderStatusUpdate)
            item = judged.get(sequence)
            row = _order_row(sequence, event, item)
            key = (item.order_key, event.timestamp_ns) if item else None
            if key and item and item.transition and item.transition.corrects:
                if key in pending:  # its original is in this very write
                    appended[pending[key]] = row
                    continue
                # Read only when a correction needs it: where the original row is stored.
                at = self._transitions(symbol, state).get(key)
                if at is not None:
                    frame = self._frame_of([row], [at], ORDER_COLUMNS, "status_time")
                    library.update(symbol, frame, prune_previous_versions=True)
                    continue
            if key:
                pending[key] = len(appended)
            appended.append(row)
            times.append(event.timestamp_ns)
        first_index = state.last_index_ns
        self._append_rows(library, symbol, state, appended, times, ORDER_COLUMNS, "status_time")
        state.last_sequence = rows[-1][0]
        if state.transitions is not None:
            last = first_index
            for row, time_ns in zip(appended, times, strict=True):
                last = max(time_ns, last + 1)
                state.transitions[(str(row[3]), time_ns)] = last

    def _transitions(self, symbol: str, state: _EventLog) -> dict[tuple[str, int], int]:
        if state.transitions is None:
            state.transitions = {}
            if self.orders.has_symbol(symbol):
                frame = self.orders.read(symbol, columns=["order_key", "status_time"]).data
                times = frame["status_time"].astype("int64")
                for key, time_ns, index in zip(
                    frame["order_key"], times, frame.index.asi8, strict=True
                ):
                    state.transitions[(key, int(time_ns))] = int(index)
        return state.transitions

    @staticmethod
    def _frame_of(
        rows: list[tuple[object, ...]], index: list[int], columns: list[str], time_column: str
    ) -> pd.DataFrame:
        frame = pd.DataFrame(rows, columns=columns)
        frame["sequence"] = frame["sequence"].astype("int64")
        frame[time_column] = pd.to_datetime(frame[time_column].astype("int64"), unit="ns", utc=True)
        frame.index = _utc(index)
        return frame

    def _append_rows(
        self,
        library: adb.library.Library,
        symbol: str,
        state: _EventLog,
        rows: list[tuple[object, ...]],
        times: list[int],
        columns: list[str],
        time_column: str,
    ) -> None:
        if not rows:
            return
        index = []
        last = state.last_index_ns
        for time_ns in times:
            last = max(time_ns, last + 1)
            index.append(last)
        frame = self._frame_of(rows, index, columns, time_column)
        metadata = {"sequence": int(frame["sequence"].max())}
        if library.has_symbol(symbol):
            library.append(symbol, frame, metadata=metadata, prune_previous_versions=True)
        else:
            library.write(symbol, frame, metadata=metadata, prune_previous_versions=True)
        state.last_index_ns, state.last_sequence = last, int(frame["sequence"].iloc[-1])
        self._wrote(library, symbol)

    def last_recorded(self, symbols: Iterable[tuple[str, str]]) -> int:
        """The smallest last sequence recorded over (kind, account_id) symbols."""
        lasts = [
            self._log(self._library_of_kind[kind], account_id).last_sequence
            for kind, account_id in symbols
            if kind in self._library_of_kind and not unholdable(account_id)
        ]
        return min(lasts, default=0)

    # -- history: position snapshots and balances, appended ----------------------------------

    def _snapshot_log(self, library: adb.library.Library, symbol: str) -> _EventLog:
        """Where an appended history symbol ends, and the last sequence its rows hold (in
        its metadata, so a restart that hands every row over again appends none twice)."""
        key = (library.name, symbol)
        state = self._snapshot_logs.get(key)
        if state is None:
            state = _EventLog()
            if library.has_symbol(symbol):
                state.last_index_ns = int(library.tail(symbol, 1, columns=[]).data.index[-1].value)
                metadata = library.read_metadata(symbol).metadata or {}
                state.last_sequence = int(metadata.get("sequence", 0))
                state.transitions = {("close", 0): int(metadata.get("close", -1))}
            self._snapshot_logs[key] = state
        return state

    def _append_history(
        self,
        library: adb.library.Library,
        symbol: str,
        rows: list[tuple[object, ...]],
        times: list[int],
        columns: list[str],
        close_ns: int | None = None,
    ) -> None:
        """Appends rows (each row's last_sequence is its second to last... see callers) at
        their times, nudged so that the index keeps increasing."""
        state = self._snapshot_log(library, symbol)
        if not rows:
            return
        index, last = [], state.last_index_ns
        for time_ns in times:
            last = max(time_ns, last + 1)
            index.append(last)
        frame = pd.DataFrame(rows, columns=columns)
        for name in ("last_sequence", "trade_count"):
            if name in frame:
                frame[name] = frame[name].astype("int64")
        for name in ("snapshot_time", "timestamp", "updated_at"):
            if name in frame:
                frame[name] = pd.to_datetime(frame[name].astype("int64"), unit="ns", utc=True)
        frame.index = _utc(index)
        through = max(state.last_sequence, int(frame["last_sequence"].max()))
        closed = state.transitions[("close", 0)] if state.transitions else -1
        metadata = {"sequence": through, "close": close_ns if close_ns is not None else closed}
        if library.has_symbol(symbol):
            library.append(symbol, frame, metadata=metadata, prune_previous_versions=True)
        else:
            library.write(symbol, frame, metadata=metadata, prune_previous_versions=True)
        state.last_index_ns, state.last_sequence = last, through
        state.transitions = {("close", 0): int(metadata["close"])}
        self._wrote(library, symbol)

    def _closed_through(self, library: adb.library.Library, symbol: str) -> int:
        state = self._snapshot_log(library, symbol)
        return state.transitions[("close", 0)] if state.transitions else -1

    def _snapshot(self, account_id: str, views: list[PositionView], time_ns: int) -> None:
        since = self._snapshot_log(self.position_history, account_id).last_sequence
        rows = [
            (time_ns, "interval", *_position_row(0, view)[1:])
            for view in views
            if view.last_sequence > since
        ]
        self._append_history(
            self.position_history, account_id, rows, [time_ns] * len(rows), HISTORY_COLUMNS
        )

    def _record_history(self, changed: Iterable[PositionView]) -> None:
        """Every `history_seconds`, appends to `position_history` (symbol = account) the
        rows changed since the last snapshot, at the snapshot's time: one append per account,
        so its cost follows what changed, not the size of the book. A snapshot is taken by
        the first view write after the interval (and at the next start for what a stop left)."""
        if self.history_seconds is None:
            return
        first = self._history_first
        for view in changed:
            self._history_pending[view.key] = view
            if view.last_sequence and (not first or view.last_sequence < first):
                first = view.last_sequence
        self._history_first = first
        failing = any(key[0] == self.position_history.name for key in self._failing)
        if not self._history_pending or (
            not failing and self.clock() - self._history_at < self.history_seconds
        ):
            return
        self._history_at = self.clock()
        now_ns = self.wall_clock_ns()
        by_account: dict[str, list[PositionView]] = defaultdict(list)
        for view in self._history_pending.values():
            by_account[view.key.account_id].append(view)
        for account_id, views in by_account.items():
            write = functools.partial(self._snapshot, account_id, views, now_ns)
            if self._attempt(self.position_history.name, account_id, 0, write):
                for view in views:
                    if self._history_pending.get(view.key) is view:
                        del self._history_pending[view.key]
        self._history_first = min(
            (v.last_sequence for v in self._history_pending.values() if v.last_sequence),
            default=0,
        )

    def flush_history(self) -> None:
        """At a stop: snapshots the rows changed since the last snapshot now, rather than at
        the interval's end (which holds the watermark back: the next start would hand every
        row over again for them), and saves the watermark. What fails stays pending (logged
        by its symbol's write as any other) and keeps the stored watermark back."""
        if not self._history_pending or self.history_seconds is None:
            return
        self._history_at = -math.inf
        self._record_history(())
        self._save_watermark()

    def _record_balances(self, balances: Iterable[Balance]) -> None:
        """Appends to `balances` (symbol = account) each balance a view write was handed,
        its latest state once per write (coalesced), at the time it changed."""
        for balance in balances:
            self._balances_pending[balance.key] = balance
        by_account: dict[str, list[Balance]] = defaultdict(list)
        for balance in self._balances_pending.values():
            by_account[balance.key.account_id].append(balance)
        for account_id, held in by_account.items():
            first = min(balance.last_sequence for balance in held)
            write = functools.partial(self._append_balances, account_id, held, "change", None)
            if self._attempt(self.balances.name, account_id, first, write):
                for balance in held:
                    if self._balances_pending.get(balance.key) is balance:
                        del self._balances_pending[balance.key]

    def _append_balances(
        self, account_id: str, balances: list[Balance], reason: str, close_ns: int | None
    ) -> None:
        since = self._snapshot_log(self.balances, account_id).last_sequence
        chosen = [b for b in balances if close_ns is not None or b.last_sequence > since]
        rows = [_balance_row(balance, reason) for balance in chosen]
        times = [close_ns if close_ns is not None else b.updated_at_ns for b in chosen]
        self._append_history(self.balances, account_id, rows, times, BALANCE_COLUMNS, close_ns)

    def record_close(
        self, close_ns: int, positions: Iterable[PositionView], balances: Iterable[Balance]
    ) -> None:
        """At a trading day's close: appends every row and balance given (each account's,
        whether it changed or not) to `position_history` and `balances` with reason `close`,
        at the close's time. Called again for a close already recorded (a retry, a restart)
        it appends nothing. Raises what the store raises (nothing half-recorded is marked
        done: a retry appends what is missing)."""
        if self.writer is not None and self.writer.takes_writes():
            self.writer.record_close(self._settings(), close_ns, positions, balances)
            return
        by_account: dict[str, list[PositionView]] = defaultdict(list)
        for view in positions:
            by_account[view.key.account_id].append(view)
        cash: dict[str, list[Balance]] = defaultdict(list)
        for balance in balances:
            cash[balance.key.account_id].append(balance)
        for account_id in sorted(by_account.keys() | cash.keys()):
            if reason := unholdable(account_id):
                self._skipped.setdefault(
                    ("position_history", account_id),
                    f"the store cannot hold a symbol with {reason}",
                )
                continue
            views = by_account.get(account_id, [])
            if views and self._closed_through(self.position_history, account_id) < close_ns:
                rows = [(close_ns, "close", *_position_row(0, view)[1:]) for view in views]
                self._append_history(
                    self.position_history, account_id, rows, [close_ns] * len(rows),
                    HISTORY_COLUMNS, close_ns,
                )  # fmt: skip
            held = cash.get(account_id, [])
            if held and self._closed_through(self.balances, account_id) < close_ns:
                self._append_balances(account_id, held, "close", close_ns)

    # -- positions and portfolio -----------------------------------------------------------

    def _table(self, library: adb.library.Library, symbol: str) -> _RowTable:
        key = (library.name, symbol)
        table = self._tables.get(key)
        if table is None:
            table = _RowTable()
            if library.has_symbol(symbol):
                current_layout(library, symbol)
                frame = library.read(symbol).data
                frame["timestamp"] = frame["timestamp"].astype("int64")
                for row in frame.itertuples(index=False):
                    table.slots[(row.account_id, row.strategy_id, row.instrument_id)] = row.slot
                    table.rows.append(tuple(row))
            self._tables[key] = table
        return table

    def _record_positions(self, views: Iterable[PositionView]) -> set[PositionKey]:
        """Writes the given rows' latest state into `positions` and `portfolio`, one symbol at
        a time; returns the keys of the rows not written."""
        grouped: dict[tuple[str, str], dict[PositionKey, PositionView]] = defaultdict(dict)
        for view in views:
            key = view.key
            grouped[("portfolio", key.account_id)][key] = view
            if not key.is_account_level and not view.residual:
                grouped[("positions", key.strategy_id)][key] = view
        left: set[PositionKey] = set()
        for (library_name, symbol), changed in grouped.items():
            library = self.portfolio if library_name == "portfolio" else self.positions
            rows = list(changed.values())
            write = functools.partial(self._upsert, library, symbol, rows)
            # A symbol that fails holds the watermark below its rows' lowest last change: a
            # restart hands those rows over again (it hands only the rows changed since).
            first = min((view.last_sequence for view in rows if view.last_sequence), default=0)
            if not self._attempt(library_name, symbol, first, write):
                left.update(changed)
        return left

    def _upsert(
        self,
        library: adb.library.Library,
        symbol: str,
        changed: list[PositionView],
    ) -> None:
        table = self._table(library, symbol)
        updated: list[int] = []
        added: list[tuple[object, ...]] = []
        for view in changed:
            slot = table.slots.get(view.key)
            if slot is None:
                slot = len(table.rows) + len(added)
                table.slots[view.key] = slot
                added.append(_position_row(slot, view))
            else:
                table.rows[slot] = _position_row(slot, view)
                updated.append(slot)
        for first, last in _runs(sorted(updated)):
            library.update(
                symbol, self._frame(table.rows[first : last + 1]), prune_previous_versions=True
            )
        if added:
            table.rows.extend(added)
            if library.has_symbol(symbol):
                library.append(symbol, self._frame(added), prune_previous_versions=True)
            else:
                library.write(symbol, self._frame(added), prune_previous_versions=True)
        self._wrote(library, symbol)

    @staticmethod
    def _frame(rows: list[tuple[object, ...]]) -> pd.DataFrame:
        frame = pd.DataFrame(rows, columns=POSITION_COLUMNS)
        for name in ("slot", "trade_count", "last_sequence"):
            frame[name] = frame[name].astype("int64")
        frame["timestamp"] = pd.to_datetime(frame["timestamp"].astype("int64"), unit="ns", utc=True)
        frame.index = pd.DatetimeIndex(
            pd.to_datetime(frame["slot"], unit="ns", utc=True), name="slot_index"
        )
        return frame


def _balance_row(balance: Balance, reason: str) -> tuple[object, ...]:
    key = balance.key
    available = balance.available
    return (
        key.account_id, key.currency, key.chain_id, float(balance.cash), float(balance.reserved),
        float(available), canonical(balance.cash), canonical(balance.reserved),
        canonical(available), balance.updated_at_ns, balance.last_sequence, reason,
    )  # fmt: skip


def _runs(slots: list[int]) -> list[tuple[int, int]]:
    """Contiguous runs of slots; past MAX_RUNS, one span from the first to the last."""
    runs: list[tuple[int, int]] = []
    for slot in slots:
        if runs and slot == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], slot)
        else:
            runs.append((slot, slot))
    if len(runs) > MAX_RUNS:
        return [(runs[0][0], runs[-1][1])]
    return runs
