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
# A row with a restatement window also has an anchor row (`anchor` True): its figures before
# the window; the window's fills are read back from the journal. Checkpoints written before
# these columns existed read with no anchors (see rows_from_checkpoint).

CHECKPOINT_COLUMNS = [
    "account_id", "strategy_id", "instrument_id", "multiplier", "quantity", "cost_basis",
    "realized_pnl", "fees", "trade_count", "opened_at_ns", "updated_at_ns", "last_sequence",
    "currency", "fill_price", "fill_price_time_ns", "fill_price_fill_id", "other_fees",
    "booked_through_ns", "booked_through_id", "anchor", "base_currency", "realized_pnl_base",
]  # fmt: skip

_UNKNOWN_PLACE = "\U0010ffff"  # sorts after every fill id


def checkpoint_frame(
    rows: Sequence[tuple[Position, Price]], anchors: Sequence[Position] = ()
) -> pd.DataFrame:
    frame = pd.DataFrame(
        [_checkpoint_row(row, price, anchor=False) for row, price in rows]
        + [_checkpoint_row(anchor, None, anchor=True) for anchor in anchors],
        columns=CHECKPOINT_COLUMNS,
    )
    for name in ("trade_count", "opened_at_ns", "updated_at_ns", "last_sequence",
                 "fill_price_time_ns", "booked_through_ns"):  # fmt: skip
        frame[name] = frame[name].astype("int64")
    frame["anchor"] = frame["anchor"].astype(bool)
    return frame


def _checkpoint_row(row: Position, price: Price | None, *, anchor: bool) -> tuple[object, ...]:
    return (
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
        canonical(price.price) if price else "0",
        price.time_ns if price else 0,
        price.fill_id if price else "",
        ";".join(f"{currency}={canonical(amount)}" for currency, amount in row.other_fee_items()),
        row.booked_through[0],
        row.booked_through[1],
        anchor,
        row.base_currency,
        "" if row.realized_pnl_base is None else canonical(row.realized_pnl_base),
    )


def rows_from_checkpoint(
    frame: pd.DataFrame,
) -> tuple[list[tuple[Position, Price]], list[Position]]:
    """The rows with their last fill prices, and the anchors. A checkpoint from before
    restatement windows has no anchors: its rows are taken as booked through their latest
    fill (a fill executed before it is booked OUTSIDE_WINDOW)."""
    rows: list[tuple[Position, Price]] = []
    anchors: list[Position] = []
    legacy = "anchor" not in frame.columns
    for row in frame.itertuples(index=False):
        other_fees = getattr(row, "other_fees", "")
        realized_base = getattr(row, "realized_pnl_base", "")
        position = Position(
            key=PositionKey(row.account_id, row.strategy_id, row.instrument_id),
            multiplier=Decimal(row.multiplier),
            quantity=Decimal(row.quantity),
            cost_basis=Decimal(row.cost_basis),
            realized_pnl=Decimal(row.realized_pnl),
            # Before the column (base_currency ""): the book decides (see its restore).
            realized_pnl_base=Decimal(realized_base) if realized_base else None,
            base_currency=getattr(row, "base_currency", ""),
            fees=Decimal(row.fees),
            other_fees={
                currency: Decimal(amount)
                for currency, _, amount in (part.partition("=") for part in other_fees.split(";"))
            }
            if other_fees
            else None,
            trade_count=int(row.trade_count),
            opened_at_ns=int(row.opened_at_ns),
            updated_at_ns=int(row.updated_at_ns),
            last_sequence=int(row.last_sequence),
            currency=row.currency,
            booked_through=(int(row.updated_at_ns), _UNKNOWN_PLACE)
            if legacy
            else (int(row.booked_through_ns), row.booked_through_id),
        )
        if not legacy and row.anchor:
            anchors.append(position)
            continue
        price = Price(
            Decimal(row.fill_price),
            MarkSource.LAST_FILL,
            int(row.fill_price_time_ns),
            getattr(row, "fill_price_fill_id", ""),
        )
        rows.append((position, price))
    return rows, anchors
