"""Metrics scraped over HTTP from `/metrics` after a known workload: exact counts."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace

import grpc
import pytest
from grpc_health.v1 import health_pb2
from prometheus_client.parser import text_string_to_metric_families

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.storage.arctic import ArcticEventStore
from tests.api.protocol import acks, pb_fill
from tests.api.test_restatement import at, books_health, position
from tests.api.test_subscriptions import Reader
from tests.conftest import TEST_CONFIG, ServerThread, start_test_server
from tests.polling import wait_for

GET_POSITION = "portfolio.v1.PortfolioManager/GetPosition"
INGEST = "portfolio.v1.PortfolioManager/Ingest"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the endpoint: (name, labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        assert answer.status == 200
        text = answer.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:  # fmt: skip
    """The one sample of `name` whose labels include `labels`."""
    found = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls)]
    assert len(found) == 1, (name, labels, found)
    return found[0]


@pytest.fixture
def metered() -> Iterator[tuple[ServerThread, int]]:
    port = _free_port()
    running = start_test_server(metrics_port=port)
    try:
        yield running, port
    finally:
        running.stop()


def _has(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
         **labels: str) -> bool:  # fmt: skip
    try:
        return value(samples, name, **labels) >= 1
    except AssertionError:
        return False


def test_a_known_workload_is_counted_exactly(metered: tuple[ServerThread, int]) -> None:
    server, port = metered
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.PortfolioManagerStub(channel)
        fills = [pb_fill("BUY", 1, 10 + i) for i in range(5)]
        first = acks(stub, *fills[:3])  # Ingest call 1, one batch
        second = acks(stub, fills[3], fills[4], fills[0], pb_fill("BUY", 0, 10))  # call 2
        assert [a.result for a in first] == [pb.EVENT_RESULT_ACCEPTED] * 3
        assert [a.result for a in second] == [
            pb.EVENT_RESULT_ACCEPTED,
            pb.EVENT_RESULT_ACCEPTED,
            pb.EVENT_RESULT_DUPLICATE,
            pb.EVENT_RESULT_REJECTED,
        ]
        asked = pb.GetPositionRequest(account_id="A1", instrument_id="AAPL", strategy_id="S1")
        for _ in range(3):
            assert stub.GetPosition(asked).quantity == "5"
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetPosition(pb.GetPositionRequest(instrument_id="AAPL"))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # A call's duration is recorded as the call ends on the server, which may be just after
    # the client has its answer: scrape until the last call is in.
    calls = "rpc_server_call_duration_seconds_count"
    bad = {"rpc_response_status_code": "INVALID_ARGUMENT"}
    assert wait_for(lambda: _has(scrape(port), calls, rpc_method=GET_POSITION, **bad))
    samples = scrape(port)
    events = "portfolio_events_total"
    assert value(samples, events, portfolio_event_kind="fill", result="accepted") == 5
    assert value(samples, events, portfolio_event_kind="fill", result="duplicate") == 1
    assert value(samples, events, portfolio_event_kind="fill", result="rejected") == 1

    ok = {"rpc_response_status_code": "OK", "rpc_system_name": "grpc"}
    assert value(samples, calls, rpc_method=GET_POSITION, **ok) == 3
    assert value(samples, calls, rpc_method=GET_POSITION, **bad) == 1
    assert value(samples, calls, rpc_method=INGEST, **ok) == 2

    # Two batches carried new events: two ack latencies; their groups held the 5 new fills.
    assert value(samples, "portfolio_ingest_ack_duration_seconds_count") == 2
    assert value(samples, "portfolio_commit_group_size_sum") == 5
    groups = value(samples, "portfolio_commit_group_size_count")
    assert value(samples, "portfolio_journal_append_duration_seconds_count") == groups
    assert value(samples, "portfolio_book_rows") >= 1  # the strategy's row, and its rollups
    assert value(samples, "portfolio_sequence") == 5
    assert value(samples, "portfolio_subscribers") == 0
    assert value(samples, "portfolio_commit_pending") == 0
    assert value(samples, "portfolio_checkpoint_behind") == 5  # nothing checkpointed yet


def test_metrics_are_off_unless_a_port_is_given(server: ServerThread) -> None:
    assert server.running.metrics is None


def test_the_endpoint_closes_with_the_service() -> None:
    port = _free_port()
    running = start_test_server(metrics_port=port)
    assert value(scrape(port), "portfolio_sequence") == 0
    running.stop()
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        scrape(port)


def test_restatements_subscribers_and_reconciliations_are_seen() -> None:
    port = _free_port()
    config = replace(TEST_CONFIG, metrics_port=port, broker="paper", reconcile_seconds=0)
    server = ServerThread(config)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            reader = Reader(stub, account_id="A1")
            try:
                reader.take(1, heartbeats=True)  # subscribed
                acks(stub, at(10, pb_fill("BUY", 10, 100)), at(30, pb_fill("SELL", 5, 95)))
                (late,) = acks(stub, at(20, pb_fill("BUY", 10, 80)))
                assert late.placement == pb.BOOKING_PLACEMENT_RESTATED
                report = stub.Reconcile(pb.ReconcileRequest(account_id="A1"))
                assert report.clean
                samples = scrape(port)
                assert value(samples, "portfolio_subscribers") == 1
            finally:
                reader.close()
        assert value(samples, "portfolio_fills_placed_total", placement="restated") == 1
        assert value(samples, "portfolio_reconciliation_runs_total", outcome="done") == 1
        assert value(samples, "portfolio_reconciliation_runs_total", outcome="failed") == 0
        assert value(samples, "portfolio_broker_connected") == 1
        assert value(samples, "portfolio_replay_buffer_size") > 0
        assert not [n for (n, _) in samples if n == "portfolio_reconciliation_discrepancies"]
    finally:
        server.stop()


def test_a_checkpoint_that_disagrees_with_its_journal_turns_books_health_when_read_back(
    tmp_path,
):
    """A row's restatement window stays in the journal after a restart (restatement.Deferred)
    until a late fill reads it back; a checkpoint whose figures the journal does not give (a
    bug, or a damaged store) is then found: the journal's figures are kept, health `books`
    turns NOT_SERVING and the metric counts the rows."""
    store = f"lmdb://{tmp_path / 'store'}"
    server = start_test_server(store=store)
    try:
        with grpc.insecure_channel(server.address) as channel:
            acks(pb_grpc.PortfolioManagerStub(channel),
                 at(10, pb_fill("BUY", 10, 100)), at(30, pb_fill("BUY", 10, 110)))  # fmt: skip
    finally:
        server.stop()  # a graceful stop checkpoints the book
    damaged = ArcticEventStore(store)
    checkpoint = damaged.latest_checkpoint()
    assert checkpoint is not None and checkpoint.rows
    for row, _ in checkpoint.rows:
        row.quantity -= 10  # a fill's quantity lost from every row
    damaged.save_checkpoint(checkpoint)
    damaged.close()

    port = _free_port()
    server = start_test_server(store=store, metrics_port=port)
    try:
        assert books_health(server.address) == health_pb2.HealthCheckResponse.SERVING
        assert value(scrape(port), "portfolio_windows_differ_total") == 0
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            (late,) = acks(stub, at(20, pb_fill("BUY", 10, 80)))
            assert late.placement == pb.BOOKING_PLACEMENT_RESTATED
            assert position(stub).quantity == "30"  # as the journal gives it, and the late fill
            assert position(stub, "").quantity == "30"
        assert books_health(server.address) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert value(scrape(port), "portfolio_windows_differ_total") == 2  # both levels' rows
    finally:
        server.stop()
