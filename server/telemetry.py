"""Metrics: the one home of the service's OpenTelemetry instruments and their Prometheus scrape.

Off unless `--metrics-port` is set. The write path pays for metrics only where a number exists
nowhere else: the group commit reports each group (its size, its append's time and when each
batch in it was admitted) through one callback, once per group. Everything else is read when
Prometheus scrapes, from attributes the service keeps anyway (observable instruments): the
events counted by kind and result in `WritePath.admit` (a dict increment per event, kept with
metrics off too), placements, rows, subscribers, reconciliations, the broker, the checkpoint.

Names follow the OpenTelemetry semantic conventions (durations in seconds, `{event}`-style
annotations for counts); the Prometheus exporter turns `a.b.c` with unit `s` into
`a_b_c_seconds`, and adds `_total` to counters. docs/operations.md lists the names.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, start_http_server

from server.domain.ledger import Result
from server.domain.restatement import Placement
from server.tracing import EXPORT_TIMEOUT_SECONDS, Exports, otlp_metric_exporter

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from server.application.ports import Broker
    from server.application.reconciler import Reconciler
    from server.application.service import PortfolioService
    from server.application.subscriptions import SubscriptionHub

log = logging.getLogger("portfolio.metrics")

# Seconds. The service's latencies run from ~50 us (a cached query) to seconds (a store
# retrying); OpenTelemetry's default buckets start at 5 (meant for ms) and would lump them all.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
)  # fmt: skip
GROUP_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000)

RPC_DURATION = "rpc.server.call.duration"
ACK_DURATION = "portfolio.ingest.ack.duration"
APPEND_DURATION = "portfolio.journal.append.duration"
GROUP_SIZE = "portfolio.commit.group.size"

_RESULTS = {Result.ACCEPTED: "accepted", Result.DUPLICATE: "duplicate", Result.REJECTED: "rejected"}
_PLACEMENTS = {Placement.RESTATED: "restated", Placement.OUTSIDE_WINDOW: "outside_window"}


PUSH_SECONDS = 10.0
"""How often metrics are pushed to an OTLP collector (--otlp-endpoint), and once at a stop."""


def _pushed(endpoint: str, every: float, exports: Exports) -> list[MetricReader]:
    """The reader that pushes to an OTLP collector (gRPC) from a thread of its own, watched by
    `exports`; none without an endpoint."""
    if not endpoint:
        return []
    return [
        PeriodicExportingMetricReader(
            otlp_metric_exporter(endpoint, exports),
            export_interval_millis=every * 1000,
            export_timeout_millis=EXPORT_TIMEOUT_SECONDS * 1000,
        )
    ]


class Metrics:
    """The instruments of one running service, exposed on their own HTTP port and/or pushed
    to an OTLP collector."""

    def __init__(
        self,
        otlp_endpoint: str = "",
        push_seconds: float = PUSH_SECONDS,
        exports: Exports | None = None,
    ) -> None:
        self.exports = exports or Exports(otlp_endpoint)
        self.registry = CollectorRegistry()  # one per service: tests run several in a process
        self._reader = PrometheusMetricReader(registry=self.registry)
        seconds = ExplicitBucketHistogramAggregation(LATENCY_BUCKETS)
        self.provider = MeterProvider(
            resource=Resource.create({"service.name": "portfolio-manager"}),
            metric_readers=[self._reader, *_pushed(otlp_endpoint, push_seconds, self.exports)],
            views=[
                View(instrument_name=RPC_DURATION, aggregation=seconds),
                View(instrument_name=ACK_DURATION, aggregation=seconds),
                View(instrument_name=APPEND_DURATION, aggregation=seconds),
                View(
                    instrument_name=GROUP_SIZE,
                    aggregation=ExplicitBucketHistogramAggregation(GROUP_BUCKETS),
                ),
            ],
        )
        self.meter = meter = self.provider.get_meter("portfolio.server")
        self.rpc_duration = meter.create_histogram(
            RPC_DURATION, "s", "Duration of an incoming gRPC call, to its status"
        )
        self.ack_duration = meter.create_histogram(
            ACK_DURATION, "s", "From a batch's admission to its events being durable and applied"
        )
        self.append_duration = meter.create_histogram(
            APPEND_DURATION, "s", "One group commit's append to the journal"
        )
        self.group_size = meter.create_histogram(
            GROUP_SIZE, "{event}", "Events in one group commit (one journal append)"
        )
        self._server: WSGIServer | None = None
        self.checkpoint_age: CheckpointAge | None = None  # set by observe
        if otlp_endpoint:
            self._observe_exports(self.exports)

    # -- the write path: one call per group commit ---------------------------------------------

    def committed(self, size: int, append_seconds: float, admitted_at: Sequence[float]) -> None:
        """A group is durable and applied: `admitted_at` holds each of its batches' admission
        (perf_counter), so the ack latency is observed once per batch."""
        now = time.perf_counter()
        if self.checkpoint_age is not None:
            self.checkpoint_age.committed(size)
        self.group_size.record(size)
        self.append_duration.record(append_seconds)
        record = self.ack_duration.record
        for began in admitted_at:
            record(now - began)

    # -- the service's state, read at scrape time ----------------------------------------------

    def observe(
        self,
        service: PortfolioService[Any],
        reconciler: Reconciler | None = None,
        broker: Broker | None = None,
    ) -> None:
        """Registers the observable instruments over `service` (and its reconciler, broker)."""
        meter, writes, hub, ledger = self.meter, service.writes, service.hub, service.ledger
        checkpoints = service.checkpoints

        def events(_: CallbackOptions) -> Iterable[Observation]:
            for (kind, result), count in list(writes.event_counts.items()):
                yield Observation(count, {"portfolio.event.kind": kind, "result": _RESULTS[result]})

        def placed(_: CallbackOptions) -> Iterable[Observation]:
            for placement, count in list(writes.placed.items()):
                yield Observation(count, {"placement": _PLACEMENTS[placement]})

        def gauge(read: Callable[[], float]) -> Callable[[CallbackOptions], Iterable[Observation]]:
            return lambda _: _observed(read)

        meter.create_observable_counter(
            "portfolio.events", [events], "{event}",
            "Events admitted, by kind and result (rejected: refused at the door or a reused id)",
        )  # fmt: skip
        meter.create_observable_counter(
            "portfolio.fills.placed", [placed], "{fill}",
            "Fills booked before later ones: restated rows, or outside the restatement window",
        )  # fmt: skip
        meter.create_observable_counter(
            "portfolio.windows.differ", [gauge(lambda: ledger.book.windows_differ)], "{row}",
            "Rows whose restatement window, read back from the journal after a restart, gave "
            "other figures than their checkpoint (none unless a bug; health `books` too)",
        )  # fmt: skip
        meter.create_observable_gauge(
            "portfolio.commit.pending", [gauge(lambda: service.committer.pending)], "{event}",
            "Events admitted and not yet in a journal append (the admission queue)",
        )  # fmt: skip
        meter.create_observable_gauge(
            "portfolio.subscribers", [gauge(lambda: hub.subscriber_count)], "{subscriber}",
            "Open update subscriptions",
        )  # fmt: skip
        meter.create_observable_gauge(
            "portfolio.subscriber.lag", [gauge(lambda: _lag(hub))], "{update}",
            "Updates queued for the slowest subscriber",
        )  # fmt: skip
        meter.create_observable_gauge(
            "portfolio.replay.buffer.size", [gauge(lambda: _replay_size(hub))], "{update}",
            "Updates kept for subscribers resuming from a sequence",
        )  # fmt: skip
        meter.create_observable_gauge(
            "portfolio.book.rows", [gauge(lambda: len(ledger.book))], "{row}",
            "Position rows held in memory",
        )  # fmt: skip
        meter.create_observable_gauge(
            "portfolio.accounts", [gauge(lambda: sum(1 for _ in ledger.accounts))], "{account}",
            "Accounts defined",
        )  # fmt: skip
        meter.create_observable_gauge(
            "portfolio.checkpoint.behind",
            [gauge(lambda: ledger.applied_sequence - checkpoints.saved_sequence)], "{event}",
            "Events applied since the latest stored checkpoint (what a crash would replay)",
        )  # fmt: skip
        age = self.checkpoint_age = CheckpointAge(
            lambda: ledger.applied_sequence, lambda: checkpoints.saved_sequence
        )
        meter.create_observable_gauge(
            "portfolio.checkpoint.age", [gauge(age.seconds)], "s",
            "How long the oldest event the stored checkpoint does not hold has been applied "
            "(0 while it holds them all)",
        )  # fmt: skip
        meter.create_observable_gauge(
            "portfolio.sequence", [gauge(lambda: ledger.applied_sequence)], "{event}",
            "The last sequence applied (durable)",
        )  # fmt: skip
        if reconciler is not None:
            self._observe_reconciliation(reconciler)
        if broker is not None:
            meter.create_observable_gauge(
                "portfolio.broker.connected", [gauge(lambda: float(broker.connected))], "1",
                "1 while the broker connection is up",
            )  # fmt: skip

    def _observe_reconciliation(self, reconciler: Reconciler) -> None:
        def runs(_: CallbackOptions) -> Iterable[Observation]:
            yield Observation(reconciler.runs, {"outcome": "done"})
            yield Observation(reconciler.failures, {"outcome": "failed"})

        def discrepancies(_: CallbackOptions) -> Iterable[Observation]:
            try:
                return _discrepancies()
            except RuntimeError:  # the loop changed the runs while this thread read them
                return []

        def _discrepancies() -> list[Observation]:
            counts: collections.Counter[str] = collections.Counter()
            book = reconciler.cases.ledger.reconciliations
            for account in book.accounts():
                latest = next(iter(reconciler.cases.runs(account)), None)
                if latest is not None:
                    statuses = [line.status for line in latest.lines]
                    statuses += [line.status for line in latest.cash]
                    counts.update(s.name.lower() for s in statuses if s.is_discrepancy)
            return [Observation(n, {"status": status}) for status, n in counts.items()]

        self.meter.create_observable_counter(
            "portfolio.reconciliation.runs", [runs], "{run}", "Reconciliation runs, by outcome"
        )
        self.meter.create_observable_gauge(
            "portfolio.reconciliation.discrepancies", [discrepancies], "{line}",
            "Discrepant lines in each account's latest run, by status",
        )  # fmt: skip

    def _observe_exports(self, exports: Exports) -> None:
        """The OTLP exports (traces and these metrics pushed): read by the Prometheus scrape,
        which works while the collector does not."""

        def failing(_: CallbackOptions) -> Iterable[Observation]:
            for signal in ("traces", "metrics"):
                yield Observation(int(exports.failing(signal)), {"signal": signal})

        def failures(_: CallbackOptions) -> Iterable[Observation]:
            for signal, count in exports.failures().items():
                yield Observation(count, {"signal": signal})

        self.meter.create_observable_gauge(
            "portfolio.otlp.export.failing", [failing], "1",
            "1 while a signal's exports to the OTLP collector fail (its latest one failed)",
        )  # fmt: skip
        self.meter.create_observable_counter(
            "portfolio.otlp.export.failures", [failures], "{export}",
            "Exports to the OTLP collector that failed (what they held was dropped), by signal",
        )  # fmt: skip

    # -- the scrape endpoint -------------------------------------------------------------------

    def serve(self, host: str, port: int) -> int:
        """Serves `/metrics` (Prometheus text) on a thread; returns the port bound."""
        server, _ = start_http_server(port, host, registry=self.registry)
        self._server = server
        bound: int = server.server_address[1]
        log.info("metrics on http://%s:%d/metrics", host, bound)
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.provider.shutdown()


class CheckpointAge:
    """The checkpoint's age in seconds: how long ago the oldest event a crash would replay
    (the first one the stored checkpoint does not hold) was applied; 0 while the checkpoint
    holds every applied event, so an idle service with a current checkpoint never looks stale.

    The group commit marks, at most once per MARK_SECONDS, the first sequence it applied and
    when (`committed`, once per group, never per fill); a mark stands for every group until the
    next one, so the age is exact to MARK_SECONDS and never younger than the truth. Marks the
    stored checkpoint has passed are dropped; at most MAX_MARKS are kept (checkpoints failing
    for a day), after which the last one stands for the rest (the age only errs older). An
    event replayed at start counts from the start.
    """

    MARK_SECONDS = 1.0
    MAX_MARKS = 86_400

    def __init__(
        self,
        applied: Callable[[], int],
        saved: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._applied, self._saved, self._clock = applied, saved, clock
        self._started = clock()
        self._marks: collections.deque[tuple[int, float]] = collections.deque()

    def committed(self, size: int) -> None:
        """A group of `size` events was applied (on the event loop)."""
        now, marks = self._clock(), self._marks
        if not marks or (now - marks[-1][1] >= self.MARK_SECONDS and len(marks) < self.MAX_MARKS):
            marks.append((self._applied() - size + 1, now))
        oldest = self._saved() + 1  # the first event a crash would replay
        while len(marks) > 1 and marks[1][0] <= oldest:
            marks.popleft()

    def seconds(self) -> float:
        """Read at scrape time, on the endpoint's thread (a mark added meanwhile raises
        RuntimeError: that scrape skips the value)."""
        oldest = self._saved() + 1
        if oldest > self._applied():
            return 0.0
        since = self._started
        for first, at in self._marks:
            if first > oldest:
                break
            since = at
        return max(0.0, self._clock() - since)


def _observed(read: Callable[[], float]) -> list[Observation]:
    """The value now; none this scrape when the event loop changed what was being counted
    (the scrape runs on the endpoint's thread, and reads without a lock)."""
    try:
        return [Observation(read())]
    except RuntimeError:
        return []


def _lag(hub: SubscriptionHub[Any, Any]) -> float:
    """The longest subscriber queue (read at scrape time: the hub keeps no maximum)."""
    return max((len(subscriber._items) for subscriber in list(hub._subscribers)), default=0)


def _replay_size(hub: SubscriptionHub[Any, Any]) -> float:
    return len(hub._replay) - hub._head  # the buffer is _replay[_head:] (subscriptions.py)
