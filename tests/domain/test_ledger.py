import dataclasses
from decimal import Decimal

import pytest

from server.domain.events import InvalidEvent, OrderStatus, OrderStatusUpdate
from server.domain.ledger import Ledger, Result
from server.domain.position import PositionKey
from tests.domain.builders import fill


def test_sequences_are_gap_free_across_event_kinds():
    ledger = Ledger()
    status = OrderStatusUpdate(
        update_id="u1",
        account_id="A1",
        status=OrderStatus.SUBMITTED,
        timestamp_ns=1,
        order_ref="o1",
    )
    outcomes = [ledger.record(e) for e in (fill("BUY", 1, 1), status, fill("SELL", 1, 2))]
    assert [o.sequence for o in outcomes] == [1, 2, 3]
    assert ledger.sequence == 3


def test_a_replayed_fill_is_a_duplicate_and_changes_nothing():
    ledger = Ledger()
    original = fill("BUY", 10, 5)
    ledger.record(original)
    again = ledger.record(original)
    assert again.result is Result.DUPLICATE
    assert again.sequence == 1
    assert ledger.sequence == 1
    assert ledger.book.get(PositionKey("A1", "S1", "AAPL")).quantity == 10


def test_an_id_reused_with_different_content_is_rejected():
    ledger = Ledger()
    ledger.record(fill("BUY", 10, 5, fill_id="x"))
    conflict = ledger.record(fill("BUY", 11, 5, fill_id="x"))
    assert conflict.result is Result.REJECTED
    assert "fill_id" in conflict.reason
    assert ledger.book.get(PositionKey("A1", "S1", "AAPL")).quantity == 10


def test_same_amount_written_differently_is_still_a_duplicate():
    ledger = Ledger()
    ledger.record(fill("BUY", "10", "5.50", fill_id="x", at_ns=7))
    assert (
        ledger.record(fill("BUY", "10.0", "5.5", fill_id="x", at_ns=7)).result is Result.DUPLICATE
    )


def test_fill_and_status_ids_are_separate_namespaces():
    ledger = Ledger()
    ledger.record(fill("BUY", 1, 1, fill_id="same"))
    status = OrderStatusUpdate(
        update_id="same", account_id="A1", status=OrderStatus.FILLED, timestamp_ns=1, order_id="9"
    )
    assert ledger.record(status).result is Result.ACCEPTED


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"quantity": Decimal(0)}, "quantity"),
        ({"quantity": Decimal(-1)}, "quantity"),
        ({"quantity": Decimal("NaN")}, "quantity"),
        ({"price": Decimal("Infinity")}, "price"),
        ({"price": Decimal("1e18")}, "price"),
        ({"quantity": Decimal("0.0000000000000000001")}, "quantity"),
        ({"account_id": ""}, "account_id"),
        ({"strategy_id": " S1"}, "strategy_id"),
        ({"fill_id": "x" * 300}, "fill_id"),
        ({"timestamp_ns": 0}, "timestamp"),
    ],
)
def test_invalid_fills_name_the_field(kwargs, field):
    base = fill("BUY", 1, 1)
    values = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    values.update(kwargs)
    with pytest.raises(InvalidEvent) as raised:
        type(base)(**values)
    assert raised.value.field == field


def test_status_needs_an_order_reference():
    with pytest.raises(InvalidEvent) as raised:
        OrderStatusUpdate(
            update_id="u", account_id="A1", status=OrderStatus.SUBMITTED, timestamp_ns=1
        )
    assert raised.value.field == "order_id"
