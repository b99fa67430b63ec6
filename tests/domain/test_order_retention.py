"""Ended orders and reservations leave memory a retention of event time after they ended: by
the journal's own times, so a replay from a checkpoint forgets the same ones at the same
event, whatever the wall clock says."""

from __future__ import annotations

import dataclasses
import itertools
from decimal import Decimal

import pytest

from server.domain.balances import ReservationStatus
from server.domain.events import ExecutionEvent, OrderStatus
from server.domain.ledger import Ledger, Result
from server.domain.refusals import RefusalKind
from server.domain.state import LedgerState, capture, capture_rows, restore
from tests.domain.builders import BASE_NS
from tests.domain.event_builders import (
    deposit,
    order_fill,
    release,
    reservation,
    status,
)
from tests.domain.restart import record, restore_checkpoint
from tests.domain.test_state_roundtrip import assert_same

D = Decimal
DAY = 86_400 * 10**9
T0 = BASE_NS


def ledger(retention_ns: int | None = DAY) -> Ledger:
    return Ledger(retention_ns=retention_ns)


def filled_order(order_id: str, at_ns: int, quantity: int = 5) -> list[ExecutionEvent]:
    return [
        status("SUBMITTED", at_ns, order_id=order_id, order_ref=f"ref-{order_id}",
               strategy="S1", instrument="AAPL", side="BUY", remaining=quantity),
        order_fill("BUY", quantity, 100, order_id=order_id, at_ns=at_ns + 1),
        status("FILLED", at_ns + 2, order_id=order_id, filled=quantity, avg_price=100),
    ]  # fmt: skip


def tick(at_ns: int) -> ExecutionEvent:
    """An event that only moves the event clock (a deposit stamped `at_ns`)."""
    return deposit(1, at_ns=at_ns)


def test_an_ended_order_leaves_once_event_time_is_past_its_retention():
    book = ledger()
    record(book, *filled_order("1", T0))
    record(book, *filled_order("2", T0 + 10))  # ended later: leaves later
    ended_at = T0 + 2
    record(book, tick(ended_at + DAY))  # exactly a retention later: still kept
    assert book.orders.find("A1", "1") is not None
    record(book, tick(ended_at + DAY + 1))  # more than a retention: gone, by id and by ref
    assert book.orders.find("A1", "1") is None
    assert book.orders.find("A1", order_ref="ref-1") is None
    assert book.orders.find("A1", "2") is not None
    assert ("A1", "ref-1") not in {(a, alias) for a, alias, _ in book.orders.aliases()}
    record(book, tick(T0 + 12 + DAY + 1))
    assert len(book.orders) == 0
    # The position the fills booked is untouched.
    row = book.book.strategy_rows[next(iter(book.book.strategy_rows))]
    assert row.quantity == 10


@pytest.mark.parametrize("state", ["SUBMITTED", "PARTIALLY_FILLED", "INACTIVE", "PENDING_CANCEL"])
def test_an_order_that_has_not_ended_stays(state):
    """INACTIVE too: IB may still submit an inactive order (LEGAL allows INACTIVE -> SUBMITTED)."""
    book = ledger()
    record(book, status(state, T0, order_id="1", remaining=5), tick(T0 + 10 * DAY))
    assert book.orders.find("A1", "1").status is OrderStatus[state]


@pytest.mark.parametrize("state", ["FILLED", "CANCELLED", "REJECTED"])
def test_every_terminal_status_ends_an_order(state):
    book = ledger()
    record(book, status("SUBMITTED", T0, order_id="1", remaining=5))
    record(book, status(state, T0 + 1, order_id="1", remaining=0))
    record(book, tick(T0 + 1 + DAY + 1))
    assert book.orders.find("A1", "1") is None


def test_without_a_retention_ended_orders_stay():
    book = ledger(None)
    record(book, *filled_order("1", T0), tick(T0 + 100 * DAY))
    assert book.orders.find("A1", "1").status is OrderStatus.FILLED
    assert len(book.orders.retention) == 0  # nothing queued either


def test_a_corrected_terminal_status_keeps_the_order():
    """A correction (same status time, new content) that takes back FILLED revives the order:
    it stays until it ends anew, a retention after that."""
    book = ledger()
    record(book, status("SUBMITTED", T0, order_id="1", remaining=5))
    record(book, status("FILLED", T0 + 1, order_id="1", filled=5))
    record(book, tick(T0 + DAY // 2))
    record(book, status("PARTIALLY_FILLED", T0 + 1, order_id="1", filled=2, remaining=3))
    record(book, tick(T0 + 2 * DAY))
    assert book.orders.find("A1", "1").status is OrderStatus.PARTIALLY_FILLED
    record(book, status("FILLED", T0 + 2 * DAY + 1, order_id="1", filled=5))
    record(book, tick(T0 + 3 * DAY + 1))
    assert book.orders.find("A1", "1") is not None  # ended at the clock then, not at T0 + 1
    record(book, tick(T0 + 3 * DAY + 2))
    assert book.orders.find("A1", "1") is None


def test_a_late_status_or_fill_for_a_forgotten_order_starts_a_new_one():
    """As for an order never seen: the late status makes an order of what it says; a late fill
    books its position and cash as every fill does, and links to the new order."""
    book = ledger()
    record(book, deposit(10_000, at_ns=T0), *filled_order("1", T0), tick(T0 + 2 * DAY))
    cash = book.balances.of_account("A1")[0].cash
    record(book, order_fill("BUY", 1, 100, order_id="1", at_ns=T0 + 3))  # a late fill
    late = book.orders.find("A1", "1")
    assert (late.status, late.booked_quantity, late.history) == (None, 1, [])
    assert book.balances.of_account("A1")[0].cash == cash - 100
    record(book, status("FILLED", T0 + 2, order_id="1", filled=5))  # a late status
    assert book.orders.find("A1", "1").status is OrderStatus.FILLED
    row = book.book.strategy_rows[next(iter(book.book.strategy_rows))]
    assert row.quantity == 6
    record(book, tick(T0 + 4 * DAY + 1))
    assert book.orders.find("A1", "1") is None  # ended, and forgotten again


def test_spent_reservations_leave_after_the_retention():
    book = ledger()
    record(book, deposit(1000, at_ns=T0))
    record(book, reservation("used", 100, order_id="1"), reservation("freed", 50))
    record(book, reservation("refused", 10**6), reservation("held", 10))
    record(book, release("freed"))
    record(book, status("SUBMITTED", T0 + 1, order_id="1", side="BUY", remaining=1))
    record(book, order_fill("BUY", 1, 100, order_id="1", at_ns=T0 + 2))  # consumes "used"
    record(book, tick(T0 + 2 + DAY + 1))
    assert set(book.balances.reservations) == {("A1", "held")}
    assert book.balances.of_account("A1")[0].reserved == 10
    # A release of a forgotten reservation is refused as NOT_FOUND, saying why it may be.
    outcome = book.record(release("freed"))
    refusal = book.refusals[outcome.sequence]
    assert refusal.kind is RefusalKind.NOT_FOUND
    assert "kept for 1 day(s) of event time" in refusal.reason


def test_a_forgotten_reservation_is_answered_from_its_journaled_event():
    journal: dict[int, ExecutionEvent] = {}
    book = Ledger(retention_ns=DAY, journal=journal.get)

    def write(event: ExecutionEvent) -> int:
        outcome = book.admit(event)
        journal[outcome.sequence] = event
        book.apply(event, outcome.sequence)
        return outcome.sequence

    write(deposit(1000, at_ns=T0))
    made = reservation("r1", 100, order_id="7", strategy="S1")
    sequence = write(made)
    write(release("r1"))
    held = book.reservation("A1", "r1", sequence)
    assert (held.status, held.released) == (ReservationStatus.RELEASED, 100)
    write(tick(T0 + DAY + 1))
    assert ("A1", "r1") not in book.balances.reservations
    retry = book.admit(made)
    assert (retry.result, retry.sequence) == (Result.DUPLICATE, sequence)
    rebuilt = book.reservation("A1", "r1", retry.sequence)
    assert (rebuilt.amount, rebuilt.order_key, rebuilt.strategy_id, rebuilt.sequence) == (
        100, "id:7", "S1", sequence,
    )  # fmt: skip
    assert (rebuilt.status, rebuilt.remaining) == (ReservationStatus.RELEASED, 0)
    with pytest.raises(LookupError):
        book.reservation("A1", "r1", sequence + 1)  # not that reservation's event


def state(target: Ledger) -> LedgerState:
    """A checkpoint, but for the correctable fills (recovery reloads those from the journal)."""
    return dataclasses.replace(capture(target), corrections_latest_ns=[])


def long_day(orders: int, step_ns: int, start: int = 0) -> list[ExecutionEvent]:
    events: list[ExecutionEvent] = []
    for n in range(start, start + orders):
        at = T0 + n * step_ns
        events.append(reservation(f"r{n}", 100, order_id=str(n)))
        events.extend(filled_order(str(n), at, quantity=1))
    return events


def test_a_replay_from_a_checkpoint_before_the_eviction_point_ends_the_same():
    original = ledger()
    journal = record(original, deposit(10**9, at_ns=T0))
    first, then = long_day(40, DAY // 10), long_day(40, DAY // 10, start=40)
    journal += record(original, *first)
    restored = ledger()
    restore_checkpoint(restored, original, journal)
    assert state(restored) == state(original)
    assert restored.orders.find("A1", "39") is not None  # ended, leaves after the checkpoint
    for event in then:  # the orders of `first` leave along the way, in both
        outcome = original.record(event)
        assert restored.apply(event, outcome.sequence) == outcome.applied
    assert_same(restored, original)
    assert state(restored) == state(original)
    assert original.orders.find("A1", "39") is None
    assert ("A1", "r39") not in original.balances.reservations
    assert 0 < len(original.orders) < 20


def test_a_checkpoint_holds_only_what_is_kept():
    book = ledger()
    record(book, deposit(10**9, at_ns=T0), *long_day(50, DAY // 5))
    saved = capture(book)
    kept = {order.order_key for order in saved.orders}
    assert len(kept) == len(book.orders) < 10
    assert {key for _, (_, key) in saved.ended_orders} == kept
    assert len(saved.reservations) == len(book.balances.reservations) < 10
    assert saved.event_clock_ns == [book.clock_ns]


def test_what_is_kept_stays_bounded_over_a_long_run():
    """10,000 orders, each reserved, filled and ended, 1 s of event time apart, with a
    retention of 100 s: never more than about 100 orders or reservations are kept, through a
    hundred retentions' turnover (a cost flat in the run's length: 150 us an order at 5k and
    at 30k)."""
    book = ledger(100 * 10**9)
    record(book, deposit(10**9, at_ns=T0))
    most = 0
    for n in itertools.count():
        if n == 10_000:
            break
        at = T0 + n * 10**9
        for event in (
            reservation(f"r{n}", 100, order_id=str(n)),
            order_fill("BUY", 1, 100, order_id=str(n), at_ns=at),
            status("FILLED", at, order_id=str(n), filled=1, avg_price=100),
        ):
            book.apply(event, book.admit(event).sequence)
        most = max(most, len(book.orders), len(book.balances.reservations))
    assert most <= 102
    assert len(book.orders.retention) <= 102


def test_a_checkpoint_from_before_retention_queues_its_ended_orders_from_its_latest_time():
    """An older checkpoint has no event clock and no ends: its ended orders and reservations
    end at the latest order time it holds, and leave a retention later."""
    original = ledger(None)
    record(original, deposit(10**9, at_ns=T0), *long_day(5, DAY // 10))
    old = dataclasses.replace(capture(original), event_clock_ns=[], ended_orders=[],
                              ended_reservations=[])  # fmt: skip
    restored = ledger()
    restore(restored, capture_rows(original), old)
    latest = max(order.updated_at_ns for order in old.orders)
    assert restored.clock_ns == latest and len(restored.orders) == 5
    record(restored, tick(latest + DAY))
    assert len(restored.orders) == len(restored.balances.reservations) == 5
    record(restored, tick(latest + DAY + 1))
    assert len(restored.orders) == len(restored.balances.reservations) == 0
