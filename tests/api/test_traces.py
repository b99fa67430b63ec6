"""Traces: a client's span, sent in the call's metadata, through the service's spans to the
journal (server/tracing.py, server/api/tracing_interceptor.py); the OTLP push of spans and
metrics to a collector on 127.0.0.1."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from client import Fill, PortfolioClient, Side
from client.trace_context import trace_metadata
from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server import tracing
from server.log_format import TraceIds
from tests.api.protocol import pb_fill
from tests.conftest import TEST_CONFIG, ServerThread
from tests.polling import wait_for

INGEST = "portfolio.v1.PortfolioManager/Ingest"


@pytest.fixture
def caller() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """The caller's own tracer (a relay's, say), apart from the service's."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


@pytest.fixture
def traced(tmp_path) -> Iterator[tuple[ServerThread, InMemorySpanExporter]]:
    """A service on LMDB (so with its write-ahead log) whose spans go to memory."""
    exporter = InMemorySpanExporter()
    running = ServerThread(
        replace(TEST_CONFIG, store=f"lmdb://{tmp_path}/store"), span_exporter=exporter
    )
    try:
        yield running, exporter
    finally:
        running.stop()
    assert tracing.tracer() is None  # a stopped service leaves tracing off


def _named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def _parent_id(span: ReadableSpan) -> int:
    assert span.parent is not None, span.name
    return span.parent.span_id


def test_a_trace_runs_from_the_callers_span_through_the_commit_to_the_journal(traced, caller):
    server, spans = traced
    provider, _ = caller
    with (
        grpc.insecure_channel(server.address) as channel,
        provider.get_tracer("relay").start_as_current_span("relay.send") as sent,
    ):
        stub = pb_grpc.PortfolioManagerStub(channel)
        request = pb.IngestRequest(batch_id="b1", events=[pb_fill("BUY", 5, 10)])
        (answer,) = stub.Ingest(iter([request]), metadata=trace_metadata(), timeout=10)
    assert answer.acks[0].result == pb.EVENT_RESULT_ACCEPTED
    client = sent.get_span_context()

    def complete() -> bool:
        got = spans.get_finished_spans()
        return all(
            _named(got, name)
            for name in (INGEST, tracing.JOURNAL_COPY, tracing.VIEWS_WRITE, tracing.APPLY)
        )

    assert wait_for(complete)
    got = spans.get_finished_spans()
    (call,) = _named(got, INGEST)
    assert call.kind is SpanKind.SERVER
    assert call.context.trace_id == client.trace_id
    assert _parent_id(call) == client.span_id
    assert call.attributes is not None
    assert call.attributes["rpc.system"] == "grpc"
    assert call.attributes["rpc.service"] == "portfolio.v1.PortfolioManager"
    assert call.attributes["rpc.method"] == "Ingest"
    assert call.attributes["rpc.grpc.status_code"] == 0
    (batch,) = _named(got, tracing.BATCH)
    assert batch.context.trace_id == client.trace_id
    assert _parent_id(batch) == call.context.span_id
    assert batch.attributes is not None
    assert batch.attributes["portfolio.batch.id"] == "b1"
    commits = [
        span
        for span in _named(got, tracing.COMMIT)
        if any(link.context.span_id == batch.context.span_id for link in span.links)
    ]
    (commit,) = commits  # the group commit holding the fill links to its batch
    (link,) = [link for link in commit.links if link.context.span_id == batch.context.span_id]
    assert link.context.trace_id == client.trace_id
    (append,) = [s for s in _named(got, tracing.JOURNAL_APPEND) if s.parent == commit.context]
    (wal,) = _named(got, tracing.WAL_WRITE)
    assert _parent_id(wal) == append.context.span_id
    (apply,) = [s for s in _named(got, tracing.APPLY) if s.parent == commit.context]

    def copied() -> bool:  # the copier's ArcticDB append links to the append it copies
        copies = _named(spans.get_finished_spans(), tracing.JOURNAL_COPY)
        linked = {link.context.span_id for copy in copies for link in copy.links}
        return append.context.span_id in linked

    assert wait_for(copied)
    assert append.start_time is not None and apply.start_time is not None
    assert append.start_time < apply.start_time  # durable first, then booked


def test_the_sdks_ingest_sends_the_current_context(traced, caller):
    server, spans = traced
    provider, _ = caller
    fill = Fill(
        fill_id="sdk-1", account_id="A1", strategy_id="S1", instrument_id="AAPL",
        side=Side.BUY, quantity=Decimal(2), price=Decimal(10), timestamp=datetime.now(UTC),
    )  # fmt: skip
    with (
        PortfolioClient(server.address) as client,
        provider.get_tracer("relay").start_as_current_span("relay.send") as sent,
    ):
        client.ingest([fill])
    assert wait_for(lambda: bool(_named(spans.get_finished_spans(), tracing.BATCH)))
    (batch,) = _named(spans.get_finished_spans(), tracing.BATCH)
    assert batch.context.trace_id == sent.get_span_context().trace_id


def test_a_query_gets_a_server_span_and_a_call_without_context_a_trace_of_its_own(traced):
    server, spans = traced
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.PortfolioManagerStub(channel)
        with pytest.raises(grpc.RpcError):
            stub.GetPosition(pb.GetPositionRequest(account_id="A1", instrument_id="NONE"))
    name = "portfolio.v1.PortfolioManager/GetPosition"
    assert wait_for(lambda: bool(_named(spans.get_finished_spans(), name)))
    (span,) = _named(spans.get_finished_spans(), name)
    assert span.kind is SpanKind.SERVER
    assert span.parent is None
    assert span.attributes is not None
    assert span.attributes["rpc.method"] == "GetPosition"
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]


def test_a_log_line_of_an_ingest_carries_the_callers_trace_id(traced, caller, caplog):
    server, _ = traced
    provider, _ = caller
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(TraceIds())  # what configure_logging puts on the service's handler
    good = pb.IngestRequest(batch_id="good", events=[pb_fill("BUY", 5, 10)])
    with (
        grpc.insecure_channel(server.address) as channel,
        provider.get_tracer("relay").start_as_current_span("relay.send") as sent,
    ):
        call = channel.stream_stream(f"/{INGEST}")(
            iter([good.SerializeToString(), b"\x0a\x05ab"]), metadata=trace_metadata(), timeout=10
        )
        with pytest.raises(grpc.RpcError):
            list(call)
    (line,) = [r for r in caplog.records if "malformed request" in r.getMessage()]
    assert line.__dict__["trace_id"] == format(sent.get_span_context().trace_id, "032x")


def test_tracing_off_builds_no_spans_and_sends_no_metadata(server):
    assert tracing.tracer() is None
    assert trace_metadata() is None  # no current span: nothing sent
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.PortfolioManagerStub(channel)
        (answer,) = stub.Ingest(iter([pb.IngestRequest(events=[pb_fill("BUY", 1, 10)])]))
    assert answer.acks[0].result == pb.EVENT_RESULT_ACCEPTED
    assert server.running.tracing is None
    assert server.running.service.committer._links == []


# -- OTLP: a collector on 127.0.0.1 ------------------------------------------------------------


class Collector(
    trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer
):
    """A fake OpenTelemetry collector: records what it is sent."""

    def __init__(self) -> None:
        self.spans: list[str] = []
        self.metrics: set[str] = set()
        self.resources: set[str] = set()
        self.lock = threading.Lock()

    def Export(self, request, context):  # both services' method has this name
        with self.lock:
            if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
                for resource_spans in request.resource_spans:
                    self._resource(resource_spans.resource)
                    for scope in resource_spans.scope_spans:
                        self.spans.extend(span.name for span in scope.spans)
                return trace_service_pb2.ExportTraceServiceResponse()
            for resource_metrics in request.resource_metrics:
                self._resource(resource_metrics.resource)
                for scope in resource_metrics.scope_metrics:
                    self.metrics.update(metric.name for metric in scope.metrics)
            return metrics_service_pb2.ExportMetricsServiceResponse()

    def _resource(self, resource) -> None:
        for attribute in resource.attributes:
            if attribute.key == "service.name":
                self.resources.add(attribute.value.string_value)


def serve_collector(found: Collector, port: int = 0) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(found, server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(found, server)
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, port


@pytest.fixture
def collector() -> Iterator[tuple[Collector, str]]:
    found = Collector()
    server, port = serve_collector(found)
    try:
        yield found, f"http://127.0.0.1:{port}"
    finally:
        server.stop(0)


def test_spans_and_metrics_are_pushed_to_an_otlp_collector(collector):
    found, endpoint = collector
    running = ServerThread(replace(TEST_CONFIG, trace_export="otlp", otlp_endpoint=endpoint))
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            request = pb.IngestRequest(batch_id="otlp", events=[pb_fill("BUY", 3, 10)])
            (answer,) = stub.Ingest(iter([request]), timeout=10)
        assert answer.acks[0].result == pb.EVENT_RESULT_ACCEPTED
    finally:
        running.stop()  # exports what is left: spans batched, metrics pushed once more
    with found.lock:
        assert {INGEST, tracing.BATCH, tracing.COMMIT, tracing.JOURNAL_APPEND} <= set(found.spans)
        assert "portfolio.ingest.ack.duration" in found.metrics
        assert "rpc.server.call.duration" in found.metrics
        assert found.resources == {"portfolio-manager"}


def _free_port() -> int:
    """A port nothing listens on (yet): a collector that is down."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _exporter_lines(records: list[logging.LogRecord]) -> list[str]:
    """Lines of the OpenTelemetry exporters themselves (a warning per retry, an error per
    failed export, unwatched)."""
    return [
        r.getMessage() for r in records
        if r.name.startswith("opentelemetry") and r.levelno >= logging.WARNING
    ]  # fmt: skip


def _lines(records: list[logging.LogRecord], level: int, text: str) -> list[str]:
    return [r.getMessage() for r in records if r.levelno == level and text in r.getMessage()]


def test_a_collector_down_is_logged_once_and_on_health_and_so_is_its_return(monkeypatch, caplog):
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # spans exported every 0.1 s
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    caplog.set_level(logging.INFO)
    running = ServerThread(replace(TEST_CONFIG, trace_export="otlp", otlp_endpoint=endpoint))
    found, collector = Collector(), None
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            checks = health_pb2_grpc.HealthStub(channel)

            def exports_health(status: int) -> Callable[[], bool]:
                def reached() -> bool:  # a call makes a span to export meanwhile
                    with contextlib.suppress(grpc.RpcError):
                        stub.GetPosition(pb.GetPositionRequest(account_id="A1"), timeout=5)
                    check = health_pb2.HealthCheckRequest(service="exports")
                    try:
                        return checks.Check(check, timeout=5).status == status
                    except grpc.RpcError:  # NOT_FOUND: a name the service does not set
                        return False

                return reached

            assert wait_for(exports_health(health_pb2.HealthCheckResponse.NOT_SERVING), 30)
            exports = running.running.metrics.exports  # the one the traces report to as well
            assert wait_for(  # several exports failed, logged once
                lambda: (
                    exports_health(health_pb2.HealthCheckResponse.NOT_SERVING)()
                    and exports.failures().get("traces", 0) >= 3
                ),
                30,
            )
            collector, _ = serve_collector(found, port)  # the collector is back
            assert wait_for(exports_health(health_pb2.HealthCheckResponse.SERVING), 30)
    finally:
        running.stop()
        if collector is not None:
            collector.stop(0)
    with found.lock:
        assert found.spans  # what was exported once it was back
    records = caplog.records
    failing = _lines(records, logging.ERROR, f"OTLP traces export to {endpoint} failing")
    assert len(failing) == 1 and "UNAVAILABLE" in failing[0]
    assert len(_lines(records, logging.INFO, f"OTLP traces export to {endpoint} working")) == 1
    assert _exporter_lines(records) == []


def test_pushed_metrics_to_a_collector_down_are_logged_once_and_counted(caplog):
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from server.telemetry import Metrics

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    changes: list[bool] = []
    caplog.set_level(logging.INFO)
    metrics = Metrics(endpoint, 0.2, tracing.Exports(endpoint, changes.append))
    found, collector = Collector(), None

    def scraped(name: str, signal: str) -> float:
        text = generate_latest(metrics.registry).decode()
        return next(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and sample.labels["signal"] == signal
        )

    try:
        assert wait_for(lambda: metrics.exports.failures().get("metrics", 0) >= 3, 30)
        assert changes == [False]
        assert scraped("portfolio_otlp_export_failing", "metrics") == 1
        assert scraped("portfolio_otlp_export_failing", "traces") == 0
        assert scraped("portfolio_otlp_export_failures_total", "metrics") >= 3
        collector, _ = serve_collector(found, port)
        assert wait_for(lambda: changes == [False, True], 30)
        assert scraped("portfolio_otlp_export_failing", "metrics") == 0
    finally:
        metrics.close()
        if collector is not None:
            collector.stop(0)
    with found.lock:
        assert "portfolio.otlp.export.failing" in found.metrics
    records = caplog.records
    failing = _lines(records, logging.ERROR, f"OTLP metrics export to {endpoint} failing")
    assert len(failing) == 1 and "UNAVAILABLE" in failing[0]
    assert len(_lines(records, logging.INFO, f"OTLP metrics export to {endpoint} working")) == 1
    assert _exporter_lines(records) == []


# -- settings ----------------------------------------------------------------------------------


def test_trace_settings_are_checked_at_the_start(capsys):
    from server.config import parse_args

    config = parse_args(["--trace-export", "otlp", "--otlp-endpoint", "http://127.0.0.1:4317"])
    assert (config.trace_export, config.otlp_endpoint) == ("otlp", "http://127.0.0.1:4317")
    assert parse_args([]).trace_export == "none"
    for argv, says in [
        (["--trace-export", "jaeger"], "is not a trace export"),
        (["--trace-export", "otlp"], "needs --otlp-endpoint"),
        (["--otlp-endpoint", "127.0.0.1:4317"], "is not an OTLP endpoint"),
        (["--otlp-endpoint", "http://127.0.0.1"], "is not an OTLP endpoint"),
    ]:
        with pytest.raises(SystemExit):
            parse_args(argv)
        assert says in capsys.readouterr().err
