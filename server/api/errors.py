"""How every failure leaves the service: the one table from a kind of error to its gRPC status
(canonical codes, `google.rpc` details as AIP-193 has them).

Handlers raise; they never pick a status code themselves (where the servicer itself decides a
failure, it raises one of ApiError's named constructors). The RPC methods are wrapped by
`answers_errors` (or `answers_stream_errors`), which look the error up here and end the call
with its status, so a new kind of error is mapped by one entry in `_STATUS`. An error with no
entry is a bug: it is left to grpc (or the method) to report.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from portfolio.v1 import portfolio_pb2 as pb
from server.api.wire import FieldViolation
from server.application.ports import BrokerUnavailable, StorageUnavailable
from server.application.reconciler import NoBroker
from server.application.service import NotAllowed, NotFound
from server.application.subscriptions import SequenceOutOfRange, SubscriberOverflow
from server.domain.refusals import Refusal, RefusalKind

if TYPE_CHECKING:
    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

Servicer = TypeVar("Servicer")
Request = TypeVar("Request")
Response = TypeVar("Response")


class ApiError(Exception):
    """An RPC that fails with a status code; `violations` become a `google.rpc.BadRequest`."""

    #: Set by errors that the request guard answers (and logs) itself: see malformed.py.
    answered_by_guard: ClassVar[bool] = False

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        violations: list[FieldViolation] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.violations = violations or []

    @classmethod
    def invalid(cls, violation: FieldViolation) -> ApiError:
        return cls(grpc.StatusCode.INVALID_ARGUMENT, str(violation), [violation])

    @classmethod
    def unavailable(cls, message: str) -> ApiError:
        """Nothing is wrong with the request: the same call may succeed later."""
        return cls(grpc.StatusCode.UNAVAILABLE, message)

    @classmethod
    def already_exists(cls, message: str) -> ApiError:
        """An id already names something else: a retry will not help, a new id will."""
        return cls(grpc.StatusCode.ALREADY_EXISTS, message)

    @classmethod
    def internal(cls, message: str) -> ApiError:
        """The service failed (it logged why); the message says where to look."""
        return cls(grpc.StatusCode.INTERNAL, message)

    def to_status(self) -> grpc.Status:
        status = status_pb2.Status(code=getattr(code_pb2, self.code.name), message=self.message)
        if self.violations:
            detail = any_pb2.Any()
            detail.Pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=violation.field, description=violation.description
                        )
                        for violation in self.violations
                    ]
                )
            )
            status.details.append(detail)
        converted: grpc.Status = rpc_status.to_status(status)
        return converted


# -- the table ---------------------------------------------------------------------------------

# Both refusals a caller can act on by re-reading state are FAILED_PRECONDITION with the field in
# a BadRequest; NOT_FOUND says what is missing in its message, as every NOT_FOUND here does.
_REFUSALS: dict[RefusalKind, grpc.StatusCode] = {
    RefusalKind.PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    RefusalKind.CONFLICT: grpc.StatusCode.FAILED_PRECONDITION,
    RefusalKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    RefusalKind.ID_REUSED: grpc.StatusCode.ALREADY_EXISTS,
    RefusalKind.RETRY: grpc.StatusCode.UNAVAILABLE,
}


#: An ingested event's rejection, for programs: `EventAck.code`.
REJECT_CODES = {
    RefusalKind.PRECONDITION: pb.REJECT_CODE_FAILED_PRECONDITION,
    RefusalKind.CONFLICT: pb.REJECT_CODE_CONFLICT,
    RefusalKind.NOT_FOUND: pb.REJECT_CODE_NOT_FOUND,
    RefusalKind.ID_REUSED: pb.REJECT_CODE_ID_REUSED,
    RefusalKind.RETRY: pb.REJECT_CODE_RETRY_LATER,
}
assert REJECT_CODES.keys() == set(RefusalKind), "a refusal kind without its reject code"


def refusal_status(refusal: Refusal) -> ApiError:
    """The status of the domain refusing an event."""
    code = _REFUSALS[refusal.kind]
    if code is grpc.StatusCode.NOT_FOUND:
        return ApiError(code, str(refusal))
    violation = FieldViolation(refusal.field, refusal.reason)
    return ApiError(code, str(violation), [violation])


def _said(code: grpc.StatusCode) -> Callable[[Exception], ApiError]:
    """The error's own text as the status message, without details."""
    return lambda error: ApiError(code, str(error))


def _not_allowed(error: NotAllowed) -> ApiError:
    return refusal_status(error.refusal)


# Looked up along the error's class hierarchy, nearest class first (so WriterFenced is a
# StorageUnavailable, MalformedRequest an ApiError).
_STATUS: dict[type[Exception], Callable[[Any], ApiError]] = {
    ApiError: lambda error: error,
    FieldViolation: ApiError.invalid,
    NotFound: _said(grpc.StatusCode.NOT_FOUND),
    NotAllowed: _not_allowed,
    StorageUnavailable: _said(grpc.StatusCode.UNAVAILABLE),
    BrokerUnavailable: _said(grpc.StatusCode.UNAVAILABLE),
    NoBroker: _said(grpc.StatusCode.UNAVAILABLE),
    SequenceOutOfRange: _said(grpc.StatusCode.OUT_OF_RANGE),
    SubscriberOverflow: _said(grpc.StatusCode.RESOURCE_EXHAUSTED),
}


def status_of(error: BaseException) -> ApiError | None:
    """The status `error` ends a call with; None for an error with no entry (a bug)."""
    for kind in type(error).__mro__:
        make = _STATUS.get(kind)
        if make is not None:
            return make(error)
    return None


# -- ending calls with it ----------------------------------------------------------------------


def end_with(context: Context, error: Exception) -> None:
    """Sets the status the call ends with once its handler returns, without ending it now (a
    stream whose client has not yet read what was written)."""
    found = status_of(error)
    if found is None:
        raise error
    status = found.to_status()
    context.set_code(status.code)
    context.set_details(status.details)
    context.set_trailing_metadata(status.trailing_metadata)


def _answerable(error: Exception) -> ApiError | None:
    found = status_of(error)
    return None if found is None or found.answered_by_guard else found


def answers_errors(
    method: Callable[[Servicer, Request, Context], Awaitable[Response]],
) -> Callable[[Servicer, Request, Context], Awaitable[Response]]:
    """A unary-response RPC method whose errors end the call with the status of the table."""

    @functools.wraps(method)
    async def answering(self: Servicer, request: Request, context: Context) -> Response:
        try:
            return await method(self, request, context)
        except Exception as error:
            found = _answerable(error)
            if found is None:
                raise
            await context.abort_with_status(found.to_status())

    return answering


def answers_stream_errors(
    method: Callable[[Servicer, Request, Context], AsyncGenerator[Response, None]],
) -> Callable[[Servicer, Request, Context], AsyncGenerator[Response, None]]:
    """A response-streaming RPC method whose errors end the stream with the status of the
    table, after the responses already sent."""

    @functools.wraps(method)
    async def answering(
        self: Servicer, request: Request, context: Context
    ) -> AsyncGenerator[Response, None]:
        async with contextlib.aclosing(method(self, request, context)) as responses:
            try:
                async for response in responses:
                    yield response
            except Exception as error:
                found = _answerable(error)
                if found is None:
                    raise
                await context.abort_with_status(found.to_status())

    return answering
