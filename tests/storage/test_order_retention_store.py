"""An order that ended and left memory (after `--order-retention-days` of event time) is still
answered by GetOrder, from the store's orders view, history and all, also after a restart; a
reservation that left is still answered to a retried ReserveCash."""

from __future__ import annotations

import time

import grpc
import pytest

from portfolio.v1 import portfolio_pb2 as pb
from tests.api.protocol import BASE_SECONDS, acks, pb_fill, pb_status
from tests.conftest import ServerThread, start_test_server
from tests.storage.test_restart import open_stub

RETENTION_DAYS = 10 / 86_400  # ten seconds of event time


def at(message: pb.ExecutionEvent, seconds: int) -> pb.ExecutionEvent:
    which = message.WhichOneof("event")
    getattr(message, which).timestamp.FromSeconds(BASE_SECONDS + seconds)
    return message


def status(update_id: str, state: str, seconds: int, **fields: object) -> pb.ExecutionEvent:
    return at(pb_status(update_id, state, account_id="A1", **fields), seconds)


def order_life() -> list[pb.ExecutionEvent]:
    """Order 7 (first known by its ref only) is submitted, filled in two fills, one of them
    corrected, its partial fill status corrected, then filled: it ends at 6 s."""
    return [
        status("u1", "PRE_SUBMITTED", 1, order_ref="ref-7", strategy_id="S1",
               instrument_id="AAPL", side=pb.SIDE_BUY, remaining_quantity="10"),
        status("u2", "SUBMITTED", 2, order_id="7", order_ref="ref-7", remaining_quantity="10"),
        at(pb_fill("BUY", 4, 100, fill_id="x.01", order_id="7", order_ref="ref-7"), 3),
        status("u3", "PARTIALLY_FILLED", 3, order_id="7", filled_quantity="4",
               remaining_quantity="6", avg_fill_price="100"),
        status("u3c", "PARTIALLY_FILLED", 3, order_id="7", filled_quantity="4",
               remaining_quantity="6", avg_fill_price="100.5"),  # a correction of u3
        at(pb_fill("BUY", 4, 101, fill_id="x.02", corrects="x.01", order_id="7"), 4),
        status("u4", "PENDING_SUBMIT", 4, order_id="7", remaining_quantity="6"),  # illegal
        at(pb_fill("BUY", 6, 102, fill_id="y.01", order_id="7"), 5),
        status("u5", "FILLED", 6, order_id="7", filled_quantity="10", avg_fill_price="101.4"),
    ]  # fmt: skip


def get_order(stub, **ids: str) -> pb.Order:
    return stub.GetOrder(pb.GetOrderRequest(account_id="A1", **ids))


def from_the_store(stub, **ids: str) -> pb.Order:
    """GetOrder once the views caught up (they are written just after each commit)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return get_order(stub, **ids)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def in_memory(server: ServerThread, order_id: str) -> bool:
    return server.running.service.ledger.orders.find("A1", order_id) is not None


@pytest.mark.parametrize("checkpoint_every", [3, 10_000])
def test_a_forgotten_order_is_answered_from_the_store_also_after_a_restart(
    tmp_path, checkpoint_every
):
    store = f"lmdb://{tmp_path}/store"
    options = {"order_retention_days": RETENTION_DAYS, "checkpoint_every": checkpoint_every}
    first = start_test_server(store=store, **options)
    try:
        channel, stub = open_stub(first)
        with channel:
            assert all(a.result == pb.EVENT_RESULT_ACCEPTED for a in acks(stub, *order_life()))
            held = get_order(stub, order_id="7")
            assert held.status == pb.ORDER_STATUS_FILLED and len(held.history) == 5
            assert (held.booked_quantity, held.booked_fills) == ("10", 2)
            assert [bool(t.flag) for t in held.history] == [False, False, False, True, False]
            assert held.history[2].corrects == "u3"
            acks(stub, at(pb_fill("SELL", 1, 100, instrument="MSFT"), 16))  # 10 s after its end
            assert in_memory(first, "7")  # exactly the retention: still kept
            acks(stub, at(pb_fill("SELL", 1, 100, instrument="MSFT"), 17))
            assert not in_memory(first, "7")
            assert from_the_store(stub, order_id="7") == held
            assert from_the_store(stub, order_ref="ref-7") == held
            with pytest.raises(grpc.RpcError) as raised:
                get_order(stub, order_id="nope")
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND
            # The generic query answers the same.
            query = pb.PortfolioQuery(get_order=pb.GetOrderRequest(account_id="A1", order_id="7"))
            assert stub.Query(query).order == held
    finally:
        first.stop()
    second = start_test_server(store=store, **options)
    try:
        assert not in_memory(second, "7")  # the replay forgot it again
        channel, stub = open_stub(second)
        with channel:
            assert from_the_store(stub, order_id="7") == held
            # A late status for it does not crash: it starts a new order, as an unknown one.
            (late,) = acks(stub, status("u6", "FILLED", 7, order_id="7", filled_quantity="10"))
            assert late.result == pb.EVENT_RESULT_ACCEPTED
            assert len(get_order(stub, order_id="7").history) == 1
    finally:
        second.stop()


def test_a_forgotten_reservation_answers_a_retry_and_refuses_a_release(tmp_path):
    store = f"lmdb://{tmp_path}/store"
    server = start_test_server(store=store, order_retention_days=RETENTION_DAYS)
    try:
        channel, stub = open_stub(server)
        with channel:
            deposit = pb.CashTransfer(transfer_id="d", account_id="A1", currency="USD",
                                      amount="1000")  # fmt: skip
            deposit.timestamp.FromSeconds(BASE_SECONDS + 1)
            acks(stub, pb.ExecutionEvent(transfer=deposit))
            request = pb.ReserveCashRequest(
                reservation_id="r1", account_id="A1", currency="USD", amount="300",
                order_id="9", strategy_id="S1",
            )  # fmt: skip
            made = stub.ReserveCash(request)
            released = stub.ReleaseReservation(pb.ReleaseReservationRequest(
                release_id="x1", account_id="A1", reservation_id="r1"))  # fmt: skip
            assert released.status == pb.RESERVATION_STATUS_RELEASED
            acks(stub, at(pb_fill("SELL", 1, 100, instrument="MSFT"), 30))
            assert ("A1", "r1") not in server.running.service.ledger.balances.reservations
            retried = stub.ReserveCash(request)  # a DUPLICATE of the journaled reservation
            assert (retried.sequence, retried.amount, retried.order_key) == (
                made.sequence, "300", "id:9",
            )  # fmt: skip
            assert (retried.status, retried.remaining) == (pb.RESERVATION_STATUS_RELEASED, "0")
            with pytest.raises(grpc.RpcError) as raised:
                stub.ReleaseReservation(pb.ReleaseReservationRequest(
                    release_id="x2", account_id="A1", reservation_id="r1"))  # fmt: skip
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND
            assert "kept for" in raised.value.details()
            with pytest.raises(grpc.RpcError) as raised:  # a retry of the accepted release
                stub.ReleaseReservation(pb.ReleaseReservationRequest(
                    release_id="x1", account_id="A1", reservation_id="r1"))  # fmt: skip
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND
            assert "forgotten" in raised.value.details()
    finally:
        server.stop()
