"""Domain values as DataFrames and back, losslessly.

Amounts are stored as canonical decimal strings (reading one back gives the exact value that
came in), times as UTC datetime64[ns] and as integer nanoseconds where the engine needs them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from decimal import Decimal

import pandas as pd

from server.domain.decimals import canonical
from server.domain.events import ExecutionEvent, Fill, OrderStatus, OrderStatusUpdate, Side
from server.domain.position import Position, PositionKey

Sequenced = tuple[int, ExecutionEvent]

# -- the journal: every accepted event, indexed by sequence -----------------------------------

JOURNAL_COLUMNS = [
    "sequence", "kind", "event_id", "digest", "event_time", "account_id", "strategy_id",
    "instrument_id", "side", "quantity", "price", "commission", "commission_currency",
    "order_ref", "order_id", "venue", "trace_id", "status", "perm_id", "filled_quantity",
    "remaining_quantity", "avg_fill_price",
]  # fmt: skip


def _journal_row(sequence: int, event: ExecutionEvent) -> tuple[object, ...]:
    if isinstance(event, Fill):
        return (
            sequence, "fill", event.fill_id, event.fingerprint(), event.timestamp_ns,
            event.account_id, event.strategy_id, event.instrument_id, event.side.name,
            canonical(event.quantity), canonical(event.price), canonical(event.commission),
            event.commission_currency, event.order_ref, event.order_id, event.venue,
            event.trace_id, "", "", "", "", "",
        )  # fmt: skip
    return (
        sequence, "status", event.update_id, event.fingerprint(), event.timestamp_ns,
        event.account_id, event.strategy_id, event.instrument_id,
        event.side.name if event.side else "", "", "", "", "", event.order_ref, event.order_id,
        "", "", event.status.name, event.perm_id, canonical(event.filled_quantity),
        canonical(event.remaining_quantity),
        canonical(event.avg_fill_price) if event.avg_fill_price is not None else "",
    )  # fmt: skip


def journal_frame(group: Sequence[Sequenced]) -> pd.DataFrame:
    """One row per event; the RangeIndex is the sequence, so ArcticDB itself refuses a gap
    or an overlap on append."""
    frame = pd.DataFrame([_journal_row(s, e) for s, e in group], columns=JOURNAL_COLUMNS)
    frame["sequence"] = frame["sequence"].astype("int64")
    frame["digest"] = frame["digest"].astype("int64")
    frame["event_time"] = pd.to_datetime(frame["event_time"].astype("int64"), unit="ns", utc=True)
    frame.index = pd.RangeIndex(group[0][0], group[-1][0] + 1)
    return frame


def events_from_journal(frame: pd.DataFrame) -> Iterator[Sequenced]:
    times = frame["event_time"].astype("int64")  # ns since the epoch
    for row, time_ns in zip(frame.itertuples(index=False), times, strict=True):
        if row.kind == "fill":
            yield (
                int(row.sequence),
                Fill(
                    fill_id=row.event_id,
                    account_id=row.account_id,
                    strategy_id=row.strategy_id,
                    instrument_id=row.instrument_id,
                    side=Side[row.side],
                    quantity=Decimal(row.quantity),
                    price=Decimal(row.price),
                    timestamp_ns=int(time_ns),
                    commission=Decimal(row.commission),
                    commission_currency=row.commission_currency,
                    order_ref=row.order_ref,
                    order_id=row.order_id,
                    venue=row.venue,
                    trace_id=row.trace_id,
                ),
            )
        else:
            yield (
                int(row.sequence),
                OrderStatusUpdate(
                    update_id=row.event_id,
                    account_id=row.account_id,
                    status=OrderStatus[row.status],
                    timestamp_ns=int(time_ns),
                    strategy_id=row.strategy_id,
                    order_ref=row.order_ref,
                    order_id=row.order_id,
                    perm_id=row.perm_id,
                    instrument_id=row.instrument_id,
                    side=Side[row.side] if row.side else None,
                    filled_quantity=Decimal(row.filled_quantity),
                    remaining_quantity=Decimal(row.remaining_quantity),
                    avg_fill_price=Decimal(row.avg_fill_price) if row.avg_fill_price else None,
                ),
            )


# -- checkpoints: every position row, exactly -------------------------------------------------

CHECKPOINT_COLUMNS = [
    "account_id", "strategy_id", "instrument_id", "multiplier", "quantity", "cost_basis",
    "realized_pnl", "fees", "trade_count", "opened_at_ns", "updated_at_ns", "last_sequence",
    "market_price",
]  # fmt: skip


def checkpoint_frame(rows: Sequence[tuple[Position, Decimal]]) -> pd.DataFrame:
    frame = pd.DataFrame(
        [
            (
                *row.key,
                canonical(row.multiplier),
                canonical(row.quantity),
                canonical(row.cost_basis),
                canonical(row.realized_pnl),
                canonical(row.fees),
                row.trade_count,
                row.opened_at_ns,
                row.updated_at_ns,
                row.last_sequence,
                canonical(mark),
            )
            for row, mark in rows
        ],
        columns=CHECKPOINT_COLUMNS,
    )
    for name in ("trade_count", "opened_at_ns", "updated_at_ns", "last_sequence"):
        frame[name] = frame[name].astype("int64")
    return frame


def rows_from_checkpoint(frame: pd.DataFrame) -> Iterator[tuple[Position, Decimal]]:
    for row in frame.itertuples(index=False):
        yield (
            Position(
                key=PositionKey(row.account_id, row.strategy_id, row.instrument_id),
                multiplier=Decimal(row.multiplier),
                quantity=Decimal(row.quantity),
                cost_basis=Decimal(row.cost_basis),
                realized_pnl=Decimal(row.realized_pnl),
                fees=Decimal(row.fees),
                trade_count=int(row.trade_count),
                opened_at_ns=int(row.opened_at_ns),
                updated_at_ns=int(row.updated_at_ns),
                last_sequence=int(row.last_sequence),
            ),
            Decimal(row.market_price),
        )
