"""Reading the analysts' store with nothing but arcticdb and pandas, while the service runs
(reads may lag it by a second or two). PORTFOLIO_STORE is the service's --store (an LMDB
folder the service writes: give its absolute path); the account and strategy are the
five-minute example's."""

import os
from decimal import Decimal

import arcticdb as adb
import pandas as pd

store = adb.Arctic(os.environ.get("PORTFOLIO_STORE", "lmdb://data"))


def read(library: str, symbol: str, **query: object) -> pd.DataFrame:
    """The symbol's frame; an empty one while nothing was written under it yet (a fresh
    store, an account with no fills yet: ArcticDB raises NoSuchVersionException there)."""
    if not store.has_library(library) or not store[library].has_symbol(symbol):
        return pd.DataFrame()
    return store[library].read(symbol, **query).data


account, strategy = "U123", "momo"
fills = read("fills", account)  # a row per execution, as the book holds it now
orders = read("orders", account)  # a row per status change
positions = read("positions", strategy)  # the strategy's rows, in every account
book = read("portfolio", account)  # the account-level rows and each strategy's rows
history = read("position_history", account)  # rows as they changed, appended
cash = read("balances", account)  # cash per currency after each change
days = read("pnl", account)  # a row per trading day and row of the book
marks = read("marks", "latest")  # one JSON record per mark or FX rate
runs = read("reconciliations", account)  # a row per line of each reconciliation
corrections = read("corrections", account)
commissions = read("commissions", account)

if fills.empty:
    print(f"no fills in {account} yet")
else:
    # The book's quantity per instrument (the account-level rows'), and fees, from the fills.
    print("quantity:", fills.groupby("instrument_id")["qty"].sum().to_dict())
    print("commission:", fills.groupby("strategy_id")["commission"].sum().to_dict())
    # Exact figures from the text beside each float (by position: .iloc, the index is time).
    print("commission, exact:", sum(map(Decimal, fills["commission_exact"])))
    print("first price, exact:", Decimal(fills["price_exact"].iloc[0]))

    # Filters run inside the store.
    q = adb.QueryBuilder()
    q = q[(q["price"] > 10) & (q["instrument_id"] == "AAPL")]
    print("fills above 10:", len(read("fills", account, query_builder=q)))

    # A time range reads only its rows (fills are indexed at execution time, UTC).
    since = pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=1)
    print("fills in the last hour:", len(read("fills", account, date_range=(since, None))))

if not history.empty:
    # Realized P&L per strategy over time, from the appended snapshots.
    realized = history[history.level == "STRATEGY"].pivot_table(
        index="snapshot_time", columns="strategy_id", values="realized_pnl", aggfunc="sum"
    )
    print("realized:", realized.iloc[-1].to_dict())

if not cash.empty:
    print("cash:", cash.groupby("currency")["cash"].last().to_dict())
