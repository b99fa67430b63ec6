"""The one-fill message's path on the event loop, made cheaper (issue 12), says and refuses
exactly what it did: the id rules' one-match path, the fill's conversion (which field, in which
order), and a batch's acks and counts when refusals of every kind are mixed with accepted events.
"""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portfolio.v1 import portfolio_pb2 as pb
from server.api.wire import FieldViolation, fill_from_proto
from server.domain.events import (
    _ID_FORBIDDEN,
    _LEGACY_MAX_ID_LENGTH,
    ID_CHARACTERS,
    MAX_ID_LENGTH,
    InvalidEvent,
    journaled_limits,
    require_id,
)
from server.domain.ledger import Result
from tests.api.protocol import BASE_SECONDS, acks, pb_fill, pb_status

# -- the id rules ---------------------------------------------------------------------------


def _rules(field: str, value: str, legacy: bool) -> str:
    """The id rules as written before the one-match path: "" or the refusal's text."""
    if not value:
        return f"{field}: is required"
    if legacy:
        if len(value) > _LEGACY_MAX_ID_LENGTH or not value.isprintable():
            return f"{field}: is not an id a journal ever held"
        return ""
    if len(value) > MAX_ID_LENGTH:
        return f"{field}: is {len(value)} characters long; at most {MAX_ID_LENGTH}"
    bad = _ID_FORBIDDEN.search(value)
    if bad is not None:
        return f"{field}: has {bad.group()!r} at position {bad.start()}: an id is {ID_CHARACTERS}"
    if value[0] == " " or value[-1] == " ":
        return f"{field}: must not start or end with a blank"
    return ""


def _refusal(value: str) -> str:
    try:
        require_id("fill_id", value)
    except InvalidEvent as invalid:
        return str(invalid)
    return ""


_NEAR_IDS = st.text(
    alphabet=st.sampled_from([*"aZ9-_.:/ *<>~!", "\t", "\x7f", "\u00e9", "\u2028"]),
    max_size=MAX_ID_LENGTH + 3,
)


@settings(max_examples=400, deadline=None)
@given(
    value=_NEAR_IDS
    | st.text(max_size=8)
    | st.integers(MAX_ID_LENGTH - 2, MAX_ID_LENGTH + 2).map(lambda n: "x" * n)
)
def test_an_id_is_taken_or_refused_as_the_rules_say(value: str) -> None:
    assert _refusal(value) == _rules("fill_id", value, legacy=False)
    with journaled_limits():
        assert _refusal(value) == _rules("fill_id", value, legacy=True)


@pytest.mark.parametrize(
    "value", ["a", "a b", "~", "!", "x" * MAX_ID_LENGTH, "U1-fill 7/2026:01", "a=b?c"]
)
def test_usual_ids_are_taken(value: str) -> None:
    assert _refusal(value) == ""


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (" a", "must not start or end with a blank"),
        ("a ", "must not start or end with a blank"),
        (" ", "must not start or end with a blank"),
        ("a*b", "has '*' at position 1"),
        ("<", "has '<' at position 0"),
        ("x" * (MAX_ID_LENGTH + 1), f"is {MAX_ID_LENGTH + 1} characters long"),
        ("caf\u00e9", "has '\u00e9' at position 3"),
    ],
)
def test_ids_near_the_edge_are_refused_saying_why(value: str, reason: str) -> None:
    assert reason in _refusal(value)


# -- the fill's conversion ------------------------------------------------------------------


def _fill(**fields: object) -> pb.Fill:
    values: dict[str, object] = {
        "fill_id": "f1",
        "account_id": "A1",
        "strategy_id": "S1",
        "instrument_id": "AAPL",
        "side": pb.SIDE_BUY,
        "quantity": "10",
        "price": "100.25",
        "commission": "0.35",
        "commission_currency": "USD",
        **fields,
    }
    message = pb.Fill(**values)  # type: ignore[arg-type]
    if "timestamp" not in fields:
        message.timestamp.FromSeconds(BASE_SECONDS)
    return message


def _violation(message: pb.Fill) -> str:
    with pytest.raises(FieldViolation) as raised:
        fill_from_proto(message)
    return str(raised.value)


def test_a_fill_converts_field_for_field() -> None:
    fill = fill_from_proto(_fill(order_ref="o1", venue="XNAS", trace_id="t1"))
    assert (fill.fill_id, fill.account_id, fill.strategy_id, fill.instrument_id) == (
        "f1",
        "A1",
        "S1",
        "AAPL",
    )
    assert (fill.quantity, fill.price, fill.commission) == (
        Decimal(10),
        Decimal("100.25"),
        Decimal("0.35"),
    )
    assert fill.timestamp_ns == BASE_SECONDS * 1_000_000_000
    assert (fill.order_ref, fill.venue, fill.trace_id) == ("o1", "XNAS", "t1")
    assert fill_from_proto(_fill(commission="")).commission == 0  # absent: none


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        # Several faults at once: the first in the order the door always checked them.
        ({"side": pb.SIDE_UNSPECIFIED, "quantity": "x"}, "side: must be SIDE_BUY or SIDE_SELL"),
        ({"corrects": "f0", "trace_id": "t", "quantity": "x"}, "trace_id: a correction"),
        ({"quantity": "1e3", "price": "x"}, "quantity: '1e3' is not a plain decimal"),
        ({"price": "", "commission": "x"}, "price: is required"),
        ({"commission": "+1", "fill_id": ""}, "commission: '+1' is not a plain decimal"),
        ({"quantity": "0", "fill_id": "a*b"}, "fill_id: has '*' at position 1"),
        ({"order_ref": "a>b", "venue": "a<b"}, "order_ref: has '>' at position 1"),
        ({"venue": "a<b", "commission_currency": "usd"}, "venue: has '<' at position 1"),
        ({"trace_id": " t", "quantity": "-1"}, "trace_id: must not start or end with a blank"),
        ({"commission_currency": "usd", "quantity": "-1"}, "commission_currency: must be"),
        ({"quantity": "-1"}, "quantity: must be > 0, got -1"),
        ({"quantity": "1." + "0" * 70}, "quantity: '1.000"),
        ({"commission_currency": "usd"}, "commission_currency: must be a currency code"),
        ({"strategy_id": "RESIDUAL"}, "strategy_id: 'RESIDUAL' is reserved"),
        ({"corrects": "f1"}, "corrects: must name another fill"),  # not itself
    ],
)
def test_a_bad_fill_names_its_first_fault(fields: dict[str, object], said: str) -> None:
    assert _violation(_fill(**fields)).startswith(said)


def test_a_fill_without_a_time_or_with_bad_nanos_is_refused() -> None:
    message = _fill()
    message.ClearField("timestamp")
    assert _violation(message) == "timestamp: is required"
    message.timestamp.nanos = -1
    assert _violation(message) == "timestamp: nanos must be in [0, 1e9), got -1"


# -- a batch through the service ------------------------------------------------------------


def test_refusals_of_every_kind_beside_accepted_events_in_one_batch(stub, server) -> None:
    counts = server.running.service.writes.event_counts
    before = dict(counts)
    far = pb_fill("BUY", 1, 10)
    far.fill.timestamp.seconds = 32_503_680_000  # 3000-01-01: the clock's window refuses it
    first = pb_fill("BUY", 2, 10, fill_id="mp-1")
    answers = acks(
        stub,
        first,
        far,
        pb_fill("BUY", 0, 10),  # the domain's rule
        pb_fill("", 1, 10),  # the wire's
        pb_status("mp-status"),
        pb.ExecutionEvent(),  # no event at all
        first,  # a resend in the same batch: its original's sequence
    )
    assert [a.result for a in answers] == [
        pb.EVENT_RESULT_ACCEPTED,
        pb.EVENT_RESULT_REJECTED,
        pb.EVENT_RESULT_REJECTED,
        pb.EVENT_RESULT_REJECTED,
        pb.EVENT_RESULT_ACCEPTED,
        pb.EVENT_RESULT_REJECTED,
        pb.EVENT_RESULT_DUPLICATE,
    ]
    assert answers[1].reason.startswith("events[1].fill.timestamp: ")
    assert answers[2].reason == "events[2].fill.quantity: must be > 0, got 0"
    assert answers[3].reason == "events[3].fill.side: must be SIDE_BUY or SIDE_SELL"
    assert answers[5].reason.startswith("events[5].event: must hold one of: fill")
    assert {answers[i].code for i in (1, 2, 3, 5)} == {pb.REJECT_CODE_INVALID_FIELD}
    assert [a.sequence for a in answers] == [1, 0, 0, 0, 2, 0, 1]
    # Only a booked fill's ack says where it landed; a status update's does not.
    assert answers[0].placement == pb.BOOKING_PLACEMENT_IN_ORDER
    assert answers[4].placement == pb.BOOKING_PLACEMENT_UNSPECIFIED
    assert answers[6].placement == pb.BOOKING_PLACEMENT_UNSPECIFIED
    moved = {
        key: counts[key] - before.get(key, 0) for key in counts if counts[key] != before.get(key, 0)
    }
    assert moved == {
        ("fill", Result.ACCEPTED): 1,
        ("fill", Result.REJECTED): 3,
        ("fill", Result.DUPLICATE): 1,
        ("status", Result.ACCEPTED): 1,
        ("unknown", Result.REJECTED): 1,
    }


def test_the_id_rule_pattern_is_the_documented_alphabet() -> None:
    """The one-match path's characters are ID_CHARACTERS: printable ASCII but '*', '<', '>'."""
    taken = {chr(c) for c in range(0x110) if _refusal(f"a{chr(c)}a") == ""}
    assert taken == {chr(c) for c in range(0x20, 0x7F)} - set("*<>")
    assert re.fullmatch(r"[ -~]+", "".join(sorted(taken)))
