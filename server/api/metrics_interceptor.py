"""Every call's duration and status into `rpc.server.call.duration` (server/telemetry.py).

Installed first, so that it times what the other interceptors add (the malformed-request guard's
refusals are calls too). A streaming call is timed from its start to its end: a subscription's
observation is its whole life. The status is the one the call ended with: OK, the code a handler
aborted with, CANCELLED when the client went away, UNKNOWN for anything else that escaped.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from opentelemetry.metrics import Histogram

from server.api.handlers import (
    HandlerRewrite,
    behaviour_of,
    rebuilt,
    status_ended,
    status_raised,
)

if TYPE_CHECKING:
    from server.api.handlers import Handler

    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class RpcMetrics(HandlerRewrite):
    def __init__(self, duration: Histogram) -> None:
        super().__init__()
        self._duration = duration

    def rewrite(self, method: str, handler: Handler) -> Handler:
        behaviour = behaviour_of(handler)
        if behaviour is None:
            return handler
        timed = self._timed(method, behaviour)
        if timed is None:
            return handler
        return rebuilt(handler, timed, handler.request_deserializer, handler.response_serializer)

    def _timed(self, method: str, behaviour: Callable[..., Any]) -> Callable[..., Any] | None:
        record = self._duration.record
        by_status: dict[str, dict[str, str]] = {}

        def attributes(status: str) -> dict[str, str]:
            found = by_status.get(status)
            if found is None:  # made once per method and status: nothing to build per call
                found = by_status[status] = {
                    "rpc.system.name": "grpc",
                    "rpc.method": method.lstrip("/"),
                    "rpc.response.status_code": status,
                }
            return found

        if inspect.isasyncgenfunction(behaviour):

            async def streaming(request: Any, context: Context) -> AsyncIterator[Any]:
                began, status = time.perf_counter(), "OK"
                try:
                    async for response in behaviour(request, context):
                        yield response
                except BaseException as error:
                    status = status_raised(error, context)
                    raise
                finally:
                    record(time.perf_counter() - began, attributes(status_ended(status, context)))

            return streaming
        if inspect.iscoroutinefunction(behaviour):

            async def unary(request: Any, context: Context) -> Any:
                began, status = time.perf_counter(), "OK"
                try:
                    return await behaviour(request, context)
                except BaseException as error:
                    status = status_raised(error, context)
                    raise
                finally:
                    record(time.perf_counter() - began, attributes(status_ended(status, context)))

            return unary
        return None
