"""Positions and totals as of a past point (a sequence, or a time), rebuilt from the journal:
the book as it was then, whatever came after (later fills, a late fill restating the row), also
after a restart; pages of a past listing stay at that point."""

from __future__ import annotations

import time

import grpc
import pytest

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from tests.api.protocol import BASE_SECONDS, acks, pb_fill
from tests.conftest import start_test_server


def at(seconds: int, event: pb.ExecutionEvent) -> pb.ExecutionEvent:
    event.fill.timestamp.FromSeconds(BASE_SECONDS + seconds)
    return event


def rows(stub, as_of: pb.AsOf | None = None, **filters) -> list[tuple[str, ...]]:
    request = pb.ListPositionsRequest(include_flat=True, **filters)
    if as_of is not None:
        request.as_of.CopyFrom(as_of)
    page = stub.ListPositions(request)
    return [(p.strategy_id, p.instrument_id, p.quantity, p.avg_cost, p.realized_pnl)
            for p in page.positions]  # fmt: skip


def history(stub) -> list[int]:
    """Three batches; returns the sequence each ended at."""
    ends = []
    for batch in (
        [at(10, pb_fill("BUY", 10, 100)), at(11, pb_fill("BUY", 5, 50, instrument="MSFT"))],
        [at(30, pb_fill("SELL", 4, 110))],
        [at(20, pb_fill("BUY", 10, 80))],  # late: restates the AAPL row
    ):
        ends.append(acks(stub, *batch)[-1].sequence)
    return ends


def test_the_book_as_of_each_sequence(stub):
    first, second, third = history(stub)
    assert rows(stub, pb.AsOf(sequence=first)) == [
        ("S1", "AAPL", "10", "100", "0"),
        ("S1", "MSFT", "5", "50", "0"),
    ]
    assert rows(stub, pb.AsOf(sequence=second))[0] == ("S1", "AAPL", "6", "100", "40")
    # Now: the late buy at 80 took its place before the sell: avg 90, realized 80.
    assert rows(stub)[0] == ("S1", "AAPL", "16", "90", "80")
    assert rows(stub, pb.AsOf(sequence=third)) == rows(stub)
    summary = stub.GetPortfolioSummary(
        pb.GetPortfolioSummaryRequest(account_id="A1", as_of=pb.AsOf(sequence=second))
    )
    assert summary.as_of_sequence == second
    assert summary.account_totals.realized_pnl == "40"
    portfolio = stub.GetStrategyPortfolio(
        pb.GetStrategyPortfolioRequest(
            strategy_id="S1", account_id="A1", as_of=pb.AsOf(sequence=first)
        )
    )
    assert (portfolio.as_of_sequence, len(portfolio.positions)) == (first, 2)
    # Asking for now again is not the past answer kept.
    now = stub.GetPortfolioSummary(pb.GetPortfolioSummaryRequest(account_id="A1"))
    assert now.account_totals.realized_pnl == "80"


def test_a_time_names_what_had_been_received_by_then(stub):
    before = time.time_ns()
    history(stub)
    assert rows(stub, pb.AsOf(time=_stamp(before - 10**9))) == []
    assert rows(stub, pb.AsOf(time=_stamp(time.time_ns() + 10**9))) == rows(stub)


def _stamp(ns: int):
    from google.protobuf.timestamp_pb2 import Timestamp

    return Timestamp(seconds=ns // 10**9, nanos=ns % 10**9)


def test_pages_of_a_past_listing_stay_at_that_point(stub):
    first, second, _ = history(stub)
    request = pb.ListPositionsRequest(page_size=1, as_of=pb.AsOf(sequence=first))
    page = stub.ListPositions(request)
    assert [p.instrument_id for p in page.positions] == ["AAPL"] and page.next_page_token
    request.page_token = page.next_page_token
    following = stub.ListPositions(request)
    assert [(p.instrument_id, p.quantity) for p in following.positions] == [("MSFT", "5")]
    request.as_of.sequence = second  # the token belongs to another point
    with pytest.raises(grpc.RpcError) as error:
        stub.ListPositions(request)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_point_after_the_latest_event_is_refused_naming_the_field(stub):
    *_, third = history(stub)
    with pytest.raises(grpc.RpcError) as error:
        stub.ListPositions(pb.ListPositionsRequest(as_of=pb.AsOf(sequence=third + 1)))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "as_of.sequence" in error.value.details()
    with pytest.raises(grpc.RpcError) as error:
        stub.ListPositions(pb.ListPositionsRequest(as_of=pb.AsOf()))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "as_of" in error.value.details()


def test_the_same_after_a_restart(tmp_path):
    store = f"lmdb://{tmp_path / 'store'}"
    server = start_test_server(store=store)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            _, second, _ = history(stub)
            before = rows(stub, pb.AsOf(sequence=second))
    finally:
        server.stop()
    server = start_test_server(store=store)
    try:
        with grpc.insecure_channel(server.address) as channel:
            assert rows(pb_grpc.PortfolioManagerStub(channel), pb.AsOf(sequence=second)) == before
    finally:
        server.stop()
