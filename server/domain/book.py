"""The book: every position row, the instruments' market prices, and running totals.

Each account has two kinds of rows per instrument: one per strategy (attribution) and one
account-level row fed by every fill of the account, whatever its strategy (what the broker
shows). Totals are kept per scope so that summaries are O(1) in the number of rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal, localcontext

from sortedcontainers import SortedDict, SortedSet

from server.domain.decimals import EXACT, ZERO
from server.domain.events import Fill
from server.domain.instruments import InstrumentRegistry
from server.domain.position import ACCOUNT_LEVEL, ChangeKind, Position, PositionKey
from server.domain.totals import Totals

ALL = ""
"""The account id of totals across every account."""


@dataclass(frozen=True, slots=True)
class RowChange:
    """A row as a fill left it: a detached copy, with the market price at that moment."""

    position: Position
    kind: ChangeKind
    market_price: Decimal


@dataclass(frozen=True, slots=True)
class PositionView:
    """A row as queries and updates show it: frozen, with its mark-dependent figures."""

    key: PositionKey
    quantity: Decimal
    avg_cost: Decimal
    cost_basis: Decimal
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    fees: Decimal
    market_price: Decimal
    market_value: Decimal
    multiplier: Decimal
    trade_count: int
    opened_at_ns: int
    updated_at_ns: int
    last_sequence: int

    @property
    def net_pnl(self) -> Decimal:
        return self.realized_pnl + self.unrealized_pnl - self.fees


def position_view(row: Position, market_price: Decimal, precision: Decimal) -> PositionView:
    with localcontext(EXACT):
        return PositionView(
            key=row.key,
            quantity=row.quantity,
            avg_cost=row.avg_cost(precision),
            cost_basis=row.cost_basis,
            realized_pnl=row.realized_pnl,
            unrealized_pnl=row.unrealized_pnl(market_price),
            fees=row.fees,
            market_price=market_price,
            market_value=row.market_value(market_price),
            multiplier=row.multiplier,
            trade_count=row.trade_count,
            opened_at_ns=row.opened_at_ns,
            updated_at_ns=row.updated_at_ns,
            last_sequence=row.last_sequence,
        )


class PositionBook:
    def __init__(self, instruments: InstrumentRegistry, precision: Decimal) -> None:
        self.instruments = instruments
        self.precision = precision
        self._rows: dict[PositionKey, Position] = {}
        # Ordered views, for listing and pagination: PositionKey -> Position.
        self.strategy_rows: SortedDict = SortedDict()
        self.account_rows: SortedDict = SortedDict()
        # Per (account, strategy): instrument_id -> Position.
        self._by_strategy: dict[tuple[str, str], SortedDict] = {}
        # instrument_id -> PositionKey -> Position, for instrument filters.
        self.by_instrument: dict[str, SortedDict] = {}
        # instrument_id -> each row with the totals it counts in: what a new mark revalues.
        self._valued_rows: dict[str, list[tuple[Position, Totals]]] = {}
        # strategy_id -> accounts it has rows in.
        self._strategy_accounts: SortedDict = SortedDict()  # str -> SortedSet
        self._account_strategies: dict[str, SortedSet] = {}
        self._marks: dict[str, Decimal] = {}
        # Each row counts in one Totals: its account's (account-level rows) or its strategy's
        # in its account. Figures across accounts add these up when asked: O(accounts).
        self._account_totals: dict[str, Totals] = {}
        self._strategy_totals: dict[tuple[str, str], Totals] = {}
        self._row_totals: dict[PositionKey, Totals] = {}

    def __len__(self) -> int:
        return len(self._rows)

    # -- writes ----------------------------------------------------------------------------

    def apply_fill(self, fill: Fill, sequence: int) -> list[RowChange]:
        """Books a fill on its strategy row and its account row."""
        self.set_mark(fill.instrument_id, fill.price)
        changes = []
        with localcontext(EXACT):
            for strategy_id in (fill.strategy_id, ACCOUNT_LEVEL):
                key = PositionKey(fill.account_id, strategy_id, fill.instrument_id)
                row = self._row(key)
                totals = self._row_totals[key]
                totals.add(row, fill.price, -1)
                kind = row.apply_fill(fill, sequence, self.precision)
                totals.add(row, fill.price)
                changes.append(RowChange(row.copy(), kind, fill.price))
        return changes

    def set_mark(self, instrument_id: str, price: Decimal) -> None:
        """Moves an instrument's market price and revalues its rows in every total."""
        previous = self._marks.get(instrument_id)
        self._marks[instrument_id] = price
        if previous is None or previous == price:
            return
        with localcontext(EXACT):
            change = price - previous
            for row, totals in self._valued_rows.get(instrument_id, ()):
                if row.quantity:
                    totals.revalue(row.market_value(change), row.quantity > 0)

    def _row(self, key: PositionKey) -> Position:
        row = self._rows.get(key)
        if row is not None:
            return row
        account_id, strategy_id, instrument_id = key
        row = Position(key, self.instruments.multiplier(instrument_id))
        self._rows[key] = row
        self.by_instrument.setdefault(instrument_id, SortedDict())[key] = row
        if key.is_account_level:
            self.account_rows[key] = row
            totals = self._account_totals.setdefault(account_id, Totals())
        else:
            self.strategy_rows[key] = row
            self._by_strategy.setdefault((account_id, strategy_id), SortedDict())[instrument_id] = (
                row
            )
            self._strategy_accounts.setdefault(strategy_id, SortedSet()).add(account_id)
            self._account_strategies.setdefault(account_id, SortedSet()).add(strategy_id)
            totals = self._strategy_totals.setdefault((account_id, strategy_id), Totals())
        totals.add(row, ZERO)  # an empty row contributes its count of one
        self._row_totals[key] = totals
        self._valued_rows.setdefault(instrument_id, []).append((row, totals))
        return row

    def restore(self, saved: Position, market_price: Decimal) -> None:
        """Puts back a row saved in a checkpoint, with its instrument's mark (recovery)."""
        with localcontext(EXACT):
            self._marks[saved.key.instrument_id] = market_price
            row = self._row(saved.key)
            totals = self._row_totals[saved.key]
            totals.add(row, market_price, -1)
            row.multiplier = saved.multiplier
            row.quantity = saved.quantity
            row.cost_basis = saved.cost_basis
            row.realized_pnl = saved.realized_pnl
            row.fees = saved.fees
            row.trade_count = saved.trade_count
            row.opened_at_ns = saved.opened_at_ns
            row.updated_at_ns = saved.updated_at_ns
            row.last_sequence = saved.last_sequence
            totals.add(row, market_price)

    # -- reads -----------------------------------------------------------------------------

    def rows(self) -> Iterable[Position]:
        return self._rows.values()

    def get(self, key: PositionKey) -> Position | None:
        return self._rows.get(key)

    def view(self, row: Position) -> PositionView:
        return position_view(row, self.mark(row.key.instrument_id), self.precision)

    def mark(self, instrument_id: str) -> Decimal:
        return self._marks.get(instrument_id, ZERO)

    def strategy_positions(self, strategy_id: str, account_id: str = ALL) -> Iterator[Position]:
        accounts = [account_id] if account_id else self._strategy_accounts.get(strategy_id, ())
        for account in accounts:
            yield from self._by_strategy.get((account, strategy_id), {}).values()

    def has_strategy(self, strategy_id: str, account_id: str = ALL) -> bool:
        if account_id:
            return (account_id, strategy_id) in self._strategy_totals
        return strategy_id in self._strategy_accounts

    def has_account(self, account_id: str) -> bool:
        return account_id in self._account_totals

    def strategy_totals(self, strategy_id: str, account_id: str = ALL) -> Totals:
        if account_id:
            return self._strategy_totals.get((account_id, strategy_id)) or Totals()
        accounts = self._strategy_accounts.get(strategy_id, ())
        return Totals.combined(self._strategy_totals[(a, strategy_id)] for a in accounts)

    def account_totals(self, account_id: str = ALL) -> Totals:
        if account_id:
            return self._account_totals.get(account_id) or Totals()
        return Totals.combined(self._account_totals.values())

    def strategies(self, account_id: str = ALL) -> Iterable[str]:
        """Strategy ids in order, of one account or of all."""
        ids: Iterable[str] = (
            self._account_strategies.get(account_id, ())
            if account_id
            else self._strategy_accounts.keys()
        )
        return ids
