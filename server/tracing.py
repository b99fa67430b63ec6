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

Exports to an OTLP collector (these spans, and the pushed metrics of server/telemetry.py) are
watched by `Exports`: a collector that is down is logged once when a signal's exports start
failing (with the cause) and once when they work again, not at every attempt as the exporter
itself would, and shows on health `exports`.
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

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

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricExporter

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
        self,
        export: str = "none",
        endpoint: str = "",
        exporter: SpanExporter | None = None,
        exports: Exports | None = None,
    ) -> None:
        self.provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        if exporter is not None:
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        elif export == "otlp":
            # Batched on the processor's thread; past its queue (2,048 spans) spans are
            # dropped, never held: a collector that is down costs no memory growth.
            self.provider.add_span_processor(
                BatchSpanProcessor(
                    otlp_span_exporter(endpoint, exports or Exports(endpoint)),
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


# -- exports to an OTLP collector ------------------------------------------------------------

# The OTLP exporters' own logger: a warning at each retry and an error at each failed export.
EXPORTER_LOGGER = "opentelemetry.exporter.otlp.proto.grpc.exporter"


class Exports:
    """Whether the exports to the OTLP collector at `endpoint` work, per signal (`traces`,
    `metrics`: a collector may take one and refuse the other, and spans are only sent while
    there are some). A signal whose export fails is logged once, as an ERROR with the cause,
    and once more, as an INFO, at its next export that works; meanwhile the exporter's own
    lines (a warning per retry, an error per export) are dropped. `on_change(healthy)` is
    called, on the exporting thread, when the exports as a whole start failing (any signal)
    or all work again: the service turns health `exports` with it.

    Nothing is held for a collector that is down: what failed is dropped, as the SDK does.
    """

    def __init__(self, endpoint: str, on_change: Callable[[bool], None] | None = None) -> None:
        self.endpoint = endpoint
        self.on_change = on_change
        self._failures: collections.Counter[str] = collections.Counter()  # by signal, ever
        self._failing: dict[str, str] = {}  # signal -> the cause of its first failed export
        self._lock = threading.Lock()

    @property
    def healthy(self) -> bool:
        return not self._failing

    def failing(self, signal: str) -> bool:
        return signal in self._failing

    def failures(self) -> dict[str, int]:
        """Failed exports so far, by signal (what each held was dropped)."""
        with self._lock:
            return dict(self._failures)

    def export(self, signal: str, attempt: Callable[[], bool]) -> bool:
        """Runs one export (`attempt`: True if the collector took it), its exporter's log
        lines held back; notes how it went. An error raised is a failed export (and is not
        raised on: the SDK would log its traceback at every export)."""
        held = _Held()
        _holding.held = held
        try:
            worked = attempt()
        except Exception as error:
            worked, held.cause = False, f"{type(error).__name__}: {error}"
        finally:
            _holding.held = None
        if worked:
            self._worked(signal)
        else:
            self._failed(signal, held.cause or "the exporter reported a failure")
        return worked

    def _failed(self, signal: str, cause: str) -> None:
        with self._lock:
            self._failures[signal] += 1
            if signal in self._failing:
                return
            was_healthy = not self._failing
            self._failing[signal] = cause
        log.error(
            "OTLP %s export to %s failing: %s; dropped until it works again (logged then)",
            signal, self.endpoint, cause,
        )  # fmt: skip
        if was_healthy and self.on_change is not None:
            self.on_change(False)

    def _worked(self, signal: str) -> None:
        with self._lock:
            if signal not in self._failing:
                return
            del self._failing[signal]
            healthy = not self._failing
        log.info("OTLP %s export to %s working again", signal, self.endpoint)
        if healthy and self.on_change is not None:
            self.on_change(True)


class _Held:
    """The exporter's lines during one watched export: dropped, the last one kept as the
    cause (its error line names the status code and the collector's details)."""

    def __init__(self) -> None:
        self.cause = ""


class _Holding(threading.local):
    held: _Held | None = None


_holding = _Holding()


class _HoldBack(logging.Filter):
    """On the exporter's logger: drops its warnings and errors logged inside a watched
    export (on that thread); any other line passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        held = _holding.held
        if held is None or record.levelno < logging.WARNING:
            return True
        held.cause = record.getMessage()
        return False


def _hold_back_exporter_lines() -> None:
    """Installs _HoldBack once, first among the logger's filters (the SDK's own filter drops
    a line repeated within 20 s, which would otherwise hide the cause from us)."""
    logger = logging.getLogger(EXPORTER_LOGGER)
    if not any(isinstance(f, _HoldBack) for f in logger.filters):
        logger.filters.insert(0, _HoldBack())


def otlp_span_exporter(endpoint: str, exports: Exports) -> SpanExporter:
    """The OTLP/gRPC span exporter, watched by `exports`."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExportResult

    _hold_back_exporter_lines()

    class Watched(OTLPSpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            send = super().export
            worked = exports.export("traces", lambda: send(spans) is SpanExportResult.SUCCESS)
            return SpanExportResult.SUCCESS if worked else SpanExportResult.FAILURE

    return Watched(endpoint=endpoint, timeout=EXPORT_TIMEOUT_SECONDS)


def otlp_metric_exporter(endpoint: str, exports: Exports) -> MetricExporter:
    """The OTLP/gRPC metric exporter, watched by `exports`."""
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics.export import MetricExportResult, MetricsData

    _hold_back_exporter_lines()

    class Watched(OTLPMetricExporter):
        def export(
            self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
        ) -> MetricExportResult:
            send = super().export
            worked = exports.export(
                "metrics",
                lambda: send(metrics_data, timeout_millis, **kwargs) is MetricExportResult.SUCCESS,
            )
            return MetricExportResult.SUCCESS if worked else MetricExportResult.FAILURE

    return Watched(endpoint=endpoint, timeout=EXPORT_TIMEOUT_SECONDS)
