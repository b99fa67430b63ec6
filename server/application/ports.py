"""What the application needs from storage, so it never names ArcticDB."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from server.domain.balances import Balance
from server.domain.book import PositionView, Price
from server.domain.events import (
    BrokerPosition,
    CommissionAmendment,
    ExecutionEvent,
    Fill,
    FillCorrection,
)
from server.domain.marks import FxRate, Mark
from server.domain.orders import Order, Transition
from server.domain.pnl_history import DailyPnl
from server.domain.position import Position, PositionKey
from server.domain.reconciliation import Reconciliation
from server.domain.restatement import JournaledFills
from server.domain.seen import Ints
from server.domain.state import LedgerState

Sequenced = tuple[int, ExecutionEvent]
"""Per row with fees in other currencies: each such currency's rate into the row's base
currency when the row changed (None: no quote)."""


class StorageUnavailable(Exception):
    """The store failed; nothing more is acknowledged until it works again."""


class WriterFenced(StorageUnavailable):
    """Another service took over the store's writer lease, or ours lapsed: this process must
    never write to the store again (it can only exit; a restart may take the lease anew)."""


@dataclass(frozen=True, slots=True)
class SeenEvents:
    """Every journaled event's kind, id, sequence and fingerprint, as columns (a restart
    reads millions: no object per event)."""

    kinds: list[str]
    event_ids: list[str]
    sequences: Ints
    fingerprints: Ints


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The ledger exactly as it stood after `sequence`: every row, with its instrument's last
    fill price, and everything else the ledger holds."""

    sequence: int
    rows: list[tuple[Position, Price]]
    state: LedgerState
    # Each row with a restatement window: its figures before the window.
    anchors: list[Position] = field(default_factory=list)
    # True (written since book version 5): a row with fills inside the window and no anchor
    # has an empty one (a row opened inside the window). False (read from an earlier
    # checkpoint): `anchors` names every row with a window, and none means no windows.
    empty_anchors_left_out: bool = True


@dataclass(frozen=True, slots=True)
class OrderTransition:
    """A status change as the orders view records it: which order, and how it was judged."""

    sequence: int
    order_key: str
    transition: Transition | None  # None: a later correction replaced it


@dataclass(frozen=True, slots=True)
class ReconciliationRun:
    """A reconciliation run as the views record it: the report, and its residual rows
    (valued when the run was made; a residual the run dropped is there flat)."""

    reconciliation: Reconciliation
    residuals: Sequence[PositionView]


class ViewsIncomplete(StorageUnavailable):
    """Some analysts' views could not be written; every other one was. One symbol the store
    refuses never holds back the others: `events`, `keys` (rows) and `runs` are what to hand
    over again, not before `retry_in` seconds (each failing symbol backs off on its own).
    `failing` names every symbol failing now, with its cause; `skipped` those the store can
    never hold (their rows are dropped for good: the journal keeps the events)."""

    def __init__(
        self,
        *,
        failing: dict[str, str],
        skipped: dict[str, str],
        events: list[Sequenced],
        keys: set[PositionKey],
        runs: list[ReconciliationRun],
        retry_in: float | None,
    ) -> None:
        super().__init__(
            f"views of {len(failing)} symbol(s) failing, {len(skipped)} skipped for good"
        )
        self.failing, self.skipped = failing, skipped
        self.events, self.keys, self.runs, self.retry_in = events, keys, runs, retry_in


class EventStore(Protocol):
    def append(self, group: Sequence[Sequenced]) -> None:
        """Makes a group of events durable in one atomic step; raises StorageUnavailable."""

    def seen_events(self) -> SeenEvents:
        """Every journaled event's id, sequence and fingerprint, in sequence order."""

    def events_after(self, sequence: int) -> Iterator[Sequenced]:
        """Journaled events with a greater sequence, in order."""

    def events_through(self, after: int, through: int) -> Iterator[Sequenced]:
        """Journaled events with after < sequence <= through, in order, read in chunks. Off
        the event loop."""

    def sequence_received_by(self, time_ns: int) -> int:
        """The last sequence surely received at or before `time_ns` (0: none known)."""

    def event_at(self, sequence: int) -> ExecutionEvent | None:
        """The journaled event at one sequence (None if the journal has none); raises
        StorageUnavailable. Called on the event loop, rarely: the ledger's `journal`."""

    def traced_fills_received_since(
        self, time_ns: int, up_to_sequence: int
    ) -> Iterator[tuple[int, Fill, int]]:
        """Journaled fills with a trace id, up to a sequence, that may have been received at
        or after `time_ns`, each with its sequence and a time by which it had surely been
        received (never earlier than the truth)."""

    def received_by(self, sequence: int) -> int:
        """A time by which the journaled event at `sequence` had surely been received."""

    def correctable_fills(
        self, time_ns: int, up_to_sequence: int
    ) -> Iterator[tuple[int, JournaledFills | FillCorrection | CommissionAmendment]]:
        """Journaled fills filled at or after `time_ns` (not decoded; each run between the
        others as columns, under its first sequence), and every correction and commission
        amendment, up to a sequence, in sequence order."""

    def record_views(
        self,
        events: Sequence[Sequenced],
        positions: Iterable[PositionView],
        transitions: Sequence[OrderTransition],
        runs: Sequence[ReconciliationRun] = (),
        balances: Sequence[Balance] = (),
    ) -> None:
        """Brings the analysts' views up to date with committed events, changed rows and
        balances, and reconciliation runs."""

    def record_close(
        self, close_ns: int, positions: Iterable[PositionView], balances: Iterable[Balance]
    ) -> None:
        """Appends every row and balance given to the history views, as of a day's close
        (once per close: a retry appends nothing twice). Call it off the event loop."""

    def record_pnl(self, days: Iterable[DailyPnl], late: bool) -> list[str]:
        """Appends one close's rows' days to the `pnl` library (once per account and trading
        date: a retry appends nothing twice); returns the accounts written. Off the event
        loop. Raises StorageUnavailable."""

    def pnl_written_through(self, account_id: str) -> str:
        """The latest trading date the `pnl` library holds for the account ("": none).
        Raises StorageUnavailable."""

    def order_from_views(self, account_id: str, order_id: str, order_ref: str) -> Order | None:
        """An order as the analysts' views hold it, history and all (None if they hold none):
        for one no longer in memory. Scans the account's rows: call it off the event loop.
        Raises StorageUnavailable."""

    def record_marks(self, marks: Sequence[Mark], rates: Sequence[FxRate]) -> None:
        """Saves the latest market marks and FX rates (replacing the saved ones)."""

    def latest_marks(self) -> tuple[list[Mark], list[FxRate]]:
        """The marks and rates saved last."""

    def views_recorded_through(self) -> int:
        """The last sequence that every fills/orders view holds."""

    def save_checkpoint(self, checkpoint: Checkpoint) -> None: ...

    def latest_checkpoint(self) -> Checkpoint | None: ...

    def close(self) -> None: ...


class BrokerUnavailable(Exception):
    """The broker cannot answer now (not connected, timed out); the message says why."""


class Broker(Protocol):
    """A broker connection as reconciliation needs it. Implementations keep themselves
    connected (time-outs, reconnects with back-off) and report it through `connected`."""

    @property
    def name(self) -> str:
        """What the logs and health call it: `ib 127.0.0.1:4002 client 17`, `paper`."""

    @property
    def connected(self) -> bool: ...

    async def start(self) -> None:
        """Begins connecting (and reconnecting whenever the connection drops); returns at once."""

    async def stop(self) -> None: ...

    def accounts(self) -> list[str]:
        """The accounts this broker connection holds (IB: the managed accounts); empty while
        not connected."""

    async def positions(self, account_id: str) -> list[BrokerPosition]:
        """Every position the broker holds in the account now, flat ones included if it
        reports them; raises BrokerUnavailable."""
