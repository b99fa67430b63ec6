"""The one table from a kind of failure to the status a client sees (server/api/errors.py)."""

from __future__ import annotations

import grpc
import pytest
from grpc_status import rpc_status

from portfolio.v1 import portfolio_pb2 as pb
from server.api.errors import ApiError, refusal_status, status_of
from server.api.malformed import MalformedRequest
from server.api.wire import FieldViolation
from server.application.ports import BrokerUnavailable, StorageUnavailable, WriterFenced
from server.application.reconciler import NoBroker
from server.application.service import NotAllowed, NotFound
from server.application.subscriptions import SequenceOutOfRange, SubscriberOverflow
from server.domain.refusals import Refusal, RefusalKind

Code = grpc.StatusCode


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (NotFound("no such row"), Code.NOT_FOUND),
        (StorageUnavailable("disk gone"), Code.UNAVAILABLE),
        (WriterFenced("lease lost"), Code.UNAVAILABLE),
        (BrokerUnavailable("not connected"), Code.UNAVAILABLE),
        (NoBroker("no broker configured"), Code.UNAVAILABLE),
        (SequenceOutOfRange(1, 5, 9), Code.OUT_OF_RANGE),
        (SubscriberOverflow(10, 4), Code.RESOURCE_EXHAUSTED),
    ],
)
def test_an_error_is_its_code_with_its_own_words(error, code):
    status = status_of(error)
    assert status is not None
    assert (status.code, status.message, status.violations) == (code, str(error), [])


def test_a_field_violation_is_invalid_argument_naming_the_field():
    status = status_of(FieldViolation("events[0].fill.price", "must be positive"))
    assert status is not None and status.code is Code.INVALID_ARGUMENT
    assert status.message == "events[0].fill.price: must be positive"
    assert [(v.field, v.description) for v in status.violations] == [
        ("events[0].fill.price", "must be positive")
    ]


@pytest.mark.parametrize("kind", list(RefusalKind))
def test_every_refusal_kind_has_a_status(kind):
    refusal = Refusal(kind, "amount", "more than the 5 USD available")
    status = refusal_status(refusal)
    assert status.message == "amount: more than the 5 USD available"
    raised = status_of(NotAllowed(refusal))
    assert raised is not None and raised.code is status.code
    if kind is RefusalKind.NOT_FOUND:
        assert (status.code, status.violations) == (Code.NOT_FOUND, [])
        return
    expected = {RefusalKind.ID_REUSED: Code.ALREADY_EXISTS, RefusalKind.RETRY: Code.UNAVAILABLE}
    assert status.code is expected.get(kind, Code.FAILED_PRECONDITION)
    assert [v.field for v in status.violations] == ["amount"]


def test_an_error_with_no_entry_is_left_to_grpc():
    assert status_of(KeyError("a bug")) is None
    assert status_of(ValueError("a bug")) is None


def test_a_malformed_request_is_left_to_the_guard_that_logs_it():
    malformed = MalformedRequest("portfolio.v1.IngestRequest", "truncated")
    assert malformed.answered_by_guard
    assert not ApiError(Code.INTERNAL, "x").answered_by_guard


def test_every_error_carries_its_rich_status(stub):
    """Clients read google.rpc.Status the same way whatever the error."""
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetPosition(pb.GetPositionRequest(account_id="A1", instrument_id="NOPE"))
    status = rpc_status.from_call(raised.value)
    assert status is not None
    assert status.code == Code.NOT_FOUND.value[0]
    assert status.message == raised.value.details()
