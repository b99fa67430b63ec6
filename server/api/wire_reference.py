"""Conversions for orders, balances, instruments, accounts and marks (see `wire` for the
rules: strict decimal strings, every problem a `FieldViolation` naming its field)."""

from __future__ import annotations

from decimal import Decimal

from portfolio.v1 import portfolio_pb2 as pb
from server.api.wire import (
    SIDE_TO_PROTO,
    FieldViolation,
    field_errors,
    parse_decimal,
    position_to_proto,
    status_to_proto,
    timestamp_ns,
    to_timestamp,
    totals_to_proto,
)
from server.api.wire_reconciliation import STATUS_TO_PROTO
from server.application.reads import AccountBalances, Consolidated, InBase
from server.domain.balances import Balance, Reservation, ReservationStatus
from server.domain.decimals import EXACT, canonical
from server.domain.events import (
    AccountDefinition,
    AccountKind,
    AssetClass,
    CashReservation,
    InstrumentDefinition,
    OptionRight,
    ReservationRelease,
)
from server.domain.marks import FxRate, Mark
from server.domain.orders import Order, Transition

ACCOUNT_KIND_TO_PROTO = {
    AccountKind.PAPER: pb.ACCOUNT_KIND_PAPER,
    AccountKind.LIVE: pb.ACCOUNT_KIND_LIVE,
}
ACCOUNT_KIND_FROM_PROTO = {number: kind for kind, number in ACCOUNT_KIND_TO_PROTO.items()}
RESERVATION_STATUS = {
    ReservationStatus.ACTIVE: pb.RESERVATION_STATUS_ACTIVE,
    ReservationStatus.RELEASED: pb.RESERVATION_STATUS_RELEASED,
    ReservationStatus.CONSUMED: pb.RESERVATION_STATUS_CONSUMED,
    ReservationStatus.REFUSED: pb.RESERVATION_STATUS_UNSPECIFIED,
}


def _optional(field: str, text: str) -> Decimal | None:
    return parse_decimal(field, text) if text else None


def _amount(value: Decimal | None) -> str:
    return canonical(value) if value is not None else ""


# -- orders -----------------------------------------------------------------------------------


def transition_to_proto(transition: Transition) -> pb.OrderTransition:
    return pb.OrderTransition(
        sequence=transition.sequence,
        update=status_to_proto(transition.update),
        flag=transition.flag,
        replaced=transition.replaced,
        corrects=transition.corrects,
        late=transition.late,
    )


def order_to_proto(order: Order) -> pb.Order:
    message = pb.Order(
        account_id=order.account_id,
        order_key=order.order_key,
        order_id=order.order_id,
        order_ref=order.order_ref,
        perm_id=order.perm_id,
        strategy_id=order.strategy_id,
        instrument_id=order.instrument_id,
        side=SIDE_TO_PROTO[order.side] if order.side else pb.SIDE_UNSPECIFIED,
        status=order.status.value if order.status else 0,  # type: ignore[arg-type]
        filled_quantity=canonical(order.filled_quantity),
        remaining_quantity=canonical(order.remaining_quantity),
        avg_fill_price=_amount(order.avg_fill_price),
        booked_quantity=canonical(order.booked_quantity),
        quantity_mismatch=canonical(order.quantity_mismatch),
        booked_fills=order.booked_fills,
        is_open=order.is_open,
        last_sequence=order.last_sequence,
        history=[transition_to_proto(t) for t in order.history],
    )
    if order.created_at_ns:
        message.created_at.CopyFrom(to_timestamp(order.created_at_ns))
    if order.updated_at_ns:
        message.updated_at.CopyFrom(to_timestamp(order.updated_at_ns))
    return message


# -- cash -------------------------------------------------------------------------------------


def balance_to_proto(balance: Balance) -> pb.Balance:
    message = pb.Balance(
        account_id=balance.key.account_id,
        currency=balance.key.currency,
        chain_id=balance.key.chain_id,
        cash=canonical(balance.cash),
        reserved=canonical(balance.reserved),
        available=canonical(balance.available),
        last_sequence=balance.last_sequence,
    )
    if balance.updated_at_ns:
        message.updated_at.CopyFrom(to_timestamp(balance.updated_at_ns))
    return message


def reservation_to_proto(reservation: Reservation) -> pb.Reservation:
    return pb.Reservation(
        reservation_id=reservation.reservation_id,
        account_id=reservation.key.account_id,
        currency=reservation.key.currency,
        chain_id=reservation.key.chain_id,
        amount=canonical(reservation.amount),
        remaining=canonical(reservation.remaining),
        consumed=canonical(reservation.consumed),
        released=canonical(reservation.released),
        status=RESERVATION_STATUS[reservation.status],
        order_key=reservation.order_key,
        strategy_id=reservation.strategy_id,
        sequence=reservation.sequence,
    )


def balances_to_proto(found: AccountBalances) -> pb.Balances:
    return pb.Balances(
        account_id=found.account.account_id,
        account_kind=ACCOUNT_KIND_TO_PROTO[found.account.account_kind],
        base_currency=found.account.base_currency,
        balances=[balance_to_proto(b) for b in found.balances],
        reservations=[reservation_to_proto(r) for r in found.reservations],
        as_of_sequence=found.as_of_sequence,
    )


def reservation_from_proto(message: pb.ReserveCashRequest) -> CashReservation:
    with field_errors():
        return CashReservation(
            reservation_id=message.reservation_id,
            account_id=message.account_id,
            currency=message.currency,
            amount=parse_decimal("amount", message.amount),
            chain_id=message.chain_id,
            strategy_id=message.strategy_id,
            order_ref=message.order_ref,
            order_id=message.order_id,
        )


def release_from_proto(message: pb.ReleaseReservationRequest) -> ReservationRelease:
    with field_errors():
        return ReservationRelease(
            release_id=message.release_id,
            account_id=message.account_id,
            reservation_id=message.reservation_id,
            amount=_optional("amount", message.amount),
        )


# -- instruments and accounts -----------------------------------------------------------------


def instrument_from_proto(message: pb.Instrument) -> InstrumentDefinition:
    if message.provisional:
        raise FieldViolation("provisional", "is output only: leave it unset")
    if message.asset_class not in pb.AssetClass.values():
        raise FieldViolation("asset_class", "must be a known ASSET_CLASS_* value")
    if message.right not in (0, 1, 2):
        raise FieldViolation("right", "must be OPTION_RIGHT_CALL, OPTION_RIGHT_PUT or unset")
    with field_errors():
        return InstrumentDefinition(
            instrument_id=message.instrument_id,
            currency=message.currency,
            asset_class=AssetClass(message.asset_class),
            symbol=message.symbol,
            multiplier=parse_decimal("multiplier", message.multiplier, default=Decimal(1)),
            tick_size=_optional("tick_size", message.tick_size),
            underlying=message.underlying,
            strike=_optional("strike", message.strike),
            expiry=message.expiry,
            right=OptionRight(message.right) if message.right else None,
            settlement_date=message.settlement_date,
            decimals=message.decimals if message.HasField("decimals") else None,
        )


def instrument_to_proto(instrument: InstrumentDefinition) -> pb.Instrument:
    message = pb.Instrument(
        instrument_id=instrument.instrument_id,
        symbol=instrument.symbol,
        asset_class=instrument.asset_class.value,  # type: ignore[arg-type]
        currency=instrument.currency,
        multiplier=canonical(instrument.multiplier),
        tick_size=_amount(instrument.tick_size),
        underlying=instrument.underlying,
        strike=_amount(instrument.strike),
        expiry=instrument.expiry,
        right=instrument.right.value if instrument.right else 0,  # type: ignore[arg-type]
        settlement_date=instrument.settlement_date,
        provisional=instrument.provisional,
    )
    if instrument.decimals is not None:
        message.decimals = instrument.decimals
    return message


def account_from_proto(message: pb.Account) -> AccountDefinition:
    kind = ACCOUNT_KIND_FROM_PROTO.get(message.kind)
    if kind is None:
        raise FieldViolation("kind", "must be ACCOUNT_KIND_PAPER or ACCOUNT_KIND_LIVE")
    with field_errors():
        return AccountDefinition(
            account_id=message.account_id,
            account_kind=kind,
            base_currency=message.base_currency,
            initial_cash=parse_decimal("initial_cash", message.initial_cash, default=Decimal(0)),
        )


def account_to_proto(account: AccountDefinition, defined: bool = True) -> pb.Account:
    return pb.Account(
        account_id=account.account_id,
        kind=ACCOUNT_KIND_TO_PROTO[account.account_kind],
        base_currency=account.base_currency,
        initial_cash=canonical(account.initial_cash),
        defined=defined,
    )


# -- marks ------------------------------------------------------------------------------------


def mark_from_proto(message: pb.MarkPrice) -> Mark:
    with field_errors():
        return Mark.from_quote(
            message.instrument_id,
            timestamp_ns("timestamp", message),
            mark=_optional("mark", message.mark),
            bid=_optional("bid", message.bid),
            ask=_optional("ask", message.ask),
            last=_optional("last", message.last),
        )


def fx_rate_from_proto(message: pb.FxRate) -> FxRate:
    with field_errors({"base": "base_currency", "quote": "quote_currency"}):
        return FxRate(
            message.base_currency,
            message.quote_currency,
            parse_decimal("rate", message.rate),
            timestamp_ns("timestamp", message),
        )


def mark_to_proto(mark: Mark) -> pb.MarkPrice:
    return pb.MarkPrice(
        instrument_id=mark.instrument_id,
        mark=canonical(mark.price),
        bid=_amount(mark.bid),
        ask=_amount(mark.ask),
        last=_amount(mark.last),
        timestamp=to_timestamp(mark.time_ns),
    )


# -- the consolidated book --------------------------------------------------------------------


def currency_totals_to_proto(in_base: InBase) -> list[pb.CurrencyTotals]:
    return [
        pb.CurrencyTotals(currency=currency, totals=totals_to_proto(totals), fx_rate=_amount(rate))
        for currency, totals, rate in in_base.by_currency
    ]


def consolidated_to_proto(
    found: Consolidated,
) -> pb.ConsolidatedPosition:
    message = pb.ConsolidatedPosition(
        account_id=found.account.account_id,
        instrument_id=found.instrument_id,
        account_kind=ACCOUNT_KIND_TO_PROTO[found.account.account_kind],
        account_position=position_to_proto(found.account_position),
        strategy_positions=[position_to_proto(v) for v in found.strategy_positions],
        attributed_quantity=canonical(found.attributed_quantity),
        unattributed_quantity=canonical(  # exact: the thread's context would round 18+18 digits
            EXACT.subtract(found.account_position.quantity, found.attributed_quantity)
        ),
        as_of_sequence=found.as_of_sequence,
    )
    if found.reconciled is not None:
        message.broker_quantity = canonical(found.reconciled.broker_quantity)
        message.reconciliation_status = STATUS_TO_PROTO[found.reconciled.status]
        message.reconciled_at.CopyFrom(to_timestamp(found.reconciled_at_ns))
    if found.residual is not None:
        message.residual_position.CopyFrom(position_to_proto(found.residual))
    return message
