"""Performance and risk messages from the application's reports."""

from __future__ import annotations

from decimal import Decimal

from portfolio.v1 import portfolio_pb2 as pb
from server.api.wire import set_timestamp
from server.application.performance import PerformanceReport
from server.application.risk import Exposure, RiskReport
from server.domain.decimals import EXACT, canonical


def _optional(amount: Decimal | None) -> str:
    return "" if amount is None else canonical(amount)


def performance_to_proto(report: PerformanceReport, as_of_sequence: int) -> pb.Performance:
    daily, drawdown = report.daily, report.daily.drawdown
    message = pb.Performance(
        account_id=report.account_id,
        strategy_id=report.strategy_id,
        base_currency=report.base_currency,
        trading_days=daily.days,
        days_missing_base=report.days_missing_base,
        total_daily_pnl=canonical(daily.total),
        max_drawdown=canonical(drawdown.amount),
        max_drawdown_peak_date=drawdown.peak_date,
        max_drawdown_trough_date=drawdown.trough_date,
        max_drawdown_recovered_date=drawdown.recovered_date,
        as_of_sequence=as_of_sequence,
    )
    for name in ("mean", "volatility", "sharpe_ratio", "sortino_ratio"):
        value = getattr(daily, name)
        if value is not None:
            setattr(message, "mean_daily_pnl" if name == "mean" else name, value)
    if report.inception_ns:
        set_timestamp(message.inception_time, report.inception_ns)
    for part in report.by_currency:
        trips, totals = part.trips, part.totals
        currency = message.by_currency.add(
            currency=part.currency,
            trade_count=totals.trade_count,
            round_trips=trips.count,
            open_trips=part.open_trips,
            wins=trips.wins,
            losses=trips.losses,
            average_win=_optional(trips.average_win()),
            average_loss=_optional(trips.average_loss()),
            expectancy=_optional(trips.expectancy()),
            largest_win=canonical(trips.largest_win),
            largest_loss=canonical(trips.largest_loss),
            gross_pnl=canonical(EXACT.add(totals.realized_pnl, totals.unrealized_pnl)),
            fees=canonical(totals.fees),
            net_pnl=canonical(totals.net_pnl),
            realized_pnl=canonical(totals.realized_pnl),
        )
        if trips.win_rate is not None:
            currency.win_rate = trips.win_rate
        profit_factor = trips.profit_factor()
        if profit_factor is not None:
            currency.profit_factor = profit_factor
    for (venue, currency_code), figures in sorted(report.venues.items()):
        message.venues.add(
            venue=venue,
            currency=currency_code,
            fills=figures.fills,
            volume=canonical(figures.volume),
            fees=canonical(figures.fees),
            realized_pnl=canonical(figures.realized_pnl),
        )
    for venue, trace in sorted(report.trace_venues.items()):
        entry = message.trace_venues.add(
            venue=venue, steps=trace.steps, legs_done=trace.legs_done, legs_open=trace.legs_open
        )
        if trace.steps:
            entry.average_step_latency.FromNanoseconds(trace.latency_ns // trace.steps)
        if trace.success_rate is not None:
            entry.success_rate = trace.success_rate
    return message


def _exposure(exposure: Exposure) -> pb.Exposure:
    return pb.Exposure(
        long=canonical(exposure.long),
        short=canonical(exposure.short),
        gross=canonical(exposure.gross),
        net=canonical(exposure.net),
    )


def _named(exposures: dict[str, Exposure]) -> list[pb.NamedExposure]:
    return [
        pb.NamedExposure(name=name, exposure=_exposure(exposure))
        for name, exposure in sorted(exposures.items())
    ]


def risk_to_proto(report: RiskReport, as_of_sequence: int) -> pb.RiskMetrics:
    message = pb.RiskMetrics(
        account_id=report.account_id,
        strategy_id=report.strategy_id,
        base_currency=report.base_currency,
        total=_exposure(report.total),
        by_instrument=_named(report.by_instrument),
        by_asset_class=_named(report.by_asset_class),
        by_currency=_named(report.by_currency),
        missing_fx_rates=report.missing_fx_rates,
        largest_instrument=report.largest_instrument,
        concentration=_optional(report.concentration),
        lookback_days=report.lookback_days,
        trading_days=report.days,
        value_at_risk=[
            pb.ValueAtRisk(
                confidence=canonical(var.confidence),
                value_at_risk=_optional(var.value_at_risk),
                expected_shortfall=_optional(var.expected_shortfall),
                days_in_tail=var.days_in_tail,
            )
            for var in report.value_at_risk
        ],
        as_of_sequence=as_of_sequence,
    )
    if report.volatility is not None:
        message.volatility = report.volatility
    for found in report.correlations:
        pair = message.correlations.add(
            strategy_a=found.strategy_a, strategy_b=found.strategy_b, days=found.days
        )
        if found.correlation is not None:
            pair.correlation = found.correlation
    return message
