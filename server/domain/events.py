"""The events the service journals, as domain values.

Each event enforces its own invariants on construction, so a `Fill` that exists is one the
engine can apply. Violations raise `InvalidEvent` naming the field at fault. Every event has a
`kind` (the journal's column), an `event_id` (the idempotency key within its kind) and a
canonical text (see `codec`).
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import ClassVar, Self

from server.domain.booker import UNKNOWN, Booker
from server.domain.codec import TextCodec, fingerprint_of
from server.domain.decimals import MAX_FRACTION_DIGITS, MAX_INTEGER_DIGITS, ONE, ZERO, canonical

MAX_ID_LENGTH = 128
"""Ids become ArcticDB symbol names (account and strategy ids) and columns: a symbol holds at
most 254 bytes of printable ASCII without `*`, `<` or `>` (measured). 128 leaves room."""

ID_CHARACTERS = "printable ASCII (space to '~') without '*', '<' or '>'"
_ID_FORBIDDEN = re.compile(r"[^\x20-\x7e]|[*<>]")
# An id every rule takes (today's and the journal's older ones): 1 to MAX_ID_LENGTH of those
# characters, no blank at either end. One match for the usual id instead of four checks.
_INNER_ID_CHARACTER = r"[\x20-\x29\x2b-\x3b\x3d\x3f-\x7e]"  # blank included
_EDGE_ID_CHARACTER = r"[\x21-\x29\x2b-\x3b\x3d\x3f-\x7e]"  # not blank
_PLAIN_ID = re.compile(
    rf"{_EDGE_ID_CHARACTER}(?:{_INNER_ID_CHARACTER}{{0,{MAX_ID_LENGTH - 2}}}{_EDGE_ID_CHARACTER})?"
).fullmatch

LATEST_TIME_NS = 7_258_118_400 * 10**9
"""2200-01-01T00:00:00Z. Stores index times as signed 64-bit nanoseconds (up to 2262-04-11);
a bound far inside that leaves room for the views' nanosecond offsets."""

_LEGACY_LIMITS: ContextVar[bool] = ContextVar("legacy_limits", default=False)
_LEGACY_MAX_ID_LENGTH = 256


@contextmanager
def journaled_limits() -> Iterator[None]:
    """Events decoded from the journal were accepted under the rules of their day: ids of up
    to 256 printable characters, times up to 2262. They are read as they were written (their
    text and digest must not change); only new events meet today's door."""
    token = _LEGACY_LIMITS.set(True)
    try:
        yield
    finally:
        _LEGACY_LIMITS.reset(token)


RESERVED_OWNERS = ("UNATTRIBUTED", "RESIDUAL")
"""Owners of the rows reconciliation adds: no strategy may be named so."""


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


class AccountKind(enum.Enum):
    PAPER = 1
    LIVE = 2


class AssetClass(enum.Enum):
    UNSPECIFIED = 0
    EQUITY = 1
    FUTURE = 2
    OPTION = 3
    CRYPTO = 4
    FX = 5


class OptionRight(enum.Enum):
    CALL = 1
    PUT = 2


def require_id(field: str, value: str, *, required: bool = True) -> None:
    if not value:
        if required:
            raise InvalidEvent(field, "is required")
        return
    if _PLAIN_ID(value) is not None:
        return
    if _LEGACY_LIMITS.get():
        if len(value) > _LEGACY_MAX_ID_LENGTH or not value.isprintable():
            raise InvalidEvent(field, "is not an id a journal ever held")
        return
    if len(value) > MAX_ID_LENGTH:
        raise InvalidEvent(field, f"is {len(value)} characters long; at most {MAX_ID_LENGTH}")
    bad = _ID_FORBIDDEN.search(value)
    if bad is not None:
        raise InvalidEvent(
            field,
            f"has {bad.group()!r} at position {bad.start()}: an id is {ID_CHARACTERS}",
        )
    if value[0] == " " or value[-1] == " ":
        raise InvalidEvent(field, "must not start or end with a blank")


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


_CURRENCY = re.compile(r"[A-Z0-9]{2,12}")
_DATE = re.compile(r"\d{4}-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?")


def require_currency(field: str, value: str, *, required: bool = True) -> None:
    if not value and not required:
        return
    if not _CURRENCY.fullmatch(value):
        raise InvalidEvent(
            field, f"must be a currency code of 2 to 12 capitals or digits, got {value!r}"
        )


def require_fx_rate(base: str, quote: str, rate: Decimal, time_ns: int) -> None:
    """What makes an FX rate: one home for the rates of the mark stream and of the journal."""
    require_currency("base", base)
    require_currency("quote", quote)
    if base == quote:
        raise InvalidEvent("quote", "must differ from base")
    require_amount("rate", rate)
    if not rate > 0:
        raise InvalidEvent("rate", f"must be > 0, got {rate}")
    require_time(time_ns)


def require_date(field: str, value: str) -> None:
    if value and not _DATE.fullmatch(value):
        raise InvalidEvent(field, f"must be YYYY-MM-DD or YYYY-MM, got {value!r}")


def require_trading_date(field: str, value: str) -> None:
    """A calendar day, YYYY-MM-DD."""
    require_date(field, value)
    if len(value) != 10:
        raise InvalidEvent(field, f"must be a day, YYYY-MM-DD, got {value!r}")


def require_time(timestamp_ns: int, field: str = "timestamp") -> None:
    latest = (1 << 63) - 1 if _LEGACY_LIMITS.get() else LATEST_TIME_NS
    if not 0 < timestamp_ns < latest:
        raise InvalidEvent(
            field,
            f"must be after 1970-01-01T00:00:00Z and before 2200-01-01T00:00:00Z, "
            f"got {describe_time(timestamp_ns)}",
        )


def describe_time(timestamp_ns: int) -> str:
    """A time for an error message: ISO 8601 where a calendar can show it, else the number."""
    seconds, nanos = divmod(timestamp_ns, 10**9)
    try:
        moment = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return f"{timestamp_ns} ns since 1970"
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{nanos:09d}" if nanos else "") + "Z"


class JournaledEvent:
    """What every journaled event shares: its kind, its canonical text and digest."""

    __slots__ = ("_booker", "_text")
    kind: ClassVar[str]
    _codec: ClassVar[TextCodec]
    _text: str
    _booker: Booker

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls._codec = None  # type: ignore[assignment]  # built on first use (needs the fields)

    @classmethod
    def codec(cls) -> TextCodec:
        if cls._codec is None:
            cls._codec = TextCodec(cls)
        return cls._codec

    def text(self) -> str:
        """The canonical text, built once: admission (its digest) and the journal both need it."""
        try:
            return self._text
        except AttributeError:
            text = self.codec().encode(self)
            object.__setattr__(self, "_text", text)  # a cache, not a field: frozen all the same
            return text

    @classmethod
    def from_text(cls, text: str) -> Self:
        with journaled_limits():
            event: Self = cls.codec().decode(text)
        return event

    def fingerprint(self) -> int:
        return fingerprint_of(self.text())

    @property
    def booker(self) -> Booker:
        """Who booked it, as its admission named them (not a field: not in its text, so a
        resend by another principal is the same event); UNKNOWN before one did."""
        try:
            return self._booker
        except AttributeError:
            return UNKNOWN

    def booked_by(self, booker: Booker) -> None:
        """Stamped at admission (or from the journal row): frozen all the same, as `_text`."""
        object.__setattr__(self, "_booker", booker)


@dataclass(frozen=True, slots=True, kw_only=True)
class Fill(JournaledEvent):
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
        # Spelled out field by field (no loop of getattr): every fill ingested or read back
        # from the journal is checked here. The order is the order a fault is reported in.
        require_id("fill_id", self.fill_id)
        require_id("account_id", self.account_id)
        require_id("strategy_id", self.strategy_id)
        require_id("instrument_id", self.instrument_id)
        if self.strategy_id in RESERVED_OWNERS:
            raise InvalidEvent(
                "strategy_id", f"{self.strategy_id!r} is reserved for reconciliation's rows"
            )
        if self.order_ref:
            require_id("order_ref", self.order_ref)
        if self.order_id:
            require_id("order_id", self.order_id)
        if self.venue:
            require_id("venue", self.venue)
        if self.trace_id:
            require_id("trace_id", self.trace_id)
        if self.commission_currency:
            require_currency("commission_currency", self.commission_currency)
        require_amount("quantity", self.quantity)
        require_amount("price", self.price)
        require_amount("commission", self.commission)
        if not self.quantity > 0:
            raise InvalidEvent("quantity", f"must be > 0, got {canonical(self.quantity)}")
        require_time(self.timestamp_ns)

    @property
    def event_id(self) -> str:
        return self.fill_id

    @property
    def signed_quantity(self) -> Decimal:
        return self.quantity if self.side is Side.BUY else -self.quantity

    kind: ClassVar[str] = "fill"


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderStatusUpdate(JournaledEvent):
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
        require_time(self.timestamp_ns)

    @property
    def event_id(self) -> str:
        return self.update_id

    kind: ClassVar[str] = "status"


@dataclass(frozen=True, slots=True, kw_only=True)
class CashTransfer(JournaledEvent):
    """A deposit (amount > 0) or a withdrawal (amount < 0) of cash."""

    transfer_id: str
    account_id: str
    currency: str
    amount: Decimal
    timestamp_ns: int
    chain_id: str = ""
    note: str = ""

    kind: ClassVar[str] = "transfer"

    def __post_init__(self) -> None:
        require_id("transfer_id", self.transfer_id)
        require_id("account_id", self.account_id)
        require_currency("currency", self.currency)
        require_amount("amount", self.amount)
        if not self.amount:
            raise InvalidEvent("amount", "must not be zero (> 0 deposits, < 0 withdraws)")
        require_id("chain_id", self.chain_id, required=False)
        if len(self.note) > 1000 or "\x1f" in self.note:
            raise InvalidEvent("note", "must be at most 1000 characters, without control codes")
        require_time(self.timestamp_ns)

    @property
    def event_id(self) -> str:
        return self.transfer_id


@dataclass(frozen=True, slots=True, kw_only=True)
class CashReservation(JournaledEvent):
    """Sets cash aside for a pending order; the order's fills consume it."""

    reservation_id: str
    account_id: str
    currency: str
    amount: Decimal
    chain_id: str = ""
    strategy_id: str = ""
    order_ref: str = ""
    order_id: str = ""

    kind: ClassVar[str] = "reserve"

    def __post_init__(self) -> None:
        require_id("reservation_id", self.reservation_id)
        require_id("account_id", self.account_id)
        require_currency("currency", self.currency)
        require_amount("amount", self.amount)
        if not self.amount > 0:
            raise InvalidEvent("amount", f"must be > 0, got {canonical(self.amount)}")
        for name in ("chain_id", "strategy_id", "order_ref", "order_id"):
            require_id(name, getattr(self, name), required=False)

    @property
    def event_id(self) -> str:
        return self.reservation_id

    @property
    def timestamp_ns(self) -> int:
        """Untimed: a request, not an observation, and a retry must be the same event."""
        return 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ReservationRelease(JournaledEvent):
    """Gives back part (`amount`) or all (None) of what a reservation still holds."""

    release_id: str
    account_id: str
    reservation_id: str
    amount: Decimal | None = None

    kind: ClassVar[str] = "release"

    def __post_init__(self) -> None:
        require_id("release_id", self.release_id)
        require_id("account_id", self.account_id)
        require_id("reservation_id", self.reservation_id)
        if self.amount is not None:
            require_amount("amount", self.amount)
            if not self.amount > 0:
                raise InvalidEvent("amount", f"must be > 0, got {canonical(self.amount)}")

    @property
    def event_id(self) -> str:
        return self.release_id

    @property
    def timestamp_ns(self) -> int:
        """Untimed, like a reservation."""
        return 0


class _Definition(JournaledEvent):
    """Reference data: identified by its content, so loading the same definition twice (each
    start reads the same file) is a duplicate and a changed one is a new event."""

    __slots__ = ()

    @property
    def event_id(self) -> str:
        return f"{self.defined_id}@{self.fingerprint() & 0xFFFFFFFFFFFFFFFF:016x}"

    @property
    def defined_id(self) -> str:
        raise NotImplementedError

    @property
    def timestamp_ns(self) -> int:
        return 0


@dataclass(frozen=True, slots=True, kw_only=True)
class InstrumentDefinition(_Definition):
    """What an instrument is; `multiplier` and `currency` are what P&L depends on."""

    instrument_id: str
    currency: str
    asset_class: AssetClass = AssetClass.UNSPECIFIED
    symbol: str = ""
    multiplier: Decimal = ONE
    tick_size: Decimal | None = None
    underlying: str = ""
    strike: Decimal | None = None
    expiry: str = ""
    right: OptionRight | None = None
    settlement_date: str = ""
    decimals: int | None = None
    # Registered by the service for a fill naming an unknown instrument; never journaled.
    provisional: bool = False

    kind: ClassVar[str] = "instrument"

    def __post_init__(self) -> None:
        require_id("instrument_id", self.instrument_id)
        require_currency("currency", self.currency)
        require_id("symbol", self.symbol, required=False)
        require_id("underlying", self.underlying, required=False)
        require_amount("multiplier", self.multiplier)
        if not self.multiplier > 0:
            raise InvalidEvent("multiplier", f"must be > 0, got {canonical(self.multiplier)}")
        if self.tick_size is not None:
            require_amount("tick_size", self.tick_size)
            if not self.tick_size > 0:
                raise InvalidEvent("tick_size", f"must be > 0, got {canonical(self.tick_size)}")
        require_date("expiry", self.expiry)
        require_date("settlement_date", self.settlement_date)
        if self.decimals is not None and not 0 <= self.decimals <= MAX_FRACTION_DIGITS:
            raise InvalidEvent("decimals", f"must be between 0 and {MAX_FRACTION_DIGITS}")
        if self.asset_class is AssetClass.OPTION:
            for name in ("underlying", "expiry"):
                if not getattr(self, name):
                    raise InvalidEvent(name, "is required for an option")
            if self.strike is None:
                raise InvalidEvent("strike", "is required for an option")
            if self.right is None:
                raise InvalidEvent("right", "is required for an option")
        else:
            if self.strike is not None:
                raise InvalidEvent("strike", "is only for options")
            if self.right is not None:
                raise InvalidEvent("right", "is only for options")
        if self.strike is not None:
            require_amount("strike", self.strike)
        if self.asset_class is AssetClass.FUTURE and not self.expiry:
            raise InvalidEvent("expiry", "is required for a future")

    @property
    def defined_id(self) -> str:
        return self.instrument_id

    @property
    def account_id(self) -> str:
        return ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountDefinition(_Definition):
    """A trading account: paper (simulated, funded with `initial_cash` in its base currency
    when first defined) or live (held at the broker and reconciled against it)."""

    account_id: str
    account_kind: AccountKind
    base_currency: str
    initial_cash: Decimal = ZERO

    kind: ClassVar[str] = "account"

    def __post_init__(self) -> None:
        require_id("account_id", self.account_id)
        require_currency("base_currency", self.base_currency)
        require_amount("initial_cash", self.initial_cash)
        if self.initial_cash < 0:
            raise InvalidEvent("initial_cash", "must be >= 0")
        if self.initial_cash and self.account_kind is AccountKind.LIVE:
            raise InvalidEvent(
                "initial_cash",
                "is only for paper accounts (live cash comes from deposits and the broker)",
            )

    @property
    def defined_id(self) -> str:
        return self.account_id


@dataclass(frozen=True, slots=True, kw_only=True)
class FillCorrection(JournaledEvent):
    """The broker corrected an execution: this one replaces the fill `corrects` names (the
    original's id, or an earlier correction's). Booked as a bust of what it replaces and the
    replacement, so the position never counts both."""

    correction_id: str
    corrects: str
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

    kind: ClassVar[str] = "correction"

    def __post_init__(self) -> None:
        require_id("correction_id", self.correction_id)
        require_id("corrects", self.corrects)
        if self.corrects == self.correction_id:
            raise InvalidEvent("corrects", "must name another fill than the correction itself")
        self.replacement()  # the replacement must be a valid fill, named by its field

    @classmethod
    def replacing(cls, corrects: str, fill: Fill) -> FillCorrection:
        """The correction that books `fill` (its id is the correction's) in place of
        `corrects`."""
        return cls(
            correction_id=fill.fill_id, corrects=corrects, account_id=fill.account_id,
            strategy_id=fill.strategy_id, instrument_id=fill.instrument_id, side=fill.side,
            quantity=fill.quantity, price=fill.price, timestamp_ns=fill.timestamp_ns,
            commission=fill.commission, commission_currency=fill.commission_currency,
            order_ref=fill.order_ref, order_id=fill.order_id, venue=fill.venue,
        )  # fmt: skip

    @property
    def event_id(self) -> str:
        return self.correction_id

    def replacement(self) -> Fill:
        """The execution as corrected, as a fill under the correction's id."""
        return Fill(
            fill_id=self.correction_id, account_id=self.account_id,
            strategy_id=self.strategy_id, instrument_id=self.instrument_id, side=self.side,
            quantity=self.quantity, price=self.price, timestamp_ns=self.timestamp_ns,
            commission=self.commission, commission_currency=self.commission_currency,
            order_ref=self.order_ref, order_id=self.order_id, venue=self.venue,
        )  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class CommissionAmendment(JournaledEvent):
    """A fill's commission, reported after the fill was booked (IB reports some late, partial
    fills' often at the order's completion). It sets the commission of what is booked for
    `fill_id`: fees and cash change by the difference, quantities, average cost and realized
    P&L never do. Booked like a correction that changes nothing else, so that restatements,
    later corrections and restarts see the amended fill."""

    amendment_id: str
    account_id: str
    fill_id: str
    commission: Decimal
    timestamp_ns: int
    commission_currency: str = ""

    kind: ClassVar[str] = "commission"

    def __post_init__(self) -> None:
        for name in ("amendment_id", "account_id", "fill_id"):
            require_id(name, getattr(self, name))
        require_currency("commission_currency", self.commission_currency, required=False)
        require_amount("commission", self.commission)
        require_time(self.timestamp_ns)

    @property
    def event_id(self) -> str:
        return self.amendment_id

    def amended(self, booked: Fill) -> Fill:
        """What is booked, with this commission."""
        return dataclasses.replace(
            booked, commission=self.commission, commission_currency=self.commission_currency
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ClosingMark:
    """An instrument's price at a trading day's close."""

    instrument_id: str
    price: Decimal

    def __post_init__(self) -> None:
        require_id("instrument_id", self.instrument_id)
        require_amount("price", self.price)


@dataclass(frozen=True, slots=True, kw_only=True)
class DayClose(JournaledEvent):
    """A trading day's close of one account, journaled by the service at the session's close
    (or at its next start, `late`): it records every row's day (see pnl_history.py). It
    carries the closing marks of what the account holds, so that a replay records the same
    figures whatever marks came later; the id is the account and the trading date."""

    account_id: str
    trading_date: str
    timestamp_ns: int  # the close's instant
    marks: tuple[ClosingMark, ...] = ()
    late: bool = False

    kind: ClassVar[str] = "day_close"

    def __post_init__(self) -> None:
        require_id("account_id", self.account_id)
        require_trading_date("trading_date", self.trading_date)
        require_time(self.timestamp_ns)
        seen: set[str] = set()
        for index, mark in enumerate(self.marks):
            if mark.instrument_id in seen:
                raise InvalidEvent(
                    f"marks[{index}].instrument_id", f"{mark.instrument_id!r} is listed twice"
                )
            seen.add(mark.instrument_id)

    @property
    def event_id(self) -> str:
        return f"{self.account_id}@{self.trading_date}"


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerPosition:
    """One position as the broker reports it. `avg_cost` is the broker's own figure (IB's
    includes commissions and, for derivatives, is per contract: price x `multiplier`)."""

    instrument_id: str
    quantity: Decimal
    avg_cost: Decimal
    multiplier: Decimal = ONE
    market_price: Decimal | None = None
    currency: str = ""  # the contract's, as the broker reports it

    def __post_init__(self) -> None:
        require_id("instrument_id", self.instrument_id)
        require_currency("currency", self.currency, required=False)
        for name in ("quantity", "avg_cost"):
            require_amount(name, getattr(self, name))
        require_amount("multiplier", self.multiplier)
        if not self.multiplier > 0:
            raise InvalidEvent("multiplier", f"must be > 0, got {canonical(self.multiplier)}")
        if self.market_price is not None:
            require_amount("market_price", self.market_price)


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerCash:
    """One currency's cash as the broker reports it (IB: the account value CashBalance)."""

    currency: str
    amount: Decimal

    def __post_init__(self) -> None:
        require_currency("currency", self.currency)
        require_amount("amount", self.amount)


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerPositions(JournaledEvent):
    """Every position the broker holds in a live account at one moment: a reconciliation's
    input. Journaled, so that a restart rebuilds the same reports."""

    snapshot_id: str
    account_id: str
    timestamp_ns: int
    positions: tuple[BrokerPosition, ...] = ()
    # The broker's cash per currency (empty: it reports none), compared with the service's.
    cash: tuple[BrokerCash, ...] = ()

    kind: ClassVar[str] = "broker_positions"

    def __post_init__(self) -> None:
        require_id("snapshot_id", self.snapshot_id)
        require_id("account_id", self.account_id)
        require_time(self.timestamp_ns)
        seen: set[str] = set()
        for index, position in enumerate(self.positions):
            if position.instrument_id in seen:
                raise InvalidEvent(
                    f"positions[{index}].instrument_id",
                    f"{position.instrument_id!r} is listed twice",
                )
            seen.add(position.instrument_id)
        currencies = [line.currency for line in self.cash]
        if len(set(currencies)) != len(currencies):
            raise InvalidEvent("cash", "lists a currency twice")

    @property
    def event_id(self) -> str:
        return self.snapshot_id


@dataclass(frozen=True, slots=True, kw_only=True)
class FxFixing(JournaledEvent):
    """An FX rate of record: 1 `base` was worth `rate` `quote` at `timestamp_ns`. The mark
    stream's rates are journaled (coalesced), so that a replay knows which rate was in force
    when a fill realized P&L; the id is the pair (as quoted) and the time, so the same pair and
    time with another rate is a conflict, the same one again a duplicate."""

    base: str
    quote: str
    rate: Decimal
    timestamp_ns: int

    kind: ClassVar[str] = "fx"

    def __post_init__(self) -> None:
        require_fx_rate(self.base, self.quote, self.rate, self.timestamp_ns)

    @property
    def event_id(self) -> str:
        return f"{self.base}/{self.quote}@{self.timestamp_ns}"

    @property
    def account_id(self) -> str:
        return ""


ExecutionEvent = (
    Fill
    | OrderStatusUpdate
    | CashTransfer
    | CashReservation
    | ReservationRelease
    | InstrumentDefinition
    | AccountDefinition
    | FillCorrection
    | CommissionAmendment
    | BrokerPositions
    | FxFixing
    | DayClose
)
"""Every kind of event the journal holds."""

EVENT_KINDS: dict[str, type[ExecutionEvent]] = {
    cls.kind: cls
    for cls in (
        Fill, OrderStatusUpdate, CashTransfer, CashReservation, ReservationRelease,
        InstrumentDefinition, AccountDefinition, FillCorrection, CommissionAmendment,
        BrokerPositions, FxFixing, DayClose,
    )
}  # fmt: skip
