"""A report from a running service: GetPnlHistory for the days and each strategy's, GetPerformance
for the statistics and the drawdown, GetRiskMetrics for exposure now and value at risk.

Through the generated stubs on a plain channel (the report needs nothing the SDK adds).
GetRiskMetrics counts its `lookback_days` back from the latest close, so it answers for the
report's days only when they run through the latest close (and number at most 2520); otherwise
value at risk is taken from the same days with the service's rule, and a note says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

import grpc

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from reports.model import (
    CONFIDENCES,
    Day,
    ExposureLine,
    Report,
    StrategyLine,
    risk_table,
    tail_risk,
)

MAX_LOOKBACK_DAYS = 2520
TIMEOUT_SECONDS = 30.0


class NotFoundError(Exception):
    """The account is not there (a bad argument, not a failure)."""


def _days(history: pb.PnlHistory, to_date: str) -> list[Day]:
    return [
        Day(
            trading_date=day.trading_date,
            net_pnl=Decimal(day.net_pnl_base) if day.net_pnl_base else None,
        )
        for day in history.days
        if not to_date or day.trading_date <= to_date
    ]


def _lines(named: Iterable[pb.NamedExposure]) -> list[ExposureLine]:
    return [
        ExposureLine(
            name=item.name, long=item.exposure.long, short=item.exposure.short,
            gross=item.exposure.gross, net=item.exposure.net,
        )
        for item in named
    ]  # fmt: skip


def from_service(address: str, account_id: str, from_date: str, to_date: str) -> Report:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.PortfolioManagerStub(channel)
        try:
            return _report(stub, address, account_id, from_date, to_date)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFoundError(f"--account: {error.details()}") from error
            raise


def _report(
    stub: pb_grpc.PortfolioManagerStub,
    address: str,
    account_id: str,
    from_date: str,
    to_date: str,
) -> Report:
    # Through the latest close, so we know whether GetRiskMetrics can answer for these days.
    history = stub.GetPnlHistory(
        pb.GetPnlHistoryRequest(account_id=account_id, from_date=from_date),
        timeout=TIMEOUT_SECONDS,
    )
    days = _days(history, to_date)
    summary = stub.GetPortfolioSummary(
        pb.GetPortfolioSummaryRequest(account_id=account_id), timeout=TIMEOUT_SECONDS
    )
    strategies = []
    for strategy_id in sorted({s.strategy_id for s in summary.strategies}):
        own = _days(
            stub.GetPnlHistory(
                pb.GetPnlHistoryRequest(
                    account_id=account_id, strategy_id=strategy_id, from_date=from_date,
                    to_date=to_date,
                ),
                timeout=TIMEOUT_SECONDS,
            ),
            to_date,
        )  # fmt: skip
        based = [d.net_pnl for d in own if d.net_pnl is not None]
        if based:
            strategies.append(
                StrategyLine(strategy_id=strategy_id, net_pnl=sum(based, Decimal(0)), days=len(own))
            )
    performance = stub.GetPerformance(
        pb.GetPerformanceRequest(account_id=account_id, from_date=from_date, to_date=to_date),
        timeout=TIMEOUT_SECONDS,
    )
    through_latest = len(days) == len(history.days)
    lookback = len(days) if days and through_latest and len(days) <= MAX_LOOKBACK_DAYS else 0
    risk = stub.GetRiskMetrics(
        pb.GetRiskMetricsRequest(account_id=account_id, lookback_days=lookback or 1),
        timeout=TIMEOUT_SECONDS,
    )
    notes = [
        "Figures from the service: value at risk and expected shortfall by historical "
        "simulation over the days' net P&L in base currency; exposure now, at the book's prices.",
    ]
    if lookback:
        tails = [
            (v.value_at_risk, v.expected_shortfall, v.days_in_tail)
            for v in sorted(risk.value_at_risk, key=lambda v: v.confidence)
        ]
    else:
        based = [d.net_pnl for d in days if d.net_pnl is not None]
        tails = [tail_risk(based, c) for c in CONFIDENCES]
        if days:
            notes.append(
                "GetRiskMetrics counts back from the latest close, which these days do not "
                "reach: value at risk is computed here from the same days by the service's rule."
            )
    if performance.days_missing_base:
        notes.append(
            f"{performance.days_missing_base} day(s) left out: a base figure was missing "
            "(an FX rate)."
        )
    if risk.missing_fx_rates:
        notes.append(f"Exposure without a rate to base: {', '.join(risk.missing_fx_rates)}.")
    return Report(
        account_id=account_id,
        base_currency=history.base_currency,
        source=f"service {address}",
        from_date=from_date,
        to_date=to_date,
        days=days,
        strategies=strategies,
        exposures=[
            (f"Exposure by asset class ({history.base_currency})", _lines(risk.by_asset_class)),
            ("Exposure by currency (each in itself)", _lines(risk.by_currency)),
        ],
        exposure_as_of="now (the book's latest prices)",
        risk=risk_table(
            days=performance.trading_days,
            total=performance.total_daily_pnl,
            tails=tails,
            volatility=performance.volatility if performance.HasField("volatility") else None,
            sharpe=performance.sharpe_ratio if performance.HasField("sharpe_ratio") else None,
            sortino=performance.sortino_ratio if performance.HasField("sortino_ratio") else None,
            drawdown=(
                performance.max_drawdown,
                performance.max_drawdown_peak_date,
                performance.max_drawdown_trough_date,
                performance.max_drawdown_recovered_date,
            ),
        ),
        notes=notes,
    )
