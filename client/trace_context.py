"""The caller's trace context as gRPC metadata (W3C `traceparent`/`tracestate`), so the
service's spans for an ingest join the trace the caller is in (a relay's span per batch).

Outside a recording span nothing is sent and nothing is built beyond the check.
"""

from __future__ import annotations

from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()


def trace_metadata() -> tuple[tuple[str, str], ...] | None:
    """The current span's context as call metadata; None outside a span."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return tuple(carrier.items()) or None
