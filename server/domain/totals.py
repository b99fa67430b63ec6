"""Aggregates over many position rows, kept up to date incrementally.

A row's contribution is added when it changes and taken out just before; decimal arithmetic
is exact, so the running totals never drift from a full recount, and a query reads them in O(1).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext

from server.domain.decimals import EXACT, ZERO, divide_half_even
from server.domain.position import Position

_add, _subtract = EXACT.add, EXACT.subtract


class CurrencyMismatch(ValueError):
    """Amounts of different currencies were about to be added."""


@dataclass(slots=True, kw_only=True)
class Totals:
    """Aggregates of rows of one currency (`currency`; "" for totals of no rows yet)."""

    currency: str = ""
    realized_pnl: Decimal = ZERO
    # In the accounts' base currency, each realization at the rate then (see Position), and
    # how many rows miss it (a rate was missing when they realized).
    realized_pnl_base: Decimal = ZERO
    realized_base_missing: int = 0
    unrealized_pnl: Decimal = ZERO
    fees: Decimal = ZERO
    long_exposure: Decimal = ZERO
    short_exposure: Decimal = ZERO
    open_positions: int = 0
    total_positions: int = 0
    trade_count: int = 0

    # Read on the event loop and by the wire encoders, outside `EXACT`: its methods keep
    # these exact where the thread's context (28 digits) would round 18+18-digit amounts.
    @property
    def net_pnl(self) -> Decimal:
        return _subtract(_add(self.realized_pnl, self.unrealized_pnl), self.fees)

    @property
    def gross_exposure(self) -> Decimal:
        return _add(self.long_exposure, self.short_exposure)

    @property
    def net_exposure(self) -> Decimal:
        return _subtract(self.long_exposure, self.short_exposure)

    @classmethod
    def combined(cls, parts: Iterable[Totals]) -> Totals:
        """The totals of several disjoint sets of rows of one currency; raises
        CurrencyMismatch rather than add two currencies."""
        result = cls()
        with localcontext(EXACT):
            for part in parts:
                if part.currency != result.currency:
                    if result.currency:
                        raise CurrencyMismatch(
                            f"cannot add {part.currency} totals to {result.currency} totals"
                        )
                    result.currency = part.currency
                for name in _SUMMED:
                    setattr(result, name, getattr(result, name) + getattr(part, name))
        return result

    def add(self, row: Position, market_price: Decimal, sign: int = 1) -> None:
        """Adds (sign=1) or takes out (sign=-1) one row's contribution; inside `EXACT`."""
        self.realized_pnl += sign * row.realized_pnl
        if row.realized_pnl_base is None:
            self.realized_base_missing += sign
        else:
            self.realized_pnl_base += sign * row.realized_pnl_base
        self.fees += sign * row.fees
        self.trade_count += sign * row.trade_count
        self.total_positions += sign
        if row.quantity:
            self.open_positions += sign
            self.unrealized_pnl -= sign * row.cost_basis * row.multiplier
            self.revalue(sign * row.market_value(market_price), row.quantity > 0)

    def add_all(self, rows: Sequence[Position]) -> None:
        """Adds the contributions of many rows, each at the price it is valued at
        (`valued_at`), as `add` of each in turn would: the same terms summed in the same order
        per figure (a subtraction as the addition of the term negated), so the very same
        Decimals, exponent and sign of a zero included. Column by column, with `sum` doing the
        additions: a restart adds a million rows (`add` per row: about 3 us each). Inside
        `EXACT` (`sum` adds in the thread's context)."""
        self.realized_pnl = sum([row.realized_pnl for row in rows], self.realized_pnl)
        # `is not None`, not list.count(None): that compares each Decimal to None (slow)
        base = [row.realized_pnl_base for row in rows if row.realized_pnl_base is not None]
        self.realized_base_missing += len(rows) - len(base)
        self.realized_pnl_base = sum(base, self.realized_pnl_base)
        self.fees = sum([row.fees for row in rows], self.fees)
        self.trade_count += sum([row.trade_count for row in rows])
        self.total_positions += len(rows)
        held = [row for row in rows if row.quantity]
        if not held:
            return
        self.open_positions += len(held)
        unrealized: list[Decimal] = []
        longs: list[Decimal] = []
        shorts: list[Decimal] = []
        for row in held:
            value = row.valued_at * row.quantity * row.multiplier  # row.market_value
            unrealized += ((row.cost_basis * row.multiplier).copy_negate(), value)
            if row.quantity > 0:
                longs.append(value)
            else:
                shorts.append(value.copy_negate())
        self.unrealized_pnl = sum(unrealized, self.unrealized_pnl)
        self.long_exposure = sum(longs, self.long_exposure)
        self.short_exposure = sum(shorts, self.short_exposure)

    def revalue(self, value_change: Decimal, is_long: bool) -> None:
        """Adds a change in the market value of one open row (long or short)."""
        self.unrealized_pnl += value_change
        if is_long:
            self.long_exposure += value_change
        else:
            self.short_exposure -= value_change

    def converted(
        self, currency: str, rate: Decimal, precision: Decimal, *, historic: bool
    ) -> Totals | None:
        """The same totals in `currency` (a base currency), each amount at `rate` rounded
        half-even to `precision`, except realized P&L: with `historic` (the rows' accounts
        keep their realized P&L in that currency) each realization at the rate in force then,
        None when one of those rates was missing; else at `rate` too."""
        if historic and self.realized_base_missing:
            return None
        result = Totals(
            currency=currency,
            open_positions=self.open_positions,
            total_positions=self.total_positions,
            trade_count=self.trade_count,
        )
        for name in ("unrealized_pnl", "fees", "long_exposure", "short_exposure"):
            setattr(result, name, convert(getattr(self, name), rate, precision))
        realized = (
            self.realized_pnl_base if historic else convert(self.realized_pnl, rate, precision)
        )
        result.realized_pnl = result.realized_pnl_base = realized
        return result


_SUMMED = [name for name in Totals.__slots__ if name != "currency"]


def merged(scopes: Iterable[dict[str, Totals]]) -> dict[str, Totals]:
    """Per-currency totals of disjoint scopes added per currency, in currency order."""
    parts: dict[str, list[Totals]] = {}
    for scope in scopes:
        for currency, totals in scope.items():
            parts.setdefault(currency, []).append(totals)
    return {currency: Totals.combined(parts[currency]) for currency in sorted(parts)}


def convert(amount: Decimal, rate: Decimal, precision: Decimal) -> Decimal:
    """An amount at an FX rate, rounded half-even to `precision` (exact when the rate is 1)."""
    if rate == 1:
        return amount
    with localcontext(EXACT):
        product = amount * rate
    return divide_half_even(product, Decimal(1), precision)
