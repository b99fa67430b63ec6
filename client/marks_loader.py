"""Marks and FX rates from a CSV or Parquet file, or a pandas frame, into the service, for
shops whose prices come from another feed than IB.

    from client import PortfolioClient
    from client.marks_loader import load_marks

    with PortfolioClient("localhost:50051") as pm:
        loaded = load_marks(pm, "closing_marks.csv")

Columns (by name, in any order; others are ignored):
- marks: `instrument_id`, `price`, `timestamp`; optional `bid`, `ask`, `last`.
- FX rates: `base`, `quote`, `rate`, `timestamp` (1 base is worth `rate` quote: EUR, USD,
  1.0842). One file may hold both kinds: then each row fills `instrument_id` or `base`.

Amounts are read exactly: CSV cells as text, decimal columns as Decimals; a float column (a
frame's float64) is read through each value's repr, the shortest text that is that float, as
the IB feed does. A timestamp needs a time zone ("2026-01-02T21:00:00Z", a tz-aware column),
unless `timezone=` says which one naive times are in. Every row is checked before anything is
sent; an error names the row (1 = the first data row) and the column. Marks are market data: a
mark older than the one the service holds is counted stale and ignored, so loading a file
twice is harmless.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from decimal import Decimal, InvalidOperation
from numbers import Integral
from pathlib import Path
from typing import Any

import pandas as pd

from client.aio import AsyncPortfolioClient
from client.marks import DEFAULT_MARK_BATCH, FxRate, MarkAck, MarkPrice
from client.sync import PortfolioClient

__all__ = [
    "MarksLoadError",
    "MarksLoaded",
    "MarksTable",
    "load_marks",
    "load_marks_async",
    "read_marks",
]

_MARK_COLUMNS = ("instrument_id", "price", "timestamp")
_FX_COLUMNS = ("base", "quote", "rate", "timestamp")
# The service's field names in a refusal -> the file's columns.
_COLUMN_OF = {"mark": "price", "base_currency": "base", "quote_currency": "quote"}
_REFUSED_ENTRY = re.compile(r"^(marks|fx_rates)\[(\d+)\]\.(\w+): (.*?)(; nothing in the batch.*)?$")


class MarksLoadError(ValueError):
    """The file or frame cannot be loaded as it is; the message names the row and column."""


@dataclass(frozen=True, slots=True)
class MarksTable:
    """What a file or frame holds, checked, with the row each entry came from."""

    marks: tuple[MarkPrice, ...]
    fx_rates: tuple[FxRate, ...]
    #: The source row (1 = the first data row) of each mark, then of each rate.
    rows: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class MarksLoaded:
    """What the service did with a load."""

    marks_applied: int
    #: Older than the mark the service held: ignored (loading twice is harmless).
    marks_stale: int
    fx_rates_applied: int
    fx_rates_stale: int


def load_marks(
    client: PortfolioClient,
    source: str | Path | pd.DataFrame,
    *,
    timezone: tzinfo | None = None,
    batch_size: int = DEFAULT_MARK_BATCH,
    timeout: float | None = None,
) -> MarksLoaded:
    """Reads, checks and sends a file's (or a frame's) marks and FX rates. Raises
    MarksLoadError, naming the row and column, when a row is wrong (then nothing was sent) or
    the service refuses a batch (the batches before it were applied); PortfolioError when the
    service cannot be reached."""
    table = read_marks(source, timezone=timezone)
    acks = client.send_marks(table.marks, table.fx_rates, batch_size=batch_size, timeout=timeout)
    return _outcome(table, acks, batch_size)


async def load_marks_async(
    client: AsyncPortfolioClient,
    source: str | Path | pd.DataFrame,
    *,
    timezone: tzinfo | None = None,
    batch_size: int = DEFAULT_MARK_BATCH,
    timeout: float | None = None,
) -> MarksLoaded:
    """`load_marks` for asyncio (the file is read in the event loop's thread)."""
    table = read_marks(source, timezone=timezone)
    acks = await client.send_marks(
        table.marks, table.fx_rates, batch_size=batch_size, timeout=timeout
    )
    return _outcome(table, acks, batch_size)


def read_marks(source: str | Path | pd.DataFrame, *, timezone: tzinfo | None = None) -> MarksTable:
    """The checked marks and rates of a .csv or .parquet file, or a frame."""
    frame = source if isinstance(source, pd.DataFrame) else _read_file(Path(source))
    columns = [str(c) for c in frame.columns]
    has_marks, has_fx = "instrument_id" in columns, "base" in columns
    if not has_marks and not has_fx:
        raise MarksLoadError(
            f"no marks or FX rates: expected columns {', '.join(_MARK_COLUMNS)} (marks) or "
            f"{', '.join(_FX_COLUMNS)} (FX rates); found {', '.join(columns) or 'none'}"
        )
    for wanted, present in ((_MARK_COLUMNS, has_marks), (_FX_COLUMNS, has_fx)):
        missing = [c for c in wanted if present and c not in columns]
        if missing:
            raise MarksLoadError(f"missing column {', '.join(map(repr, missing))}")
    marks: list[MarkPrice] = []
    rates: list[FxRate] = []
    mark_rows: list[int] = []
    rate_rows: list[int] = []
    for number, cells in _rows(frame, columns):
        reader = _Row(number, cells, timezone)
        is_mark = has_marks and not reader.empty("instrument_id")
        is_fx = has_fx and not reader.empty("base")
        if is_mark == is_fx:
            raise reader.error(
                "instrument_id" if has_marks else "base",
                "fills both instrument_id and base"
                if is_mark
                else "is empty (a mark names an instrument_id, an FX rate a base)",
            )
        if is_mark:
            marks.append(reader.mark())
            mark_rows.append(number)
        else:
            rates.append(reader.fx_rate())
            rate_rows.append(number)
    return MarksTable(tuple(marks), tuple(rates), tuple(mark_rows + rate_rows))


def _read_file(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            # Every cell as text, nothing guessed: "100.10" stays exact, "NA" stays a string.
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except ImportError as error:  # Parquet without pyarrow
        raise MarksLoadError(f"{path}: {error} (pip install pyarrow)") from error
    except (OSError, ValueError) as error:
        raise MarksLoadError(f"{path}: {error}") from error
    raise MarksLoadError(f"{path}: not a .csv or .parquet file")


def _rows(frame: pd.DataFrame, columns: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, values in enumerate(frame.itertuples(index=False, name=None), start=1):
        yield number, dict(zip(columns, values, strict=True))


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


class _Row:
    """One row's cells, read into the SDK's types; errors name the row and column."""

    def __init__(self, number: int, cells: dict[str, Any], timezone: tzinfo | None) -> None:
        self.number = number
        self.cells = cells
        self.timezone = timezone

    def error(self, column: str, problem: str) -> MarksLoadError:
        return MarksLoadError(f"row {self.number}, column {column!r}: {problem}")

    def empty(self, column: str) -> bool:
        return _missing(self.cells.get(column))

    def text(self, column: str) -> str:
        value = self.cells.get(column)
        if _missing(value):
            raise self.error(column, "is empty")
        if not isinstance(value, str):
            raise self.error(column, f"must be text, got {value!r}")
        if value != value.strip():
            raise self.error(column, f"has surrounding blanks: {value!r}")
        return value

    def amount(self, column: str, *, required: bool = True) -> Decimal | None:
        value = self.cells.get(column)
        if _missing(value):
            if required:
                raise self.error(column, "is empty")
            return None
        if isinstance(value, bool):
            raise self.error(column, f"must be a number, got {value!r}")
        if isinstance(value, Decimal):
            amount = value
        elif isinstance(value, Integral):
            amount = Decimal(int(value))
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise self.error(column, f"must be a finite number, got {value!r}")
            amount = Decimal(repr(float(value)))  # the float's shortest text, never its binary
        elif isinstance(value, str):
            try:
                amount = Decimal(value.strip())
            except InvalidOperation:
                raise self.error(column, f"{value!r} is not a decimal number") from None
        else:
            raise self.error(column, f"must be a number, got {type(value).__name__} {value!r}")
        if not amount.is_finite():
            raise self.error(column, f"must be a finite number, got {value!r}")
        return amount

    def timestamp(self, column: str = "timestamp") -> datetime:
        value = self.cells.get(column)
        if _missing(value):
            raise self.error(column, "is empty")
        if isinstance(value, str):
            try:
                moment = datetime.fromisoformat(value.strip())
            except ValueError:
                raise self.error(
                    column, f"{value!r} is not an ISO 8601 time (2026-01-02T21:00:00Z)"
                ) from None
        elif isinstance(value, pd.Timestamp):
            moment = value.to_pydatetime()
        elif isinstance(value, datetime):
            moment = value
        else:
            raise self.error(column, f"must be a time, got {type(value).__name__} {value!r}")
        if moment.tzinfo is None or moment.utcoffset() is None:
            if self.timezone is None:
                raise self.error(
                    column,
                    f"{value!s} has no time zone: write an offset (2026-01-02T21:00:00Z) or "
                    "pass timezone=",
                )
            moment = moment.replace(tzinfo=self.timezone)
        return moment

    def mark(self) -> MarkPrice:
        price = self.amount("price")
        bid = self.amount("bid", required=False)
        ask = self.amount("ask", required=False)
        if bid is not None and ask is not None and bid > ask:
            raise self.error("bid", f"is above the ask ({bid} > {ask})")
        return MarkPrice(
            instrument_id=self.text("instrument_id"),
            mark=price,
            bid=bid,
            ask=ask,
            last=self.amount("last", required=False),
            timestamp=self.timestamp(),
        )

    def fx_rate(self) -> FxRate:
        base, quote = self.text("base"), self.text("quote")
        if base == quote:
            raise self.error("quote", f"must differ from base ({base})")
        rate = self.amount("rate")
        assert rate is not None
        if not rate > 0:
            raise self.error("rate", f"must be > 0, got {rate}")
        return FxRate(base=base, quote=quote, rate=rate, timestamp=self.timestamp())


def _outcome(table: MarksTable, acks: Sequence[MarkAck], batch_size: int) -> MarksLoaded:
    for index, ack in enumerate(acks):
        if ack.rejected:
            raise _refused(table, index, ack, batch_size, acks[:index])
    return MarksLoaded(
        marks_applied=sum(a.marks_applied for a in acks),
        marks_stale=sum(a.marks_stale for a in acks),
        fx_rates_applied=sum(a.fx_rates_applied for a in acks),
        fx_rates_stale=sum(a.fx_rates_stale for a in acks),
    )


def _refused(
    table: MarksTable, batch: int, ack: MarkAck, batch_size: int, before: Sequence[MarkAck]
) -> MarksLoadError:
    """The service's refusal of batch `batch`, told in the file's rows and columns."""
    first = batch * batch_size  # entries are the marks, then the rates, cut into batches
    applied = sum(a.marks_applied + a.fx_rates_applied for a in before)
    tail = (
        f" (nothing of rows in that batch was applied; the {len(before)} batches before it "
        f"were: {applied} applied)"
    )
    found = _REFUSED_ENTRY.match(ack.rejected_reason)
    if found is None:
        return MarksLoadError(f"the service refused batch {batch + 1}: {ack.rejected_reason}{tail}")
    kind, index, field, problem = (
        found.group(1),
        int(found.group(2)),
        found.group(3),
        found.group(4),
    )
    marks_in_batch = max(0, min(batch_size, len(table.marks) - first))
    entry = first + int(index) + (0 if kind == "marks" else marks_in_batch)
    row = table.rows[entry] if entry < len(table.rows) else 0
    return MarksLoadError(
        f"row {row}, column {_COLUMN_OF.get(field, field)!r}: {problem}; the service refused "
        f"it{tail}"
    )
