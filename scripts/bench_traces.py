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

import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from concurrent import futures

import grpc
from bench_metrics import _compare  # scripts/
from benchmark import _Stream, batches, fill, ingest_rate, latencies, start  # scripts/
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc


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
    separate = "" if store == "mem://" else "-"  # two LMDB folders; mem:// is per process
    on_store, off_store = (
        (f"{store}{separate}on", f"{store}{separate}off") if separate else (store, store)
    )
    on, on_address = start([*command, "--store", on_store, "--trace-export", "otlp"])
    off, off_address = start([*command, "--store", off_store])
    lines = [label]
    try:
        with (
            grpc.insecure_channel(on_address) as channel_on,
            grpc.insecure_channel(off_address) as channel_off,
        ):
            stub_on = pb_grpc.PortfolioManagerStub(channel_on)
            stub_off = pb_grpc.PortfolioManagerStub(channel_off)
            warm = list(batches(10_000, "WARM"))
            ingest_rate(stub_on, warm), ingest_rate(stub_off, warm)
            rates_on, rates_off = [], []
            for round_ in range(5):  # interleaved, so drift on the machine hits both
                requests = list(batches(fills, f"R{round_}"))
                rates_off.append(ingest_rate(stub_off, requests))
                rates_on.append(ingest_rate(stub_on, requests))
            best_on, best_off = max(rates_on), max(rates_off)
            per_fill_us = (1 / statistics.median(rates_on) - 1 / statistics.median(rates_off)) * 1e6
            lines.append(
                f"    Ingest {fills:,} fills, batches of 100: on {best_on:,.0f} fills/s   "
                f"off {best_off:,.0f} fills/s   ratio {best_on / best_off:.3f} (best of 5; "
                f"medians {statistics.median(rates_on) / statistics.median(rates_off):.3f}; "
                f"{per_fill_us:+.2f} us a fill)"
            )
            counter = iter(range(10**9))

            def one_fill(stub: pb_grpc.PortfolioManagerStub) -> Callable[[], object]:
                stream = _Stream(stub)

                def send() -> object:
                    return next(stream.send(pb.IngestRequest(events=[fill(next(counter), "L")])))

                return send

            send_on, send_off = one_fill(stub_on), one_fill(stub_off)
            acks_on, acks_off = [], []
            for _ in range(4):
                acks_off += latencies(send_off, samples // 4)
                acks_on += latencies(send_on, samples // 4)
            lines.append(_compare("one-fill batch to its ack", acks_on, acks_off))
            get = pb.GetPositionRequest(account_id="L", strategy_id="S1", instrument_id="AAPL")
            gets_on, gets_off = [], []
            for _ in range(4):
                gets_off += latencies(lambda: stub_off.GetPosition(get), samples // 4)
                gets_on += latencies(lambda: stub_on.GetPosition(get), samples // 4)
            lines.append(_compare("GetPosition", gets_on, gets_off))
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


def all_figures(fills: int, samples: int) -> list[str]:
    lines = traces_figures(fills, samples, "mem://", "In memory (mem://: CPU alone):")
    with tempfile.TemporaryDirectory() as tmp:
        lines += traces_figures(
            fills, samples, f"lmdb://{tmp}/store", "Durable (LMDB, acks after the fsync):"
        )
    return lines


if __name__ == "__main__":
    print("\n".join(all_figures(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000, 2000)))
