"""History kept, not overwritten (issue 14, part 4): position snapshots appended to
`position_history` at an interval (the rows changed since the last one) and at a day's close,
read with plain arcticdb and pandas."""

from __future__ import annotations

import gc
import time
from decimal import Decimal

import arcticdb as adb
import grpc
import pandas as pd

from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.domain.balances import Balance, BalanceKey
from server.domain.book import position_view
from server.domain.position import Position, PositionKey
from server.storage.view_layouts import BALANCE_COLUMNS, HISTORY_COLUMNS
from server.storage.views import ArcticViews
from tests.api.protocol import BASE_SECONDS, acks, pb_fill
from tests.api.test_reference_and_cash import transfer
from tests.conftest import a_missed_close, start_test_server

T0 = BASE_SECONDS * 10**9


def _view(account: str, strategy: str, instrument: str, quantity: int, sequence: int):
    row = Position(
        key=PositionKey(account, strategy, instrument),
        multiplier=Decimal(1),
        quantity=Decimal(quantity),
        cost_basis=Decimal(quantity * 100),
        trade_count=1,
        updated_at_ns=T0 + sequence,
        last_sequence=sequence,
        currency="USD",
    )
    return position_view(row, Decimal(110), Decimal("1e-9"), base_currency="USD")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rows_changed_since_the_last_snapshot_are_appended_each_interval(tmp_path):
    arctic = adb.Arctic(views_uri(tmp_path))
    views = ArcticViews(arctic)
    clock = views.clock = Clock()
    views.wall_clock_ns = lambda: T0 + int(clock.now * 10**9)
    views.history_seconds = 60
    views.record([], [_view("A1", "S1", "AAPL", 10, 1), _view("A1", "S1", "MSFT", 5, 2)])
    clock.now += 30  # within the interval: kept for the next snapshot
    views.record([], [_view("A1", "S1", "AAPL", 12, 3)])
    views.record([], [_view("A1", "S1", "AAPL", 15, 4)])
    history = views.position_history.read("A1").data
    assert list(history.columns) == HISTORY_COLUMNS
    assert history[["instrument_id", "qty"]].values.tolist() == [["AAPL", 10.0], ["MSFT", 5.0]]
    clock.now += 31  # the interval is over: the latest state of what changed, MSFT untouched
    views.record([], [])
    history = views.position_history.read("A1").data
    assert history[["instrument_id", "qty", "reason"]].values.tolist() == [
        ["AAPL", 10.0, "interval"],
        ["MSFT", 5.0, "interval"],
        ["AAPL", 15.0, "interval"],
    ]
    assert history["snapshot_time"].tolist()[-1] == pd.Timestamp(T0 + 1061 * 10**9, unit="ns")
    # A later start hands every row over again: only what changed since is appended.
    again = ArcticViews(arctic)
    again.history_seconds = 0
    again.record([], [_view("A1", "S1", "AAPL", 15, 4), _view("A1", "S1", "MSFT", 6, 5)])
    history = again.position_history.read("A1").data
    assert history["qty"].tolist() == [10.0, 5.0, 15.0, 6.0]


def views_uri(tmp_path) -> str:
    return f"lmdb://{tmp_path}/store"


def test_record_close_appends_every_row_and_balance_once(tmp_path):
    views = ArcticViews(adb.Arctic(views_uri(tmp_path)))
    views.history_seconds = None  # only the close
    close_ns = T0 + 17 * 3600 * 10**9
    rows = [_view("A1", "S1", "AAPL", 10, 1), _view("A1", "", "AAPL", 10, 1)]
    cash = Balance(BalanceKey("A1", "USD"), Decimal("1000.5"), Decimal("200"), T0, 3)
    views.record_close(close_ns, rows, [cash])
    views.record_close(close_ns, rows, [cash])  # a retry, or after a restart: nothing twice
    history = views.position_history.read("A1").data
    assert history[["strategy_id", "qty", "reason"]].values.tolist() == [
        ["S1", 10.0, "close"],
        ["", 10.0, "close"],
    ]
    assert set(history["snapshot_time"]) == {pd.Timestamp(close_ns, unit="ns")}
    assert history.index[0] == pd.Timestamp(close_ns, unit="ns", tz="UTC")
    balances = views.balances.read("A1").data
    assert list(balances.columns) == BALANCE_COLUMNS
    assert balances[["currency", "cash", "reserved", "available", "reason"]].values.tolist() == [
        ["USD", 1000.5, 200.0, 800.5, "close"]
    ]
    views.record_close(close_ns + 86_400 * 10**9, rows, [cash])  # the next day's close
    assert len(views.position_history.read("A1").data) == 4
    assert views.balances.read("A1").data["reason"].tolist() == ["close", "close"]


def test_the_service_appends_history_at_its_interval(tmp_path):
    store = views_uri(tmp_path)
    for batch in (
        [pb_fill("BUY", 10, 100), pb_fill("BUY", 5, 300, instrument="MSFT")],
        [pb_fill("SELL", 4, 110)],
    ):
        server = start_test_server(store=store, position_history_seconds=0.0)
        try:
            with grpc.insecure_channel(server.address) as channel:
                acks(pb_grpc.PortfolioManagerStub(channel), *batch)
        finally:
            server.stop()
    gc.collect()
    history = adb.Arctic(store).get_library("position_history").read("A1").data
    account = history[history["level"] == "ACCOUNT"]
    assert account[["instrument_id", "qty"]].values.tolist() == [
        ["AAPL", 10.0],
        ["MSFT", 5.0],
        ["AAPL", 6.0],  # MSFT did not change: not appended again
    ]
    assert account["realized_pnl"].tolist()[-1] == 40.0
    assert history.index.is_monotonic_increasing


def closed_in(library) -> bool:
    return library.has_symbol("A1") and "close" in set(library.read("A1").data.reason)


def wait_for_the_close_snapshot(server) -> None:
    """Until the views hold account A1's close in position_history (15 s at most)."""
    views = server.running.store.views
    deadline = time.monotonic() + 15
    while not closed_in(views.position_history):
        assert time.monotonic() < deadline, "no close snapshot"
        time.sleep(0.1)


def test_a_days_close_appends_every_row_and_balance_of_the_account(tmp_path):
    """A close the service journals (here a missed one, at its next start) snapshots the
    account's rows and balances, at the close's time, once (a later start adds none)."""
    store = views_uri(tmp_path)
    closed, session = a_missed_close(position_history_seconds=3600.0)
    batches = [
        [transfer("t1", "5000"), pb_fill("BUY", 10, 100), pb_fill("BUY", 3, 50, instrument="X")],
        [],  # the close is due at this start: journaled then
        [],
    ]
    for batch in batches:
        server = start_test_server(store=store, **session)
        try:
            with grpc.insecure_channel(server.address) as channel:
                if batch:
                    acks(pb_grpc.PortfolioManagerStub(channel), *batch)
                else:
                    wait_for_the_close_snapshot(server)
        finally:
            server.stop()
        gc.collect()
    arctic = adb.Arctic(store)
    history = arctic.get_library("position_history").read("A1").data
    close = history[history.reason == "close"]
    assert sorted(zip(close.level, close.instrument_id, close.qty, strict=True)) == [
        ("ACCOUNT", "AAPL", 10.0),
        ("ACCOUNT", "X", 3.0),
        ("STRATEGY", "AAPL", 10.0),
        ("STRATEGY", "X", 3.0),
    ]
    close_time = close.snapshot_time.iloc[0]
    assert (close.snapshot_time == close_time).all()
    assert abs(close_time - pd.Timestamp(closed.replace(tzinfo=None))) < pd.Timedelta(60, "s")
    balances = arctic.get_library("balances").read("A1").data
    assert balances[balances.reason == "close"][["currency", "cash"]].values.tolist() == [
        ["USD", 5000.0 - 1000 - 150]
    ]


def test_a_close_the_service_journals_is_snapshotted_once_by_the_views(tmp_path, monkeypatch):
    """The rows and balances at a close this process journaled go to the store once, with
    the commit (the projector): the day closer does not build a view of every row again on
    the event loop for a write that appends nothing."""
    from server.storage.arctic import ArcticEventStore

    calls: list[int] = []
    record_close = ArcticEventStore.record_close

    def counted(self, close_ns, positions, balances):  # type: ignore[no-untyped-def]
        calls.append(close_ns)
        record_close(self, close_ns, positions, balances)

    monkeypatch.setattr(ArcticEventStore, "record_close", counted)
    store = views_uri(tmp_path)
    _, session = a_missed_close(position_history_seconds=3600.0)
    server = start_test_server(store=store)  # no session: no close yet
    try:
        with grpc.insecure_channel(server.address) as channel:
            acks(pb_grpc.PortfolioManagerStub(channel), pb_fill("BUY", 10, 100))
    finally:
        server.stop()
    gc.collect()
    server = start_test_server(store=store, **session)  # the close is due: journaled now
    try:
        wait_for_the_close_snapshot(server)
    finally:
        server.stop()
    gc.collect()
    assert len(calls) == 1
