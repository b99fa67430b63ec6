"""What one account's report shows, whichever source filled it.

Money stays exact (Decimal, shown as canonical decimal text); floats appear only where the
service itself answers with a float (volatility, Sharpe, Sortino) and when plotting. The store
has no service to ask, so `daily_risk` recomputes the service's figures from the recorded daily
P&L with the service's own rules (docs/accounting.md, "P&L history, performance and risk"); the
tests check that both sources give the same table.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

TRADING_DAYS_PER_YEAR = 252
CONFIDENCES = ("0.95", "0.99")


def canonical(amount: Decimal) -> str:
    """The wire's notation: no exponent, no trailing zeros, "0" for any zero."""
    if not amount:
        return "0"
    text = format(amount.normalize(), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def ratio(value: float | None) -> str:
    """A float statistic for the table (4 decimals), empty when undefined."""
    return "" if value is None else f"{value:.4f}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Day:
    trading_date: str
    net_pnl: Decimal | None  # in base currency; None when a rate was missing that day


@dataclass(frozen=True, slots=True, kw_only=True)
class ExposureLine:
    """Decimal texts, as the service answers them (long >= 0, short <= 0)."""

    name: str
    long: str
    short: str
    gross: str
    net: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StrategyLine:
    strategy_id: str
    net_pnl: Decimal  # summed daily net P&L in base currency over the report's days
    days: int


@dataclass(slots=True, kw_only=True)
class Report:
    account_id: str
    base_currency: str
    source: str  # "service 127.0.0.1:50051" or "store lmdb://data"
    from_date: str
    to_date: str
    days: list[Day]
    strategies: list[StrategyLine]
    # (title, lines): by asset class (service) or by instrument (store), and by currency.
    exposures: list[tuple[str, list[ExposureLine]]]
    exposure_as_of: str
    # (key, label, value): the risk table, values as text.
    risk: list[tuple[str, str, str]]
    notes: list[str] = field(default_factory=list)

    def based_days(self) -> list[tuple[str, Decimal]]:
        return [(d.trading_date, d.net_pnl) for d in self.days if d.net_pnl is not None]

    def shares(self) -> list[str]:
        """Each strategy's share of the strategies' summed net P&L, in percent (one decimal)."""
        total = sum((line.net_pnl for line in self.strategies), Decimal(0))
        if not total:
            return ["" for _ in self.strategies]
        return [
            canonical((line.net_pnl / total * 100).quantize(Decimal("0.1"), ROUND_HALF_EVEN))
            for line in self.strategies
        ]


@dataclass(frozen=True, slots=True, kw_only=True)
class Drawdown:
    amount: Decimal
    peak_date: str  # "" when the peak is the start (0 before the first day)
    trough_date: str
    recovered_date: str


def max_drawdown(days: list[tuple[str, Decimal]]) -> Drawdown:
    """The largest fall of the cumulative curve (from 0 before the first day) from a peak,
    as the service measures it: a later fall of the same size does not replace the first."""
    level = peak = Decimal(0)
    peak_date = ""
    worst = Drawdown(amount=Decimal(0), peak_date="", trough_date="", recovered_date="")
    for trading_date, pnl in days:
        level += pnl
        if level > peak:
            peak, peak_date = level, trading_date
        elif peak - level > worst.amount:
            worst = Drawdown(
                amount=peak - level, peak_date=peak_date, trough_date=trading_date,
                recovered_date="",
            )  # fmt: skip
    if not worst.amount:
        return worst
    level, peak_level = Decimal(0), None
    for trading_date, pnl in days:
        level += pnl
        if trading_date == worst.trough_date:
            peak_level = level + worst.amount
        elif peak_level is not None and level >= peak_level:
            return Drawdown(
                amount=worst.amount, peak_date=worst.peak_date, trough_date=worst.trough_date,
                recovered_date=trading_date,
            )  # fmt: skip
    return worst


def tail_risk(daily: list[Decimal], confidence: str) -> tuple[str, str, int]:
    """Historical value at risk and expected shortfall (losses positive): with n days, the
    k-th worst day's loss, k = ceil((1 - c) n), and the average loss of the k worst days."""
    if not daily:
        return "", "", 0
    worst = sorted(daily)
    tail = max(1, math.ceil((1 - Decimal(confidence)) * len(worst)))
    shortfall = -sum(worst[:tail], Decimal(0)) / tail
    return canonical(-worst[tail - 1]), canonical(shortfall), tail


def daily_risk(days: list[tuple[str, Decimal]]) -> list[tuple[str, str, str]]:
    """The risk table from daily net P&L in base currency (the store's way)."""
    values = [float(pnl) for _, pnl in days]
    mean = statistics.fmean(values) if values else None
    volatility = statistics.stdev(values) if len(values) > 1 else None
    sharpe = (
        mean / volatility * math.sqrt(TRADING_DAYS_PER_YEAR)
        if mean is not None and volatility
        else None
    )
    downside = math.sqrt(sum(min(v, 0.0) ** 2 for v in values) / len(values)) if values else 0.0
    sortino = (
        mean / downside * math.sqrt(TRADING_DAYS_PER_YEAR)
        if mean is not None and downside and len(values) > 1
        else None
    )
    drawdown = max_drawdown(days)
    tails = [tail_risk([pnl for _, pnl in days], c) for c in CONFIDENCES]
    return risk_table(
        days=len(days),
        total=canonical(sum((pnl for _, pnl in days), Decimal(0))),
        tails=tails,
        volatility=volatility,
        sharpe=sharpe,
        sortino=sortino,
        drawdown=(
            canonical(drawdown.amount), drawdown.peak_date, drawdown.trough_date,
            drawdown.recovered_date,
        ),
    )  # fmt: skip


def risk_table(
    *,
    days: int,
    total: str,
    tails: list[tuple[str, str, int]],
    volatility: float | None,
    sharpe: float | None,
    sortino: float | None,
    drawdown: tuple[str, str, str, str],
) -> list[tuple[str, str, str]]:
    """One home for the table's rows, so both sources lay it out alike."""
    rows = [("days", "Trading days with a base figure", str(days)), ("total", "Net P&L", total)]
    for confidence, (var, shortfall, tail) in zip(CONFIDENCES, tails, strict=True):
        percent = confidence[2:]
        rows += [
            (f"var{percent}", f"Value at risk {percent}% (1 day)", var),
            (f"es{percent}", f"Expected shortfall {percent}% (worst {tail} day(s))", shortfall),
        ]
    amount, peak, trough, recovered = drawdown
    rows += [
        ("volatility", "Volatility of daily net P&L", ratio(volatility)),
        ("sharpe", "Sharpe ratio (annualized)", ratio(sharpe)),
        ("sortino", "Sortino ratio (annualized)", ratio(sortino)),
        ("max_drawdown", "Maximum drawdown", amount),
        ("drawdown_peak", "Drawdown peak", peak or ("start" if amount != "0" else "")),
        ("drawdown_trough", "Drawdown trough", trough),
        ("drawdown_recovered", "Recovered", recovered or ("not yet" if amount != "0" else "")),
    ]
    return rows
