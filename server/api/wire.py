"""Conversions between portfolio.v1 messages and domain values.

Incoming text is parsed strictly (plain decimal notation only) and every problem is raised as a
`FieldViolation` naming the field; the domain's own rules come back the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from portfolio.v1 import portfolio_pb2 as pb
from server.domain.book import PositionView
from server.domain.decimals import ZERO, canonical
from server.domain.events import (
    CashTransfer,
    CommissionAmendment,
    Fill,
    FillCorrection,
    InvalidEvent,
    OrderStatus,
    OrderStatusUpdate,
    Side,
)
from server.domain.marks import MarkSource
from server.domain.totals import Totals
from server.domain.traces import Trace

_PLAIN_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_plain_decimal = _PLAIN_DECIMAL.fullmatch
_MAX_TEXT = 64

"""How many units of the second currency one unit of the first is worth; None when unknown."""

SIDE_FROM_PROTO = {pb.SIDE_BUY: Side.BUY, pb.SIDE_SELL: Side.SELL}
SIDE_TO_PROTO = {side: number for number, side in SIDE_FROM_PROTO.items()}
STATUS_FROM_PROTO = {number: OrderStatus(number) for number in range(1, len(OrderStatus) + 1)}
MARK_SOURCE = {
    MarkSource.NONE: pb.MARK_SOURCE_UNSPECIFIED,
    MarkSource.MARKET: pb.MARK_SOURCE_MARKET,
    MarkSource.LAST_FILL: pb.MARK_SOURCE_LAST_FILL,
}


class FieldViolation(ValueError):
    """A request field that cannot be accepted, and why."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description

    def within(self, prefix: str) -> FieldViolation:
        return FieldViolation(f"{prefix}.{self.field}", self.description)


@contextmanager
def field_errors(renames: Mapping[str, str] | None = None) -> Iterator[None]:
    """The domain's own rules (`InvalidEvent`) reported as field violations, under the wire's
    field names where they differ."""
    try:
        yield
    except InvalidEvent as invalid:
        field = (renames or {}).get(invalid.field, invalid.field)
        raise FieldViolation(field, invalid.reason) from None


def parse_decimal(field: str, text: str, *, default: Decimal | None = None) -> Decimal:
    """A decimal string as the protocol defines it; empty gives `default`, if there is one."""
    if text and len(text) <= _MAX_TEXT and _plain_decimal(text) is not None:
        return Decimal(text)  # the usual case first: every fill has three amounts
    if not text and default is not None:
        return default
    if not text:
        raise FieldViolation(field, 'is required (a decimal string such as "10.25")')
    if len(text) > _MAX_TEXT or not _PLAIN_DECIMAL.fullmatch(text):
        shown = text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "..."
        raise FieldViolation(
            field, f"{shown!r} is not a plain decimal string (digits, optional '-' and '.')"
        )
    return Decimal(text)


def timestamp_ns(field: str, message: Any) -> int:
    if not message.HasField("timestamp"):
        raise FieldViolation(field, "is required")
    stamp = message.timestamp
    nanos: int = stamp.nanos
    if not 0 <= nanos < 1_000_000_000:
        raise FieldViolation(field, f"nanos must be in [0, 1e9), got {nanos}")
    nanoseconds: int = stamp.seconds * 1_000_000_000 + nanos
    return nanoseconds


def to_timestamp(ns: int) -> Timestamp:
    seconds, nanos = divmod(ns, 1_000_000_000)
    return Timestamp(seconds=seconds, nanos=nanos)


def set_timestamp(field: Timestamp, ns: int) -> None:
    """Sets a message's timestamp field in place (no Timestamp built and copied: this runs
    for every update sent)."""
    field.seconds, field.nanos = divmod(ns, 1_000_000_000)


def fill_from_proto(message: pb.Fill) -> Fill | FillCorrection:
    """A fill, or with `corrects` set, a correction of an earlier one.

    Every fill ingested comes this way, on the event loop: each field is read once and the
    domain's refusal is caught by a plain `except` rather than `field_errors` (a generator-based
    context manager costs about 2 us a call); the violations are the same, in the same order."""
    side = SIDE_FROM_PROTO.get(message.side)
    if side is None:
        raise FieldViolation("side", "must be SIDE_BUY or SIDE_SELL")
    corrects, trace_id = message.corrects, message.trace_id
    if corrects and trace_id:
        raise FieldViolation("trace_id", "a correction cannot start or join a trace")
    quantity = parse_decimal("quantity", message.quantity)
    price = parse_decimal("price", message.price)
    commission = parse_decimal("commission", message.commission, default=ZERO)
    try:
        fill = Fill(
            fill_id=message.fill_id,
            account_id=message.account_id,
            strategy_id=message.strategy_id,
            instrument_id=message.instrument_id,
            side=side,
            quantity=quantity,
            price=price,
            commission=commission,
            commission_currency=message.commission_currency,
            timestamp_ns=timestamp_ns("timestamp", message),
            order_ref=message.order_ref,
            order_id=message.order_id,
            venue=message.venue,
            trace_id=trace_id,
        )
    except InvalidEvent as invalid:
        raise FieldViolation(invalid.field, invalid.reason) from None
    if not corrects:
        return fill
    with field_errors({"correction_id": "fill_id"}):
        return FillCorrection.replacing(corrects, fill)


def status_from_proto(message: pb.OrderStatusUpdate) -> OrderStatusUpdate:
    status = STATUS_FROM_PROTO.get(message.status)
    if status is None:
        raise FieldViolation("status", "must be a known ORDER_STATUS_* value")
    side = None
    if message.side != pb.SIDE_UNSPECIFIED:
        side = SIDE_FROM_PROTO.get(message.side)
        if side is None:
            raise FieldViolation("side", "must be SIDE_BUY, SIDE_SELL or unset")
    zero = Decimal(0)
    with field_errors():
        return OrderStatusUpdate(
            update_id=message.update_id,
            account_id=message.account_id,
            status=status,
            timestamp_ns=timestamp_ns("timestamp", message),
            strategy_id=message.strategy_id,
            order_ref=message.order_ref,
            order_id=message.order_id,
            perm_id=message.perm_id,
            instrument_id=message.instrument_id,
            side=side,
            filled_quantity=parse_decimal("filled_quantity", message.filled_quantity, default=zero),
            remaining_quantity=parse_decimal(
                "remaining_quantity", message.remaining_quantity, default=zero
            ),
            avg_fill_price=(
                parse_decimal("avg_fill_price", message.avg_fill_price)
                if message.avg_fill_price
                else None
            ),
        )


def transfer_from_proto(message: pb.CashTransfer) -> CashTransfer:
    with field_errors():
        return CashTransfer(
            transfer_id=message.transfer_id,
            account_id=message.account_id,
            currency=message.currency,
            amount=parse_decimal("amount", message.amount),
            timestamp_ns=timestamp_ns("timestamp", message),
            chain_id=message.chain_id,
            note=message.note,
        )


def commission_from_proto(message: pb.CommissionAmendment) -> CommissionAmendment:
    with field_errors():
        return CommissionAmendment(
            amendment_id=message.amendment_id,
            account_id=message.account_id,
            fill_id=message.fill_id,
            commission=parse_decimal("commission", message.commission, default=Decimal(0)),
            commission_currency=message.commission_currency,
            timestamp_ns=timestamp_ns("timestamp", message),
        )


IngestedEvent = Fill | FillCorrection | OrderStatusUpdate | CashTransfer | CommissionAmendment

# Each branch of ExecutionEvent's oneof: how it becomes a domain event, and its id field.
_INGESTED: dict[str, tuple[Callable[[Any], IngestedEvent], str]] = {
    "fill": (fill_from_proto, "fill_id"),
    "status": (status_from_proto, "update_id"),
    "transfer": (transfer_from_proto, "transfer_id"),
    "commission": (commission_from_proto, "amendment_id"),
}


def event_from_proto(message: pb.ExecutionEvent) -> IngestedEvent:
    which = message.WhichOneof("event")
    found = _INGESTED.get(which) if which is not None else None
    if which is None or found is None:
        raise FieldViolation("event", f"must hold one of: {', '.join(_INGESTED)}")
    try:
        return found[0](getattr(message, which))
    except FieldViolation as violation:
        raise violation.within(which) from None


def event_id_of(message: pb.ExecutionEvent) -> str:
    """The id of an event as sent, even when the event is invalid."""
    which = message.WhichOneof("event")
    if which is None or which not in _INGESTED:
        return ""
    _, id_field = _INGESTED[which]
    return str(getattr(getattr(message, which), id_field))


def fill_to_proto(fill: Fill, corrects: str = "", into: pb.Fill | None = None) -> pb.Fill:
    """The fill's message; `into` fills a field of an enclosing message in place (no copy)."""
    message = pb.Fill() if into is None else into
    message.corrects = corrects
    message.fill_id = fill.fill_id
    message.account_id = fill.account_id
    message.strategy_id = fill.strategy_id
    message.instrument_id = fill.instrument_id
    message.side = SIDE_TO_PROTO[fill.side]
    message.quantity = canonical(fill.quantity)
    message.price = canonical(fill.price)
    message.commission = canonical(fill.commission)
    message.commission_currency = fill.commission_currency
    set_timestamp(message.timestamp, fill.timestamp_ns)
    message.order_ref = fill.order_ref
    message.order_id = fill.order_id
    message.venue = fill.venue
    message.trace_id = fill.trace_id
    return message


def status_to_proto(update: OrderStatusUpdate) -> pb.OrderStatusUpdate:
    return pb.OrderStatusUpdate(
        update_id=update.update_id,
        account_id=update.account_id,
        strategy_id=update.strategy_id,
        order_ref=update.order_ref,
        order_id=update.order_id,
        perm_id=update.perm_id,
        instrument_id=update.instrument_id,
        status=update.status.value,  # type: ignore[arg-type]
        side=SIDE_TO_PROTO[update.side] if update.side else pb.SIDE_UNSPECIFIED,
        filled_quantity=canonical(update.filled_quantity),
        remaining_quantity=canonical(update.remaining_quantity),
        avg_fill_price=canonical(update.avg_fill_price)
        if update.avg_fill_price is not None
        else "",
        timestamp=to_timestamp(update.timestamp_ns),
    )


def position_to_proto(view: PositionView, into: pb.Position | None = None) -> pb.Position:
    """The row's message; `into` fills a field of an enclosing message in place (a copy).
    Base-currency figures the view cannot give (a missing rate) are left empty: missing,
    never a sum of two currencies.

    Built in one constructor call, and each amount's text made once: a figure that equals one
    already written (the day's figures with no close yet, base figures at a rate of 1) reuses
    its text. This runs for every answer not kept and every update sent (tests/api/
    test_wire_encoding.py holds it to the field-by-field form, byte for byte)."""
    key = view.key
    text = canonical
    realized, unrealized, fees, net = (
        view.realized_pnl, view.unrealized_pnl, view.fees, view.net_pnl
    )  # fmt: skip
    realized_text, unrealized_text, fees_text, net_text = (
        text(realized), text(unrealized), text(fees), text(net)
    )  # fmt: skip
    day_realized, day_change, day_fees, day_net = view.since_day_start()
    in_base = view.in_base()
    base_realized, base_unrealized = in_base.realized_pnl, in_base.unrealized_pnl
    base_fees, base_net, base_value = in_base.fees, in_base.net_pnl, in_base.market_value
    market_value = view.market_value
    value_text = text(market_value)
    fx_rate, mark_source = view.fx_rate, view.mark_source  # (an enum's hash is Python code)
    message = pb.Position(
        account_id=key.account_id,
        strategy_id=key.strategy_id,
        instrument_id=key.instrument_id,
        level=(
            pb.POSITION_LEVEL_RESIDUAL
            if view.residual
            else pb.POSITION_LEVEL_ACCOUNT
            if key.is_account_level
            else pb.POSITION_LEVEL_STRATEGY
        ),
        quantity=text(view.quantity),
        avg_cost=text(view.avg_cost),
        realized_pnl=realized_text,
        unrealized_pnl=unrealized_text,
        fees=fees_text,
        net_pnl=net_text,
        market_price=text(view.market_price),
        market_value=value_text,
        cost_basis=text(view.cost_basis),
        multiplier=text(view.multiplier),
        trade_count=view.trade_count,
        last_sequence=view.last_sequence,
        currency=view.currency,
        mark_source=(
            pb.MARK_SOURCE_LAST_FILL
            if mark_source is MarkSource.LAST_FILL
            else MARK_SOURCE[mark_source]
        ),
        base_currency=view.base_currency,
        other_fees=[
            pb.CurrencyAmount(currency=currency, amount=text(fee))
            for currency, fee in view.other_fees
        ]
        if view.other_fees
        else None,
        fx_rate="" if fx_rate is None else text(fx_rate),
        # The same object first (no close yet, a rate of 1: the view hands the row's own back).
        day_realized_pnl=realized_text
        if day_realized is realized or day_realized == realized
        else text(day_realized),
        day_unrealized_change=unrealized_text
        if day_change is unrealized or day_change == unrealized
        else text(day_change),
        day_fees=fees_text if day_fees is fees or day_fees == fees else text(day_fees),
        day_net_pnl=net_text if day_net == net else text(day_net),
        realized_pnl_base=realized_text
        if base_realized is realized
        else _same_text(base_realized, realized, realized_text),
        unrealized_pnl_base=unrealized_text
        if base_unrealized is unrealized
        else _same_text(base_unrealized, unrealized, unrealized_text),
        market_value_base=value_text
        if base_value is market_value
        else _same_text(base_value, market_value, value_text),
        fees_base=fees_text if base_fees is fees else _same_text(base_fees, fees, fees_text),
        net_pnl_base=_same_text(base_net, net, net_text),
    )
    # Times are set in place: a Timestamp built to be passed in costs more than the two fields.
    if view.opened_at_ns:
        set_timestamp(message.opened_at, view.opened_at_ns)
    if view.updated_at_ns:
        set_timestamp(message.updated_at, view.updated_at_ns)
    if view.marked_at_ns:
        set_timestamp(message.marked_at, view.marked_at_ns)
    if into is None:
        return message
    into.CopyFrom(message)
    return into


def _same_text(amount: Decimal | None, known: Decimal, known_text: str) -> str:
    """The text of `amount` (None: missing, left empty), reusing `known_text` when it is the
    same figure."""
    if amount is None:
        return ""
    return known_text if amount == known else canonical(amount)


def totals_to_proto(totals: Totals) -> pb.PortfolioTotals:
    return pb.PortfolioTotals(
        realized_pnl=canonical(totals.realized_pnl),
        unrealized_pnl=canonical(totals.unrealized_pnl),
        fees=canonical(totals.fees),
        net_pnl=canonical(totals.net_pnl),
        long_exposure=canonical(totals.long_exposure),
        short_exposure=canonical(totals.short_exposure),
        gross_exposure=canonical(totals.gross_exposure),
        net_exposure=canonical(totals.net_exposure),
        open_positions=totals.open_positions,
        total_positions=totals.total_positions,
        trade_count=totals.trade_count,
    )


def trace_to_proto(trace: Trace) -> pb.TracePosition:
    return pb.TracePosition(
        trace_id=trace.trace_id,
        legs=[
            pb.TraceLeg(
                step=leg.step,
                sequence=leg.sequence,
                fill_id=leg.fill.fill_id,
                account_id=leg.fill.account_id,
                strategy_id=leg.fill.strategy_id,
                instrument_id=leg.fill.instrument_id,
                side=SIDE_TO_PROTO[leg.fill.side],
                quantity=canonical(leg.fill.quantity),
                price=canonical(leg.fill.price),
                venue=leg.fill.venue,
                timestamp=to_timestamp(leg.fill.timestamp_ns),
            )
            for leg in trace.legs
        ],
        net=[
            pb.TraceNet(
                instrument_id=net.instrument_id,
                quantity=canonical(net.quantity),
                cash_flow=canonical(net.cash_flow),
            )
            for net in trace.net.values()
        ],
        first_fill_at=to_timestamp(trace.first_fill_ns),
        last_fill_at=to_timestamp(trace.last_fill_ns),
        expires_at=to_timestamp(trace.expires_at_ns),
    )


def heartbeat(sequence: int) -> pb.PortfolioUpdate:
    return pb.PortfolioUpdate(sequence=sequence, kind=pb.UPDATE_KIND_HEARTBEAT)
