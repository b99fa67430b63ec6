"""A store whose views the previous release wrote (amounts as text, no `_exact` columns) is
upgraded by the service itself at start: every symbol, touched or not, in the current
columns with the same figures, and the service goes on writing to them."""

from __future__ import annotations

import gc
import json

import arcticdb as adb
import grpc
import pandas as pd

from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.storage.view_layouts import (
    COMMISSION_COLUMNS,
    COMMISSION_COLUMNS_V1,
    CORRECTION_COLUMNS,
    CORRECTION_COLUMNS_V1,
    FILL_COLUMNS,
    FILL_COLUMNS_V1,
    POSITION_AMOUNTS,
    POSITION_COLUMNS,
    POSITION_COLUMNS_V2,
)
from tests.api.protocol import BASE_SECONDS, acks, pb_fill
from tests.api.test_commission_amendment import pb_amendment
from tests.conftest import start_test_server
from tests.storage.test_views_analysts import at

PREVIOUS = {  # library -> (its columns then, the amounts then stored as text)
    "fills": (FILL_COLUMNS_V1, ["price", "commission"]),
    "corrections": (CORRECTION_COLUMNS_V1, ["price", "commission"]),
    "commissions": (COMMISSION_COLUMNS_V1, ["commission"]),
    "positions": (POSITION_COLUMNS_V2, POSITION_AMOUNTS),
    "portfolio": (POSITION_COLUMNS_V2, POSITION_AMOUNTS),
}
CURRENT = {
    "fills": FILL_COLUMNS,
    "corrections": CORRECTION_COLUMNS,
    "commissions": COMMISSION_COLUMNS,
    "positions": POSITION_COLUMNS,
    "portfolio": POSITION_COLUMNS,
}


def as_previous_release(uri: str) -> dict[str, pd.DataFrame]:
    """Rewrites every view symbol as the previous release wrote it (text amounts, no
    metadata; in `fills`, the rows as they first came: corrections and late commissions only
    beside them, a late fill after the last row); returns the frames as they were before."""
    arctic = adb.Arctic(uri)
    before = {}
    for name, (columns, amounts) in PREVIOUS.items():
        library = arctic.get_library(name)
        for symbol in library.list_symbols():
            frame = library.read(symbol).data
            before[f"{name}/{symbol}"] = frame
            old = frame.assign(**{a: frame[f"{a}_exact"] for a in amounts})[columns]
            if name == "fills":
                old = as_first_written(old, arctic.get_library("corrections"), symbol)
            library.write(symbol, old, prune_previous_versions=True)
    arctic.get_library("checkpoints").delete("views_layout")  # that release kept none
    del arctic
    gc.collect()  # LMDB: one open instance per path and process
    return before


def as_first_written(fills: pd.DataFrame, corrections, symbol: str) -> pd.DataFrame:
    """The previous release's rows: each execution as it came (the corrected one from the
    row the correction keeps, F2 before its late commission), in arrival order, the index
    nudged past the last row."""
    fills = fills.copy()
    if corrections.has_symbol(symbol):
        for text in corrections.read(symbol).data["original"]:
            original = json.loads(text)
            at = fills.index[fills["fill_id"] == original["fill_id"]][0]
            for name in ("quantity", "price", "commission", "side"):
                fills.loc[at, name] = original[name]
            fills.loc[at, "fill_time"] = pd.Timestamp(original["fill_time"])
    fills.loc[fills["fill_id"] == "F2", "commission"] = "0"
    fills = fills.sort_values("sequence")
    index, last = [], -1
    for time_ns in fills["fill_time"].astype("int64"):
        last = max(int(time_ns), last + 1)
        index.append(last)
    fills.index = pd.DatetimeIndex(pd.to_datetime(index, unit="ns", utc=True), name="timestamp")
    return fills


def test_a_store_of_the_previous_release_is_upgraded_at_start(tmp_path):
    uri = f"lmdb://{tmp_path}/store"
    first = [
        pb_fill("BUY", 6, "10.5", fill_id="F1", commission="1", timestamp=at(10)),
        pb_fill("BUY", 5, 11, fill_id="F2", timestamp=at(20)),
        pb_fill("SELL", 3, 12, account="A2", strategy="S2", timestamp=at(30)),
        pb_fill("BUY", 4, "10.5", fill_id="F1.c", corrects="F1", commission="1", timestamp=at(10)),
        pb_amendment("F2", "2"),
        pb_fill("SELL", 2, 12, fill_id="late", timestamp=at(15)),
    ]
    server = start_test_server(store=uri)
    try:
        with grpc.insecure_channel(server.address) as channel:
            acks(pb_grpc.PortfolioManagerStub(channel), *first)
    finally:
        server.stop()
    gc.collect()
    before = as_previous_release(uri)

    server = start_test_server(store=uri)  # no new event: the start alone upgrades
    try:
        assert len(server.running.store.views.upgraded) == len(before)
    finally:
        server.stop()
    gc.collect()
    arctic = adb.Arctic(uri)
    for where, frame in before.items():
        library, symbol = where.split("/")
        upgraded = arctic.get_library(library).read(symbol).data
        assert list(upgraded.columns) == CURRENT[library], where
        pd.testing.assert_frame_equal(upgraded, frame, check_freq=False, obj=where)
    del arctic
    gc.collect()

    # The upgraded symbols take new rows: appended, a late fill in its place, a correction.
    server = start_test_server(store=uri)
    try:
        with grpc.insecure_channel(server.address) as channel:
            acks(
                pb_grpc.PortfolioManagerStub(channel),
                pb_fill("BUY", 1, 13, timestamp=at(40), fill_id="new"),
                pb_fill("SELL", 1, 13, timestamp=at(12), fill_id="later"),
                pb_fill("BUY", 3, 11, fill_id="F2.c", corrects="F2", timestamp=at(20)),
            )
        assert server.running.store.views.upgraded == []  # done once: not even listed
    finally:
        server.stop()
    gc.collect()
    fills = adb.Arctic(uri).get_library("fills").read("A1").data
    assert fills["fill_id"].tolist() == ["F1", "later", "late", "F2", "new"]
    assert fills["qty"].tolist() == [4.0, -1.0, -2.0, 3.0, 1.0]
    assert fills.index[1] == pd.Timestamp(BASE_SECONDS + 12, unit="s", tz="UTC")
