"""The `pnl` library: one row per trading day and row of the book (strategy or account level,
instrument), symbol = account, indexed by the close's time.

Amounts follow the analysts' store's convention (see view_layouts.py): a float64 column under
the figure's name, and its exact decimal text beside it as `<name>_exact` (a base figure
without a rate: NaN and ""). A close is appended once: the symbol's metadata holds the latest
trading date written, so a retry or a restart appends nothing twice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from operator import attrgetter
from typing import Any

import arcticdb as adb
import numpy as np
import numpy.typing as npt
import pandas as pd

from server.domain.decimals import MAX_CANONICAL_TEXTS, CanonicalTexts
from server.domain.pnl_history import DailyPnl
from server.storage.frames import columns_frame

PNL_AMOUNTS = (
    "start_quantity", "start_mark", "end_quantity", "end_mark", "realized_pnl",
    "unrealized_pnl", "unrealized_change", "fees", "net_pnl", "exposure", "realized_pnl_base",
    "unrealized_pnl_base", "fees_base", "net_pnl_base", "exposure_base",
)  # fmt: skip
PNL_COLUMNS = [
    "trading_date", "sequence", "level", "strategy_id", "instrument_id", "currency",
    "base_currency", "late", *PNL_AMOUNTS, *(f"{name}_exact" for name in PNL_AMOUNTS), "other_fees",
]  # fmt: skip


def pnl_frame(days: Sequence[DailyPnl], late: bool) -> pd.DataFrame:
    """The rows of one close, column by column, each distinct amount's text and float made
    once (CanonicalTexts): a frame from a list per row took 17-19 s of the views' thread at a
    million rows, holding the interpreter against the acks; this about 10 s."""
    texts, floats = CanonicalTexts(), _Floats()
    count = len(days)
    keys = [day.key for day in days]
    columns: dict[str, Sequence[object] | npt.NDArray[Any]] = {
        "trading_date": [day.trading_date for day in days],
        "sequence": np.fromiter((day.sequence for day in days), np.int64, count),
        "level": ["ACCOUNT" if key.is_account_level else "STRATEGY" for key in keys],
        "strategy_id": [key.strategy_id for key in keys],
        "instrument_id": [key.instrument_id for key in keys],
        "currency": [day.currency for day in days],
        "base_currency": [day.base_currency for day in days],
        "late": np.full(count, late),
    }
    exact: dict[str, list[str]] = {}
    for name in PNL_AMOUNTS:
        amounts = map(attrgetter(name), days)
        exact[name] = ["" if amount is None else texts[amount] for amount in amounts]
        columns[name] = np.fromiter(map(floats.__getitem__, exact[name]), np.float64, count)
    columns.update((f"{name}_exact", exact[name]) for name in PNL_AMOUNTS)
    columns["other_fees"] = [
        ";".join(f"{currency} {texts[amount]}" for currency, amount in day.other_fees)
        for day in days
    ]
    frame = columns_frame(columns)
    frame.index = pd.to_datetime(
        np.full(count, days[0].close_ns if days else 0), unit="ns", utc=True
    )
    return frame


class _Floats(dict[str, float]):
    """An amount's text as the float64 analysts read ("" is NaN), made once per text."""

    def __missing__(self, text: str) -> float:
        value = float(text) if text else float("nan")
        if len(self) < MAX_CANONICAL_TEXTS:
            self[text] = value
        return value


class PnlViews:
    def __init__(self, arctic: adb.Arctic) -> None:
        self.library = arctic.get_library("pnl", create_if_missing=True)

    def written_through(self, account_id: str) -> str:
        """The latest trading date written for the account ("" before the first)."""
        if not self.library.has_symbol(account_id):
            return ""
        metadata = self.library.read_metadata(account_id).metadata or {}
        return str(metadata.get("trading_date", ""))

    def record(self, days: Iterable[DailyPnl], late: bool = False) -> list[str]:
        """Appends each account's rows of one close (days of one trading date per account),
        unless that date is written already; returns the accounts written."""
        by_account: dict[str, list[DailyPnl]] = defaultdict(list)
        for day in days:
            by_account[day.key.account_id].append(day)
        written = []
        for account_id, rows in sorted(by_account.items()):
            trading_date = rows[0].trading_date
            if self.written_through(account_id) >= trading_date:
                continue
            frame = pnl_frame(rows, late)
            metadata = {"trading_date": trading_date}
            if self.library.has_symbol(account_id):
                self.library.append(
                    account_id, frame, metadata=metadata, prune_previous_versions=True
                )
            else:
                self.library.write(account_id, frame, metadata=metadata)
            written.append(account_id)
        return written
