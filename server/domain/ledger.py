"""The single writer path of the domain: dedup by event id, sequence, apply.

Every accepted event gets the next global sequence number, with no gaps. An event id seen
before is a duplicate when its content is the same (counted once) and a conflict when it is
not (rejected: an id is never reused for a different execution).

Applying an event may still refuse it (a reservation larger than the cash available): the
refusal is decided by the state at its sequence, so replaying the journal refuses it again.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

from server.domain import steps
from server.domain.accounts import AccountRegistry
from server.domain.balances import (
    Balance,
    BalanceBook,
    BalanceKey,
    Reservation,
    ReservationStatus,
)
from server.domain.book import PositionBook, RowChange
from server.domain.corrections import (
    DEFAULT_WINDOW_NS,
    Booked,
    CorrectableFills,
    JournaledFill,
)
from server.domain.decimals import EXACT, ZERO
from server.domain.events import (
    AccountDefinition,
    AccountKind,
    BrokerPositions,
    CashReservation,
    CashTransfer,
    ClosingMark,
    CommissionAmendment,
    DayClose,
    ExecutionEvent,
    Fill,
    FillCorrection,
    FxFixing,
    InstrumentDefinition,
    JournaledEvent,
    OrderStatusUpdate,
    ReservationRelease,
    Side,
)
from server.domain.fx_history import FX_HORIZON_MARGIN_NS, FxHistory, fixed_rate
from server.domain.instruments import InstrumentRegistry
from server.domain.marks import FxTable
from server.domain.orders import TERMINAL, Order, OrderBook, Transition, order_keys
from server.domain.performance import Performance
from server.domain.pnl_history import DailyPnl, PnlHistory
from server.domain.position import Position, PositionKey
from server.domain.reconciliation import (
    ReconcilePolicy,
    Reconciliation,
    ReconciliationBook,
    compare_cash,
    reconcile,
)
from server.domain.refusals import Refusal, RefusalKind
from server.domain.restatement import (
    JournaledFills,
    JournalRows,
    Placement,
    WindowedFill,
    WindowReader,
)
from server.domain.retention import Retention
from server.domain.seen import EventAt, Ints, JournalUnreadable, SeenIds
from server.domain.steps import Steps, at_once
from server.domain.traces import TraceBook


class Result(enum.Enum):
    ACCEPTED = 1
    DUPLICATE = 2
    REJECTED = 3


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying one event changed: copies, safe to hand to other threads."""

    rows: tuple[RowChange, ...] = ()
    order: Order | None = None
    transition: Transition | None = None
    balances: tuple[Balance, ...] = ()
    refusal: Refusal | None = None
    reconciliation: Reconciliation | None = None
    days: tuple[DailyPnl, ...] = ()  # a day's close: each row's day

    @property
    def placement(self) -> Placement:
        """Where a fill landed: its rows' worst placement."""
        return max((change.placement for change in self.rows), default=Placement.IN_ORDER)


NOTHING = Applied()


class RecentPlacements:
    """The placements of the latest fills that did not land in order, by sequence: acks go
    out right after their events apply, so a bounded memory is enough."""

    LIMIT = 65_536

    def __init__(self) -> None:
        self._by_sequence: dict[int, Placement] = {}

    def note(self, sequence: int, placement: Placement) -> None:
        self._by_sequence[sequence] = placement
        if len(self._by_sequence) > self.LIMIT:
            del self._by_sequence[next(iter(self._by_sequence))]

    def get(self, sequence: int) -> Placement:
        return self._by_sequence.get(sequence, Placement.IN_ORDER)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one event; `applied` is set when it was applied at once (`record`)."""

    event_id: str
    result: Result
    sequence: int = 0
    reason: str = ""
    applied: Applied = NOTHING
    #: Why it was rejected, for machines (None unless REJECTED).
    refused: RefusalKind | None = None

    @property
    def changes(self) -> tuple[RowChange, ...]:
        return self.applied.rows


class Ledger:
    """Admission (dedup, sequence) and application are separate steps, so that an event can be
    made durable between the two: `admit` when it arrives, `apply` once it is journaled.

    `journal` reads back a journaled event by sequence: with it, the ids seen and the
    correctable fills are kept compactly and the rare case that needs more reads the journal
    (see SeenIds, CorrectableFills); without it (no store behind), they are kept whole."""

    def __init__(
        self,
        instruments: InstrumentRegistry | None = None,
        precision: Decimal = Decimal("1e-9"),
        trace_ttl_ns: int = 300 * 10**9,
        accounts: AccountRegistry | None = None,
        correction_window_ns: int = DEFAULT_WINDOW_NS,
        reconcile_policy: ReconcilePolicy | None = None,
        journal: EventAt | None = None,
        retention_ns: int | None = None,
        restatement_window_ns: int | None = None,
    ) -> None:
        self.instruments = instruments if instruments is not None else InstrumentRegistry()
        self.accounts = (
            accounts if accounts is not None else AccountRegistry(self.instruments.default_currency)
        )
        # Rows keep the fills of this window, by execution time, to restate (restatement.py).
        self.book = PositionBook(
            self.instruments,
            precision,
            correction_window_ns if restatement_window_ns is None else restatement_window_ns,
            rate_at=self._rate_at,
            base_currency=self.accounts.base_currency,
        )
        self.traces = TraceBook(trace_ttl_ns)
        # Ended orders and reservations are forgotten `retention_ns` of event time after
        # they ended (None: kept for good); `clock_ns` is that event time.
        self.orders = OrderBook(retention_ns)
        self.balances = BalanceBook(retention=Retention(retention_ns))
        self.clock_ns = 0
        self.journal = journal
        self.fx = FxTable()
        # The journaled FX rates by their own time, for the rate in force when P&L was realized.
        self.fx_history = FxHistory()
        self.corrections = CorrectableFills(correction_window_ns, journal)
        self.reconciliations = ReconciliationBook()
        self.pnl = PnlHistory()  # each trading day's close, per row and per scope
        self.performance = Performance()  # round trips per row, fills per venue
        self.reconcile_policy = reconcile_policy or ReconcilePolicy(precision=precision)
        self.refusals: dict[int, Refusal] = {}  # sequence -> why the event was refused
        # sequence -> where a recent fill that did not land in order landed (for its ack).
        self.placements = RecentPlacements()
        self.sequence = 0  # the last sequence given
        self.applied_sequence = 0  # the last sequence applied to the book
        self.seen = SeenIds(journal)
        # Instruments defined by admitted events not applied yet: a strict registry must
        # accept a fill that follows its instrument's definition in the same batch.
        self._admitted_instruments: set[str] = set()
        # Likewise fills and corrections, (account_id, id) -> the execution time whose place
        # they take: a correction or an amendment may follow its fill.
        self._admitted_fills: dict[tuple[str, str], int] = {}
        # What admitted corrections will have booked once they apply: (account_id, the
        # original fill's id) -> the latest admitted correction of it, and (account_id, that
        # correction's id) -> the original's id. An amendment must name what will be booked
        # when it applies, wherever its batch ends (see _refuses_amendment). Fills add
        # nothing: a fill is its own original.
        self._admitted_booked: dict[tuple[str, str], str] = {}
        self._admitted_originals: dict[tuple[str, str], str] = {}
        # The latest time an admitted fill or correction moves the correction window's end to
        # when it applies (see _admitted_place).
        self._admitted_latest_ns = 0

    def _rate_at(
        self, from_currency: str, to_currency: str, time_ns: int, sequence: int
    ) -> Decimal | None:
        """The rate realized P&L converts at: the journaled FX history's, in force at the
        realizing fill's execution time, among the rates journaled before it."""
        return self.fx_history.rate_at(from_currency, to_currency, time_ns, sequence)

    def admit(self, event: ExecutionEvent) -> Outcome:
        """Dedups an event by id and gives it the next sequence; applies nothing."""
        fingerprint = event.fingerprint()
        try:
            seen = self.seen.find(event.kind, event.event_id, fingerprint)
        except JournalUnreadable as error:  # an id reused, or a hash collision: retry later
            return Outcome(
                event.event_id,
                Result.REJECTED,
                reason=f"{_id_field(event)}: could not be told from an earlier event ({error}); "
                "retry",
                refused=RefusalKind.RETRY,
            )
        if seen is not None:
            sequence, seen_fingerprint = seen
            if seen_fingerprint == fingerprint:
                return Outcome(
                    event.event_id,
                    Result.DUPLICATE,
                    sequence,
                    f"already accepted as sequence {sequence}",
                )
            return Outcome(
                event.event_id,
                Result.REJECTED,
                reason=f"{_id_field(event)}: already used by a different event "
                f"(sequence {sequence})",
                refused=RefusalKind.ID_REUSED,
            )
        rules = KINDS[type(event)]
        if rules.refuses is not None:
            refusal = rules.refuses(self, event)
            if refusal is not None:
                return Outcome(
                    event.event_id, Result.REJECTED, reason=str(refusal), refused=refusal.kind
                )
        if rules.admitted is not None:
            rules.admitted(self, event)
        self.sequence += 1
        self.seen.add(event.kind, event.event_id, self.sequence, fingerprint)
        return Outcome(event.event_id, Result.ACCEPTED, self.sequence)

    def _refuses_fill(self, fill: Fill) -> Refusal | None:
        if self.instruments.strict and not self.knows(fill.instrument_id):
            return Refusal(
                RefusalKind.PRECONDITION,
                "instrument_id",
                f"{fill.instrument_id!r} is not a defined instrument "
                "(the registry is strict: define it first)",
            )
        return None

    def _refuses_correction(self, correction: FillCorrection) -> Refusal | None:
        try:
            if self._admitted_place(correction.account_id, correction.corrects) is None:
                return self._uncorrectable(correction)
        except JournalUnreadable as error:
            return Refusal(
                RefusalKind.RETRY,
                "corrects",
                f"the corrected fill could not be read ({error}); retry",
            )
        return None

    def _refuses_amendment(self, amendment: CommissionAmendment) -> Refusal | None:
        key = (amendment.account_id, amendment.fill_id)
        original = self._admitted_originals.get(key) or self.corrections.original_of(*key)
        replacing = self._admitted_booked.get((amendment.account_id, original))
        if replacing is not None and replacing != amendment.fill_id:
            return _replaced(amendment, replacing)
        if key in self._admitted_fills:  # sent in the same batch, before it
            if self._admitted_fills[key] < self._admitted_horizon_ns():
                return self._unamendable(amendment, None)
            return None
        try:
            found = self.corrections.find(*key)
            if found is not None:
                found[1].fill  # noqa: B018 (read now: applying it after its commit reads nothing)
                if found[1].timestamp_ns < self._admitted_horizon_ns():
                    found = None
        except JournalUnreadable as error:
            return Refusal(
                RefusalKind.RETRY, "fill_id", f"the amended fill could not be read ({error}); retry"
            )
        return self._unamendable(amendment, found)

    def _unamendable(
        self, amendment: CommissionAmendment, found: tuple[str, Booked] | None
    ) -> Refusal | None:
        """Why the amendment cannot apply to what `find` gave for its fill, or None."""
        if found is None:
            days = self.corrections.window_ns / (86_400 * 10**9)
            return Refusal(
                RefusalKind.NOT_FOUND,
                "fill_id",
                f"no fill {amendment.fill_id!r} in account {amendment.account_id!r} within the "
                f"correction window ({days:g} day{'' if days == 1 else 's'} before the latest "
                "fill): send the amendment after the fill's ack",
            )
        booked = found[1]
        if booked.event_id != amendment.fill_id:
            return _replaced(amendment, booked.event_id)
        return None

    def _admitted_fill(self, fill: Fill) -> None:
        self._admitted_fills[fill.account_id, fill.fill_id] = fill.timestamp_ns
        self._admitted_latest_ns = max(self._admitted_latest_ns, fill.timestamp_ns)

    def _admitted_correction(self, correction: FillCorrection) -> None:
        """Noted in its fill's place in time (found when admitted: it reads nothing now)."""
        place = self._admitted_place(correction.account_id, correction.corrects)
        assert place is not None, "admitted by _refuses_correction just before"
        self._admitted_fills[correction.account_id, correction.correction_id] = place
        key = (correction.account_id, correction.corrects)
        original = self._admitted_originals.get(key) or self.corrections.original_of(*key)
        self._admitted_booked[correction.account_id, original] = correction.correction_id
        self._admitted_originals[correction.account_id, correction.correction_id] = original
        self._admitted_latest_ns = max(self._admitted_latest_ns, correction.timestamp_ns)

    def _admitted_instrument(self, definition: InstrumentDefinition) -> None:
        self._admitted_instruments.add(definition.instrument_id)

    def _admitted_horizon_ns(self) -> int:
        """Where the correction window will start when an event admitted now applies: the
        fills and corrections admitted before it apply first and may move the window's end
        on. Checking against it at the door means an acked correction or amendment is never
        refused when it applies for a window that moved on in between."""
        latest = max(self.corrections.latest_ns, self._admitted_latest_ns)
        return latest - self.corrections.window_ns

    def _admitted_place(self, account_id: str, fill_id: str) -> int | None:
        """The execution time of fill (or correction) `fill_id` if a correction or amendment
        admitted now will find it in the window when it applies, else None. One kept as a
        journal sequence is read now (and kept), so that applying it reads nothing."""
        key = (account_id, fill_id)
        place = self._admitted_fills.get(key)
        if place is None:
            found = self.corrections.find(*key)
            if found is None:
                return None
            found[1].fill  # noqa: B018 (read and kept until the correction replaces it)
            place = found[1].timestamp_ns
        return place if place >= self._admitted_horizon_ns() else None

    def _uncorrectable(self, correction: FillCorrection) -> Refusal:
        days = self.corrections.window_ns / (86_400 * 10**9)
        return Refusal(
            RefusalKind.NOT_FOUND,
            "corrects",
            f"no fill {correction.corrects!r} in account {correction.account_id!r} within the "
            f"correction window ({days:g} day{'' if days == 1 else 's'} before the latest fill)",
        )

    def knows(self, instrument_id: str) -> bool:
        instrument = self.instruments.get(instrument_id)
        return (
            instrument is not None and not instrument.provisional
        ) or instrument_id in self._admitted_instruments

    def remember(self, kind: str, event_id: str, sequence: int, fingerprint: int) -> None:
        """Marks an event of the journal as seen, without applying it (recovery); a row
        journaled twice is remembered once."""
        self.seen.remember(kind, event_id, sequence, fingerprint)
        self.sequence = max(self.sequence, sequence)

    def remember_all(
        self,
        kinds: Sequence[str],
        event_ids: Sequence[str],
        sequences: Ints | Sequence[int],
        fingerprints: Ints | Sequence[int],
    ) -> None:
        """`remember` for the whole journal at once (columns)."""
        latest = self.seen.remember_all(kinds, event_ids, sequences, fingerprints)
        self.sequence = max(self.sequence, latest)

    def apply(self, event: ExecutionEvent, sequence: int) -> Applied:
        """Applies an admitted event; events must come in sequence order."""
        rules = self._applying(event, sequence)
        return self._applied(sequence, rules.apply(self, event, sequence))

    def apply_in_steps(self, event: ExecutionEvent, sequence: int) -> Steps[Applied]:
        """`apply`, in steps for a kind that visits a whole account (KindRules.steps): the
        caller may let other work run between them, as long as no other event applies."""
        rules = self._applying(event, sequence)
        if rules.steps is None:
            return self._applied(sequence, rules.apply(self, event, sequence))
        applied = yield from rules.steps(self, event, sequence)
        return self._applied(sequence, applied)

    def _applying(self, event: ExecutionEvent, sequence: int) -> KindRules[Any]:
        if sequence <= self.applied_sequence:
            raise ValueError(f"sequence {sequence} applied out of order")
        self.seen.journaled(sequence)
        rules = KINDS[type(event)]
        if rules.moves_clock:
            self._advance_clock(event.timestamp_ns)
        return rules

    def _applied(self, sequence: int, applied: Applied) -> Applied:
        if applied.refusal is not None:
            self.refusals[sequence] = applied.refusal
        self.applied_sequence = sequence
        return applied

    def _advance_clock(self, time_ns: int) -> None:
        """Moves the event clock to the latest event time applied and forgets the orders and
        reservations whose retention is over, before the event applies: what an event finds
        depends only on the events before it, so a replay finds the same."""
        if time_ns <= self.clock_ns:
            return
        self.clock_ns = self.orders.retention.now_ns = self.balances.retention.now_ns = time_ns
        self.orders.evict()
        self.balances.evict()

    def reservation(self, account_id: str, reservation_id: str, sequence: int) -> Reservation:
        """A reservation in memory, or, one forgotten after its retention, rebuilt from its
        journaled event at `sequence` (a retry's DUPLICATE names it): what it was made for, as
        ended, holding nothing; how much of it fills used (consumed) and how much went back
        (released) is no longer known and shows as 0. Raises LookupError if there is none,
        JournalUnreadable if the journal cannot tell."""
        found = self.balances.reservations.get((account_id, reservation_id))
        if found is not None:
            return found
        event = None
        if self.journal is not None and sequence > 0:
            try:
                event = self.journal(sequence)
            except Exception as error:  # whatever the store raises
                raise JournalUnreadable(f"the journal could not be read: {error}") from error
        if not (
            isinstance(event, CashReservation)
            and (event.account_id, event.reservation_id) == (account_id, reservation_id)
        ):
            raise LookupError(
                f"account {account_id!r} holds no reservation {reservation_id!r}"
                + (" (it may have ended and been forgotten)" if self.journal else "")
            )
        order_key = (order_keys(event.order_id, event.order_ref) or [""])[0]
        return Reservation(
            reservation_id, BalanceKey(account_id, event.currency, event.chain_id),
            event.amount, order_key, event.strategy_id, ReservationStatus.RELEASED,
            sequence=sequence,
        )  # fmt: skip

    def _apply_new_fill(self, fill: Fill, sequence: int) -> Applied:
        applied = self._apply_fill(fill, sequence)
        self.corrections.add(fill, sequence)
        self._booked(fill, sequence, applied)
        return applied

    def _booked(self, fill: Fill | FillCorrection, sequence: int, applied: Applied) -> None:
        """After a fill or a correction: no longer only admitted, its placement noted for its
        ack, and the FX history kept to the window."""
        key = (fill.account_id, fill.event_id)
        self._admitted_fills.pop(key, None)
        original = self._admitted_originals.pop(key, None) if self._admitted_originals else None
        if original is not None and self._admitted_booked.get((key[0], original)) == key[1]:
            del self._admitted_booked[key[0], original]  # what is booked tells from now on
        placement = applied.placement
        if placement is not Placement.IN_ORDER:
            self.placements.note(sequence, placement)
        self.fx_history.evict(self.book.horizon_ns() - FX_HORIZON_MARGIN_NS)

    def _apply_transfer(self, transfer: CashTransfer, sequence: int) -> Applied:
        key = BalanceKey(transfer.account_id, transfer.currency, transfer.chain_id)
        balance = self.balances.move_cash(key, transfer.amount, transfer.timestamp_ns, sequence)
        return Applied(balances=(balance.copy(),))

    def _apply_reservation(self, reservation: CashReservation, sequence: int) -> Applied:
        order_key = (order_keys(reservation.order_id, reservation.order_ref) or [""])[0]
        refusal, held = self.balances.reserve(reservation, order_key, sequence)
        return Applied(balances=_copies(held), refusal=refusal)

    def _apply_release(self, release: ReservationRelease, sequence: int) -> Applied:
        refusal, held = self.balances.release(release, sequence)
        return Applied(balances=_copies(held), refusal=refusal)

    def _apply_instrument(self, definition: InstrumentDefinition, sequence: int) -> Applied:
        self._admitted_instruments.discard(definition.instrument_id)
        has_rows = self.book.has_instrument(definition.instrument_id)
        return Applied(refusal=self.instruments.define(definition, has_rows))

    def _apply_account(self, definition: AccountDefinition, sequence: int) -> Applied:
        base = self.accounts.base_currency(definition.account_id)
        if base != definition.base_currency and self.book.has_account(definition.account_id):
            return Applied(
                refusal=Refusal(
                    RefusalKind.PRECONDITION,
                    "base_currency",
                    f"account {definition.account_id!r} has positions with realized P&L kept "
                    f"in {base}: its base currency cannot become {definition.base_currency}",
                )
            )
        if self.accounts.define(definition):
            key = BalanceKey(definition.account_id, definition.base_currency)
            balance = self.balances.move_cash(key, definition.initial_cash, 0, sequence)
            return Applied(balances=(balance.copy(),))
        return NOTHING

    def _apply_fx(self, fixing: FxFixing, sequence: int) -> Applied:
        rate = fixed_rate(fixing)
        self.fx_history.record(rate, sequence)
        self.fx.set(rate)  # the valuation table: kept unless it holds a newer rate
        self.fx_history.evict(self.book.horizon_ns() - FX_HORIZON_MARGIN_NS)
        return NOTHING

    def _apply_correction(self, correction: FillCorrection, sequence: int) -> Applied:
        """Busts what is booked for the corrected execution (reversed at its own price, its
        commission given back) and books the replacement: quantities and cash end as if only
        the replacement had been booked, and so does total P&L (realized + unrealized)."""
        found = self.corrections.find(correction.account_id, correction.corrects)
        if found is None:  # admitted while its fill was there; the window moved on since
            applied = Applied(refusal=self._uncorrectable(correction))
            self._booked(correction, sequence, applied)
            return applied
        original, booked = found
        replacement = correction.replacement()
        old = booked.fill
        bust = Fill(  # under the correction's id: never journaled, never shown on its own
            fill_id=correction.correction_id, account_id=old.account_id,
            strategy_id=old.strategy_id, instrument_id=old.instrument_id,
            side=Side.SELL if old.side is Side.BUY else Side.BUY, quantity=old.quantity,
            price=old.price, timestamp_ns=correction.timestamp_ns, commission=-old.commission,
            commission_currency=old.commission_currency, order_ref=old.order_ref,
            order_id=old.order_id, venue=old.venue,
        )  # fmt: skip
        rows = self.book.correct(old, replacement, sequence)
        outside = rows is None  # not in its rows' windows: busted and rebooked at their start
        busted = self._apply_fill(bust, sequence, bust=True, book=outside, outside_window=True)
        rebooked = self._apply_fill(replacement, sequence, book=outside, outside_window=True)
        if rows is None:
            rows = list(busted.rows + rebooked.rows)
        self.corrections.replace(correction.account_id, original, replacement, sequence)
        balances = {balance.key: balance for balance in busted.balances + rebooked.balances}
        applied = Applied(
            rows=tuple(rows),
            order=rebooked.order or busted.order,
            balances=tuple(balances.values()),
        )
        self._booked(correction, sequence, applied)
        return applied

    def _apply_commission(self, amendment: CommissionAmendment, sequence: int) -> Applied:
        """Books the fill again in its place with the amended commission: the rows' fees and
        the cash move by the difference, nothing else does (same quantity, price and place)."""
        found = self.corrections.find(amendment.account_id, amendment.fill_id)
        refusal = self._unamendable(amendment, found)
        if refusal is not None or found is None:  # admitted; the window moved on since
            return Applied(refusal=refusal)
        original, booked = found
        old = booked.fill
        new = amendment.amended(old)
        rows = self.book.correct(old, new, sequence)
        if rows is None:  # not reached: the rows keep at least the correction window's fills
            return Applied(
                refusal=Refusal(
                    RefusalKind.CONFLICT,
                    "fill_id",
                    f"fill {old.fill_id!r} is no longer in its rows' restatement windows",
                )
            )
        self.corrections.replace(amendment.account_id, original, new, sequence, amended=True)
        changed: dict[BalanceKey, Balance] = {}
        currency = self.instruments.ensure(old.instrument_id).currency
        with localcontext(EXACT):
            for fill, sign in ((old, 1), (new, -1)):  # the old commission back, the new one
                if fill.commission:
                    key = BalanceKey(fill.account_id, fill.commission_currency or currency)
                    moved = self.balances.move_cash(
                        key, sign * fill.commission, amendment.timestamp_ns, sequence
                    )
                    changed[key] = moved
        return Applied(
            rows=tuple(rows), balances=tuple(balance.copy() for balance in changed.values())
        )

    def _apply_day_close(self, close: DayClose, sequence: int) -> Applied:
        return at_once(self._closing_day(close, sequence))

    def _closing_day(self, close: DayClose, sequence: int) -> Steps[Applied]:
        """Records the account's trading day (pnl_history.py) at the close's own marks (the
        book's price for an instrument it has none for), in steps of its rows."""
        if close.trading_date <= self.pnl.closed_through(close.account_id):
            return Applied(
                refusal=Refusal(
                    RefusalKind.CONFLICT,
                    "trading_date",
                    f"account {close.account_id!r} is closed through "
                    f"{self.pnl.closed_through(close.account_id)}",
                )
            )
        marks = {mark.instrument_id: mark.price for mark in close.marks}
        base = self.accounts.base_currency(close.account_id)
        grouped = yield from self.gathering_account_rows(close.account_id)
        rows = [row for group in grouped.values() for row in group]
        days = yield from self.pnl.closing(
            account_id=close.account_id, trading_date=close.trading_date,
            close_ns=close.timestamp_ns, sequence=sequence, late=close.late, rows=rows,
            mark_of=lambda instrument_id: marks.get(instrument_id, self.book.mark(instrument_id)),
            base_currency=base, rate_of=lambda currency: self.fx.rate(currency, base),
            precision=self.book.precision,
        )  # fmt: skip
        return Applied(days=tuple(days))

    def closing_marks(self, account_id: str) -> tuple[ClosingMark, ...]:
        """The marks a close of the account records now: the price of each instrument it
        holds."""
        return at_once(self.pricing_close(account_id))

    def pricing_close(self, account_id: str) -> Steps[tuple[ClosingMark, ...]]:
        """`closing_marks` in steps (the account's rows gathered, see gathering_account_rows);
        nothing may apply between them."""
        grouped = yield from self.gathering_account_rows(account_id)
        return tuple(
            ClosingMark(instrument_id=instrument_id, price=self.book.mark(instrument_id))
            for instrument_id, rows in sorted(grouped.items())
            if any(row.quantity for row in rows)
        )

    def unreconcilable(self, account_id: str) -> Refusal | None:
        """Why the account cannot be reconciled: a paper account's book is the service's."""
        if self.accounts.get(account_id).account_kind is AccountKind.PAPER:
            return Refusal(
                RefusalKind.PRECONDITION,
                "account_id",
                f"{account_id!r} is a paper account: paper accounts are never reconciled",
            )
        return None

    def _apply_broker_positions(self, snapshot: BrokerPositions, sequence: int) -> Applied:
        refusal = self.unreconcilable(snapshot.account_id)
        if refusal is not None:
            return Applied(refusal=refusal)
        run = reconcile(
            snapshot,
            sequence,
            self.account_instrument_rows(snapshot.account_id),
            self.instruments,
            self.reconcile_policy,
        )
        if snapshot.cash:
            broker_cash = {line.currency: line.amount for line in snapshot.cash}
            service_cash = self.balances.cash_by_currency(snapshot.account_id)
            run = run.with_cash(compare_cash(broker_cash, service_cash, self.reconcile_policy))
        self.reconciliations.record(run)
        return Applied(reconciliation=run)

    def reload_correctable(
        self,
        bookings: Iterable[
            tuple[int, JournaledFill | JournaledFills | FillCorrection | CommissionAmendment]
        ],
        anchors: Iterable[Position] = (),
        *,
        empty_anchors_left_out: bool = True,
    ) -> list[PositionKey]:
        """Recovery: refills the correctable fills from the journal's fills inside the window
        (one at a time, or in columns: JournaledFills), every correction and every commission
        amendment, in sequence order (refused ones are skipped, as they were), and gives the
        rows their restatement windows from them and the checkpoint's `anchors` (see
        Checkpoint.empty_anchors_left_out: False, and none given, is a checkpoint without
        windows). Most rows' windows stay in the journal until first needed (see
        restatement.Deferred); those a correction or amendment inside the window touches are
        rebuilt now. Returns the rows rebuilt now that came out other than checkpointed (none,
        unless a bug; the book tells of those read back later: PositionBook.on_differ)."""
        anchored: dict[PositionKey, Position] = {anchor.key: anchor for anchor in anchors}
        windows = bool(anchored) or empty_anchors_left_out
        horizon = self.book.horizon_ns()
        events = list(_in_columns(bookings))
        amended = {
            (event.account_id, event.fill_id)
            for _, event in events
            if isinstance(event, CommissionAmendment)
        }
        named: dict[tuple[str, str], tuple[int, str]] = {}  # fills amendments name
        windowed: list[JournaledFills] = []
        changed: list[tuple[int, Fill, str]] = []  # (sequence, replacement, what it replaces)
        refused = np.fromiter(self.refusals, dtype=np.int64, count=len(self.refusals))
        for sequence, event in events:
            if isinstance(event, JournaledFills):
                fills = event.where(~np.isin(event.sequences, refused)) if len(refused) else event
                self.corrections.add_columns(
                    fills.account_ids.tolist(), fills.fill_ids.tolist(), fills.sequences,
                    fills.times_ns, fills.texts.tolist() if self.journal is None else None,
                )  # fmt: skip
                if amended:
                    for fill_sequence, account_id, fill_id, text in zip(
                        fills.sequences.tolist(), fills.account_ids.tolist(),
                        fills.fill_ids.tolist(), fills.texts.tolist(), strict=True,
                    ):  # fmt: skip
                        if (account_id, fill_id) in amended:
                            named[(account_id, fill_id)] = (fill_sequence, text)
                if windows:
                    windowed.append(fills.where(fills.times_ns >= horizon))
                continue
            if sequence in self.refusals:
                continue
            if isinstance(event, CommissionAmendment):
                journaled = named.get((event.account_id, event.fill_id))
                if journaled is not None:  # find() need not read the journal for it
                    self.corrections.prime(journaled[0], Fill.from_text(journaled[1]))
                found = self.corrections.find(event.account_id, event.fill_id)
                if found is None or self._unamendable(event, found) is not None:
                    continue  # refused when it was applied (the window moved on)
                original, booked = found
                replacement = event.amended(booked.fill)
                if windows:
                    changed.append((sequence, replacement, event.fill_id))
                self.corrections.replace(
                    event.account_id, original, replacement, sequence, amended=True
                )
                continue
            if windows:
                changed.append((sequence, event.replacement(), event.corrects))
            found = self.corrections.find(event.account_id, event.corrects)
            original = found[0] if found else event.corrects
            self.corrections.replace(event.account_id, original, event.replacement(), sequence)
        if not windows:
            return []
        return self._reload_windows(
            anchored, JournaledFills.joined(windowed), changed, empty_anchors_left_out
        )

    def _reload_windows(
        self,
        anchored: dict[PositionKey, Position],
        windowed: JournaledFills,
        changed: list[tuple[int, Fill, str]],
        empty_anchors_left_out: bool,
    ) -> list[PositionKey]:
        """The rows' windows at a restart (see reload_correctable): the rows of an account's
        instrument that a correction or amendment touches rebuilt now, with every booking
        decoded (PositionBook.reload_windows), the others left in the journal."""
        rows = JournalRows.of(windowed)
        now = np.zeros(len(rows.keys), dtype=np.bool_)  # by strategy row
        if changed:
            touched = {(fill.account_id, fill.instrument_id) for _, fill, _ in changed}
            places: dict[tuple[str, str], int] = {}  # (account, fill id) -> its row's code
            if len(changed) > 32:
                places = dict(
                    zip(
                        zip(
                            windowed.account_ids.tolist(),
                            windowed.fill_ids.tolist(),
                            strict=True,
                        ),
                        rows.codes.tolist(),
                        strict=True,
                    )
                )
            for _, fill, corrects in changed:  # what a correction replaces, if in the window
                if places:
                    code = places.get((fill.account_id, corrects))
                else:
                    hits = np.flatnonzero(
                        (windowed.fill_ids == corrects) & (windowed.account_ids == fill.account_id)
                    )
                    code = int(rows.codes[hits[0]]) if len(hits) else None
                if code is not None:
                    account_id, _, instrument_id = rows.keys[code]
                    touched.add((account_id, instrument_id))
            for code, (account_id, _, instrument_id) in enumerate(rows.keys):
                now[code] = (account_id, instrument_id) in touched
        decoded = now[rows.codes]
        anchors = dict(anchored)
        self.book.defer_windows(
            anchors, rows.where(~decoded), empty_anchors_left_out=empty_anchors_left_out
        )  # takes the anchors of the rows it defers
        reader = WindowReader()
        rebuilt: list[tuple[int, Fill | WindowedFill, str]] = [
            (sequence, reader.read(text), "")
            for sequence, text in zip(
                rows.sequences[decoded].tolist(), rows.texts[decoded].tolist(), strict=True
            )
        ]
        if changed:
            rebuilt = sorted([*rebuilt, *changed], key=lambda item: item[0])
        return self.book.reload_windows(
            anchors, rebuilt, empty_anchors_left_out=empty_anchors_left_out
        )

    def account_instrument_rows(self, account_id: str) -> dict[str, list[Position]]:
        """Per instrument of the account: its account-level row, then every strategy row."""
        return at_once(self.gathering_account_rows(account_id))

    def gathering_account_rows(self, account_id: str) -> Steps[dict[str, list[Position]]]:
        """`account_instrument_rows` in steps of `steps.COPIES_PER_STEP` rows (a million rows
        at once held the event loop about 0.4 s at the start of a close); no row may be added
        or removed between them."""
        book = self.book
        low, high = PositionKey(account_id, "", ""), PositionKey(account_id, "\U0010ffff", "")
        grouped: dict[str, list[Position]] = {}
        account_rows, strategy_rows = book.account_rows, book.strategy_rows
        for chunk in steps.copies(account_rows.irange(low, high)):
            for key in chunk:
                grouped[key.instrument_id] = [account_rows[key]]
            yield
        for chunk in steps.copies(strategy_rows.irange(low, high)):
            for key in chunk:
                grouped[key.instrument_id].append(strategy_rows[key])
            yield
        return grouped

    def _apply_fill(
        self,
        fill: Fill,
        sequence: int,
        *,
        bust: bool = False,
        book: bool = True,
        outside_window: bool = False,
    ) -> Applied:
        """Books a fill (on its rows too, unless `book` is False: a correction books its rows
        itself); a bust (a correction taking a fill back) touches neither traces nor
        reservations, and takes the fill back from its order."""
        rows: tuple[RowChange, ...] = ()
        realized_before = ZERO
        if book:
            held = self.book.get(PositionKey(fill.account_id, fill.strategy_id, fill.instrument_id))
            realized_before = held.realized_pnl if held is not None else ZERO
            rows = tuple(self.book.apply_fill(fill, sequence, outside_window=outside_window))
        if fill.trace_id and not bust:
            self.traces.record(fill, sequence, self.instruments.multiplier(fill.instrument_id))
        if bust:
            order = self.orders.unlink_fill(fill, sequence)
        else:
            order = self.orders.link_fill(fill, sequence)
        instrument = self.instruments.ensure(fill.instrument_id)
        changed: dict[BalanceKey, Balance] = {}
        with localcontext(EXACT):
            notional = fill.quantity * fill.price * instrument.multiplier
            cash_key = BalanceKey(fill.account_id, instrument.currency)
            cash = notional if fill.side is Side.SELL else -notional
            if fill.commission and (fill.commission_currency or cash_key.currency) != (
                cash_key.currency
            ):
                fee_key = BalanceKey(fill.account_id, fill.commission_currency)
                changed[fee_key] = self.balances.move_cash(
                    fee_key, -fill.commission, fill.timestamp_ns, sequence
                )
            else:
                cash -= fill.commission
            changed[cash_key] = self.balances.move_cash(cash_key, cash, fill.timestamp_ns, sequence)
            if fill.side is Side.BUY and not bust:  # what a buy costs was reserved for it
                fee_here = fill.commission_currency in ("", cash_key.currency)
                cost = notional + (max(fill.commission, ZERO) if fee_here else ZERO)
                keys = order_keys(fill.order_id, fill.order_ref)
                if order is not None:  # the order may have been reserved under its other id
                    keys += order_keys(order.order_id, order.order_ref)
                for balance in self.balances.consume(
                    fill.account_id, keys, cash_key.currency, cost, fill.timestamp_ns, sequence
                ):
                    changed[balance.key] = balance
            if book and not bust:
                self.performance.booked(
                    fill, (change.position for change in rows), realized_before=realized_before,
                    notional=notional, currency=instrument.currency,
                )  # fmt: skip
        return Applied(
            rows=rows,
            order=order.copy() if order else None,
            balances=tuple(balance.copy() for balance in changed.values()),
        )

    def _apply_status(self, update: OrderStatusUpdate, sequence: int) -> Applied:
        order, transition = self.orders.apply_status(update, sequence)
        balances: list[Balance] = []
        if order.status in TERMINAL:
            for key in order_keys(order.order_id, order.order_ref):
                balances.extend(
                    self.balances.release_order(
                        order.account_id, key, update.timestamp_ns, sequence
                    )
                )
        return Applied(
            order=order.copy(),
            transition=transition,
            balances=tuple(balance.copy() for balance in balances),
        )

    def record(self, event: ExecutionEvent) -> Outcome:
        """Admits and applies at once: for a ledger with nothing to make durable."""
        outcome = self.admit(event)
        if outcome.result is Result.ACCEPTED:
            applied = self.apply(event, outcome.sequence)
            return Outcome(event.event_id, Result.ACCEPTED, outcome.sequence, applied=applied)
        return outcome


def _copies(balance: Balance | None) -> tuple[Balance, ...]:
    return (balance.copy(),) if balance is not None else ()


E = TypeVar("E", bound=JournaledEvent)


@dataclass(frozen=True, slots=True, kw_only=True)
class KindRules(Generic[E]):
    """How the ledger takes one kind of event, in one place: the field its id comes from,
    what refuses it at admission (a refusal naming the field, or None), what admitting it notes
    before it applies (a later event of the same batch may need it), how it applies, and
    whether its time moves the event clock (market data does not), and, for a kind whose
    applying visits every row of its account (its cost grows with the book, not with the
    event), the same apply in steps (steps.py)."""

    id_field: str
    apply: Callable[[Ledger, E, int], Applied]
    refuses: Callable[[Ledger, E], Refusal | None] | None = None
    admitted: Callable[[Ledger, E], None] | None = None
    moves_clock: bool = True
    steps: Callable[[Ledger, E, int], Steps[Applied]] | None = None


KINDS: dict[type[JournaledEvent], KindRules[Any]] = {
    Fill: KindRules(
        id_field="fill_id", apply=Ledger._apply_new_fill, refuses=Ledger._refuses_fill,
        admitted=Ledger._admitted_fill,
    ),
    FillCorrection: KindRules(
        id_field="correction_id", apply=Ledger._apply_correction,
        refuses=Ledger._refuses_correction, admitted=Ledger._admitted_correction,
    ),
    CommissionAmendment: KindRules(
        id_field="amendment_id", apply=Ledger._apply_commission,
        refuses=Ledger._refuses_amendment,
    ),
    OrderStatusUpdate: KindRules(
        id_field="update_id", apply=Ledger._apply_status
    ),
    CashTransfer: KindRules(id_field="transfer_id", apply=Ledger._apply_transfer),
    CashReservation: KindRules(
        id_field="reservation_id", apply=Ledger._apply_reservation
    ),
    ReservationRelease: KindRules(
        id_field="release_id", apply=Ledger._apply_release
    ),
    InstrumentDefinition: KindRules(
        id_field="instrument_id", apply=Ledger._apply_instrument,
        admitted=Ledger._admitted_instrument,
    ),
    AccountDefinition: KindRules(
        id_field="account_id", apply=Ledger._apply_account
    ),
    BrokerPositions: KindRules(
        id_field="snapshot_id", apply=Ledger._apply_broker_positions
    ),
    FxFixing: KindRules(
        id_field="timestamp_ns", apply=Ledger._apply_fx, moves_clock=False
    ),
    DayClose: KindRules(
        id_field="trading_date", apply=Ledger._apply_day_close, moves_clock=False,
        steps=Ledger._closing_day,
    ),
}  # fmt: skip
"""Every kind the journal holds: a new kind adds its entry here (and its event class)."""


def _id_field(event: ExecutionEvent) -> str:
    return KINDS[type(event)].id_field


def visits_account(event: ExecutionEvent) -> bool:
    """Whether applying the event visits every row of its account (KindRules.steps)."""
    return KINDS[type(event)].steps is not None


def _replaced(amendment: CommissionAmendment, by: str) -> Refusal:
    return Refusal(
        RefusalKind.CONFLICT,
        "fill_id",
        f"fill {amendment.fill_id!r} was replaced by correction {by!r}: "
        "amend the correction's commission instead",
    )


def _in_columns(
    events: Iterable[
        tuple[int, JournaledFill | JournaledFills | FillCorrection | CommissionAmendment]
    ],
) -> Iterator[tuple[int, JournaledFills | FillCorrection | CommissionAmendment]]:
    """Journaled events as reload_correctable takes them: fills given one at a time put in
    columns, a run of them at once."""
    run: list[tuple[int, JournaledFill]] = []
    for sequence, event in events:
        if isinstance(event, JournaledFill):
            run.append((sequence, event))
            continue
        if run:
            yield run[0][0], _columns(run)
            run = []
        yield sequence, event
    if run:
        yield run[0][0], _columns(run)


def _columns(run: list[tuple[int, JournaledFill]]) -> JournaledFills:
    def strings(field: str) -> npt.NDArray[np.object_]:
        return np.array([getattr(fill, field) for _, fill in run], dtype=object)

    return JournaledFills(
        np.array([sequence for sequence, _ in run], dtype=np.int64),
        strings("account_id"), strings("strategy_id"), strings("instrument_id"),
        strings("fill_id"),
        np.array([fill.timestamp_ns for _, fill in run], dtype=np.int64),
        strings("text"),
    )  # fmt: skip
