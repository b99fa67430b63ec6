"""Traces: the one home of the service's OpenTelemetry tracer and of how its spans are exported.

Off unless `--trace-export` is `otlp` or `console`. While off, `tracer()` is None and every
hook on the write path (the group commit, the journal and write-ahead log appends, the views'
writes) takes the branch that builds nothing: no span, no link, no context copied. While on,
the spans of one fill's way are:

- `<service>/<method>` (SERVER): every RPC, child of the caller's context taken from the call's
  `traceparent`/`tracestate` metadata (server/api/tracing_interceptor.py);
- `portfolio.ingest.batch`: one Ingest message, from its arrival to its ack, child of the
  Ingest call's span;
- `portfolio.commit`: one group commit, a root span linked to every batch (or unary write) it
  holds: a group joins many callers' traces, so it can be the child of none of them;
- `portfolio.journal.append` (the durable append, whatever the store) and, on a local store,
  `portfolio.wal.write` inside it; then `portfolio.apply` (the group booked in the ledger);
- `portfolio.journal.copy`: the copier's ArcticDB append, linked to the appends it copies;
- `portfolio.views.write`: one write of the analysts' views (their thread coalesces many
  commits, so it is a root span of its own).

One tracer per process (`install`), as OpenTelemetry's own global is: a service process runs
one service. Tests that run several services in one process trace one at a time.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from opentelemetry import context as otel_context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import Tracer

log = logging.getLogger("portfolio.traces")

EXPORTS = ("none", "otlp", "console")
SERVICE_NAME = "portfolio-manager"
# A collector that does not answer delays a stop by about this (traces and metrics at once).
EXPORT_TIMEOUT_SECONDS = 2.0

BATCH = "portfolio.ingest.batch"
COMMIT = "portfolio.commit"
JOURNAL_APPEND = "portfolio.journal.append"
WAL_WRITE = "portfolio.wal.write"
APPLY = "portfolio.apply"
JOURNAL_COPY = "portfolio.journal.copy"
VIEWS_WRITE = "portfolio.views.write"

_tracer: Tracer | None = None

P = ParamSpec("P")
R = TypeVar("R")


def tracer() -> Tracer | None:
    """The service's tracer while tracing is on; None while it is off (build nothing)."""
    return _tracer


def traced(name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Runs the function inside a span `name` (child of the current one) while tracing is on;
    while off, one check per call and nothing built."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            if _tracer is None:
                return function(*args, **kwargs)
            with _tracer.start_as_current_span(name):
                return function(*args, **kwargs)

        return call

    return decorate


class Tracing:
    """The tracer provider of one running service and where its spans go: an OTLP collector
    (gRPC, `endpoint` such as http://127.0.0.1:4317), the console (stdout, for a look), or
    `exporter` (tests: an in-memory exporter, spans handed over as each ends)."""

    def __init__(
        self, export: str = "none", endpoint: str = "", exporter: SpanExporter | None = None
    ) -> None:
        self.provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        if exporter is not None:
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        elif export == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            # Batched on the processor's thread; past its queue (2,048 spans) spans are
            # dropped, never held: a collector that is down costs no memory growth.
            self.provider.add_span_processor(
                BatchSpanProcessor(
                    OTLPSpanExporter(endpoint=endpoint, timeout=EXPORT_TIMEOUT_SECONDS),
                    export_timeout_millis=EXPORT_TIMEOUT_SECONDS * 1000,
                )
            )
        elif export == "console":
            self.provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        else:
            raise ValueError(f"trace export must be one of {', '.join(EXPORTS)}, got {export!r}")
        self.tracer = self.provider.get_tracer("portfolio.server")

    def install(self) -> None:
        """Makes this the process's tracer: the hooks start building spans."""
        global _tracer
        _tracer = self.tracer

    def close(self) -> None:
        """Stops tracing (if this one is installed) and exports what is left."""
        global _tracer
        if _tracer is self.tracer:
            _tracer = None
        self.provider.shutdown()


def for_thread(tracer: Tracer, name: str, function: Callable[P, R]) -> Callable[P, R]:
    """`function` to run on another thread (an executor's: asyncio does not carry the context
    there) inside a span `name`, child of the span current here."""
    parent = otel_context.get_current()

    @functools.wraps(function)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        with tracer.start_as_current_span(name, parent):
            return function(*args, **kwargs)

    return call
