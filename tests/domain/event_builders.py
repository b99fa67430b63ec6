"""Builders for the non-fill events (statuses, cash, definitions), so tests read as workflows.

Every builder takes keywords only; amounts may be given as int, str or Decimal.
"""

from __future__ import annotations

import dataclasses
import itertools
from decimal import Decimal

from server.domain.events import (
    AccountDefinition,
    AccountKind,
    BrokerPosition,
    BrokerPositions,
    CashReservation,
    CashTransfer,
    Fill,
    FillCorrection,
    InstrumentDefinition,
    OrderStatus,
    OrderStatusUpdate,
    ReservationRelease,
    Side,
)
from tests.domain.builders import BASE_NS, fill

_ids = itertools.count(1)


def dec(value: object) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def status(
    state: str,
    at_ns: int,
    *,
    order_id: str = "",
    order_ref: str = "",
    account: str = "A1",
    strategy: str = "",
    instrument: str = "",
    side: str | None = None,
    filled: object = 0,
    remaining: object = 0,
    avg_price: object = None,
    perm_id: str = "",
    update_id: str | None = None,
) -> OrderStatusUpdate:
    return OrderStatusUpdate(
        update_id=update_id or f"u-{next(_ids)}",
        account_id=account,
        status=OrderStatus[state],
        timestamp_ns=at_ns,
        strategy_id=strategy,
        order_ref=order_ref,
        order_id=order_id,
        perm_id=perm_id,
        instrument_id=instrument,
        side=Side[side] if side else None,
        filled_quantity=dec(filled),
        remaining_quantity=dec(remaining),
        avg_fill_price=None if avg_price is None else dec(avg_price),
    )


def order_fill(
    side: str,
    quantity: object,
    price: object,
    *,
    order_id: str = "",
    order_ref: str = "",
    commission_currency: str = "",
    **kwargs: object,
) -> Fill:
    """A fill (see `builders.fill`) that names its order."""
    return dataclasses.replace(
        fill(side, quantity, price, **kwargs),  # type: ignore[arg-type]
        order_id=order_id,
        order_ref=order_ref,
        commission_currency=commission_currency,
    )


def deposit(amount: object, *, currency: str = "USD", account: str = "A1", chain: str = "",
            at_ns: int = 1) -> CashTransfer:  # fmt: skip
    return CashTransfer(
        transfer_id=f"t-{next(_ids)}",
        account_id=account,
        currency=currency,
        amount=dec(amount),
        timestamp_ns=at_ns,
        chain_id=chain,
    )


def reservation(
    reservation_id: str,
    amount: object,
    *,
    currency: str = "USD",
    account: str = "A1",
    chain: str = "",
    order_id: str = "",
    order_ref: str = "",
    strategy: str = "",
) -> CashReservation:
    return CashReservation(
        reservation_id=reservation_id,
        account_id=account,
        currency=currency,
        amount=dec(amount),
        chain_id=chain,
        strategy_id=strategy,
        order_ref=order_ref,
        order_id=order_id,
    )


def release(
    reservation_id: str, amount: object = None, *, account: str = "A1"
) -> ReservationRelease:
    return ReservationRelease(
        release_id=f"rel-{next(_ids)}",
        account_id=account,
        reservation_id=reservation_id,
        amount=None if amount is None else dec(amount),
    )


def instrument(instrument_id: str, currency: str = "USD", *, multiplier: object = 1,
               symbol: str = "") -> InstrumentDefinition:  # fmt: skip
    return InstrumentDefinition(
        instrument_id=instrument_id, currency=currency, multiplier=dec(multiplier), symbol=symbol
    )


def paper_account(account_id: str, base_currency: str = "USD", initial_cash: object = 0
                  ) -> AccountDefinition:  # fmt: skip
    return AccountDefinition(
        account_id=account_id,
        account_kind=AccountKind.PAPER,
        base_currency=base_currency,
        initial_cash=dec(initial_cash),
    )


def correction(
    corrects: str,
    side: str,
    quantity: object,
    price: object,
    *,
    correction_id: str | None = None,
    order_id: str = "",
    **kwargs: object,
) -> FillCorrection:
    """A broker correction of fill `corrects` (see `builders.fill` for the other fields)."""
    replacement = fill(side, quantity, price, **kwargs)  # type: ignore[arg-type]
    return FillCorrection.replacing(
        corrects,
        dataclasses.replace(
            replacement,
            fill_id=correction_id or f"{corrects}.corr-{replacement.fill_id}",
            order_id=order_id,
        ),
    )


def broker_positions(
    *positions: tuple[str, object, object] | tuple[str, object, object, object],
    account: str = "A1",
    snapshot_id: str | None = None,
    at_ns: int = BASE_NS + 10**12,
) -> BrokerPositions:
    """What the broker holds: (instrument, quantity, avg_cost[, multiplier]) each."""
    held = tuple(
        BrokerPosition(
            instrument_id=item[0],
            quantity=dec(item[1]),
            avg_cost=dec(item[2]),
            multiplier=dec(item[3] if len(item) > 3 else 1),
        )
        for item in positions
    )
    return BrokerPositions(
        snapshot_id=snapshot_id or f"snap-{next(_ids)}",
        account_id=account,
        timestamp_ns=at_ns,
        positions=held,
    )
