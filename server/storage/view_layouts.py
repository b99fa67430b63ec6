"""The columns of the analysts' views, and how a symbol of an earlier layout becomes current.

Why numbers beside text: analysts sum and filter with pandas and `QueryBuilder`, which cannot
do either on decimal text (`fills.quantity.sum()` concatenated strings, `price > 100` failed).
So every amount is a float64 column under the name `seeds/001` gives it (`qty`, `price`,
`commission`, `avg_cost`, `realized_pnl`, ...; NaN where the figure is unknown, e.g. a base
figure without a rate), and its exact decimal text stays beside it as `<name>_exact`. The
quantity's exact text keeps its old name `quantity` (as it came in: unsigned in `fills`),
and `qty` is its float, signed in `fills` and `corrections` (BUY +, SELL -) so that a plain
`groupby(...).qty.sum()` is the position. Floats are for reading only: the service never
reads them back (the engine and the wire stay exact).

Each library's layouts are listed oldest first; the service brings a symbol of an earlier
layout to the current one once (rewriting it: the libraries have a static schema), at start
for every symbol (`ArcticViews.upgrade`) and again, cheaply, before a symbol's first write.
Columns of no known layout (a later release's) are left as they are and refused on write,
rather than dropped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import arcticdb as adb
import pandas as pd

# -- fills, corrections, commissions --------------------------------------------------------

FILL_COLUMNS_V1 = [
    "fill_id", "sequence", "fill_time", "strategy_id", "instrument_id", "side", "quantity",
    "price", "commission", "commission_currency", "order_ref", "order_id", "venue", "trace_id",
]  # fmt: skip
FILL_COLUMNS = [
    *FILL_COLUMNS_V1,
    "qty", "price_exact", "commission_exact",
    # The correction that replaced the row's content ("" none) and the late commission set on
    # it ("" none): the row is the execution as the book holds it now.
    "corrected_by", "amended_by",
]  # fmt: skip
"""`price` and `commission` float64 (text before); `qty` float64 signed by side."""

CORRECTION_COLUMNS_V1 = [
    "correction_id", "corrects", "sequence", "fill_time", "strategy_id", "instrument_id",
    "side", "quantity", "price", "commission", "commission_currency", "order_ref", "order_id",
    "venue",
]  # fmt: skip
CORRECTION_COLUMNS = [
    *CORRECTION_COLUMNS_V1, "qty", "price_exact", "commission_exact",
    "original",  # the `fills` row it replaced, as JSON with exact amounts ("" unknown)
]  # fmt: skip

COMMISSION_COLUMNS_V1 = [
    "amendment_id", "fill_id", "sequence", "reported_at", "commission", "commission_currency",
]  # fmt: skip
COMMISSION_COLUMNS = [*COMMISSION_COLUMNS_V1, "commission_exact"]

# -- positions and portfolio ----------------------------------------------------------------

POSITION_COLUMNS_V1 = [
    "slot", "timestamp", "account_id", "strategy_id", "instrument_id", "level", "quantity",
    "avg_cost", "cost_basis", "realized_pnl", "unrealized_pnl", "fees", "net_pnl",
    "market_price", "market_value", "multiplier", "trade_count", "last_sequence",
]  # fmt: skip
"""Before currencies (issue 11)."""
POSITION_COLUMNS_V2 = [
    *POSITION_COLUMNS_V1,
    "currency", "base_currency", "fx_rate", "realized_pnl_base", "unrealized_pnl_base",
    "fees_base", "net_pnl_base", "market_value_base", "other_fees",
]  # fmt: skip
POSITION_AMOUNTS = [
    "avg_cost", "cost_basis", "realized_pnl", "unrealized_pnl", "fees", "net_pnl",
    "market_price", "market_value", "multiplier", "fx_rate", "realized_pnl_base",
    "unrealized_pnl_base", "fees_base", "net_pnl_base", "market_value_base",
]  # fmt: skip
"""Float64 since V3, each with its `_exact` text."""
POSITION_COLUMNS = [
    *POSITION_COLUMNS_V2, "qty", *(f"{name}_exact" for name in POSITION_AMOUNTS),
]  # fmt: skip
_AMOUNT_AT = [POSITION_COLUMNS_V2.index(name) for name in POSITION_AMOUNTS]

HISTORY_COLUMNS = ["snapshot_time", "reason", *POSITION_COLUMNS[1:]]
"""`position_history`: a position row as `portfolio` holds it (without its slot), when it was
taken and why (`interval`: changed since the last snapshot; `close`: the day's close)."""

BALANCE_COLUMNS = [
    "account_id", "currency", "chain_id", "cash", "reserved", "available", "cash_exact",
    "reserved_exact", "available_exact", "updated_at", "last_sequence", "reason",
]  # fmt: skip
"""`balances`: `reason` is `change` (appended when a view write finds it changed) or `close`."""


def number(text: object) -> float:
    """An exact decimal text as a float for analysts (NaN: empty, the figure is unknown)."""
    return float(str(text)) if text != "" else math.nan


def signed(side: str, quantity: object) -> float:
    """A fill's quantity signed by its side (BUY +, SELL -)."""
    value = number(quantity)
    return -value if side == "SELL" else value


def numeric_fill(row: tuple[object, ...]) -> tuple[object, ...]:
    """A V1 fill row (exact text) in the current layout (`corrected_by`, `amended_by` empty)."""
    side, quantity, price, commission = row[5], row[6], row[7], row[8]
    return (
        *row[:7], number(price), number(commission), *row[9:],
        signed(str(side), quantity), price, commission, "", "",
    )  # fmt: skip


def numeric_correction(row: tuple[object, ...], original: str) -> tuple[object, ...]:
    side, quantity, price, commission = row[6], row[7], row[8], row[9]
    return (
        *row[:8], number(price), number(commission), *row[10:],
        signed(str(side), quantity), price, commission, original,
    )  # fmt: skip


def numeric_commission(row: tuple[object, ...]) -> tuple[object, ...]:
    return (*row[:4], number(row[4]), row[5], row[4])


def numeric_position(row: tuple[object, ...]) -> tuple[object, ...]:
    """A V2 position row (exact text) in the current layout."""
    values = list(row)
    for at in _AMOUNT_AT:
        values[at] = number(row[at])
    return (*values, number(row[6]), *(row[at] for at in _AMOUNT_AT))


def original_text(row: pd.Series) -> str:
    """A `fills` row about to be replaced, as JSON with its exact amounts."""
    return json.dumps(
        {
            "fill_id": row["fill_id"],
            "sequence": int(row["sequence"]),
            "fill_time": pd.Timestamp(row["fill_time"]).isoformat(),
            "strategy_id": row["strategy_id"],
            "instrument_id": row["instrument_id"],
            "side": row["side"],
            "quantity": row["quantity"],
            "price": row["price_exact"],
            "commission": row["commission_exact"],
            "commission_currency": row["commission_currency"],
            "corrected_by": row["corrected_by"],
            "amended_by": row["amended_by"],
        }
    )


# -- upcasters ------------------------------------------------------------------------------


def _amounts_beside_text(
    frame: pd.DataFrame, amounts: list[str], columns: list[str], **extra: object
) -> pd.DataFrame:
    """Each amount becomes a float, its text moves to `<name>_exact`."""
    frame = frame.copy()
    for name in amounts:
        frame[f"{name}_exact"] = frame[name].astype(str)
        frame[name] = frame[name].map(number).astype("float64")
    for name, value in extra.items():
        frame[name] = value
    return frame[columns]


def settled_fills(
    fills: pd.DataFrame, corrections: pd.DataFrame, commissions: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, str], int]:
    """An account's `fills` as an earlier release left them (corrections and late commissions
    only beside them, late fills after the last row) as this release writes them: each
    correction and amendment applied to its execution's row in sequence order, every row at
    its execution time (nudged by a nanosecond or two only where times tie). Returns the
    frame, the row each correction replaced (as `original_text`), and the last sequence
    applied."""
    frame = fills.reset_index(drop=True).copy()
    originals: dict[str, str] = {}
    changes = sorted(
        [(int(row.sequence), 0, row) for row in corrections.itertuples(index=False)]
        + [(int(row.sequence), 1, row) for row in commissions.itertuples(index=False)],
        key=lambda change: change[:2],
    )
    through = int(frame["sequence"].max()) if len(frame) else 0
    for sequence, kind, row in changes:
        through = max(through, sequence)
        target = row.corrects if kind == 0 else row.fill_id
        hits = frame.index[(frame["fill_id"] == target) | (frame["corrected_by"] == target)]
        if not len(hits):
            continue
        at = hits[-1]
        if kind == 0:
            originals[str(row.correction_id)] = original_text(frame.loc[at])
            for name in (
                "fill_time", "strategy_id", "instrument_id", "side", "quantity", "price",
                "commission", "commission_currency", "order_ref", "order_id", "venue", "qty",
                "price_exact", "commission_exact",
            ):  # fmt: skip
                frame.at[at, name] = getattr(row, name)
            frame.at[at, "corrected_by"] = row.correction_id
        else:
            frame.at[at, "commission"] = row.commission
            frame.at[at, "commission_exact"] = row.commission_exact
            if row.commission_currency:
                frame.at[at, "commission_currency"] = row.commission_currency
            frame.at[at, "amended_by"] = row.amendment_id
    frame = frame.sort_values(["fill_time", "sequence"], kind="stable").reset_index(drop=True)
    index, last = [], -1
    for time_ns in pd.to_datetime(frame["fill_time"]).astype("int64"):
        last = max(int(time_ns), last + 1)
        index.append(last)
    frame.index = pd.DatetimeIndex(pd.to_datetime(index, unit="ns", utc=True), name="timestamp")
    return frame, originals, through


def _signed_quantities(frame: pd.DataFrame) -> list[float]:
    pairs = zip(frame["side"], frame["quantity"], strict=True)
    return [signed(side, quantity) for side, quantity in pairs]


def _fills_v1_to_v2(frame: pd.DataFrame) -> pd.DataFrame:
    qty = [
        signed(side, quantity)
        for side, quantity in zip(frame["side"], frame["quantity"], strict=True)
    ]
    return _amounts_beside_text(
        frame, ["price", "commission"], FILL_COLUMNS, qty=pd.Series(qty, index=frame.index,
        dtype="float64"), corrected_by="", amended_by="",
    )  # fmt: skip


def _corrections_v1_to_v2(frame: pd.DataFrame) -> pd.DataFrame:
    qty = [
        signed(side, quantity)
        for side, quantity in zip(frame["side"], frame["quantity"], strict=True)
    ]
    return _amounts_beside_text(
        frame, ["price", "commission"], CORRECTION_COLUMNS,
        qty=pd.Series(qty, index=frame.index, dtype="float64"), original="",
    )  # fmt: skip


def _commissions_v1_to_v2(frame: pd.DataFrame) -> pd.DataFrame:
    return _amounts_beside_text(frame, ["commission"], COMMISSION_COLUMNS)


def _positions_v1_to_v2(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows written before issue 11: their currency and base figures were not recorded (the
    row's next change fills them)."""
    return frame.reindex(columns=POSITION_COLUMNS_V2, fill_value="")


def _positions_v2_to_v3(frame: pd.DataFrame) -> pd.DataFrame:
    qty = frame["quantity"].map(number).astype("float64")
    return _amounts_beside_text(frame, POSITION_AMOUNTS, POSITION_COLUMNS, qty=qty)


Upcaster = Callable[[pd.DataFrame], pd.DataFrame]
LAYOUTS: dict[str, list[tuple[list[str], Upcaster | None]]] = {
    # library -> its layouts, oldest first, each with the step to the next (None: current)
    "fills": [(FILL_COLUMNS_V1, _fills_v1_to_v2), (FILL_COLUMNS, None)],
    "corrections": [(CORRECTION_COLUMNS_V1, _corrections_v1_to_v2), (CORRECTION_COLUMNS, None)],
    "commissions": [(COMMISSION_COLUMNS_V1, _commissions_v1_to_v2), (COMMISSION_COLUMNS, None)],
    "positions": [
        (POSITION_COLUMNS_V1, _positions_v1_to_v2),
        (POSITION_COLUMNS_V2, _positions_v2_to_v3),
        (POSITION_COLUMNS, None),
    ],
}
LAYOUTS["portfolio"] = LAYOUTS["positions"]


class UnknownLayoutError(ValueError):
    """A view symbol's columns are of no layout this release knows (a later release's)."""


def current_layout(
    library: adb.library.Library,
    symbol: str,
    settle: Callable[[pd.DataFrame], tuple[pd.DataFrame, int]] | None = None,
) -> bool:
    """Brings `library/symbol` to the current layout if an earlier release wrote it (True when
    it was rewritten); raises UnknownLayoutError rather than drop columns it does not know.
    `settle` finishes an upcast frame (its rows as this release would have written them) and
    says the last sequence it holds."""
    layouts = LAYOUTS[library.name]
    stored = [column.name for column in library.get_description(symbol).columns]
    if stored == layouts[-1][0]:
        return False
    step = next((at for at, (columns, _) in enumerate(layouts) if columns == stored), None)
    if step is None:
        # Not naming the symbol: symbols failing for one cause are logged on one line.
        raise UnknownLayoutError(f"columns this version does not know how to extend: {stored}")
    item = library.read(symbol)
    frame = item.data
    for _, upcaster in layouts[step:-1]:
        assert upcaster is not None
        frame = upcaster(frame)
    metadata = item.metadata
    if metadata is None and "sequence" in frame.columns and len(frame):
        metadata = {"sequence": int(frame["sequence"].max())}
    if settle is not None:
        frame, through = settle(frame)
        metadata = {
            **(metadata or {}),
            "sequence": max(through, metadata["sequence"] if metadata else 0),
        }
    library.write(symbol, frame, metadata=metadata, prune_previous_versions=True)
    return True
