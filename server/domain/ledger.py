"""The single writer path of the domain: dedup by event id, sequence, apply.

Every accepted event gets the next global sequence number, with no gaps. An event id seen
before is a duplicate when its content is the same (counted once) and a conflict when it is
not (rejected: an id is never reused for a different execution).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal

from server.domain.book import PositionBook, RowChange
from server.domain.events import ExecutionEvent, Fill, OrderStatusUpdate
from server.domain.instruments import InstrumentRegistry
from server.domain.traces import TraceBook


class Result(enum.Enum):
    ACCEPTED = 1
    DUPLICATE = 2
    REJECTED = 3


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one event; `changes` holds the rows it moved, in the order moved."""

    event_id: str
    result: Result
    sequence: int = 0
    reason: str = ""
    changes: tuple[RowChange, ...] = ()


@dataclass(frozen=True, slots=True)
class _Seen:
    sequence: int
    fingerprint: int


class Ledger:
    """Admission (dedup, sequence) and application are separate steps, so that an event can be
    made durable between the two: `admit` when it arrives, `apply` once it is journaled."""

    def __init__(
        self,
        instruments: InstrumentRegistry | None = None,
        precision: Decimal = Decimal("1e-9"),
        trace_ttl_ns: int = 300 * 10**9,
    ) -> None:
        self.instruments = instruments or InstrumentRegistry()
        self.book = PositionBook(self.instruments, precision)
        self.traces = TraceBook(trace_ttl_ns)
        self.sequence = 0  # the last sequence given
        self.applied_sequence = 0  # the last sequence applied to the book
        self._seen: dict[tuple[str, str], _Seen] = {}

    def admit(self, event: ExecutionEvent) -> Outcome:
        """Dedups an event by id and gives it the next sequence; applies nothing."""
        key = (event.kind, event.event_id)
        fingerprint = event.fingerprint()
        seen = self._seen.get(key)
        if seen is not None:
            if seen.fingerprint == fingerprint:
                return Outcome(
                    event.event_id,
                    Result.DUPLICATE,
                    seen.sequence,
                    f"already accepted as sequence {seen.sequence}",
                )
            return Outcome(
                event.event_id,
                Result.REJECTED,
                reason=f"{_id_field(event)}: already used by a different event "
                f"(sequence {seen.sequence})",
            )
        self.sequence += 1
        self._seen[key] = _Seen(self.sequence, fingerprint)
        return Outcome(event.event_id, Result.ACCEPTED, self.sequence)

    def remember(self, kind: str, event_id: str, sequence: int, fingerprint: int) -> bool:
        """Marks an event of the journal as seen, without applying it (recovery). Returns False
        for an id already known (a row journaled twice)."""
        key = (kind, event_id)
        if key in self._seen:
            return False
        self._seen[key] = _Seen(sequence, fingerprint)
        self.sequence = max(self.sequence, sequence)
        return True

    def apply(self, event: ExecutionEvent, sequence: int) -> tuple[RowChange, ...]:
        """Applies an admitted event; events must come in sequence order."""
        if sequence <= self.applied_sequence:
            raise ValueError(f"sequence {sequence} applied out of order")
        changes: tuple[RowChange, ...] = ()
        if isinstance(event, Fill):
            changes = tuple(self.book.apply_fill(event, sequence))
            if event.trace_id:
                multiplier = self.instruments.multiplier(event.instrument_id)
                self.traces.record(event, sequence, multiplier)
        self.applied_sequence = sequence
        return changes

    def record(self, event: ExecutionEvent) -> Outcome:
        """Admits and applies at once: for a ledger with nothing to make durable."""
        outcome = self.admit(event)
        if outcome.result is Result.ACCEPTED:
            changes = self.apply(event, outcome.sequence)
            return Outcome(event.event_id, Result.ACCEPTED, outcome.sequence, changes=changes)
        return outcome


def _id_field(event: ExecutionEvent) -> str:
    return "update_id" if isinstance(event, OrderStatusUpdate) else "fill_id"
