"""The events the service ingests, as domain values.

Each event enforces its own invariants on construction, so a `Fill` that exists is one the
engine can apply. Violations raise `InvalidEvent` naming the field at fault.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar

from server.domain.decimals import MAX_FRACTION_DIGITS, MAX_INTEGER_DIGITS, ZERO, canonical

MAX_ID_LENGTH = 256


class InvalidEvent(ValueError):
    """An event that breaks a domain rule; `field` is the offending field's name."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class Side(enum.Enum):
    BUY = 1
    SELL = 2

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1


class OrderStatus(enum.Enum):
    PENDING_SUBMIT = 1
    PRE_SUBMITTED = 2
    SUBMITTED = 3
    PARTIALLY_FILLED = 4
    FILLED = 5
    PENDING_CANCEL = 6
    CANCELLED = 7
    REJECTED = 8
    INACTIVE = 9


def require_id(field: str, value: str, *, required: bool = True) -> None:
    if not value:
        if required:
            raise InvalidEvent(field, "is required")
        return
    if len(value) > MAX_ID_LENGTH:
        raise InvalidEvent(field, f"is longer than {MAX_ID_LENGTH} characters")
    if not value.isprintable() or value[0].isspace() or value[-1].isspace():
        raise InvalidEvent(field, "must not have surrounding blanks or control characters")


def require_amount(field: str, value: Decimal) -> None:
    """Bounds an amount so that the engine's exact arithmetic stays far inside its precision."""
    if not value.is_finite():
        raise InvalidEvent(field, f"must be a finite number, got {value}")
    if value and value.adjusted() >= MAX_INTEGER_DIGITS:
        raise InvalidEvent(field, f"must be below 1e{MAX_INTEGER_DIGITS} in magnitude")
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent > MAX_FRACTION_DIGITS and len(canonical(value).partition(".")[2]) > (
        MAX_FRACTION_DIGITS
    ):
        raise InvalidEvent(field, f"has more than {MAX_FRACTION_DIGITS} decimal places")


FIELD_SEPARATOR = "\x1f"  # never in a field: ids are printable, amounts canonical


def fingerprint_of(text: str) -> int:
    """A stable digest of an event's content, the same in every process ("10" and "10.0"
    alike): tells a replayed event from an id reused for a different one, across restarts."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution: `quantity` units of an instrument bought or sold at `price`."""

    fill_id: str
    account_id: str
    strategy_id: str
    instrument_id: str
    side: Side
    quantity: Decimal
    price: Decimal
    timestamp_ns: int
    commission: Decimal = ZERO
    commission_currency: str = ""
    order_ref: str = ""
    order_id: str = ""
    venue: str = ""
    trace_id: str = ""

    def __post_init__(self) -> None:
        for name in ("fill_id", "account_id", "strategy_id", "instrument_id"):
            require_id(name, getattr(self, name))
        for name in ("order_ref", "order_id", "venue", "trace_id", "commission_currency"):
            require_id(name, getattr(self, name), required=False)
        for name in ("quantity", "price", "commission"):
            require_amount(name, getattr(self, name))
        if not self.quantity > 0:
            raise InvalidEvent("quantity", f"must be > 0, got {canonical(self.quantity)}")
        if self.timestamp_ns <= 0:
            raise InvalidEvent("timestamp", "must be after 1970-01-01T00:00:00Z")

    @property
    def event_id(self) -> str:
        return self.fill_id

    @property
    def signed_quantity(self) -> Decimal:
        return self.quantity if self.side is Side.BUY else -self.quantity

    kind: ClassVar[str] = "fill"

    def fingerprint(self) -> int:
        return fingerprint_of(self.text())

    def text(self) -> str:
        """Every field in canonical text, in a fixed order: see `Fill.from_text`."""
        return FIELD_SEPARATOR.join(
            (
                self.fill_id,
                self.account_id,
                self.strategy_id,
                self.instrument_id,
                self.side.name,
                canonical(self.quantity),
                canonical(self.price),
                str(self.timestamp_ns),
                canonical(self.commission),
                self.commission_currency,
                self.order_ref,
                self.order_id,
                self.venue,
                self.trace_id,
            )
        )

    @classmethod
    def from_text(cls, text: str) -> Fill:
        (fill_id, account_id, strategy_id, instrument_id, side, quantity, price, timestamp_ns,
         commission, commission_currency, order_ref, order_id, venue, trace_id) = text.split(
            FIELD_SEPARATOR
        )  # fmt: skip
        return cls(
            fill_id, account_id, strategy_id, instrument_id, Side[side], Decimal(quantity),
            Decimal(price), int(timestamp_ns), Decimal(commission), commission_currency,
            order_ref, order_id, venue, trace_id,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class OrderStatusUpdate:
    """A change in an order's status, as the broker reports it."""

    update_id: str
    account_id: str
    status: OrderStatus
    timestamp_ns: int
    strategy_id: str = ""
    order_ref: str = ""
    order_id: str = ""
    perm_id: str = ""
    instrument_id: str = ""
    side: Side | None = None
    filled_quantity: Decimal = ZERO
    remaining_quantity: Decimal = ZERO
    avg_fill_price: Decimal | None = None

    def __post_init__(self) -> None:
        require_id("update_id", self.update_id)
        require_id("account_id", self.account_id)
        for name in ("strategy_id", "order_ref", "order_id", "perm_id", "instrument_id"):
            require_id(name, getattr(self, name), required=False)
        if not self.order_id and not self.order_ref:
            raise InvalidEvent("order_id", "order_id or order_ref is required")
        if self.avg_fill_price is not None:
            require_amount("avg_fill_price", self.avg_fill_price)
        for name in ("filled_quantity", "remaining_quantity"):
            value: Decimal = getattr(self, name)
            require_amount(name, value)
            if value < 0:
                raise InvalidEvent(name, f"must be >= 0, got {canonical(value)}")
        if self.timestamp_ns <= 0:
            raise InvalidEvent("timestamp", "must be after 1970-01-01T00:00:00Z")

    @property
    def event_id(self) -> str:
        return self.update_id

    kind: ClassVar[str] = "status"

    def fingerprint(self) -> int:
        return fingerprint_of(self.text())

    def text(self) -> str:
        """Every field in canonical text, in a fixed order: see `OrderStatusUpdate.from_text`."""
        return FIELD_SEPARATOR.join(
            (
                self.update_id,
                self.account_id,
                self.status.name,
                str(self.timestamp_ns),
                self.strategy_id,
                self.order_ref,
                self.order_id,
                self.perm_id,
                self.instrument_id,
                self.side.name if self.side else "",
                canonical(self.filled_quantity),
                canonical(self.remaining_quantity),
                canonical(self.avg_fill_price) if self.avg_fill_price is not None else "",
            )
        )

    @classmethod
    def from_text(cls, text: str) -> OrderStatusUpdate:
        (update_id, account_id, status, timestamp_ns, strategy_id, order_ref, order_id, perm_id,
         instrument_id, side, filled, remaining, avg_fill_price) = text.split(
            FIELD_SEPARATOR
        )  # fmt: skip
        return cls(
            update_id, account_id, OrderStatus[status], int(timestamp_ns), strategy_id,
            order_ref, order_id, perm_id, instrument_id, Side[side] if side else None,
            Decimal(filled), Decimal(remaining),
            Decimal(avg_fill_price) if avg_fill_price else None,
        )  # fmt: skip


ExecutionEvent = Fill | OrderStatusUpdate
