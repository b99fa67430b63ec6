"""Cash balances and the reservations held against them, on their own."""

from __future__ import annotations

from decimal import Decimal

import pytest

from server.domain.balances import BalanceBook, BalanceKey, ReservationStatus
from server.domain.refusals import RefusalKind
from tests.domain.event_builders import release, reservation

USD = BalanceKey("A1", "USD")


def funded(amount: object = 1000, key: BalanceKey = USD) -> BalanceBook:
    book = BalanceBook()
    book.move_cash(key, Decimal(str(amount)), 1, 1)
    return book


def test_balance_key_names_its_parts_and_is_off_chain_by_default():
    key = BalanceKey("A1", "USDC", "eth")
    assert (key.account_id, key.currency, key.chain_id) == ("A1", "USDC", "eth")
    assert BalanceKey("A1", "USD").chain_id == ""
    assert BalanceKey("A1", "USD") == ("A1", "USD", "")


def test_move_cash_adds_up_and_keeps_the_latest_time():
    book = BalanceBook()
    book.move_cash(USD, Decimal("100.25"), 20, 1)
    balance = book.move_cash(USD, Decimal("-30.25"), 10, 2)
    assert balance.cash == 70
    assert balance.reserved == 0
    assert balance.available == 70
    assert balance.updated_at_ns == 20  # an older movement does not move the time back
    assert balance.last_sequence == 2
    assert book.get(USD) is balance
    assert book.get(BalanceKey("A1", "EUR")) is None


def test_balances_are_per_account_currency_and_chain_in_order():
    book = BalanceBook()
    for key in (
        BalanceKey("A1", "USDC", "sol"), BalanceKey("A1", "USD"), BalanceKey("A1", "USDC", "eth"),
        BalanceKey("A2", "EUR"),
    ):  # fmt: skip
        book.move_cash(key, Decimal(1), 1, 1)
    assert [b.key for b in book.of_account("A1")] == [
        ("A1", "USD", ""), ("A1", "USDC", "eth"), ("A1", "USDC", "sol"),
    ]  # fmt: skip
    assert book.accounts() == ["A1", "A2"]
    assert len(book.all()) == 4
    assert book.of_account("nobody") == []


def test_a_reservation_holds_part_of_the_available_cash():
    book = funded(1000)
    refusal, balance = book.reserve(reservation("r1", 400, strategy="S1"), "id:7", 2)
    assert refusal is None
    assert (balance.cash, balance.reserved, balance.available) == (1000, 400, 600)
    assert balance.last_sequence == 2
    held = book.reservations[("A1", "r1")]
    assert held.status is ReservationStatus.ACTIVE
    assert (held.amount, held.remaining, held.consumed, held.released) == (400, 400, 0, 0)
    assert (held.order_key, held.strategy_id, held.sequence) == ("id:7", "S1", 2)


def test_reserving_more_than_is_available_is_refused_naming_both_figures():
    book = funded(1000)
    book.reserve(reservation("r1", 400), "", 2)
    refusal, balance = book.reserve(reservation("r2", "600.5"), "id:8", 3)
    assert balance is None
    assert refusal.kind is RefusalKind.PRECONDITION
    assert refusal.field == "amount"
    assert "600.5 USD" in refusal.reason
    assert "600 USD" in refusal.reason
    assert "'A1'" in refusal.reason
    assert book.reservations[("A1", "r2")].status is ReservationStatus.REFUSED
    assert book.reservations[("A1", "r2")].remaining == 0
    assert book.get(USD).reserved == 400  # nothing more held
    # Exactly what is available is fine.
    assert book.reserve(reservation("r3", 600), "", 4)[0] is None
    assert book.get(USD).available == 0


def test_a_refusal_on_a_chain_names_the_chain():
    key = BalanceKey("A1", "USDC", "eth")
    book = funded(5, key)
    refusal, _ = book.reserve(reservation("r1", 6, currency="USDC", chain="eth"), "", 2)
    assert "on chain eth" in refusal.reason
    # The same currency off-chain holds nothing.
    refusal, _ = book.reserve(reservation("r2", 1, currency="USDC"), "", 3)
    assert refusal is not None


def test_release_gives_back_part_then_all():
    book = funded(1000)
    book.reserve(reservation("r1", 400), "id:7", 2)
    refusal, balance = book.release(release("r1", 150), 3)
    assert refusal is None
    assert (balance.reserved, balance.available) == (250, 750)
    held = book.reservations[("A1", "r1")]
    assert held.status is ReservationStatus.ACTIVE
    assert (held.remaining, held.released) == (250, 150)
    refusal, balance = book.release(release("r1"), 4)  # no amount: all that is left
    assert refusal is None
    assert (balance.reserved, balance.available) == (0, 1000)
    assert held.status is ReservationStatus.RELEASED
    assert (held.remaining, held.released, held.consumed) == (0, 400, 0)
    assert balance.last_sequence == 4


def test_releasing_more_than_held_is_refused_and_changes_nothing():
    book = funded(1000)
    book.reserve(reservation("r1", 400), "", 2)
    refusal, balance = book.release(release("r1", "400.01"), 3)
    assert balance is None
    assert refusal.kind is RefusalKind.PRECONDITION
    assert refusal.field == "amount"
    assert "400.01" in refusal.reason
    assert "400 " in refusal.reason
    assert book.get(USD).reserved == 400
    assert book.reservations[("A1", "r1")].remaining == 400


@pytest.mark.parametrize("account", ["A1", "A2"])
def test_releasing_an_unknown_reservation_is_not_found(account):
    book = funded(1000)
    book.reserve(reservation("r1", 10), "", 2)
    refusal, balance = book.release(release("r-other" if account == "A1" else "r1",
                                            account=account), 3)  # fmt: skip
    assert balance is None
    assert refusal.kind is RefusalKind.NOT_FOUND
    assert refusal.field == "reservation_id"
    assert book.get(USD).reserved == 10


def test_releasing_a_refused_reservation_is_not_found():
    book = funded(1)
    book.reserve(reservation("r1", 10), "", 2)
    refusal, _ = book.release(release("r1"), 3)
    assert refusal.kind is RefusalKind.NOT_FOUND


def test_releasing_a_used_up_reservation_is_refused():
    book = funded(1000)
    book.reserve(reservation("r1", 10), "id:7", 2)
    book.consume("A1", ["id:7"], "USD", Decimal(10), 5, 3)
    refusal, balance = book.release(release("r1"), 4)
    assert balance is None
    assert refusal.kind is RefusalKind.PRECONDITION
    assert refusal.field == "reservation_id"
    assert "consumed" in refusal.reason


def test_consume_uses_the_orders_reservations_oldest_first():
    book = funded(1000)
    book.reserve(reservation("r1", 100), "id:7", 2)
    book.reserve(reservation("r2", 100), "id:7", 3)
    book.reserve(reservation("r3", 100), "id:8", 4)
    changed = book.consume("A1", ["id:7"], "USD", Decimal(150), 99, 5)
    assert [b.key for b in changed] == [USD, USD]
    first, second, other = (book.reservations[("A1", r)] for r in ("r1", "r2", "r3"))
    assert (first.status, first.consumed, first.remaining) == (ReservationStatus.CONSUMED, 100, 0)
    assert (second.status, second.consumed, second.remaining) == (ReservationStatus.ACTIVE, 50, 50)
    assert (other.consumed, other.remaining) == (0, 100)
    balance = book.get(USD)
    assert balance.reserved == 150  # 50 left of r2, 100 of r3
    assert balance.cash == 1000  # consuming moves no cash: the fill does
    assert (balance.updated_at_ns, balance.last_sequence) == (99, 5)
    assert second.updated_at_ns == 99


def test_consume_takes_no_more_than_is_held_and_skips_other_currencies():
    book = BalanceBook()
    book.move_cash(USD, Decimal(1000), 1, 1)
    book.move_cash(BalanceKey("A1", "EUR"), Decimal(1000), 1, 2)
    book.reserve(reservation("eur", 100, currency="EUR"), "id:7", 3)
    book.reserve(reservation("usd", 100), "id:7", 4)
    book.consume("A1", ["id:7"], "USD", Decimal(500), 5, 5)
    assert book.reservations[("A1", "usd")].consumed == 100
    assert book.reservations[("A1", "eur")].remaining == 100
    assert book.get(USD).reserved == 0
    assert book.get(BalanceKey("A1", "EUR")).reserved == 100
    # Nothing left for USD: another fill changes nothing.
    assert book.consume("A1", ["id:7"], "USD", Decimal(1), 6, 6) == []


def test_consume_of_an_order_without_reservations_changes_nothing():
    book = funded(1000)
    book.reserve(reservation("r1", 100), "id:7", 2)
    assert book.consume("A1", ["id:8"], "USD", Decimal(10), 3, 3) == []
    assert book.consume("A2", ["id:7"], "USD", Decimal(10), 3, 3) == []
    assert book.get(USD).reserved == 100


def test_release_order_gives_back_what_its_reservations_still_hold():
    book = funded(1000)
    book.reserve(reservation("r1", 100), "id:7", 2)
    book.reserve(reservation("r2", 50), "id:7", 3)
    book.reserve(reservation("keep", 10), "id:8", 4)
    book.consume("A1", ["id:7"], "USD", Decimal(120), 5, 5)
    changed = book.release_order("A1", "id:7", 6, 6)
    assert [b.key for b in changed] == [USD]  # only r2 was still held
    r1, r2 = book.reservations[("A1", "r1")], book.reservations[("A1", "r2")]
    assert r1.status is ReservationStatus.CONSUMED
    assert (r2.status, r2.consumed, r2.released, r2.remaining) == (
        ReservationStatus.RELEASED, 20, 30, 0,
    )  # fmt: skip
    assert book.get(USD).reserved == 10
    assert book.release_order("A1", "id:7", 7, 7) == []  # nothing left to give back


def test_copies_are_detached():
    book = funded(1000)
    book.reserve(reservation("r1", 100), "id:7", 2)
    balance = book.get(USD).copy()
    held = book.reservations[("A1", "r1")].copy()
    book.consume("A1", ["id:7"], "USD", Decimal(100), 3, 3)
    assert balance.reserved == 100
    assert held.remaining == 100
    assert held.status is ReservationStatus.ACTIVE


def test_restore_rebuilds_balances_and_the_active_reservations_of_each_order():
    book = funded(1000)
    book.reserve(reservation("r1", 100), "id:7", 2)
    book.reserve(reservation("r2", 5000), "id:7", 3)  # refused
    book.reserve(reservation("r3", 40), "id:7", 4)
    book.consume("A1", ["id:7"], "USD", Decimal(100), 5, 5)  # uses up r1
    restored = BalanceBook()
    restored.restore([b.copy() for b in book.all()], [r.copy() for r in book.reservations.values()])
    assert restored.all() == book.all()
    assert restored.reservations == book.reservations
    # Only r3 is still held for the order: a fill consumes it, not the refused or used-up ones.
    restored.consume("A1", ["id:7"], "USD", Decimal(30), 6, 6)
    assert restored.reservations[("A1", "r3")].remaining == 10
    assert restored.reservations[("A1", "r2")].consumed == 0
    assert restored.get(USD).reserved == 10
