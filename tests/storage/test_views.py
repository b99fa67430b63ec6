"""The analysts' views, read with nothing but arcticdb and pandas, as docs/storage.md shows."""

from __future__ import annotations

from decimal import Decimal

import arcticdb as adb
import grpc
import pandas as pd
from google.protobuf.timestamp_pb2 import Timestamp

from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from tests.api.protocol import acks, pb_fill, pb_status
from tests.conftest import start_test_server

T = 1_767_300_000


def run(store: str, *batches) -> None:
    server = start_test_server(store=store)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            for batch in batches:
                acks(stub, *batch)
    finally:
        server.stop()  # waits for the views to catch up


def test_fills_and_orders_are_per_account_with_exact_values(tmp_path):
    store = f"lmdb://{tmp_path}/store"
    same = Timestamp(seconds=T)
    run(
        store,
        [
            pb_fill(
                "BUY",
                "0.000000001",
                "64000.123456789",
                timestamp=same,
                commission="0.01",
                order_ref="S1-7",
                venue="SMART",
                trace_id="t1",
            ),
            pb_fill("SELL", "5", "10", timestamp=same, account="A2"),
        ],
        [
            pb_fill("BUY", "3", "9.5", timestamp=Timestamp(seconds=T - 60)),  # late
            pb_status("u1", "FILLED", order_id="42", filled_quantity="3", avg_fill_price="9.5"),
        ],
    )
    arctic = adb.Arctic(store)
    fills = arctic.get_library("fills")
    a1 = fills.read("A1").data
    assert list(a1["fill_id"].str.startswith("api-fill-")) == [True, True]
    # The late fill is indexed at its execution time (update(), not after the last row).
    assert list(a1["sequence"]) == [3, 1]
    assert a1["quantity"].map(Decimal).tolist() == [Decimal("3"), Decimal("0.000000001")]
    assert a1["price_exact"].iloc[1] == "64000.123456789"  # exact beside the float
    assert a1["price"].tolist() == [9.5, 64000.123456789]
    assert (a1["order_ref"].iloc[1], a1["venue"].iloc[1], a1["trace_id"].iloc[1]) == (
        "S1-7",
        "SMART",
        "t1",
    )
    assert str(a1.index.tz) == "UTC"
    assert a1.index.is_monotonic_increasing and a1.index.is_unique
    # fill_time is the exact time (UTC; ArcticDB keeps time zones on the index only).
    assert a1["fill_time"].iloc[0] == pd.Timestamp(T - 60, unit="s")
    assert a1.index[0] == pd.Timestamp(T - 60, unit="s", tz="UTC")
    assert fills.read("A2").data["side"].tolist() == ["SELL"]
    orders = arctic.get_library("orders").read("A1").data
    assert orders[["update_id", "status", "filled_quantity", "avg_fill_price"]].values.tolist() == [
        ["u1", "FILLED", "3", "9.5"]
    ]


def test_positions_and_portfolio_hold_one_current_row_per_key(tmp_path):
    store = f"lmdb://{tmp_path}/store"
    run(
        store,
        [pb_fill("BUY", 100, 10, strategy="LONG"), pb_fill("SELL", 100, 11, strategy="SHORT")],
        [pb_fill("BUY", 10, 300, strategy="LONG", instrument="MSFT")],
        [pb_fill("SELL", 50, 12, strategy="LONG")],
    )
    arctic = adb.Arctic(store)
    long_rows = arctic.get_library("positions").read("LONG").data
    assert long_rows[["instrument_id", "quantity", "realized_pnl_exact"]].values.tolist() == [
        ["AAPL", "50", "100"],
        ["MSFT", "10", "0"],
    ]
    assert long_rows[["qty", "realized_pnl"]].values.tolist() == [[50.0, 100.0], [10.0, 0.0]]
    book = (
        arctic.get_library("portfolio").read("A1").data.set_index(["strategy_id", "instrument_id"])
    )
    assert book.loc[("", "AAPL"), "quantity"] == "-50"  # the account-level row
    assert book.loc[("", "AAPL"), "level"] == "ACCOUNT"
    assert book.loc[("SHORT", "AAPL"), "quantity"] == "-100"
    assert book.loc[("LONG", "AAPL"), "market_price"] == 12.0
    assert len(book) == 5 and book.index.is_unique
    # A restart with nothing new rewrites nothing into duplicates.
    run(store)
    assert len(arctic.get_library("portfolio").read("A1").data) == 5


def test_orders_hold_one_row_per_transition_and_corrections_update_it(tmp_path):
    from tests.api.test_reference_and_cash import status

    store = f"lmdb://{tmp_path}/store"
    run(
        store,
        [
            status("o1", "SUBMITTED", 1, order_id="7", remaining_quantity="10"),
            status("o2", "FILLED", 2, order_id="7", filled_quantity="10"),
        ],
        [status("o3", "CANCELLED", 3, order_id="7", filled_quantity="10")],  # illegal
    )
    # A restart, then a correction of o1 (same order, same time, new content).
    run(store, [status("o4", "SUBMITTED", 1, order_id="7", remaining_quantity="12")])
    orders = adb.Arctic(store).get_library("orders").read("A1").data
    assert list(orders["update_id"]) == ["o4", "o2", "o3"]
    assert list(orders["remaining_quantity"]) == ["12", "0", "0"]
    assert list(orders["corrects"]) == ["o1", "", ""]
    assert orders["flag"].iloc[2] == "illegal transition FILLED -> CANCELLED"
    assert set(orders["order_key"]) == {"id:7"}
    assert orders.index.is_monotonic_increasing


def test_a_correction_written_with_its_original_leaves_one_row(tmp_path):
    from tests.api.test_reference_and_cash import status

    store = f"lmdb://{tmp_path}/store"
    run(
        store,
        [
            status("a1", "SUBMITTED", 1, order_id="8", remaining_quantity="5"),
            status("a2", "SUBMITTED", 1, order_id="8", remaining_quantity="6"),
        ],
    )
    orders = adb.Arctic(store).get_library("orders").read("A1").data
    assert list(orders["update_id"]) == ["a2"]
    assert list(orders["corrects"]) == ["a1"]


def test_reconciliation_runs_are_recorded_one_row_per_line(tmp_path):
    """An empty run leaves one NONE row; a run's lines keep their figures exactly; a run
    recorded again (views catching up after a restart) is not written twice."""
    from server.application.ports import ReconciliationRun
    from server.domain.ledger import Ledger
    from server.storage.views import RECONCILIATION_COLUMNS, ArcticViews
    from tests.domain.builders import fill
    from tests.domain.event_builders import broker_positions

    ledger = Ledger()
    runs = []
    for positions, at_ns in ([(), 10**18], [(("AAPL", 150, "10.7"), ("ES", -1, 5)), 2 * 10**18]):
        outcome = ledger.record(broker_positions(*positions, account="U1", at_ns=at_ns))
        runs.append(ReconciliationRun(outcome.applied.reconciliation, []))
        ledger.record(fill("BUY", 100, "10.5", account="U1"))
    views = ArcticViews(adb.Arctic(f"lmdb://{tmp_path}/store"))
    views.record([], [], [], runs[:1])
    views.record([], [], [], runs)  # the first again, and the second
    frame = views.reconciliations.read("U1").data
    assert list(frame.columns) == RECONCILIATION_COLUMNS
    assert list(frame.status) == ["NONE", "RESIDUAL", "UNATTRIBUTED"]
    rows = frame.set_index("instrument_id")
    assert rows.loc["AAPL", "residual_quantity"] == "50"
    assert Decimal(rows.loc["AAPL", "residual_avg_cost"]) == Decimal("11.1")
    assert rows.loc["AAPL", "strategies"] == '[["S1", "100"]]'
    assert rows.loc["ES", "residual_owner"] == "UNATTRIBUTED"
    assert list(frame.sequence) == sorted(frame.sequence)
