"""Cash per account, currency and chain, and the reservations held against it.

`cash` moves with fills (price x quantity x multiplier, and commissions), deposits and
withdrawals; `reserved` is set aside for pending orders; `available` is what is left. A fill
consumes its order's reservation; an order that ends releases what its reservation still holds.

A reservation that holds nothing any more (consumed, released, refused) leaves memory once the
ledger's event clock is a retention past its end (see Retention). A release naming it then
finds none (NOT_FOUND); a retried reservation is a duplicate of its journaled event, which is
what answers for it (`Ledger.reservation`).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, localcontext

from sortedcontainers import SortedDict

from server.domain.decimals import EXACT, ZERO, canonical
from server.domain.events import CashReservation, ReservationRelease
from server.domain.refusals import Refusal, RefusalKind
from server.domain.retention import Retention


class BalanceKey(tuple[str, str, str]):
    """(account_id, currency, chain_id); chain_id is "" off-chain."""

    __slots__ = ()

    def __new__(cls, account_id: str, currency: str, chain_id: str = "") -> BalanceKey:
        return super().__new__(cls, (account_id, currency, chain_id))

    @property
    def account_id(self) -> str:
        return self[0]

    @property
    def currency(self) -> str:
        return self[1]

    @property
    def chain_id(self) -> str:
        return self[2]


@dataclass(slots=True)
class Balance:
    key: BalanceKey
    cash: Decimal = ZERO
    reserved: Decimal = ZERO
    updated_at_ns: int = 0
    last_sequence: int = 0

    @property
    def available(self) -> Decimal:
        with localcontext(EXACT):
            return self.cash - self.reserved

    def copy(self) -> Balance:
        return Balance(self.key, self.cash, self.reserved, self.updated_at_ns, self.last_sequence)


class ReservationStatus(enum.Enum):
    ACTIVE = 1
    RELEASED = 2  # given back, all of it or what the fills left
    CONSUMED = 3  # used up by fills
    REFUSED = 4  # asked for more than was available: never held anything


@dataclass(slots=True)
class Reservation:
    reservation_id: str
    key: BalanceKey
    amount: Decimal
    order_key: str
    strategy_id: str
    status: ReservationStatus = ReservationStatus.ACTIVE
    remaining: Decimal = ZERO
    consumed: Decimal = ZERO
    released: Decimal = ZERO
    updated_at_ns: int = 0
    sequence: int = 0

    def copy(self) -> Reservation:
        return Reservation(
            self.reservation_id, self.key, self.amount, self.order_key, self.strategy_id,
            self.status, self.remaining, self.consumed, self.released, self.updated_at_ns,
            self.sequence,
        )  # fmt: skip


@dataclass(slots=True)
class BalanceBook:
    _balances: dict[BalanceKey, Balance] = field(default_factory=dict)
    # account_id -> (currency, chain_id) -> Balance, in order for queries.
    _by_account: dict[str, SortedDict] = field(default_factory=dict)
    # (account_id, reservation_id) -> Reservation
    reservations: dict[tuple[str, str], Reservation] = field(default_factory=dict)
    # (account_id, order_key) -> active reservations, oldest first
    _by_order: dict[tuple[str, str], list[Reservation]] = field(default_factory=dict)
    # account_id -> reservation_id -> Reservation, the active ones only: what queries show
    _active: dict[str, dict[str, Reservation]] = field(default_factory=dict)
    # (account_id, reservation_id) of those that ended, forgotten after the retention.
    retention: Retention[tuple[str, str]] = field(default_factory=Retention)

    def balance(self, key: BalanceKey) -> Balance:
        balance = self._balances.get(key)
        if balance is None:
            balance = self._balances[key] = Balance(key)
            self._by_account.setdefault(key.account_id, SortedDict())[key[1:]] = balance
        return balance

    def get(self, key: BalanceKey) -> Balance | None:
        return self._balances.get(key)

    def of_account(self, account_id: str) -> list[Balance]:
        return list(self._by_account.get(account_id, {}).values())

    def cash_by_currency(self, account_id: str) -> dict[str, Decimal]:
        """The account's cash per currency, every chain summed."""
        cash: dict[str, Decimal] = {}
        with localcontext(EXACT):
            for balance in self.of_account(account_id):
                currency = balance.key.currency
                cash[currency] = cash.get(currency, ZERO) + balance.cash
        return cash

    def accounts(self) -> list[str]:
        return sorted(self._by_account)

    def all(self) -> list[Balance]:
        return list(self._balances.values())

    def move_cash(self, key: BalanceKey, amount: Decimal, time_ns: int, sequence: int) -> Balance:
        balance = self.balance(key)
        with localcontext(EXACT):
            balance.cash += amount
        balance.updated_at_ns = max(balance.updated_at_ns, time_ns)
        balance.last_sequence = sequence
        return balance

    def reserve(
        self, event: CashReservation, order_key: str, sequence: int
    ) -> tuple[Refusal | None, Balance | None]:
        """Holds `amount` of the available cash, or refuses naming both figures."""
        key = BalanceKey(event.account_id, event.currency, event.chain_id)
        balance = self.balance(key)
        reservation = Reservation(
            event.reservation_id, key, event.amount, order_key, event.strategy_id,
            updated_at_ns=event.timestamp_ns, sequence=sequence,
        )  # fmt: skip
        self.reservations[(event.account_id, event.reservation_id)] = reservation
        available = balance.available
        if event.amount > available:
            reservation.status = ReservationStatus.REFUSED
            self.retention.ended((event.account_id, event.reservation_id))
            where = f" on chain {key.chain_id}" if key.chain_id else ""
            return Refusal(
                RefusalKind.PRECONDITION,
                "amount",
                f"reserving {canonical(event.amount)} {key.currency} exceeds the "
                f"{canonical(available)} {key.currency} available{where} in account "
                f"{key.account_id!r}",
            ), None
        reservation.remaining = event.amount
        with localcontext(EXACT):
            balance.reserved += event.amount
        balance.updated_at_ns = max(balance.updated_at_ns, event.timestamp_ns)
        balance.last_sequence = sequence
        self._hold(reservation)
        return None, balance

    def release(
        self, event: ReservationRelease, sequence: int
    ) -> tuple[Refusal | None, Balance | None]:
        reservation = self.reservations.get((event.account_id, event.reservation_id))
        if reservation is None or reservation.status is ReservationStatus.REFUSED:
            retention = self.retention.retention_ns
            kept = (
                f" (an ended one is kept for {retention / 86_400e9:g} day(s) of event time)"
                if retention is not None and reservation is None
                else ""
            )
            return Refusal(
                RefusalKind.NOT_FOUND,
                "reservation_id",
                f"account {event.account_id!r} holds no reservation {event.reservation_id!r}{kept}",
            ), None
        if reservation.status is not ReservationStatus.ACTIVE:
            return Refusal(
                RefusalKind.PRECONDITION,
                "reservation_id",
                f"reservation {event.reservation_id!r} is {reservation.status.name.lower()}: "
                "it holds nothing to release",
            ), None
        amount = reservation.remaining if event.amount is None else event.amount
        if amount > reservation.remaining:
            return Refusal(
                RefusalKind.PRECONDITION,
                "amount",
                f"releasing {canonical(amount)} exceeds the {canonical(reservation.remaining)} "
                f"reservation {event.reservation_id!r} still holds",
            ), None
        balance = self._give_back(reservation, amount, event.timestamp_ns, sequence)
        return None, balance

    def consume(
        self, account_id: str, order_keys: Sequence[str], currency: str, amount: Decimal,
        time_ns: int, sequence: int,
    ) -> list[Balance]:  # fmt: skip
        """A fill of the order uses up to `amount` of its reservations in that currency, under
        any of the keys the order is known by (it may have been reserved under either)."""
        changed = []
        reservations = [
            reservation
            for key in dict.fromkeys(order_keys)
            for reservation in self._by_order.get((account_id, key), ())
        ]
        for reservation in reservations:
            if amount <= 0:
                break
            if reservation.key.currency != currency:
                continue
            used = min(amount, reservation.remaining)
            with localcontext(EXACT):
                amount -= used
                reservation.remaining -= used
                reservation.consumed += used
                balance = self.balance(reservation.key)
                balance.reserved -= used
            balance.updated_at_ns = max(balance.updated_at_ns, time_ns)
            balance.last_sequence = sequence
            reservation.updated_at_ns = time_ns
            if not reservation.remaining:
                reservation.status = ReservationStatus.CONSUMED
                self._forget(reservation)
            changed.append(balance)
        return changed

    def release_order(
        self, account_id: str, order_key: str, time_ns: int, sequence: int
    ) -> list[Balance]:
        """The order ended: whatever its reservations still hold goes back."""
        return [
            self._give_back(reservation, reservation.remaining, time_ns, sequence)
            for reservation in list(self._by_order.get((account_id, order_key), ()))
        ]

    def _give_back(
        self, reservation: Reservation, amount: Decimal, time_ns: int, sequence: int
    ) -> Balance:
        balance = self.balance(reservation.key)
        with localcontext(EXACT):
            reservation.remaining -= amount
            reservation.released += amount
            balance.reserved -= amount
        balance.updated_at_ns = max(balance.updated_at_ns, time_ns)
        balance.last_sequence = sequence
        reservation.updated_at_ns = time_ns
        if not reservation.remaining:
            reservation.status = ReservationStatus.RELEASED
            self._forget(reservation)
        return balance

    def active(self, account_id: str) -> list[Reservation]:
        """The reservations still holding cash in an account."""
        return list(self._active.get(account_id, {}).values())

    def _hold(self, reservation: Reservation) -> None:
        """Indexes an active reservation: by account, and by order for its fills."""
        account_id = reservation.key.account_id
        self._active.setdefault(account_id, {})[reservation.reservation_id] = reservation
        if reservation.order_key:
            self._by_order.setdefault((account_id, reservation.order_key), []).append(reservation)

    def evict(self) -> int:
        """Forgets the ended reservations whose retention is over; returns how many."""
        evicted = 0
        for key in self.retention.due():
            if self.reservations.pop(key, None) is not None:
                evicted += 1
        return evicted

    def _forget(self, reservation: Reservation) -> None:
        """It holds nothing any more."""
        self.retention.ended((reservation.key.account_id, reservation.reservation_id))
        self._active.get(reservation.key.account_id, {}).pop(reservation.reservation_id, None)
        key = (reservation.key.account_id, reservation.order_key)
        active = self._by_order.get(key)
        if active and reservation in active:
            active.remove(reservation)
            if not active:
                del self._by_order[key]

    def restore(self, balances: list[Balance], reservations: list[Reservation]) -> None:
        for saved in balances:
            balance = self.balance(saved.key)
            balance.cash, balance.reserved = saved.cash, saved.reserved
            balance.updated_at_ns, balance.last_sequence = saved.updated_at_ns, saved.last_sequence
        for reservation in reservations:
            self.reservations[(reservation.key.account_id, reservation.reservation_id)] = (
                reservation
            )
            if reservation.status is ReservationStatus.ACTIVE:
                self._hold(reservation)

    def restore_retention(self, ended: list[tuple[int, tuple[str, str]]], now_ns: int) -> None:
        """Puts back when each kept reservation ended; one the checkpoint gives no end for
        (written before retention existed) ends now."""
        self.retention.now_ns = now_ns
        self.retention.restore(ended)
        for key, reservation in self.reservations.items():
            if reservation.status is not ReservationStatus.ACTIVE:
                self.retention.ended(key)
