"""Through the gRPC API: a fill older than fills already booked restates its rows, and says
so on its ack and to subscribers; one older than the restatement window is still booked,
flagged, and turns health `books` NOT_SERVING; both hold across a restart on LMDB."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from tests.api.protocol import BASE_SECONDS, acks, pb_fill, pb_status
from tests.api.test_subscriptions import Reader
from tests.conftest import start_test_server


def at(seconds: int, event: pb.ExecutionEvent) -> pb.ExecutionEvent:
    event.fill.timestamp.FromSeconds(BASE_SECONDS + seconds)
    return event


def position(stub: pb_grpc.PortfolioManagerStub, strategy: str = "S1") -> pb.Position:
    request = pb.GetPositionRequest(account_id="A1", instrument_id="AAPL", strategy_id=strategy)
    return stub.GetPosition(request)


def test_a_late_fill_restates_its_rows_and_says_so(stub):
    reader = Reader(stub, account_id="A1")
    try:
        reader.take(1, heartbeats=True)  # subscribed
        first, sell, status = acks(
            stub,
            at(10, pb_fill("BUY", 10, 100, fill_id="buy-1")),
            at(30, pb_fill("SELL", 10, 95, fill_id="sell-1")),
            pb_status("st-1"),
        )
        assert first.placement == sell.placement == pb.BOOKING_PLACEMENT_IN_ORDER
        assert status.placement == pb.BOOKING_PLACEMENT_UNSPECIFIED  # not a fill
        (late,) = acks(stub, at(20, pb_fill("BUY", 10, 80, fill_id="buy-2")))
        assert late.result == pb.EVENT_RESULT_ACCEPTED
        assert late.placement == pb.BOOKING_PLACEMENT_RESTATED
        # In execution order: 10 @100, 10 @80 (avg 90), sold 10 @95: realized 50.
        for strategy in ("S1", ""):
            row = position(stub, strategy)
            assert (row.quantity, row.avg_cost, row.realized_pnl) == ("10", "90", "50")
            assert row.last_sequence == late.sequence
        updates = [u for u in reader.take(7) if u.event_id == "buy-2"]
        assert len(updates) == 2  # the strategy row and the account-level row
        for update in updates:
            assert update.sequence == late.sequence
            assert update.placement == pb.BOOKING_PLACEMENT_RESTATED
            assert update.position.realized_pnl == "50"
        (duplicate,) = acks(stub, at(20, pb_fill("BUY", 10, 80, fill_id="buy-2")))
        assert duplicate.result == pb.EVENT_RESULT_DUPLICATE
    finally:
        reader.close()


def books_health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        return health.Check(health_pb2.HealthCheckRequest(service="books"), timeout=5).status


def test_a_fill_older_than_the_window_is_booked_flagged_and_on_health():
    server = start_test_server(correction_window_days=60 / 86_400)  # a one-minute window
    try:
        assert books_health(server.address) == health_pb2.HealthCheckResponse.SERVING
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            fills = [at(s, pb_fill("BUY", 1, 100 + s)) for s in (0, 100, 200)]
            assert [a.placement for a in acks(stub, *fills)] == [pb.BOOKING_PLACEMENT_IN_ORDER] * 3
            (old,) = acks(stub, at(50, pb_fill("BUY", 1, 1)))
            assert old.result == pb.EVENT_RESULT_ACCEPTED
            assert old.placement == pb.BOOKING_PLACEMENT_OUTSIDE_WINDOW
            row = position(stub)
            assert (row.quantity, row.trade_count) == ("4", 4)  # booked, never lost
            assert row.cost_basis == str(100 + 200 + 300 + 1)
        assert books_health(server.address) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert server.running.service.ledger.book.misplaced == 1
    finally:
        server.stop()


@pytest.mark.parametrize("checkpoint_every", [1, 10_000], ids=["checkpoint", "journal"])
def test_late_fills_after_a_restart_land_as_without_one(tmp_path, checkpoint_every):
    """Fills within the window before a restart are kept (from the checkpoint's anchors and
    the journal), so a late fill after it lands in its place."""
    store = f"lmdb://{tmp_path / 'store'}"
    before = [at(s, pb_fill("BUY", 10, p)) for s, p in ((10, 100), (30, 110))]
    before.append(at(40, pb_fill("SELL", 15, 120)))
    after = [at(20, pb_fill("BUY", 10, 80)), at(35, pb_fill("SELL", 5, 90))]

    def run(batches: list[list[pb.ExecutionEvent]], restart: bool) -> list[tuple[str, ...]]:
        server = start_test_server(store=store, checkpoint_every=checkpoint_every)
        try:
            for number, batch in enumerate(batches):
                if restart and number:
                    server.stop()
                    server = start_test_server(store=store, checkpoint_every=checkpoint_every)
                with grpc.insecure_channel(server.address) as channel:
                    acks(pb_grpc.PortfolioManagerStub(channel), *batch)
            with grpc.insecure_channel(server.address) as channel:
                stub = pb_grpc.PortfolioManagerStub(channel)
                return [
                    (
                        p.quantity,
                        p.avg_cost,
                        p.cost_basis,
                        p.realized_pnl,
                        p.opened_at.ToJsonString(),
                    )
                    for p in (position(stub, s) for s in ("S1", ""))
                ]
        finally:
            server.stop()

    restarted = run([before, after], restart=True)
    store = f"lmdb://{tmp_path / 'reference'}"
    in_one_go = run([before + after], restart=False)
    assert restarted == in_one_go
    # 10 @100, 10 @80, 10 @110 (avg 96.67, basis 2900); sell 5 @90; sell 15 @120.
    assert restarted[0][0] == "10"


def book_through_the_api(stub: pb_grpc.PortfolioManagerStub) -> dict[str, object]:
    """Every row (both levels) and every summary, without the arrival-dependent sequences."""
    rows = []
    for level in (pb.POSITION_LEVEL_STRATEGY, pb.POSITION_LEVEL_ACCOUNT):
        page = stub.ListPositions(pb.ListPositionsRequest(level=level, include_flat=True))
        for row in page.positions:
            row.ClearField("last_sequence")
            rows.append(row.SerializeToString(deterministic=True))
    summaries = {}
    for account in ("", "A1", "A2"):
        found = stub.GetPortfolioSummary(pb.GetPortfolioSummaryRequest(account_id=account))
        for part in [found, *found.by_account_kind]:
            part.ClearField("as_of_sequence")
            for balance in part.cash:
                balance.ClearField("last_sequence")
        summaries[account] = str(found)
    return {"rows": sorted(rows), "summaries": summaries}


def test_any_arrival_order_gives_the_same_rows_and_summaries_through_the_api():
    fills = []
    for n, (account, strategy, instrument, side, quantity, price) in enumerate(
        [
            ("A1", "S1", "AAPL", "BUY", 10, 100), ("A1", "S2", "SAP", "BUY", 5, 50),
            ("A2", "S1", "AAPL", "SELL", 3, 101), ("A1", "S1", "AAPL", "SELL", 4, 103),
            ("A1", "S2", "SAP", "SELL", 2, 55), ("A2", "S1", "AAPL", "BUY", 7, 99),
            ("A1", "S1", "AAPL", "BUY", 6, 98), ("A1", "S2", "SAP", "SELL", 6, 52),
        ]
    ):  # fmt: skip
        fill = at(10 + n, pb_fill(side, quantity, price, account=account, strategy=strategy,
                                  instrument=instrument, fill_id=f"x{n}", commission="1",
                                  commission_currency="USD"))  # fmt: skip
        fills.append(fill)
    orders = [fills, fills[::-1], [fills[i] for i in (3, 0, 6, 1, 7, 2, 5, 4)]]
    books = []
    for arrival in orders:
        server = start_test_server()
        try:
            with grpc.insecure_channel(server.address) as channel:
                stub = pb_grpc.PortfolioManagerStub(channel)
                define = pb.DefineInstrumentRequest(
                    instrument=pb.Instrument(instrument_id="SAP", currency="EUR")
                )
                stub.DefineInstrument(define)
                for fill in arrival:  # one by one: each is late or not as it comes
                    (ack,) = acks(stub, fill)
                    assert ack.result == pb.EVENT_RESULT_ACCEPTED
                books.append(book_through_the_api(stub))
        finally:
            server.stop()
    assert books[0] == books[1] == books[2]
