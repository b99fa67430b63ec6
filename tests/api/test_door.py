"""What the store or the clock cannot hold is refused at the door, naming the field, and the
service goes on: a year-3000 fill once stopped all ingestion, and an id ArcticDB cannot take as
a symbol stopped the analysts' views for everyone."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import grpc
import pytest

from client import AsyncPortfolioClient, Fill, Side
from client.wire import event_to_proto
from portfolio.v1 import portfolio_pb2 as pb
from relay.outbox import Outbox
from server.domain.events import MAX_ID_LENGTH
from tests.api.protocol import acks, field_violations, pb_fill, pb_status
from tests.conftest import start_test_server

YEAR_3000 = 32_503_680_000  # 3000-01-01T00:00:00Z
YEAR_2200 = 7_258_118_400
INT64_MAX = 2**63 - 1
NOW = int(datetime.now(UTC).timestamp())

BAD_IDS = {
    "non-ASCII": "caf\u00e9",
    "star": "a*b",
    "less-than": "a<b",
    "greater-than": "a>b",
    "tab": "a\tb",
    "too long": "x" * (MAX_ID_LENGTH + 1),
    "leading blank": " a",
}


def stamped(event: pb.ExecutionEvent, seconds: int) -> pb.ExecutionEvent:
    message = getattr(event, event.WhichOneof("event"))
    message.timestamp.seconds = seconds
    message.timestamp.nanos = 0
    return event


def pb_transfer(transfer_id: str, **fields: object) -> pb.ExecutionEvent:
    message = pb.CashTransfer(
        transfer_id=transfer_id,
        account_id=str(fields.pop("account_id", "A1")),
        currency="USD",
        amount="100",
        **fields,  # type: ignore[arg-type]
    )
    message.timestamp.FromSeconds(NOW)
    return pb.ExecutionEvent(transfer=message)


def quantity(stub, account: str = "A1") -> str:
    request = pb.GetPositionRequest(account_id=account, instrument_id="AAPL", strategy_id="S1")
    return stub.GetPosition(request).quantity


@pytest.mark.parametrize(
    "seconds", [YEAR_3000, INT64_MAX, YEAR_2200, NOW + 3600], ids=["3000", "int64", "2200", "+1h"]
)
def test_a_fill_stamped_far_ahead_is_refused_and_ingest_goes_on(stub, server, seconds):
    bad = stamped(pb_fill("BUY", 5, 10), seconds)
    first, second = acks(stub, bad, pb_fill("BUY", 1, 10))
    assert first.result == pb.EVENT_RESULT_REJECTED
    assert first.reason.startswith("events[0].fill.timestamp: ")
    assert "2200-01-01" in first.reason or "ahead" in first.reason
    assert second.result == pb.EVENT_RESULT_ACCEPTED
    # The commit path still works for every later batch, and nothing of the bad fill counts.
    (third,) = acks(stub, pb_fill("BUY", 2, 10))
    assert third.result == pb.EVENT_RESULT_ACCEPTED
    assert quantity(stub) == "3"
    assert server.running.service.committer.healthy


def test_clock_skew_within_the_tolerance_is_accepted(stub):
    (ack,) = acks(stub, stamped(pb_fill("BUY", 1, 10), NOW + 60))
    assert ack.result == pb.EVENT_RESULT_ACCEPTED


@pytest.mark.parametrize("build", [pb_status, pb_transfer], ids=["status", "transfer"])
@pytest.mark.parametrize("seconds", [YEAR_3000, INT64_MAX])
def test_status_and_transfer_stamped_far_ahead_are_refused(stub, build, seconds):
    event = stamped(build("far-ahead"), seconds)
    kind = event.WhichOneof("event")
    bad, good = acks(stub, event, pb_fill("BUY", 1, 10))
    assert bad.result == pb.EVENT_RESULT_REJECTED
    assert bad.reason.startswith(f"events[0].{kind}.timestamp: ")
    assert good.result == pb.EVENT_RESULT_ACCEPTED


def test_old_events_are_refused_only_when_an_age_limit_is_set():
    server = start_test_server(max_event_age_days=30.0)
    try:
        with grpc.insecure_channel(server.address) as channel:
            from portfolio.v1 import portfolio_pb2_grpc as pb_grpc

            stub = pb_grpc.PortfolioManagerStub(channel)
            old, recent = acks(
                stub,
                stamped(pb_fill("BUY", 1, 10), NOW - 40 * 86_400),
                stamped(pb_fill("BUY", 1, 10), NOW - 20 * 86_400),
            )
        assert old.result == pb.EVENT_RESULT_REJECTED
        assert "before the service's clock" in old.reason
        assert recent.result == pb.EVENT_RESULT_ACCEPTED
    finally:
        server.stop()


def mark_batch(seconds: int, price: str = "10") -> pb.MarkBatch:
    mark = pb.MarkPrice(instrument_id="AAPL", mark=price)
    mark.timestamp.FromSeconds(seconds)
    return pb.MarkBatch(batch_id=f"m{seconds}-{price}", marks=[mark])


def test_a_mark_stamped_in_2200_is_refused_and_later_marks_still_apply(stub):
    acks(stub, pb_fill("BUY", 1, 10))
    far, real = stub.StreamMarks(iter([mark_batch(YEAR_2200, "99"), mark_batch(NOW, "12")]))
    assert far.batch_rejected_reason.startswith("marks[0].timestamp: ")
    assert real.marks_applied == 1 and real.marks_stale == 0
    position = stub.GetPosition(
        pb.GetPositionRequest(account_id="A1", instrument_id="AAPL", strategy_id="S1")
    )
    assert position.market_price == "12"


def test_an_fx_rate_stamped_far_ahead_is_refused(stub):
    rate = pb.FxRate(base_currency="EUR", quote_currency="USD", rate="1.1")
    rate.timestamp.seconds = INT64_MAX
    (ack,) = stub.StreamMarks(iter([pb.MarkBatch(batch_id="fx", fx_rates=[rate])]))
    assert ack.batch_rejected_reason.startswith("fx_rates[0].timestamp: ")


FILL_IDS = ["fill_id", "account_id", "strategy_id", "instrument_id", "order_ref", "order_id",
            "venue", "trace_id"]  # fmt: skip
STATUS_IDS = ["update_id", "account_id", "strategy_id", "order_ref", "order_id", "perm_id",
              "instrument_id"]  # fmt: skip
TRANSFER_IDS = ["transfer_id", "account_id", "chain_id"]


def _with(event: pb.ExecutionEvent, field: str, value: str) -> pb.ExecutionEvent:
    setattr(getattr(event, event.WhichOneof("event")), field, value)
    return event


@pytest.mark.parametrize("bad", BAD_IDS.values(), ids=BAD_IDS.keys())
def test_every_id_field_refuses_what_the_store_cannot_hold(stub, bad):
    events = (
        [_with(pb_fill("BUY", 1, 10), field, bad) for field in FILL_IDS]
        + [_with(pb_status(f"s-{field}"), field, bad) for field in STATUS_IDS]
        + [_with(pb_transfer(f"t-{field}"), field, bad) for field in TRANSFER_IDS]
    )
    answers = acks(stub, *events, pb_fill("BUY", 1, 10))
    names = [
        f"{event.WhichOneof('event')}.{field}"
        for event, field in zip(events, FILL_IDS + STATUS_IDS + TRANSFER_IDS, strict=True)
    ]
    for index, (ack, name) in enumerate(zip(answers, names, strict=False)):
        assert ack.result == pb.EVENT_RESULT_REJECTED, name
        assert ack.reason.startswith(f"events[{index}].{name}: "), ack.reason
    assert answers[-1].result == pb.EVENT_RESULT_ACCEPTED


def test_ids_of_the_longest_length_are_accepted_and_stored(stub):
    longest = "A" * MAX_ID_LENGTH
    (ack,) = acks(stub, pb_fill("BUY", 3, 10, account=longest, strategy="S" * MAX_ID_LENGTH))
    assert ack.result == pb.EVENT_RESULT_ACCEPTED
    request = pb.GetPositionRequest(
        account_id=longest, instrument_id="AAPL", strategy_id="S" * MAX_ID_LENGTH
    )
    assert stub.GetPosition(request).quantity == "3"


@pytest.mark.parametrize("bad", ["caf\u00e9", "a*b", "x" * (MAX_ID_LENGTH + 1)])
def test_unary_rpcs_refuse_such_ids_with_invalid_argument(stub, bad):
    calls = {
        "account.account_id": lambda: stub.DefineAccount(
            pb.DefineAccountRequest(
                account=pb.Account(account_id=bad, kind=pb.ACCOUNT_KIND_PAPER, base_currency="USD")
            )
        ),
        "instrument.instrument_id": lambda: stub.DefineInstrument(
            pb.DefineInstrumentRequest(instrument=pb.Instrument(instrument_id=bad, currency="USD"))
        ),
        "reservation_id": lambda: stub.ReserveCash(
            pb.ReserveCashRequest(reservation_id=bad, account_id="A1", currency="USD", amount="1")
        ),
    }
    for field, call in calls.items():
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert field_violations(caught.value) == [field]


def test_a_mark_of_an_instrument_id_the_store_cannot_hold_is_refused(stub):
    mark = pb.MarkPrice(instrument_id="a<b", mark="1")
    mark.timestamp.FromSeconds(NOW)
    (ack,) = stub.StreamMarks(iter([pb.MarkBatch(batch_id="bad", marks=[mark])]))
    assert ack.batch_rejected_reason.startswith("marks[0].instrument_id: ")


async def test_the_relay_resending_a_far_future_fill_after_a_restart_stops_nothing(tmp_path):
    """The relay keeps what was not acked and resends it when it starts again: that resend
    must be refused again, not take the service down again."""
    store = f"lmdb://{tmp_path / 'store'}"
    when = datetime(2026, 1, 2, tzinfo=UTC)
    base = Fill(
        fill_id="F1", account_id="A1", strategy_id="S1", instrument_id="AAPL", side=Side.BUY,
        quantity=Decimal(1), price=Decimal(10), timestamp=when,
    )  # fmt: skip
    far = replace(base, fill_id="F-3000", timestamp=datetime(3000, 1, 1, tzinfo=UTC))
    assert event_to_proto(far).fill.timestamp.seconds == YEAR_3000
    seen: list[tuple[str, str]] = []
    for round_ in range(2):  # the second round is the relay and the service restarted
        server = await asyncio.to_thread(start_test_server, store=store)
        try:
            async with AsyncPortfolioClient(server.address) as client:
                outbox = Outbox(
                    client, on_ack=lambda e, a: seen.append((e.event_id, a.result.name))
                )
                for event in (far, base, replace(base, fill_id=f"F2-{round_}")):
                    outbox.put(event)
                await outbox.start()
                await outbox.drained(timeout=10)
                await outbox.stop()
                position = await client.get_position("A1", "AAPL", strategy_id="S1")
            assert position.quantity == Decimal(1 + 1 + round_)
        finally:
            await asyncio.to_thread(server.stop)
    assert seen == [
        ("F-3000", "REJECTED"), ("F1", "ACCEPTED"), ("F2-0", "ACCEPTED"),
        ("F-3000", "REJECTED"), ("F1", "DUPLICATE"), ("F2-1", "ACCEPTED"),
    ]  # fmt: skip


def test_reconcile_refuses_an_account_id_the_store_cannot_hold(stub):
    with pytest.raises(grpc.RpcError) as caught:
        stub.Reconcile(pb.ReconcileRequest(account_id="a*b"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(caught.value) == ["account_id"]
