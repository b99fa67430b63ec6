"""The ledger's state besides position rows (`LedgerState`) as a frame and back, exactly.

One row per record: `section` says what it is, `record` holds it as JSON with amounts as
canonical decimal strings and events as their canonical journal text.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import pandas as pd

from server.domain.balances import Balance, BalanceKey, Reservation, ReservationStatus
from server.domain.decimals import canonical
from server.domain.events import (
    AccountDefinition,
    InstrumentDefinition,
    OrderStatusUpdate,
    Side,
    journaled_limits,
)
from server.domain.marks import FxRate, Mark
from server.domain.orders import Order, OrderBook, Transition
from server.domain.performance import OpenTrip, RoundTrips, VenueFigures
from server.domain.pnl_history import CurrencyDay, RowClose, ScopeDay
from server.domain.position import PositionKey
from server.domain.reconciliation import (
    CashLine,
    LineStatus,
    Reconciliation,
    ReconciliationLine,
    ResidualRow,
)
from server.domain.refusals import Refusal, RefusalKind
from server.domain.state import LedgerState
from server.domain.traces import TraceVenue
from server.storage.disk import StoreUnusable
from server.storage.upcasters import current_state_frame


def _amount(value: Decimal | None) -> str | None:
    return None if value is None else canonical(value)


def _decimal(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def _order(order: Order) -> dict[str, Any]:
    return {
        "account_id": order.account_id, "order_key": order.order_key,
        "order_id": order.order_id, "order_ref": order.order_ref, "perm_id": order.perm_id,
        "strategy_id": order.strategy_id, "instrument_id": order.instrument_id,
        "side": order.side.name if order.side else None,
        "status": order.status.name if order.status else None,
        "filled_quantity": canonical(order.filled_quantity),
        "remaining_quantity": canonical(order.remaining_quantity),
        "avg_fill_price": _amount(order.avg_fill_price),
        "booked_quantity": canonical(order.booked_quantity), "booked_fills": order.booked_fills,
        "created_at_ns": order.created_at_ns, "updated_at_ns": order.updated_at_ns,
        "last_sequence": order.last_sequence,
        "history": [
            [t.sequence, t.update.text(), t.flag, t.replaced, t.corrects] for t in order.history
        ],
    }  # fmt: skip


def _order_from(record: dict[str, Any]) -> Order:
    """An order as checkpointed, its history folded again: a checkpoint written before
    histories were kept in time order (late statuses placed by time) reads back as the
    journal would replay it now; for a newer one the fold changes nothing."""
    from server.domain.events import OrderStatus

    order = Order(
        record["account_id"], record["order_key"], record["order_id"], record["order_ref"],
        record["perm_id"], record["strategy_id"], record["instrument_id"],
        Side[record["side"]] if record["side"] else None,
        OrderStatus[record["status"]] if record["status"] else None,
        Decimal(record["filled_quantity"]), Decimal(record["remaining_quantity"]),
        _decimal(record["avg_fill_price"]), Decimal(record["booked_quantity"]),
        record["booked_fills"], record["created_at_ns"], record["updated_at_ns"],
        record["last_sequence"],
        [
            Transition(sequence, OrderStatusUpdate.from_text(text), flag, replaced, corrects)
            for sequence, text, flag, replaced, corrects, *_ in record["history"]
        ],
    )  # fmt: skip
    OrderBook.fold(order, order.history)
    return order


def _balance(balance: Balance) -> dict[str, Any]:
    return {
        "key": list(balance.key), "cash": canonical(balance.cash),
        "reserved": canonical(balance.reserved), "updated_at_ns": balance.updated_at_ns,
        "last_sequence": balance.last_sequence,
    }  # fmt: skip


def _balance_from(record: dict[str, Any]) -> Balance:
    return Balance(
        BalanceKey(*record["key"]), Decimal(record["cash"]), Decimal(record["reserved"]),
        record["updated_at_ns"], record["last_sequence"],
    )  # fmt: skip


def _reservation(r: Reservation) -> dict[str, Any]:
    return {
        "reservation_id": r.reservation_id, "key": list(r.key), "amount": canonical(r.amount),
        "order_key": r.order_key, "strategy_id": r.strategy_id, "status": r.status.name,
        "remaining": canonical(r.remaining), "consumed": canonical(r.consumed),
        "released": canonical(r.released), "updated_at_ns": r.updated_at_ns,
        "sequence": r.sequence,
    }  # fmt: skip


def _reservation_from(record: dict[str, Any]) -> Reservation:
    return Reservation(
        record["reservation_id"], BalanceKey(*record["key"]), Decimal(record["amount"]),
        record["order_key"], record["strategy_id"], ReservationStatus[record["status"]],
        Decimal(record["remaining"]), Decimal(record["consumed"]), Decimal(record["released"]),
        record["updated_at_ns"], record["sequence"],
    )  # fmt: skip


def _mark(mark: Mark) -> dict[str, Any]:
    return {
        "instrument_id": mark.instrument_id, "price": canonical(mark.price),
        "time_ns": mark.time_ns, "bid": _amount(mark.bid), "ask": _amount(mark.ask),
        "last": _amount(mark.last),
    }  # fmt: skip


def _mark_from(record: dict[str, Any]) -> Mark:
    return Mark(
        record["instrument_id"], Decimal(record["price"]), record["time_ns"],
        _decimal(record["bid"]), _decimal(record["ask"]), _decimal(record["last"]),
    )  # fmt: skip


def _fx(rate: FxRate) -> dict[str, Any]:
    return {"base": rate.base, "quote": rate.quote, "rate": canonical(rate.rate),
            "time_ns": rate.time_ns}  # fmt: skip


def _fx_from(record: dict[str, Any]) -> FxRate:
    return FxRate(record["base"], record["quote"], Decimal(record["rate"]), record["time_ns"])


def _fx_history(entry: tuple[int, FxRate]) -> dict[str, Any]:
    sequence, rate = entry
    return {"sequence": sequence, **_fx(rate)}


def _fx_history_from(record: dict[str, Any]) -> tuple[int, FxRate]:
    return record["sequence"], _fx_from(record)


def _instrument(value: InstrumentDefinition) -> dict[str, Any]:
    return {"text": value.text()}


def _account(value: AccountDefinition) -> dict[str, Any]:
    return {"text": value.text()}


def _refusal(item: tuple[int, Refusal]) -> dict[str, Any]:
    sequence, refusal = item
    return {"sequence": sequence, "kind": refusal.kind.name, "field": refusal.field,
            "reason": refusal.reason}  # fmt: skip


def _refusal_from(record: dict[str, Any]) -> tuple[int, Refusal]:
    refusal = Refusal(RefusalKind[record["kind"]], record["field"], record["reason"])
    return record["sequence"], refusal


def _residual(row: ResidualRow | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "account_id": row.account_id, "instrument_id": row.instrument_id, "owner": row.owner,
        "quantity": canonical(row.quantity), "cost_basis": canonical(row.cost_basis),
        "avg_cost": canonical(row.avg_cost), "multiplier": canonical(row.multiplier),
        "currency": row.currency, "sequence": row.sequence, "timestamp_ns": row.timestamp_ns,
        "broker_price": _amount(row.broker_price),
    }  # fmt: skip


def _residual_from(record: dict[str, Any] | None) -> ResidualRow | None:
    if record is None:
        return None
    return ResidualRow(
        record["account_id"], record["instrument_id"], record["owner"],
        Decimal(record["quantity"]), Decimal(record["cost_basis"]), Decimal(record["avg_cost"]),
        Decimal(record["multiplier"]), record["currency"], record["sequence"],
        record["timestamp_ns"], _decimal(record.get("broker_price")),
    )  # fmt: skip


_LINE_AMOUNTS = (
    "broker_quantity", "broker_avg_cost", "broker_unit_cost", "account_quantity",
    "attributed_quantity", "residual_quantity", "service_avg_cost",
)  # fmt: skip


def _line(line: ReconciliationLine) -> dict[str, Any]:
    record: dict[str, Any] = {name: canonical(getattr(line, name)) for name in _LINE_AMOUNTS}
    record.update(
        instrument_id=line.instrument_id, status=line.status.name, note=line.note,
        strategies=[[strategy, canonical(quantity)] for strategy, quantity in line.strategies],
        residual=_residual(line.residual),
    )  # fmt: skip
    return record


def _line_from(record: dict[str, Any]) -> ReconciliationLine:
    return ReconciliationLine(
        instrument_id=record["instrument_id"], status=LineStatus[record["status"]],
        **{name: Decimal(record[name]) for name in _LINE_AMOUNTS},
        strategies=tuple((strategy, Decimal(q)) for strategy, q in record["strategies"]),
        residual=_residual_from(record["residual"]), note=record["note"],
    )  # fmt: skip


def _reconciliation(run: Reconciliation) -> dict[str, Any]:
    return {
        "account_id": run.account_id, "snapshot_id": run.snapshot_id, "sequence": run.sequence,
        "timestamp_ns": run.timestamp_ns, "broker_positions": run.broker_positions,
        "matched": run.matched, "discrepancies": run.discrepancies,
        "lines": [_line(line) for line in run.lines],
        "cash": [
            [c.currency, c.status.name, canonical(c.broker_cash), canonical(c.service_cash),
             c.note] for c in run.cash
        ],
    }  # fmt: skip


def _reconciliation_from(record: dict[str, Any]) -> Reconciliation:
    return Reconciliation(
        record["account_id"], record["snapshot_id"], record["sequence"], record["timestamp_ns"],
        record["broker_positions"], tuple(_line_from(line) for line in record["lines"]),
        matched=record["matched"], discrepancies=record["discrepancies"],
        cash=tuple(
            CashLine(currency, LineStatus[status], Decimal(broker), Decimal(service), note)
            for currency, status, broker, service, note in record.get("cash", [])
        ),
    )  # fmt: skip


def _ended(entry: tuple[int, tuple[str, str]]) -> dict[str, Any]:
    at_ns, (account_id, key) = entry
    return {"at_ns": at_ns, "account_id": account_id, "key": key}


def _ended_from(record: dict[str, Any]) -> tuple[int, tuple[str, str]]:
    return record["at_ns"], (record["account_id"], record["key"])


def _row_close(item: tuple[PositionKey, RowClose]) -> dict[str, Any]:
    key, close = item
    return {
        "key": list(key), "quantity": canonical(close.quantity), "mark": _amount(close.mark),
        "realized_pnl": canonical(close.realized_pnl),
        "realized_pnl_base": _amount(close.realized_pnl_base), "fees": canonical(close.fees),
        "other_fees": [[c, canonical(a)] for c, a in close.other_fees],
        "unrealized_pnl": canonical(close.unrealized_pnl),
    }  # fmt: skip


def _row_close_from(record: dict[str, Any]) -> tuple[PositionKey, RowClose]:
    return PositionKey(*record["key"]), RowClose(
        quantity=Decimal(record["quantity"]), mark=_decimal(record["mark"]),
        realized_pnl=Decimal(record["realized_pnl"]),
        realized_pnl_base=_decimal(record["realized_pnl_base"]), fees=Decimal(record["fees"]),
        other_fees=tuple((c, Decimal(a)) for c, a in record["other_fees"]),
        unrealized_pnl=Decimal(record["unrealized_pnl"]),
    )  # fmt: skip


_CURRENCY_DAY = (
    "realized_pnl", "unrealized_pnl", "unrealized_change", "fees", "exposure", "gross_exposure",
)  # fmt: skip
_SCOPE_BASE = (
    "realized_pnl_base", "unrealized_pnl_base", "fees_base", "net_pnl_base", "exposure_base",
    "gross_exposure_base",
)  # fmt: skip


def _scope_day(item: tuple[str, str, ScopeDay]) -> dict[str, Any]:
    account_id, strategy_id, day = item
    record: dict[str, Any] = {name: _amount(getattr(day, name)) for name in _SCOPE_BASE}
    record.update(
        account_id=account_id, strategy_id=strategy_id, trading_date=day.trading_date,
        close_ns=day.close_ns, sequence=day.sequence, late=day.late,
        base_currency=day.base_currency, missing_fx_rates=sorted(day.missing_fx_rates),
        by_currency={
            currency: {name: canonical(getattr(figures, name)) for name in _CURRENCY_DAY}
            for currency, figures in day.by_currency.items()
        },
    )  # fmt: skip
    return record


def _scope_day_from(record: dict[str, Any]) -> tuple[str, str, ScopeDay]:
    day = ScopeDay(
        trading_date=record["trading_date"], close_ns=record["close_ns"],
        sequence=record["sequence"], late=record["late"], base_currency=record["base_currency"],
        by_currency={
            currency: CurrencyDay(**{name: Decimal(figures[name]) for name in _CURRENCY_DAY})
            for currency, figures in record["by_currency"].items()
        },
        missing_fx_rates=set(record["missing_fx_rates"]),
        **{name: _decimal(record[name]) for name in _SCOPE_BASE},
    )  # fmt: skip
    return record["account_id"], record["strategy_id"], day


_TRIPS = ("gross_win", "gross_loss", "largest_win", "largest_loss")
_VENUE = ("volume", "fees", "realized_pnl")


def _exact(value: Decimal) -> str:
    """An amount in plain notation keeping its exponent and the sign of a zero ("0.00",
    "-0", "10.00"), unlike `canonical`: performance figures keep adding to what a checkpoint
    gave back, and a sum's exponent is its terms' smallest, so a restart that dropped them
    would leave the restored state's texts ("10" for "10.00") unlike a run without one. The
    reader is `Decimal(text)` either way: checkpoints holding canonical texts read as before.
    (Positive exponents do not arise: amounts are sums and products of plain inputs.)"""
    return format(value, "f")


def _trip_open(item: OpenTrip) -> dict[str, Any]:
    key, sign, realized, fees = item
    return {"key": list(key), "sign": sign, "realized_pnl": _exact(realized),
            "fees": _exact(fees)}  # fmt: skip


_ZEROS: dict[str, Decimal] = {}  # a zero's text -> its Decimal: most open trips start at zero


def _trip_open_from(record: dict[str, Any]) -> OpenTrip:
    """One row's open trip (a record per row: a million at a restart). A zero's text is read
    once (the ledger shares a trip record per sign and zeros' texts anyway)."""
    return (
        tuple.__new__(PositionKey, record["key"]), record["sign"],
        _trip_amount(record["realized_pnl"]), _trip_amount(record["fees"]),
    )  # fmt: skip


def _trip_amount(text: str) -> Decimal:
    value = _ZEROS.get(text)
    if value is None:
        value = Decimal(text)
        if not value and len(_ZEROS) < 64:  # zeros' texts are few ("0", "0.00", "-0")
            _ZEROS[text] = value
    return value


def _trips(item: tuple[PositionKey, RoundTrips]) -> dict[str, Any]:
    key, trips = item
    record: dict[str, Any] = {name: _exact(getattr(trips, name)) for name in _TRIPS}
    record.update(key=list(key), count=trips.count, wins=trips.wins, losses=trips.losses)
    return record


def _trips_from(record: dict[str, Any]) -> tuple[PositionKey, RoundTrips]:
    return PositionKey(*record["key"]), RoundTrips(
        count=record["count"], wins=record["wins"], losses=record["losses"],
        **{name: Decimal(record[name]) for name in _TRIPS},
    )  # fmt: skip


def _venue(item: tuple[tuple[str, str, str, str], VenueFigures]) -> dict[str, Any]:
    key, figures = item
    record: dict[str, Any] = {name: _exact(getattr(figures, name)) for name in _VENUE}
    record.update(key=list(key), fills=figures.fills)
    return record


def _venue_from(record: dict[str, Any]) -> tuple[tuple[str, str, str, str], VenueFigures]:
    account_id, strategy_id, venue, currency = record["key"]
    figures = VenueFigures(
        fills=record["fills"], **{name: Decimal(record[name]) for name in _VENUE}
    )
    return (account_id, strategy_id, venue, currency), figures


_SECTIONS: dict[str, tuple[Callable[[Any], dict[str, Any]], Callable[[dict[str, Any]], Any]]] = {
    "instruments": (_instrument, lambda r: InstrumentDefinition.from_text(r["text"])),
    "accounts": (_account, lambda r: AccountDefinition.from_text(r["text"])),
    "funded_accounts": (lambda a: {"account_id": a}, lambda r: r["account_id"]),
    "orders": (_order, _order_from),
    "order_aliases": (lambda a: {"alias": list(a)}, lambda r: tuple(r["alias"])),
    "balances": (_balance, _balance_from),
    "reservations": (_reservation, _reservation_from),
    "refusals": (_refusal, _refusal_from),
    "fx_rates": (_fx, _fx_from),
    "fx_history": (_fx_history, _fx_history_from),  # none in a checkpoint from before it
    "marks": (_mark, _mark_from),
    "reconciliations": (_reconciliation, _reconciliation_from),
    "corrections_latest_ns": (lambda t: {"time_ns": t}, lambda r: r["time_ns"]),
    "event_clock_ns": (lambda t: {"time_ns": t}, lambda r: r["time_ns"]),
    "ended_orders": (_ended, _ended_from),
    "ended_reservations": (_ended, _ended_from),
    "pnl_last_closes": (_row_close, _row_close_from),  # none in a checkpoint from before it
    "pnl_days": (_scope_day, _scope_day_from),
    "pnl_closed": (lambda c: {"closed": list(c)}, lambda r: tuple(r["closed"])),
    "perf_open": (_trip_open, _trip_open_from),  # none in a checkpoint from before it
    "perf_trips": (_trips, _trips_from),
    "perf_venues": (_venue, _venue_from),
    "trace_venues": (
        lambda item: {"key": list(item[0]), **dataclasses.asdict(item[1])},
        lambda r: (
            (r["key"][0], r["key"][1]),
            TraceVenue(r["steps"], r["latency_ns"], r["legs_done"], r["legs_open"]),
        ),
    ),
    "perf_inception": (
        lambda i: {"scope": list(i[0]), "time_ns": i[1]},
        lambda r: (tuple(r["scope"]), r["time_ns"]),
    ),
}


_PARSED_AT_ONCE = 64  # records: few dicts alive at once (the collector's young generation)


def _trip_open_texts(items: list[OpenTrip]) -> list[str]:
    """The perf_open records' texts, each the very text `json.dumps(_trip_open(item))` gives
    (a record per row: a million at a stop), made from each id's and amount's text found
    once: ids repeat across rows, and the ledger shares a trip's amounts (zeros, fees)."""
    quoted: dict[str, str] = {}
    amounts: dict[int, str] = {}  # id() of an amount `items` holds (alive throughout)

    def quote(text: str) -> str:
        found = quoted.get(text)
        if found is None:
            found = quoted[text] = json.dumps(text)
        return found

    def amount(value: Decimal) -> str:
        found = amounts.get(id(value))
        if found is None:
            found = amounts[id(value)] = json.dumps(_exact(value))
        return found

    return [
        f'{{"key":[{quote(account)},{quote(strategy)},{quote(instrument)}],'
        f'"sign":{int(sign)},"realized_pnl":{amount(realized)},"fees":{amount(fees)}}}'
        for (account, strategy, instrument), sign, realized, fees in items
    ]


def state_frame(state: LedgerState) -> pd.DataFrame:
    sections: list[str] = []
    records: list[str] = []
    for section, (encode, _) in _SECTIONS.items():
        items = getattr(state, section)
        if section == "perf_open":
            texts = _trip_open_texts(items)
        else:
            texts = [json.dumps(encode(item), separators=(",", ":")) for item in items]
        sections += [section] * len(texts)
        records += texts
    return pd.DataFrame({"section": sections, "record": records})


def state_from_frame(
    frame: pd.DataFrame, metadata: Mapping[str, object] | None = None
) -> LedgerState:
    """The state a frame holds; one of an earlier release is raised to the current version
    first (`metadata`: the checkpoint's). Within version 1, a section added since reads as
    empty and a record's field added since as its default (see the readers above)."""
    frame = current_state_frame(frame, metadata or {})
    texts: dict[str, list[str]] = {section: [] for section in _SECTIONS}
    for section, record in zip(frame["section"].tolist(), frame["record"].tolist(), strict=True):
        kept = texts.get(section)
        if kept is None:
            raise StoreUnusable(
                f"a state frame (checkpoints/state or marks/latest) holds section "
                f"{section!r}, which this release does not know (written by a later one)"
            )
        kept.append(record)
    parts: dict[str, list[Any]] = {}
    with journaled_limits():  # saved under the rules of their day, like the journal
        for section, records in texts.items():
            read = _SECTIONS[section][1]
            # One parse per 64 records, not one a record (about 1.5 us less a record: a
            # million rows' records, about a second of a restart).
            parts[section] = [
                read(record)
                for start in range(0, len(records), _PARSED_AT_ONCE)
                for record in json.loads(f"[{','.join(records[start : start + _PARSED_AT_ONCE])}]")
            ]
    return LedgerState(**parts)


def marks_frame(marks: list[Mark], rates: list[FxRate]) -> pd.DataFrame:
    """The latest market marks and FX rates, for a restart between checkpoints."""
    return state_frame(LedgerState(marks=marks, fx_rates=rates))
