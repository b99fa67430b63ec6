"""Rewrites that swap each method's handler for a rewritten one (timing, traces, auth, the
malformed-request guard, pre-encoded answers).

The service applies them where services are added (`RewritingRegistry`): each handler is
rewritten once, before the server starts, and grpc runs the rewritten one with no interceptor.
As grpc interceptors the same rewrites cost every call one coroutine per interceptor just to
hand over the handler (four of them: 4-7 us per call in process, more in a running server).
Each rewrite still works as an interceptor (tests and tools install them so): the rewritten
handler is then made once per method and reused (a new one is made only if grpc hands a
different handler, as an interceptor before this one may).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, cast

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


class RewritingRegistry:
    """Stands for the server where services are added (`add_X_to_server(servicer, registry)`):
    their handlers reach the server already rewritten by `rewrites`, the first outermost, as
    grpc would chain them as interceptors in that order.

    Every handler goes to the server as a generic handler (found by method name per call),
    also those the generated code adds as registered methods: grpc.aio waits for a call with
    one task per registered method, and its main loop hands each call over through an
    `asyncio.wait` on all of those tasks, for every call (this service has 30 methods; a
    no-op server without registered methods waits on one task). The generated code adds the
    same handlers as a generic handler too."""

    def __init__(self, server: grpc.aio.Server, rewrites: Sequence[HandlerRewrite]) -> None:
        self._server = server
        self._inner_first = tuple(reversed(rewrites))

    def rewrite(self, method: str, handler: Handler) -> Handler:
        for rewrite in self._inner_first:
            handler = rewrite.rewrite(method, handler)
        return handler

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: Mapping[str, Handler]
    ) -> None:
        rewritten = {
            name: self.rewrite(f"/{service_name}/{name}", handler)
            for name, handler in method_handlers.items()
        }
        generic = grpc.method_handlers_generic_handler(service_name, rewritten)
        self._server.add_generic_rpc_handlers((generic,))

    def add_generic_rpc_handlers(
        self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]
    ) -> None:
        self._server.add_generic_rpc_handlers(
            tuple(_RewrittenGeneric(found, self) for found in generic_rpc_handlers)
        )

    def as_server(self) -> grpc.aio.Server:
        """This registry, typed as what the generated `add_X_to_server` functions take (they
        call only the two methods above)."""
        return cast("grpc.aio.Server", self)


class _RewrittenGeneric(grpc.GenericRpcHandler):
    """A generic handler (found by grpc per call, by method name) whose handlers come out
    rewritten: each once per method, then reused while the inner one hands the same handler."""

    def __init__(self, inner: grpc.GenericRpcHandler, registry: RewritingRegistry) -> None:
        self._inner = inner
        self._registry = registry
        self._rewritten: dict[str, tuple[Handler, Handler]] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        known = self._rewritten.get(method)
        if known is None or known[0] is not handler:
            known = (handler, self._registry.rewrite(method, handler))
            self._rewritten[method] = known
        return known[1]


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
