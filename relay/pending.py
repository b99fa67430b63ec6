"""Executions waiting for their commission report before they are sent.

A fill's id is its idempotency key, so it should go out once with its final content: with its
commission. TWS sends the commission report right after the execution, but not always: after
`wait_seconds` a fill goes without one (and a report that comes later is sent as an amendment).

Average cost depends on the order fills are booked in, so each account's instrument (a line) is
released in execution order, whatever path found its fills (a live event, the scan of fills no
event announced, a sweep or a catch-up): a line is held up to its oldest fill still waiting, and
a fill found late takes its place in time among those still held. Fills seen in the same second
(TWS's execution times have whole seconds) keep the order TWS reported them in: execIds of
different orders say nothing about time. Fills of different lines do not hold each other up.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ib_async import Fill as IbFill

from relay.executions import commission_reported

__all__ = ["CommissionWait", "Released"]


@dataclass(frozen=True, slots=True)
class Released:
    """A fill leaving the wait: with its commission report, or without one after time-out."""

    fill: IbFill
    reported: bool


@dataclass(slots=True, order=True)
class _Waiting:
    executed: datetime
    seen: int
    deadline: float = field(compare=False)
    fill: IbFill = field(compare=False)


class CommissionWait:
    """Holds fills until their commission report is in (or `wait_seconds` passed)."""

    def __init__(self, wait_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.wait_seconds = wait_seconds
        self._clock = clock
        self._waiting: dict[str, _Waiting] = {}
        self._lines: dict[tuple[str, int], list[_Waiting]] = {}  # heaps, oldest first
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, exec_id: object) -> bool:
        return exec_id in self._waiting

    def add(self, fill: IbFill) -> None:
        """Starts waiting for a fill; for one already waiting, takes the newer object (after a
        reconnect ib_async builds new ones) and keeps its place and deadline."""
        exec_id = fill.execution.execId
        entry = self._waiting.get(exec_id)
        if entry is not None:
            entry.fill = fill
            return
        entry = _Waiting(
            _executed(fill), next(self._order), self._clock() + self.wait_seconds, fill
        )
        self._waiting[exec_id] = entry
        heapq.heappush(self._lines.setdefault(_line(fill), []), entry)

    def release(self, *, everything: bool = False) -> list[Released]:
        """The fills that may go now: each line's oldest fills (by execution time) that have
        their report or have waited long enough (all of them, with `everything`), every
        line in execution order."""
        now = self._clock()
        out: list[tuple[datetime, int, Released]] = []
        for key in list(self._lines):
            line = self._lines[key]
            while line:
                entry = line[0]
                reported = commission_reported(entry.fill)
                if not (reported or everything or now >= entry.deadline):
                    break
                heapq.heappop(line)
                del self._waiting[entry.fill.execution.execId]
                out.append((entry.executed, entry.seen, Released(entry.fill, reported)))
            if not line:
                del self._lines[key]
        out.sort(key=lambda item: item[:2])
        return [released for _, _, released in out]


def _line(fill: IbFill) -> tuple[str, int]:
    return (fill.execution.acctNumber, fill.contract.conId)


def _executed(fill: IbFill) -> datetime:
    moment = fill.execution.time
    if not isinstance(moment, datetime):  # an Execution built without its time
        return datetime.min.replace(tzinfo=UTC)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
