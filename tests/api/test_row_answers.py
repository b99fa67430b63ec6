"""GetPosition's answers kept per row (server.api.answers.RowAnswers): the same bytes while the
version holds, and again after it moved while the row's view is equal; a row that changed is
encoded again, byte for byte its message; bounded, least recently asked first; errors are
not kept."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal

import grpc
import pytest
from hypothesis import given, settings

from portfolio.v1 import portfolio_pb2 as pb
from server.api.answers import RowAnswers
from server.api.wire import position_to_proto
from server.application.reads import NotFound
from server.domain.book import PositionView
from server.domain.position import PositionKey
from tests.api.protocol import acks, pb_fill
from tests.api.test_wire_encoding import reference_position, views

ROW = PositionView(
    key=PositionKey("A", "S", "I"), quantity=Decimal(1), avg_cost=Decimal(2),
    cost_basis=Decimal(2), realized_pnl=Decimal(0), unrealized_pnl=Decimal(0),
    fees=Decimal(0), market_price=Decimal(2), market_value=Decimal(2),
    multiplier=Decimal(1), trade_count=1, opened_at_ns=1, updated_at_ns=1, last_sequence=1,
)  # fmt: skip


def reader(*given: PositionView) -> tuple[Callable[[], PositionView], list[PositionView]]:
    """A read giving `given` in turn, and the views it gave."""
    read: list[PositionView] = []
    queue = list(given)

    def read_one() -> PositionView:
        read.append(queue.pop(0))
        return read[-1]

    return read_one, read


@given(views())
@settings(max_examples=50, deadline=None)
def test_kept_bytes_while_the_version_holds_or_the_view_is_equal(view: PositionView) -> None:
    rows = RowAnswers(capacity=2)
    moved = replace(view, market_price=view.market_price + 1)
    elsewhere = replace(moved, precision=Decimal(str(moved.precision)))
    read, seen = reader(view, replace(view), moved, elsewhere)
    first = rows.answer("row", 1, read)
    assert first == reference_position(view).SerializeToString()
    assert rows.answer("row", 1, read) is first and len(seen) == 1  # not read again
    assert rows.answer("row", 2, read) is first and len(seen) == 2  # moved, an equal view
    assert rows.answer("row", 2, read) is first and len(seen) == 2  # kept at the new version
    changed = rows.answer("row", 3, read)  # a figure changed: encoded again
    assert changed == reference_position(moved).SerializeToString()
    # The same precision, another object: encoded again (its exponent decides the rounding).
    assert rows.answer("row", 4, read) is not changed and len(seen) == 4


def test_rows_kept_are_bounded_least_recently_asked_first() -> None:
    rows = RowAnswers(capacity=2)
    read, seen = reader(*[ROW] * 5)
    first = rows.answer("a", 1, read)
    rows.answer("b", 1, read)
    assert rows.answer("a", 1, read) is first  # asked: "b" is now the least recent
    rows.answer("c", 1, read)  # "b" leaves
    assert len(seen) == 3
    assert rows.answer("a", 1, read) is first and rows.answer("c", 1, read)
    assert len(seen) == 3
    rows.answer("b", 1, read)
    assert len(seen) == 4


def test_an_error_is_not_kept() -> None:
    rows = RowAnswers(capacity=2)

    def missing() -> PositionView:
        raise NotFound("no such row")

    for _ in range(2):
        with pytest.raises(NotFound):
            rows.answer("row", 1, missing)
    read, seen = reader(ROW)
    assert rows.answer("row", 1, read) == position_to_proto(ROW).SerializeToString()
    assert seen == [ROW]


def test_a_row_read_after_other_events_is_its_current_figures(stub) -> None:
    request = pb.GetPositionRequest(account_id="A1", strategy_id="S1", instrument_id="AAPL")
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetPosition(request, timeout=10)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    acks(stub, pb_fill("BUY", 10, 100))
    first = stub.GetPosition(request, timeout=10)
    assert first.quantity == "10"
    acks(stub, pb_fill("BUY", 5, 100, instrument="MSFT"))  # another row: the same figures
    assert stub.GetPosition(request, timeout=10) == first
    acks(stub, pb_fill("BUY", 5, 110))
    moved = stub.GetPosition(request, timeout=10)
    assert (moved.quantity, moved.market_price) == ("15", "110")
