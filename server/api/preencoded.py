"""Responses written as bytes that are already their wire form go out unchanged.

The update stream's messages are encoded once per update and shared by every subscriber (and
framed into batches from those bytes); grpc would otherwise hand each write to the method's
generated serializer, which takes only the message class. Installed once on the server, it
gives every method a serializer that lets `bytes` through and serializes anything else as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from server.api.handlers import HandlerRewrite, behaviour_of, rebuilt

if TYPE_CHECKING:
    from server.api.handlers import Handler


class PreEncodedResponses(HandlerRewrite):
    def rewrite(self, method: str, handler: Handler) -> Handler:
        behaviour = behaviour_of(handler)
        if handler.response_serializer is None or behaviour is None:
            return handler
        serialize = _passing_bytes(handler.response_serializer)
        return rebuilt(handler, behaviour, handler.request_deserializer, serialize)


def _passing_bytes(serialize: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    def serialize_or_pass(message: Any) -> bytes:
        return message if type(message) is bytes else serialize(message)

    return serialize_or_pass
