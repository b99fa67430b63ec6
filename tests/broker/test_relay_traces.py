"""The relay's traces: a span per ingest call whose context reaches the service in the call's
metadata, so the service's batch spans join the relay's trace (real ib_async against the fake
TWS, a real traced service on 127.0.0.1)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from client import AsyncPortfolioClient
from relay.relay import tracer_from_environment
from server import tracing
from tests.broker.fake_tws import FakeTws
from tests.broker.test_relay import AAPL, Exec, all_sent, new_relay
from tests.conftest import TEST_CONFIG, ServerThread

pytestmark = pytest.mark.timeout(30)
INGEST = "portfolio.v1.PortfolioManager/Ingest"


@pytest.fixture
async def traced_service() -> AsyncIterator[tuple[ServerThread, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    running = await asyncio.to_thread(ServerThread, TEST_CONFIG, span_exporter=exporter)
    try:
        yield running, exporter
    finally:
        await asyncio.to_thread(running.stop)


@pytest.fixture
def relay_spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


async def test_a_relayed_fill_is_traced_from_the_relays_span_into_the_service(
    tws: FakeTws, traced_service, relay_spans
):
    service, service_spans = traced_service
    provider, spans = relay_spans
    async with AsyncPortfolioClient(service.address) as client:
        relay = new_relay(tws, client, tracer=provider.get_tracer("relay"))
        await relay.start()
        try:
            await relay.connection.wait_connected(5)
            Exec("0001f4e8.01", AAPL, "BOT", "10", "150", "1").report(tws)
            await all_sent(relay, 1)
        finally:
            await relay.stop()
    sent = [span for span in spans.get_finished_spans() if span.name == "relay.ingest"]
    assert sent
    assert all(span.kind is SpanKind.CLIENT for span in sent)
    by_id = {span.context.span_id: span for span in sent}
    got = service_spans.get_finished_spans()
    calls = [span for span in got if span.name == INGEST]
    batches = [span for span in got if span.name == tracing.BATCH]
    assert calls
    assert batches
    for call in calls:  # every ingest call of the relay is the child of one of its spans
        assert call.parent is not None
        assert call.parent.span_id in by_id
        assert call.context.trace_id == by_id[call.parent.span_id].context.trace_id
    assert {b.context.trace_id for b in batches} <= {s.context.trace_id for s in sent}


def test_the_relays_tracer_follows_opentelemetrys_variables(caplog):
    assert tracer_from_environment({})[0] is None
    assert tracer_from_environment({"OTEL_TRACES_EXPORTER": "none"})[0] is None
    tracer, flush = tracer_from_environment({"OTEL_TRACES_EXPORTER": "console"})
    assert tracer is not None
    flush()
    assert tracer_from_environment({"OTEL_TRACES_EXPORTER": "zipkin"})[0] is None
    assert "not otlp, console or none" in caplog.text


async def test_without_a_tracer_the_relay_sends_no_trace_context(tws: FakeTws, traced_service):
    service, service_spans = traced_service
    async with AsyncPortfolioClient(service.address) as client:
        relay = new_relay(tws, client)
        await relay.start()
        try:
            await relay.connection.wait_connected(5)
            Exec("0001f4e9.01", AAPL, "BOT", "5", "150", "1").report(tws)
            await all_sent(relay, 1)
        finally:
            await relay.stop()
    calls = [span for span in service_spans.get_finished_spans() if span.name == INGEST]
    assert calls
    assert all(call.parent is None for call in calls)  # a trace of the service's own


def test_relay_help_says_traces_are_set_by_the_otel_variables(capsys):
    from relay.relay_config import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "OTEL_TRACES_EXPORTER=otlp" in text and "OTEL_EXPORTER_OTLP_ENDPOINT" in text
