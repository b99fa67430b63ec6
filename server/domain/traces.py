"""Temporary positions: the legs of a multi-step trade, grouped by trace id until they expire.

A trace lives `ttl_ns` past the moment the service received its latest leg, not past the leg's
fill time: legs back-filled hours later (a relay catching up after a reconnect) must not expire
on arrival. The domain reads no clock: receipt times are passed in. A leg recorded without one
(the ledger books fills without knowing the time) waits, unable to expire, for `received`, which
the service calls with its clock after each commit; `get` and `expire` stamp such legs with the
time they are given first, so nothing waits past the next look. Recovery passes each journaled
leg a time by which it had surely been received, so a restart never shortens a trace's life.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, localcontext

from sortedcontainers import SortedDict, SortedList

from server.domain.decimals import EXACT, ZERO
from server.domain.events import Fill


@dataclass(frozen=True, slots=True)
class TraceLeg:
    step: int
    sequence: int
    fill: Fill


@dataclass(slots=True)
class TraceNet:
    instrument_id: str
    quantity: Decimal = ZERO
    cash_flow: Decimal = ZERO


@dataclass(slots=True)
class Trace:
    trace_id: str
    legs: list[TraceLeg] = field(default_factory=list)
    net: dict[str, TraceNet] = field(default_factory=dict)
    first_fill_ns: int = 0
    last_fill_ns: int = 0
    received_at_ns: int = 0  # when the service received its latest leg (0: not stamped yet)
    expires_at_ns: int = 0


@dataclass(slots=True)
class TraceVenue:
    """Multi-step trades' legs on one venue (of one account): each step after a trace's first,
    with the time since the trace's previous leg (execution times: the step's latency); and,
    when traces end, how many of their legs were of a trace that ended flat (every instrument
    netted to zero: done) or that expired with something open."""

    steps: int = 0
    latency_ns: int = 0
    legs_done: int = 0
    legs_open: int = 0

    @property
    def success_rate(self) -> float | None:
        ended = self.legs_done + self.legs_open
        return self.legs_done / ended if ended else None


class TraceBook:
    def __init__(self, ttl_ns: int) -> None:
        self.ttl_ns = ttl_ns
        # (account_id, venue) -> its legs' figures.
        self.venues: dict[tuple[str, str], TraceVenue] = {}
        self._traces: SortedDict = SortedDict()  # trace_id -> Trace
        self._expiry: SortedList = SortedList()  # (expires_at_ns, trace_id), stamped ones
        self._unstamped: dict[str, Trace] = {}  # traces with a leg awaiting its receipt time

    def __len__(self) -> int:
        return len(self._traces)

    def record(
        self,
        fill: Fill,
        sequence: int,
        multiplier: Decimal,
        received_ns: int | None = None,
        *,
        counted: bool = False,
    ) -> None:
        """Adds a leg to its trace, opening the trace on its first leg; `received_ns` is when
        the service received it (None: stamped by the next `received`). `counted`: a leg a
        restart puts back into its live trace, whose step the venues restored from the
        checkpoint already count (counted again, a restart doubled them)."""
        trace: Trace | None = self._traces.get(fill.trace_id)
        if trace is None:
            trace = Trace(fill.trace_id, first_fill_ns=fill.timestamp_ns)
            self._traces[fill.trace_id] = trace
        if trace.legs and not counted:  # a step after the first: its latency since the last
            venue = self._venue(fill)
            venue.steps += 1
            venue.latency_ns += max(0, fill.timestamp_ns - trace.legs[-1].fill.timestamp_ns)
        trace.legs.append(TraceLeg(len(trace.legs) + 1, sequence, fill))
        net = trace.net.setdefault(fill.instrument_id, TraceNet(fill.instrument_id))
        with localcontext(EXACT):
            net.quantity += fill.signed_quantity
            net.cash_flow -= fill.signed_quantity * fill.price * multiplier
        trace.first_fill_ns = min(trace.first_fill_ns, fill.timestamp_ns)
        trace.last_fill_ns = max(trace.last_fill_ns, fill.timestamp_ns)
        if received_ns is None:
            self._expiry.discard((trace.expires_at_ns, trace.trace_id))  # cannot expire now
            self._unstamped[trace.trace_id] = trace
        else:
            self._stamp(trace, received_ns)

    def received(self, now_ns: int) -> None:
        """The legs recorded since the last call were received by `now_ns`."""
        waiting, self._unstamped = self._unstamped, {}
        for trace in waiting.values():
            self._stamp(trace, now_ns)

    def _stamp(self, trace: Trace, received_ns: int) -> None:
        self._expiry.discard((trace.expires_at_ns, trace.trace_id))
        trace.received_at_ns = max(trace.received_at_ns, received_ns)
        trace.expires_at_ns = trace.received_at_ns + self.ttl_ns
        if trace.trace_id not in self._unstamped:
            self._expiry.add((trace.expires_at_ns, trace.trace_id))

    def get(self, trace_id: str, now_ns: int) -> Trace | None:
        self.received(now_ns)
        trace: Trace | None = self._traces.get(trace_id)
        if trace is None or trace.expires_at_ns <= now_ns:
            return None
        return trace

    def expire(self, now_ns: int) -> int:
        """Drops every trace whose time is up; returns how many."""
        self.received(now_ns)
        cut = self._expiry.bisect_left((now_ns + 1, ""))
        expired = list(self._expiry.islice(0, cut))
        del self._expiry[:cut]
        for _, trace_id in expired:
            trace = self._traces.pop(trace_id)
            done = all(not net.quantity for net in trace.net.values())
            for leg in trace.legs:
                if done:
                    self._venue(leg.fill).legs_done += 1
                else:
                    self._venue(leg.fill).legs_open += 1
        return len(expired)

    def _venue(self, fill: Fill) -> TraceVenue:
        key = (fill.account_id, fill.venue)
        venue = self.venues.get(key)
        if venue is None:
            venue = self.venues[key] = TraceVenue()
        return venue
