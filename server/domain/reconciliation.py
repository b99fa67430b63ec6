"""Reconciliation of a live account against what its broker holds (the legacy algorithm,
adapted): the broker's positions carry no strategy, the service's rows do.

For each instrument the broker quantity is compared exactly with the sum of the strategy rows:
- broker position, no rows in the service: the whole position becomes a row of the
  `UNATTRIBUTED` owner;
- quantities differ: a `RESIDUAL` row carries broker - attributed, at the weighted average cost
  that makes the strategy rows plus the residual cost what the broker says the position cost;
- the broker is flat and the strategies net to zero (one long, one short): kept, attribution
  and all;
- quantities agree: the average costs are compared like with like. The broker's (IB's
  `avgCost`) is per contract for derivatives (divided by the multiplier here) and includes
  the commissions of the trades that opened the position; the service's `avg_cost` excludes
  fees, and its `fees` are every commission the row paid, closing ones included. So the
  broker's unit cost lies between the service's average cost without fees and with all of
  them (`avg_cost` +/- fees / (|quantity| x multiplier), + for a long position, - for a short
  one: a short's average is the proceeds net of commissions): a match is a unit cost within
  that band, give or take the tolerance (relative, with an absolute floor per unit).

Cash is compared per currency (`compare_cash`): the broker's balance (journaled with the
snapshot, `BrokerPositions.cash`) against the service's at the snapshot's sequence, within an
absolute tolerance; a replay makes the same lines.

Nothing here rewrites a strategy's row: a run only produces a report and residual rows.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, localcontext

from server.domain.decimals import EXACT, ONE, ZERO, divide_half_even
from server.domain.events import RESERVED_OWNERS, BrokerPosition, BrokerPositions
from server.domain.instruments import InstrumentRegistry
from server.domain.position import Position

UNATTRIBUTED, RESIDUAL = RESERVED_OWNERS
"""The owners of a broker position the service has no rows for, and of the difference
between the broker's quantity and the strategies' sum."""


class LineStatus(enum.Enum):
    MATCHED = 1  # quantities agree, average cost within tolerance
    FLAT_ATTRIBUTED = 2  # the broker is flat; strategies hold rows that net to zero
    UNATTRIBUTED = 3  # the broker holds it; the service has no rows
    RESIDUAL = 4  # the broker's quantity differs from the strategies' sum
    COST_MISMATCH = 5  # quantities agree, average costs differ beyond the tolerance
    CASH_MISMATCH = 6  # a currency's cash differs beyond the cash tolerance

    @property
    def is_discrepancy(self) -> bool:
        return self in _DISCREPANCIES


_DISCREPANCIES = frozenset(
    {
        LineStatus.UNATTRIBUTED,
        LineStatus.RESIDUAL,
        LineStatus.COST_MISMATCH,
        LineStatus.CASH_MISMATCH,
    }
)


@dataclass(frozen=True, slots=True)
class ResidualRow:
    """A row reconciliation adds beside the strategies' rows, owned by no strategy."""

    account_id: str
    instrument_id: str
    owner: str  # UNATTRIBUTED or RESIDUAL
    quantity: Decimal
    cost_basis: Decimal  # signed like the quantity, in price units
    avg_cost: Decimal
    multiplier: Decimal
    currency: str
    sequence: int
    timestamp_ns: int
    # The broker's market price of the instrument at the run, if it gave one: what the row is
    # valued at while the service has no price of its own for the instrument.
    broker_price: Decimal | None = None

    def unrealized_pnl(self, market_price: Decimal) -> Decimal:
        with localcontext(EXACT):
            return (market_price * self.quantity - self.cost_basis) * self.multiplier

    def market_value(self, market_price: Decimal) -> Decimal:
        with localcontext(EXACT):
            return market_price * self.quantity * self.multiplier


@dataclass(frozen=True, slots=True)
class ReconciliationLine:
    """One instrument of a run: both sides' figures and how they compare."""

    instrument_id: str
    status: LineStatus
    broker_quantity: Decimal
    broker_avg_cost: Decimal  # as the broker reports it
    broker_unit_cost: Decimal  # per unit of price: avg_cost / the broker's multiplier
    account_quantity: Decimal  # the service's account-level row
    attributed_quantity: Decimal  # the sum of the strategy rows
    residual_quantity: Decimal  # broker - attributed
    service_avg_cost: Decimal  # the account-level row's
    # Each strategy's quantity in the instrument, flat rows included: the attribution kept.
    strategies: tuple[tuple[str, Decimal], ...] = ()
    residual: ResidualRow | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class CashLine:
    """One currency of a run: the broker's cash against the service's."""

    currency: str
    status: LineStatus  # MATCHED or CASH_MISMATCH
    broker_cash: Decimal
    service_cash: Decimal  # every chain of the currency
    note: str = ""

    @property
    def difference(self) -> Decimal:
        with localcontext(EXACT):
            return self.broker_cash - self.service_cash


def compare_cash(
    broker: Mapping[str, Decimal], service: Mapping[str, Decimal], policy: ReconcilePolicy
) -> tuple[CashLine, ...]:
    """A line per currency either side holds (a zero balance on both is left out), by
    currency: matched when the two differ by at most `policy.cash_tolerance`."""
    lines = []
    with localcontext(EXACT):
        for currency in sorted(broker.keys() | service.keys()):
            held, booked = broker.get(currency, ZERO), service.get(currency, ZERO)
            if not held and not booked:
                continue
            if abs(held - booked) <= policy.cash_tolerance:
                lines.append(CashLine(currency, LineStatus.MATCHED, held, booked))
                continue
            note = (
                f"cash {currency}: broker {held} vs service {booked} ({held - booked:+}): "
                "book what the broker moved (interest, dividends, fees, conversions) as "
                "cash transfers, or find the missing fill"
            )
            lines.append(CashLine(currency, LineStatus.CASH_MISMATCH, held, booked, note))
    return tuple(lines)


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """One run's report."""

    account_id: str
    snapshot_id: str
    sequence: int
    timestamp_ns: int
    broker_positions: int
    lines: tuple[ReconciliationLine, ...]
    # Lines of a run kept in history lose their matched lines; the counts stay.
    matched: int = 0
    discrepancies: int = 0
    # Cash per currency (empty when the broker reports none), counted like the lines.
    cash: tuple[CashLine, ...] = ()

    @property
    def clean(self) -> bool:
        return self.discrepancies == 0

    def with_cash(self, cash: tuple[CashLine, ...]) -> Reconciliation:
        """The run with its cash lines, counted in `matched` and `discrepancies`."""
        mismatched = sum(line.status.is_discrepancy for line in cash)
        return replace(
            self,
            cash=cash,
            matched=self.matched + len(cash) - mismatched,
            discrepancies=self.discrepancies + mismatched,
        )

    def discrepant(self) -> set[str]:
        """What this run found discrepant: instrument ids, and `cash:<currency>`."""
        found = {line.instrument_id for line in self.lines if line.status.is_discrepancy}
        found.update(f"cash:{line.currency}" for line in self.cash if line.status.is_discrepancy)
        return found

    @property
    def residuals(self) -> list[ResidualRow]:
        return [line.residual for line in self.lines if line.residual is not None]

    def without_matched(self) -> Reconciliation:
        kept = tuple(line for line in self.lines if line.status is not LineStatus.MATCHED)
        return replace(self, lines=kept)


@dataclass(frozen=True, slots=True)
class ReconcilePolicy:
    # A broker unit cost within max(cost_tolerance x |service cost|, cost_floor) of the
    # service's cost band (without to with its fees) is a match.
    cost_tolerance: Decimal = Decimal("0.005")
    precision: Decimal = Decimal("1e-9")
    # Per unit of price: what the relative tolerance cannot give a cost near zero.
    cost_floor: Decimal = Decimal("0.0001")
    # Cash of a currency matches when the broker's and the service's differ by at most this.
    cash_tolerance: Decimal = Decimal("0.01")


def cost_tolerance(cost: Decimal, policy: ReconcilePolicy) -> Decimal:
    """How far a broker's unit cost may sit from the service's `cost`: relative, but never
    below the floor (a $0.05 option and a $500 stock alike)."""
    with localcontext(EXACT):
        return max(policy.cost_tolerance * abs(cost), policy.cost_floor)


def _fee_band(row: Position | None, avg: Decimal, precision: Decimal) -> tuple[Decimal, Decimal]:
    """The service's unit cost without and with all of the row's fees (in its currency),
    as (low, high). Call inside `localcontext(EXACT)`."""
    if row is None or not row.quantity or not row.fees:
        return avg, avg
    per_unit = divide_half_even(row.fees, abs(row.quantity) * row.multiplier, precision)
    with_fees = avg + per_unit if row.quantity > 0 else avg - per_unit
    return min(avg, with_fees), max(avg, with_fees)


def reconcile(
    snapshot: BrokerPositions,
    sequence: int,
    rows_by_instrument: dict[str, list[Position]],
    instruments: InstrumentRegistry,
    policy: ReconcilePolicy,
) -> Reconciliation:
    """Compares a broker snapshot with the account's rows (per instrument: its account-level
    row and its strategy rows)."""
    broker = {position.instrument_id: position for position in snapshot.positions}
    lines = []
    with localcontext(EXACT):
        for instrument_id in sorted(broker.keys() | rows_by_instrument.keys()):
            line = _line(
                snapshot,
                sequence,
                instrument_id,
                broker.get(instrument_id),
                rows_by_instrument.get(instrument_id, []),
                instruments,
                policy,
            )
            if line is not None:
                lines.append(line)
    return Reconciliation(
        snapshot.account_id,
        snapshot.snapshot_id,
        sequence,
        snapshot.timestamp_ns,
        len(snapshot.positions),
        tuple(lines),
        matched=sum(line.status is LineStatus.MATCHED for line in lines),
        discrepancies=sum(line.status.is_discrepancy for line in lines),
    )


def _line(
    snapshot: BrokerPositions,
    sequence: int,
    instrument_id: str,
    held: BrokerPosition | None,
    rows: list[Position],
    instruments: InstrumentRegistry,
    policy: ReconcilePolicy,
) -> ReconciliationLine | None:
    """One instrument's comparison; call inside `localcontext(EXACT)`."""
    account_row = None
    strategy_rows = []
    attributed = attributed_basis = ZERO
    for row in rows:
        if row.key.is_account_level:
            account_row = row
        else:
            strategy_rows.append(row)
            attributed += row.quantity
            attributed_basis += row.cost_basis
    strategies_hold = any(row.quantity for row in strategy_rows)
    if held is None and not strategies_hold and not (account_row and account_row.quantity):
        return None  # flat on both sides: nothing to say
    broker_quantity = held.quantity if held else ZERO
    residual = broker_quantity - attributed
    unit_cost = divide_half_even(held.avg_cost, held.multiplier, policy.precision) if held else ZERO
    service_avg = account_row.avg_cost(policy.precision) if account_row else ZERO

    status, owner, basis, note = LineStatus.MATCHED, "", ZERO, ""
    if not strategies_hold:
        if broker_quantity:
            status, owner, basis = LineStatus.UNATTRIBUTED, UNATTRIBUTED, residual * unit_cost
            note = "the broker holds a position no strategy's fills account for"
        else:
            note = "flat at the broker; the service's rows are flat"
    elif residual:
        # The residual's cost: what the broker says the whole position cost, less what the
        # strategies' rows cost. A sign at odds with the quantity means it cannot be priced
        # that way: the broker's unit cost (or, flat there, the service's) is used.
        status, owner = LineStatus.RESIDUAL, RESIDUAL
        basis = broker_quantity * unit_cost - attributed_basis
        if not basis or (basis > 0) != (residual > 0):
            basis = residual * (unit_cost if held else service_avg)
        note = f"broker {broker_quantity} vs strategies {attributed}"
    elif not broker_quantity:
        status = LineStatus.FLAT_ATTRIBUTED
        note = "flat at the broker; the strategies' rows net to zero and are kept"
    else:
        low, high = _fee_band(account_row, service_avg, policy.precision)
        off = low - unit_cost if unit_cost < low else unit_cost - high if unit_cost > high else ZERO
        with_fees = low if high == service_avg else high
        if off > cost_tolerance(max(abs(low), abs(high)), policy):
            status = LineStatus.COST_MISMATCH
            fees = account_row.fees if account_row else ZERO
            note = (
                f"average cost: broker {unit_cost} per unit vs service {service_avg} "
                f"({with_fees} with its fees of {fees})"
            )
        elif unit_cost != service_avg:
            note = (
                f"average cost: broker {unit_cost} per unit, service {service_avg} "
                f"({with_fees} with its fees)"
            )

    residual_row = None
    if owner:
        residual_row = ResidualRow(
            snapshot.account_id,
            instrument_id,
            owner,
            residual,
            basis,
            divide_half_even(abs(basis), abs(residual), policy.precision),
            rows[0].multiplier if rows else held.multiplier if held else ONE,
            _currency(instrument_id, held, rows, instruments),
            sequence,
            snapshot.timestamp_ns,
            held.market_price if held else None,
        )
    return ReconciliationLine(
        instrument_id,
        status,
        broker_quantity,
        held.avg_cost if held else ZERO,
        unit_cost,
        account_row.quantity if account_row else ZERO,
        attributed,
        residual,
        service_avg,
        tuple((row.key.strategy_id, row.quantity) for row in strategy_rows),
        residual_row,
        note,
    )


def _currency(
    instrument_id: str,
    held: BrokerPosition | None,
    rows: list[Position],
    instruments: InstrumentRegistry,
) -> str:
    """A residual's currency: its rows', else the instrument's as defined, else the
    broker's, else the default (an instrument known only from the broker is not registered)."""
    if rows:
        return rows[0].currency
    defined = instruments.get(instrument_id)
    if defined is not None and not defined.provisional:
        return defined.currency
    return (held.currency if held else "") or instruments.currency(instrument_id)


@dataclass(slots=True)
class _AccountRuns:
    latest: Reconciliation
    history: deque[Reconciliation] = field(default_factory=deque)
    # The latest run's lines by instrument, for the consolidated view.
    lines: dict[str, ReconciliationLine] = field(default_factory=dict)

    @classmethod
    def starting(cls, run: Reconciliation) -> _AccountRuns:
        return cls(run, lines={line.instrument_id: line for line in run.lines})


class ReconciliationBook:
    """The latest run of each account in full, and a bounded history of earlier runs
    (newest first, without their matched lines)."""

    def __init__(self, history: int = 100) -> None:
        self.history = history
        self._accounts: dict[str, _AccountRuns] = {}

    def record(self, run: Reconciliation) -> None:
        runs = self._accounts.get(run.account_id)
        if runs is None:
            self._accounts[run.account_id] = _AccountRuns.starting(run)
            return
        runs.history.appendleft(runs.latest.without_matched())
        while len(runs.history) > self.history - 1:
            runs.history.pop()
        runs.latest = run
        runs.lines = {line.instrument_id: line for line in run.lines}

    def latest(self, account_id: str) -> Reconciliation | None:
        runs = self._accounts.get(account_id)
        return runs.latest if runs else None

    def runs(self, account_id: str) -> Iterator[Reconciliation]:
        """Newest first: the latest in full, then the history."""
        runs = self._accounts.get(account_id)
        if runs is None:
            return
        yield runs.latest
        yield from runs.history

    def accounts(self) -> Iterable[str]:
        return self._accounts.keys()

    def all_runs(self) -> list[Reconciliation]:
        """Every run kept, oldest first per account: what a checkpoint saves."""
        return [run for account in self._accounts for run in reversed(list(self.runs(account)))]

    def restore(self, runs: Iterable[Reconciliation]) -> None:
        for run in runs:
            self.record(run)

    def line(self, account_id: str, instrument_id: str) -> ReconciliationLine | None:
        """The instrument's line in the account's latest run."""
        runs = self._accounts.get(account_id)
        return runs.lines.get(instrument_id) if runs else None
