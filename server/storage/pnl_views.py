"""The `pnl` library: one row per trading day and row of the book (strategy or account level,
instrument), symbol = account, indexed by the close's time.

Amounts follow the analysts' store's convention (see view_layouts.py): a float64 column under
the figure's name, and its exact decimal text beside it as `<name>_exact` (a base figure
without a rate: NaN and ""). A close is appended once: the symbol's metadata holds the latest
trading date written, so a retry or a restart appends nothing twice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import arcticdb as adb
import pandas as pd

from server.domain.decimals import CanonicalTexts, canonical
from server.domain.pnl_history import DailyPnl

PNL_AMOUNTS = (
    "start_quantity", "start_mark", "end_quantity", "end_mark", "realized_pnl",
    "unrealized_pnl", "unrealized_change", "fees", "net_pnl", "exposure", "realized_pnl_base",
    "unrealized_pnl_base", "fees_base", "net_pnl_base", "exposure_base",
)  # fmt: skip
PNL_COLUMNS = [
    "trading_date", "sequence", "level", "strategy_id", "instrument_id", "currency",
    "base_currency", "late", *PNL_AMOUNTS, *(f"{name}_exact" for name in PNL_AMOUNTS), "other_fees",
]  # fmt: skip


def _row(day: DailyPnl, late: bool, canonical_texts: CanonicalTexts) -> list[object]:
    texts = [
        "" if (amount := getattr(day, name)) is None else canonical_texts[amount]
        for name in PNL_AMOUNTS
    ]
    key = day.key
    return [
        day.trading_date, day.sequence, "ACCOUNT" if key.is_account_level else "STRATEGY",
        key.strategy_id, key.instrument_id, day.currency, day.base_currency, late,
        *(float(text) if text else float("nan") for text in texts), *texts,
        ";".join(f"{currency} {canonical(amount)}" for currency, amount in day.other_fees),
    ]  # fmt: skip


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
            texts = CanonicalTexts()  # a close's rows share most of their figures' values
            frame = pd.DataFrame([_row(day, late, texts) for day in rows], columns=PNL_COLUMNS)
            frame["sequence"] = frame["sequence"].astype("int64")
            frame.index = pd.to_datetime([rows[0].close_ns] * len(rows), unit="ns", utc=True)
            metadata = {"trading_date": trading_date}
            if self.library.has_symbol(account_id):
                self.library.append(
                    account_id, frame, metadata=metadata, prune_previous_versions=True
                )
            else:
                self.library.write(account_id, frame, metadata=metadata)
            written.append(account_id)
        return written
