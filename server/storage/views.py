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
  `timestamp` column is the row's last change, `slot` its number.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import arcticdb as adb
import pandas as pd

from server.application.ports import OrderTransition, ReconciliationRun, Sequenced
from server.domain.book import PositionView
from server.domain.decimals import canonical
from server.domain.events import Fill, FillCorrection, OrderStatusUpdate
from server.domain.reconciliation import Reconciliation

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
]  # fmt: skip
MAX_RUNS = 4  # beyond this many runs of changed slots, one update() resends the whole span
COMPACT_EVERY = 500  # writes to one symbol between compactions of its segments


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
        self.reconciliations = arctic.get_library("reconciliations", create_if_missing=True)
        # The event log of each kind of journaled event that has one.
        self._library_of_kind = {
            "fill": self.fills, "status": self.orders, "correction": self.corrections,
            "broker_positions": self.reconciliations,
        }  # fmt: skip
        self._logs: dict[tuple[str, str], _EventLog] = {}
        self._tables: dict[tuple[str, str], _RowTable] = {}
        self._writes: dict[tuple[str, str], int] = defaultdict(int)

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
                tail = library.tail(symbol, 1, columns=["sequence"]).data
                state.last_index_ns = int(tail.index[-1].value)
                state.last_sequence = int(tail["sequence"].iloc[-1])
            self._logs[key] = state
        return state

    def record_events(
        self,
        events: Iterable[Sequenced],
        transitions: Iterable[OrderTransition] = (),
        runs: Iterable[ReconciliationRun] = (),
    ) -> None:
        """Appends each account's new fills, corrections, status changes and reconciliation
        reports: one append per symbol, and an update() per corrected transition."""
        judged = {item.sequence: item for item in transitions}
        grouped: dict[tuple[str, str], list[Sequenced]] = defaultdict(list)
        for sequence, event in events:
            if isinstance(event, Fill | OrderStatusUpdate | FillCorrection):
                grouped[(event.kind, event.account_id)].append((sequence, event))
        for (kind, account_id), rows in grouped.items():
            library = self._library_of_kind[kind]
            state = self._log(library, account_id)
            rows = [(s, e) for s, e in rows if s > state.last_sequence]
            if not rows:
                continue
            if kind == "correction":
                table = [_correction_row(s, e) for s, e in rows if isinstance(e, FillCorrection)]
                times = [e.timestamp_ns for _, e in rows]
                self._append_rows(
                    library, account_id, state, table, times, CORRECTION_COLUMNS, "fill_time"
                )
            else:
                self._append_events(library, account_id, state, rows, judged)
        by_account: dict[str, list[Reconciliation]] = defaultdict(list)
        for run in runs:
            by_account[run.reconciliation.account_id].append(run.reconciliation)
        for account_id, reports in by_account.items():
            state = self._log(self.reconciliations, account_id)
            table = [
                row
                for report in sorted(reports, key=lambda r: r.sequence)
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
            if kind in self._library_of_kind
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
                for row in frame.itertuples(index=False):
                    table.slots[(row.account_id, row.strategy_id, row.instrument_id)] = row.slot
                    table.rows.append(tuple(row))
            self._tables[key] = table
        return table

    def record_positions(self, views: Iterable[PositionView]) -> None:
        """Writes the given rows' latest state into `positions` and `portfolio`."""
        grouped: dict[tuple[str, str], dict[tuple[str, str, str], PositionView]] = defaultdict(dict)
        for view in views:
            key = view.key
            grouped[("portfolio", key.account_id)][key] = view
            if not key.is_account_level and not view.residual:
                grouped[("positions", key.strategy_id)][key] = view
        for (library_name, symbol), changed in grouped.items():
            library = self.portfolio if library_name == "portfolio" else self.positions
            self._upsert(library, symbol, list(changed.values()))

    def _upsert(
        self, library: adb.library.Library, symbol: str, changed: list[PositionView]
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
