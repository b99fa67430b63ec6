"""`export`: positions or the P&L history from the service, or fills, positions or the P&L
history straight from the store (plain arcticdb + pandas, as docs/storage.md shows analysts), to CSV
or Parquet by the file's extension. The service has no call listing fills: they come from the
store only.

Amounts from the service are written as their exact decimal text, never floats; the store's
frames keep both their float columns and the `<name>_exact` texts, as stored.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd

from client import PnlHistory, Position
from portfolio_cli.commands import Target
from portfolio_cli.tables import plain

FORMATS = (".csv", ".parquet")


class ExportError(Exception):
    """The store, library or account is not there, or the file cannot be written."""


def _scalar(value: Any) -> Any:
    """A cell: exact text for amounts; lists and records as JSON text."""
    value = plain(value)
    return json.dumps(value) if isinstance(value, list | dict) else value


def position_frame(rows: list[Position]) -> pd.DataFrame:
    return pd.DataFrame([{name: _scalar(value) for name, value in plain(p).items()} for p in rows])


def pnl_frame(history: PnlHistory) -> pd.DataFrame:
    """One row per trading day and currency; the day's base figures repeat on each."""
    records = []
    for day in history.days:
        base = {
            "account_id": history.account_id,
            "strategy_id": history.strategy_id,
            "trading_date": plain(day.trading_date),
            "closed_at": plain(day.closed_at),
            "sequence": day.sequence,
            "late": day.late,
            "base_currency": history.base_currency,
            **{
                name: plain(getattr(day, name))
                for name in ("realized_pnl_base", "unrealized_pnl_base", "fees_base",
                             "net_pnl_base", "exposure_base", "gross_exposure_base")
            },
            "missing_fx_rates": ",".join(day.missing_fx_rates),
        }  # fmt: skip
        for currency in day.by_currency or [None]:
            row = dict(base)
            if currency is not None:
                row.update({name: _scalar(v) for name, v in plain(currency).items()})
            records.append(row)
    return pd.DataFrame(records)


#: What each export reads from the store: the library, its symbol being the account.
LIBRARIES = {"fills": "fills", "positions": "portfolio", "pnl": "pnl"}


def store_frame(uri: str, what: str, account_id: str) -> pd.DataFrame:
    """The account's symbol in the export's library (see the table of the store in docs/storage.md),
    its index as a column (`timestamp` for the fills' execution times)."""
    import arcticdb as adb  # only store exports need it: other commands start faster

    if uri.startswith("lmdb://"):
        # Opening a missing LMDB path would create an empty store there.
        path = Path(uri.removeprefix("lmdb://").split("?", 1)[0])
        if not path.is_dir():
            raise ExportError(f"--store: no store at {path}")
    arctic = adb.Arctic(uri)
    name = LIBRARIES[what]
    if not arctic.has_library(name):
        raise ExportError(f"--store: {uri} has no {name} library")
    library = arctic.get_library(name)
    if not library.has_symbol(account_id):
        raise ExportError(f"--account: no {what} for account {account_id!r} in {uri}")
    frame: pd.DataFrame = library.read(account_id).data
    index = frame.index.name or ("timestamp" if what == "fills" else "row")
    return frame.rename_axis(index).reset_index()


def write(frame: pd.DataFrame, path: Path) -> None:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
        return
    try:
        frame.to_parquet(path, index=False)
    except ImportError as error:
        raise ExportError(f"Parquet needs pyarrow (pip install '.[parquet]'): {error}") from error


def export(target: Target, args: argparse.Namespace) -> tuple[Path, int]:
    """Writes the file; returns it and its row count."""
    if args.store:
        frame = store_frame(args.store, args.what, args.account)
    elif args.what == "positions":
        with target.client() as pm:
            frame = position_frame(
                list(pm.iter_positions(account_id=args.account, strategy_id=args.strategy))
            )
    else:
        with target.client() as pm:
            frame = pnl_frame(
                pm.get_pnl_history(
                    args.account, args.strategy, from_date=args.from_date, to_date=args.to_date
                )
            )
    path: Path = args.out
    write(frame, path)
    return path, len(frame)
