"""A server span for every call, child of the caller's trace context (server/tracing.py).

The caller's context comes from the call's `traceparent`/`tracestate` metadata (W3C Trace
Context), so a relay's span, the call's span and what the service does for it make one trace.
Attributes follow the semantic conventions for gRPC: `rpc.system`, `rpc.service`,
`rpc.method`, `rpc.grpc.status_code`; the span's status is an error only for the codes the
conventions call server errors (a refused request is the caller's fault, not the service's).

Ingest gets a span per message (`portfolio.ingest.batch`), from its arrival to its ack: the
answers come in the order of the batches, so each answer ends the oldest open batch span. The
batch's context is made current in the task that admits it, so the group commit holding its
events links to it.

Installed only while tracing is on: with it off no call pays anything.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from opentelemetry import context as otel_context
from opentelemetry.context import Context as TraceContext
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from server.api.handlers import (
    HandlerRewrite,
    behaviour_of,
    rebuilt,
    status_ended,
    status_raised,
)
from server.tracing import BATCH

if TYPE_CHECKING:
    from server.api.handlers import Handler

    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

INGEST = "/portfolio.v1.PortfolioManager/Ingest"
PROPAGATOR = TraceContextTextMapPropagator()
_FIELDS = frozenset(PROPAGATOR.fields)
# The codes the gRPC semantic conventions count as a server span's error.
SERVER_ERRORS = frozenset(
    {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
)
_CODES = {code.name: code.value[0] for code in grpc.StatusCode}


def caller_context(context: Context) -> TraceContext:
    """The trace context the caller sent in the call's metadata (empty when none)."""
    carrier = {
        key: value if isinstance(value, str) else value.decode("ascii", "replace")
        for key, value in context.invocation_metadata() or ()
        if key in _FIELDS
    }
    return PROPAGATOR.extract(carrier)


class RpcTraces(HandlerRewrite):
    def __init__(self, tracer: Tracer) -> None:
        super().__init__()
        self._tracer = tracer

    def rewrite(self, method: str, handler: Handler) -> Handler:
        behaviour = behaviour_of(handler)
        if behaviour is None:
            return handler
        traced = self._traced(method, behaviour)
        if traced is None:
            return handler
        return rebuilt(handler, traced, handler.request_deserializer, handler.response_serializer)

    def _traced(self, method: str, behaviour: Callable[..., Any]) -> Callable[..., Any] | None:
        tracer = self._tracer
        name = method.lstrip("/")
        service, _, short = name.rpartition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": short}
        ingest = method == INGEST

        if inspect.isasyncgenfunction(behaviour):

            async def streaming(request: Any, context: Context) -> AsyncIterator[Any]:
                parent = caller_context(context)
                span = tracer.start_span(
                    name, parent, SpanKind.SERVER, attributes, record_exception=False
                )
                within = set_span_in_context(span, parent)
                # Current for the rest of this call's task (grpc runs each call in a task of
                # its own), never detached: a stream's generator may be closed from another
                # task, where a detach would fail.
                otel_context.attach(within)
                batches = _Batches(tracer, within) if ingest else None
                status = "OK"
                try:
                    source = batches.arriving(request) if batches is not None else request
                    async for response in behaviour(source, context):
                        if batches is not None:
                            batches.answered(response)
                        yield response
                except BaseException as error:
                    status = status_raised(error, context)
                    raise
                finally:
                    status = status_ended(status, context)
                    if batches is not None:
                        batches.close(status)
                    _finish(span, status)
                    span.end()

            return streaming
        if inspect.iscoroutinefunction(behaviour):

            async def unary(request: Any, context: Context) -> Any:
                with tracer.start_as_current_span(
                    name,
                    caller_context(context),
                    SpanKind.SERVER,
                    attributes,
                    record_exception=False,
                    set_status_on_exception=False,
                ) as span:
                    status = "OK"
                    try:
                        return await behaviour(request, context)
                    except BaseException as error:
                        status = status_raised(error, context)
                        raise
                    finally:
                        _finish(span, status_ended(status, context))

            return unary
        return None


def _finish(span: Span, status: str) -> None:
    span.set_attribute("rpc.grpc.status_code", _CODES.get(status, 2))
    if status in SERVER_ERRORS:
        span.set_status(Status(StatusCode.ERROR, status))


class _Batches:
    """The open `portfolio.ingest.batch` spans of one Ingest call, oldest first."""

    def __init__(self, tracer: Tracer, call: TraceContext) -> None:
        self._tracer = tracer
        self._call = call
        self._open: deque[Span] = deque()

    async def arriving(self, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """The requests, each with its batch span started and current where it is admitted
        (the servicer's admitting task: never detached there, for the reason above)."""
        async for request in requests:
            span = self._tracer.start_span(
                BATCH,
                self._call,
                attributes={
                    "portfolio.batch.id": str(getattr(request, "batch_id", "")),
                    "portfolio.batch.events": len(getattr(request, "events", ())),
                },
            )
            self._open.append(span)
            otel_context.attach(set_span_in_context(span, self._call))
            yield request

    def answered(self, response: Any) -> None:
        if not self._open:
            return
        span = self._open.popleft()
        reason = getattr(response, "batch_rejected_reason", "")
        if reason:  # refused whole: the caller's fault, not an error of the service
            span.set_attribute("portfolio.batch.rejected_reason", reason)
        span.end()

    def close(self, status: str) -> None:
        """The call ended: batches never answered end with it."""
        while self._open:
            span = self._open.popleft()
            span.set_status(Status(StatusCode.ERROR, f"the call ended {status} before the ack"))
            span.end()
