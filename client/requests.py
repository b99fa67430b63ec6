"""Requests as values: each names its answer's type, so one generic call path can send any of
them and stay typed (`Request[Reservation]` answers with a `Reservation`).

The reads of the `Query` RPC are in `client.queries`; here are the calls outside it: the
commands (define, reserve, release, reconcile) and the listings the `Query` RPC has no branch
for. The client's methods (`reserve_cash(...)` and so on) build these values.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Generic, TypeVar

from client.models import (
    Account,
    Instrument,
    InstrumentPage,
    Reconciliation,
    ReconciliationPage,
    Reservation,
    require_decimals,
)

R = TypeVar("R", covariant=True)


class Request(Generic[R]):
    """A unary call answering with an R."""

    __slots__ = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class DefineInstrument(Request[Instrument]):
    """Registers or redefines an instrument (journaled). The same definition twice changes
    nothing; a new multiplier or currency for an instrument with positions is refused
    (FAILED_PRECONDITION)."""

    instrument: Instrument


@dataclass(frozen=True, slots=True, kw_only=True)
class ListInstruments(Request[InstrumentPage]):
    """One page of instruments, defined or provisional, in id order."""

    #: 1 to 1,000; 0 lets the service choose (100).
    page_size: int = 0
    page_token: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DefineAccount(Request[Account]):
    """Registers or redefines an account: paper or live, its base currency, a paper account's
    starting cash (paid in once). The same definition twice changes nothing."""

    account: Account


@dataclass(frozen=True, slots=True, kw_only=True)
class ListAccounts(Request[tuple[Account, ...]]):
    """Every account the service knows, defined or known only from its events."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReserveCash(Request[Reservation]):
    """Sets cash aside for a pending order; more than is available is refused
    (FAILED_PRECONDITION naming both figures). `reservation_id` is the idempotency key."""

    reservation_id: str
    account_id: str
    currency: str
    #: > 0.
    amount: Decimal
    #: The chain of a crypto venue's balance; empty off-chain.
    chain_id: str = ""
    strategy_id: str = ""
    #: The order whose fills consume the reservation (by order id or order_ref).
    order_id: str = ""
    order_ref: str = ""

    def __post_init__(self) -> None:
        require_decimals(self, "amount")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseReservation(Request[Reservation]):
    """Gives back part or all of what a reservation still holds. `release_id` is the
    idempotency key."""

    release_id: str
    account_id: str
    reservation_id: str
    #: > 0; None releases everything the reservation still holds.
    amount: Decimal | None = None

    def __post_init__(self) -> None:
        require_decimals(self, "amount")


@dataclass(frozen=True, slots=True, kw_only=True)
class Reconcile(Request[Reconciliation]):
    """Reconciles a live account against its broker now (UNAVAILABLE without a connected
    broker; FAILED_PRECONDITION for a paper account)."""

    account_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ListReconciliations(Request[ReconciliationPage]):
    """Earlier reports, newest first (older ones keep only their differences)."""

    account_id: str
    #: At most 100 (the default, 0).
    page_size: int = 0
    page_token: str = ""
