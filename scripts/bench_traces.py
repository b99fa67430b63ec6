"""What traces cost the write path: the same service with `--trace-export otlp` and without, in
the same run, rounds interleaved (server/tracing.py).

Both services push their metrics to the same OTLP endpoint (a collector in this process that
counts what it is sent and drops it), so the only difference is the traces: per Ingest call a
server span, per batch a span, per group commit a commit, an append, a WAL write (LMDB) and an
apply span, plus the journal copy's and the views' spans. Ingest throughput (batches of 100)
shows the per-fill cost; one-fill batches the per-batch cost (every span of one fill's way);
GetPosition the per-call cost of the server span. Ratios are traces-on to traces-off.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc
from bench_metrics import _compare, on_off_figures, on_off_stores  # scripts/
from benchmark import start  # scripts/
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Link, SpanKind, Tracer

from server import tracing


class _Sink(
    trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer
):
    """An OTLP collector that counts the spans it is sent and keeps nothing."""

    def __init__(self) -> None:
        self.spans = 0
        self._lock = threading.Lock()

    def Export(self, request, context):
        if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
            count = sum(
                len(scope.spans) for spans in request.resource_spans for scope in spans.scope_spans
            )
            with self._lock:
                self.spans += count
            return trace_service_pb2.ExportTraceServiceResponse()
        return metrics_service_pb2.ExportMetricsServiceResponse()


def _collector() -> tuple[grpc.Server, _Sink, str]:
    sink = _Sink()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(sink, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, sink, f"http://127.0.0.1:{port}"


def traces_figures(fills: int, samples: int, store: str, label: str) -> list[str]:
    collector, sink, endpoint = _collector()
    command = [sys.executable, "-m", "server", "--port", "0", "--otlp-endpoint", endpoint]
    on_store, off_store = on_off_stores(store)
    on, on_address = start([*command, "--store", on_store, "--trace-export", "otlp"])
    off, off_address = start([*command, "--store", off_store])
    lines = [label]
    try:
        lines += on_off_figures(on_address, off_address, fills, samples)
    finally:
        for process in (on, off):
            process.terminate()
        for process in (on, off):
            try:
                process.wait(60)  # a stop on a loaded machine (other benchmarks) takes its time
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        collector.stop(0)
    lines.append(f"    the collector received {sink.spans:,} spans")
    return lines


class _Discard(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS


def _group_spans(tracer: Tracer | None) -> None:
    """The spans one one-fill batch makes on its way, as the service makes them (the RPC's,
    the batch's, the commit's with its link, the append's, the WAL write's, the apply's); with
    no tracer, the checks the hooks make instead."""
    if tracer is None:
        for _ in range(4):
            tracing.tracer()
        return
    with tracer.start_as_current_span(
        "portfolio.v1.PortfolioManager/Ingest", kind=SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": "s", "rpc.method": "Ingest"},
    ):  # fmt: skip
        batch = tracer.start_span(
            tracing.BATCH, attributes={"portfolio.batch.id": "", "portfolio.batch.events": 1}
        )
        with tracer.start_as_current_span(
            tracing.COMMIT, links=[Link(batch.get_span_context())],
            attributes={"portfolio.commit.events": 1, "portfolio.sequence.first": 1,
                        "portfolio.sequence.last": 1},
        ):  # fmt: skip
            with (
                tracer.start_as_current_span(tracing.JOURNAL_APPEND),
                tracer.start_as_current_span(tracing.WAL_WRITE),
            ):
                pass
            with tracer.start_as_current_span(tracing.APPLY):
                pass
        batch.end()


def span_cost_figures(groups: int) -> list[str]:
    """CPU per one-fill batch of its spans, in process (export on its thread, discarded)."""
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Discard()))
    tracer = provider.get_tracer("bench")
    on: list[float] = []
    off: list[float] = []
    for _ in range(4):
        for chosen, samples in ((None, off), (tracer, on)):
            for _ in range(groups // 4):
                began = time.thread_time_ns()
                _group_spans(chosen)
                samples.append((time.thread_time_ns() - began) / 1000)
    provider.shutdown()
    return [
        "In process, the six spans of a one-fill batch as the service makes them (CPU of "
        "the thread; export discarded on its own thread):",
        _compare("spans of one batch", on, off, "us"),
    ]


def all_figures(fills: int, samples: int) -> list[str]:
    lines = span_cost_figures(samples * 10)
    lines += traces_figures(fills, samples, "mem://", "In memory (mem://: CPU alone):")
    with tempfile.TemporaryDirectory() as tmp:
        lines += traces_figures(
            fills, samples, f"lmdb://{tmp}/store", "Durable (LMDB, acks after the fsync):"
        )
    return lines


if __name__ == "__main__":
    print("\n".join(all_figures(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000, 2000)))
