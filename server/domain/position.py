"""One position row under average-cost accounting.

The row keeps its exact cost basis (signed like the quantity, in price units), not a rounded
average: a reduction releases its proportional share of the basis, rounded to `precision`, and
the rounding remainder stays in the basis until the position goes flat, which releases all of
it. So every closed round trip realizes exactly its proceeds minus its cost.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, NamedTuple

from server.domain.decimals import ZERO, divide_half_even
from server.domain.events import Fill

if TYPE_CHECKING:
    from server.domain.restatement import Window

_new = object.__new__

ACCOUNT_LEVEL = ""
"""The strategy id of an account-level book row."""


class PositionKey(NamedTuple):
    account_id: str
    strategy_id: str
    instrument_id: str

    @property
    def is_account_level(self) -> bool:
        return self.strategy_id == ACCOUNT_LEVEL


class ChangeKind(enum.Enum):
    OPENED = 1
    MODIFIED = 2
    CLOSED = 3


def change_kind(was_flat: bool, quantity: Decimal) -> ChangeKind:
    if was_flat:
        return ChangeKind.OPENED if quantity else ChangeKind.MODIFIED
    return ChangeKind.CLOSED if not quantity else ChangeKind.MODIFIED


@dataclass(slots=True, kw_only=True)
class Position:
    key: PositionKey
    multiplier: Decimal
    quantity: Decimal = ZERO
    cost_basis: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    # Realized P&L in the account's base currency, each realization converted at the rate in
    # force when it happened; None when a rate was missing then (see restatement.Booker).
    realized_pnl_base: Decimal | None = ZERO
    base_currency: str = ""  # the account's (it cannot change once the account has rows)
    fees: Decimal = ZERO  # in the row's currency only
    # Fees charged in other currencies (None while there are none: most rows have none).
    other_fees: dict[str, Decimal] | None = None
    trade_count: int = 0
    opened_at_ns: int = 0
    updated_at_ns: int = 0
    last_sequence: int = 0
    currency: str = ""  # the instrument's, when the row was opened: its P&L is in it
    # The execution-time key (timestamp_ns, fill_id) of the latest fill folded out of the
    # restatement window (two fields, not a tuple: 56 bytes a row), and the window itself
    # (see restatement.py).
    booked_through_ns: int = 0
    booked_through_id: str = ""
    window: Window | None = field(default=None, compare=False, repr=False)
    # The price the book's totals hold this row at (see PositionBook: revalued when read).
    valued_at: Decimal = field(default=ZERO, compare=False, repr=False)

    @property
    def booked_through(self) -> tuple[int, str]:
        return (self.booked_through_ns, self.booked_through_id)

    @booked_through.setter
    def booked_through(self, key: tuple[int, str]) -> None:
        self.booked_through_ns, self.booked_through_id = key

    def apply_fill(self, fill: Fill, sequence: int, precision: Decimal) -> ChangeKind:
        """Books one fill after every fill already booked (no restatement); inside
        `localcontext(EXACT)`."""
        was_flat = not self.quantity
        realized = self.book(
            time_ns=fill.timestamp_ns, quantity=fill.signed_quantity, price=fill.price,
            commission=fill.commission, fee_currency=fill.commission_currency,
            precision=precision,
        )  # fmt: skip
        if realized and self.realized_pnl_base is not None:  # no rate here: missing if foreign
            self.realized_pnl_base = None if self.foreign else self.realized_pnl_base + realized
        self.last_sequence = sequence
        return change_kind(was_flat, self.quantity)

    def book(
        self,
        *,
        time_ns: int,
        quantity: Decimal,
        price: Decimal,
        commission: Decimal,
        fee_currency: str,
        precision: Decimal,
    ) -> Decimal:
        """Applies one execution (`quantity` signed) to the figures, except realized P&L in
        base (the caller converts); returns the P&L it realized. Inside `EXACT`."""
        was_flat = not self.quantity
        realized = ZERO
        delta = quantity
        if self.quantity is ZERO:  # a new row: share the fill's Decimal (104 bytes a row)
            self.cost_basis += delta * price
            self.quantity = delta
        elif was_flat or (self.quantity > 0) == (delta > 0):
            self.cost_basis += delta * price
            self.quantity += delta
        else:
            held = abs(self.quantity)
            closed = min(abs(delta), held)
            if closed == held:
                released = self.cost_basis
            else:
                released = divide_half_even(self.cost_basis * closed, held, precision)
            direction = 1 if self.quantity > 0 else -1
            realized = (direction * closed * price - released) * self.multiplier
            self.realized_pnl += realized
            self.cost_basis -= released
            self.quantity += delta
            if closed < abs(delta):  # a flip: the remainder opens a new leg at the fill price
                self.cost_basis = self.quantity * price
                self.opened_at_ns = time_ns
        if was_flat:
            self.opened_at_ns = time_ns
        elif not self.quantity:
            self.opened_at_ns = 0
        if not commission:
            pass  # most fills: no new Decimal for a row's fees
        elif not fee_currency or fee_currency == self.currency:
            self.fees = commission if self.fees is ZERO else self.fees + commission
        else:
            other = self.other_fees if self.other_fees is not None else {}
            other[fee_currency] = other.get(fee_currency, ZERO) + commission
            self.other_fees = other
        self.trade_count += 1
        if time_ns > self.updated_at_ns:
            self.updated_at_ns = time_ns
        return realized

    @property
    def foreign(self) -> bool:
        """Whether the row's currency is not its account's base (realized P&L converts)."""
        return bool(self.base_currency) and self.currency != self.base_currency

    def copy(self) -> Position:
        """A detached copy of the figures: the row as it is now, unaffected by later fills
        (without its restatement window, at no price). Slot by slot rather than through the
        constructor's eighteen keywords (several times faster: a checkpoint copies every row
        of the book on the event loop, a million at a stop)."""
        made: Position = _new(Position)
        made.key = self.key
        made.multiplier = self.multiplier
        made.quantity = self.quantity
        made.cost_basis = self.cost_basis
        made.realized_pnl = self.realized_pnl
        made.realized_pnl_base = self.realized_pnl_base
        made.base_currency = self.base_currency
        made.fees = self.fees
        made.other_fees = dict(self.other_fees) if self.other_fees else None
        made.trade_count = self.trade_count
        made.opened_at_ns = self.opened_at_ns
        made.updated_at_ns = self.updated_at_ns
        made.last_sequence = self.last_sequence
        made.currency = self.currency
        made.booked_through_ns = self.booked_through_ns
        made.booked_through_id = self.booked_through_id
        made.window = None
        made.valued_at = ZERO
        return made

    def take_figures(self, source: Position) -> None:
        """Sets the figures (not the identity, sequence or window) to those of `source`."""
        self.quantity = source.quantity
        self.cost_basis = source.cost_basis
        self.realized_pnl = source.realized_pnl
        self.realized_pnl_base = source.realized_pnl_base
        self.fees = source.fees
        self.other_fees = dict(source.other_fees) if source.other_fees else None
        self.trade_count = source.trade_count
        self.opened_at_ns = source.opened_at_ns
        self.updated_at_ns = source.updated_at_ns

    def other_fee_items(self) -> tuple[tuple[str, Decimal], ...]:
        """Fees in other currencies, by currency, leaving out those that came to zero."""
        if not self.other_fees:
            return ()
        return tuple((c, a) for c, a in sorted(self.other_fees.items()) if a)

    def avg_cost(self, precision: Decimal) -> Decimal:
        if not self.quantity:
            return ZERO
        # copy_abs: exact whatever the thread's context (abs() would round past 28 digits)
        return divide_half_even(self.cost_basis.copy_abs(), self.quantity.copy_abs(), precision)

    def market_value(self, market_price: Decimal) -> Decimal:
        return market_price * self.quantity * self.multiplier

    def unrealized_pnl(self, market_price: Decimal) -> Decimal:
        """Exact: measured against the basis, not the rounded average."""
        return (market_price * self.quantity - self.cost_basis) * self.multiplier


def restored(
    key: PositionKey,
    multiplier: Decimal,
    quantity: Decimal,
    cost_basis: Decimal,
    realized_pnl: Decimal,
    realized_pnl_base: Decimal | None,
    base_currency: str,
    fees: Decimal,
    other_fees: dict[str, Decimal] | None,
    trade_count: int,
    opened_at_ns: int,
    updated_at_ns: int,
    last_sequence: int,
    currency: str,
    booked_through_ns: int,
    booked_through_id: str,
) -> Position:
    """A row as a checkpoint holds it (no window, at no price), its fields positional and
    set slot by slot: the constructor's keywords cost several times more, and a restart
    makes a million rows."""
    made: Position = _new(Position)
    made.key = key
    made.multiplier = multiplier
    made.quantity = quantity
    made.cost_basis = cost_basis
    made.realized_pnl = realized_pnl
    made.realized_pnl_base = realized_pnl_base
    made.base_currency = base_currency
    made.fees = fees
    made.other_fees = other_fees
    made.trade_count = trade_count
    made.opened_at_ns = opened_at_ns
    made.updated_at_ns = updated_at_ns
    made.last_sequence = last_sequence
    made.currency = currency
    made.booked_through_ns = booked_through_ns
    made.booked_through_id = booked_through_id
    made.window = None
    made.valued_at = ZERO
    return made
