"""Everything the ledger holds besides position rows, as plain values: what a checkpoint
saves and recovery puts back. Capture on the event loop (the ledger is consistent there, and
between the steps of `capturing_rows` and `capturing` as long as nothing applies); the copies
are then safe to write from another thread."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

from server.domain import steps
from server.domain.balances import Balance, Reservation
from server.domain.book import Price
from server.domain.events import AccountDefinition, InstrumentDefinition
from server.domain.ledger import Ledger
from server.domain.marks import FxRate, Mark
from server.domain.orders import Order
from server.domain.performance import OpenTrip, RoundTrips, VenueFigures
from server.domain.pnl_history import RowClose, ScopeDay
from server.domain.position import Position, PositionKey
from server.domain.reconciliation import Reconciliation
from server.domain.refusals import Refusal
from server.domain.steps import Steps, at_once
from server.domain.traces import TraceVenue


@dataclass(frozen=True, slots=True)
class LedgerState:
    instruments: list[InstrumentDefinition] = field(default_factory=list)
    accounts: list[AccountDefinition] = field(default_factory=list)
    funded_accounts: list[str] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    # (account_id, alias, order_key): which order an id or ref names now.
    order_aliases: list[tuple[str, str, str]] = field(default_factory=list)
    balances: list[Balance] = field(default_factory=list)
    reservations: list[Reservation] = field(default_factory=list)
    refusals: list[tuple[int, Refusal]] = field(default_factory=list)
    fx_rates: list[FxRate] = field(default_factory=list)
    # The journaled FX rates the history keeps (sequence, rate): what realized P&L converts at.
    fx_history: list[tuple[int, FxRate]] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    # Every reconciliation run kept (oldest first per account).
    reconciliations: list[Reconciliation] = field(default_factory=list)
    # The latest fill time the correctable fills had seen (one value; none before any fill):
    # recovery reloads the fills inside the window that ends there.
    corrections_latest_ns: list[int] = field(default_factory=list)
    # The ledger's event clock (one value; none before any timed event), and when each kept
    # ended order / reservation ended, oldest first: they are forgotten a retention later.
    event_clock_ns: list[int] = field(default_factory=list)
    ended_orders: list[tuple[int, tuple[str, str]]] = field(default_factory=list)
    ended_reservations: list[tuple[int, tuple[str, str]]] = field(default_factory=list)
    # The P&L history: each row's last close, each scope's days, each account's last date.
    pnl_last_closes: list[tuple[PositionKey, RowClose]] = field(default_factory=list)
    pnl_days: list[tuple[str, str, ScopeDay]] = field(default_factory=list)
    pnl_closed: list[tuple[str, str]] = field(default_factory=list)
    # Performance attribution: trips in progress, closed trips per row, venues, inceptions.
    perf_open: list[OpenTrip] = field(default_factory=list)
    perf_trips: list[tuple[PositionKey, RoundTrips]] = field(default_factory=list)
    perf_venues: list[tuple[tuple[str, str, str, str], VenueFigures]] = field(default_factory=list)
    perf_inception: list[tuple[tuple[str, str], int]] = field(default_factory=list)
    # Multi-step trades' legs per (account, venue): step latencies, traces done or left open.
    trace_venues: list[tuple[tuple[str, str], TraceVenue]] = field(default_factory=list)


def capture_rows(ledger: Ledger) -> list[tuple[Position, Price]]:
    """Every position row, with its instrument's last fill price."""
    return at_once(capturing_rows(ledger))


def capturing_rows(ledger: Ledger) -> Steps[list[tuple[Position, Price]]]:
    """`capture_rows` in steps of `steps.COPIES_PER_STEP` rows: whoever drives it applies
    nothing between steps (a million rows copied at once held the event loop about a second
    at each checkpoint's snapshot)."""
    book = ledger.book
    fill_price = book.fill_price
    copied: list[tuple[Position, Price]] = []
    for chunk in steps.copies(book.rows()):
        copied += [(row.copy(), fill_price(row.key.instrument_id)) for row in chunk]
        yield
    return copied


def capture(ledger: Ledger) -> LedgerState:
    return at_once(capturing(ledger))


def capturing(ledger: Ledger) -> Steps[LedgerState]:
    """`capture` in steps: the parts that grow with the book (the rows' round trips, their
    last closes) a step or more each; nothing may apply between them."""
    perf_open, perf_trips, perf_venues, perf_inception = yield from ledger.performance.stating(
        row.key for row in ledger.book.rows()
    )
    pnl_last_closes = ledger.pnl.last_closes()
    yield
    return LedgerState(
        instruments=list(ledger.instruments),
        accounts=list(ledger.accounts),
        funded_accounts=sorted(ledger.accounts.funded()),
        orders=[order.copy() for order in ledger.orders.orders()],
        order_aliases=ledger.orders.aliases(),
        balances=[balance.copy() for balance in ledger.balances.all()],
        reservations=[r.copy() for r in ledger.balances.reservations.values()],
        refusals=sorted(ledger.refusals.items(), key=lambda item: item[0]),
        fx_rates=ledger.fx.rates(),
        fx_history=ledger.fx_history.rates(),
        marks=ledger.book.market_marks(),
        reconciliations=ledger.reconciliations.all_runs(),
        corrections_latest_ns=[latest] if (latest := ledger.corrections.latest_ns) else [],
        event_clock_ns=[ledger.clock_ns] if ledger.clock_ns else [],
        ended_orders=ledger.orders.retention.entries(),
        ended_reservations=ledger.balances.retention.entries(),
        pnl_last_closes=pnl_last_closes,
        pnl_days=[(a, s, copy.deepcopy(day)) for a, s, day in ledger.pnl.all_days()],
        pnl_closed=ledger.pnl.closed_dates(),
        perf_open=perf_open,
        perf_trips=perf_trips,
        perf_venues=perf_venues,
        perf_inception=perf_inception,
        trace_venues=[(key, replace(venue)) for key, venue in sorted(ledger.traces.venues.items())],
    )


def restore(ledger: Ledger, rows: list[tuple[Position, Price]], state: LedgerState) -> None:
    """Puts a checkpoint back into an empty ledger: instruments and accounts before rows (rows
    name them), market marks after (they revalue the rows)."""
    for instrument in state.instruments:
        ledger.instruments.define(instrument, has_positions=False)
    ledger.accounts.restore(state.accounts, set(state.funded_accounts))  # rows take their base
    ledger.book.restore_all(rows)
    for order in state.orders:
        ledger.orders.restore(replace(order, history=list(order.history)))
    ledger.orders.restore_aliases(state.order_aliases)
    ledger.balances.restore(state.balances, [r.copy() for r in state.reservations])
    ledger.refusals.update(state.refusals)
    for rate in state.fx_rates:
        ledger.fx.set(rate)
    ledger.fx_history.restore(state.fx_history)
    for mark in state.marks:
        ledger.book.set_mark(mark)
    ledger.reconciliations.restore(state.reconciliations)
    # A checkpoint from before the event clock: the latest order or fill time stands for it.
    ledger.clock_ns = max(state.event_clock_ns, default=0) or max(
        [*state.corrections_latest_ns, *(order.updated_at_ns for order in state.orders)],
        default=0,
    )
    # The book's window ends where the correction window does: at the latest fill time.
    ledger.book.latest_ns = max(state.corrections_latest_ns, default=0)
    ledger.orders.restore_retention(state.ended_orders, ledger.clock_ns)
    ledger.balances.restore_retention(state.ended_reservations, ledger.clock_ns)
    ledger.pnl.restore(
        state.pnl_last_closes,
        [(a, s, copy.deepcopy(day)) for a, s, day in state.pnl_days],
        state.pnl_closed,
    )
    ledger.performance.restore(
        state.perf_open, state.perf_trips, state.perf_venues, state.perf_inception
    )
    ledger.traces.venues = {key: replace(venue) for key, venue in state.trace_venues}
