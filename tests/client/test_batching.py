"""Ingest bookkeeping: batches, ack matching, resending what was not acked."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import grpc
import pytest

from client.batching import MAX_BATCH_SIZE, IngestSession
from client.errors import IngestIncomplete, PortfolioError, ProtocolViolation
from client.models import EventResult, Fill, OrderStatus, OrderStatusUpdate, Side
from portfolio.v1 import portfolio_pb2 as pb

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)


def fill(n: int) -> Fill:
    return Fill(
        fill_id=f"F{n}",
        account_id="A1",
        strategy_id="S1",
        instrument_id="AAPL",
        side=Side.BUY,
        quantity=Decimal(n),
        price=Decimal("10.5"),
        timestamp=T0,
    )


def accept(request: pb.IngestRequest, first_sequence: int) -> pb.IngestResponse:
    """The answer a healthy service gives: every event accepted, sequences in order."""
    acks = []
    for offset, event in enumerate(request.events):
        event_id = event.fill.fill_id if event.HasField("fill") else event.status.update_id
        acks.append(
            pb.EventAck(
                event_id=event_id,
                sequence=first_sequence + offset,
                result=pb.EVENT_RESULT_ACCEPTED,
            )
        )
    return pb.IngestResponse(batch_id=request.batch_id, acks=acks)


def ids(request: pb.IngestRequest) -> list[str]:
    return [e.fill.fill_id for e in request.events]


def test_events_are_packed_in_order_into_batches_of_batch_size() -> None:
    session = IngestSession([fill(n) for n in range(1, 6)], batch_size=2)
    batches = session.start_attempt()
    assert [b.indices for b in batches] == [(0, 1), (2, 3), (4,)]
    assert [ids(b.request) for b in batches] == [["F1", "F2"], ["F3", "F4"], ["F5"]]
    assert all(b.request.batch_id == b.batch_id for b in batches)
    assert len({b.batch_id for b in batches}) == 3
    assert batches[0].request.events[1].fill.quantity == "2"


def test_batch_ids_differ_between_sessions_and_attempts() -> None:
    first = IngestSession([fill(1)], batch_size=1)
    second = IngestSession([fill(1)], batch_size=1)
    a = first.start_attempt()[0].batch_id
    b = first.start_attempt()[0].batch_id
    c = second.start_attempt()[0].batch_id
    assert len({a, b, c}) == 3


def test_acks_are_matched_to_events_and_returned_in_input_order() -> None:
    session = IngestSession([fill(n) for n in range(1, 6)], batch_size=2)
    batches = session.start_attempt()
    sequence = 1
    for batch in batches:
        assert not session.done
        session.record(accept(batch.request, sequence))
        sequence += len(batch.indices)
    assert session.done
    acks = session.acks()
    assert [a.event_id for a in acks] == ["F1", "F2", "F3", "F4", "F5"]
    assert [a.sequence for a in acks] == [1, 2, 3, 4, 5]
    assert {a.result for a in acks} == {EventResult.ACCEPTED}


def test_mixed_events_are_acked_by_their_own_ids() -> None:
    status = OrderStatusUpdate(
        update_id="U1", account_id="A1", instrument_id="AAPL", status=OrderStatus.FILLED
    )
    session = IngestSession([fill(1), status], batch_size=10)
    (batch,) = session.start_attempt()
    assert batch.request.events[1].WhichOneof("event") == "status"
    session.record(accept(batch.request, 1))
    assert [a.event_id for a in session.acks()] == ["F1", "U1"]


def test_rejected_and_duplicate_acks_are_answers_not_errors() -> None:
    session = IngestSession([fill(1), fill(2)], batch_size=2)
    (batch,) = session.start_attempt()
    session.record(
        pb.IngestResponse(
            batch_id=batch.batch_id,
            acks=[
                pb.EventAck(event_id="F1", sequence=3, result=pb.EVENT_RESULT_DUPLICATE),
                pb.EventAck(
                    event_id="F2",
                    sequence=0,
                    result=pb.EVENT_RESULT_REJECTED,
                    reason="quantity: must be > 0",
                ),
            ],
        )
    )
    first, second = session.acks()
    assert (first.result, first.sequence) == (EventResult.DUPLICATE, 3)
    assert (second.result, second.sequence, second.reason) == (
        EventResult.REJECTED,
        0,
        "quantity: must be > 0",
    )


def test_a_refused_batch_raises_invalid_argument() -> None:
    session = IngestSession([fill(1)], batch_size=1)
    (batch,) = session.start_attempt()
    with pytest.raises(PortfolioError, match="too many events") as caught:
        session.record(
            pb.IngestResponse(batch_id=batch.batch_id, batch_rejected_reason="too many events")
        )
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert not isinstance(caught.value, ProtocolViolation)
    assert not session.done


def test_response_for_another_batch_is_a_protocol_violation() -> None:
    session = IngestSession([fill(1), fill(2)], batch_size=1)
    _, second = session.start_attempt()
    with pytest.raises(ProtocolViolation, match="expected"):
        session.record(accept(second.request, 1))


def test_wrong_number_of_acks_is_a_protocol_violation() -> None:
    session = IngestSession([fill(1), fill(2)], batch_size=2)
    (batch,) = session.start_attempt()
    response = accept(batch.request, 1)
    del response.acks[1]
    with pytest.raises(ProtocolViolation, match="1 acks"):
        session.record(response)


def test_ack_for_another_event_is_a_protocol_violation() -> None:
    session = IngestSession([fill(1), fill(2)], batch_size=2)
    (batch,) = session.start_attempt()
    response = accept(batch.request, 1)
    response.acks[0].event_id, response.acks[1].event_id = "F2", "F1"
    with pytest.raises(ProtocolViolation, match="F2"):
        session.record(response)
    assert not session.done


def test_response_without_a_batch_in_flight_is_a_protocol_violation() -> None:
    session = IngestSession([fill(1)], batch_size=1)
    (batch,) = session.start_attempt()
    session.record(accept(batch.request, 1))
    with pytest.raises(ProtocolViolation):
        session.record(accept(batch.request, 1))


def test_a_new_attempt_resends_only_the_unacked_events() -> None:
    session = IngestSession([fill(n) for n in range(1, 6)], batch_size=2)
    first_attempt = session.start_attempt()
    session.record(accept(first_attempt[0].request, 1))
    # The stream breaks here: F3..F5 may or may not have been applied.
    second_attempt = session.start_attempt()
    assert session.attempts == 2
    assert [ids(b.request) for b in second_attempt] == [["F3", "F4"], ["F5"]]
    assert [b.indices for b in second_attempt] == [(2, 3), (4,)]
    assert not {b.batch_id for b in first_attempt} & {b.batch_id for b in second_attempt}
    # A late answer to the broken stream's batch no longer matches anything in flight.
    with pytest.raises(ProtocolViolation):
        session.record(accept(first_attempt[1].request, 3))


def test_acks_from_several_attempts_are_returned_in_input_order() -> None:
    session = IngestSession([fill(n) for n in range(1, 6)], batch_size=2)
    first_attempt = session.start_attempt()
    session.record(accept(first_attempt[0].request, 1))
    second_attempt = session.start_attempt()
    session.record(accept(second_attempt[0].request, 3))
    session.record(accept(second_attempt[1].request, 5))
    assert [(a.event_id, a.sequence) for a in session.acks()] == [
        ("F1", 1),
        ("F2", 2),
        ("F3", 3),
        ("F4", 4),
        ("F5", 5),
    ]


def test_incomplete_carries_acks_and_unacked_events_in_input_order() -> None:
    events = [fill(n) for n in range(1, 6)]
    session = IngestSession(events, batch_size=2)
    batches = session.start_attempt()
    session.record(accept(batches[0].request, 1))
    with pytest.raises(RuntimeError):
        session.acks()
    error = session.incomplete(grpc.StatusCode.UNAVAILABLE, "connection reset")
    assert isinstance(error, IngestIncomplete)
    assert isinstance(error, PortfolioError)
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert "connection reset" in error.message
    assert [a.event_id for a in error.acks] == ["F1", "F2"]
    assert error.unacked == events[2:]


def test_duplicate_events_in_one_call_each_get_their_ack() -> None:
    session = IngestSession([fill(1), fill(1)], batch_size=10)
    (batch,) = session.start_attempt()
    session.record(
        pb.IngestResponse(
            batch_id=batch.batch_id,
            acks=[
                pb.EventAck(event_id="F1", sequence=1, result=pb.EVENT_RESULT_ACCEPTED),
                pb.EventAck(event_id="F1", sequence=1, result=pb.EVENT_RESULT_DUPLICATE),
            ],
        )
    )
    assert [a.result for a in session.acks()] == [EventResult.ACCEPTED, EventResult.DUPLICATE]


def test_no_events_means_nothing_to_send() -> None:
    session = IngestSession([], batch_size=100)
    assert session.done
    assert session.acks() == []
    assert session.start_attempt() == []


@pytest.mark.parametrize("batch_size", [0, -1, MAX_BATCH_SIZE + 1])
def test_batch_size_must_fit_the_service_limit(batch_size: int) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        IngestSession([fill(1)], batch_size=batch_size)


def test_a_bad_event_fails_before_anything_is_sent() -> None:
    naive = Fill(
        fill_id="F1",
        account_id="A1",
        strategy_id="S1",
        instrument_id="AAPL",
        side=Side.BUY,
        quantity=Decimal(1),
        price=Decimal(1),
        timestamp=datetime(2024, 3, 1, 14, 30),
    )
    with pytest.raises(ValueError, match="naive"):
        IngestSession([fill(1), naive], batch_size=1)


def test_events_may_be_a_one_shot_iterator() -> None:
    session = IngestSession((fill(n) for n in range(1, 4)), batch_size=2)
    first = session.start_attempt()
    session.record(accept(first[0].request, 1))
    assert [ids(b.request) for b in session.start_attempt()] == [["F3"]]
