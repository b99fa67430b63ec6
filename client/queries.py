"""Read requests as values, for the typed `query` call: one type per `PortfolioQuery` branch.

Each request type names what it answers with (`Query[Position]` and so on), so
`client.query(PositionQuery(...))` is typed as returning a `Position` without overloads. The
`get_*` and `list_*` methods build the same values, so both paths share one encoding.

`as_of` (where a read offers it) asks for the book as it was: an int is a sequence (after that
event), a timezone-aware datetime a time (after every event received by then); None is now.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from client.models import (
    AccountKind,
    Balances,
    ConsolidatedPosition,
    Instrument,
    Order,
    OrderPage,
    Performance,
    PnlHistory,
    PortfolioSummary,
    Position,
    PositionLevel,
    PositionPage,
    Reconciliation,
    RiskMetrics,
    StrategyPortfolio,
    TracePosition,
)
from client.requests import R, Request

__all__ = [
    "BalancesQuery",
    "ConsolidatedPositionQuery",
    "InstrumentQuery",
    "OpenOrdersQuery",
    "OrderQuery",
    "PerformanceQuery",
    "PnlHistoryQuery",
    "PortfolioSummaryQuery",
    "PositionQuery",
    "PositionsQuery",
    "Query",
    "R",
    "ReconciliationQuery",
    "RiskMetricsQuery",
    "StrategyPortfolioQuery",
    "TracePositionQuery",
]

#: A past point of the book: a sequence, or a time (see the module's docstring).
AsOf = int | datetime | None


class Query(Request[R]):
    """A read request answering with an R, also sent through the `Query` RPC."""

    __slots__ = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class PositionQuery(Query[Position]):
    """One row: a strategy's, or the account-level book row when strategy_id is None or empty."""

    account_id: str
    instrument_id: str
    strategy_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StrategyPortfolioQuery(Query[StrategyPortfolio]):
    """A strategy's positions and totals; across every account when account_id is empty:
    then of the accounts of `account_kind` only, or (UNSPECIFIED) paper and live side by side
    in by_account_kind. With account_id, a kind other than the account's is refused."""

    strategy_id: str
    account_id: str = ""
    #: Flat rows still carry realized P&L and fees.
    include_flat: bool = False
    account_kind: AccountKind = AccountKind.UNSPECIFIED
    as_of: AsOf = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PortfolioSummaryQuery(Query[PortfolioSummary]):
    """Totals for one account, or for all when account_id is empty: then of the accounts of
    `account_kind` only, or (UNSPECIFIED) paper and live side by side in by_account_kind."""

    account_id: str = ""
    account_kind: AccountKind = AccountKind.UNSPECIFIED
    as_of: AsOf = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PositionsQuery(Query[PositionPage]):
    """One page of rows matching the filters (empty means any)."""

    account_id: str = ""
    strategy_id: str = ""
    instrument_id: str = ""
    level: PositionLevel = PositionLevel.STRATEGY
    include_flat: bool = False
    #: 1 to 1,000; 0 lets the service choose (100).
    page_size: int = 0
    #: From the previous page, with the same filters.
    page_token: str = ""
    #: Pages of one listing follow the same point.
    as_of: AsOf = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TracePositionQuery(Query[TracePosition]):
    """The legs of a multi-step trade."""

    trace_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PnlHistoryQuery(Query[PnlHistory]):
    """An account's daily P&L: its whole book, or one strategy's rows when strategy_id is
    given; trading dates from_date through to_date, both included (None: from the first,
    through the latest)."""

    account_id: str
    strategy_id: str = ""
    from_date: date | None = None
    to_date: date | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PerformanceQuery(Query[Performance]):
    """Performance attribution of an account's book (account_id alone), of a strategy in an
    account (both), or of a strategy across its accounts (strategy_id alone). The dates bound
    the P&L history the daily statistics use, both included (None: all of it)."""

    account_id: str = ""
    strategy_id: str = ""
    from_date: date | None = None
    to_date: date | None = None
    #: One instrument's rows only (round trips and totals); the daily statistics stay the
    #: scope's.
    instrument_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskMetricsQuery(Query[RiskMetrics]):
    """Risk of an account's book, or of one strategy in it, over its last `lookback_days`
    trading days of P&L history."""

    account_id: str
    strategy_id: str = ""
    #: 1 to 2520; 0 lets the service choose (250).
    lookback_days: int = 0
    #: Value at risk's confidence levels, each strictly between 0.5 and 1 (at most 5); empty:
    #: the service's 0.95 and 0.99. Kept as a tuple.
    confidence_levels: Sequence[Decimal] = ()

    def __post_init__(self) -> None:
        levels = tuple(self.confidence_levels)
        for level in levels:
            if not isinstance(level, Decimal):
                raise TypeError(
                    f"RiskMetricsQuery.confidence_levels must hold decimal.Decimal values, got "
                    f"{type(level).__name__} {level!r}"
                )
        object.__setattr__(self, "confidence_levels", levels)


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderQuery(Query[Order]):
    """One order with its whole history: by the broker's order id, or by order_ref (the
    latest order with it)."""

    account_id: str
    order_id: str = ""
    order_ref: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenOrdersQuery(Query[OrderPage]):
    """One page of working orders (pending submit to pending cancel)."""

    #: Empty: every account.
    account_id: str = ""
    #: Empty: every strategy (a strategy needs account_id).
    strategy_id: str = ""
    #: 1 to 1,000; 0 lets the service choose (100).
    page_size: int = 0
    page_token: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class BalancesQuery(Query[Balances]):
    """An account's cash per currency (and chain), reserved and available."""

    account_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsolidatedPositionQuery(Query[ConsolidatedPosition]):
    """One instrument of one account: the account-level row next to each strategy's."""

    account_id: str
    instrument_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class InstrumentQuery(Query[Instrument]):
    """One instrument's definition (NOT_FOUND for one never defined nor traded)."""

    instrument_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconciliationQuery(Query[Reconciliation]):
    """An account's latest reconciliation report (NOT_FOUND before the first run)."""

    account_id: str
