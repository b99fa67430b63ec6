"""Conversions between the SDK's types and the protobuf messages of portfolio.v1.

This is the only module that knows the wire format, so the exactness rules live here once:
amounts travel as plain decimal strings (never a float, never exponent notation, never NaN),
and timestamps must carry a time zone because the SDK never guesses one.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TypeVar, cast

from google.protobuf.timestamp_pb2 import Timestamp

from client.errors import ProtocolViolation
from client.models import (
    AccountKind,
    BookingPlacement,
    CommissionAmendment,
    CurrencyPerformance,
    CurrencyTotals,
    EventAck,
    EventResult,
    ExecutionEvent,
    Exposure,
    Fill,
    NamedExposure,
    OrderStatus,
    OrderStatusUpdate,
    Performance,
    PnlCurrencyDay,
    PnlDay,
    PnlHistory,
    PortfolioSummary,
    PortfolioTotals,
    PortfolioUpdate,
    Position,
    PositionLevel,
    PositionPage,
    Reconciliation,
    ReconciliationLine,
    ReconciliationPage,
    ReconciliationStatus,
    RejectCode,
    RiskMetrics,
    Side,
    StrategyCorrelation,
    StrategyPortfolio,
    StrategyTotals,
    TraceLeg,
    TraceNet,
    TracePosition,
    UpdateKind,
    ValueAtRisk,
    VenuePerformance,
)
from client.queries import (
    PerformanceQuery,
    PnlHistoryQuery,
    PortfolioSummaryQuery,
    PositionQuery,
    PositionsQuery,
    Query,
    RiskMetricsQuery,
    StrategyPortfolioQuery,
    TracePositionQuery,
)
from portfolio.v1 import portfolio_pb2 as pb

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ZERO = Decimal(0)

E = TypeVar("E", bound=enum.Enum)
R = TypeVar("R")


# ---------------------------------------------------------------------------------------------
# Scalars


def format_decimal(value: Decimal) -> str:
    """The contract's decimal string: plain notation, exact, finite.

    Negative zero is sent as zero so that "-0" never reaches a parser that might refuse it.
    """
    if not isinstance(value, Decimal):
        raise TypeError(f"expected a Decimal, got {type(value).__name__}: {value!r}")
    if not value.is_finite():
        raise ValueError(f"not a finite amount: {value}")
    if value.is_zero() and value.is_signed():
        value = value.copy_abs()
    return format(value, "f")


def parse_decimal(text: str) -> Decimal:
    """An amount from the wire; empty means zero, as the contract says for optional amounts."""
    if text == "":
        return _ZERO
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not a decimal string: {text!r}") from None
    if not value.is_finite():
        raise ValueError(f"not a finite amount: {text!r}")
    return value


def parse_optional_decimal(text: str) -> Decimal | None:
    """An amount where the contract gives the empty string the meaning "none yet"."""
    return None if text == "" else parse_decimal(text)


def to_timestamp(moment: datetime) -> Timestamp:
    """An aware datetime as a Timestamp, exact to the microsecond."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: give it a time zone (UTC)")
    delta = moment - _EPOCH
    return Timestamp(seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1_000)


def from_timestamp(stamp: Timestamp) -> datetime:
    """A Timestamp as an aware UTC datetime; nanoseconds below a microsecond are dropped."""
    return _EPOCH + timedelta(seconds=stamp.seconds, microseconds=stamp.nanos // 1_000)


def _optional_timestamp(moment: datetime | None) -> Timestamp | None:
    return None if moment is None else to_timestamp(moment)


def _maybe_time(is_set: bool, stamp: Timestamp) -> datetime | None:
    """An optional Timestamp field: unset means "no time", not the epoch."""
    return from_timestamp(stamp) if is_set else None


def _enum(kind: type[E], number: int) -> E:
    """A wire enum number as the SDK's enum; a value newer than this SDK reads as UNSPECIFIED."""
    try:
        return kind(number)
    except ValueError:
        return kind(0)


# ---------------------------------------------------------------------------------------------
# Execution events


def fill_to_proto(fill: Fill) -> pb.Fill:
    return pb.Fill(
        fill_id=fill.fill_id,
        account_id=fill.account_id,
        strategy_id=fill.strategy_id,
        instrument_id=fill.instrument_id,
        side=pb.Side.ValueType(fill.side.value),
        quantity=format_decimal(fill.quantity),
        price=format_decimal(fill.price),
        commission=format_decimal(fill.commission),
        commission_currency=fill.commission_currency,
        timestamp=_optional_timestamp(fill.timestamp),
        order_ref=fill.order_ref,
        venue=fill.venue,
        trace_id=fill.trace_id,
        order_id=fill.order_id,
        corrects=fill.corrects,
    )


def fill_from_proto(message: pb.Fill) -> Fill:
    return Fill(
        fill_id=message.fill_id,
        account_id=message.account_id,
        strategy_id=message.strategy_id,
        instrument_id=message.instrument_id,
        side=_enum(Side, message.side),
        quantity=parse_decimal(message.quantity),
        price=parse_decimal(message.price),
        commission=parse_decimal(message.commission),
        commission_currency=message.commission_currency,
        timestamp=_maybe_time(message.HasField("timestamp"), message.timestamp),
        order_ref=message.order_ref,
        venue=message.venue,
        trace_id=message.trace_id,
        order_id=message.order_id,
        corrects=message.corrects,
    )


def order_status_to_proto(update: OrderStatusUpdate) -> pb.OrderStatusUpdate:
    avg = update.avg_fill_price
    return pb.OrderStatusUpdate(
        update_id=update.update_id,
        account_id=update.account_id,
        strategy_id=update.strategy_id,
        order_ref=update.order_ref,
        order_id=update.order_id,
        instrument_id=update.instrument_id,
        status=pb.OrderStatus.ValueType(update.status.value),
        filled_quantity=format_decimal(update.filled_quantity),
        remaining_quantity=format_decimal(update.remaining_quantity),
        avg_fill_price="" if avg is None else format_decimal(avg),
        timestamp=_optional_timestamp(update.timestamp),
        side=pb.Side.ValueType(update.side.value),
        perm_id=update.perm_id,
    )


def order_status_from_proto(message: pb.OrderStatusUpdate) -> OrderStatusUpdate:
    return OrderStatusUpdate(
        update_id=message.update_id,
        account_id=message.account_id,
        strategy_id=message.strategy_id,
        order_ref=message.order_ref,
        order_id=message.order_id,
        instrument_id=message.instrument_id,
        status=_enum(OrderStatus, message.status),
        filled_quantity=parse_decimal(message.filled_quantity),
        remaining_quantity=parse_decimal(message.remaining_quantity),
        avg_fill_price=parse_optional_decimal(message.avg_fill_price),
        timestamp=_maybe_time(message.HasField("timestamp"), message.timestamp),
        side=_enum(Side, message.side),
        perm_id=message.perm_id,
    )


def commission_to_proto(amendment: CommissionAmendment) -> pb.CommissionAmendment:
    return pb.CommissionAmendment(
        amendment_id=amendment.amendment_id,
        account_id=amendment.account_id,
        fill_id=amendment.fill_id,
        commission=format_decimal(amendment.commission),
        commission_currency=amendment.commission_currency,
        timestamp=_optional_timestamp(amendment.timestamp),
    )


def event_to_proto(event: ExecutionEvent) -> pb.ExecutionEvent:
    if isinstance(event, Fill):
        return pb.ExecutionEvent(fill=fill_to_proto(event))
    if isinstance(event, OrderStatusUpdate):
        return pb.ExecutionEvent(status=order_status_to_proto(event))
    if isinstance(event, CommissionAmendment):
        return pb.ExecutionEvent(commission=commission_to_proto(event))
    raise TypeError(f"not an execution event: {type(event).__name__}")


def ack_from_proto(message: pb.EventAck) -> EventAck:
    return EventAck(
        event_id=message.event_id,
        sequence=message.sequence,
        result=_enum(EventResult, message.result),
        reason=message.reason,
        placement=_enum(BookingPlacement, message.placement),
        code=_enum(RejectCode, message.code),
    )


# ---------------------------------------------------------------------------------------------
# Positions and totals


def position_from_proto(message: pb.Position) -> Position:
    return Position(
        account_id=message.account_id,
        strategy_id=message.strategy_id,
        instrument_id=message.instrument_id,
        level=_enum(PositionLevel, message.level),
        quantity=parse_decimal(message.quantity),
        avg_cost=parse_decimal(message.avg_cost),
        realized_pnl=parse_decimal(message.realized_pnl),
        unrealized_pnl=parse_decimal(message.unrealized_pnl),
        fees=parse_decimal(message.fees),
        net_pnl=parse_decimal(message.net_pnl),
        market_price=parse_decimal(message.market_price),
        market_value=parse_decimal(message.market_value),
        cost_basis=parse_decimal(message.cost_basis),
        multiplier=parse_decimal(message.multiplier),
        trade_count=message.trade_count,
        opened_at=_maybe_time(message.HasField("opened_at"), message.opened_at),
        updated_at=_maybe_time(message.HasField("updated_at"), message.updated_at),
        last_sequence=message.last_sequence,
        currency=message.currency,
        other_fees=tuple((fee.currency, parse_decimal(fee.amount)) for fee in message.other_fees),
        base_currency=message.base_currency,
        fx_rate=parse_optional_decimal(message.fx_rate),
        realized_pnl_base=parse_optional_decimal(message.realized_pnl_base),
        unrealized_pnl_base=parse_optional_decimal(message.unrealized_pnl_base),
        fees_base=parse_optional_decimal(message.fees_base),
        net_pnl_base=parse_optional_decimal(message.net_pnl_base),
        market_value_base=parse_optional_decimal(message.market_value_base),
        day_realized_pnl=parse_optional_decimal(message.day_realized_pnl),
        day_unrealized_change=parse_optional_decimal(message.day_unrealized_change),
        day_fees=parse_optional_decimal(message.day_fees),
        day_net_pnl=parse_optional_decimal(message.day_net_pnl),
    )


def totals_from_proto(message: pb.PortfolioTotals) -> PortfolioTotals:
    return PortfolioTotals(
        realized_pnl=parse_decimal(message.realized_pnl),
        unrealized_pnl=parse_decimal(message.unrealized_pnl),
        fees=parse_decimal(message.fees),
        net_pnl=parse_decimal(message.net_pnl),
        long_exposure=parse_decimal(message.long_exposure),
        short_exposure=parse_decimal(message.short_exposure),
        gross_exposure=parse_decimal(message.gross_exposure),
        net_exposure=parse_decimal(message.net_exposure),
        open_positions=message.open_positions,
        total_positions=message.total_positions,
        trade_count=message.trade_count,
    )


def _optional_totals(is_set: bool, message: pb.PortfolioTotals) -> PortfolioTotals | None:
    """A totals field the service leaves unset where no single-currency total exists."""
    return totals_from_proto(message) if is_set else None


def _by_currency(messages: Iterable[pb.CurrencyTotals]) -> tuple[CurrencyTotals, ...]:
    return tuple(
        CurrencyTotals(
            currency=m.currency,
            totals=totals_from_proto(m.totals),
            fx_rate=parse_optional_decimal(m.fx_rate),
        )
        for m in messages
    )


def strategy_portfolio_from_proto(message: pb.StrategyPortfolio) -> StrategyPortfolio:
    return StrategyPortfolio(
        strategy_id=message.strategy_id,
        account_id=message.account_id,
        positions=tuple(position_from_proto(p) for p in message.positions),
        totals=_optional_totals(message.HasField("totals"), message.totals),
        as_of_sequence=message.as_of_sequence,
        base_currency=message.base_currency,
        base_totals=_optional_totals(message.HasField("base_totals"), message.base_totals),
        missing_fx_rates=tuple(message.missing_fx_rates),
        by_currency=_by_currency(message.by_currency),
        account_kind=_enum(AccountKind, message.account_kind),
        by_account_kind=tuple(strategy_portfolio_from_proto(p) for p in message.by_account_kind),
        trade_count=message.trade_count,
        inception_time=_maybe_time(message.HasField("inception_time"), message.inception_time),
        total_pnl=parse_optional_decimal(message.total_pnl),
        total_fees=parse_optional_decimal(message.total_fees),
        max_drawdown=parse_optional_decimal(message.max_drawdown),
        sharpe_ratio=message.sharpe_ratio if message.HasField("sharpe_ratio") else None,
    )


def summary_from_proto(message: pb.PortfolioSummary) -> PortfolioSummary:
    return PortfolioSummary(
        account_id=message.account_id,
        account_totals=_optional_totals(message.HasField("account_totals"), message.account_totals),
        strategies=tuple(
            StrategyTotals(
                strategy_id=s.strategy_id,
                totals=_optional_totals(s.HasField("totals"), s.totals),
                base_totals=_optional_totals(s.HasField("base_totals"), s.base_totals),
                by_currency=_by_currency(s.by_currency),
            )
            for s in message.strategies
        ),
        as_of_sequence=message.as_of_sequence,
        account_kind=_enum(AccountKind, message.account_kind),
        base_currency=message.base_currency,
        base_totals=_optional_totals(message.HasField("base_totals"), message.base_totals),
        missing_fx_rates=tuple(message.missing_fx_rates),
        by_currency=_by_currency(message.by_currency),
        by_account_kind=tuple(summary_from_proto(part) for part in message.by_account_kind),
    )


def page_from_proto(message: pb.ListPositionsResponse) -> PositionPage:
    return PositionPage(
        positions=tuple(position_from_proto(p) for p in message.positions),
        next_page_token=message.next_page_token,
        as_of_sequence=message.as_of_sequence,
    )


def trace_from_proto(message: pb.TracePosition) -> TracePosition:
    return TracePosition(
        trace_id=message.trace_id,
        legs=tuple(
            TraceLeg(
                step=leg.step,
                sequence=leg.sequence,
                fill_id=leg.fill_id,
                account_id=leg.account_id,
                strategy_id=leg.strategy_id,
                instrument_id=leg.instrument_id,
                side=_enum(Side, leg.side),
                quantity=parse_decimal(leg.quantity),
                price=parse_decimal(leg.price),
                venue=leg.venue,
                timestamp=_maybe_time(leg.HasField("timestamp"), leg.timestamp),
            )
            for leg in message.legs
        ),
        net=tuple(
            TraceNet(
                instrument_id=n.instrument_id,
                quantity=parse_decimal(n.quantity),
                cash_flow=parse_decimal(n.cash_flow),
            )
            for n in message.net
        ),
        first_fill_at=_maybe_time(message.HasField("first_fill_at"), message.first_fill_at),
        last_fill_at=_maybe_time(message.HasField("last_fill_at"), message.last_fill_at),
        expires_at=_maybe_time(message.HasField("expires_at"), message.expires_at),
    )


# ---------------------------------------------------------------------------------------------
# Read requests


def position_request(query: PositionQuery) -> pb.GetPositionRequest:
    request = pb.GetPositionRequest(account_id=query.account_id, instrument_id=query.instrument_id)
    if query.strategy_id is not None:
        request.strategy_id = query.strategy_id
    return request


def strategy_portfolio_request(query: StrategyPortfolioQuery) -> pb.GetStrategyPortfolioRequest:
    return pb.GetStrategyPortfolioRequest(
        strategy_id=query.strategy_id,
        account_id=query.account_id,
        include_flat=query.include_flat,
        account_kind=pb.AccountKind.ValueType(query.account_kind.value),
    )


def summary_request(query: PortfolioSummaryQuery) -> pb.GetPortfolioSummaryRequest:
    return pb.GetPortfolioSummaryRequest(
        account_id=query.account_id,
        account_kind=pb.AccountKind.ValueType(query.account_kind.value),
    )


def positions_request(query: PositionsQuery) -> pb.ListPositionsRequest:
    return pb.ListPositionsRequest(
        account_id=query.account_id,
        strategy_id=query.strategy_id,
        instrument_id=query.instrument_id,
        level=pb.PositionLevel.ValueType(query.level.value),
        include_flat=query.include_flat,
        page_size=query.page_size,
        page_token=query.page_token,
    )


def trace_request(query: TracePositionQuery) -> pb.GetTracePositionRequest:
    return pb.GetTracePositionRequest(trace_id=query.trace_id)


def query_to_proto(query: Query[object]) -> pb.PortfolioQuery:
    """The Query RPC's request for any read request value."""
    if isinstance(query, PositionQuery):
        return pb.PortfolioQuery(get_position=position_request(query))
    if isinstance(query, StrategyPortfolioQuery):
        return pb.PortfolioQuery(get_strategy_portfolio=strategy_portfolio_request(query))
    if isinstance(query, PortfolioSummaryQuery):
        return pb.PortfolioQuery(get_portfolio_summary=summary_request(query))
    if isinstance(query, PositionsQuery):
        return pb.PortfolioQuery(list_positions=positions_request(query))
    if isinstance(query, TracePositionQuery):
        return pb.PortfolioQuery(get_trace_position=trace_request(query))
    if isinstance(query, PnlHistoryQuery):
        return pb.PortfolioQuery(get_pnl_history=pnl_history_request(query))
    if isinstance(query, PerformanceQuery):
        return pb.PortfolioQuery(get_performance=performance_request(query))
    if isinstance(query, RiskMetricsQuery):
        return pb.PortfolioQuery(get_risk_metrics=risk_metrics_request(query))
    raise TypeError(f"not a portfolio query: {type(query).__name__}")


def query_result(query: Query[R], response: pb.PortfolioResponse) -> R:
    """The Query RPC's answer as the type the request names.

    Raises ProtocolViolation when the service answered in a branch other than the one asked for.
    """
    branch = response.WhichOneof("response")
    result: object
    if isinstance(query, PositionQuery) and branch == "position":
        result = position_from_proto(response.position)
    elif isinstance(query, StrategyPortfolioQuery) and branch == "strategy_portfolio":
        result = strategy_portfolio_from_proto(response.strategy_portfolio)
    elif isinstance(query, PortfolioSummaryQuery) and branch == "portfolio_summary":
        result = summary_from_proto(response.portfolio_summary)
    elif isinstance(query, PositionsQuery) and branch == "list_positions":
        result = page_from_proto(response.list_positions)
    elif isinstance(query, TracePositionQuery) and branch == "trace_position":
        result = trace_from_proto(response.trace_position)
    elif isinstance(query, PnlHistoryQuery) and branch == "pnl_history":
        result = pnl_history_from_proto(response.pnl_history)
    elif isinstance(query, PerformanceQuery) and branch == "performance":
        result = performance_from_proto(response.performance)
    elif isinstance(query, RiskMetricsQuery) and branch == "risk_metrics":
        result = risk_metrics_from_proto(response.risk_metrics)
    else:
        raise ProtocolViolation(f"{type(query).__name__} answered with {branch or 'nothing'}")
    return cast(R, result)


# ---------------------------------------------------------------------------------------------
# Live updates


def subscribe_request(
    *,
    account_id: str,
    strategy_id: str,
    instrument_id: str,
    level: PositionLevel,
    from_sequence: int,
    batch: bool = True,
) -> pb.SubscribeUpdatesRequest:
    """Asks for batches by default: one message per update costs the service far more than
    one per burst (a service that predates batches ignores the flag and sends them one by one)."""
    if from_sequence < 0:
        raise ValueError(f"from_sequence must be >= 0, got {from_sequence}")
    return pb.SubscribeUpdatesRequest(
        account_id=account_id,
        strategy_id=strategy_id,
        instrument_id=instrument_id,
        level=pb.PositionLevel.ValueType(level.value),
        from_sequence=from_sequence,
        batch=batch,
    )


def updates_from_proto(message: pb.PortfolioUpdate) -> list[PortfolioUpdate]:
    """The updates one message carries, in order: a batch's, or the message itself."""
    if message.kind == pb.UPDATE_KIND_BATCH:
        return [update_from_proto(update) for update in message.batch]
    return [update_from_proto(message)]


def update_from_proto(message: pb.PortfolioUpdate) -> PortfolioUpdate:
    return PortfolioUpdate(
        sequence=message.sequence,
        kind=_enum(UpdateKind, message.kind),
        event_id=message.event_id,
        position=position_from_proto(message.position) if message.HasField("position") else None,
        order_status=(
            order_status_from_proto(message.order_status)
            if message.HasField("order_status")
            else None
        ),
        fill=fill_from_proto(message.fill) if message.HasField("fill") else None,
        placement=_enum(BookingPlacement, message.placement),
    )


# ---------------------------------------------------------------------------------------------
# Reconciliation


def reconcile_request(account_id: str) -> pb.ReconcileRequest:
    return pb.ReconcileRequest(account_id=account_id)


def reconciliation_request(account_id: str) -> pb.GetReconciliationRequest:
    return pb.GetReconciliationRequest(account_id=account_id)


def reconciliations_request(
    account_id: str, page_size: int, page_token: str
) -> pb.ListReconciliationsRequest:
    return pb.ListReconciliationsRequest(
        account_id=account_id, page_size=page_size, page_token=page_token
    )


def reconciliation_from_proto(message: pb.Reconciliation) -> Reconciliation:
    return Reconciliation(
        account_id=message.account_id,
        snapshot_id=message.snapshot_id,
        sequence=message.sequence,
        reconciled_at=_maybe_time(message.HasField("reconciled_at"), message.reconciled_at),
        broker_positions=message.broker_positions,
        matched=message.matched,
        discrepancies=message.discrepancies,
        clean=message.clean,
        lines=tuple(_line_from_proto(line) for line in message.lines),
    )


def reconciliation_page_from_proto(message: pb.ListReconciliationsResponse) -> ReconciliationPage:
    return ReconciliationPage(
        reconciliations=tuple(reconciliation_from_proto(r) for r in message.reconciliations),
        next_page_token=message.next_page_token,
    )


def _line_from_proto(message: pb.ReconciliationLine) -> ReconciliationLine:
    residual = message.residual_position
    return ReconciliationLine(
        instrument_id=message.instrument_id,
        status=_enum(ReconciliationStatus, message.status),
        discrepancy=message.discrepancy,
        broker_quantity=parse_decimal(message.broker_quantity),
        broker_avg_cost=parse_decimal(message.broker_avg_cost),
        broker_unit_cost=parse_decimal(message.broker_unit_cost),
        account_quantity=parse_decimal(message.account_quantity),
        service_avg_cost=parse_decimal(message.service_avg_cost),
        attributed_quantity=parse_decimal(message.attributed_quantity),
        strategies=tuple(
            (item.strategy_id, parse_decimal(item.quantity)) for item in message.strategies
        ),
        residual_quantity=parse_decimal(message.residual_quantity),
        residual_position=(
            position_from_proto(residual) if message.HasField("residual_position") else None
        ),
        note=message.note,
    )


# ---------------------------------------------------------------------------------------------
# P&L history, performance and risk

#: The most trading days of history GetRiskMetrics looks back over (ten years).
MAX_LOOKBACK_DAYS = 2520


def _date_text(name: str, value: date | None) -> str:
    """A trading date as the contract's YYYY-MM-DD; a datetime is refused rather than cut,
    since which date it falls on depends on the session's time zone."""
    if value is None:
        return ""
    if isinstance(value, datetime) or not isinstance(value, date):
        raise TypeError(
            f"{name} must be a datetime.date (a trading date), got {type(value).__name__}: "
            f"{value!r}"
        )
    return value.isoformat()


def _date_range(from_date: date | None, to_date: date | None) -> tuple[str, str]:
    start, end = _date_text("from_date", from_date), _date_text("to_date", to_date)
    if from_date is not None and to_date is not None and to_date < from_date:
        raise ValueError(f"to_date {end} is before from_date {start}")
    return start, end


def _parse_date(text: str) -> date | None:
    """A YYYY-MM-DD date from the service; empty means none."""
    if text == "":
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ProtocolViolation(f"not a YYYY-MM-DD date: {text!r}") from None


def pnl_history_request(query: PnlHistoryQuery) -> pb.GetPnlHistoryRequest:
    from_date, to_date = _date_range(query.from_date, query.to_date)
    return pb.GetPnlHistoryRequest(
        account_id=query.account_id,
        strategy_id=query.strategy_id,
        from_date=from_date,
        to_date=to_date,
    )


def performance_request(query: PerformanceQuery) -> pb.GetPerformanceRequest:
    from_date, to_date = _date_range(query.from_date, query.to_date)
    return pb.GetPerformanceRequest(
        account_id=query.account_id,
        strategy_id=query.strategy_id,
        from_date=from_date,
        to_date=to_date,
        instrument_id=query.instrument_id,
    )


def risk_metrics_request(query: RiskMetricsQuery) -> pb.GetRiskMetricsRequest:
    days = query.lookback_days
    if isinstance(days, bool) or not isinstance(days, int):
        raise TypeError(f"lookback_days must be an int, got {type(days).__name__}: {days!r}")
    if not 0 <= days <= MAX_LOOKBACK_DAYS:
        raise ValueError(
            f"lookback_days must be within 0..{MAX_LOOKBACK_DAYS} (0: the service's 250), "
            f"got {days}"
        )
    levels = []
    for level in query.confidence_levels:
        if not isinstance(level, Decimal):
            raise TypeError(f"a confidence level must be a Decimal, got {type(level).__name__}")
        levels.append(format_decimal(level))
    return pb.GetRiskMetricsRequest(
        account_id=query.account_id, strategy_id=query.strategy_id, lookback_days=days,
        confidence_levels=levels,
    )  # fmt: skip


def _pnl_day_from_proto(message: pb.PnlDay) -> PnlDay:
    trading_date = _parse_date(message.trading_date)
    if trading_date is None:
        raise ProtocolViolation(f"a P&L day without a trading date (sequence {message.sequence})")
    return PnlDay(
        trading_date=trading_date,
        closed_at=_maybe_time(message.HasField("closed_at"), message.closed_at),
        sequence=message.sequence,
        late=message.late,
        by_currency=tuple(
            PnlCurrencyDay(
                currency=c.currency,
                realized_pnl=parse_decimal(c.realized_pnl),
                unrealized_pnl=parse_decimal(c.unrealized_pnl),
                unrealized_change=parse_decimal(c.unrealized_change),
                fees=parse_decimal(c.fees),
                net_pnl=parse_decimal(c.net_pnl),
                exposure=parse_decimal(c.exposure),
                gross_exposure=parse_decimal(c.gross_exposure),
            )
            for c in message.by_currency
        ),
        realized_pnl_base=parse_optional_decimal(message.realized_pnl_base),
        unrealized_pnl_base=parse_optional_decimal(message.unrealized_pnl_base),
        fees_base=parse_optional_decimal(message.fees_base),
        net_pnl_base=parse_optional_decimal(message.net_pnl_base),
        exposure_base=parse_optional_decimal(message.exposure_base),
        gross_exposure_base=parse_optional_decimal(message.gross_exposure_base),
        missing_fx_rates=tuple(message.missing_fx_rates),
    )


def pnl_history_from_proto(message: pb.PnlHistory) -> PnlHistory:
    return PnlHistory(
        account_id=message.account_id,
        strategy_id=message.strategy_id,
        base_currency=message.base_currency,
        days=tuple(_pnl_day_from_proto(day) for day in message.days),
        as_of_sequence=message.as_of_sequence,
    )


def _currency_performance(message: pb.CurrencyPerformance) -> CurrencyPerformance:
    return CurrencyPerformance(
        currency=message.currency,
        trade_count=message.trade_count,
        round_trips=message.round_trips,
        open_trips=message.open_trips,
        wins=message.wins,
        losses=message.losses,
        win_rate=message.win_rate if message.HasField("win_rate") else None,
        average_win=parse_optional_decimal(message.average_win),
        average_loss=parse_optional_decimal(message.average_loss),
        profit_factor=message.profit_factor if message.HasField("profit_factor") else None,
        expectancy=parse_optional_decimal(message.expectancy),
        largest_win=parse_decimal(message.largest_win),
        largest_loss=parse_decimal(message.largest_loss),
        gross_pnl=parse_decimal(message.gross_pnl),
        fees=parse_decimal(message.fees),
        net_pnl=parse_decimal(message.net_pnl),
        realized_pnl=parse_decimal(message.realized_pnl),
    )


def performance_from_proto(message: pb.Performance) -> Performance:
    return Performance(
        account_id=message.account_id,
        strategy_id=message.strategy_id,
        base_currency=message.base_currency,
        inception_time=_maybe_time(message.HasField("inception_time"), message.inception_time),
        by_currency=tuple(_currency_performance(c) for c in message.by_currency),
        trading_days=message.trading_days,
        days_missing_base=message.days_missing_base,
        total_daily_pnl=parse_decimal(message.total_daily_pnl),
        mean_daily_pnl=message.mean_daily_pnl if message.HasField("mean_daily_pnl") else None,
        volatility=message.volatility if message.HasField("volatility") else None,
        sharpe_ratio=message.sharpe_ratio if message.HasField("sharpe_ratio") else None,
        sortino_ratio=message.sortino_ratio if message.HasField("sortino_ratio") else None,
        max_drawdown=parse_decimal(message.max_drawdown),
        max_drawdown_peak_date=_parse_date(message.max_drawdown_peak_date),
        max_drawdown_trough_date=_parse_date(message.max_drawdown_trough_date),
        max_drawdown_recovered_date=_parse_date(message.max_drawdown_recovered_date),
        venues=tuple(
            VenuePerformance(
                venue=v.venue,
                currency=v.currency,
                fills=v.fills,
                volume=parse_decimal(v.volume),
                fees=parse_decimal(v.fees),
                realized_pnl=parse_decimal(v.realized_pnl),
            )
            for v in message.venues
        ),
        as_of_sequence=message.as_of_sequence,
    )


def _exposure(message: pb.Exposure) -> Exposure:
    return Exposure(
        long=parse_decimal(message.long),
        short=parse_decimal(message.short),
        gross=parse_decimal(message.gross),
        net=parse_decimal(message.net),
    )


def _named(messages: Iterable[pb.NamedExposure]) -> tuple[NamedExposure, ...]:
    return tuple(NamedExposure(name=m.name, exposure=_exposure(m.exposure)) for m in messages)


def risk_metrics_from_proto(message: pb.RiskMetrics) -> RiskMetrics:
    return RiskMetrics(
        account_id=message.account_id,
        strategy_id=message.strategy_id,
        base_currency=message.base_currency,
        total=_exposure(message.total),
        by_instrument=_named(message.by_instrument),
        by_asset_class=_named(message.by_asset_class),
        by_currency=_named(message.by_currency),
        missing_fx_rates=tuple(message.missing_fx_rates),
        largest_instrument=message.largest_instrument,
        concentration=parse_optional_decimal(message.concentration),
        lookback_days=message.lookback_days,
        trading_days=message.trading_days,
        volatility=message.volatility if message.HasField("volatility") else None,
        value_at_risk=tuple(
            ValueAtRisk(
                confidence=parse_decimal(v.confidence),
                value_at_risk=parse_optional_decimal(v.value_at_risk),
                expected_shortfall=parse_optional_decimal(v.expected_shortfall),
                days_in_tail=v.days_in_tail,
            )
            for v in message.value_at_risk
        ),
        correlations=tuple(
            StrategyCorrelation(
                strategy_a=c.strategy_a,
                strategy_b=c.strategy_b,
                days=c.days,
                correlation=c.correlation if c.HasField("correlation") else None,
            )
            for c in message.correlations
        ),
        as_of_sequence=message.as_of_sequence,
    )
