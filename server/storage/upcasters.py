"""The versions of what the store persists, and how an older one is read as the current one.

So that a store written by an earlier release opens as it is (no `delete_library` by hand),
and one written by a later release is refused at start, naming the symbol and the version,
instead of being misread:

- the journal's events (`journal/events`, column `text`): each record type's text carries its
  own version (see `server.domain.codec`: TEXT_VERSIONS, TEXT_UPCASTERS); a text of a newer
  version than this release knows is refused when decoded (NewerFormat names the sequence);
- the journal's columns (JOURNAL_LAYOUTS): a journal of a release before the audit trail has
  no `principal` and `role`, one before layout 3 no `strategy_id` and `instrument_id` (a
  fill's row, which a restart groups the window's fills by); it is rewritten once at start,
  the first two "" (who booked those rows was never recorded), the row's ids from each fill's
  text (JOURNAL_UPCASTERS), as an append of other columns would be refused (current_journal:
  by chunks, restarted from the old version after a crash);
- the analysts' `orders` view (symbol = account): a symbol of a release before orders had
  keys lacks four columns; it is rewritten once with them when it is first written to (the
  `positions`/`portfolio` symbols before currencies likewise, in views.py);
- the checkpoint's book (`checkpoints/book`) and state (`checkpoints/state`): the version of
  each is in the metadata both halves carry (`versions`), with the text versions of the
  writer; a checkpoint written before versions existed has none, and its book's columns tell
  its version (each release before added columns, see BOOK_COLUMNS).

Why upcasters rather than a rewrite of the store: the journal is append-only and ArcticDB's
schema is static, so an old journal cannot take rows of another layout; reading old rows as
new ones costs nothing on the write path. Checkpoints are rewritten whole, so the next one is
written at the current version. Bumping a version: add its columns or change here, the
upcaster from the version before, and a test writing the old layout
(tests/storage/test_upgrade.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

import arcticdb as adb
import numpy as np
import pandas as pd

from server.domain.codec import TEXT_VERSIONS
from server.domain.restatement import WindowReader
from server.storage.disk import StoreUnusable

log = logging.getLogger("portfolio.storage")

CHECKPOINT_FORMAT = 2
"""The metadata's `format` before versions: a checkpoint with a book and a state half (1: a
book only, from before orders; such a checkpoint is not used and the journal is replayed)."""

_BOOK_V2 = [
    "account_id", "strategy_id", "instrument_id", "multiplier", "quantity", "cost_basis",
    "realized_pnl", "fees", "trade_count", "opened_at_ns", "updated_at_ns", "last_sequence",
    "currency", "fill_price", "fill_price_time_ns",
]  # fmt: skip
_BOOK_V3 = [
    *_BOOK_V2,
    "fill_price_fill_id", "other_fees", "booked_through_ns", "booked_through_id", "anchor",
]  # fmt: skip
_BOOK_V4 = [*_BOOK_V3, "base_currency", "realized_pnl_base"]
_BOOK_V6 = [
    *_BOOK_V4, "open_trip_sign", "open_trip_realized_pnl", "open_trip_fees", "trips_count",
    "trips_wins", "trips_losses", "trips_gross_win", "trips_gross_loss", "trips_largest_win",
    "trips_largest_loss",
]  # fmt: skip
_BOOK_V7 = [
    *_BOOK_V6, "close_quantity", "close_mark", "close_realized_pnl", "close_realized_pnl_base",
    "close_fees", "close_other_fees", "close_unrealized_pnl",
]  # fmt: skip

BOOK_COLUMNS: dict[int, list[str]] = {
    2: _BOOK_V2,  # orders, instruments, accounts (the first book with a state half)
    3: _BOOK_V3,  # restatement windows: each row's place and its anchor
    4: _BOOK_V4,  # realized P&L in base currency at the rate of its day
    5: _BOOK_V4,  # the same columns; anchors only where not empty (anchors_left_out)
    6: _BOOK_V6,  # each row's round trips, in progress and closed (were JSON in the state)
    7: _BOOK_V7,  # each row's figures at its last close (were JSON in the state)
}
BOOK_VERSION = max(BOOK_COLUMNS)

UNKNOWN_PLACE = "\U0010ffff"  # sorts after every fill id

_JOURNAL_V1 = ["sequence", "kind", "event_id", "account_id", "event_time", "digest", "text"]
_JOURNAL_V2 = [*_JOURNAL_V1, "principal", "role"]
JOURNAL_LAYOUTS: dict[int, list[str]] = {
    1: _JOURNAL_V1,
    2: _JOURNAL_V2,  # the audit trail: who booked each event
    3: [*_JOURNAL_V2, "strategy_id", "instrument_id"],  # a fill's row, "" for other kinds
}
JOURNAL_VERSION = max(JOURNAL_LAYOUTS)
UPGRADE_CHUNK_ROWS = 10_000
"""Journal rows rewritten at once when its layout is upgraded, each chunk one segment: a
journal rewritten in segments of 100,000 rows read a third slower at a restart (measured at
1M rows, under load: the window's read 3.6 against 2.7 s)."""
UPGRADING = "-upgrading"  # the marker symbol's suffix while the journal is rewritten


def _journal_v1_to_v2(chunk: pd.DataFrame) -> pd.DataFrame:
    """Who booked the events of a release before the audit trail: not recorded."""
    return chunk.assign(principal="", role="")


def _journal_v2_to_v3(chunk: pd.DataFrame) -> pd.DataFrame:
    """Each fill's strategy and instrument, from its text (any text version the codec
    knows), so that a restart groups the window's fills by row without reading texts."""
    fills = (chunk["kind"] == "fill").to_numpy()
    strategies = np.full(len(chunk), "", dtype=object)
    instruments = np.full(len(chunk), "", dtype=object)
    if fills.any():
        reader = WindowReader()
        found = [reader.row(text) for text in chunk["text"].to_numpy()[fills].tolist()]
        strategies[fills] = [strategy for strategy, _ in found]
        instruments[fills] = [instrument for _, instrument in found]
    return chunk.assign(strategy_id=strategies, instrument_id=instruments)


JOURNAL_UPCASTERS: dict[int, Callable[[pd.DataFrame], pd.DataFrame]] = {
    1: _journal_v1_to_v2,
    2: _journal_v2_to_v3,
}


def _book_v2_to_v3(frame: pd.DataFrame) -> pd.DataFrame:
    """No restatement windows: each row is booked through its latest fill (a fill executed
    before it is booked OUTSIDE_WINDOW) and has no anchor."""
    return frame.assign(
        fill_price_fill_id="",
        other_fees="",
        booked_through_ns=frame["updated_at_ns"].astype("int64"),
        booked_through_id=UNKNOWN_PLACE,
        anchor=False,
    )


def _book_v3_to_v4(frame: pd.DataFrame) -> pd.DataFrame:
    """No base currency kept: the book decides on restore (see its restore)."""
    return frame.assign(base_currency="", realized_pnl_base="")


def _book_v4_to_v5(frame: pd.DataFrame) -> pd.DataFrame:
    """The same columns: what changed is what a missing anchor means, which the checkpoint's
    reader takes from the stored version (empty_anchors_left_out)."""
    return frame


def _book_v5_to_v6(frame: pd.DataFrame) -> pd.DataFrame:
    """No round trips in the book: an earlier release kept them in the state half's
    `perf_open` and `perf_trips` sections, which are still read (state_frames)."""
    counts = {"open_trip_sign", "trips_count", "trips_wins", "trips_losses"}  # the rest: texts
    added = _BOOK_V6[len(_BOOK_V4) :]
    return frame.assign(**{name: 0 if name in counts else "" for name in added})


def _book_v6_to_v7(frame: pd.DataFrame) -> pd.DataFrame:
    """No last closes in the book: an earlier release kept them in the state half's
    `pnl_last_closes` section, which is still read (state_frames)."""
    return frame.assign(**dict.fromkeys(_BOOK_V7[len(_BOOK_V6) :], ""))


BOOK_UPCASTERS: dict[int, Callable[[pd.DataFrame], pd.DataFrame]] = {
    2: _book_v2_to_v3,
    3: _book_v3_to_v4,
    4: _book_v4_to_v5,
    5: _book_v5_to_v6,
    6: _book_v6_to_v7,
}

STATE_VERSION = 1
"""Every state half written so far (sections added since read as empty when absent)."""
STATE_UPCASTERS: dict[int, Callable[[pd.DataFrame], pd.DataFrame]] = {}


class NewerFormat(StoreUnusable):
    """Something in the store was written by a later release than this one."""

    def __init__(self, where: str, what: str, version: int, known: int) -> None:
        super().__init__(
            f"{where}: {what} version {version} was written by a later release (this one "
            f"reads up to {known}); start that release or a later one on this store"
        )
        self.where = where
        self.version = version


def checkpoint_versions() -> dict[str, object]:
    """What a checkpoint's metadata says about the layouts it was written in."""
    return {"book": BOOK_VERSION, "state": STATE_VERSION, "texts": dict(TEXT_VERSIONS)}


def check_checkpoint(where: str, metadata: Mapping[str, object]) -> bool:
    """Whether the checkpoint half at `where` can be used (False: an old layout without a
    state half, replayed instead); raises NewerFormat for a later release's."""
    checkpoint_format = metadata.get("format")
    if not isinstance(checkpoint_format, int) or checkpoint_format < CHECKPOINT_FORMAT:
        return False
    if checkpoint_format > CHECKPOINT_FORMAT:
        raise NewerFormat(where, "checkpoint format", checkpoint_format, CHECKPOINT_FORMAT)
    versions = metadata.get("versions")
    if not isinstance(versions, Mapping):
        return True  # written before versions: the layouts tell (see current_book_frame)
    for what, version, known in (
        ("book", versions.get("book", BOOK_VERSION), BOOK_VERSION),
        ("state", versions.get("state", STATE_VERSION), STATE_VERSION),
    ):
        if int(version) > known:
            raise NewerFormat(where, f"{what} frame", int(version), known)
    texts = versions.get("texts", {})
    if isinstance(texts, Mapping):
        for name, version in texts.items():
            known = TEXT_VERSIONS.get(str(name), 1)
            if int(version) > known:
                raise NewerFormat(where, f"{name} text", int(version), known)
    return True


def _stored_version(metadata: Mapping[str, object], part: str) -> int | None:
    versions = metadata.get("versions")
    if isinstance(versions, Mapping) and part in versions:
        return int(versions[part])
    return None


def empty_anchors_left_out(metadata: Mapping[str, object]) -> bool:
    """Whether a checkpoint's book leaves out the empty anchors (version 5 on): a windowed
    row without one then starts from nothing. Before, every windowed row had its anchor
    (and a book without anchors was one without windows)."""
    version = _stored_version(metadata, "book")
    return version is not None and version >= 5


def current_book_frame(frame: pd.DataFrame, metadata: Mapping[str, object]) -> pd.DataFrame:
    """A checkpoint's book frame in the current layout (BOOK_COLUMNS[BOOK_VERSION])."""
    where = "checkpoints/book"
    columns = list(frame.columns)
    version = _stored_version(metadata, "book")
    if version is None:  # written before versions: its columns are its version
        version = next((v for v, known in BOOK_COLUMNS.items() if known == columns), None)
        if version is None:
            raise StoreUnusable(f"{where}: columns of no known version: {columns}")
    if version > BOOK_VERSION:
        raise NewerFormat(where, "book frame", version, BOOK_VERSION)
    if columns != BOOK_COLUMNS.get(version):
        raise StoreUnusable(f"{where}: version {version} but columns {columns}")
    while version < BOOK_VERSION:
        frame = BOOK_UPCASTERS[version](frame)
        version += 1
    return frame


def current_state_frame(frame: pd.DataFrame, metadata: Mapping[str, object]) -> pd.DataFrame:
    """A checkpoint's state frame in the current layout."""
    version = _stored_version(metadata, "state") or 1
    if version > STATE_VERSION:
        raise NewerFormat("checkpoints/state", "state frame", version, STATE_VERSION)
    while version < STATE_VERSION:
        frame = STATE_UPCASTERS[version](frame)
        version += 1
    return frame


def current_journal(
    library: adb.library.Library, symbol: str, chunk_rows: int = UPGRADE_CHUNK_ROWS
) -> None:
    """Brings the journal to the current columns, once, if an earlier release wrote it. A
    journal of columns of no known layout (a later release's) is refused, never rewritten.

    The rewrite goes a chunk of rows at a time (memory stays that of a chunk, whatever the
    journal's length) into new versions of the symbol, keeping the old version until the new
    one is whole: a marker symbol names the old version meanwhile, so a start after a crash in
    the middle begins again from it."""
    marker = f"{symbol}{UPGRADING}"
    where = f"{library.name}/{symbol}"
    resumed = library.has_symbol(marker)
    if not library.has_symbol(symbol):
        return
    stored = [column.name for column in library.get_description(symbol).columns]
    current = JOURNAL_LAYOUTS[JOURNAL_VERSION]
    if resumed:
        upgrading = library.read_metadata(marker).metadata
        if stored == current and library.get_description(symbol).row_count == upgrading["rows"]:
            library.prune_previous_versions(symbol)  # whole: only the marker was left
            library.delete(marker)
            return
        source = int(upgrading["version"])
    elif stored == current:
        return
    else:
        if stored not in JOURNAL_LAYOUTS.values():
            raise StoreUnusable(
                f"{where}: columns of no layout this release knows ({stored}): written by a "
                "later release? start that release or a later one on this store"
            )
        source = library.read_metadata(symbol).version
    description = library.get_description(symbol, as_of=source)
    rows = description.row_count
    layout = [column.name for column in description.columns]
    version = next((v for v, known in JOURNAL_LAYOUTS.items() if known == layout), None)
    if version is None:  # a crash in the middle left a marker naming no known layout
        raise StoreUnusable(f"{where}: version {source} has columns of no known layout")
    library.write(
        marker, pd.DataFrame({"rows": [rows]}), metadata={"version": source, "rows": rows}
    )
    began, first = time.perf_counter(), 0
    for offset in range(0, max(rows, 1), chunk_rows):
        chunk = library.read(symbol, as_of=source, row_range=(offset, offset + chunk_rows)).data
        if offset == 0:
            first = chunk.index.start if isinstance(chunk.index, pd.RangeIndex) else 0
        # A range read gives the symbol's first index again: each chunk continues the last.
        chunk.index = pd.RangeIndex(first + offset, first + offset + len(chunk))
        for step in range(version, JOURNAL_VERSION):
            chunk = JOURNAL_UPCASTERS[step](chunk)
        chunk = chunk[current]
        if offset == 0:
            library.write(symbol, chunk, prune_previous_versions=False)
        else:
            library.append(symbol, chunk, prune_previous_versions=False)
    library.prune_previous_versions(symbol)
    library.delete(marker)
    log.info(
        "%s: %d events of journal layout %d rewritten in layout %d (%.1fs)",
        where,
        rows,
        version,
        JOURNAL_VERSION,
        time.perf_counter() - began,
    )


# -- the analysts' views: a symbol of an earlier layout is rewritten once -------------------
# (views are derived data with a static schema: an append of the current columns to an old
# symbol is refused, so the symbol is brought to the current columns before its first write).

ORDERS_VIEW_BEFORE_KEYS = [
    "update_id", "sequence", "status_time", "strategy_id", "order_ref", "order_id", "perm_id",
    "instrument_id", "side", "status", "filled_quantity", "remaining_quantity",
    "avg_fill_price",
]  # fmt: skip
"""The `orders` view before orders had keys, flags and corrections (needed `delete_library`)."""


def _orders_with_keys(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Rows of before order keys: no key, flag or correction recorded (a later correction of
    such a transition is appended, not put in its place; stored_orders skips keyless rows)."""
    frame = frame.reindex(columns=columns, fill_value="")
    frame["replaced"] = False
    return frame


VIEW_UPCASTERS: dict[
    tuple[str, tuple[str, ...]], Callable[[pd.DataFrame, list[str]], pd.DataFrame]
] = {
    ("orders", tuple(ORDERS_VIEW_BEFORE_KEYS)): _orders_with_keys,
}


def current_view(library: adb.library.Library, symbol: str, columns: list[str]) -> None:
    """Brings a view symbol to the current `columns`, once, if an earlier release wrote it;
    columns of no known layout (a later release's) are refused rather than dropped."""
    stored = [column.name for column in library.get_description(symbol).columns]
    if stored == columns:
        return
    upcaster = VIEW_UPCASTERS.get((library.name, tuple(stored)))
    if upcaster is None:
        raise ValueError(
            f"{library.name}/{symbol} has columns this version does not know how to extend: "
            f"{stored}"
        )
    frame = upcaster(library.read(symbol).data, columns)
    library.write(symbol, frame, prune_previous_versions=True)
