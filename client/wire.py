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
from typing import TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from client.errors import ProtocolViolation
from client.models import (
    Account,
    AccountKind,
    AssetClass,
    Balance,
    Balances,
    BookingPlacement,
    CashTransfer,
    CommissionAmendment,
    ConsolidatedPosition,
    CurrencyPerformance,
    CurrencyTotals,
    EventAck,
    EventResult,
    ExecutionEvent,
    Exposure,
    Fill,
    FxRate,
    Instrument,
    InstrumentPage,
    MarkPrice,
    MarkSource,
    NamedExposure,
    OptionRight,
    Order,
    OrderPage,
    OrderStatus,
    OrderStatusUpdate,
    OrderTransition,
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
    ReconciliationCashLine,
    ReconciliationLine,
    ReconciliationPage,
    ReconciliationStatus,
    RejectCode,
    Reservation,
    ReservationStatus,
    RiskMetrics,
    Side,
    StrategyCorrelation,
    StrategyPortfolio,
    StrategyTotals,
    TraceLeg,
    TraceNet,
    TracePosition,
    TraceVenuePerformance,
    UpdateKind,
    ValueAtRisk,
    VenuePerformance,
)
from client.queries import (
    BalancesQuery,
    ConsolidatedPositionQuery,
    InstrumentQuery,
    OpenOrdersQuery,
    OrderQuery,
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
from client.requests import ReleaseReservation, ReserveCash
from portfolio.v1 import portfolio_pb2 as pb

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ZERO = Decimal(0)

E = TypeVar("E", bound=enum.Enum)
R = TypeVar("R")


# ---------------------------------------------------------------------------------------------
# Scalars


def format_decimal(value: Decimal, field: str = "") -> str:
    """The contract's decimal string: plain notation, exact, finite.

    Negative zero is sent as zero so that "-0" never reaches a parser that might refuse it.
    `field` names the amount in the error when it is not one.
    """
    where = f"{field}: " if field else ""
    if not isinstance(value, Decimal):
        raise TypeError(f"{where}expected a Decimal, got {type(value).__name__}: {value!r}")
    if not value.is_finite():
        raise ValueError(f"{where}not a finite amount: {value}")
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


def transfer_to_proto(transfer: CashTransfer) -> pb.CashTransfer:
    return pb.CashTransfer(
        transfer_id=transfer.transfer_id,
        account_id=transfer.account_id,
        currency=transfer.currency,
        amount=format_decimal(transfer.amount, "amount"),
        timestamp=_optional_timestamp(transfer.timestamp),
        chain_id=transfer.chain_id,
        note=transfer.note,
    )


def event_to_proto(event: ExecutionEvent) -> pb.ExecutionEvent:
    if isinstance(event, Fill):
        return pb.ExecutionEvent(fill=fill_to_proto(event))
    if isinstance(event, OrderStatusUpdate):
        return pb.ExecutionEvent(status=order_status_to_proto(event))
    if isinstance(event, CommissionAmendment):
        return pb.ExecutionEvent(commission=commission_to_proto(event))
    if isinstance(event, CashTransfer):
        return pb.ExecutionEvent(transfer=transfer_to_proto(event))
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
        mark_source=_enum(MarkSource, message.mark_source),
        marked_at=_maybe_time(message.HasField("marked_at"), message.marked_at),
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


def as_of_to_proto(point: int | datetime | None) -> pb.AsOf | None:
    """A past point of the book: a sequence (an int), or a time (an aware datetime)."""
    if point is None:
        return None
    if isinstance(point, datetime):
        return pb.AsOf(time=to_timestamp(point))
    if isinstance(point, bool) or not isinstance(point, int):
        raise TypeError(
            f"as_of must be a sequence (int) or an aware datetime, got {type(point).__name__}"
        )
    if point < 1:
        raise ValueError(f"as_of sequence must be >= 1, got {point}")
    return pb.AsOf(sequence=point)


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
        as_of=as_of_to_proto(query.as_of),
    )


def summary_request(query: PortfolioSummaryQuery) -> pb.GetPortfolioSummaryRequest:
    return pb.GetPortfolioSummaryRequest(
        account_id=query.account_id,
        account_kind=pb.AccountKind.ValueType(query.account_kind.value),
        as_of=as_of_to_proto(query.as_of),
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
        as_of=as_of_to_proto(query.as_of),
    )


def trace_request(query: TracePositionQuery) -> pb.GetTracePositionRequest:
    return pb.GetTracePositionRequest(trace_id=query.trace_id)


def query_to_proto(query: Query[object]) -> pb.PortfolioQuery:
    """The Query RPC's request for any read request value (see `client.rpcs`)."""
    from client import rpcs  # the table of calls builds on this module

    return rpcs.query_to_proto(query)


def query_result(query: Query[R], response: pb.PortfolioResponse) -> R:
    """The Query RPC's answer as the type the request names; ProtocolViolation when the
    service answered in a branch other than the one asked for."""
    from client import rpcs

    return rpcs.query_result(query, response)


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
    include_balances: bool = False,
    include_marks: bool = False,
    include_reconciliations: bool = False,
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
        include_balances=include_balances,
        include_marks=include_marks,
        include_reconciliations=include_reconciliations,
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
        order=order_from_proto(message.order) if message.HasField("order") else None,
        balance=balance_from_proto(message.balance) if message.HasField("balance") else None,
        mark=mark_from_proto(message.mark) if message.HasField("mark") else None,
        reconciliation=(
            reconciliation_from_proto(message.reconciliation)
            if message.HasField("reconciliation")
            else None
        ),
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
        cash=tuple(
            ReconciliationCashLine(
                currency=c.currency,
                status=_enum(ReconciliationStatus, c.status),
                discrepancy=c.discrepancy,
                broker_cash=parse_decimal(c.broker_cash),
                service_cash=parse_decimal(c.service_cash),
                difference=parse_decimal(c.difference),
                note=c.note,
            )
            for c in message.cash
        ),
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
        trace_venues=tuple(
            TraceVenuePerformance(
                venue=t.venue,
                steps=t.steps,
                average_step_latency=t.average_step_latency.ToTimedelta(),
                legs_done=t.legs_done,
                legs_open=t.legs_open,
                success_rate=t.success_rate if t.HasField("success_rate") else None,
            )
            for t in message.trace_venues
        ),
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


# ---------------------------------------------------------------------------------------------
# Market prices (what comes back in a MARK update; `client.marks` sends them)


def mark_from_proto(message: pb.MarkPrice) -> MarkPrice:
    return MarkPrice(
        instrument_id=message.instrument_id,
        timestamp=from_timestamp(message.timestamp),
        mark=parse_optional_decimal(message.mark),
        bid=parse_optional_decimal(message.bid),
        ask=parse_optional_decimal(message.ask),
        last=parse_optional_decimal(message.last),
    )


def fx_rate_from_proto(message: pb.FxRate) -> FxRate:
    return FxRate(
        base=message.base_currency,
        quote=message.quote_currency,
        rate=parse_decimal(message.rate),
        timestamp=from_timestamp(message.timestamp),
    )


# ---------------------------------------------------------------------------------------------
# Orders


def order_request(query: OrderQuery) -> pb.GetOrderRequest:
    return pb.GetOrderRequest(
        account_id=query.account_id, order_id=query.order_id, order_ref=query.order_ref
    )


def open_orders_request(query: OpenOrdersQuery) -> pb.ListOpenOrdersRequest:
    return pb.ListOpenOrdersRequest(
        account_id=query.account_id,
        strategy_id=query.strategy_id,
        page_size=query.page_size,
        page_token=query.page_token,
    )


def order_from_proto(message: pb.Order) -> Order:
    return Order(
        account_id=message.account_id,
        order_key=message.order_key,
        order_id=message.order_id,
        order_ref=message.order_ref,
        perm_id=message.perm_id,
        strategy_id=message.strategy_id,
        instrument_id=message.instrument_id,
        side=_enum(Side, message.side),
        status=_enum(OrderStatus, message.status),
        filled_quantity=parse_decimal(message.filled_quantity),
        remaining_quantity=parse_decimal(message.remaining_quantity),
        avg_fill_price=parse_optional_decimal(message.avg_fill_price),
        booked_quantity=parse_decimal(message.booked_quantity),
        quantity_mismatch=parse_decimal(message.quantity_mismatch),
        booked_fills=message.booked_fills,
        is_open=message.is_open,
        created_at=_maybe_time(message.HasField("created_at"), message.created_at),
        updated_at=_maybe_time(message.HasField("updated_at"), message.updated_at),
        last_sequence=message.last_sequence,
        history=tuple(
            OrderTransition(
                sequence=t.sequence,
                update=order_status_from_proto(t.update) if t.HasField("update") else None,
                flag=t.flag,
                replaced=t.replaced,
                corrects=t.corrects,
                late=t.late,
            )
            for t in message.history
        ),
    )


def order_page_from_proto(message: pb.ListOpenOrdersResponse) -> OrderPage:
    return OrderPage(
        orders=tuple(order_from_proto(o) for o in message.orders),
        next_page_token=message.next_page_token,
        as_of_sequence=message.as_of_sequence,
    )


# ---------------------------------------------------------------------------------------------
# Instruments and accounts


def _optional_amount(value: Decimal | None, field: str) -> str:
    return "" if value is None else format_decimal(value, field)


def instrument_to_proto(instrument: Instrument) -> pb.Instrument:
    message = pb.Instrument(
        instrument_id=instrument.instrument_id,
        symbol=instrument.symbol,
        asset_class=pb.AssetClass.ValueType(instrument.asset_class.value),
        currency=instrument.currency,
        multiplier=format_decimal(instrument.multiplier, "multiplier"),
        tick_size=_optional_amount(instrument.tick_size, "tick_size"),
        underlying=instrument.underlying,
        strike=_optional_amount(instrument.strike, "strike"),
        expiry=instrument.expiry,
        right=pb.OptionRight.ValueType(instrument.right.value),
        settlement_date=instrument.settlement_date,
    )
    if instrument.decimals is not None:
        message.decimals = instrument.decimals
    return message


def instrument_from_proto(message: pb.Instrument) -> Instrument:
    return Instrument(
        instrument_id=message.instrument_id,
        currency=message.currency,
        symbol=message.symbol,
        asset_class=_enum(AssetClass, message.asset_class),
        multiplier=parse_decimal(message.multiplier or "1"),
        tick_size=parse_optional_decimal(message.tick_size),
        underlying=message.underlying,
        strike=parse_optional_decimal(message.strike),
        expiry=message.expiry,
        right=_enum(OptionRight, message.right),
        settlement_date=message.settlement_date,
        decimals=message.decimals if message.HasField("decimals") else None,
        provisional=message.provisional,
    )


def instrument_request(query: InstrumentQuery) -> pb.GetInstrumentRequest:
    return pb.GetInstrumentRequest(instrument_id=query.instrument_id)


def instrument_page_from_proto(message: pb.ListInstrumentsResponse) -> InstrumentPage:
    return InstrumentPage(
        instruments=tuple(instrument_from_proto(i) for i in message.instruments),
        next_page_token=message.next_page_token,
    )


def account_to_proto(account: Account) -> pb.Account:
    return pb.Account(
        account_id=account.account_id,
        kind=pb.AccountKind.ValueType(account.kind.value),
        base_currency=account.base_currency,
        initial_cash=format_decimal(account.initial_cash, "initial_cash"),
    )


def account_from_proto(message: pb.Account) -> Account:
    return Account(
        account_id=message.account_id,
        kind=_enum(AccountKind, message.kind),
        base_currency=message.base_currency,
        initial_cash=parse_decimal(message.initial_cash),
        defined=message.defined,
    )


def accounts_from_proto(message: pb.ListAccountsResponse) -> tuple[Account, ...]:
    return tuple(account_from_proto(a) for a in message.accounts)


# ---------------------------------------------------------------------------------------------
# Balances and reservations


def balance_from_proto(message: pb.Balance) -> Balance:
    return Balance(
        account_id=message.account_id,
        currency=message.currency,
        chain_id=message.chain_id,
        cash=parse_decimal(message.cash),
        reserved=parse_decimal(message.reserved),
        available=parse_decimal(message.available),
        updated_at=_maybe_time(message.HasField("updated_at"), message.updated_at),
        last_sequence=message.last_sequence,
    )


def reservation_from_proto(message: pb.Reservation) -> Reservation:
    return Reservation(
        reservation_id=message.reservation_id,
        account_id=message.account_id,
        currency=message.currency,
        chain_id=message.chain_id,
        amount=parse_decimal(message.amount),
        remaining=parse_decimal(message.remaining),
        consumed=parse_decimal(message.consumed),
        released=parse_decimal(message.released),
        status=_enum(ReservationStatus, message.status),
        order_key=message.order_key,
        strategy_id=message.strategy_id,
        sequence=message.sequence,
    )


def balances_request(query: BalancesQuery) -> pb.GetBalancesRequest:
    return pb.GetBalancesRequest(account_id=query.account_id)


def balances_from_proto(message: pb.Balances) -> Balances:
    return Balances(
        account_id=message.account_id,
        account_kind=_enum(AccountKind, message.account_kind),
        base_currency=message.base_currency,
        balances=tuple(balance_from_proto(b) for b in message.balances),
        reservations=tuple(reservation_from_proto(r) for r in message.reservations),
        as_of_sequence=message.as_of_sequence,
    )


def reserve_request(request: ReserveCash) -> pb.ReserveCashRequest:
    return pb.ReserveCashRequest(
        reservation_id=request.reservation_id,
        account_id=request.account_id,
        currency=request.currency,
        chain_id=request.chain_id,
        amount=format_decimal(request.amount, "amount"),
        strategy_id=request.strategy_id,
        order_id=request.order_id,
        order_ref=request.order_ref,
    )


def release_request(request: ReleaseReservation) -> pb.ReleaseReservationRequest:
    return pb.ReleaseReservationRequest(
        release_id=request.release_id,
        account_id=request.account_id,
        reservation_id=request.reservation_id,
        amount=_optional_amount(request.amount, "amount"),
    )


# ---------------------------------------------------------------------------------------------
# The consolidated book


def consolidated_request(query: ConsolidatedPositionQuery) -> pb.GetConsolidatedPositionRequest:
    return pb.GetConsolidatedPositionRequest(
        account_id=query.account_id, instrument_id=query.instrument_id
    )


def consolidated_from_proto(message: pb.ConsolidatedPosition) -> ConsolidatedPosition:
    return ConsolidatedPosition(
        account_id=message.account_id,
        instrument_id=message.instrument_id,
        account_kind=_enum(AccountKind, message.account_kind),
        account_position=(
            position_from_proto(message.account_position)
            if message.HasField("account_position")
            else None
        ),
        strategy_positions=tuple(position_from_proto(p) for p in message.strategy_positions),
        attributed_quantity=parse_decimal(message.attributed_quantity),
        unattributed_quantity=parse_decimal(message.unattributed_quantity),
        as_of_sequence=message.as_of_sequence,
        broker_quantity=parse_optional_decimal(message.broker_quantity),
        reconciliation_status=_enum(ReconciliationStatus, message.reconciliation_status),
        residual_position=(
            position_from_proto(message.residual_position)
            if message.HasField("residual_position")
            else None
        ),
        reconciled_at=_maybe_time(message.HasField("reconciled_at"), message.reconciled_at),
    )
