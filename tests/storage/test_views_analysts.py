"""The analysts' store as an analyst reads it (issue 14, part 4): plain arcticdb and pandas on
the LMDB store a real service wrote, as docs/storage.md "Reading the store with pandas" shows
(tests/test_examples.py runs its example): sums, `QueryBuilder` filters, date ranges, and
figures that add up to the book's."""

from __future__ import annotations

from decimal import Decimal

import arcticdb as adb
import grpc
import pandas as pd
from google.protobuf.timestamp_pb2 import Timestamp

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from tests.api.protocol import BASE_SECONDS, acks, pb_fill
from tests.api.test_commission_amendment import pb_amendment
from tests.api.test_reference_and_cash import transfer
from tests.conftest import start_test_server


def at(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int((BASE_SECONDS + seconds) * 10**9))
    return stamp


def serve(store: str, *batches: list[pb.ExecutionEvent], **config: object) -> dict[str, str]:
    """Sends each batch, then stops the service (which waits for the views); returns the
    book's account-level quantity per instrument of A1, as the API gives it."""
    server = start_test_server(store=store, **config)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            for batch in batches:
                assert all(a.result == pb.EVENT_RESULT_ACCEPTED for a in acks(stub, *batch))
            book = {}
            for instrument in ("AAPL", "MSFT"):
                try:
                    row = stub.GetPosition(
                        pb.GetPositionRequest(account_id="A1", instrument_id=instrument)
                    )
                except grpc.RpcError:
                    continue
                book[instrument] = row.quantity
            return book
    finally:
        server.stop()


def test_amounts_are_numbers_an_analyst_can_sum_and_filter(tmp_path):
    store = f"lmdb://{tmp_path}/store"
    book = serve(
        store,
        [
            pb_fill("BUY", 100, "99.5", commission="1.25", timestamp=at(1)),
            pb_fill("BUY", 10, "310.25", instrument="MSFT", commission="2", timestamp=at(2)),
            pb_fill("SELL", 40, "101", commission="1", timestamp=at(3), strategy="S2"),
        ],
    )
    lib = adb.Arctic(store).get_library("fills")
    fills = lib.read("A1").data
    # qty is signed by side: a plain sum per instrument is the book's quantity.
    by_instrument = fills.groupby("instrument_id")["qty"].sum()
    assert by_instrument.to_dict() == {"AAPL": 60.0, "MSFT": 10.0}
    assert {k: Decimal(v) for k, v in book.items()} == {"AAPL": 60, "MSFT": 10}
    assert fills["commission"].sum() == 4.25
    assert fills.dtypes["price"] == "float64" and fills.dtypes["qty"] == "float64"
    # The exact decimals are beside the floats, as they came in.
    assert fills["price_exact"].tolist() == ["99.5", "310.25", "101"]
    assert fills["quantity"].tolist() == ["100", "10", "40"]
    # QueryBuilder filters run in the store.
    q = adb.QueryBuilder()
    q = q[q["price"] > 100]
    assert lib.read("A1", query_builder=q).data["instrument_id"].tolist() == ["MSFT", "AAPL"]

    portfolio = adb.Arctic(store).get_library("portfolio").read("A1").data
    strategies = portfolio[portfolio["level"] == "STRATEGY"]
    assert strategies.groupby("instrument_id")["qty"].sum().to_dict() == {
        "AAPL": 60.0,
        "MSFT": 10.0,
    }
    # S2 sold 40 short (a strategy realizes nothing); the account's row closed 40 of its
    # 100 bought at 99.5 at 101: 60.
    assert strategies["realized_pnl"].sum() == 0.0
    assert portfolio.groupby("level")["realized_pnl"].sum()["ACCOUNT"] == 60.0
    assert portfolio.dtypes["avg_cost"] == "float64"
    row = portfolio[(portfolio["level"] == "ACCOUNT") & (portfolio["instrument_id"] == "MSFT")]
    assert row[["avg_cost", "avg_cost_exact"]].values.tolist() == [[310.25, "310.25"]]


def test_a_late_fill_is_indexed_at_its_execution_time(tmp_path):
    store = f"lmdb://{tmp_path}/store"
    serve(
        store,
        [pb_fill("BUY", 1, 10, timestamp=at(100)), pb_fill("BUY", 2, 10, timestamp=at(200))],
        [pb_fill("BUY", 3, 10, timestamp=at(150), fill_id="late")],
        # Two more at one time as a row already there: each keeps its own row.
        [pb_fill("SELL", 1, 11, timestamp=at(150)), pb_fill("SELL", 1, 11, timestamp=at(150))],
        [pb_fill("BUY", 4, 10, timestamp=at(300))],  # in order again: appended
    )
    lib = adb.Arctic(store).get_library("fills")
    fills = lib.read("A1").data
    assert fills.index.is_monotonic_increasing and fills.index.is_unique
    assert fills["qty"].tolist() == [1.0, 3.0, -1.0, -1.0, 2.0, 4.0]
    late = fills[fills["fill_id"] == "late"]
    assert late.index[0] == pd.Timestamp(BASE_SECONDS + 150, unit="s", tz="UTC")
    # A date range of the late fill's minute finds it (and the two beside it, 1 and 2 ns on).
    start = pd.Timestamp(BASE_SECONDS + 120, unit="s", tz="UTC")
    window = lib.read("A1", date_range=(start, start + pd.Timedelta(60, "s"))).data
    assert window["fill_id"].iloc[0] == "late" and len(window) == 3
    assert (window.index - window.index[0]).asi8.tolist() == [0, 1, 2]
    assert fills["qty"].sum() == 8.0


def test_corrections_and_late_commissions_are_put_in_place(tmp_path):
    """The issue's case: a fill of 6 corrected to 4: a naive sum of `fills` gave 6 where the
    book says 4. Now the fill's row holds what the book holds; the original stays readable."""
    store = f"lmdb://{tmp_path}/store"
    book = serve(
        store,
        [
            pb_fill("BUY", 6, 10, fill_id="F1", commission="1", timestamp=at(10)),
            pb_fill("BUY", 5, 11, fill_id="F2", commission="1", timestamp=at(20)),
        ],
        [pb_fill("BUY", 4, 10, fill_id="F1.c", corrects="F1", commission="1", timestamp=at(10))],
        [pb_amendment("F2", "3.5")],
        # A correction that moves the execution to another time, then one of that correction.
        [pb_fill("SELL", 2, 12, fill_id="F2.c", corrects="F2", timestamp=at(30))],
        [pb_fill("SELL", 1, 12, fill_id="F2.d", corrects="F2.c", timestamp=at(30))],
    )
    arctic = adb.Arctic(store)
    fills = arctic.get_library("fills").read("A1").data
    assert fills["fill_id"].tolist() == ["F1", "F2"]  # one row per execution
    assert fills["qty"].sum() == 3.0 and Decimal(book["AAPL"]) == 3
    f1, f2 = fills.iloc[0], fills.iloc[1]
    assert (f1["quantity"], f1["corrected_by"], f1["price"]) == ("4", "F1.c", 10.0)
    assert (f2["side"], f2["quantity"], f2["corrected_by"]) == ("SELL", "1", "F2.d")
    assert fills.index[1] == pd.Timestamp(BASE_SECONDS + 30, unit="s", tz="UTC")  # moved
    corrections = arctic.get_library("corrections").read("A1").data
    assert corrections["correction_id"].tolist() == ["F1.c", "F2.c", "F2.d"]
    assert corrections["qty"].tolist() == [4.0, -2.0, -1.0]
    assert '"quantity": "6"' in corrections["original"].iloc[0]  # the row it replaced
    assert '"commission": "3.5"' in corrections["original"].iloc[1]  # amended, then replaced
    commissions = arctic.get_library("commissions").read("A1").data
    assert commissions[["fill_id", "commission", "commission_exact"]].values.tolist() == [
        ["F2", 3.5, "3.5"]
    ]


def test_a_late_commission_sets_the_fills_commission(tmp_path):
    store = f"lmdb://{tmp_path}/store"
    serve(
        store,
        [pb_fill("BUY", 100, 10, fill_id="x.01"), pb_fill("SELL", 40, 12, fill_id="y.01")],
        [pb_amendment("x.01", "1.75")],
    )
    fills = adb.Arctic(store).get_library("fills").read("A1").data.set_index("fill_id")
    assert fills.loc["x.01", ["commission", "commission_exact", "amended_by"]].tolist() == [
        1.75,
        "1.75",
        "x.01/commission",
    ]
    assert fills.loc["y.01", "amended_by"] == ""
    assert fills["commission"].sum() == 1.75


def test_cash_history_is_appended_per_account_currency_and_chain(tmp_path):
    store = f"lmdb://{tmp_path}/store"
    serve(store, [transfer("t1", "10000"), transfer("t2", "5", "ETH", chain_id="1")])
    server = start_test_server(store=store)  # a restart: history goes on, not overwritten
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            acks(stub, pb_fill("BUY", 10, 100, commission="1", timestamp=at(60)))
            stub.ReserveCash(
                pb.ReserveCashRequest(
                    reservation_id="r1", account_id="A1", currency="USD", amount="500"
                )
            )
    finally:
        server.stop()
    lib = adb.Arctic(store).get_library("balances")
    frame = lib.read("A1").data
    usd = frame[frame["currency"] == "USD"]
    # The deposit's write, then the fill's and the reservation's (coalesced when they come
    # within the views' second): each write appends the balances it changed, once.
    assert usd["cash_exact"].tolist()[0] == "10000" and 2 <= len(usd) <= 3
    assert usd[["cash", "reserved", "available"]].values.tolist()[-1] == [8999.0, 500.0, 8499.0]
    assert usd["reason"].unique().tolist() == ["change"]
    eth = frame[frame["currency"] == "ETH"]
    assert eth[["chain_id", "cash"]].values.tolist() == [["1", 5.0]]  # unchanged since
    assert frame.index.is_monotonic_increasing
    rows = len(frame)
    serve(store)  # a restart hands every balance over again: none appended twice
    assert len(lib.read("A1").data) == rows


def test_a_burst_out_of_time_order_lands_in_time_order_once(tmp_path):
    """A relay catching up sends a day's fills out of time order: each write puts its late
    fills in one span rewrite (ties at one time each get their own nanosecond), and a restart
    handing them over again writes none twice."""
    import random

    rng = random.Random(7)
    burst = [
        pb_fill(
            rng.choice(["BUY", "SELL"]), rng.randint(1, 9), 10,
            instrument=rng.choice(["AAPL", "MSFT"]), timestamp=at(rng.randint(0, 50)),
            fill_id=f"b-{i}",
        )
        for i in range(300)
    ]  # fmt: skip
    rng.shuffle(burst)
    store = f"lmdb://{tmp_path}/store"
    book = serve(store, burst[:150], burst[150:])
    serve(store)  # a restart: the views' catch-up hands nothing over twice
    fills = adb.Arctic(store).get_library("fills").read("A1").data
    assert fills.index.is_monotonic_increasing and fills.index.is_unique
    assert sorted(fills["fill_id"]) == sorted(f"b-{i}" for i in range(300))
    by_instrument = fills.groupby("instrument_id")["qty"].sum()
    assert {i: str(int(q)) for i, q in by_instrument.items()} == book
