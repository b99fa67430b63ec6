"""Health thresholds: each crosses and recovers on its own health name, logged once per change,
while the overall health ("") stays a readiness signal."""

from __future__ import annotations

import logging
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.application.thresholds import (
    ACK_LATENCY_HEALTH,
    CAPACITY_HEALTH,
    QUERY_LATENCY_HEALTH,
    HealthThresholds,
    SlidingQuantile,
)
from tests.api.protocol import acks, pb_fill
from tests.conftest import start_test_server
from tests.polling import wait_for

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_p99_is_the_slowest_percent_within_a_bin_and_leaves_with_the_window():
    clock = Clock()
    latencies = SlidingQuantile(60.0, clock=clock)
    for _ in range(990):
        latencies.record(0.001)
    for _ in range(10):
        latencies.record(0.050)
    p99, held = latencies.quantile(0.99)
    assert held == 1000
    assert 0.001 <= p99 <= 0.001 * 1.1  # 990 of 1000 at 1 ms: the 990th is one of them
    latencies.record(0.050)  # the 1001st: now 11 slow ones, more than 1%
    assert 0.050 <= latencies.quantile(0.99)[0] <= 0.050 * 1.1
    clock.now += 61.0
    assert latencies.quantile(0.99) == (0.0, 0)


def _thresholds(clock: Clock, rows: list[int]) -> HealthThresholds:
    return HealthThresholds(
        ack_limit=0.010, query_limit=0.001, window=60.0, max_rows=100,
        rows=lambda: rows[0], clock=clock,
    )  # fmt: skip


def test_each_threshold_crosses_and_recovers_logged_once_per_change(caplog):
    caplog.set_level(logging.INFO, logger="portfolio.health")
    clock, rows = Clock(), [10]
    thresholds = _thresholds(clock, rows)
    changes: list[tuple[str, bool]] = []
    set_health = lambda name, healthy: changes.append((name, healthy))  # noqa: E731
    thresholds.check(set_health)
    assert sorted(changes) == sorted(
        [(ACK_LATENCY_HEALTH, True), (QUERY_LATENCY_HEALTH, True), (CAPACITY_HEALTH, True)]
    )
    assert not caplog.records  # all as expected at start: nothing to tell
    changes.clear()

    admitted = time.perf_counter() - 0.020  # a batch acknowledged 20 ms after it came in
    thresholds.committed(1, 0.001, [admitted])
    thresholds.answered(0.005)
    rows[0] = 101
    for _ in range(3):  # judged again and again: told once
        thresholds.check(set_health)
    assert sorted(changes) == sorted(
        [(ACK_LATENCY_HEALTH, False), (QUERY_LATENCY_HEALTH, False), (CAPACITY_HEALTH, False)]
    )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert any("ack_latency over its limit: p99 2" in w for w in warnings), warnings
    assert any("capacity over its limit: 101 rows (limit 100 rows)" in w for w in warnings)
    values = thresholds.values()
    assert 0.020 <= values[ACK_LATENCY_HEALTH] <= 0.022 + 0.020 * 0.1
    assert 0.005 <= values[QUERY_LATENCY_HEALTH] <= 0.0055
    assert values[CAPACITY_HEALTH] == 101
    changes.clear()
    caplog.clear()

    clock.now += 61.0  # the slow ones leave the window
    rows[0] = 100
    thresholds.check(set_health)
    thresholds.check(set_health)
    assert sorted(changes) == sorted(
        [(ACK_LATENCY_HEALTH, True), (QUERY_LATENCY_HEALTH, True), (CAPACITY_HEALTH, True)]
    )
    assert len([r for r in caplog.records if "back within its limit" in r.getMessage()]) == 3


def test_a_zero_limit_watches_nothing():
    clock = Clock()
    thresholds = HealthThresholds(
        ack_limit=0, query_limit=0, window=60.0, max_rows=0, rows=lambda: 10**9, clock=clock
    )
    thresholds.answered(10.0)
    thresholds.committed(1, 0.0, [time.perf_counter() - 10.0])
    changes: list[tuple[str, bool]] = []
    thresholds.check(lambda name, healthy: changes.append((name, healthy)))
    assert all(healthy for _, healthy in changes)


def _health(channel: grpc.Channel, name: str) -> int:
    answer = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=name), timeout=5
    )
    return int(answer.status)


def test_the_served_health_names_follow_the_thresholds():
    """Tiny limits (any real ack or query is over them) and a short window (they recover once
    nothing new comes): each name turns NOT_SERVING and back; the overall health stays up."""
    server = start_test_server(
        ack_p99_ms=1e-6, query_p99_ms=1e-6, latency_window_seconds=0.6, max_rows=1
    )
    try:
        with grpc.insecure_channel(server.address) as channel:
            for name in (ACK_LATENCY_HEALTH, QUERY_LATENCY_HEALTH, CAPACITY_HEALTH):
                assert wait_for(lambda name=name: _health(channel, name) == SERVING)
            stub = pb_grpc.PortfolioManagerStub(channel)
            acks(stub, pb_fill("BUY", 1, 10), pb_fill("BUY", 1, 10, instrument="MSFT"))
            assert wait_for(lambda: _health(channel, ACK_LATENCY_HEALTH) == NOT_SERVING)
            assert wait_for(lambda: _health(channel, CAPACITY_HEALTH) == NOT_SERVING)
            stub.GetPosition(pb.GetPositionRequest(account_id="A1", instrument_id="AAPL"))
            assert wait_for(lambda: _health(channel, QUERY_LATENCY_HEALTH) == NOT_SERVING)
            assert _health(channel, "") == SERVING
            assert wait_for(lambda: _health(channel, ACK_LATENCY_HEALTH) == SERVING)
            assert wait_for(lambda: _health(channel, QUERY_LATENCY_HEALTH) == SERVING)
            assert _health(channel, CAPACITY_HEALTH) == NOT_SERVING  # two rows, still
        assert server.running.thresholds is not None
        assert server.running.thresholds.values()[CAPACITY_HEALTH] >= 2  # rows of the book
    finally:
        server.stop()
