"""Performance of a scope (an account's book, or a strategy in one account or across accounts):
the round trips and fills booked (domain/performance.py), its totals now, and the statistics
of its daily net P&L in base currency from the P&L history (domain/pnl_history.py)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal, localcontext

from server.application.reads import NotFound
from server.domain.decimals import EXACT
from server.domain.ledger import Ledger
from server.domain.performance import (
    DailyStatistics,
    RoundTrips,
    VenueFigures,
    daily_statistics,
)
from server.domain.position import ACCOUNT_LEVEL, Position
from server.domain.totals import Totals, merged
from server.domain.traces import TraceVenue


@dataclass(frozen=True, slots=True, kw_only=True)
class CurrencyPerformance:
    currency: str
    totals: Totals
    trips: RoundTrips
    open_trips: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PerformanceReport:
    account_id: str
    strategy_id: str
    base_currency: str
    inception_ns: int
    by_currency: list[CurrencyPerformance]
    # From the P&L history, in base currency: days with a base figure missing are left out
    # (counted in days_missing_base).
    daily: DailyStatistics
    days_missing_base: int
    venues: dict[tuple[str, str], VenueFigures] = field(default_factory=dict)
    trace_venues: dict[str, TraceVenue] = field(default_factory=dict)


def performance(
    ledger: Ledger,
    account_id: str,
    strategy_id: str,
    first: str = "",
    last: str = "",
    instrument_id: str = "",
) -> PerformanceReport:
    """`account_id` ALL: the strategy across its accounts (their days summed by date when they
    share a base currency); `strategy_id` "": the account-level book of one account."""
    book = ledger.book
    if strategy_id:
        if not book.has_strategy(strategy_id, account_id):
            where = f" in account {account_id!r}" if account_id else ""
            raise NotFound(f"strategy {strategy_id!r} has no positions{where}")
        accounts = (
            [account_id]
            if account_id
            else sorted({row.key.account_id for row in book.strategy_positions(strategy_id)})
        )
        rows = list(book.strategy_positions(strategy_id, account_id))
        totals = book.strategy_currency_totals(strategy_id, account_id)
    else:
        if not account_id or not book.has_account(account_id):
            raise NotFound(f"account {account_id!r} has no positions")
        accounts = [account_id]
        rows = [
            row
            for group in ledger.account_instrument_rows(account_id).values()
            for row in group
            if row.key.is_account_level
        ]
        totals = book.account_currency_totals(account_id)
    if instrument_id:  # one instrument's rows: their own totals
        rows = [row for row in rows if row.key.instrument_id == instrument_id]
        if not rows:
            raise NotFound(f"instrument {instrument_id!r} has no rows in this scope")
        totals = merged([_row_totals(ledger, row) for row in rows])
    keys = [(row.key, row.currency) for row in rows]
    trips = ledger.performance.trips(keys)
    open_by_currency: dict[str, int] = defaultdict(int)
    for row in rows:
        open_by_currency[row.currency] += ledger.performance.open_trips([row.key])
    currencies = sorted(set(totals) | set(trips))
    by_currency = [
        CurrencyPerformance(
            currency=currency,
            totals=totals.get(currency, Totals(currency=currency)),
            trips=trips.get(currency, RoundTrips()),
            open_trips=open_by_currency.get(currency, 0),
        )
        for currency in currencies
    ]
    bases = {ledger.accounts.base_currency(account) for account in accounts}
    base = bases.pop() if len(bases) == 1 else ""
    daily: dict[str, Decimal] = defaultdict(Decimal)
    missing = 0
    scope = strategy_id or ACCOUNT_LEVEL
    with localcontext(EXACT):  # a strategy's day summed across its accounts, exactly
        for account in accounts if base else []:
            for day in ledger.pnl.days(account, scope, first, last):
                if day.net_pnl_base is None:
                    missing += 1
                else:
                    daily[day.trading_date] += day.net_pnl_base
    inception = [
        ledger.performance.inception_ns(account, scope)
        for account in accounts
        if ledger.performance.inception_ns(account, scope)
    ]
    venues = {} if instrument_id else ledger.performance.venues(account_id, strategy_id)
    trace_venues = (
        {venue: figures for (account, venue), figures in ledger.traces.venues.items()
         if account == account_id}
        if account_id and not strategy_id and not instrument_id
        else {}
    )  # fmt: skip
    return PerformanceReport(
        account_id=account_id,
        strategy_id=strategy_id,
        base_currency=base,
        inception_ns=min(inception, default=0),
        by_currency=by_currency,
        daily=daily_statistics(sorted(daily.items())),
        days_missing_base=missing,
        venues=venues,
        trace_venues=trace_venues,
    )


def _row_totals(ledger: Ledger, row: Position) -> dict[str, Totals]:
    """A row's figures as totals in its currency (its fees in other currencies in theirs)."""
    price = ledger.book.mark(row.key.instrument_id)
    totals = Totals(currency=row.currency)
    found = {row.currency: totals}
    with localcontext(EXACT):
        totals.add(row, price)
        for currency, amount in row.other_fee_items():
            found.setdefault(currency, Totals(currency=currency)).fees += amount
    return found
