"""Executions waiting for their commission report before they are sent.

A fill's id is its idempotency key, so it must go out once with its final content: with its
commission. TWS sends the commission report right after the execution, but not always: after
`wait_seconds` a fill goes without one. Fills of one account and instrument leave in the order
they were seen, since average cost depends on the order the service books them in; fills of
different instruments do not hold each other up.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ib_async import Fill as IbFill

from relay.executions import commission_reported

__all__ = ["CommissionWait", "Released"]


@dataclass(frozen=True, slots=True)
class Released:
    """A fill leaving the wait: with its commission report, or without one after time-out."""

    fill: IbFill
    reported: bool


@dataclass(slots=True)
class _Waiting:
    fill: IbFill
    seen: int
    deadline: float


class CommissionWait:
    """Holds fills until their commission report is in (or `wait_seconds` passed)."""

    def __init__(self, wait_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.wait_seconds = wait_seconds
        self._clock = clock
        self._waiting: dict[str, _Waiting] = {}
        self._lines: dict[tuple[str, int], deque[str]] = {}
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
        self._waiting[exec_id] = _Waiting(
            fill, next(self._order), self._clock() + self.wait_seconds
        )
        self._lines.setdefault(_line(fill), deque()).append(exec_id)

    def release(self, *, everything: bool = False) -> list[Released]:
        """The fills that may go now, in the order they were seen: each line's leading fills
        that have their report or have waited long enough (all of them, with `everything`)."""
        now = self._clock()
        out: list[tuple[int, Released]] = []
        for key in list(self._lines):
            line = self._lines[key]
            while line:
                entry = self._waiting[line[0]]
                reported = commission_reported(entry.fill)
                if not (reported or everything or now >= entry.deadline):
                    break
                line.popleft()
                del self._waiting[entry.fill.execution.execId]
                out.append((entry.seen, Released(entry.fill, reported)))
            if not line:
                del self._lines[key]
        out.sort(key=lambda item: item[0])
        return [released for _, released in out]


def _line(fill: IbFill) -> tuple[str, int]:
    return (fill.execution.acctNumber, fill.contract.conId)
