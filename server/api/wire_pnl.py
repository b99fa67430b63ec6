"""P&L history messages from the read model's days."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from portfolio.v1 import portfolio_pb2 as pb
from server.api.wire import set_timestamp
from server.domain.decimals import canonical
from server.domain.pnl_history import ScopeDay


def _optional(amount: Decimal | None) -> str:
    return "" if amount is None else canonical(amount)


def pnl_day_to_proto(day: ScopeDay) -> pb.PnlDay:
    message = pb.PnlDay(
        trading_date=day.trading_date,
        sequence=day.sequence,
        late=day.late,
        by_currency=[
            pb.PnlCurrencyDay(
                currency=currency,
                realized_pnl=canonical(figures.realized_pnl),
                unrealized_pnl=canonical(figures.unrealized_pnl),
                unrealized_change=canonical(figures.unrealized_change),
                fees=canonical(figures.fees),
                net_pnl=canonical(figures.net_pnl),
                exposure=canonical(figures.exposure),
                gross_exposure=canonical(figures.gross_exposure),
            )
            for currency, figures in sorted(day.by_currency.items())
        ],
        realized_pnl_base=_optional(day.realized_pnl_base),
        unrealized_pnl_base=_optional(day.unrealized_pnl_base),
        fees_base=_optional(day.fees_base),
        net_pnl_base=_optional(day.net_pnl_base),
        exposure_base=_optional(day.exposure_base),
        gross_exposure_base=_optional(day.gross_exposure_base),
        missing_fx_rates=sorted(day.missing_fx_rates),
    )
    set_timestamp(message.closed_at, day.close_ns)
    return message


def pnl_history_to_proto(
    account_id: str,
    strategy_id: str,
    base_currency: str,
    days: Iterable[ScopeDay],
    as_of_sequence: int,
) -> pb.PnlHistory:
    return pb.PnlHistory(
        account_id=account_id,
        strategy_id=strategy_id,
        base_currency=base_currency,
        days=[pnl_day_to_proto(day) for day in days],
        as_of_sequence=as_of_sequence,
    )
