"""One position row under average-cost accounting.

The row keeps its exact cost basis (signed like the quantity, in price units), not a rounded
average: a reduction releases its proportional share of the basis, rounded to `precision`, and
the rounding remainder stays in the basis until the position goes flat, which releases all of
it. So every closed round trip realizes exactly its proceeds minus its cost.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

from server.domain.decimals import ZERO, divide_half_even
from server.domain.events import Fill

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


@dataclass(slots=True, kw_only=True)
class Position:
    key: PositionKey
    multiplier: Decimal
    quantity: Decimal = ZERO
    cost_basis: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO
    trade_count: int = 0
    opened_at_ns: int = 0
    updated_at_ns: int = 0
    last_sequence: int = 0
    currency: str = ""  # the instrument's, when the row was opened: its P&L is in it

    def apply_fill(self, fill: Fill, sequence: int, precision: Decimal) -> ChangeKind:
        """Books one fill; call inside `localcontext(EXACT)`."""
        was_flat = not self.quantity
        delta = fill.signed_quantity
        price = fill.price
        if was_flat or (self.quantity > 0) == (delta > 0):
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
            self.realized_pnl += (direction * closed * price - released) * self.multiplier
            self.cost_basis -= released
            self.quantity += delta
            if closed < abs(delta):  # a flip: the remainder opens a new leg at the fill price
                self.cost_basis = self.quantity * price
                self.opened_at_ns = fill.timestamp_ns
        if was_flat:
            self.opened_at_ns = fill.timestamp_ns
        elif not self.quantity:
            self.opened_at_ns = 0
        self.fees += fill.commission
        self.trade_count += 1
        self.updated_at_ns = max(self.updated_at_ns, fill.timestamp_ns)
        self.last_sequence = sequence
        if was_flat:
            return ChangeKind.OPENED
        return ChangeKind.CLOSED if not self.quantity else ChangeKind.MODIFIED

    def copy(self) -> Position:
        """A detached copy: the row as it is now, unaffected by later fills."""
        return Position(
            key=self.key,
            multiplier=self.multiplier,
            quantity=self.quantity,
            cost_basis=self.cost_basis,
            realized_pnl=self.realized_pnl,
            fees=self.fees,
            trade_count=self.trade_count,
            opened_at_ns=self.opened_at_ns,
            updated_at_ns=self.updated_at_ns,
            last_sequence=self.last_sequence,
            currency=self.currency,
        )

    def avg_cost(self, precision: Decimal) -> Decimal:
        if not self.quantity:
            return ZERO
        return divide_half_even(abs(self.cost_basis), abs(self.quantity), precision)

    def market_value(self, market_price: Decimal) -> Decimal:
        return market_price * self.quantity * self.multiplier

    def unrealized_pnl(self, market_price: Decimal) -> Decimal:
        """Exact: measured against the basis, not the rounded average."""
        return (market_price * self.quantity - self.cost_basis) * self.multiplier
