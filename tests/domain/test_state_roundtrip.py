"""A checkpoint of the ledger (`capture` + `capture_rows`) put back into an empty ledger
(`restore`) is the same ledger: same state, and the same behaviour from then on."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from server.domain.balances import ReservationStatus
from server.domain.events import ClosingMark, DayClose, ExecutionEvent, FxFixing, OrderStatus
from server.domain.ledger import Ledger, Result
from server.domain.marks import FxRate, Mark
from server.domain.refusals import RefusalKind
from server.domain.state import LedgerState, capture, capture_rows, restore
from tests.domain.builders import BASE_NS, fill
from tests.domain.event_builders import (
    broker_positions,
    correction,
    deposit,
    instrument,
    order_fill,
    paper_account,
    release,
    reservation,
    status,
)

D = Decimal
CURRENCIES = ("EUR", "JPY", "USD")
RETENTION_NS = 4 * 10**18  # ended orders and reservations queued to leave; none leaves here


def history() -> list[ExecutionEvent]:
    """A ledger's worth of everything: definitions, cash, reservations (held, refused, used,
    partly released), orders (flagged, replaced, corrected, ref-only then id, ended) and fills
    in two currencies, one on an instrument nobody defined."""
    return [
        paper_account("P1", "USD", 10_000),
        instrument("ES", multiplier=50),
        instrument("SAP", "EUR"),
        deposit(5000),
        deposit(1000, currency="EUR"),
        deposit(7, currency="USDC", chain="eth"),
        reservation("r1", 1100, order_id="7", strategy="S1"),
        reservation("r-big", 1_000_000, order_id="8"),  # refused
        reservation("r-ref", 300, order_ref="ref-9"),
        reservation("r-free", 100),
        release("r-free", 40),
        status(
            "SUBMITTED",
            10,
            order_id="7",
            strategy="S1",
            instrument="AAPL",
            side="BUY",
            remaining=10,
        ),
        order_fill("BUY", 4, 100, order_id="7", commission=1),
        status("PARTIALLY_FILLED", 11, order_id="7", filled=4, remaining=6, avg_price=100),
        status("SUBMITTED", 12, order_id="7", filled=4, remaining=11),  # replaced
        status("PENDING_SUBMIT", 13, order_id="7", filled=4, remaining=11),  # illegal
        status("PRE_SUBMITTED", 20, order_ref="ref-9", strategy="S2", remaining=3),
        status("SUBMITTED", 21, order_id="9", order_ref="ref-9", remaining=3),
        status("SUBMITTED", 21, order_id="9", order_ref="ref-9", remaining=2),  # correction
        status("SUBMITTED", 30, order_id="11", strategy="S1", remaining=1),
        status("CANCELLED", 31, order_id="11", remaining=1),
        status("SUBMITTED", 32, order_id="12", strategy="S2", account="A2", remaining=5),
        fill("BUY", 2, 4000, instrument="ES", strategy="S2", commission="2.5"),
        fill("BUY", 5, 200, instrument="SAP", commission=2),
        order_fill("SELL", 1, 210, instrument="SAP", commission=1, commission_currency="USD"),
        fill("SELL", 3, 105, strategy="S2"),
        fill("BUY", 7, 99, strategy="S3", fill_id="ex-1.01"),
        correction("ex-1.01", "BUY", 7, "99.5", strategy="S3", correction_id="ex-1.02"),
        broker_positions(("AAPL", 3, "100.1"), ("MSFT", 10, 300)),  # residual, unattributed
        fill("BUY", 1, 50, instrument="NEW", account="P1"),  # provisional
        instrument("ES", multiplier=5),  # refused: ES has positions
        FxFixing(base="EUR", quote="USD", rate=D("1.07"), timestamp_ns=50),  # FX of record
        FxFixing(base="USD", quote="JPY", rate=D("150"), timestamp_ns=60),
        FxFixing(base="EUR", quote="USD", rate=D("1.06"), timestamp_ns=40),  # a late one
        fill("SELL", 2, 4010, instrument="ES", strategy="S2"),  # a round trip closed
        dataclasses.replace(fill("BUY", 1, 100, trace_id="t-1", instrument="TRC"), venue="ARCA"),
        dataclasses.replace(
            fill("SELL", 1, 101, trace_id="t-1", instrument="TRC"), venue="ISLAND"
        ),  # a multi-step trade's second step
        DayClose(
            account_id="A1",
            trading_date="2026-01-01",
            timestamp_ns=BASE_NS + 10**12,
            marks=(ClosingMark(instrument_id="AAPL", price=D(108)),),
        ),  # a day recorded
    ]


def build() -> Ledger:
    ledger = Ledger(retention_ns=RETENTION_NS)
    for event in history():
        assert ledger.record(event).result is Result.ACCEPTED
    ledger.book.set_mark(Mark("AAPL", D(110), 100))
    ledger.book.set_mark(Mark("ES", D("3990.25"), 100))
    ledger.book.set_mark(Mark("GHOST", D(1), 100))  # marked, never traded
    ledger.fx.set(FxRate("EUR", "USD", D("1.08"), 100))
    ledger.fx.set(FxRate("USD", "JPY", D("150.5"), 100))
    return ledger


def roundtrip(ledger: Ledger) -> Ledger:
    restored = Ledger(retention_ns=RETENTION_NS)
    restore(restored, capture_rows(ledger), capture(ledger))
    return restored


def snapshot(ledger: Ledger) -> dict[str, object]:
    """Everything the ledger holds, in comparable form."""
    book = ledger.book
    strategies = sorted(book.strategies())
    accounts = sorted({row.key.account_id for row in book.rows()})
    return {
        "orders": sorted(ledger.orders.orders(), key=lambda o: (o.account_id, o.order_key)),
        "aliases": sorted(ledger.orders.aliases()),
        "open_orders": list(ledger.orders.open_orders.items()),
        "balances": sorted(ledger.balances.all(), key=lambda b: b.key),
        "reservations": ledger.balances.reservations,
        "refusals": ledger.refusals,
        "instruments": list(ledger.instruments),
        "accounts": list(ledger.accounts),
        "funded": ledger.accounts.funded(),
        "marks": sorted(book.market_marks(), key=lambda m: m.instrument_id),
        "reconciliations": ledger.reconciliations.all_runs(),
        "fx_rates": sorted(ledger.fx.rates(), key=lambda r: (r.base, r.quote)),
        "fx": {(a, b): ledger.fx.rate(a, b) for a in CURRENCIES for b in CURRENCIES},
        "fx_history": ledger.fx_history.rates(),
        "views": {row.key: book.view(row) for row in book.rows()},
        "prices": {i: (book.price(i), book.fill_price(i)) for i in book.by_instrument},
        "account_totals": {a: book.account_currency_totals(a) for a in ["", *accounts]},
        "strategy_totals": {s: book.strategy_currency_totals(s) for s in strategies},
        "pnl": (sorted(ledger.pnl.last_closes()), ledger.pnl.all_days(), ledger.pnl.closed_dates()),
        "performance": ledger.performance.state(),
        "trace_venues": ledger.traces.venues,
    }


def assert_same(restored: Ledger, original: Ledger) -> None:
    expected, actual = snapshot(original), snapshot(restored)
    for name in expected:
        assert actual[name] == expected[name], name


def test_the_built_ledger_has_everything_a_checkpoint_must_carry():
    """Guards the round-trip test below from passing on a ledger with nothing in it."""
    ledger = build()
    order7 = ledger.orders.find("A1", "7")
    assert [t.flag != "" for t in order7.history] == [False, False, False, True]
    assert [t.replaced for t in order7.history] == [False, False, True, False]
    order9 = ledger.orders.find("A1", "9")
    assert order9.order_key == "ref:ref-9"
    assert any(t.corrects for t in order9.history)
    statuses = {r.status for r in ledger.balances.reservations.values()}
    assert statuses == {ReservationStatus.ACTIVE, ReservationStatus.REFUSED}
    assert ledger.balances.reservations[("A1", "r-free")].released == 40
    assert {r.kind for r in ledger.refusals.values()} == {
        RefusalKind.PRECONDITION, RefusalKind.CONFLICT,
    }  # fmt: skip
    assert ledger.instruments.get("NEW").provisional
    assert ledger.accounts.funded() == {"P1"}
    assert len(ledger.orders.open_orders) == 3


def test_restore_yields_the_same_ledger():
    original = build()
    restored = roundtrip(original)
    assert_same(restored, original)
    # Spot checks, so that a failure of `snapshot` itself cannot hide a difference.
    order7 = restored.orders.find("A1", "7")
    assert order7.history == original.orders.find("A1", "7").history
    assert order7.history[3].flag.startswith("illegal transition")
    assert order7.history[2].replaced
    assert restored.orders.find("A1", order_ref="ref-9") is restored.orders.find("A1", "9")
    assert restored.book.view(next(iter(restored.book.rows()))).mark_source.name == "MARKET"
    assert restored.fx.rate("JPY", "USD") == original.fx.rate("JPY", "USD")


def test_a_restored_ledger_behaves_like_the_original():
    original = build()
    restored = roundtrip(original)
    following: list[ExecutionEvent] = [
        order_fill("BUY", 6, 100, order_id="7", commission=1),  # consumes the rest of r1
        status("FILLED", 40, order_id="7", filled=10, avg_price=100),  # releases what is left
        status("PARTIALLY_FILLED", 41, order_ref="ref-9", filled=1, remaining=1),  # via its ref
        order_fill("BUY", 1, 100, order_ref="ref-9"),  # consumes r-ref
        status("CANCELLED", 42, order_id="11", remaining=1),  # a terminal order stays so
        release("r-free"),
        release("r-big"),  # refused, as it never held anything
        paper_account("P1", "USD", 99_999),  # funded once already: pays nothing
        instrument("ES", multiplier=7),  # still refused: the rows were restored
        instrument("SAP", "EUR", symbol="SAP GY"),  # descriptive: accepted
        fill("SELL", 5, 190, instrument="SAP"),
        fill("BUY", 1, 60, instrument="NEW", account="P1"),
        status("FILLED", 43, order_id="12", account="A2", filled=5),
        status("FILLED", 44, order_id="9", filled=2),  # gives back the rest of r-ref
    ]
    for event in following:
        outcome = original.record(event)
        assert outcome.result is Result.ACCEPTED
        applied = restored.apply(event, outcome.sequence)
        assert applied == outcome.applied, type(event).__name__
    for ledger in (original, restored):
        assert not ledger.book.set_mark(Mark("AAPL", D(1), 99))  # stale either way
        assert ledger.book.set_mark(Mark("SAP", D(185), 101))
        assert ledger.fx.set(FxRate("USD", "EUR", D("0.9"), 101))
    assert_same(restored, original)
    assert restored.balances.reservations[("A1", "r1")].status is ReservationStatus.RELEASED
    r_ref = restored.balances.reservations[("A1", "r-ref")]
    assert (r_ref.status, r_ref.consumed, r_ref.released) == (ReservationStatus.RELEASED, 100, 200)
    assert restored.orders.find("A1", "7").status is OrderStatus.FILLED
    assert not restored.orders.open_orders
    assert len(restored.refusals) == len(original.refusals) == 4


def test_a_checkpoint_is_detached_from_the_ledger_it_was_taken_from():
    ledger = build()
    state = capture(ledger)
    rows = capture_rows(ledger)
    frozen = (
        [dataclasses.replace(o, history=list(o.history)) for o in state.orders],
        [b.copy() for b in state.balances],
        [r.copy() for r in state.reservations],
        [(row.copy(), price) for row, price in rows],
    )
    ledger.record(order_fill("BUY", 6, 100, order_id="7"))
    ledger.record(status("FILLED", 40, order_id="7", filled=10))
    ledger.record(deposit(1))
    assert (state.orders, state.balances, state.reservations, rows) == frozen


def test_an_empty_ledger_round_trips():
    restored = roundtrip(Ledger())
    assert_same(restored, Ledger())
    assert capture(restored) == LedgerState()


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(LedgerState)])
def test_every_part_of_the_checkpoint_is_filled_by_the_built_ledger(field):
    assert getattr(capture(build()), field)
