"""Risk metrics of a scope (an account's book, or one strategy in an account): exposure now by
instrument, asset class and currency; concentration; and, from the scope's P&L history (its
daily net P&L in base currency, the last `lookback_days` trading days), volatility,
historical-simulation value at risk and expected shortfall, and the correlation of the
account's strategies' daily P&L.

Historical simulation here uses the scope's own recorded daily P&L (not today's positions
revalued at past marks: the service keeps no marks history). With n days, VaR at confidence c
is the k-th worst day's loss, k = ceil((1 - c) n), and the expected shortfall the average loss
of the k worst days; both are reported as losses (positive numbers; negative means even the
k-th worst day made money). Money figures are exact; volatility and correlation are floats.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal, localcontext

import pandas as pd

from server.application.reads import NotFound
from server.domain.decimals import EXACT, ZERO
from server.domain.events import AssetClass
from server.domain.ledger import Ledger
from server.domain.performance import mean
from server.domain.position import ACCOUNT_LEVEL, Position
from server.domain.totals import convert

CONFIDENCES = (Decimal("0.95"), Decimal("0.99"))


@dataclass(slots=True)
class Exposure:
    """Market values: long rows, short rows (<= 0), and their gross and net."""

    long: Decimal = ZERO
    short: Decimal = ZERO

    def add(self, value: Decimal) -> None:
        """Inside `EXACT` (`risk`)."""
        if value > 0:
            self.long += value
        else:
            self.short += value

    # Read by the wire encoder, outside `EXACT`: its methods keep these exact where the
    # thread's context (28 digits) would round 18+18-digit amounts.
    @property
    def gross(self) -> Decimal:
        return EXACT.subtract(self.long, self.short)

    @property
    def net(self) -> Decimal:
        return EXACT.add(self.long, self.short)


@dataclass(frozen=True, slots=True, kw_only=True)
class ValueAtRisk:
    confidence: Decimal
    value_at_risk: Decimal | None  # None: no day yet
    expected_shortfall: Decimal | None
    days_in_tail: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Correlation:
    strategy_a: str
    strategy_b: str
    days: int
    correlation: float | None  # None: fewer than 3 common days, or one never varied


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskReport:
    account_id: str
    strategy_id: str
    base_currency: str
    # In each row's own currency (keys: currency), and in base (None when a rate is missing).
    by_currency: dict[str, Exposure]
    by_instrument: dict[str, Exposure]  # in base
    by_asset_class: dict[str, Exposure]  # in base
    total: Exposure  # in base
    missing_fx_rates: list[str]
    largest_instrument: str
    concentration: Decimal | None  # the largest position's share of gross exposure (base)
    lookback_days: int
    days: int  # trading days used (with a base figure)
    volatility: float | None
    value_at_risk: list[ValueAtRisk]
    correlations: list[Correlation]


def risk(
    ledger: Ledger,
    account_id: str,
    strategy_id: str = "",
    lookback_days: int = 250,
    confidences: tuple[Decimal, ...] = CONFIDENCES,
) -> RiskReport:
    book = ledger.book
    if not book.has_account(account_id):
        raise NotFound(f"account {account_id!r} has no positions")
    if strategy_id and not book.has_strategy(strategy_id, account_id):
        raise NotFound(f"strategy {strategy_id!r} has no positions in account {account_id!r}")
    base = ledger.accounts.base_currency(account_id)
    rows: list[Position] = [
        row
        for group in ledger.account_instrument_rows(account_id).values()
        for row in group
        if row.key.strategy_id == (strategy_id or ACCOUNT_LEVEL) and row.quantity
    ]
    by_currency: dict[str, Exposure] = defaultdict(Exposure)
    by_instrument: dict[str, Exposure] = defaultdict(Exposure)
    by_asset_class: dict[str, Exposure] = defaultdict(Exposure)
    total = Exposure()
    missing: set[str] = set()
    with localcontext(EXACT):
        for row in rows:
            value = row.market_value(book.mark(row.key.instrument_id))
            by_currency[row.currency].add(value)
            rate = ledger.fx.rate(row.currency, base)
            if rate is None:
                missing.add(row.currency)
                continue
            in_base = convert(value, rate, book.precision)
            definition = ledger.instruments.get(row.key.instrument_id)
            asset_class = definition.asset_class if definition else AssetClass.UNSPECIFIED
            by_instrument[row.key.instrument_id].add(in_base)
            by_asset_class[asset_class.name].add(in_base)
            total.add(in_base)
    largest = max(by_instrument.items(), key=lambda item: item[1].gross, default=None)
    concentration = (
        largest[1].gross / total.gross
        if largest is not None and total.gross and not missing
        else None
    )
    history = ledger.pnl.days(account_id, strategy_id or ACCOUNT_LEVEL)[-lookback_days:]
    daily = [day.net_pnl_base for day in history if day.net_pnl_base is not None]
    values = [float(pnl) for pnl in daily]
    return RiskReport(
        account_id=account_id,
        strategy_id=strategy_id,
        base_currency=base,
        by_currency=dict(by_currency),
        by_instrument=dict(by_instrument),
        by_asset_class=dict(by_asset_class),
        total=total,
        missing_fx_rates=sorted(missing),
        largest_instrument=largest[0] if largest is not None else "",
        concentration=concentration,
        lookback_days=lookback_days,
        days=len(daily),
        volatility=statistics.stdev(values) if len(values) > 1 else None,
        value_at_risk=[historical_var(daily, confidence) for confidence in confidences],
        correlations=[],  # the caller adds them (see `correlations`), off the event loop
    )


def historical_var(daily: list[Decimal], confidence: Decimal) -> ValueAtRisk:
    if not daily:
        return ValueAtRisk(
            confidence=confidence, value_at_risk=None, expected_shortfall=None, days_in_tail=0
        )
    worst = sorted(daily)
    tail = max(1, math.ceil((1 - confidence) * len(worst)))
    with localcontext(EXACT):
        loss = -sum(worst[:tail], ZERO)
    shortfall = mean(loss, tail)
    return ValueAtRisk(
        confidence=confidence,
        value_at_risk=EXACT.minus(worst[tail - 1]),
        expected_shortfall=shortfall,
        days_in_tail=tail,
    )


def strategy_series(
    ledger: Ledger, account_id: str, lookback_days: int
) -> dict[str, dict[str, float]]:
    """Each of the account's strategies' daily net P&L in base currency (trading date ->
    value), the last `lookback_days`: taken on the event loop, cheap (one pass over the days)."""
    series: dict[str, dict[str, float]] = {}
    for strategy in ledger.pnl.scopes(account_id):
        if strategy == ACCOUNT_LEVEL:
            continue
        days = ledger.pnl.days(account_id, strategy)[-lookback_days:]
        series[strategy] = {
            d.trading_date: float(d.net_pnl_base) for d in days if d.net_pnl_base is not None
        }
    return series


def correlations(series: dict[str, dict[str, float]]) -> list[Correlation]:
    """Pearson correlation of each pair of strategies' daily P&L over the trading days both
    recorded (pairwise-complete, at least 3): vectorized (pandas), so 100 strategies over a
    year take milliseconds; pure numbers, safe to run off the event loop."""
    names = sorted(series)
    if len(names) < 2:
        return []
    frame = pd.DataFrame({name: pd.Series(series[name], dtype="float64") for name in names})
    present = frame.notna().astype("int64")
    common = present.T @ present  # days both recorded, per pair
    matrix = frame.corr(method="pearson", min_periods=3)
    found = []
    for index, first in enumerate(names):
        for second in names[index + 1 :]:
            value = matrix.at[first, second]
            found.append(
                Correlation(
                    strategy_a=first,
                    strategy_b=second,
                    days=int(common.at[first, second]),
                    correlation=None if math.isnan(value) else float(value),
                )
            )
    return found
