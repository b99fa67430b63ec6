"""The SDK's exceptions, so callers handle one type instead of raw gRPC errors.

`PortfolioError.code` keeps the gRPC status code, because that is what tells a caller whether to
retry (UNAVAILABLE), fix the request (INVALID_ARGUMENT, with `field_violations` naming the
field) or re-read state (`ResyncRequired`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from client.models import EventAck, ExecutionEvent

#: Trailing metadata key of the rich status (google.rpc.Status).
STATUS_DETAILS_KEY = "grpc-status-details-bin"

# What grpc.aio reports when one of its own send operations fails.
_FAILED_SEND_DETAILS = "Internal error from Core"


class PortfolioError(Exception):
    """A call failed; `code` says why in gRPC terms."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        field_violations: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        #: (field, description) pairs from the service's BadRequest detail.
        self.field_violations: list[tuple[str, str]] = list(field_violations)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the error intact across processes (e.g. a ProcessPoolExecutor).
        return (type(self), (self.code, self.message, self.field_violations))

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}"
        if self.field_violations:
            text += " (" + "; ".join(f"{f}: {d}" for f, d in self.field_violations) + ")"
        return text


class ResyncRequired(PortfolioError):
    """The subscription cannot resume without a gap: the sequence left the replay buffer.

    Re-read the state you keep (e.g. `list_positions`), then subscribe again from that read's
    `as_of_sequence + 1`.
    """


class ProtocolViolation(PortfolioError):
    """The service answered with something the contract does not allow; retrying will not help."""

    def __init__(self, message: str) -> None:
        super().__init__(grpc.StatusCode.INTERNAL, message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message,))


class IngestIncomplete(PortfolioError):
    """`ingest` gave up before every event was acked.

    Every event in `unacked` may or may not have been applied; since the service is idempotent by
    event id, passing them to `ingest` again is always safe.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        acks: Sequence[EventAck],
        unacked: Sequence[ExecutionEvent],
    ) -> None:
        super().__init__(code, message)
        #: The acks received, in the order of the input events.
        self.acks: list[EventAck] = list(acks)
        #: The events without an ack, in input order.
        self.unacked: list[ExecutionEvent] = list(unacked)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.message, self.acks, self.unacked))

    def __str__(self) -> str:
        return f"{super().__str__()} ({len(self.acks)} events acked, {len(self.unacked)} unacked)"


def from_rpc_error(error: grpc.RpcError, *, subscription: bool = False) -> PortfolioError:
    """The SDK exception for a failed call, sync or asyncio.

    With `subscription`, OUT_OF_RANGE becomes `ResyncRequired`: for SubscribeUpdates it means the
    requested sequence is older than the service's replay buffer.
    """
    status: status_pb2.Status | None = None
    if isinstance(error, grpc.aio.AioRpcError):
        # Once the error exists its status is plain data: nothing here needs awaiting.
        code, message = error.code(), error.details() or ""
        status = _status_from_metadata(error.trailing_metadata())
        if _is_failed_send(error):
            code = grpc.StatusCode.UNAVAILABLE
            message = f"the stream failed while sending ({error.debug_error_string()})"
    elif isinstance(error, grpc.Call):
        code, message = error.code(), error.details() or ""
        try:
            status = rpc_status.from_call(error)
        except ValueError:
            # The rich status disagrees with the call's own; its details may still help.
            status = _status_from_metadata(error.trailing_metadata())
    else:
        code, message = grpc.StatusCode.UNKNOWN, str(error)
    resync = subscription and code == grpc.StatusCode.OUT_OF_RANGE
    error_type = ResyncRequired if resync else PortfolioError
    return error_type(code, message, _field_violations(status))


def _is_failed_send(error: grpc.aio.AioRpcError) -> bool:
    """grpc.aio's stand-in status when a write fails because the call is already ending.

    The real status (often UNAVAILABLE) races with the failed write and can be replaced by this
    locally made INTERNAL one; it says the transport went away, not that the service erred.
    """
    return (
        error.code() == grpc.StatusCode.INTERNAL
        and error.details() == _FAILED_SEND_DETAILS
        and '"execute_batch"' in (error.debug_error_string() or "")
    )


def _status_from_metadata(metadata: Iterable[tuple[str, Any]] | None) -> status_pb2.Status | None:
    for key, value in metadata or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                return None
    return None


def _field_violations(status: status_pb2.Status | None) -> list[tuple[str, str]]:
    if status is None:
        return []
    violations: list[tuple[str, str]] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations.extend((v.field, v.description) for v in bad_request.field_violations)
    return violations
