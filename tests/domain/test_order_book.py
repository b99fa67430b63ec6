"""The order book: each order's state is the fold of its status history."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest

from server.domain.events import OrderStatus, Side
from server.domain.orders import LEGAL, TERMINAL, WORKING, OrderBook, order_keys
from tests.domain.event_builders import order_fill, status

S = OrderStatus


class Book:
    """An OrderBook that numbers what it is given, like the ledger does."""

    def __init__(self) -> None:
        self.orders = OrderBook()
        self._sequence = itertools.count(1)

    def status(self, state: str, at_ns: int, **kwargs):
        return self.orders.apply_status(status(state, at_ns, **kwargs), next(self._sequence))

    def fill(self, side: str, quantity: object, price: object = 100, **kwargs):
        return self.orders.link_fill(
            order_fill(side, quantity, price, **kwargs), next(self._sequence)
        )


def test_order_keys_prefer_the_broker_id_then_the_ref():
    assert order_keys("7", "r1") == ["id:7", "ref:r1"]
    assert order_keys("", "r1") == ["ref:r1"]
    assert order_keys("7", "") == ["id:7"]
    assert order_keys("", "") == []


def test_a_first_status_creates_the_order_with_its_details():
    book = Book()
    order, transition = book.status(
        "SUBMITTED", 5, order_id="7", order_ref="r1", strategy="S1", instrument="AAPL",
        side="BUY", remaining=10, perm_id="p9",
    )  # fmt: skip
    assert order.order_key == "id:7"
    assert (order.order_id, order.order_ref, order.perm_id) == ("7", "r1", "p9")
    assert (order.strategy_id, order.instrument_id, order.side) == ("S1", "AAPL", Side.BUY)
    assert order.status is S.SUBMITTED
    assert order.remaining_quantity == 10
    assert (order.created_at_ns, order.updated_at_ns, order.last_sequence) == (5, 5, 1)
    assert order.is_open
    assert transition.sequence == 1
    assert transition.flag == ""
    assert not transition.replaced
    assert order.history == [transition]
    assert book.orders.find("A1", order_id="7") is order
    assert book.orders.find("A1", order_ref="r1") is order
    assert book.orders.find("A2", order_id="7") is None
    assert len(book.orders) == 1


def test_an_order_moves_through_its_lifecycle():
    book = Book()
    book.status("PENDING_SUBMIT", 1, order_id="7", remaining=10)
    book.status("SUBMITTED", 2, order_id="7", remaining=10)
    book.status("PARTIALLY_FILLED", 3, order_id="7", filled=4, remaining=6, avg_price="100.5")
    order, last = book.status("FILLED", 4, order_id="7", filled=10, remaining=0)
    assert order.status is S.FILLED
    assert (order.filled_quantity, order.remaining_quantity) == (10, 0)
    assert order.avg_fill_price == Decimal("100.5")  # kept: the FILLED update did not give one
    assert not order.is_open
    assert [t.update.status for t in order.history] == [
        S.PENDING_SUBMIT, S.SUBMITTED, S.PARTIALLY_FILLED, S.FILLED,
    ]  # fmt: skip
    assert all(t.flag == "" for t in order.history)
    assert order.updated_at_ns == 4
    assert order.created_at_ns == 1
    assert last.sequence == order.last_sequence == 4


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("SUBMITTED", "PARTIALLY_FILLED"),
        ("PARTIALLY_FILLED", "SUBMITTED"),  # IB: a partly filled working order is Submitted
        ("PENDING_CANCEL", "FILLED"),  # the cancel lost the race to a fill
        ("PENDING_CANCEL", "SUBMITTED"),  # the cancel was refused
        ("PRE_SUBMITTED", "REJECTED"),
        ("INACTIVE", "SUBMITTED"),
        ("FILLED", "FILLED"),  # a repeated report
    ],
)
def test_legal_transitions_move_the_order(before, after):
    assert S[after] in LEGAL[S[before]]
    book = Book()
    book.status(before, 1, order_id="7")
    order, transition = book.status(after, 2, order_id="7")
    assert transition.flag == ""
    assert order.status is S[after]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("CANCELLED", "FILLED"),
        ("FILLED", "CANCELLED"),
        ("REJECTED", "SUBMITTED"),
        ("FILLED", "PARTIALLY_FILLED"),
        ("PARTIALLY_FILLED", "REJECTED"),
        ("SUBMITTED", "PENDING_SUBMIT"),
        ("INACTIVE", "FILLED"),
    ],
)
def test_illegal_transitions_are_kept_flagged_and_do_not_move_the_order(before, after):
    assert S[after] not in LEGAL[S[before]]
    book = Book()
    book.status(before, 1, order_id="7", filled=1, remaining=1)
    order, transition = book.status(after, 2, order_id="7", filled=2, remaining=0)
    assert transition.flag == f"illegal transition {before} -> {after}"
    assert transition in order.history
    assert len(order.history) == 2
    assert order.status is S[before]
    assert (order.filled_quantity, order.remaining_quantity) == (1, 1)
    assert order.updated_at_ns == 1


def test_terminal_states_accept_only_themselves_and_every_state_has_a_row():
    assert set(LEGAL) == set(OrderStatus)
    for state in TERMINAL:
        assert LEGAL[state] == {state}
    for state in WORKING:
        assert S.CANCELLED in LEGAL[state]


@pytest.mark.parametrize(("before", "after"), list(itertools.product(OrderStatus, repeat=2)))
def test_every_pair_moves_the_order_exactly_when_the_table_allows(before, after):
    book = Book()
    book.status(before.name, 1, order_id="7")
    order, transition = book.status(after.name, 2, order_id="7")
    legal = after in LEGAL[before]
    assert (transition.flag == "") is legal
    assert order.status is (after if legal else before)


def test_filled_quantity_going_back_is_flagged_out_of_order():
    book = Book()
    book.status("SUBMITTED", 1, order_id="7", remaining=10)
    book.status("PARTIALLY_FILLED", 2, order_id="7", filled=6, remaining=4)
    order, transition = book.status("PARTIALLY_FILLED", 3, order_id="7", filled=4, remaining=6)
    assert transition.flag == "out of order: filled quantity goes back from 6 to 4"
    assert (order.filled_quantity, order.remaining_quantity) == (6, 4)
    assert order.updated_at_ns == 2
    assert len(order.history) == 3


def test_a_late_status_takes_its_place_in_time_and_does_not_move_the_order():
    book = Book()
    book.status("SUBMITTED", 1, order_id="7", remaining=10)
    book.status("FILLED", 3, order_id="7", filled=10)
    order, late = book.status("CANCELLED", 2, order_id="7", filled=0, remaining=10)
    assert late.late
    assert late.flag == ""  # legal at its place: not an error
    assert [t.update.status for t in order.history] == [S.SUBMITTED, S.CANCELLED, S.FILLED]
    assert [t.late for t in order.history] == [False, True, False]
    assert all(t.flag == "" for t in order.history)
    assert order.status is S.FILLED
    assert (order.filled_quantity, order.remaining_quantity) == (10, 0)
    assert order.updated_at_ns == 3
    assert order.last_sequence == 3


def test_a_late_partially_filled_after_filled_does_not_move_the_order_back():
    book = Book()
    book.status("SUBMITTED", 1, order_id="7", remaining=10)
    book.status("FILLED", 4, order_id="7", filled=10, avg_price="101")
    order, late = book.status(
        "PARTIALLY_FILLED", 3, order_id="7", filled=4, remaining=6, avg_price="100"
    )
    assert (late.late, late.flag) == (True, "")
    assert [t.update.timestamp_ns for t in order.history] == [1, 3, 4]
    assert [t.sequence for t in order.history] == [1, 3, 2]
    assert order.status is S.FILLED
    assert not order.is_open
    assert (order.filled_quantity, order.remaining_quantity) == (10, 0)
    assert order.avg_fill_price == Decimal("101")
    assert order.updated_at_ns == 4
    assert list(book.orders.open_orders) == []


def test_a_late_status_filling_more_raises_the_filled_quantity_but_not_a_terminal_status():
    # A report lost and recovered: 5 were filled at time 3, the cancel at 4 said 3. Fills
    # are never undone, so the trader's exposure is 5; the order stays cancelled.
    book = Book()
    book.status("SUBMITTED", 1, order_id="7", remaining=10)
    book.status("PARTIALLY_FILLED", 2, order_id="7", filled=3, remaining=7, avg_price="100")
    book.status("CANCELLED", 4, order_id="7", filled=3, remaining=0)
    order, late = book.status(
        "PARTIALLY_FILLED", 3, order_id="7", filled=5, remaining=5, avg_price="100.4"
    )
    assert (late.late, late.flag) == (True, "")
    assert order.status is S.CANCELLED
    assert (order.filled_quantity, order.remaining_quantity) == (5, 0)
    assert order.avg_fill_price == Decimal("100.4")
    assert order.updated_at_ns == 4
    assert all(t.flag == "" for t in order.history)


def test_a_late_status_filling_more_shrinks_a_working_orders_remaining_quantity():
    book = Book()
    book.status("SUBMITTED", 1, order_id="7", remaining=10)
    book.status("PARTIALLY_FILLED", 2, order_id="7", filled=2, remaining=8)
    book.status("PENDING_CANCEL", 5, order_id="7", filled=2, remaining=8)
    order, late = book.status("PARTIALLY_FILLED", 3, order_id="7", filled=6, remaining=4)
    assert late.late
    assert order.status is S.PENDING_CANCEL
    assert (order.filled_quantity, order.remaining_quantity) == (6, 4)
    assert order.is_open


def test_a_late_status_filling_less_changes_nothing():
    book = Book()
    book.status("SUBMITTED", 1, order_id="7", remaining=10)
    book.status("PARTIALLY_FILLED", 4, order_id="7", filled=6, remaining=4)
    order, late = book.status("PARTIALLY_FILLED", 3, order_id="7", filled=2, remaining=8)
    assert (late.late, late.flag) == (True, "")
    assert (order.status, order.filled_quantity, order.remaining_quantity) == (
        S.PARTIALLY_FILLED, 6, 4,
    )  # fmt: skip


def test_a_late_status_illegal_at_its_place_is_flagged_as_well_as_late():
    book = Book()
    book.status("CANCELLED", 2, order_id="7", remaining=10)
    book.status("CANCELLED", 5, order_id="7", remaining=10)
    order, late = book.status("FILLED", 3, order_id="7", filled=10)
    assert late.late
    assert late.flag == "illegal transition CANCELLED -> FILLED"
    assert order.status is S.CANCELLED
    assert order.filled_quantity == 0  # a flagged status raises nothing


def test_a_late_status_only_fills_in_details_the_order_lacks():
    book = Book()
    book.status("SUBMITTED", 5, order_id="7", strategy="S1", remaining=10)
    order, _ = book.status(
        "PENDING_SUBMIT", 1, order_id="7", strategy="S0", instrument="AAPL", side="BUY",
        perm_id="p1", remaining=10,
    )  # fmt: skip
    assert (order.strategy_id, order.instrument_id, order.side, order.perm_id) == (
        "S1", "AAPL", Side.BUY, "p1",
    )  # fmt: skip
    assert order.status is S.SUBMITTED
    assert order.created_at_ns == 1
    assert order.updated_at_ns == 5


def test_a_status_on_time_after_a_late_one_is_not_late():
    book = Book()
    book.status("SUBMITTED", 1, order_id="7", remaining=10)
    book.status("PARTIALLY_FILLED", 5, order_id="7", filled=4, remaining=6)
    book.status("PARTIALLY_FILLED", 3, order_id="7", filled=2, remaining=8)  # late
    order, filled = book.status("FILLED", 6, order_id="7", filled=10)
    assert not filled.late
    assert [t.late for t in order.history] == [False, True, False, False]
    assert order.status is S.FILLED


STATUSES = [
    ("SUBMITTED", 1, 0, 10), ("PARTIALLY_FILLED", 2, 3, 7), ("PENDING_CANCEL", 3, 3, 7),
    ("PARTIALLY_FILLED", 4, 5, 5), ("CANCELLED", 5, 5, 0),
]  # fmt: skip


@pytest.mark.parametrize("arrival", list(itertools.permutations(range(len(STATUSES)))))
def test_any_arrival_order_gives_a_time_ordered_history_and_a_fold_that_replays_the_same(
    arrival,
):
    updates = [
        status(state, at_ns, order_id="7", filled=filled, remaining=remaining)
        for state, at_ns, filled, remaining in STATUSES
    ]
    book = OrderBook()
    for sequence, i in enumerate(arrival, 1):
        order, _ = book.apply_status(updates[i], sequence)
    assert [t.update.timestamp_ns for t in order.history] == [1, 2, 3, 4, 5]
    # Late statuses do not move the status: it is that of the on-time ones alone.
    on_time = OrderBook()
    for t in sorted((t for t in order.history if not t.late), key=lambda t: t.sequence):
        alone, _ = on_time.apply_status(t.update, t.sequence)
    assert (order.status, order.updated_at_ns) == (alone.status, alone.updated_at_ns)
    # ... and the filled quantity is the most any status that applied says.
    assert order.filled_quantity == max(t.update.filled_quantity for t in order.history
                                        if not t.flag)  # fmt: skip
    # Refolding the same transitions in any order (a checkpoint, the orders view) gives
    # the same order, field for field; so does replaying the same sequence.
    again = order.copy()
    OrderBook.fold(again, list(reversed(order.history)))
    assert again == order
    replayed = OrderBook()
    for sequence, i in enumerate(arrival, 1):
        same, _ = replayed.apply_status(updates[i], sequence)
    assert same == order


def test_a_correction_replaces_the_transition_with_the_same_timestamp_and_refolds():
    book = Book()
    book.status("SUBMITTED", 1, order_id="7", remaining=10)
    _, original = book.status(
        "PARTIALLY_FILLED", 2, order_id="7", filled=3, remaining=7, update_id="u-orig"
    )
    book.status("PARTIALLY_FILLED", 3, order_id="7", filled=5, remaining=5)
    # The broker corrects its report at time 2: 6 were filled then, not 3. The transition at 3
    # (5 filled) now goes back from 6, so refolding flags it.
    order, correction = book.status(
        "PARTIALLY_FILLED", 2, order_id="7", filled=6, remaining=4, update_id="u-fix"
    )
    assert correction.corrects == "u-orig"
    assert correction.sequence == 4
    assert len(order.history) == 3
    assert original not in order.history
    assert [t.update.update_id for t in order.history][1] == "u-fix"
    assert order.history[2].flag == "out of order: filled quantity goes back from 6 to 5"
    assert (order.filled_quantity, order.remaining_quantity) == (6, 4)
    assert order.updated_at_ns == 2
    assert order.last_sequence == 4


def test_a_correction_can_make_a_flagged_transition_legal_again():
    book = Book()
    book.status("SUBMITTED", 1, order_id="7", remaining=10)
    book.status("CANCELLED", 2, order_id="7", remaining=10, update_id="u-cancel")
    order, filled = book.status("FILLED", 3, order_id="7", filled=10)
    assert filled.flag.startswith("illegal transition CANCELLED -> FILLED")
    assert order.status is S.CANCELLED
    # The "cancel" was really a pending cancel that lost the race to the fill.
    order, correction = book.status("PENDING_CANCEL", 2, order_id="7", remaining=10)
    assert correction.corrects == "u-cancel"
    assert [t.flag for t in order.history] == ["", "", ""]
    assert order.status is S.FILLED
    assert order.filled_quantity == 10
    assert not order.is_open


def test_a_working_order_whose_quantity_changes_is_marked_replaced():
    book = Book()
    _, first = book.status("SUBMITTED", 1, order_id="7", remaining=10)
    _, partial = book.status("PARTIALLY_FILLED", 2, order_id="7", filled=4, remaining=6)
    _, modified = book.status("SUBMITTED", 3, order_id="7", filled=4, remaining=11)
    order, done = book.status("FILLED", 4, order_id="7", filled=15, remaining=0)
    assert not first.replaced  # nothing before it
    assert not partial.replaced  # 0 + 10 == 4 + 6
    assert modified.replaced  # 4 + 6 -> 4 + 11
    assert not done.replaced  # only while working
    assert [t.replaced for t in order.history] == [False, False, True, False]


def test_a_flagged_transition_is_never_marked_replaced():
    book = Book()
    book.status("SUBMITTED", 1, order_id="7", remaining=10)
    _, back = book.status("SUBMITTED", 2, order_id="7", filled=0, remaining=10)
    _, bad = book.status("PENDING_SUBMIT", 3, order_id="7", remaining=20)
    assert not back.replaced
    assert bad.flag
    assert not bad.replaced


def test_open_orders_index_holds_working_orders_only():
    book = Book()
    book.status("SUBMITTED", 1, order_id="1", strategy="S1", remaining=1)
    book.status("PENDING_CANCEL", 1, order_id="2", strategy="S2", remaining=1)
    book.status("SUBMITTED", 1, order_id="3", strategy="S1", account="A2", remaining=1)
    book.status("INACTIVE", 1, order_id="4", strategy="S1")
    book.status("FILLED", 1, order_id="5", strategy="S1", filled=1)
    book.fill("BUY", 1, order_id="6")  # known from a fill only: status unknown
    assert list(book.orders.open_orders) == [
        ("A1", "S1", "id:1"), ("A1", "S2", "id:2"), ("A2", "S1", "id:3"),
    ]  # fmt: skip
    book.status("CANCELLED", 2, order_id="2", remaining=1)
    book.status("FILLED", 2, order_id="1", filled=1)
    assert list(book.orders.open_orders) == [("A2", "S1", "id:3")]
    assert len(book.orders) == 6


def test_open_orders_follow_a_strategy_learnt_later():
    book = Book()
    book.status("SUBMITTED", 1, order_id="1", remaining=1)
    assert list(book.orders.open_orders) == [("A1", "", "id:1")]
    book.status("SUBMITTED", 2, order_id="1", strategy="S1", remaining=1)
    assert list(book.orders.open_orders) == [("A1", "S1", "id:1")]


def test_fills_link_to_their_order_and_the_broker_quantity_is_compared():
    book = Book()
    book.status("SUBMITTED", 1, order_id="7", remaining=10)
    order = book.fill("BUY", 4, order_id="7")
    assert order is book.orders.find("A1", order_id="7")
    assert (order.booked_quantity, order.booked_fills) == (4, 1)
    assert order.quantity_mismatch == -4  # the broker has not reported it yet
    book.status("PARTIALLY_FILLED", 2, order_id="7", filled=4, remaining=6)
    assert order.quantity_mismatch == 0
    book.status("FILLED", 3, order_id="7", filled=10)
    assert order.quantity_mismatch == 6  # the broker says 10, 4 booked
    book.fill("BUY", "5.5", order_id="7")
    assert order.booked_quantity == Decimal("9.5")
    assert order.booked_fills == 2
    assert order.quantity_mismatch == Decimal("0.5")
    assert order.last_sequence == 5


def test_a_fill_without_an_order_reference_links_nothing():
    book = Book()
    assert book.fill("BUY", 1) is None
    assert len(book.orders) == 0


def test_a_fill_before_any_status_creates_the_order_with_unknown_status():
    book = Book()
    order = book.fill("SELL", 3, order_ref="r1", strategy="S2", instrument="MSFT", at_ns=50)
    assert order.order_key == "ref:r1"
    assert order.status is None
    assert not order.is_open
    assert (order.strategy_id, order.instrument_id, order.side) == ("S2", "MSFT", Side.SELL)
    assert order.created_at_ns == 50
    assert order.booked_quantity == 3
    assert not book.orders.open_orders
    # The first status report: the order opens, filed under its ref, and learns its id.
    order_again, _ = book.status("SUBMITTED", 40, order_id="7", order_ref="r1", filled=3,
                                 remaining=2)  # fmt: skip
    assert order_again is order
    assert order.order_id == "7"
    assert order.order_key == "ref:r1"
    assert order.created_at_ns == 40  # the earliest time known
    assert order.quantity_mismatch == 0
    assert list(book.orders.open_orders) == [("A1", "S2", "ref:r1")]
    assert book.orders.find("A1", order_id="7") is order


def test_a_ref_only_order_learns_its_id_and_fills_by_id_link_to_it():
    book = Book()
    order, _ = book.status("PENDING_SUBMIT", 1, order_ref="r1", remaining=10)
    assert order.order_key == "ref:r1"
    assert order.order_id == ""
    book.status("SUBMITTED", 2, order_id="7", order_ref="r1", remaining=10)
    assert order.order_id == "7"
    assert book.fill("BUY", 2, order_id="7") is order
    same, _ = book.status("PARTIALLY_FILLED", 3, order_id="7", filled=2, remaining=8)
    assert same is order
    assert len(book.orders) == 1
    assert sorted(book.orders.aliases()) == [("A1", "id:7", "ref:r1"), ("A1", "ref:r1", "ref:r1")]


def test_a_reused_ref_names_the_latest_order():
    book = Book()
    first, _ = book.status("SUBMITTED", 1, order_id="7", order_ref="r1", remaining=1)
    second, _ = book.status("SUBMITTED", 2, order_id="8", order_ref="r1", remaining=1)
    assert second is not first
    assert second.order_key == "id:8"
    assert book.orders.find("A1", order_ref="r1") is second
    assert book.orders.find("A1", order_id="7") is first
    # A fill naming the old id and the ref goes to the old order.
    assert book.fill("BUY", 1, order_id="7", order_ref="r1") is first
    assert len(book.orders) == 2


def test_orders_are_per_account():
    book = Book()
    a1, _ = book.status("SUBMITTED", 1, order_id="7", remaining=1)
    a2, _ = book.status("SUBMITTED", 1, order_id="7", account="A2", remaining=1)
    assert a1 is not a2
    assert book.orders.find("A1", order_id="7") is a1
    assert book.orders.find("A2", order_id="7") is a2


def test_an_order_copy_is_detached_from_later_changes():
    book = Book()
    order, _ = book.status("SUBMITTED", 1, order_id="7", remaining=10)
    snapshot = order.copy()
    book.status("FILLED", 2, order_id="7", filled=10)
    book.fill("BUY", 10, order_id="7")
    assert snapshot.status is S.SUBMITTED
    assert snapshot.booked_quantity == 0
    assert len(snapshot.history) == 1
    assert len(order.history) == 2


def test_an_orders_copy_carries_every_field():
    """Order.copy is written out field by field (it is made per fill): a field added later
    must not be lost."""
    import dataclasses

    from server.domain.orders import Order

    values = {
        f.name: (f"v-{f.name}" if f.type == "str" else getattr(Order("A", "k"), f.name))
        for f in dataclasses.fields(Order)
    }
    values.update(filled_quantity=Decimal(3), booked_fills=2, last_sequence=9, history=[])
    order = Order(**values)
    copied = order.copy()
    assert copied == order and copied is not order
    assert {f.name for f in dataclasses.fields(Order)} <= set(Order.copy.__code__.co_names)
