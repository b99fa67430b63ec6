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
journal's start.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import arcticdb as adb
import pandas as pd

from server.application.ports import (
    OrderTransition,
    ReconciliationRun,
    Sequenced,
    ViewsIncomplete,
)
from server.domain.book import PositionView
from server.domain.decimals import canonical
from server.domain.events import CommissionAmendment, Fill, FillCorrection, OrderStatusUpdate
from server.domain.position import PositionKey
from server.domain.reconciliation import Reconciliation
from server.storage.upcasters import current_view

log = logging.getLogger("portfolio.views")

FILL_COLUMNS = [
    "fill_id", "sequence", "fill_time", "strategy_id", "instrument_id", "side", "quantity",
    "price", "commission", "commission_currency", "order_ref", "order_id", "venue", "trace_id",
]  # fmt: skip
ORDER_COLUMNS = [
    "update_id", "sequence", "status_time", "order_key", "strategy_id", "order_ref", "order_id",
    "perm_id", "instrument_id", "side", "status", "filled_quantity", "remaining_quantity",
    "avg_fill_price", "flag", "replaced", "corrects",
]  # fmt: skip
CORRECTION_COLUMNS = [
    "correction_id", "corrects", "sequence", "fill_time", "strategy_id", "instrument_id",
    "side", "quantity", "price", "commission", "commission_currency", "order_ref", "order_id",
    "venue",
]  # fmt: skip
COMMISSION_COLUMNS = [
    "amendment_id", "fill_id", "sequence", "reported_at", "commission", "commission_currency",
]  # fmt: skip
RECONCILIATION_COLUMNS = [
    "snapshot_id", "sequence", "reconciled_at", "instrument_id", "status", "discrepancy",
    "broker_quantity", "broker_avg_cost", "broker_unit_cost", "account_quantity",
    "service_avg_cost", "attributed_quantity", "residual_quantity", "residual_owner",
    "residual_avg_cost", "strategies", "note", "broker_positions", "matched", "discrepancies",
]  # fmt: skip
POSITION_COLUMNS = [
    "slot", "timestamp", "account_id", "strategy_id", "instrument_id", "level", "quantity",
    "avg_cost", "cost_basis", "realized_pnl", "unrealized_pnl", "fees", "net_pnl",
    "market_price", "market_value", "multiplier", "trade_count", "last_sequence",
    # Added by issue 11 (a symbol written without them is rewritten once with them empty):
    "currency", "base_currency", "fx_rate", "realized_pnl_base", "unrealized_pnl_base",
    "fees_base", "net_pnl_base", "market_value_base", "other_fees",
]  # fmt: skip
POSITION_COLUMNS_BEFORE_CURRENCY = POSITION_COLUMNS[: POSITION_COLUMNS.index("currency")]
MAX_RUNS = 4  # beyond this many runs of changed slots, one update() resends the whole span
COMPACT_EVERY = 500  # writes to one symbol between compactions of its segments
FIRST_RETRY, LAST_RETRY = 1.0, 60.0  # a failing symbol's back-off, seconds
# Events one failing symbol may hold back in memory; beyond, it waits for the next start,
# which catches it up from the journal (its rows cannot be written later out of order).
HOLD_LIMIT = 100_000
WATERMARK = ("checkpoints", "views_through")  # library, symbol
MAX_SYMBOL_CHARACTERS = 254  # measured on arcticdb 6.28: 255 fails


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
    first_unwritten: int  # the lowest sequence it holds back (0: rows, which are rewritten)
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
    key = view.key
    return (
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
    )  # fmt: skip


@dataclass
class _RowTable:
    """A symbol of position rows, one slot per row key."""

    slots: dict[tuple[str, str, str], int] = field(default_factory=dict)
    rows: list[tuple[object, ...]] = field(default_factory=list)  # by slot, as written


class ArcticViews:
    def __init__(self, arctic: adb.Arctic) -> None:
        self.fills = arctic.get_library("fills", create_if_missing=True)
        self.orders = arctic.get_library("orders", create_if_missing=True)
        self.positions = arctic.get_library("positions", create_if_missing=True)
        self.portfolio = arctic.get_library("portfolio", create_if_missing=True)
        self.corrections = arctic.get_library("corrections", create_if_missing=True)
        self.commissions = arctic.get_library("commissions", create_if_missing=True)
        self.reconciliations = arctic.get_library("reconciliations", create_if_missing=True)
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

    def _log(self, library: adb.library.Library, symbol: str) -> _EventLog:
        key = (library.name, symbol)
        state = self._logs.get(key)
        if state is None:
            state = _EventLog()
            if library.has_symbol(symbol):
                if library is self.orders:  # an earlier release's layout: rewritten once
                    current_view(library, symbol, ORDER_COLUMNS)
                tail = library.tail(symbol, 1, columns=["sequence"]).data
                state.last_index_ns = int(tail.index[-1].value)
                state.last_sequence = int(tail["sequence"].iloc[-1])
            self._logs[key] = state
        return state

    def record(
        self,
        events: Sequence[Sequenced],
        positions: Iterable[PositionView],
        transitions: Iterable[OrderTransition] = (),
        runs: Sequence[ReconciliationRun] = (),
    ) -> None:
        """Writes each symbol's new rows on its own; raises ViewsIncomplete naming what was
        not written (and what to hand over again) when a symbol failed or was skipped."""
        skipped_before = len(self._skipped)
        events_left = self._record_events(events, transitions)
        runs_left = self._record_runs(runs)
        residuals = [row for run in runs for row in run.residuals]
        keys_left = self._record_positions([*positions, *residuals])
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
        """Every event up to this sequence has its rows written, or skipped for good."""
        held_back = [f.first_unwritten for f in self._failing.values() if f.first_unwritten]
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
        """Appends each account's new fills, corrections and status changes (one append per
        symbol, an update() per corrected transition); returns those not written."""
        judged = {item.sequence: item for item in transitions}
        grouped: dict[tuple[str, str], list[Sequenced]] = defaultdict(list)
        for sequence, event in events:
            if isinstance(event, Fill | OrderStatusUpdate | FillCorrection | CommissionAmendment):
                grouped[(event.kind, event.account_id)].append((sequence, event))
        left: list[Sequenced] = []
        for (kind, account_id), rows in grouped.items():
            library = self._library_of_kind[kind]
            write = functools.partial(self._write_log, library, account_id, kind, rows, judged)
            if not self._attempt(library.name, account_id, rows[0][0], write, len(rows)):
                left.extend(rows)
        return left

    def _write_log(
        self,
        library: adb.library.Library,
        symbol: str,
        kind: str,
        rows: list[Sequenced],
        judged: dict[int, OrderTransition],
    ) -> None:
        state = self._log(library, symbol)
        rows = [(s, e) for s, e in rows if s > state.last_sequence]
        if not rows:
            return
        if kind == "correction":
            table = [_correction_row(s, e) for s, e in rows if isinstance(e, FillCorrection)]
            times = [e.timestamp_ns for _, e in rows]
            self._append_rows(library, symbol, state, table, times, CORRECTION_COLUMNS, "fill_time")
        elif kind == "commission":
            table = [_commission_row(s, e) for s, e in rows if isinstance(e, CommissionAmendment)]
            times = [e.timestamp_ns for _, e in rows]
            self._append_rows(
                library, symbol, state, table, times, COMMISSION_COLUMNS, "reported_at"
            )
        else:
            self._append_events(library, symbol, state, rows, judged)

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
        if library is self.fills:
            table = [_fill_row(s, e) for s, e in rows if isinstance(e, Fill)]
            times = [e.timestamp_ns for _, e in rows]
            self._append_rows(library, symbol, state, table, times, FILL_COLUMNS, "fill_time")
            return
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
        if library.has_symbol(symbol):
            library.append(symbol, frame, prune_previous_versions=True)
        else:
            library.write(symbol, frame, prune_previous_versions=True)
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

    # -- positions and portfolio -----------------------------------------------------------

    def _table(self, library: adb.library.Library, symbol: str) -> _RowTable:
        key = (library.name, symbol)
        table = self._tables.get(key)
        if table is None:
            table = _RowTable()
            if library.has_symbol(symbol):
                frame = library.read(symbol).data
                frame["timestamp"] = frame["timestamp"].astype("int64")
                stored = list(frame.columns)
                if stored != POSITION_COLUMNS:
                    frame = _with_currency_columns(frame, stored, f"{library.name}/{symbol}")
                for row in frame.itertuples(index=False):
                    table.slots[(row.account_id, row.strategy_id, row.instrument_id)] = row.slot
                    table.rows.append(tuple(row))
                if stored != POSITION_COLUMNS:
                    library.write(symbol, self._frame(table.rows), prune_previous_versions=True)
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
            write = functools.partial(self._upsert, library, symbol, list(changed.values()))
            if not self._attempt(library_name, symbol, 0, write):
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


def _with_currency_columns(frame: pd.DataFrame, stored: list[str], name: str) -> pd.DataFrame:
    """Rows written before issue 11, with its columns added empty (the row's currency and base
    figures were not recorded; the row's next change fills them). Columns this version does
    not know (a newer version's) are refused rather than dropped."""
    if stored != POSITION_COLUMNS_BEFORE_CURRENCY:
        raise ValueError(f"{name} has columns this version does not know how to extend: {stored}")
    return frame.reindex(columns=POSITION_COLUMNS, fill_value="")


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
