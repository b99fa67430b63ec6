"""Responses written as bytes that are already their wire form go out unchanged.

The update stream's messages are encoded once per update and shared by every subscriber (and
framed into batches from those bytes); grpc would otherwise hand each write to the method's
generated serializer, which takes only the message class. Installed once on the server, it
gives every method a serializer that lets `bytes` through and serializes anything else as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

if TYPE_CHECKING:
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]


class PreEncodedResponses(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        # Per method: the handler grpc gave, and its copy with the tolerant serializer (made
        # once, so that the interceptors before this one see the same handler every call).
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.response_serializer is None:
            return handler
        method = handler_call_details.method
        known = self._wrapped.get(method)
        if known is None or known[0] is not handler:
            serialize = _passing_bytes(handler.response_serializer)
            known = (handler, _with_serializer(handler, serialize))
            self._wrapped[method] = known
        return known[1]


def _passing_bytes(serialize: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    def serialize_or_pass(message: Any) -> bytes:
        return message if type(message) is bytes else serialize(message)

    return serialize_or_pass


def _with_serializer(handler: Handler, serialize: Callable[[Any], bytes]) -> Handler:
    behaviour: Any = (
        handler.unary_unary or handler.unary_stream or handler.stream_unary
    ) or handler.stream_stream
    make = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[handler.request_streaming, handler.response_streaming]
    wrapped: Handler = make(behaviour, handler.request_deserializer, serialize)
    return wrapped
