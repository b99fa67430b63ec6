"""What the application needs from storage, so it never names ArcticDB."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from server.domain.book import PositionView, Price
from server.domain.events import ExecutionEvent
from server.domain.marks import FxRate, Mark
from server.domain.orders import Transition
from server.domain.position import Position
from server.domain.state import LedgerState

Sequenced = tuple[int, ExecutionEvent]


class StorageUnavailable(Exception):
    """The store failed; nothing more is acknowledged until it works again."""


@dataclass(frozen=True, slots=True)
class SeenEvent:
    kind: str
    event_id: str
    sequence: int
    fingerprint: int


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The ledger exactly as it stood after `sequence`: every row, with its instrument's last
    fill price, and everything else the ledger holds."""

    sequence: int
    rows: list[tuple[Position, Price]]
    state: LedgerState


@dataclass(frozen=True, slots=True)
class OrderTransition:
    """A status change as the orders view records it: which order, and how it was judged."""

    sequence: int
    order_key: str
    transition: Transition | None  # None: a later correction replaced it


class EventStore(Protocol):
    def append(self, group: Sequence[Sequenced]) -> None:
        """Makes a group of events durable in one atomic step; raises StorageUnavailable."""

    def seen_events(self) -> Iterator[SeenEvent]:
        """Every journaled event's id, sequence and fingerprint, in sequence order."""

    def events_after(self, sequence: int) -> Iterator[Sequenced]:
        """Journaled events with a greater sequence, in order."""

    def traced_fills_since(self, time_ns: int, up_to_sequence: int) -> Iterator[Sequenced]:
        """Journaled fills with a trace id, filled at or after `time_ns`, up to a sequence."""

    def record_views(
        self,
        events: Sequence[Sequenced],
        positions: Iterable[PositionView],
        transitions: Sequence[OrderTransition],
    ) -> None:
        """Brings the analysts' views up to date with committed events and changed rows."""

    def record_marks(self, marks: Sequence[Mark], rates: Sequence[FxRate]) -> None:
        """Saves the latest market marks and FX rates (replacing the saved ones)."""

    def latest_marks(self) -> tuple[list[Mark], list[FxRate]]:
        """The marks and rates saved last."""

    def views_recorded_through(self) -> int:
        """The last sequence that every fills/orders view holds."""

    def save_checkpoint(self, checkpoint: Checkpoint) -> None: ...

    def latest_checkpoint(self) -> Checkpoint | None: ...

    def close(self) -> None: ...
