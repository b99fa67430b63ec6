"""Health that means something: the thresholds of the service specification (seeds/002), each
behind a health service name of its own, so that a load balancer's readiness check ("") is not
flipped by a slow minute while a monitor watching `ack_latency` is.

Latencies are kept as counts in fixed log-scale bins per slice of the window: recording one is
an index computation and an increment (O(1), nothing grows with the book or the traffic), and
the p99 is read from the bins once per check, not per fill."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

log = logging.getLogger("portfolio.health")

ACK_LATENCY_HEALTH = "ack_latency"  # NOT_SERVING while fill -> durable ack p99 is over its limit
QUERY_LATENCY_HEALTH = "query_latency"  # NOT_SERVING while query p99 is over its limit
CAPACITY_HEALTH = "capacity"  # NOT_SERVING while more position rows are held than --max-rows

BINS_PER_OCTAVE = 8  # a bin's upper bound is at most 9% above any latency in it
_SMALLEST = 1e-6  # seconds: everything faster counts as 1 us
_BINS = BINS_PER_OCTAVE * 28  # 1 us .. about 4.5 min; slower ones go in the last bin
_UPPER = [_SMALLEST * 2 ** ((index + 1) / BINS_PER_OCTAVE) for index in range(_BINS)]


class SlidingQuantile:
    """Latencies of the last `window` seconds (in `slices` steps), answering quantiles to a
    bin's resolution (reported as the bin's upper bound: never below the true value)."""

    def __init__(
        self, window: float, slices: int = 12, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window = window
        self._slice_seconds = window / slices
        self._clock = clock
        self._counts = [[0] * _BINS for _ in range(slices)]
        self._epochs = [-1] * slices  # which slice of time each ring entry counts

    def record(self, seconds: float) -> None:
        epoch = int(self._clock() // self._slice_seconds)
        slot = epoch % len(self._epochs)
        counts = self._counts[slot]
        if self._epochs[slot] != epoch:  # a slice older than the window: reused
            self._epochs[slot] = epoch
            counts[:] = [0] * _BINS
        ratio = seconds / _SMALLEST
        index = int(math.log2(ratio) * BINS_PER_OCTAVE) if ratio > 1 else 0
        counts[index if index < _BINS else _BINS - 1] += 1

    def quantile(self, q: float) -> tuple[float, int]:
        """(the q-quantile in seconds, how many latencies the window holds); (0.0, 0) when
        it holds none."""
        oldest = int(self._clock() // self._slice_seconds) - len(self._epochs) + 1
        totals = [0] * _BINS
        for epoch, counts in zip(self._epochs, self._counts, strict=True):
            if epoch >= oldest:
                totals = [total + count for total, count in zip(totals, counts, strict=True)]
        held = sum(totals)
        if not held:
            return 0.0, 0
        rank = math.ceil(q * held)
        seen = 0
        for index, count in enumerate(totals):
            seen += count
            if seen >= rank:
                return _UPPER[index], held
        return _UPPER[-1], held  # pragma: no cover  (rank <= held)


class HealthThresholds:
    """Each threshold's current value (for metrics: `values()`), its verdict on its own health
    name, logged once per change.

    `ack_limit` / `query_limit` in seconds (0: not watched), `max_rows` (0: no capacity)."""

    def __init__(
        self,
        *,
        ack_limit: float,
        query_limit: float,
        window: float,
        max_rows: int,
        rows: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ack_limit = ack_limit
        self.query_limit = query_limit
        self.max_rows = max_rows
        self.acks = SlidingQuantile(window, clock=clock)
        self.queries = SlidingQuantile(window, clock=clock)
        self._rows = rows
        self._healthy: dict[str, bool] = {}

    # -- observations: O(1) each ---------------------------------------------------------

    def committed(self, size: int, append_seconds: float, admitted_at: Sequence[float]) -> None:
        """A group is durable (the committer's on_commit): each batch's admission -> ack."""
        now = time.perf_counter()
        record = self.acks.record
        for began in admitted_at:
            record(now - began)

    def answered(self, seconds: float) -> None:
        """A query RPC took `seconds` (from the RPC timing interceptor)."""
        self.queries.record(seconds)

    # -- the verdicts ---------------------------------------------------------------------

    def values(self) -> dict[str, float]:
        """The watched values now: ack and query p99 (seconds), position rows held."""
        return {
            ACK_LATENCY_HEALTH: self.acks.quantile(0.99)[0],
            QUERY_LATENCY_HEALTH: self.queries.quantile(0.99)[0],
            CAPACITY_HEALTH: float(self._rows()),
        }

    def names(self) -> Iterable[str]:
        return (ACK_LATENCY_HEALTH, QUERY_LATENCY_HEALTH, CAPACITY_HEALTH)

    def check(self, set_health: Callable[[str, bool], None]) -> Mapping[str, bool]:
        """Judges each threshold; calls `set_health` and logs for those that changed (and for
        all at the first check). Returns every verdict."""
        values = self.values()
        limits = {
            ACK_LATENCY_HEALTH: self.ack_limit,
            QUERY_LATENCY_HEALTH: self.query_limit,
            CAPACITY_HEALTH: float(self.max_rows),
        }
        for name, value in values.items():
            limit = limits[name]
            healthy = not limit or value <= limit
            before = self._healthy.get(name)
            if healthy == before:
                continue
            self._healthy[name] = healthy
            set_health(name, healthy)
            if before is None and healthy:
                continue  # the first verdict, as expected: nothing to tell
            if healthy:
                log.info("%s back within its limit: %s (limit %s)", name,
                         _shown(name, value), _shown(name, limit))  # fmt: skip
            else:
                log.warning("%s over its limit: %s (limit %s); health %r NOT_SERVING", name,
                            _shown(name, value), _shown(name, limit), name)  # fmt: skip
        return dict(self._healthy)

    async def watch(self, set_health: Callable[[str, bool], None], period: float = 1.0) -> None:
        """Checks every `period` seconds until cancelled."""
        while True:
            self.check(set_health)
            await asyncio.sleep(period)


def _shown(name: str, value: float) -> str:
    if name == CAPACITY_HEALTH:
        return f"{int(value)} rows"
    return f"p99 {value * 1e3:.3g} ms"
