"""Order history: every status change of every order, and the state it leads to.

An order's history is in the order of the statuses' own times (ties by sequence): a status
that arrives after one timestamped later than it (a late status: a report lost and recovered,
a relay catching up) takes its place in time and is marked `late`, which is not an error.

The order's state is the fold of its on-time statuses in time order; a late status never moves
the current status, so a late PARTIALLY_FILLED after FILLED leaves the order FILLED. What a late
status can change is the filled quantity, and only upwards: fills are never undone by a report,
so a trader's exposure is at least the most any report says was filled (a late report of 5
filled on an order cancelled with 3 leaves it CANCELLED with 5 filled; the fills booked show the
difference in `quantity_mismatch`). The fold depends only on the transitions (times, sequences,
contents), so replaying the journal in sequence order, refolding a checkpoint and the store's
orders view all give the same order.

A transition that is illegal at its place (a cancelled order filling) or whose filled quantity
goes back is kept in the history, flagged, and does not move the order. A transition with the
same timestamp as an earlier one of the same order but new content is a correction: it replaces
that transition in place (a correction is the broker's word for that time, so it is not late)
and the state is folded again.

Fills link to their order by order_id, else by order_ref (the latest order with that ref);
the quantity the broker says is filled and the fills booked for the order are compared.

An order that ended (TERMINAL) leaves memory once the ledger's event clock is a retention past
its end (see Retention); the store's orders view still answers for it. INACTIVE is not an end:
IB reports a held or not-yet-working order as Inactive and may submit it later (LEGAL allows
INACTIVE -> SUBMITTED). A status or fill arriving for a forgotten order finds no order, as for
one never seen: it starts a new order from what it says (fills book positions and cash all the
same), which a terminal status ends and forgets again.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field, replace
from decimal import Decimal, localcontext

from sortedcontainers import SortedDict

from server.domain.decimals import EXACT, ZERO, canonical
from server.domain.events import Fill, OrderStatus, OrderStatusUpdate, Side
from server.domain.retention import Retention

S = OrderStatus
WORKING = frozenset({S.PENDING_SUBMIT, S.PRE_SUBMITTED, S.SUBMITTED, S.PARTIALLY_FILLED,
                     S.PENDING_CANCEL})  # fmt: skip
TERMINAL = frozenset({S.FILLED, S.CANCELLED, S.REJECTED})
_AFTER_WORKING = {S.PARTIALLY_FILLED, S.FILLED, S.PENDING_CANCEL, S.CANCELLED, S.INACTIVE}
LEGAL: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.PENDING_SUBMIT: frozenset({S.PENDING_SUBMIT, S.PRE_SUBMITTED, S.SUBMITTED, S.REJECTED,
                                 *_AFTER_WORKING}),
    S.PRE_SUBMITTED: frozenset({S.PRE_SUBMITTED, S.SUBMITTED, S.REJECTED, *_AFTER_WORKING}),
    S.SUBMITTED: frozenset({S.SUBMITTED, S.REJECTED, *_AFTER_WORKING}),
    # IB reports a partly filled working order as Submitted with a filled quantity.
    S.PARTIALLY_FILLED: frozenset({S.SUBMITTED, *_AFTER_WORKING}),
    # A cancel can lose the race to a fill, or be refused (back to Submitted).
    S.PENDING_CANCEL: frozenset({S.SUBMITTED, *_AFTER_WORKING}),
    S.INACTIVE: frozenset({S.INACTIVE, S.PRE_SUBMITTED, S.SUBMITTED, S.CANCELLED, S.REJECTED}),
    S.FILLED: frozenset({S.FILLED}),
    S.CANCELLED: frozenset({S.CANCELLED}),
    S.REJECTED: frozenset({S.REJECTED}),
}  # fmt: skip


def order_keys(order_id: str, order_ref: str) -> list[str]:
    """The keys an order is known by: its broker id, then its ref."""
    keys = []
    if order_id:
        keys.append("id:" + order_id)
    if order_ref:
        keys.append("ref:" + order_ref)
    return keys


@dataclass(frozen=True, slots=True)
class Transition:
    sequence: int
    update: OrderStatusUpdate
    # Why this transition did not move the order ("" when it did).
    flag: str = ""
    # A working order whose quantity changed (cancel/replace, or a modification).
    replaced: bool = False
    # The update_id of the transition this one corrected.
    corrects: str = ""
    # Arrived after a status of the order timestamped later than it: placed by time, it does
    # not move the current status (set by the fold, from the history alone).
    late: bool = False

    @property
    def place(self) -> tuple[int, int]:
        """Where the transition sits in its order's history: its time, then its sequence."""
        return self.update.timestamp_ns, self.sequence


@dataclass(slots=True)
class Order:
    account_id: str
    order_key: str
    order_id: str = ""
    order_ref: str = ""
    perm_id: str = ""
    strategy_id: str = ""
    instrument_id: str = ""
    side: Side | None = None
    status: OrderStatus | None = None  # None: known only from its fills so far
    filled_quantity: Decimal = ZERO
    remaining_quantity: Decimal = ZERO
    avg_fill_price: Decimal | None = None
    booked_quantity: Decimal = ZERO  # the sum of fills booked for the order
    booked_fills: int = 0
    created_at_ns: int = 0
    updated_at_ns: int = 0
    last_sequence: int = 0
    history: list[Transition] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.status in WORKING

    @property
    def quantity_mismatch(self) -> Decimal:
        """Broker-reported filled quantity minus the fills booked (0 when they agree). Fills
        and statuses race, so a working order may differ for a moment; an ended one should not."""
        with localcontext(EXACT):
            return self.filled_quantity - self.booked_quantity

    def copy(self) -> Order:
        """A detached copy, history shared (transitions are immutable; the list is replaced,
        never changed in place, by `OrderBook`). Made per fill: written out, not
        `dataclasses.replace` (3 us -> about 1.5 us)."""
        return Order(
            account_id=self.account_id, order_key=self.order_key, order_id=self.order_id,
            order_ref=self.order_ref, perm_id=self.perm_id, strategy_id=self.strategy_id,
            instrument_id=self.instrument_id, side=self.side, status=self.status,
            filled_quantity=self.filled_quantity, remaining_quantity=self.remaining_quantity,
            avg_fill_price=self.avg_fill_price, booked_quantity=self.booked_quantity,
            booked_fills=self.booked_fills, created_at_ns=self.created_at_ns,
            updated_at_ns=self.updated_at_ns, last_sequence=self.last_sequence,
            history=self.history,
        )  # fmt: skip


class OrderBook:
    def __init__(self, retention_ns: int | None = None) -> None:
        # (account_id, order_key) of the orders that ended, forgotten after the retention.
        self.retention: Retention[tuple[str, str]] = Retention(retention_ns)
        self._orders: dict[tuple[str, str], Order] = {}  # (account_id, order_key) -> Order
        self._aliases: dict[tuple[str, str], Order] = {}  # (account_id, "id:.."/"ref:..")
        # (account_id, strategy_id, order_key) -> Order, for working orders only.
        self.open_orders: SortedDict = SortedDict()

    def __len__(self) -> int:
        return len(self._orders)

    def find(self, account_id: str, order_id: str = "", order_ref: str = "") -> Order | None:
        if order_id:
            order = self._aliases.get((account_id, "id:" + order_id))
            if order is not None:
                return order
        if order_ref:
            order = self._aliases.get((account_id, "ref:" + order_ref))
            if order is not None and not (order_id and order.order_id):
                return order
        return None

    def orders(self) -> list[Order]:
        return list(self._orders.values())

    def apply_status(self, update: OrderStatusUpdate, sequence: int) -> tuple[Order, Transition]:
        order = self.find(update.account_id, update.order_id, update.order_ref)
        if order is None:
            order = self._new(update.account_id, update.order_id, update.order_ref)
        self._unindex(order)
        history = list(order.history)
        corrected = next(
            (i for i, t in enumerate(history) if t.update.timestamp_ns == update.timestamp_ns),
            None,
        )
        if corrected is None:
            bisect.insort(history, Transition(sequence, update), key=lambda t: t.place)
        else:
            history[corrected] = Transition(
                sequence, update, corrects=history[corrected].update.update_id
            )
        self.fold(order, history)
        order.last_sequence = sequence
        self._alias(order, update.order_id, update.order_ref)
        self._index(order)
        if order.status in TERMINAL:
            self.retention.ended((order.account_id, order.order_key))
        else:  # a correction may take back a terminal status
            self.retention.revived((order.account_id, order.order_key))
        transition = next(t for t in order.history if t.sequence == sequence)
        return order, transition

    def link_fill(self, fill: Fill, sequence: int) -> Order | None:
        """Books a fill against its order (created, status unknown, if no status came yet)."""
        if not fill.order_id and not fill.order_ref:
            return None
        order = self.find(fill.account_id, fill.order_id, fill.order_ref)
        if order is None:
            order = self._new(fill.account_id, fill.order_id, fill.order_ref)
            order.strategy_id, order.instrument_id = fill.strategy_id, fill.instrument_id
            order.side, order.created_at_ns = fill.side, fill.timestamp_ns
            self._alias(order, fill.order_id, fill.order_ref)
        with localcontext(EXACT):
            order.booked_quantity += fill.quantity
        order.booked_fills += 1
        order.last_sequence = sequence
        return order

    def unlink_fill(self, fill: Fill, sequence: int) -> Order | None:
        """Takes back a fill booked against its order (a broker correction replaced it)."""
        order = self.find(fill.account_id, fill.order_id, fill.order_ref)
        if order is None:
            return None
        with localcontext(EXACT):
            order.booked_quantity -= fill.quantity
        order.booked_fills -= 1
        order.last_sequence = sequence
        return order

    def evict(self) -> int:
        """Forgets the orders whose retention is over; returns how many."""
        evicted = 0
        for key in self.retention.due():
            order = self._orders.get(key)
            if order is None:
                continue
            del self._orders[key]
            ids = {(order.order_id, order.order_ref)}
            ids.update((t.update.order_id, t.update.order_ref) for t in order.history)
            for order_id, order_ref in ids:
                for alias in order_keys(order_id, order_ref):
                    if self._aliases.get((order.account_id, alias)) is order:
                        del self._aliases[(order.account_id, alias)]
            evicted += 1
        return evicted

    def _new(self, account_id: str, order_id: str, order_ref: str) -> Order:
        order = Order(account_id, order_keys(order_id, order_ref)[0])
        self._orders[(account_id, order.order_key)] = order
        return order

    def _alias(self, order: Order, order_id: str, order_ref: str) -> None:
        for key in order_keys(order_id, order_ref):
            self._aliases[(order.account_id, key)] = order
        if order_id and not order.order_id:
            order.order_id = order_id
        if order_ref and not order.order_ref:
            order.order_ref = order_ref

    def _index(self, order: Order) -> None:
        if order.is_open:
            self.open_orders[(order.account_id, order.strategy_id, order.order_key)] = order

    def _unindex(self, order: Order) -> None:
        self.open_orders.pop((order.account_id, order.strategy_id, order.order_key), None)

    @staticmethod
    def fold(order: Order, history: list[Transition]) -> None:
        """Rebuilds the order's state from its history (any order: it is put in time order),
        marking late statuses and flagging what cannot apply."""
        history = sorted(history, key=lambda t: t.place)
        # A status is late when one timestamped after it arrived before it (a smaller
        # sequence); scanning from the latest time keeps the smallest sequence seen after.
        late = [False] * len(history)
        earliest_after: int | None = None
        for i in range(len(history) - 1, -1, -1):
            transition = history[i]
            if earliest_after is not None and not transition.corrects:
                late[i] = earliest_after < transition.sequence
            if earliest_after is None or transition.sequence < earliest_after:
                earliest_after = transition.sequence
        order.status = None
        order.filled_quantity = order.remaining_quantity = ZERO
        order.avg_fill_price = None
        order.updated_at_ns = 0
        folded = []
        raises: list[OrderStatusUpdate] = []  # late statuses that may raise the filled quantity
        for transition, is_late in zip(history, late, strict=True):
            update = transition.update
            flag = _flag(order, update)
            replaced = False
            if is_late:
                if not flag:
                    raises.append(update)
            elif not flag:
                if order.status in WORKING and update.status in WORKING:
                    with localcontext(EXACT):
                        before = order.filled_quantity + order.remaining_quantity
                        after = update.filled_quantity + update.remaining_quantity
                    replaced = before != after
                order.status = update.status
                order.filled_quantity = update.filled_quantity
                order.remaining_quantity = update.remaining_quantity
                if update.avg_fill_price is not None:
                    order.avg_fill_price = update.avg_fill_price
                order.updated_at_ns = update.timestamp_ns
                _learn(order, update, overwrite=True)
            if not order.created_at_ns or update.timestamp_ns < order.created_at_ns:
                order.created_at_ns = update.timestamp_ns
            folded.append(replace(transition, flag=flag, replaced=replaced, late=is_late))
        for update in raises:
            _raise_filled(order, update)
            _learn(order, update, overwrite=False)
        order.history = folded

    def aliases(self) -> list[tuple[str, str, str]]:
        return [(account, alias, o.order_key) for (account, alias), o in self._aliases.items()]

    def restore(self, order: Order) -> None:
        self._orders[(order.account_id, order.order_key)] = order
        self._index(order)

    def restore_retention(self, ended: list[tuple[int, tuple[str, str]]], now_ns: int) -> None:
        """Puts back when each kept order ended; a terminal order the checkpoint gives no end
        for (one written before retention existed) ends now."""
        self.retention.now_ns = now_ns
        self.retention.restore(ended)
        for key, order in self._orders.items():
            if order.status in TERMINAL:
                self.retention.ended(key)

    def restore_aliases(self, aliases: list[tuple[str, str, str]]) -> None:
        for account_id, alias, order_key in aliases:
            self._aliases[(account_id, alias)] = self._orders[(account_id, order_key)]


def _learn(order: Order, update: OrderStatusUpdate, *, overwrite: bool) -> None:
    """Takes the order's details from a status: an on-time one overwrites them, a late one
    only fills in what is not known yet."""
    for name in ("perm_id", "strategy_id", "instrument_id"):
        if getattr(update, name) and (overwrite or not getattr(order, name)):
            setattr(order, name, getattr(update, name))
    if update.side is not None and (overwrite or order.side is None):
        order.side = update.side


def _raise_filled(order: Order, late: OrderStatusUpdate) -> None:
    """A late status saying more was filled than the current status does (a report lost and
    recovered): fills are never undone, so the filled quantity (and its average price) rise
    to it; the status stays, and a working order's remaining quantity shrinks by as much."""
    if late.filled_quantity <= order.filled_quantity:
        return
    with localcontext(EXACT):
        more = late.filled_quantity - order.filled_quantity
        if order.status in WORKING:
            order.remaining_quantity = max(order.remaining_quantity - more, ZERO)
    order.filled_quantity = late.filled_quantity
    if late.avg_fill_price is not None:
        order.avg_fill_price = late.avg_fill_price


def _flag(order: Order, update: OrderStatusUpdate) -> str:
    if order.status is None:
        return ""
    if update.filled_quantity < order.filled_quantity:
        return (
            f"out of order: filled quantity goes back from {canonical(order.filled_quantity)} "
            f"to {canonical(update.filled_quantity)}"
        )
    if update.status not in LEGAL[order.status]:
        return f"illegal transition {order.status.name} -> {update.status.name}"
    return ""
