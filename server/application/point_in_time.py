"""The book as it was at a past point: after the event of a sequence, or after every event
received by a time (to within the journal's receipt anchors).

Checkpoints keep only the latest state, so a past one is rebuilt by replaying the journal from
its start into a ledger of its own (the same settings as the live one), off the event loop:
seconds for a long journal, a few microseconds an event. The latest point rebuilt is kept, so
that the pages of a listing and repeated questions are answered at once; one at a time is
rebuilt. Marks are not journaled: rows are valued at their fill prices as of then (FX rates are
journaled, so base-currency figures are those of then).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor

from server.application.ports import EventStore
from server.application.reads import ReadModel
from server.domain.ledger import Ledger


class PastPointOutOfRange(ValueError):
    """A point after the latest event (or before the first): nothing to rebuild."""


class PointInTime:
    def __init__(
        self,
        new_ledger: Callable[[], Ledger],
        store: EventStore,
        executor: Executor,
        latest_sequence: Callable[[], int],
        *,
        clock_ns: Callable[[], int],
        reporting_currency: str = "USD",
    ) -> None:
        self._new_ledger = new_ledger
        self._store = store
        self._executor = executor
        self._latest_sequence = latest_sequence
        self._reporting_currency = reporting_currency
        self._clock_ns = clock_ns
        self._kept: tuple[int, ReadModel] | None = None
        self._lock = asyncio.Lock()

    def sequence_at(self, time_ns: int) -> int:
        """The point a time names: the last event surely received by then."""
        return self._store.sequence_received_by(time_ns)

    async def reads_at(self, sequence: int) -> ReadModel:
        """A read model of the book right after `sequence` (0: before any event)."""
        latest = self._latest_sequence()
        if sequence > latest:
            raise PastPointOutOfRange(f"sequence {sequence} is after the latest event ({latest})")
        async with self._lock:
            if self._kept is not None and self._kept[0] == sequence:
                return self._kept[1]
            loop = asyncio.get_running_loop()
            ledger = await loop.run_in_executor(self._executor, self._rebuild, sequence)
            reads = ReadModel(
                ledger, self._store, self._executor, clock_ns=self._clock_ns,
                reporting_currency=self._reporting_currency,
            )  # fmt: skip
            self._kept = (sequence, reads)
            return reads

    def _rebuild(self, sequence: int) -> Ledger:
        ledger = self._new_ledger()
        for at, event in self._store.events_through(0, sequence):
            if at <= ledger.applied_sequence:
                continue  # a row journaled twice (an append retried after it had landed)
            ledger.apply(event, at)
            ledger.sequence = at
        return ledger
