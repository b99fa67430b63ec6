"""Every paged listing's iterator, blocking and asyncio alike, against the real service on
127.0.0.1 (one service for the module, in memory, its broker its own book so it can reconcile).

The book holds more of each listing than one page of two: seven strategy rows (S1 in I0..I6 of
A1), five working orders, nine instruments (two defined, seven known from fills) and five
reconciliation reports. Each iterator, walking pages of two, must yield what one large page
holds: every item once, in the listing's order, one call a page, each under the deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import grpc
import pytest

from client import (
    AsyncPortfolioClient,
    EventResult,
    Fill,
    Instrument,
    OrderStatus,
    OrderStatusUpdate,
    PortfolioClient,
    PortfolioError,
    ProtocolViolation,
    Side,
    rpcs,
)
from client.models import PositionPage
from client.queries import PositionsQuery
from tests.conftest import TEST_CONFIG, ServerThread

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
D = Decimal
ACCOUNT = "A1"
DEADLINE = 7.5


def book_events() -> list[Any]:
    fills = [
        Fill(
            fill_id=f"F{n}", account_id=ACCOUNT, strategy_id="S1", instrument_id=f"I{n}",
            side=Side.BUY, quantity=D(n + 1), price=D(10), timestamp=T0 + timedelta(seconds=n),
        )
        for n in range(7)
    ]  # fmt: skip
    orders = [
        OrderStatusUpdate(
            update_id=f"U{n}", account_id=ACCOUNT, strategy_id="S1", instrument_id="I0",
            order_id=str(100 + n), status=OrderStatus.SUBMITTED, remaining_quantity=D(1),
            side=Side.BUY, timestamp=T0 + timedelta(seconds=10 + n),
        )
        for n in range(5)
    ]  # fmt: skip
    return [*fills, *orders]


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    running = ServerThread(replace(TEST_CONFIG, broker="paper"))
    try:
        with PortfolioClient(running.address) as pm:
            for instrument_id in ("DEF1", "DEF2"):
                pm.define_instrument(Instrument(instrument_id=instrument_id, currency="USD"))
            acks = pm.ingest(book_events())
            assert all(ack.result is EventResult.ACCEPTED for ack in acks), acks
            for _ in range(5):
                pm.reconcile(ACCOUNT)
        yield running.address
    finally:
        running.stop()


@dataclass(frozen=True)
class Listing:
    """One paged listing: its one-page method, its iterator, the arguments both take, and how
    many items the book holds (at least that many: definitions elsewhere may add more)."""

    rpc: str
    arguments: tuple[Any, ...]
    at_least: int

    @property
    def row(self) -> rpcs.UnaryRpc:
        return rpcs.BY_RPC[self.rpc]

    @property
    def paged(self) -> rpcs.Paged:
        assert self.row.paged is not None
        return self.row.paged


LISTINGS = [
    Listing("ListPositions", (ACCOUNT,), 7),
    Listing("ListOpenOrders", (ACCOUNT,), 5),
    Listing("ListInstruments", (), 9),
    Listing("ListReconciliations", (ACCOUNT,), 5),
]
#: Larger than any listing of the book, and within every listing's page limit.
WHOLE = 100


class Recorder:
    """Passes each page's call through to the client's own `_call`, noting the request and
    the deadline it went with."""

    def __init__(self, client: Any) -> None:
        self.calls: list[tuple[Any, float | None]] = []
        self._call = client._call
        client._call = self

    def __call__(self, rpc: rpcs.UnaryRpc, request: Any, timeout: float | None) -> Any:
        self.calls.append((request, timeout))
        return self._call(rpc, request, timeout)


def walk_sync(address: str, listing: Listing) -> tuple[Any, Any, list[Any], Recorder]:
    with PortfolioClient(address) as pm:
        whole = getattr(pm, listing.row.method)(*listing.arguments, page_size=WHOLE)
        first = getattr(pm, listing.row.method)(*listing.arguments, page_size=2)
        recorder = Recorder(pm)
        walked = list(
            getattr(pm, listing.paged.iterator)(*listing.arguments, page_size=2, timeout=DEADLINE)
        )
    return whole, first, walked, recorder


def walk_aio(address: str, listing: Listing) -> tuple[Any, Any, list[Any], Recorder]:
    async def run() -> tuple[Any, Any, list[Any], Recorder]:
        async with AsyncPortfolioClient(address) as pm:
            whole = await getattr(pm, listing.row.method)(*listing.arguments, page_size=WHOLE)
            first = await getattr(pm, listing.row.method)(*listing.arguments, page_size=2)
            recorder = Recorder(pm)
            walk = getattr(pm, listing.paged.iterator)
            walked = [
                item async for item in walk(*listing.arguments, page_size=2, timeout=DEADLINE)
            ]
        return whole, first, walked, recorder

    return asyncio.run(run())


@pytest.mark.parametrize("kind", ["sync", "aio"])
@pytest.mark.parametrize("listing", LISTINGS, ids=lambda listing: listing.rpc)
def test_the_iterator_yields_every_item_once_in_order(
    address: str, kind: str, listing: Listing
) -> None:
    whole, first, walked, recorder = (walk_sync if kind == "sync" else walk_aio)(address, listing)
    items = listing.row.page_items(whole)
    assert whole.next_page_token == "" and len(items) >= listing.at_least
    assert first.next_page_token, "the book must hold more than one page of two"
    assert walked == list(items)
    # One call a page of two, each under the deadline asked for; the first without a token,
    # each later one with the token the page before gave.
    assert len(recorder.calls) == (len(items) + 1) // 2
    assert [timeout for _, timeout in recorder.calls] == [DEADLINE] * len(recorder.calls)
    assert all(request.page_size == 2 for request, _ in recorder.calls)
    assert recorder.calls[0][0].page_token == ""
    assert recorder.calls[1][0].page_token == first.next_page_token


def test_the_iterator_keeps_the_filters_on_every_page(address: str) -> None:
    with PortfolioClient(address) as pm:
        recorder = Recorder(pm)
        rows = list(pm.iter_positions(ACCOUNT, "S1", include_flat=True, page_size=3))
    assert [row.instrument_id for row in rows] == [f"I{n}" for n in range(7)]
    assert {(r.account_id, r.strategy_id, r.include_flat) for r, _ in recorder.calls} == {
        (ACCOUNT, "S1", True)
    }


def test_an_iterator_asks_for_nothing_until_iterated(address: str) -> None:
    with PortfolioClient(address) as pm:
        recorder = Recorder(pm)
        rows = pm.iter_open_orders(ACCOUNT, page_size=2)
        assert recorder.calls == []
        assert next(iter(rows)).order_id == "100"
        assert len(recorder.calls) == 1


@pytest.mark.parametrize("kind", ["sync", "aio"])
@pytest.mark.parametrize("listing", LISTINGS[1:], ids=lambda listing: listing.rpc)
def test_a_token_the_service_did_not_give_for_the_listing_is_refused(
    address: str, kind: str, listing: Listing
) -> None:
    # A real token, but of another listing (positions'): the service names page_token.
    with PortfolioClient(address) as pm:
        foreign = pm.list_positions(ACCOUNT, page_size=1).next_page_token
    assert foreign

    def one_page() -> Any:
        if kind == "sync":
            with PortfolioClient(address) as pm:
                method = getattr(pm, listing.row.method)
                return method(*listing.arguments, page_size=2, page_token=foreign)

        async def run() -> Any:
            async with AsyncPortfolioClient(address) as pm:
                method = getattr(pm, listing.row.method)
                return await method(*listing.arguments, page_size=2, page_token=foreign)

        return asyncio.run(run())

    with pytest.raises(PortfolioError) as caught:
        one_page()
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in caught.value.field_violations] == ["page_token"]


def test_a_page_token_given_back_unchanged_ends_the_walk_as_a_protocol_violation() -> None:
    # A service that answered with the token it was sent would have the walk fetch the same
    # page for ever; the step from one page to the next refuses it instead.
    row = rpcs.BY_RPC["ListPositions"]
    sent = PositionsQuery(account_id=ACCOUNT, page_size=2, page_token="t1")
    same = PositionPage(positions=(), next_page_token="t1", as_of_sequence=1)
    with pytest.raises(ProtocolViolation, match="ListPositions"):
        row.next_request(sent, same)
    following = PositionPage(positions=(), next_page_token="t2", as_of_sequence=1)
    assert row.next_request(sent, following) == replace(sent, page_token="t2")
    last = PositionPage(positions=(), next_page_token="", as_of_sequence=1)
    assert row.next_request(sent, last) is None
