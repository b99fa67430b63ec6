"""The read model: every query answered from the ledger, as complete views.

A row's view carries its account's base currency and the rates into it (its own and its fees'),
so the wire and the analysts' views convert nothing themselves. Queries only ever see durable
events: the ledger holds nothing else.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from decimal import Decimal, localcontext

from sortedcontainers import SortedDict

from server.application.ports import EventStore, StorageUnavailable
from server.domain.balances import Balance, BalanceKey, Reservation
from server.domain.book import ALL, PositionView, Price, fee_rates, position_view
from server.domain.decimals import EXACT
from server.domain.events import AccountDefinition, AccountKind, InstrumentDefinition
from server.domain.ledger import Ledger
from server.domain.marks import MarkSource
from server.domain.orders import Order
from server.domain.performance import DailyStatistics, daily_statistics
from server.domain.pnl_history import ScopeDay
from server.domain.position import ACCOUNT_LEVEL, Position, PositionKey
from server.domain.reconciliation import ReconciliationLine, ResidualRow
from server.domain.seen import JournalUnreadable
from server.domain.totals import Totals, merged
from server.domain.traces import Trace

_HIGHEST = "\U0010ffff"  # sorts after any id


class NotFound(LookupError):
    """The thing asked for does not exist; the message says what."""


@dataclass(frozen=True, slots=True)
class InBase:
    """Totals converted into a base currency; `totals` is None when a rate is missing."""

    base_currency: str
    totals: Totals | None
    missing: list[str]
    by_currency: list[tuple[str, Totals, Decimal | None]]


@dataclass(frozen=True, slots=True)
class StrategyPortfolio:
    """A strategy's rows and totals in one account, or across its accounts of one kind.
    `totals` is None when more than one currency is involved: nothing adds two currencies
    (see `in_base`). Across accounts of both kinds, `positions` lists every row (rows are
    not sums) but the figures are None or empty and `by_account_kind` holds each kind's
    portfolio: paper is never added to live."""

    strategy_id: str
    account_id: str
    positions: list[PositionView]
    totals: Totals | None
    as_of_sequence: int
    in_base: InBase
    account_kind: AccountKind | None = None  # the account's, or the kind summed across
    by_account_kind: list[StrategyPortfolio] = field(default_factory=list)
    # Its track record: fills booked, first fill's time, and from the P&L history (in the
    # base currency, days summed by date across accounts) its daily statistics.
    trade_count: int = 0
    inception_ns: int = 0
    daily: DailyStatistics | None = None


@dataclass(frozen=True, slots=True)
class PortfolioSummary:
    """Totals of one account, or across the accounts of one kind. Across accounts of both
    kinds, the figures are None or empty and `by_account_kind` holds each kind's summary:
    paper is never added to live. `account_totals` (and each strategy's) is None when more
    than one currency is involved."""

    account_id: str
    account_totals: Totals | None
    strategies: list[tuple[str, Totals | None, InBase]]
    as_of_sequence: int
    account: AccountDefinition | None
    in_base: InBase
    cash: list[Balance]
    account_kind: AccountKind | None = None  # the account's, or the kind summed across
    by_account_kind: list[PortfolioSummary] = field(default_factory=list)


def one_currency(by_currency: dict[str, Totals]) -> Totals | None:
    """The totals when at most one currency is involved (fee currencies count); None rather
    than a sum of different currencies."""
    if len(by_currency) > 1:
        return None
    return next(iter(by_currency.values()), Totals())


@dataclass(frozen=True, slots=True)
class AccountBalances:
    account: AccountDefinition
    balances: list[Balance]
    reservations: list[Reservation]
    as_of_sequence: int


@dataclass(frozen=True, slots=True)
class Consolidated:
    account: AccountDefinition
    instrument_id: str
    account_position: PositionView
    strategy_positions: list[PositionView]
    attributed_quantity: Decimal
    as_of_sequence: int
    reconciled: ReconciliationLine | None = None
    reconciled_at_ns: int = 0
    residual: PositionView | None = None


@dataclass(frozen=True, slots=True)
class OrderPage:
    orders: list[Order]
    last_key: tuple[str, str, str] | None
    as_of_sequence: int


@dataclass(frozen=True, slots=True)
class PositionQuery:
    account_id: str = ""
    strategy_id: str = ""
    instrument_id: str = ""
    account_level: bool = False
    include_flat: bool = False


@dataclass(frozen=True, slots=True)
class PositionPage:
    positions: list[PositionView]
    last_key: PositionKey | None  # set when more rows may follow
    as_of_sequence: int


class ReadModel:
    """Answers queries from the ledger; an order that left memory is read from the store's
    views, on the views' thread."""

    def __init__(
        self,
        ledger: Ledger,
        store: EventStore,
        views_executor: Executor,
        *,
        clock_ns: Callable[[], int],
        reporting_currency: str = "USD",
    ) -> None:
        self.ledger = ledger
        self._store, self._views_executor = store, views_executor  # forgotten orders
        self._clock_ns = clock_ns
        self.reporting_currency = reporting_currency

    @property
    def sequence(self) -> int:
        """The last sequence applied: what queries see, all of it durable."""
        return self.ledger.applied_sequence

    @property
    def version(self) -> tuple[int, int, int]:
        """What every answer depends on: the events applied, the prices and the FX rates. An
        answer read at one version is the answer at that version (see api/answers.py)."""
        ledger = self.ledger
        return ledger.applied_sequence, ledger.book.price_version, ledger.fx.version

    # -- queries ---------------------------------------------------------------------------

    def get_position(self, account_id: str, instrument_id: str, strategy_id: str) -> PositionView:
        row = self.ledger.book.get(PositionKey(account_id, strategy_id, instrument_id))
        if row is None:
            level = f"strategy {strategy_id!r}" if strategy_id else "the account-level book"
            raise NotFound(
                f"no position in {instrument_id!r} for {level} of account {account_id!r}"
            )
        return self.view(row)

    def view(self, row: Position) -> PositionView:
        """A row's view, with its account's base currency and the rate into it."""
        account_id, ledger = row.key.account_id, self.ledger
        base, rate = self.base_of(account_id, row.currency)
        rates = (
            fee_rates(row, lambda currency: self.base_of(account_id, currency)[1])
            if row.other_fees
            else ()
        )  # no fees in other currencies (the usual): no rate to look up, no closure made
        return ledger.book.view(row, base, rate, rates, ledger.pnl.last_close(row.key))

    def base_of(self, account_id: str, currency: str) -> tuple[str, Decimal | None]:
        """The account's base currency and the latest rate from `currency` into it (None:
        no quote): one home for queries, updates and the analysts' views."""
        base = self.ledger.accounts.base_currency(account_id)
        return base, self.ledger.fx.rate(currency, base)

    def pnl_history(
        self, account_id: str, strategy_id: str = "", first: str = "", last: str = ""
    ) -> list[ScopeDay]:
        """A scope's trading days (pnl_history.py); NotFound for a scope with no rows and no
        day (a scope with rows but no close yet has none)."""
        days = self.ledger.pnl.days(account_id, strategy_id, first, last)
        book = self.ledger.book
        known = (
            book.has_strategy(strategy_id, account_id)
            if strategy_id
            else book.has_account(account_id)
        )
        if not days and not known and strategy_id not in self.ledger.pnl.scopes(account_id):
            scope = f"strategy {strategy_id!r} in account" if strategy_id else "account"
            raise NotFound(f"{scope} {account_id!r} has no positions and no P&L history")
        return days

    def strategy_portfolio(
        self,
        strategy_id: str,
        account_id: str = ALL,
        include_flat: bool = False,
        kind: AccountKind | None = None,
    ) -> StrategyPortfolio:
        """The strategy in one account, or across its accounts: of `kind` only, or (None)
        one portfolio per kind it trades in side by side, never paper added to live (as
        `portfolio_summary`). O(rows of the strategy + its accounts x currencies)."""
        book = self.ledger.book
        if not book.has_strategy(strategy_id, account_id):
            where = f" in account {account_id!r}" if account_id else ""
            raise NotFound(f"strategy {strategy_id!r} has no positions{where}")
        rows = list(book.strategy_positions(strategy_id, account_id))
        if account_id:
            account_kind = self.ledger.accounts.get(account_id).account_kind
            return self._strategy_share(strategy_id, account_id, rows, include_flat, account_kind)
        by_kind = self._accounts_by_kind({row.key.account_id for row in rows})
        if kind is not None:
            if kind not in by_kind:
                raise NotFound(f"strategy {strategy_id!r} has no positions in {kind.name} accounts")
            return self._kind_share(strategy_id, rows, by_kind[kind], include_flat, kind)
        kinds = sorted(by_kind, key=lambda k: k.value)  # PAPER, then LIVE
        parts = [self._kind_share(strategy_id, rows, by_kind[k], include_flat, k) for k in kinds]
        if len(parts) == 1:
            return replace(parts[0], by_account_kind=parts)
        return StrategyPortfolio(
            strategy_id, ALL, [view for part in parts for view in part.positions],
            None, self.sequence, InBase(self.reporting_currency, None, [], []),
            by_account_kind=parts,
        )  # fmt: skip

    def _kind_share(
        self,
        strategy_id: str,
        rows: list[Position],
        account_ids: list[str],
        include_flat: bool,
        kind: AccountKind,
    ) -> StrategyPortfolio:
        """The strategy across `account_ids` (all of `kind`): their rows of `rows`."""
        held = set(account_ids)
        mine = [row for row in rows if row.key.account_id in held]
        return self._strategy_share(strategy_id, ALL, mine, include_flat, kind, account_ids)

    def _strategy_share(
        self,
        strategy_id: str,
        account_id: str,
        rows: list[Position],
        include_flat: bool,
        kind: AccountKind,
        account_ids: Iterable[str] = (),
    ) -> StrategyPortfolio:
        """The strategy's `rows` and totals in `account_id`, or (ALL) across `account_ids`,
        in the accounts' common base currency (else the reporting one)."""
        book = self.ledger.book
        scopes = list(account_ids) or [account_id]
        by_currency = merged(book.strategy_currency_totals(strategy_id, a) for a in scopes)
        base, shared = self._common_base(scopes)
        performance = self.ledger.performance
        inceptions = [performance.inception_ns(a, strategy_id) for a in scopes]
        return StrategyPortfolio(
            strategy_id,
            account_id,
            [self.view(row) for row in rows if include_flat or row.quantity],
            one_currency(by_currency),
            self.sequence,
            self.in_base(by_currency, base, historic=shared),
            account_kind=kind,
            trade_count=sum(totals.trade_count for totals in by_currency.values()),
            inception_ns=min((i for i in inceptions if i), default=0),
            daily=self._daily(strategy_id, scopes) if shared else None,
        )

    def _daily(self, scope: str, account_ids: Iterable[str]) -> DailyStatistics:
        """Statistics of the scope's daily net P&L in base currency, summed by trading date
        across accounts (of one base currency); days missing a base figure are left out."""
        daily: dict[str, Decimal] = defaultdict(Decimal)
        with localcontext(EXACT):
            for account_id in account_ids:
                for day in self.ledger.pnl.days(account_id, scope):
                    if day.net_pnl_base is not None:
                        daily[day.trading_date] += day.net_pnl_base
        return daily_statistics(sorted(daily.items()))

    def _common_base(self, account_ids: Iterable[str]) -> tuple[str, bool]:
        """The accounts' base currency if they share one (True), else the reporting currency
        (and whether every account has it as its base)."""
        bases = {self.ledger.accounts.base_currency(account_id) for account_id in account_ids}
        if len(bases) == 1:
            return bases.pop(), True
        return self.reporting_currency, not bases

    def portfolio_summary(
        self, account_id: str = ALL, kind: AccountKind | None = None
    ) -> PortfolioSummary:
        """One account's summary, or across accounts: of `kind` only, or (None) one summary
        per kind present side by side, never paper added to live. O(accounts x strategies x
        currencies): every figure comes from running totals."""
        if account_id:
            return self._account_summary(account_id)
        by_kind = self._accounts_by_kind()
        every = len(by_kind) <= 1  # one kind holds every account: the book's own totals do
        if kind is not None:
            return self._kind_summary(kind, by_kind.get(kind, []), every and kind in by_kind)
        kinds = sorted(by_kind, key=lambda k: k.value)  # PAPER, then LIVE
        parts = [self._kind_summary(k, by_kind[k], every) for k in kinds]
        if len(parts) == 1:
            return replace(parts[0], by_account_kind=parts)
        return PortfolioSummary(
            ALL, None, [], self.sequence, None,
            InBase(self.reporting_currency, None, [], []), [], by_account_kind=parts,
        )  # fmt: skip

    def _account_summary(self, account_id: str) -> PortfolioSummary:
        book, accounts = self.ledger.book, self.ledger.accounts
        known = book.has_account(account_id) or accounts.is_defined(account_id)
        if not (known or self.ledger.balances.of_account(account_id)):
            raise NotFound(f"account {account_id!r} has no positions, balances or definition")
        account = accounts.get(account_id)
        base = account.base_currency
        strategies = []
        for strategy_id in book.strategies(account_id):
            by_currency = book.strategy_currency_totals(strategy_id, account_id)
            strategies.append(
                (
                    strategy_id,
                    one_currency(by_currency),
                    self.in_base(by_currency, base, historic=True),
                )
            )
        by_currency = book.account_currency_totals(account_id)
        return PortfolioSummary(
            account_id,
            one_currency(by_currency),
            strategies,
            self.sequence,
            account,
            self.in_base(by_currency, base, historic=True),
            [balance.copy() for balance in self.ledger.balances.of_account(account_id)],
            account_kind=account.account_kind,
        )

    def _accounts_by_kind(self, among: Iterable[str] | None = None) -> dict[AccountKind, list[str]]:
        """Every account known (rows, cash or a definition), or only those `among`, by kind,
        in id order. An account nobody defined is whatever the registry says (live)."""
        ledger, accounts = self.ledger, self.ledger.accounts
        if among is None:
            among = {
                *(account.account_id for account in accounts),
                *ledger.book.accounts(),
                *ledger.balances.accounts(),
            }
        by_kind: dict[AccountKind, list[str]] = {}
        for account_id in sorted(among):
            by_kind.setdefault(accounts.get(account_id).account_kind, []).append(account_id)
        return by_kind

    def _kind_summary(
        self, kind: AccountKind, account_ids: list[str], every: bool = False
    ) -> PortfolioSummary:
        """The summary across `account_ids` (all of `kind`), in the reporting currency;
        `every`: they are every account of the book, whose totals across accounts are these."""
        book, base = self.ledger.book, self.reporting_currency
        accounts = self.ledger.accounts
        historic = all(accounts.base_currency(a) == base for a in account_ids)
        per_strategy: dict[str, dict[str, Totals]] = {}
        if every:
            for strategy_id in book.strategies(ALL):
                per_strategy[strategy_id] = book.strategy_currency_totals(strategy_id, ALL)
            by_currency = book.account_currency_totals(ALL)
        else:
            parts: dict[str, list[dict[str, Totals]]] = {}
            for account_id in account_ids:
                for strategy_id in book.strategies(account_id):
                    parts.setdefault(strategy_id, []).append(
                        book.strategy_currency_totals(strategy_id, account_id)
                    )
            per_strategy = {strategy_id: merged(parts[strategy_id]) for strategy_id in parts}
            by_currency = merged(book.account_currency_totals(a) for a in account_ids)
        strategies = []
        for strategy_id in sorted(per_strategy):
            totals = per_strategy[strategy_id]
            strategies.append(
                (strategy_id, one_currency(totals), self.in_base(totals, base, historic))
            )
        return PortfolioSummary(
            ALL,
            one_currency(by_currency),
            strategies,
            self.sequence,
            None,
            self.in_base(by_currency, base, historic),
            self._cash_across_accounts(account_ids),
            account_kind=kind,
        )

    def _cash_across_accounts(self, account_ids: Iterable[str]) -> list[Balance]:
        """Cash per currency and chain, summed over the accounts (account_id "")."""
        summed: dict[BalanceKey, Balance] = {}
        for account_id in account_ids:
            for balance in self.ledger.balances.of_account(account_id):
                key = BalanceKey("", balance.key.currency, balance.key.chain_id)
                total = summed.setdefault(key, Balance(key))
                with localcontext(EXACT):
                    total.cash += balance.cash
                    total.reserved += balance.reserved
                total.updated_at_ns = max(total.updated_at_ns, balance.updated_at_ns)
                total.last_sequence = max(total.last_sequence, balance.last_sequence)
        return [summed[key] for key in sorted(summed)]

    def fx_rate(self, from_currency: str, to_currency: str) -> Decimal | None:
        """The latest rate between two currencies (None: no quote), for figures that convert
        each part at its own rate (a row's fees in other currencies)."""
        return self.ledger.fx.rate(from_currency, to_currency)

    def in_base(self, by_currency: dict[str, Totals], base: str, historic: bool) -> InBase:
        """Totals per currency converted into `base` at the latest rates, realized P&L at the
        rates in force when realized when `historic` (every row's account has `base` as its
        base currency; across accounts of other bases, at the latest rate). A currency with
        a rate missing (now, or when P&L was realized) leaves the sum unset."""
        precision = self.ledger.book.precision
        converted: list[Totals] = []
        missing: list[str] = []
        rows: list[tuple[str, Totals, Decimal | None]] = []
        for currency, totals in by_currency.items():
            rate = self.ledger.fx.rate(currency, base)
            rows.append((currency, totals, rate))
            in_base = (
                None if rate is None else totals.converted(base, rate, precision, historic=historic)
            )
            if in_base is None:
                missing.append(currency)
            else:
                converted.append(in_base)
        total = None if missing else Totals.combined(converted)
        return InBase(base, total, missing, rows)

    # -- orders, balances, instruments, accounts -------------------------------------------

    def order(self, account_id: str, order_id: str, order_ref: str) -> Order:
        order = self.ledger.orders.find(account_id, order_id, order_ref)
        if order is None:
            which = f"order_id {order_id!r}" if order_id else f"order_ref {order_ref!r}"
            raise NotFound(f"account {account_id!r} has no order with {which}")
        return order.copy()

    async def order_anywhere(self, account_id: str, order_id: str, order_ref: str) -> Order:
        """The order in memory, else (it ended more than the retention ago and left memory)
        as the store's orders view holds it, read on the views' thread: an order in memory
        costs no more than `order`. Raises NotFound, StorageUnavailable."""
        try:
            return self.order(account_id, order_id, order_ref)
        except NotFound:
            stored = await asyncio.get_running_loop().run_in_executor(
                self._views_executor, self._store.order_from_views, account_id, order_id,
                order_ref,
            )  # fmt: skip
            if stored is None:
                raise
            return stored

    def open_orders(
        self, account_id: str, strategy_id: str, after: tuple[str, str, str] | None, limit: int
    ) -> OrderPage:
        index = self.ledger.orders.open_orders
        prefix = tuple(part for part in (account_id, strategy_id) if part)
        lower = (*prefix, *[""] * (3 - len(prefix)))
        upper = (*prefix, *[_HIGHEST] * (3 - len(prefix)))
        orders: list[Order] = []
        for key in index.irange(after or lower, upper, inclusive=(after is None, True)):
            if len(orders) == limit:
                return OrderPage(
                    orders,
                    (orders[-1].account_id, orders[-1].strategy_id, orders[-1].order_key),
                    self.sequence,
                )
            orders.append(replace(index[key], history=[]))
        return OrderPage(orders, None, self.sequence)

    def balances(self, account_id: str) -> AccountBalances:
        ledger = self.ledger
        balances = ledger.balances.of_account(account_id)
        if not balances and not ledger.accounts.is_defined(account_id):
            raise NotFound(f"account {account_id!r} has no balances")
        reservations = [r.copy() for r in ledger.balances.active(account_id)]
        return AccountBalances(
            ledger.accounts.get(account_id),
            [balance.copy() for balance in balances],
            reservations,
            self.sequence,
        )

    def instrument(self, instrument_id: str) -> InstrumentDefinition:
        instrument = self.ledger.instruments.get(instrument_id)
        if instrument is None:
            raise NotFound(f"no instrument {instrument_id!r}")
        return instrument

    def instruments(self, after: str, limit: int) -> list[InstrumentDefinition]:
        """Up to `limit` instruments in id order, from just after `after`."""
        return self.ledger.instruments.page(after, limit)

    def account(self, account_id: str) -> AccountDefinition:
        """The account as defined, or as an undefined one is treated."""
        return self.ledger.accounts.get(account_id)

    def accounts(self) -> list[tuple[AccountDefinition, bool]]:
        """Defined accounts, then those known only from their events; True when defined."""
        ledger = self.ledger
        defined = list(ledger.accounts)
        known = {account.account_id for account in defined}
        active = set(ledger.balances.accounts()) | set(ledger.book.accounts())
        undefined = [ledger.accounts.get(a) for a in sorted(active - known)]
        return [(a, True) for a in defined] + [(a, False) for a in undefined]

    def reservation(self, account_id: str, reservation_id: str, sequence: int = 0) -> Reservation:
        """The reservation; one that ended and left memory is rebuilt from its journaled
        event at `sequence` (see Ledger.reservation). Raises NotFound, StorageUnavailable."""
        try:
            return self.ledger.reservation(account_id, reservation_id, sequence).copy()
        except JournalUnreadable as error:
            raise StorageUnavailable(str(error)) from error
        except LookupError as missing:
            raise NotFound(str(missing)) from None

    def consolidated(self, account_id: str, instrument_id: str) -> Consolidated:
        rows = self.ledger.book.instrument_rows(account_id, instrument_id)
        if not rows:
            raise NotFound(f"account {account_id!r} has no position in {instrument_id!r}")
        account_row = next(row for row in rows if row.key.is_account_level)
        strategy_rows = [row for row in rows if not row.key.is_account_level]
        with localcontext(EXACT):
            attributed = sum((row.quantity for row in strategy_rows), Decimal(0))
        line = self.ledger.reconciliations.line(account_id, instrument_id)
        latest = self.ledger.reconciliations.latest(account_id)
        return Consolidated(
            self.ledger.accounts.get(account_id),
            instrument_id,
            self.view(account_row),
            [self.view(row) for row in strategy_rows],
            attributed,
            self.sequence,
            reconciled=line,
            reconciled_at_ns=latest.timestamp_ns if line and latest else 0,
            residual=self.residual_view(line.residual) if line and line.residual else None,
        )

    def list_positions(
        self, query: PositionQuery, after: PositionKey | None, limit: int
    ) -> PositionPage:
        """Rows in key order from just after `after`; `last_key` is set when more may follow."""
        book = self.ledger.book
        index: SortedDict
        if query.instrument_id:
            index = book.by_instrument.get(query.instrument_id, SortedDict())
        else:
            index = book.account_rows if query.account_level else book.strategy_rows
        prefix: tuple[str, ...] = ()
        if query.account_id:
            prefix = (query.account_id, ACCOUNT_LEVEL if query.account_level else query.strategy_id)
            if not prefix[1]:
                prefix = prefix[:1]
        lower = PositionKey(*prefix, *[""] * (3 - len(prefix)))
        upper = PositionKey(*prefix, *[_HIGHEST] * (3 - len(prefix)))
        keys = index.irange(after or lower, upper, inclusive=(after is None, True))
        positions: list[PositionView] = []
        for key in keys:
            row: Position = index[key]
            if not self._matches(query, row):
                continue
            if len(positions) == limit:
                return PositionPage(positions, positions[-1].key, self.sequence)
            positions.append(self.view(row))
        return PositionPage(positions, None, self.sequence)

    @staticmethod
    def _matches(query: PositionQuery, row: Position) -> bool:
        key = row.key
        return (
            key.is_account_level == query.account_level
            and (not query.account_id or key.account_id == query.account_id)
            and (not query.strategy_id or key.strategy_id == query.strategy_id)
            and (not query.instrument_id or key.instrument_id == query.instrument_id)
            and (query.include_flat or bool(row.quantity))
        )

    def trace(self, trace_id: str) -> Trace:
        trace = self.ledger.traces.get(trace_id, self._clock_ns())
        if trace is None:
            raise NotFound(f"no live trace {trace_id!r} (unknown, or expired)")
        return trace

    def expire_traces(self) -> int:
        """Drops the traces whose latest leg was received a TTL ago or more (by this
        service's clock: the fills' own times do not count)."""
        return self.ledger.traces.expire(self._clock_ns())

    def residual_view(self, row: ResidualRow) -> PositionView:
        """A residual row as queries show it, valued at its instrument's price."""
        key = PositionKey(row.account_id, row.owner, row.instrument_id)
        position = Position(
            key=key, multiplier=row.multiplier, quantity=row.quantity,
            cost_basis=row.cost_basis, currency=row.currency, updated_at_ns=row.timestamp_ns,
            last_sequence=row.sequence,
        )  # fmt: skip
        price = self.ledger.book.price(row.instrument_id)
        if price.source is MarkSource.NONE:  # never traded nor marked here: the broker's price
            known = row.broker_price if row.broker_price is not None else row.avg_cost
            price = Price(known, MarkSource.NONE, row.timestamp_ns)
        base, rate = self.base_of(row.account_id, row.currency)
        view = position_view(
            position,
            price.price,
            self.ledger.book.precision,
            price,
            base_currency=base,
            fx_rate=rate,
        )  # fmt: skip  (a residual row has no fees)
        return replace(view, residual=True)
