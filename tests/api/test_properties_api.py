"""The engine's properties, checked end to end through a real gRPC server."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from tests.api.protocol import ingest, pb_fill
from tests.conftest import ServerThread, start_test_server

STRATEGIES = ["S1", "S2", "S3"]
INSTRUMENTS = ["AAPL", "MSFT"]
_accounts = itertools.count(1)

trades = st.lists(
    st.tuples(
        st.sampled_from(STRATEGIES),
        st.sampled_from(INSTRUMENTS),
        st.sampled_from(["BUY", "SELL"]),
        st.decimals(min_value="0.01", max_value="1000", places=2),
        st.decimals(min_value="0.0001", max_value="999", places=4),
    ),
    min_size=1,
    max_size=25,
)


@pytest.fixture(scope="module")
def module_server() -> Iterator[ServerThread]:
    running = start_test_server()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def api(module_server: ServerThread) -> Iterator[pb_grpc.PortfolioManagerStub]:
    with grpc.insecure_channel(module_server.address) as channel:
        yield pb_grpc.PortfolioManagerStub(channel)


def book(api, account, history):
    events = [
        pb_fill(side, quantity, price, account=account, strategy=strategy, instrument=instrument)
        for strategy, instrument, side, quantity, price in history
    ]
    (response,) = ingest(api, events)
    assert {a.result for a in response.acks} == {pb.EVENT_RESULT_ACCEPTED}
    return events


def rows(api, account, level):
    request = pb.ListPositionsRequest(
        account_id=account, level=level, include_flat=True, page_size=1000
    )
    return api.ListPositions(request).positions


@settings(max_examples=40, deadline=None)
@given(history=trades)
def test_strategy_rows_add_up_to_the_account_book(api, history):
    account = f"P{next(_accounts)}"
    book(api, account, history)
    total_pnl: dict[str, Decimal] = defaultdict(Decimal)
    quantity: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows(api, account, pb.POSITION_LEVEL_STRATEGY):
        total_pnl[row.instrument_id] += Decimal(row.realized_pnl) + Decimal(row.unrealized_pnl)
        quantity[row.instrument_id] += Decimal(row.quantity)
    for row in rows(api, account, pb.POSITION_LEVEL_ACCOUNT):
        assert (
            Decimal(row.realized_pnl) + Decimal(row.unrealized_pnl) == total_pnl[row.instrument_id]
        )
        assert Decimal(row.quantity) == quantity[row.instrument_id]


@settings(max_examples=40, deadline=None)
@given(history=trades)
def test_quantities_and_flat_round_trips_through_the_api(api, history):
    account = f"P{next(_accounts)}"
    events = book(api, account, history)
    net: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    cash: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for strategy, instrument, side, quantity, price in history:
        signed = quantity if side == "BUY" else -quantity
        net[(strategy, instrument)] += signed
        cash[(strategy, instrument)] -= signed * price
    closing = []
    for (strategy, instrument), quantity in net.items():
        if quantity:
            side = "SELL" if quantity > 0 else "BUY"
            closing.append((strategy, instrument, side, abs(quantity), Decimal("50.5")))
            cash[(strategy, instrument)] += quantity * Decimal("50.5")
    if closing:
        book(api, account, closing)
    for row in rows(api, account, pb.POSITION_LEVEL_STRATEGY):
        assert row.quantity == "0"
        assert Decimal(row.realized_pnl) == cash[(row.strategy_id, row.instrument_id)]
    # Replaying everything changes nothing.
    before = list(rows(api, account, pb.POSITION_LEVEL_STRATEGY))
    (response,) = ingest(api, events)
    assert {a.result for a in response.acks} == {pb.EVENT_RESULT_DUPLICATE}
    assert list(rows(api, account, pb.POSITION_LEVEL_STRATEGY)) == before
