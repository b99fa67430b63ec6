from decimal import Decimal

import grpc
import pytest

from portfolio.v1 import portfolio_pb2 as pb
from tests.api.protocol import acks, ingest, pb_fill, pb_status
from tests.domain.builders import WORKED_EXAMPLE


def worked_example(**kwargs):
    return [
        pb_fill(side, q, p, commission=Decimal("0.01") * q, **kwargs)
        for side, q, p in WORKED_EXAMPLE
    ]


def test_worked_example_through_the_api(stub):
    events = worked_example()
    answers = acks(stub, *events[:4])
    assert [a.result for a in answers] == [pb.EVENT_RESULT_ACCEPTED] * 4
    assert [a.sequence for a in answers] == [1, 2, 3, 4]
    assert [a.event_id for a in answers] == [e.fill.fill_id for e in events[:4]]
    position = stub.GetPosition(
        pb.GetPositionRequest(account_id="A1", instrument_id="AAPL", strategy_id="S1")
    )
    assert (position.quantity, position.avg_cost) == ("-30", "9")
    acks(stub, events[4])
    position = stub.GetPosition(
        pb.GetPositionRequest(account_id="A1", instrument_id="AAPL", strategy_id="S1")
    )
    assert position.quantity == "0"
    assert position.realized_pnl == "20"
    assert position.fees == "3.6"
    assert position.net_pnl == "16.4"
    assert position.trade_count == 5
    assert position.level == pb.POSITION_LEVEL_STRATEGY
    assert not position.HasField("opened_at")


def test_one_ack_per_event_in_order_across_pipelined_batches(stub):
    batches = [[pb_fill("BUY", 1, 10) for _ in range(100)] for _ in range(20)]
    responses = ingest(stub, *batches)
    assert [r.batch_id for r in responses] == [f"b{i}" for i in range(20)]
    sequences = [a.sequence for r in responses for a in r.acks]
    assert sequences == list(range(1, 2001))
    position = stub.GetPosition(pb.GetPositionRequest(account_id="A1", instrument_id="AAPL"))
    assert position.quantity == "2000"


def test_replayed_events_are_duplicates_with_their_original_sequence(stub):
    events = worked_example()
    first = acks(stub, *events)
    again = acks(stub, *events[2:], *events[:2])
    assert [a.result for a in again] == [pb.EVENT_RESULT_DUPLICATE] * 5
    assert [a.sequence for a in again] == [a.sequence for a in first[2:] + first[:2]]
    position = stub.GetPosition(
        pb.GetPositionRequest(account_id="A1", instrument_id="AAPL", strategy_id="S1")
    )
    assert position.trade_count == 5


def test_a_bad_event_is_rejected_alone_and_the_stream_goes_on(stub):
    answers = acks(stub, pb_fill("BUY", 5, 10), pb_fill("BUY", 0, 10), pb_fill("SELL", 2, 11))
    assert [a.result for a in answers] == [
        pb.EVENT_RESULT_ACCEPTED,
        pb.EVENT_RESULT_REJECTED,
        pb.EVENT_RESULT_ACCEPTED,
    ]
    assert [a.sequence for a in answers] == [1, 0, 2]
    assert answers[1].reason == "events[1].fill.quantity: must be > 0, got 0"
    position = stub.GetPosition(pb.GetPositionRequest(account_id="A1", instrument_id="AAPL"))
    assert position.quantity == "3"


def test_an_id_reused_for_a_different_fill_is_rejected(stub):
    acks(stub, pb_fill("BUY", 5, 10, fill_id="dup"))
    (answer,) = acks(stub, pb_fill("BUY", 6, 10, fill_id="dup"))
    assert answer.result == pb.EVENT_RESULT_REJECTED
    assert "fill_id" in answer.reason


def test_status_updates_are_sequenced_and_deduplicated(stub):
    first = acks(stub, pb_status("u1"), pb_fill("BUY", 1, 1), pb_status("u2", "FILLED"))
    assert [a.sequence for a in first] == [1, 2, 3]
    (again,) = acks(stub, pb_status("u1"))
    assert (again.result, again.sequence) == (pb.EVENT_RESULT_DUPLICATE, 1)


def _without_timestamp():
    event = pb_fill("BUY", 1, 1)
    event.fill.ClearField("timestamp")
    return event


BAD_EVENTS = [
    ("missing fill_id", lambda: pb_fill("BUY", 1, 1, fill_id=""), "fill.fill_id"),
    ("missing account", lambda: pb_fill("BUY", 1, 1, account=""), "fill.account_id"),
    ("missing strategy", lambda: pb_fill("BUY", 1, 1, strategy=""), "fill.strategy_id"),
    ("missing instrument", lambda: pb_fill("BUY", 1, 1, instrument=""), "fill.instrument_id"),
    ("unknown side", lambda: pb_fill("", 1, 1), "fill.side"),
    ("zero quantity", lambda: pb_fill("BUY", 0, 1), "fill.quantity"),
    ("negative quantity", lambda: pb_fill("BUY", -1, 1), "fill.quantity"),
    ("empty quantity", lambda: pb_fill("BUY", "", 1), "fill.quantity"),
    ("unparsable price", lambda: pb_fill("BUY", 1, "ten"), "fill.price"),
    ("NaN price", lambda: pb_fill("BUY", 1, "NaN"), "fill.price"),
    ("infinite price", lambda: pb_fill("BUY", 1, "Infinity"), "fill.price"),
    ("exponent", lambda: pb_fill("BUY", "1e3", 1), "fill.quantity"),
    ("grouping", lambda: pb_fill("BUY", "1_000", 1), "fill.quantity"),
    ("blank padded", lambda: pb_fill("BUY", " 1", 1), "fill.quantity"),
    ("too precise", lambda: pb_fill("BUY", "0." + "0" * 18 + "1", 1), "fill.quantity"),
    ("too large", lambda: pb_fill("BUY", "1" + "0" * 18, 1), "fill.quantity"),
    ("bad commission", lambda: pb_fill("BUY", 1, 1, commission="x"), "fill.commission"),
    ("no timestamp", _without_timestamp, "fill.timestamp"),
    ("empty event", lambda: pb.ExecutionEvent(), "event"),
    ("status without id", lambda: pb_status(""), "status.update_id"),
    ("status without order", lambda: pb_status("u9", order_ref=""), "status.order_id"),
    (
        "status unspecified",
        lambda: pb.ExecutionEvent(
            status=pb.OrderStatusUpdate(update_id="u", account_id="A1", order_id="1")
        ),
        "status.status",
    ),
    (
        "status negative filled",
        lambda: pb_status("u8", filled_quantity="-1"),
        "status.filled_quantity",
    ),
]


@pytest.mark.parametrize(("case", "make", "field"), BAD_EVENTS, ids=[c[0] for c in BAD_EVENTS])
def test_bad_events_are_rejected_naming_the_field_and_change_nothing(stub, case, make, field):
    (answer,) = acks(stub, make())
    assert answer.result == pb.EVENT_RESULT_REJECTED
    assert answer.sequence == 0
    assert answer.reason.startswith(f"events[0].{field}: ")
    summary = stub.GetPortfolioSummary(pb.GetPortfolioSummaryRequest())
    assert summary.as_of_sequence == 0
    assert summary.account_totals.total_positions == 0


def test_an_empty_batch_is_refused_and_the_stream_goes_on(stub):
    requests = [
        pb.IngestRequest(batch_id="empty"),
        pb.IngestRequest(batch_id="ok", events=[pb_fill("BUY", 1, 1)]),
    ]
    empty, ok = stub.Ingest(iter(requests), timeout=10)
    assert empty.batch_id == "empty"
    assert not empty.acks
    assert "1 to 10000 events, got 0" in empty.batch_rejected_reason
    assert ok.acks[0].result == pb.EVENT_RESULT_ACCEPTED


def test_a_batch_over_the_limit_is_refused_whole(stub):
    (response,) = ingest(stub, [pb_fill("BUY", 1, 1) for _ in range(10_001)])
    assert not response.acks
    assert "got 10001" in response.batch_rejected_reason
    assert stub.GetPortfolioSummary(pb.GetPortfolioSummaryRequest()).as_of_sequence == 0


def test_an_oversized_message_ends_the_stream_with_resource_exhausted(stub):
    huge = pb_fill("BUY", 1, 1, venue="x" * (17 * 1024 * 1024))
    with pytest.raises(grpc.RpcError) as raised:
        ingest(stub, [huge])
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stub.GetPortfolioSummary(pb.GetPortfolioSummaryRequest()).as_of_sequence == 0
