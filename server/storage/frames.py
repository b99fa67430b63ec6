"""Domain values as DataFrames and back, losslessly.

Amounts are stored as canonical decimal strings (reading one back gives the exact value that
came in), times as UTC datetime64[ns] and as integer nanoseconds where the engine needs them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd

from server.domain.book import NO_PRICE, Price
from server.domain.booker import Booker
from server.domain.codec import NewerTextVersion, fingerprint_of
from server.domain.decimals import CanonicalTexts, canonical
from server.domain.events import EVENT_KINDS, ExecutionEvent, Fill
from server.domain.marks import MarkSource
from server.domain.performance import OpenTrip, RoundTrips
from server.domain.pnl_history import RowClose
from server.domain.position import Position, PositionKey, restored
from server.storage.disk import StoreUnusable
from server.storage.upcasters import (
    BOOK_COLUMNS,
    BOOK_VERSION,
    JOURNAL_LAYOUTS,
    JOURNAL_VERSION,
    NewerFormat,
    current_book_frame,
)

Sequenced = tuple[int, ExecutionEvent]

# -- the journal: every accepted event, indexed by sequence -----------------------------------
# The journal is the service's own log: a few columns to find rows by, the event itself as
# its canonical text (`Fill.text`), which keeps each append small and cheap, and who booked it
# (the audit trail: `principal` and its `role`, see server.domain.booker; "" in the rows of a
# release before them, see upcasters.current_journal), and a fill's strategy and instrument
# ("" for other kinds), so that a restart finds each fill's row without reading its text.

JOURNAL_COLUMNS = JOURNAL_LAYOUTS[JOURNAL_VERSION]


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
            "principal": [event.booker.name for _, event in group],
            "role": [event.booker.role for _, event in group],
            "strategy_id": [e.strategy_id if type(e) is Fill else "" for _, e in group],
            "instrument_id": [e.instrument_id if type(e) is Fill else "" for _, e in group],
        },
        index=pd.RangeIndex(group[0][0], group[-1][0] + 1),
    )


def events_from_journal(frame: pd.DataFrame, *, booked: bool = False) -> Iterator[Sequenced]:
    """Each row's event; a text of an older version is read as the current one (the codec's
    upcasters), one of a later release's version or kind is refused (NewerFormat). `booked`:
    each event also carries who booked it, from the frame's `principal` and `role` (to be
    journaled again: the write-ahead log's tail at a start); replays need not (nor pay)."""
    events = _events(frame)
    return _booked(events, _bookers(frame)) if booked else events


def _booked(events: Iterator[Sequenced], bookers: list[Booker]) -> Iterator[Sequenced]:
    for (sequence, event), booker in zip(events, bookers, strict=True):
        event.booked_by(booker)
        yield sequence, event


def _events(frame: pd.DataFrame) -> Iterator[Sequenced]:
    for sequence, kind, text in zip(frame["sequence"], frame["kind"], frame["text"], strict=True):
        try:
            event: ExecutionEvent = EVENT_KINDS[kind].from_text(text)
        except NewerTextVersion as error:
            where = f"journal/events sequence {sequence}"
            raise NewerFormat(where, f"{kind} event text", error.version, error.known) from error
        except KeyError as error:
            if kind in EVENT_KINDS:
                raise
            raise StoreUnusable(
                f"journal/events sequence {sequence}: event kind {kind!r} is not one this "
                "release knows (written by a later release); start that release or a later one"
            ) from error
        yield int(sequence), event


def _bookers(frame: pd.DataFrame) -> list[Booker]:
    """One Booker per principal, shared by its rows as when they were admitted."""
    shared: dict[tuple[str, str], Booker] = {}
    found = []
    for pair in zip(frame["principal"], frame["role"], strict=True):
        booker = shared.get(pair)
        if booker is None:
            booker = shared[pair] = Booker(*pair)
        found.append(booker)
    return found


# -- checkpoints: every position row, exactly -------------------------------------------------
# A row with a restatement window also has an anchor row (`anchor` True): its figures before
# the window; the window's fills are read back from the journal. Checkpoints written by earlier
# releases are read through their upcasters (upcasters.current_book_frame).

CHECKPOINT_COLUMNS = BOOK_COLUMNS[BOOK_VERSION]
TRIP_COUNTS = ("trips_count", "trips_wins", "trips_losses")
TRIP_AMOUNTS = ("gross_win", "gross_loss", "largest_win", "largest_loss")  # RoundTrips' order
SHARED_AMOUNTS = 4096  # distinct amount texts given one Decimal each when a checkpoint is read


class CheckpointBook(NamedTuple):
    rows: list[tuple[Position, Price]]
    anchors: list[Position]
    open_trips: list[OpenTrip]
    closed_trips: list[tuple[PositionKey, RoundTrips]]
    last_closes: list[tuple[PositionKey, RowClose]]


def checkpoint_frame(
    rows: Sequence[tuple[Position, Price]],
    anchors: Sequence[Position] = (),
    open_trips: Mapping[PositionKey, OpenTrip] | None = None,
    closed_trips: Mapping[PositionKey, RoundTrips] | None = None,
    last_closes: Mapping[PositionKey, RowClose] | None = None,
) -> pd.DataFrame:
    """Every row (its instrument's last fill price beside it, its round trips in progress
    and closed, and its figures at its last close, from `open_trips`, `closed_trips` and
    `last_closes`, if any) and anchor, column by column: a frame made from a tuple per row
    costs pandas microseconds a row, a million at a stop."""
    opened, closed, closes = open_trips or {}, closed_trips or {}, last_closes or {}
    row_trips = [opened.get(row.key) for row, _ in rows]
    row_trips += [None] * len(anchors)
    done = [closed.get(row.key) for row, _ in rows]
    done += [None] * len(anchors)
    row_closes = [closes.get(row.key) for row, _ in rows]
    row_closes += [None] * len(anchors)
    positions = [row for row, _ in rows]
    positions += anchors
    prices: list[Price | None] = [price for _, price in rows]
    prices += [None] * len(anchors)
    keys = [row.key for row in positions]

    texts = CanonicalTexts()

    def amounts(name: str) -> list[str]:
        return [texts[getattr(row, name)] for row in positions]

    def integers(values: Iterable[int]) -> npt.NDArray[np.int64]:
        return np.fromiter(values, np.int64, len(positions))

    columns: list[Sequence[object] | npt.NDArray[Any]] = [
        [key[0] for key in keys], [key[1] for key in keys], [key[2] for key in keys],
        amounts("multiplier"), amounts("quantity"), amounts("cost_basis"),
        amounts("realized_pnl"), amounts("fees"),
        integers(row.trade_count for row in positions),
        integers(row.opened_at_ns for row in positions),
        integers(row.updated_at_ns for row in positions),
        integers(row.last_sequence for row in positions),
        [row.currency for row in positions],
        [texts[price.price] if price else "0" for price in prices],
        integers(price.time_ns if price else 0 for price in prices),
        [price.fill_id if price else "" for price in prices],
        [_other_fees_text(row) if row.other_fees else "" for row in positions],
        integers(row.booked_through_ns for row in positions),
        [row.booked_through_id for row in positions],
        np.arange(len(positions)) >= len(rows),  # anchor
        [row.base_currency for row in positions],
        [
            "" if row.realized_pnl_base is None else texts[row.realized_pnl_base]
            for row in positions
        ],
        integers(trip[1] if trip else 0 for trip in row_trips),
        # Exponents kept ("0.00"), as the state's JSON record kept them (state_frames._exact).
        [format(trip[2], "f") if trip else "" for trip in row_trips],
        [format(trip[3], "f") if trip else "" for trip in row_trips],
        integers(trips.count if trips else 0 for trips in done),
        integers(trips.wins if trips else 0 for trips in done),
        integers(trips.losses if trips else 0 for trips in done),
        *([format(getattr(trips, name), "f") if trips else "" for trips in done]
          for name in TRIP_AMOUNTS),
        *_close_columns(row_closes, texts),
    ]  # fmt: skip
    return columns_frame(dict(zip(CHECKPOINT_COLUMNS, columns, strict=True)))


def columns_frame(columns: Mapping[str, Sequence[object] | npt.NDArray[Any]]) -> pd.DataFrame:
    """A frame of columns as built (lists become object columns, also when empty), not
    copied into one block per type: 0.14 s instead of 0.18-0.46 s for 33 columns of a million
    rows (a checkpoint's, a close's P&L)."""
    arrays = {
        name: column if isinstance(column, np.ndarray) else np.array(column, dtype=object)
        for name, column in columns.items()
    }
    return pd.DataFrame(arrays, copy=False)


def _close_columns(closes: list[RowClose | None], texts: CanonicalTexts) -> list[list[str]]:
    """The `close_` columns, in RowClose's field order: each amount canonical, as the state
    half's JSON record held it ("" for None, and every column "" for a row not closed yet)."""
    quantities = [texts[close.quantity] if close else "" for close in closes]
    other_fees = [_fees_text(close.other_fees) if close else "" for close in closes]

    def amounts(name: str) -> list[str]:
        return [
            "" if close is None or (value := getattr(close, name)) is None else texts[value]
            for close in closes
        ]

    return [
        quantities, amounts("mark"), amounts("realized_pnl"), amounts("realized_pnl_base"),
        amounts("fees"), other_fees, amounts("unrealized_pnl"),
    ]  # fmt: skip


def _other_fees_text(row: Position) -> str:
    return _fees_text(row.other_fee_items())


def _fees_text(fees: Iterable[tuple[str, Decimal]]) -> str:
    """Fees in other currencies as one text, `CUR=amount;...` (read by `_other_fees`)."""
    return ";".join(f"{currency}={canonical(amount)}" for currency, amount in fees)


def _other_fees(text: str) -> dict[str, Decimal]:
    """A row's fees in other currencies, as `checkpoint_frame` writes them."""
    parts = (part.partition("=") for part in text.split(";"))
    return {currency: Decimal(amount) for currency, _, amount in parts}


def rows_from_checkpoint(
    frame: pd.DataFrame, metadata: Mapping[str, object] | None = None
) -> CheckpointBook:
    """The rows with their last fill prices, the anchors, and the rows' round trips in
    progress. A book of an earlier release is raised to the
    current layout first (`metadata`: the checkpoint's, which names its version; without one
    its columns tell)."""
    frame = current_book_frame(frame, metadata or {})
    rows: list[tuple[Position, Price]] = []
    anchors: list[Position] = []
    # Column by column (lists: no numpy scalar per value), and one Decimal per distinct text
    # of the columns that repeat ("0", multipliers): a million rows and their anchors hold
    # millions of zeros, each 104 bytes as its own Decimal.
    column = {name: frame[name].tolist() for name in frame.columns}
    shared: dict[str, Decimal] = {}

    def amounts(name: str) -> list[Decimal]:
        found = []
        for text in column[name]:
            value = shared.get(text)
            if value is None:
                value = Decimal(text)
                if len(shared) < SHARED_AMOUNTS:
                    shared[text] = value
            found.append(value)
        return found

    multipliers, quantities, costs = (
        amounts("multiplier"),
        amounts("quantity"),
        amounts("cost_basis"),
    )
    realized, fees = amounts("realized_pnl"), amounts("fees")
    realized_base = [
        None if not text else (shared[text] if text in shared else Decimal(text))
        for text in column["realized_pnl_base"]
    ]
    # Each row carries its instrument's last fill price: one Price for the rows that share one.
    prices: dict[tuple[str, int, str], Price] = {}
    trips: list[OpenTrip] = []
    closed: list[tuple[PositionKey, int]] = []  # the rows with closed trips, and their line
    last: list[tuple[PositionKey, int]] = []  # the rows with a last close, and their line
    # One pass over the columns together, no lookup of a column per field and row.
    for (
        key, multiplier, quantity, cost_basis, realized_pnl, realized_pnl_base, base_currency,
        fee, other, trade_count, opened_at_ns, updated_at_ns, last_sequence, currency,
        booked_through_ns, booked_through_id, anchor, trip_sign, trip_realized, trip_fees,
        trips_count, close_quantity, *fill_price,
    ) in zip(
        zip(column["account_id"], column["strategy_id"], column["instrument_id"], strict=True),
        multipliers, quantities, costs, realized, realized_base, column["base_currency"], fees,
        column["other_fees"], column["trade_count"], column["opened_at_ns"],
        column["updated_at_ns"], column["last_sequence"], column["currency"],
        column["booked_through_ns"], column["booked_through_id"], column["anchor"],
        column["open_trip_sign"], column["open_trip_realized_pnl"], column["open_trip_fees"],
        column["trips_count"], column["close_quantity"], column["fill_price"],
        column["fill_price_time_ns"],
        column["fill_price_fill_id"],
        strict=True,
    ):  # fmt: skip
        # Positional (position.restored): the constructor's keywords cost several times more.
        # Before the column (base_currency ""): the book decides realized_pnl_base (restore).
        position = restored(
            tuple.__new__(PositionKey, key),  # PositionKey(*key), without a Python call
            multiplier, quantity, cost_basis, realized_pnl, realized_pnl_base, base_currency,
            fee, _other_fees(other) if other else None, trade_count, opened_at_ns,
            updated_at_ns, last_sequence, currency, booked_through_ns, booked_through_id,
        )  # fmt: skip
        if anchor:
            anchors.append(position)
            continue
        saved = tuple(fill_price)
        price = prices.get(saved)
        if price is None:
            text, time_ns, fill_id = fill_price
            if not time_ns and not fill_id:  # none: "0" is how it was written (NO_PRICE)
                price = NO_PRICE
            else:
                price = Price(Decimal(text), MarkSource.LAST_FILL, time_ns, fill_id)
            if len(prices) < SHARED_AMOUNTS:
                prices[saved] = price
        rows.append((position, price))
        if trip_sign:  # keyed by the row's key as read
            trips.append((
                position.key, trip_sign, _shared(trip_realized, shared), _shared(trip_fees, shared)
            ))  # fmt: skip
        if trips_count:
            closed.append((position.key, len(rows) + len(anchors) - 1))  # its line
        if close_quantity:
            last.append((position.key, len(rows) + len(anchors) - 1))
    return CheckpointBook(
        rows, anchors, trips, _closed_trips(closed, column, shared),
        _last_closes(last, column, shared),
    )  # fmt: skip


def _closed_trips(
    found: list[tuple[PositionKey, int]],
    column: dict[str, list[Any]],
    shared: dict[str, Decimal],
) -> list[tuple[PositionKey, RoundTrips]]:
    """The closed round trips of the rows `found` (key, line in the frame), column by
    column: seven fields a row, not seven more names in the loop over every row above."""
    if not found:
        return []
    lines = [line for _, line in found]
    counts = {name: [column[name][line] for line in lines] for name in TRIP_COUNTS}
    amounts = {
        name: [_shared(column[f"trips_{name}"][line], shared) for line in lines]
        for name in TRIP_AMOUNTS
    }
    return [
        (key, RoundTrips(count, wins, losses, *figures))
        for (key, _), count, wins, losses, *figures in zip(
            found, *counts.values(), *amounts.values(), strict=True
        )
    ]


def _last_closes(
    found: list[tuple[PositionKey, int]],
    column: dict[str, list[Any]],
    shared: dict[str, Decimal],
) -> list[tuple[PositionKey, RowClose]]:
    """The last closes of the rows `found` (key, line in the frame), column by column, as
    _closed_trips reads the closed trips."""
    if not found:
        return []
    lines = [line for _, line in found]

    def amounts(name: str) -> list[Decimal | None]:
        texts = column[f"close_{name}"]
        return [_shared(texts[line], shared) if texts[line] else None for line in lines]

    other_fees = [
        tuple(_other_fees(text).items()) if (text := column["close_other_fees"][line]) else ()
        for line in lines
    ]
    return [
        (key, RowClose(*figures))
        for (key, _), *figures in zip(
            found, amounts("quantity"), amounts("mark"), amounts("realized_pnl"),
            amounts("realized_pnl_base"), amounts("fees"), other_fees,
            amounts("unrealized_pnl"), strict=True,
        )
    ]  # fmt: skip


def _shared(text: str, shared: dict[str, Decimal]) -> Decimal:
    value = shared.get(text)
    if value is None:
        value = Decimal(text)
        if len(shared) < SHARED_AMOUNTS:
            shared[text] = value
    return value
