"""Where each order stands at TWS after an outage, as the service's status updates.

While the relay is away TWS keeps working: orders fill and are cancelled, and new ones are
placed and done. Live events announce none of that once the relay is back (ib_async starts
each connection with an empty order book), so after every (re)connect the relay asks TWS
three questions and brings every order to the state they give:

- `reqCompletedOrders`: orders done today, each with its filled quantity (TWS sends no
  remaining quantity or average price for them: the executions give the price);
- `reqAllOpenOrders`: working orders of every client, with their live status;
- `reqExecutions`: the day's executions, summed per order (a correction replaces the
  execution it corrects): the filled quantity of an order the relay saw working that neither
  list names any more.

`OrderStates` remembers the last update sent per order, so that it knows what it has seen and
what is behind. Pure: no I/O; the relay asks TWS and sends what this returns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

from ib_async import Fill as IbFill
from ib_async import Trade

from client.models import OrderStatus, OrderStatusUpdate
from relay.executions import Attribution, UnmappableEvent, status_update, status_update_id
from tws.amounts import optional_amount

__all__ = [
    "ExecutedTotal",
    "OrderStates",
    "completed_update",
    "executed_totals",
    "unseen_orders",
]

_ZERO = Decimal(0)
_AVERAGE_QUANTUM = Decimal("1e-10")
_WORKING = frozenset(
    {
        OrderStatus.PENDING_SUBMIT,
        OrderStatus.PRE_SUBMITTED,
        OrderStatus.SUBMITTED,
        OrderStatus.PARTIALLY_FILLED,
        OrderStatus.PENDING_CANCEL,
    }
)


@dataclass(frozen=True, slots=True)
class ExecutedTotal:
    """What TWS's executions say an order filled: the quantity and its average price."""

    quantity: Decimal = _ZERO
    notional: Decimal = _ZERO  # sum of shares x price

    @property
    def avg_price(self) -> Decimal | None:
        """To 10 decimal places (what TWS's own figure carries at most, and the service
        takes up to 18)."""
        if not self.quantity:
            return None
        return (self.notional / self.quantity).quantize(_AVERAGE_QUANTUM, ROUND_HALF_EVEN)


def executed_totals(fills: Iterable[IbFill]) -> dict[int, ExecutedTotal]:
    """permId -> the sum of its executions, each correction in place of what it corrects
    (the highest suffix of an execId stem counts)."""
    latest: dict[str, tuple[str, IbFill]] = {}
    for fill in fills:
        exec_id = fill.execution.execId
        stem, _, suffix = exec_id.rpartition(".")
        key = stem or exec_id
        kept = latest.get(key)
        if kept is None or _suffix_order(suffix) >= _suffix_order(kept[0]):
            latest[key] = (suffix, fill)
    totals: dict[int, ExecutedTotal] = {}
    for _, fill in latest.values():
        execution = fill.execution
        shares = optional_amount(execution.shares)
        price = optional_amount(execution.price)
        if not execution.permId or shares is None or price is None:
            continue
        total = totals.get(execution.permId, ExecutedTotal())
        totals[execution.permId] = ExecutedTotal(
            total.quantity + shares, total.notional + shares * price
        )
    return totals


def _suffix_order(suffix: str) -> int:
    return int(suffix) if suffix.isascii() and suffix.isdigit() else -1


def completed_update(
    trade: Trade,
    executed: ExecutedTotal | None,
    attribution: Attribution,
    timestamp: datetime,
) -> OrderStatusUpdate | None:
    """The update for an order `reqCompletedOrders` lists: its final status and filled
    quantity (the order's, else the executions'); remaining is what was never filled
    (0 for Filled); the average price is the executions' when they account for the fill."""
    order = trade.order
    filled = _quantity(order.filledQuantity)
    if filled is None:
        filled = executed.quantity if executed else _ZERO
    total = _quantity(order.totalQuantity) or filled
    status = trade.orderStatus.status
    remaining = _ZERO if status == "Filled" else max(total - filled, _ZERO)
    # ib_async's own figures are floats: these read back as the same decimal text.
    state = dataclasses.replace(
        trade.orderStatus, permId=order.permId, filled=float(filled), remaining=float(remaining)
    )
    update = status_update(dataclasses.replace(trade, orderStatus=state), attribution, timestamp)
    if update is None:
        return None
    average = executed.avg_price if executed and executed.quantity == filled else None
    return dataclasses.replace(update, avg_fill_price=average if filled else None)


def _quantity(value: float | Decimal) -> Decimal | None:
    return value if isinstance(value, Decimal) else optional_amount(value)


class OrderStates:
    """The last status update sent for each order (by `order_id`, the permId)."""

    def __init__(self) -> None:
        self._last: dict[str, OrderStatusUpdate] = {}

    def sent(self, update: OrderStatusUpdate) -> None:
        self._last[update.order_id] = update

    def last(self, order_id: str) -> OrderStatusUpdate | None:
        return self._last.get(order_id)

    def forget_before(self, horizon: datetime) -> None:
        """Lets go of orders whose last update is older than `horizon`."""
        for order_id in [i for i, u in self._last.items() if u.timestamp and u.timestamp < horizon]:
            del self._last[order_id]

    def __len__(self) -> int:
        return len(self._last)

    def catch_up(
        self,
        *,
        completed: Iterable[Trade],
        working: Iterable[Trade],
        executed: dict[int, ExecutedTotal],
        attribution: Attribution,
        now: datetime,
    ) -> tuple[list[OrderStatusUpdate], list[str]]:
        """The updates that bring every order to its broker state, and the reasons of those
        that could not be mapped. Completed orders first, then working ones (their live
        status), then orders sent as working that neither list names: their executions'
        total, FILLED once it reaches the order's quantity."""
        updates: list[OrderStatusUpdate] = []
        errors: list[str] = []
        listed: set[str] = set()
        for trade in completed:
            perm_id = trade.order.permId
            try:
                update = completed_update(trade, executed.get(perm_id), attribution, now)
            except UnmappableEvent as error:
                errors.append(str(error))
                continue
            if update is not None:
                listed.add(update.order_id)
                updates.append(update)
        for trade in working:
            try:
                update = status_update(trade, attribution, now)
            except UnmappableEvent as error:
                errors.append(str(error))
                continue
            if update is not None and update.order_id not in listed:
                listed.add(update.order_id)
                updates.append(update)
        for order_id, last in self._last.items():
            if order_id in listed or last.status not in _WORKING or not order_id.isdigit():
                continue
            behind = _from_executions(last, executed.get(int(order_id)), now)
            if behind is not None:
                updates.append(behind)
        return updates, errors


def _from_executions(
    last: OrderStatusUpdate, executed: ExecutedTotal | None, now: datetime
) -> OrderStatusUpdate | None:
    """A working order TWS no longer lists: its executions say how much more it filled."""
    if executed is None or executed.quantity <= last.filled_quantity:
        return None
    size = last.filled_quantity + last.remaining_quantity
    filled = executed.quantity
    remaining = max(size - filled, _ZERO)
    ib_status = "Filled" if size and not remaining else "Submitted"
    status = OrderStatus.FILLED if ib_status == "Filled" else OrderStatus.PARTIALLY_FILLED
    return dataclasses.replace(
        last,
        update_id=status_update_id(int(last.order_id), ib_status, filled, remaining),
        status=status,
        filled_quantity=filled,
        remaining_quantity=remaining,
        avg_fill_price=executed.avg_price,
        timestamp=now,
    )


def unseen_orders(
    completed: Iterable[Trade], working: Iterable[Trade], fills: Iterable[IbFill], client_id: int
) -> list[int]:
    """permIds of orders TWS lists with a fill (working orders of other clients than
    `client_id`, completed orders of anyone) of which `reqExecutions` returned no execution.

    TWS reports the executions of other clients' orders only to its master API client, but
    lists their orders to anyone who asks: such an order says the caller is not the master (or
    its executions are older than today's, which `reqExecutions` no longer lists).
    """
    executed = {fill.execution.permId for fill in fills}
    unseen: set[int] = set()
    for trade in working:
        order = trade.order
        filled = optional_amount(trade.orderStatus.filled)
        if order.clientId != client_id and filled and order.permId not in executed:
            unseen.add(order.permId)
    for trade in completed:
        order = trade.order
        if _quantity(order.filledQuantity) and order.permId not in executed:
            unseen.add(order.permId)
    unseen.discard(0)
    return sorted(unseen)
