"""A report from the analysts' store alone: the `pnl` library read with plain arcticdb + pandas.

The account's symbol holds a row per trading day and row of the book; the account-level rows
(level ACCOUNT) summed per day give the account's daily net P&L in base currency, the strategy
rows its strategies'. Sums use the exact texts (`<name>_exact`), never the float columns.
Exposure is as of the latest close in the report's days, by instrument and by currency: the
store keeps no asset class (only the service knows instruments' definitions).
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import arcticdb as adb
import pandas as pd

from reports.model import Day, ExposureLine, Report, StrategyLine, canonical, daily_risk

EXPOSURE, BASE_EXPOSURE = "exposure_exact", "exposure_base_exact"


class NotFoundError(Exception):
    """No store, no `pnl` library or no such account (a bad argument, not a failure)."""


def _read(uri: str, account_id: str) -> pd.DataFrame:
    if uri.startswith("lmdb://"):
        # Opening a missing LMDB path would create an empty store there.
        path = Path(uri.removeprefix("lmdb://").split("?", 1)[0])
        if not path.is_dir():
            raise NotFoundError(f"--store: no store at {path}")
    arctic = adb.Arctic(uri)
    if not arctic.has_library("pnl"):
        raise NotFoundError(f"--store: {uri} has no pnl library (no trading day closed yet)")
    library = arctic.get_library("pnl")
    if not library.has_symbol(account_id):
        raise NotFoundError(f"--account: no P&L history for account {account_id!r} in {uri}")
    frame: pd.DataFrame = library.read(account_id).data
    return frame


def _sum(texts: pd.Series) -> Decimal | None:
    """Exact sum of decimal texts; None when any is empty (a base figure without a rate)."""
    if (texts == "").any():
        return None
    return sum((Decimal(text) for text in texts), Decimal(0))


def _daily(rows: pd.DataFrame) -> list[Day]:
    return [
        Day(trading_date=str(date), net_pnl=_sum(group["net_pnl_base_exact"]))
        for date, group in rows.groupby("trading_date", sort=True)
    ]


def _exposure(rows: pd.DataFrame, key: str, column: str) -> list[ExposureLine]:
    """Long (positive rows) and short (negative rows) per name, as GetRiskMetrics splits them."""
    long: dict[str, Decimal] = defaultdict(Decimal)
    short: dict[str, Decimal] = defaultdict(Decimal)
    for name, text in zip(rows[key], rows[column], strict=True):
        if not text:
            continue
        value = Decimal(text)
        if value > 0:
            long[str(name)] += value
        else:
            short[str(name)] += value
    names = sorted(set(long) | set(short), key=lambda n: (-(long[n] - short[n]), n))
    return [
        ExposureLine(
            name=name, long=canonical(long[name]), short=canonical(short[name]),
            gross=canonical(long[name] - short[name]), net=canonical(long[name] + short[name]),
        )
        for name in names
    ]  # fmt: skip


def from_store(uri: str, account_id: str, from_date: str, to_date: str) -> Report:
    frame = _read(uri, account_id)
    if from_date:
        frame = frame[frame["trading_date"] >= from_date]
    if to_date:
        frame = frame[frame["trading_date"] <= to_date]
    account = frame[frame["level"] == "ACCOUNT"]
    days = _daily(account)
    strategies = []
    for strategy_id, rows in frame[frame["level"] == "STRATEGY"].groupby("strategy_id", sort=True):
        own = [d.net_pnl for d in _daily(rows) if d.net_pnl is not None]
        if own:
            strategies.append(
                StrategyLine(
                    strategy_id=str(strategy_id), net_pnl=sum(own, Decimal(0)),
                    days=rows["trading_date"].nunique(),
                )
            )  # fmt: skip
    latest = days[-1].trading_date if days else ""
    at_close = account[account["trading_date"] == latest]
    base = str(frame["base_currency"].iloc[0]) if len(frame) else ""
    notes = [
        "Figures from the analysts' store (pnl library): the statistics and value at risk are "
        "computed here from the recorded daily net P&L with the service's rules. Exposure by "
        "asset class, exposure now (rather than at the last close), correlations, round trips "
        "and venues are only available from the service (--service).",
    ]
    missing = sum(1 for d in days if d.net_pnl is None)
    if missing:
        notes.append(f"{missing} day(s) left out: a base figure was missing (an FX rate).")
    based = [(d.trading_date, d.net_pnl) for d in days if d.net_pnl is not None]
    return Report(
        account_id=account_id,
        base_currency=base,
        source=f"store {uri}",
        from_date=from_date,
        to_date=to_date,
        days=days,
        strategies=strategies,
        exposures=[
            (
                f"Exposure by instrument ({base})",
                _exposure(at_close, "instrument_id", BASE_EXPOSURE),
            ),
            ("Exposure by currency (each in itself)", _exposure(at_close, "currency", EXPOSURE)),
        ],
        exposure_as_of=f"the close of {latest}" if latest else "no close",
        risk=daily_risk(based),
        notes=notes,
    )
