"""A late order status through the gRPC API: it takes its place in the history by time, is
marked late (not flagged as an error) and does not move the order's current status back."""

from __future__ import annotations

from portfolio.v1 import portfolio_pb2 as pb
from tests.api.protocol import BASE_SECONDS, acks, pb_status

S = pb.OrderStatus


def status_at(update_id: str, status: str, seconds: int, **fields: object) -> pb.ExecutionEvent:
    event = pb_status(update_id, status, order_id="7", order_ref="", **fields)
    event.status.timestamp.FromSeconds(BASE_SECONDS + seconds)
    return event


def late_partial_after_filled() -> list[pb.ExecutionEvent]:
    return [
        status_at("u-sub", "SUBMITTED", 1, remaining_quantity="10"),
        status_at("u-fill", "FILLED", 30, filled_quantity="10", avg_fill_price="101"),
        # Sent at 20, heard of after the FILLED (a relay catching up).
        status_at(
            "u-part",
            "PARTIALLY_FILLED",
            20,
            filled_quantity="4",
            remaining_quantity="6",
            avg_fill_price="100",
        ),
    ]


def history(order: pb.Order) -> list[tuple[str, int, bool, str]]:
    return [
        (t.update.update_id, t.update.timestamp.seconds - BASE_SECONDS, t.late, t.flag)
        for t in order.history
    ]


def test_a_late_partial_fill_after_filled_keeps_the_order_filled(stub):
    results = acks(stub, *late_partial_after_filled())
    assert [a.result for a in results] == [pb.EVENT_RESULT_ACCEPTED] * 3
    order = stub.GetOrder(pb.GetOrderRequest(account_id="A1", order_id="7"))
    assert order.status == S.Value("ORDER_STATUS_FILLED")
    assert (order.filled_quantity, order.remaining_quantity) == ("10", "0")
    assert order.avg_fill_price == "101"
    assert not order.is_open
    assert order.updated_at.seconds == BASE_SECONDS + 30
    assert history(order) == [
        ("u-sub", 1, False, ""), ("u-part", 20, True, ""), ("u-fill", 30, False, ""),
    ]  # fmt: skip
    assert [t.sequence for t in order.history] == [1, 3, 2]
    assert order.last_sequence == 3
    open_orders = stub.ListOpenOrders(pb.ListOpenOrdersRequest(account_id="A1"))
    assert list(open_orders.orders) == []


def test_subscribers_see_the_late_status_marked_late_on_an_order_still_filled(stub):
    acks(stub, *late_partial_after_filled())
    call = stub.SubscribeUpdates(pb.SubscribeUpdatesRequest(from_sequence=1), timeout=10)
    try:
        updates = []
        for update in call:
            if update.kind == pb.UPDATE_KIND_ORDER_STATUS:
                updates.append(update)
            if len(updates) == 3:
                break
    finally:
        call.cancel()
    late = updates[2]
    assert (late.sequence, late.order_status.update_id) == (3, "u-part")
    assert late.order.status == S.Value("ORDER_STATUS_FILLED")
    assert late.order.filled_quantity == "10"
    (transition,) = late.order.history  # an update carries just its own transition
    assert (transition.late, transition.flag, transition.sequence) == (True, "", 3)
    assert not updates[1].order.history[0].late


def test_a_late_report_filling_more_raises_the_filled_quantity_of_a_cancelled_order(stub):
    acks(
        stub,
        status_at("u-sub", "SUBMITTED", 1, remaining_quantity="10"),
        status_at("u-p3", "PARTIALLY_FILLED", 10, filled_quantity="3", remaining_quantity="7"),
        status_at("u-cxl", "CANCELLED", 40, filled_quantity="3"),
        status_at("u-p5", "PARTIALLY_FILLED", 20, filled_quantity="5", remaining_quantity="5"),
    )
    order = stub.GetOrder(pb.GetOrderRequest(account_id="A1", order_id="7"))
    assert order.status == S.Value("ORDER_STATUS_CANCELLED")
    assert (order.filled_quantity, order.remaining_quantity) == ("5", "0")
    assert [t.late for t in order.history] == [False, False, True, False]
    assert all(t.flag == "" for t in order.history)
