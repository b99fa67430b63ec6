"""Strategy portfolios and portfolio summaries on the wire.

Nothing here adds amounts of different currencies: a total stays unset where the service has
none (more than one currency involved, or paper and live side by side), and the per-currency
totals and their base-currency sum say the rest.
"""

from __future__ import annotations

from portfolio.v1 import portfolio_pb2 as pb
from server.api.wire import position_to_proto, set_timestamp, totals_to_proto
from server.api.wire_reference import (
    ACCOUNT_KIND_TO_PROTO,
    balance_to_proto,
    currency_totals_to_proto,
)
from server.application.reads import InBase, PortfolioSummary, StrategyPortfolio
from server.domain.decimals import canonical
from server.domain.totals import Totals


def strategy_portfolio_to_proto(
    portfolio: StrategyPortfolio,
) -> pb.StrategyPortfolio:
    message = pb.StrategyPortfolio(
        strategy_id=portfolio.strategy_id,
        account_id=portfolio.account_id,
        positions=[position_to_proto(view) for view in portfolio.positions],
        as_of_sequence=portfolio.as_of_sequence,
        by_account_kind=[strategy_portfolio_to_proto(part) for part in portfolio.by_account_kind],
    )
    if portfolio.account_kind is not None:
        message.account_kind = ACCOUNT_KIND_TO_PROTO[portfolio.account_kind]
    _set_totals(message.totals, portfolio.totals)
    _set_in_base(message, portfolio.in_base)
    message.trade_count = portfolio.trade_count
    if portfolio.inception_ns:
        set_timestamp(message.inception_time, portfolio.inception_ns)
    base_totals = portfolio.in_base.totals
    if base_totals is not None:
        message.total_pnl = canonical(base_totals.net_pnl)
        message.total_fees = canonical(base_totals.fees)
    if portfolio.daily is not None:
        message.max_drawdown = canonical(portfolio.daily.drawdown.amount)
        if portfolio.daily.sharpe_ratio is not None:
            message.sharpe_ratio = portfolio.daily.sharpe_ratio
    return message


def summary_to_proto(summary: PortfolioSummary) -> pb.PortfolioSummary:
    message = pb.PortfolioSummary(
        account_id=summary.account_id,
        as_of_sequence=summary.as_of_sequence,
        cash=[balance_to_proto(balance) for balance in summary.cash],
        by_account_kind=[summary_to_proto(part) for part in summary.by_account_kind],
    )
    if summary.account_kind is not None:
        message.account_kind = ACCOUNT_KIND_TO_PROTO[summary.account_kind]
    _set_totals(message.account_totals, summary.account_totals)
    _set_in_base(message, summary.in_base)
    for strategy_id, totals, in_base in summary.strategies:
        strategy = message.strategies.add(strategy_id=strategy_id)
        _set_totals(strategy.totals, totals)
        if in_base.totals is not None:
            strategy.base_totals.CopyFrom(totals_to_proto(in_base.totals))
        strategy.by_currency.extend(currency_totals_to_proto(in_base))
    return message


def _set_totals(field: pb.PortfolioTotals, totals: Totals | None) -> None:
    """Sets a totals field, or leaves it unset (None: no single-currency total exists)."""
    if totals is not None:
        field.CopyFrom(totals_to_proto(totals))


def _set_in_base(message: pb.StrategyPortfolio | pb.PortfolioSummary, in_base: InBase) -> None:
    message.base_currency = in_base.base_currency
    message.missing_fx_rates.extend(in_base.missing)
    message.by_currency.extend(currency_totals_to_proto(in_base))
    _set_totals(message.base_totals, in_base.totals)
