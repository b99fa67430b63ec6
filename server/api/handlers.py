"""Server interceptors that swap each method's handler for a rewritten one.

grpc.aio hands an interceptor the method's handler on every call; rewriting it each time would
cost every call, so the rewritten handler is made once per method and reused (a new one is made
only if grpc hands a different handler, as an interceptor before this one may).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

if TYPE_CHECKING:
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

_MAKE = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


class HandlerRewrite(grpc.aio.ServerInterceptor):
    """Subclasses say how to rewrite one method's handler (`rewrite`)."""

    def __init__(self) -> None:
        self._rewritten: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        known = self._rewritten.get(method)
        if known is None or known[0] is not handler:
            known = (handler, self.rewrite(method, handler))
            self._rewritten[method] = known
        return known[1]

    def rewrite(self, method: str, handler: Handler) -> Handler:
        raise NotImplementedError


def behaviour_of(handler: Handler) -> Callable[..., Any] | None:
    """The method's implementation, whatever its kind of streaming."""
    behaviour: Callable[..., Any] | None = (
        handler.unary_unary or handler.unary_stream or handler.stream_unary
    ) or handler.stream_stream
    return behaviour


def rebuilt(
    handler: Handler,
    behaviour: Callable[..., Any],
    deserialize: Callable[[bytes], Any] | None,
    serialize: Callable[[Any], bytes] | None,
) -> Handler:
    """A handler of the same kind of streaming as `handler`, with these parts."""
    make = _MAKE[handler.request_streaming, handler.response_streaming]
    made: Handler = make(behaviour, deserialize, serialize)
    return made


_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def status_raised(error: BaseException, context: Context) -> str:
    """The status name a call raising `error` ends with (for its metrics and its span)."""
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return "CANCELLED"
    return _code_name(context.code()) or "UNKNOWN"  # an abort set its code before raising


def status_ended(status: str, context: Context) -> str:
    """A handler that returned after setting a code (no abort) ended with that code."""
    if status != "OK":
        return status
    return _code_name(context.code()) or "OK"


def _code_name(code: object) -> str | None:
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        return _NAMES.get(code)
    return None
