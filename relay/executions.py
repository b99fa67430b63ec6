"""How IB's executions and order statuses become the service's events (pure: no I/O, no state).

Every id is derived from what TWS reports, never from the relay's memory, so a restarted relay
resending the day's executions produces the very same events and the service counts each once:
a fill is its `execId`, an order is its `permId` (IB's `orderId` is only unique per client id),
a status update is (permId, status, filled, remaining).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from ib_async import Fill as IbFill
from ib_async import Trade

from client.models import Fill, OrderStatus, OrderStatusUpdate, Side
from tws.amounts import amount, optional_amount
from tws.contracts import ContractMap

__all__ = [
    "DEFAULT_STRATEGY",
    "Attribution",
    "UnmappableEvent",
    "commission_reported",
    "corrected_exec_id",
    "fill_event",
    "order_status",
    "reserved_order_ref",
    "status_update",
    "status_update_id",
]

#: The strategy of executions whose order carries no orderRef.
DEFAULT_STRATEGY = "UNASSIGNED"
#: Owners of the rows reconciliation adds: the service refuses them as a fill's strategy.
RESERVED_STRATEGIES = frozenset({"UNATTRIBUTED", "RESIDUAL"})

_EXECUTION_SIDES = {"BOT": Side.BUY, "SLD": Side.SELL}
_ORDER_SIDES = {"BUY": Side.BUY, "SELL": Side.SELL}
_ORIGINAL_SUFFIX = "01"

# IB's order states -> the service's; PARTIALLY_FILLED is derived (IB says Submitted).
_STATUSES = {
    "PendingSubmit": OrderStatus.PENDING_SUBMIT,
    "ApiPending": OrderStatus.PENDING_SUBMIT,
    "PreSubmitted": OrderStatus.PRE_SUBMITTED,
    "Submitted": OrderStatus.SUBMITTED,
    "PendingCancel": OrderStatus.PENDING_CANCEL,
    "Cancelled": OrderStatus.CANCELLED,
    "ApiCancelled": OrderStatus.CANCELLED,
    "Filled": OrderStatus.FILLED,
    "Inactive": OrderStatus.INACTIVE,
}


class UnmappableEvent(ValueError):
    """What IB reported cannot become an event (an unknown side, a missing figure)."""


@dataclass(frozen=True, slots=True)
class Attribution:
    """Who an execution belongs to: the instrument by conId, the strategy by orderRef."""

    contracts: ContractMap = dataclasses.field(default_factory=ContractMap)
    default_strategy: str = DEFAULT_STRATEGY

    def strategy_of(self, order_ref: str) -> str:
        """Strategies name themselves in their orders' orderRef; others go to the default, and
        so does an orderRef that names one of reconciliation's reserved owners (the fill keeps
        it as its order_ref)."""
        name = order_ref.strip()
        if not name or name in RESERVED_STRATEGIES:
            return self.default_strategy
        return name


def reserved_order_ref(order_ref: str) -> bool:
    """True for an orderRef the service reserves (booked under the default strategy)."""
    return order_ref.strip() in RESERVED_STRATEGIES


def corrected_exec_id(exec_id: str) -> str:
    """The execution that `exec_id` corrects, or "" for an original.

    IB keeps a correction's execId stem and changes its last suffix
    (`0001f4e8.6571a1b2.01.01` -> `.02`). A correction always names the original (`.01`), never
    the correction before it: the service resolves chains, and no relay state is needed.
    """
    stem, dot, suffix = exec_id.rpartition(".")
    if not (dot and stem and suffix.isascii() and suffix.isdigit()) or int(suffix) <= 1:
        return ""
    return f"{stem}.{_ORIGINAL_SUFFIX}"


def commission_reported(fill: IbFill) -> bool:
    """True once TWS sent this execution's commission report (ib_async fills it in place)."""
    report = fill.commissionReport
    return report.execId == fill.execution.execId and optional_amount(report.commission) is not None


def fill_event(fill: IbFill, attribution: Attribution, *, with_commission: bool = True) -> Fill:
    """The service's fill for one IB execution, with its commission if reported and wanted."""
    execution = fill.execution
    side = _EXECUTION_SIDES.get(execution.side)
    if side is None:
        raise UnmappableEvent(f"execution {execution.execId}: unknown side {execution.side!r}")
    commission, currency = Decimal(0), ""
    if with_commission and commission_reported(fill):
        commission = amount(fill.commissionReport.commission, "commission")
        currency = fill.commissionReport.currency
    try:
        return Fill(
            fill_id=execution.execId,
            account_id=execution.acctNumber,
            strategy_id=attribution.strategy_of(execution.orderRef),
            instrument_id=attribution.contracts.instrument_id(fill.contract),
            side=side,
            quantity=amount(execution.shares, "shares"),
            price=amount(execution.price, "price"),
            timestamp=_utc(execution.time),
            commission=commission,
            commission_currency=currency,
            # TWS keeps an orderRef as typed, blanks included; the service refuses an id with
            # surrounding blanks (it would refuse the whole fill).
            order_ref=execution.orderRef.strip(),
            order_id=str(execution.permId) if execution.permId else "",
            venue=execution.exchange,
            corrects=corrected_exec_id(execution.execId),
        )
    except ValueError as error:
        raise UnmappableEvent(f"execution {execution.execId}: {error}") from error


def order_status(ib_status: str, filled: Decimal, remaining: Decimal) -> OrderStatus | None:
    """The service's status for IB's; None for states that are not an order's (ApiUpdate,
    ValidationError: notices about a request, not transitions)."""
    status = _STATUSES.get(ib_status)
    if status is OrderStatus.SUBMITTED and filled > 0 and remaining > 0:
        return OrderStatus.PARTIALLY_FILLED
    return status


def status_update_id(perm_id: int, ib_status: str, filled: Decimal, remaining: Decimal) -> str:
    """Deterministic, so that the same status reported again is a duplicate."""
    return f"ib-{perm_id}-{ib_status}-{_plain(filled)}-{_plain(remaining)}"


def status_update(
    trade: Trade, attribution: Attribution, timestamp: datetime
) -> OrderStatusUpdate | None:
    """The service's update for a trade's current status; None when there is nothing to send
    (no permId yet, a notice rather than a state, no account)."""
    state, order = trade.orderStatus, trade.order
    perm_id = state.permId or order.permId
    if not perm_id or not order.account:
        return None
    try:
        filled = amount(state.filled, "filled")
        remaining = amount(state.remaining, "remaining")
        status = order_status(state.status, filled, remaining)
        if status is None:
            return None
        return OrderStatusUpdate(
            update_id=status_update_id(perm_id, state.status, filled, remaining),
            account_id=order.account,
            instrument_id=attribution.contracts.instrument_id(trade.contract),
            status=status,
            strategy_id=attribution.strategy_of(order.orderRef),
            order_ref=order.orderRef.strip(),
            order_id=str(perm_id),
            perm_id=str(perm_id),
            filled_quantity=filled,
            remaining_quantity=remaining,
            avg_fill_price=optional_amount(state.avgFillPrice) if filled else None,
            timestamp=_utc(timestamp),
            side=_ORDER_SIDES.get(order.action.upper(), Side.UNSPECIFIED),
        )
    except ValueError as error:
        raise UnmappableEvent(f"order {perm_id}: {error}") from error


def _utc(moment: datetime) -> datetime:
    """ib_async's times are aware (UTC by default); a naive one is taken as UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _plain(value: Decimal) -> str:
    """`100`, not `100.0` or `1E+2`: one text per value, so that ids compare."""
    return format(value.normalize(), "f")
