"""Domain values as DataFrames and back, losslessly.

Amounts are stored as canonical decimal strings (reading one back gives the exact value that
came in), times as UTC datetime64[ns] and as integer nanoseconds where the engine needs them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from decimal import Decimal

import numpy as np
import pandas as pd

from server.domain.book import Price
from server.domain.codec import fingerprint_of
from server.domain.decimals import canonical
from server.domain.events import EVENT_KINDS, ExecutionEvent
from server.domain.marks import MarkSource
from server.domain.position import Position, PositionKey

Sequenced = tuple[int, ExecutionEvent]

# -- the journal: every accepted event, indexed by sequence -----------------------------------
# The journal is the service's own log: a few columns to find rows by, and the event itself as
# its canonical text (`Fill.text`), which keeps each append small and cheap.

JOURNAL_COLUMNS = ["sequence", "kind", "event_id", "account_id", "event_time", "digest", "text"]


def journal_frame(group: Sequence[Sequenced]) -> pd.DataFrame:
    """One row per event; the RangeIndex is the sequence, so ArcticDB itself refuses a gap
    or an overlap on append."""
    texts = [event.text() for _, event in group]
    return pd.DataFrame(
        {
            "sequence": np.fromiter((s for s, _ in group), "int64", len(group)),
            "kind": [event.kind for _, event in group],
            "event_id": [event.event_id for _, event in group],
            "account_id": [event.account_id for _, event in group],
            "event_time": pd.to_datetime(
                np.fromiter((e.timestamp_ns for _, e in group), "int64", len(group)), utc=True
            ),
            "digest": np.fromiter((fingerprint_of(t) for t in texts), "int64", len(group)),
            "text": texts,
        },
        index=pd.RangeIndex(group[0][0], group[-1][0] + 1),
    )


def events_from_journal(frame: pd.DataFrame) -> Iterator[Sequenced]:
    for sequence, kind, text in zip(frame["sequence"], frame["kind"], frame["text"], strict=True):
        event: ExecutionEvent = EVENT_KINDS[kind].from_text(text)
        yield int(sequence), event


# -- checkpoints: every position row, exactly -------------------------------------------------

CHECKPOINT_COLUMNS = [
    "account_id", "strategy_id", "instrument_id", "multiplier", "quantity", "cost_basis",
    "realized_pnl", "fees", "trade_count", "opened_at_ns", "updated_at_ns", "last_sequence",
    "currency", "fill_price", "fill_price_time_ns",
]  # fmt: skip


def checkpoint_frame(rows: Sequence[tuple[Position, Price]]) -> pd.DataFrame:
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
                row.currency,
                canonical(price.price),
                price.time_ns,
            )
            for row, price in rows
        ],
        columns=CHECKPOINT_COLUMNS,
    )
    for name in ("trade_count", "opened_at_ns", "updated_at_ns", "last_sequence",
                 "fill_price_time_ns"):  # fmt: skip
        frame[name] = frame[name].astype("int64")
    return frame


def rows_from_checkpoint(frame: pd.DataFrame) -> Iterator[tuple[Position, Price]]:
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
                currency=row.currency,
            ),
            Price(Decimal(row.fill_price), MarkSource.LAST_FILL, int(row.fill_price_time_ns)),
        )
