"""What subscribers hear: the updates, and what each kind of event publishes once applied.

`PUBLISHES` holds one entry per kind the journal holds (the ledger's `KINDS` says how each
applies): a new kind adds its entry here. Every kind also publishes the cash balances it moved,
and the reconciliation run it made, if any.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Generic, TypeAlias, TypeVar

from server.application.ports import OrderTransition, ReconciliationRun
from server.application.reads import ReadModel
from server.application.subscriptions import Topic
from server.domain.balances import Balance
from server.domain.book import PositionView, Price, fee_rates, position_view
from server.domain.events import (
    AccountDefinition,
    BrokerPositions,
    CashReservation,
    CashTransfer,
    CommissionAmendment,
    DayClose,
    Fill,
    FillCorrection,
    FxFixing,
    InstrumentDefinition,
    JournaledEvent,
    OrderStatusUpdate,
    ReservationRelease,
)
from server.domain.ledger import KINDS, Applied, Ledger
from server.domain.marks import Mark
from server.domain.orders import Order, Transition
from server.domain.pnl_history import RowClose
from server.domain.position import ChangeKind, Position
from server.domain.reconciliation import Reconciliation
from server.domain.refusals import Refusal
from server.domain.restatement import Placement

log = logging.getLogger("portfolio.service")


@dataclass(frozen=True, slots=True, kw_only=True)
class PositionChanged:
    """A row moved by a fill: a copy of the row as it was then, viewed only when needed."""

    sequence: int
    kind: ChangeKind
    fill: Fill
    row: Position
    price: Price
    precision: Decimal
    base_currency: str
    fx_rate: Decimal | None
    corrects: str = ""  # set when the fill is a broker correction of that fill
    placement: Placement = Placement.IN_ORDER  # whether the fill restated the row
    fee_rates: tuple[Decimal | None, ...] = ()  # of the row's fees in other currencies
    day_start: RowClose | None = None  # the row at its account's last close

    @property
    def position(self) -> PositionView:
        return position_view(
            self.row, self.price.price, self.precision, self.price,
            base_currency=self.base_currency, fx_rate=self.fx_rate, fee_rates=self.fee_rates,
            day_start=self.day_start,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class OrderStatusChanged:
    sequence: int
    update: OrderStatusUpdate
    order: Order
    transition: Transition


@dataclass(frozen=True, slots=True)
class BalanceChanged:
    sequence: int
    balance: Balance


@dataclass(frozen=True, slots=True)
class MarkChanged:
    """An instrument's price moved (coalesced: the latest of a burst)."""

    sequence: int
    mark: Mark


@dataclass(frozen=True, slots=True)
class ReconciliationChanged:
    """A reconciliation run finished."""

    sequence: int
    run: ReconciliationRun


PortfolioChange = (
    PositionChanged | OrderStatusChanged | BalanceChanged | MarkChanged | ReconciliationChanged
)

Update: TypeAlias = tuple[int, Topic, PortfolioChange]
"""An update with its sequence and the topic subscribers filter on."""

E = TypeVar("E", bound=JournaledEvent)


def _nothing(reads: ReadModel, event: Any, sequence: int, applied: Applied) -> Iterator[Update]:
    return iter(())


@dataclass(frozen=True, slots=True, kw_only=True)
class Publishes(Generic[E]):
    """What one kind of event publishes, in one place: its own updates (beside the balances
    and the run every kind publishes), the run it replaces, noted before it applies (a run
    publishes the residuals the previous one had and it no longer has), and what a refusal
    found only when it applies logs."""

    updates: Callable[[ReadModel, E, int, Applied], Iterator[Update]] = _nothing
    replaces: Callable[[Ledger, E], Reconciliation | None] | None = None
    refused: Callable[[E, Refusal], None] | None = None
    # For the analysts' views catching up after a restart, from what the ledger kept: how an
    # event applied earlier was judged (an order's transition) and the run it made.
    judged: Callable[[Ledger, E, int], OrderTransition | None] | None = None
    reported: Callable[[ReadModel, E, int], ReconciliationRun | None] | None = None

    def before(self, ledger: Ledger, event: E) -> Reconciliation | None:
        """What must be noted before `event` applies: the run it replaces, if any."""
        return None if self.replaces is None else self.replaces(ledger, event)

    def publish(
        self,
        reads: ReadModel,
        event: E,
        sequence: int,
        applied: Applied,
        previous: Reconciliation | None,
    ) -> tuple[list[Update], ReconciliationChanged | None]:
        """Everything applying `event` publishes, in order (its kind's own updates, the
        balances it moved, the run it made), and that run."""
        if applied.refusal is not None and self.refused is not None:
            self.refused(event, applied.refusal)
        published = list(self.updates(reads, event, sequence, applied))
        for balance in applied.balances:
            topic = Topic(balance.key.account_id, "", "", is_position=False, is_balance=True)
            published.append((sequence, topic, BalanceChanged(sequence, balance)))
        run = None
        if applied.reconciliation is not None:
            run = reconciliation_changed(reads, applied.reconciliation, previous)
            topic = Topic(
                applied.reconciliation.account_id, "", "", is_position=False, is_reconciliation=True
            )
            published.append((sequence, topic, run))
        return published, run


def reconciliation_changed(
    reads: ReadModel, run: Reconciliation, previous: Reconciliation | None
) -> ReconciliationChanged:
    """A run with its residual rows valued now; a residual of the previous run that this
    one no longer has is included flat, so the stored snapshot drops it."""
    residuals = {row.instrument_id: reads.residual_view(row) for row in run.residuals}
    for gone in previous.residuals if previous else ():
        if gone.instrument_id not in residuals:
            flat = replace(
                gone, quantity=Decimal(0), cost_basis=Decimal(0), avg_cost=Decimal(0),
                sequence=run.sequence, timestamp_ns=run.timestamp_ns,
            )  # fmt: skip
            residuals[gone.instrument_id] = reads.residual_view(flat)
    return ReconciliationChanged(run.sequence, ReconciliationRun(run, list(residuals.values())))


def _fill_updates(
    reads: ReadModel, fill: Fill, sequence: int, applied: Applied, corrects: str = ""
) -> Iterator[Update]:
    book, account_id = reads.ledger.book, fill.account_id
    for change in applied.rows:
        key = change.position.key
        topic = Topic(*key, is_position=True, is_account_level=key.is_account_level)
        price = book.price(key.instrument_id)
        base, rate = reads.base_of(account_id, change.position.currency)
        rates = fee_rates(change.position, lambda currency: reads.base_of(account_id, currency)[1])
        yield (
            sequence,
            topic,
            PositionChanged(
                sequence=sequence, kind=change.kind, fill=fill, row=change.position,
                price=price, precision=book.precision, base_currency=base, fx_rate=rate,
                corrects=corrects, placement=change.placement, fee_rates=rates,
                day_start=reads.ledger.pnl.last_close(key),
            ),
        )  # fmt: skip


def _correction_updates(
    reads: ReadModel, correction: FillCorrection, sequence: int, applied: Applied
) -> Iterator[Update]:
    """The bust and the replacement: each row once, as the correction left it."""
    last = {change.position.key: change for change in applied.rows}
    corrected = replace(applied, rows=tuple(last.values()))
    return _fill_updates(reads, correction.replacement(), sequence, corrected, correction.corrects)


def _commission_updates(
    reads: ReadModel, amendment: CommissionAmendment, sequence: int, applied: Applied
) -> Iterator[Update]:
    """The fill's rows as the amended commission left them (the fill as booked now)."""
    found = reads.ledger.corrections.find(amendment.account_id, amendment.fill_id)
    if not applied.rows or found is None:
        return iter(())
    return _fill_updates(reads, found[1].fill, sequence, applied, amendment.fill_id)


def _commission_refused(amendment: CommissionAmendment, refusal: Refusal) -> None:
    log.warning("commission amendment %s refused: %s", amendment.amendment_id, refusal)


def _status_updates(
    reads: ReadModel, update: OrderStatusUpdate, sequence: int, applied: Applied
) -> Iterator[Update]:
    assert applied.order is not None and applied.transition is not None
    order = replace(applied.order, history=[applied.transition])
    topic = Topic(update.account_id, order.strategy_id, order.instrument_id, False)
    yield sequence, topic, OrderStatusChanged(sequence, update, order, applied.transition)


def _status_judged(
    ledger: Ledger, update: OrderStatusUpdate, sequence: int
) -> OrderTransition | None:
    """The transition the update made, from its order's history (None: it made none); None
    when the order left memory."""
    order = ledger.orders.find(update.account_id, update.order_id, update.order_ref)
    if order is None:
        return None
    found = next((t for t in order.history if t.sequence == sequence), None)
    return OrderTransition(sequence, order.order_key, found)


def _snapshot_reported(
    reads: ReadModel, snapshot: BrokerPositions, sequence: int
) -> ReconciliationRun | None:
    """The run the snapshot made, if still kept, against the run before it."""
    runs = list(reads.ledger.reconciliations.runs(snapshot.account_id))  # newest first
    for index, run in enumerate(runs):
        if run.sequence == sequence:
            previous = runs[index + 1] if index + 1 < len(runs) else None
            return reconciliation_changed(reads, run, previous).run
    return None


def _correction_refused(correction: FillCorrection, refusal: Refusal) -> None:
    log.warning("correction %s refused: %s", correction.correction_id, refusal)


def _run_replaced(ledger: Ledger, snapshot: BrokerPositions) -> Reconciliation | None:
    return ledger.reconciliations.latest(snapshot.account_id)


PUBLISHES: dict[type[JournaledEvent], Publishes[Any]] = {
    Fill: Publishes(updates=_fill_updates),
    FillCorrection: Publishes(updates=_correction_updates, refused=_correction_refused),
    CommissionAmendment: Publishes(updates=_commission_updates, refused=_commission_refused),
    OrderStatusUpdate: Publishes(updates=_status_updates, judged=_status_judged),
    CashTransfer: Publishes(),
    CashReservation: Publishes(),
    ReservationRelease: Publishes(),
    InstrumentDefinition: Publishes(),
    AccountDefinition: Publishes(),
    BrokerPositions: Publishes(replaces=_run_replaced, reported=_snapshot_reported),
    FxFixing: Publishes(),
    DayClose: Publishes(),
}
"""Every kind the journal holds, as the ledger's KINDS lists them."""

assert PUBLISHES.keys() == KINDS.keys(), "a kind without its publishing rules"
