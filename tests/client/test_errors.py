"""Mapping gRPC failures to the SDK's exceptions, and the back-off between retries."""

from __future__ import annotations

import pickle
from decimal import Decimal

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from client.errors import (
    STATUS_DETAILS_KEY,
    IngestIncomplete,
    PortfolioError,
    ProtocolViolation,
    ResyncRequired,
    from_rpc_error,
)
from client.models import EventAck, EventResult, Fill, Side
from client.retry import INGEST_RETRY_CODES, SUBSCRIBE_RESUME_CODES, Backoff


def rich_status(code: grpc.StatusCode, message: str, *violations: tuple[str, str]) -> bytes:
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                for f, d in violations
            ]
        )
    )
    return status_pb2.Status(
        code=code.value[0], message=message, details=[detail]
    ).SerializeToString()


def aio_error(
    code: grpc.StatusCode, message: str, trailing: tuple[tuple[str, str | bytes], ...] = ()
) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details=message
    )


class SyncCallError(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """What a failed blocking call raises: an RpcError that is also a Call."""

    def __init__(self, code: grpc.StatusCode, message: str, trailing: tuple = ()) -> None:
        self._code, self._message, self._trailing = code, message, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._message

    def trailing_metadata(self) -> tuple:
        return self._trailing

    def initial_metadata(self) -> tuple:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: object) -> bool:
        return False


def test_aio_error_with_bad_request_detail() -> None:
    trailing = (
        (
            STATUS_DETAILS_KEY,
            rich_status(
                grpc.StatusCode.INVALID_ARGUMENT,
                "invalid request",
                ("account_id", "must not be empty"),
                ("instrument_id", "must not be empty"),
            ),
        ),
    )
    error = from_rpc_error(aio_error(grpc.StatusCode.INVALID_ARGUMENT, "invalid request", trailing))
    assert type(error) is PortfolioError
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == "invalid request"
    assert error.field_violations == [
        ("account_id", "must not be empty"),
        ("instrument_id", "must not be empty"),
    ]
    assert "account_id: must not be empty" in str(error)


def test_sync_error_with_bad_request_detail() -> None:
    trailing = (
        (
            STATUS_DETAILS_KEY,
            rich_status(grpc.StatusCode.INVALID_ARGUMENT, "bad", ("quantity", "> 0")),
        ),
    )
    error = from_rpc_error(SyncCallError(grpc.StatusCode.INVALID_ARGUMENT, "bad", trailing))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.field_violations == [("quantity", "> 0")]


def test_sync_error_whose_rich_status_disagrees_still_yields_its_details() -> None:
    trailing = (
        (STATUS_DETAILS_KEY, rich_status(grpc.StatusCode.INTERNAL, "other", ("price", "bad"))),
    )
    error = from_rpc_error(SyncCallError(grpc.StatusCode.INVALID_ARGUMENT, "bad", trailing))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == "bad"
    assert error.field_violations == [("price", "bad")]


def test_error_without_rich_status() -> None:
    error = from_rpc_error(aio_error(grpc.StatusCode.NOT_FOUND, "no such position"))
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.field_violations == []
    sync = from_rpc_error(SyncCallError(grpc.StatusCode.UNAVAILABLE, "down"))
    assert (sync.code, sync.message, sync.field_violations) == (
        grpc.StatusCode.UNAVAILABLE,
        "down",
        [],
    )


def test_garbage_status_details_are_ignored() -> None:
    trailing = ((STATUS_DETAILS_KEY, b"\xff\xff not a status"),)
    error = from_rpc_error(aio_error(grpc.StatusCode.INVALID_ARGUMENT, "bad", trailing))
    assert error.field_violations == []


def test_out_of_range_on_a_subscription_means_resync() -> None:
    error = aio_error(grpc.StatusCode.OUT_OF_RANGE, "sequence 3 left the replay buffer")
    resync = from_rpc_error(error, subscription=True)
    assert isinstance(resync, ResyncRequired)
    assert resync.code == grpc.StatusCode.OUT_OF_RANGE
    assert not isinstance(from_rpc_error(error), ResyncRequired)
    other = from_rpc_error(aio_error(grpc.StatusCode.INTERNAL, "x"), subscription=True)
    assert not isinstance(other, ResyncRequired)


def test_a_write_that_failed_because_the_stream_ended_reads_as_unavailable() -> None:
    # grpc.aio replaces the real status with this one when a write races the stream's end.
    failed_send = grpc.aio.AioRpcError(
        grpc.StatusCode.INTERNAL,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        details="Internal error from Core",
        debug_error_string='Failed "execute_batch": (<SendMessageOperation>,)',
    )
    assert from_rpc_error(failed_send).code == grpc.StatusCode.UNAVAILABLE
    service_error = aio_error(grpc.StatusCode.INTERNAL, "Internal error from Core")
    assert from_rpc_error(service_error).code == grpc.StatusCode.INTERNAL


def test_a_bare_rpc_error_maps_to_unknown() -> None:
    assert from_rpc_error(grpc.RpcError("odd")).code == grpc.StatusCode.UNKNOWN


def test_protocol_violation_is_internal() -> None:
    assert ProtocolViolation("bad answer").code == grpc.StatusCode.INTERNAL
    assert grpc.StatusCode.INTERNAL.value[0] == code_pb2.INTERNAL


def test_errors_survive_pickling() -> None:
    fill = Fill(
        fill_id="F1",
        account_id="A1",
        strategy_id="S1",
        instrument_id="AAPL",
        side=Side.BUY,
        quantity=Decimal(1),
        price=Decimal(1),
    )
    ack = EventAck(event_id="F0", sequence=1, result=EventResult.ACCEPTED)
    errors: list[PortfolioError] = [
        PortfolioError(grpc.StatusCode.INVALID_ARGUMENT, "bad", [("account_id", "empty")]),
        ResyncRequired(grpc.StatusCode.OUT_OF_RANGE, "gone"),
        ProtocolViolation("odd answer"),
        IngestIncomplete(grpc.StatusCode.UNAVAILABLE, "down", acks=[ack], unacked=[fill]),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert (copy.code, copy.message, copy.field_violations) == (
            error.code,
            error.message,
            error.field_violations,
        )
        assert str(copy) == str(error)
    incomplete = pickle.loads(pickle.dumps(errors[-1]))
    assert (incomplete.acks, incomplete.unacked) == ([ack], [fill])


def test_retry_policies() -> None:
    assert grpc.StatusCode.UNAVAILABLE in INGEST_RETRY_CODES
    assert grpc.StatusCode.INVALID_ARGUMENT not in INGEST_RETRY_CODES
    assert {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    } == SUBSCRIBE_RESUME_CODES


def test_backoff_grows_to_its_cap() -> None:
    backoff = Backoff(initial=0.1, maximum=1.0, multiplier=2.0, jitter=0.0)
    assert [backoff.delay(n) for n in range(6)] == [0.0, 0.1, 0.2, 0.4, 0.8, 1.0]
    assert backoff.delay(10_000) == 1.0


def test_backoff_jitter_only_shortens() -> None:
    backoff = Backoff(initial=1.0, maximum=1.0, jitter=0.5)
    delays = [backoff.delay(1) for _ in range(200)]
    assert all(0.5 <= d <= 1.0 for d in delays)
    assert len(set(delays)) > 1


@pytest.mark.parametrize(
    "arguments",
    [{"initial": -1.0}, {"maximum": -1.0}, {"multiplier": 0.5}, {"jitter": 1.5}],
)
def test_backoff_rejects_nonsense(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        Backoff(**arguments)
