"""An order rebuilt from the analysts' views, for one that left memory (see Retention).

The `orders` view holds one row per status transition (a correction's row replaced in place),
in arrival order, with the key the ledger knew the order by: the history is those rows, and
the order's state is their fold, as the ledger folds it (`OrderBook.fold`). What the fills
booked for it comes from the `fills` and `corrections` views: fills naming one of its ids,
or only one of its refs; a correction books its replacement in place of what it corrects.

Limits: a transition the views recorded without its order's key (views catching up after a
restart, for an order already forgotten) is not found; when a ref alone names several orders
over time, fills naming only that ref count for each of them. Each look-up scans the account's
rows in each view (milliseconds to tens of them for large accounts): callers run it off the
event loop, and only for orders no longer in memory.
"""

from __future__ import annotations

from decimal import Decimal, localcontext
from typing import Any

import arcticdb as adb
import pandas as pd

from server.domain.decimals import EXACT, ZERO
from server.domain.events import OrderStatus, OrderStatusUpdate, Side
from server.domain.orders import Order, OrderBook, Transition
from server.storage.views import ArcticViews, unholdable


def stored_order(
    views: ArcticViews, account_id: str, order_id: str, order_ref: str
) -> Order | None:
    """The order as the views hold it (None if they hold no transition of it)."""
    if unholdable(account_id) or not views.orders.has_symbol(account_id):
        return None
    found = pd.DataFrame()
    keys = ["order_key"]  # which order: only its key is read
    if order_id:
        found = _rows(views.orders, account_id, _equals("order_id", order_id), keys)
    if found.empty and order_ref:
        found = _rows(views.orders, account_id, _equals("order_ref", order_ref), keys)
    found = found[found["order_key"] != ""] if not found.empty else found
    if found.empty:
        return None
    order_key = str(found["order_key"].iloc[-1])
    rows = _rows(views.orders, account_id, _equals("order_key", order_key))
    ids = {str(i) for i in rows["order_id"] if i}
    if ids:  # a ref reused by other orders: only this order's rows (or ref-only ones)
        rows = rows[rows["order_id"].isin([*ids, ""])]
    rows = rows.sort_index(kind="stable")
    history = [_transition(account_id, row) for row in rows.to_dict("records")]
    if not history:
        return None
    order = Order(account_id, order_key)
    OrderBook.fold(order, history)
    for transition in history:  # the first id and ref it was known by, as the ledger keeps
        order.order_id = order.order_id or transition.update.order_id
        order.order_ref = order.order_ref or transition.update.order_ref
    order.last_sequence = max(t.sequence for t in history)
    refs = {t.update.order_ref for t in history if t.update.order_ref}
    _book_fills(views, account_id, order, ids, refs)
    return order


def _equals(column: str, value: str) -> adb.QueryBuilder:
    query = adb.QueryBuilder()
    return query[query[column] == value]


def _rows(
    library: adb.library.Library,
    symbol: str,
    query: adb.QueryBuilder,
    columns: list[str] | None = None,
) -> pd.DataFrame:
    if not library.has_symbol(symbol):
        return pd.DataFrame()
    frame: pd.DataFrame = library.read(symbol, query_builder=query, columns=columns).data
    return frame


def _time_ns(value: object) -> int:
    return int(pd.Timestamp(value).value)


def _transition(account_id: str, row: dict[str, Any]) -> Transition:
    get = row.__getitem__
    update = OrderStatusUpdate(
        update_id=get("update_id"), account_id=account_id, status=OrderStatus[get("status")],
        timestamp_ns=_time_ns(get("status_time")), strategy_id=get("strategy_id"),
        order_ref=get("order_ref"), order_id=get("order_id"), perm_id=get("perm_id"),
        instrument_id=get("instrument_id"), side=Side[get("side")] if get("side") else None,
        filled_quantity=Decimal(get("filled_quantity")),
        remaining_quantity=Decimal(get("remaining_quantity")),
        avg_fill_price=Decimal(get("avg_fill_price")) if get("avg_fill_price") else None,
    )  # fmt: skip
    return Transition(int(get("sequence")), update, corrects=str(get("corrects")))


_FILL_COLUMNS = ["fill_id", "sequence", "quantity", "order_id", "order_ref"]
_CORRECTION_COLUMNS = ["correction_id", "corrects", "sequence", "quantity", "order_id", "order_ref"]


def _linked(ids: set[str], refs: set[str]) -> adb.QueryBuilder:
    """Fills naming one of the order's ids, or no id and one of its refs."""
    query = adb.QueryBuilder()
    by_id = query["order_id"].isin(sorted(ids)) if ids else None
    by_ref = (query["order_id"] == "") & query["order_ref"].isin(sorted(refs)) if refs else None
    if by_id is not None and by_ref is not None:
        return query[by_id | by_ref]
    return query[by_id if by_id is not None else by_ref]


def _book_fills(
    views: ArcticViews, account_id: str, order: Order, ids: set[str], refs: set[str]
) -> None:
    """What the fills booked for the order: each execution's latest quantity (a correction
    replaces what it corrects)."""
    if not ids and not refs:
        return
    booked: dict[str, Decimal] = {}  # original fill id -> what is booked for it now
    originals: dict[str, str] = {}  # correction id -> the original fill id
    events: list[tuple[int, str, str, Decimal]] = []  # sequence, id, corrects, quantity
    fills = _rows(views.fills, account_id, _linked(ids, refs), _FILL_COLUMNS)
    for fill_id, sequence, quantity in zip(
        fills.get("fill_id", []), fills.get("sequence", []), fills.get("quantity", []),
        strict=True,
    ):  # fmt: skip
        events.append((int(sequence), str(fill_id), "", Decimal(quantity)))
    corrections = _rows(views.corrections, account_id, _linked(ids, refs), _CORRECTION_COLUMNS)
    for correction_id, corrects, sequence, quantity in zip(
        corrections.get("correction_id", []), corrections.get("corrects", []),
        corrections.get("sequence", []), corrections.get("quantity", []), strict=True,
    ):  # fmt: skip
        events.append((int(sequence), str(correction_id), str(corrects), Decimal(quantity)))
    for sequence, event_id, corrects, quantity in sorted(events):
        original = originals.get(corrects, corrects) if corrects else event_id
        if corrects:
            originals[event_id] = original
        booked[original] = quantity
        order.last_sequence = max(order.last_sequence, sequence)
    with localcontext(EXACT):
        order.booked_quantity = sum(booked.values(), ZERO)
    order.booked_fills = len(booked)
