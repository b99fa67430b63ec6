"""The ledger applying every kind of event: cash, reservations, orders and definitions."""

from __future__ import annotations

from decimal import Decimal

import pytest

from server.domain.balances import BalanceKey, ReservationStatus
from server.domain.events import OrderStatus
from server.domain.instruments import InstrumentRegistry
from server.domain.ledger import Ledger, Result
from server.domain.position import PositionKey
from server.domain.refusals import RefusalKind
from tests.domain.builders import fill
from tests.domain.event_builders import (
    deposit,
    instrument,
    order_fill,
    paper_account,
    release,
    reservation,
    status,
)

USD = BalanceKey("A1", "USD")
EUR = BalanceKey("A1", "EUR")


def cash(ledger: Ledger, key: BalanceKey = USD) -> Decimal:
    balance = ledger.balances.get(key)
    return balance.cash if balance else Decimal(0)


def reserved(ledger: Ledger, key: BalanceKey = USD) -> Decimal:
    balance = ledger.balances.get(key)
    return balance.reserved if balance else Decimal(0)


def held(ledger: Ledger, reservation_id: str, account: str = "A1"):
    return ledger.balances.reservations[(account, reservation_id)]


# -- cash ------------------------------------------------------------------------------------


def test_a_buy_pays_price_times_quantity_and_the_commission():
    ledger = Ledger()
    outcome = ledger.record(fill("BUY", 10, 100, commission=1))
    assert cash(ledger) == -1001
    assert [b.key for b in outcome.applied.balances] == [USD]
    assert outcome.applied.balances[0].cash == -1001
    assert outcome.applied.balances[0].last_sequence == 1


def test_a_sell_is_credited_less_its_commission():
    ledger = Ledger()
    ledger.record(fill("SELL", 4, "25.5", commission="0.5"))
    assert cash(ledger) == Decimal("101.5")


def test_a_commission_in_another_currency_debits_that_currency():
    ledger = Ledger()
    outcome = ledger.record(order_fill("BUY", 10, 100, commission=2, commission_currency="EUR"))
    assert cash(ledger) == -1000
    assert cash(ledger, EUR) == -2
    assert {b.key for b in outcome.applied.balances} == {USD, EUR}


def test_a_commission_named_in_the_instruments_currency_is_taken_from_the_proceeds():
    ledger = Ledger()
    ledger.record(order_fill("SELL", 1, 100, commission=1, commission_currency="USD"))
    assert cash(ledger) == 99
    assert ledger.balances.get(EUR) is None


def test_deposits_and_withdrawals_move_cash_per_currency_and_chain():
    ledger = Ledger()
    ledger.record(deposit(1000))
    ledger.record(deposit(-250))
    ledger.record(deposit(5, currency="USDC", chain="eth"))
    assert cash(ledger) == 750
    assert cash(ledger, BalanceKey("A1", "USDC", "eth")) == 5
    assert ledger.balances.get(BalanceKey("A1", "USDC")) is None


def test_a_fill_in_an_instruments_own_currency_moves_that_currency():
    ledger = Ledger()
    ledger.record(instrument("SAP", "EUR"))
    ledger.record(fill("BUY", 2, 150, instrument="SAP", commission=1))
    assert cash(ledger, EUR) == -301
    assert ledger.balances.get(USD) is None


# -- reservations ----------------------------------------------------------------------------


def test_a_reservation_is_consumed_by_its_orders_buy_and_the_rest_released_when_it_ends():
    ledger = Ledger()
    ledger.record(deposit(5000))
    ledger.record(reservation("r1", 1100, order_id="7"))
    assert (cash(ledger), reserved(ledger)) == (5000, 1100)
    ledger.record(status("SUBMITTED", 10, order_id="7", remaining=10))
    outcome = ledger.record(order_fill("BUY", 10, 100, commission=1, order_id="7"))
    assert (cash(ledger), reserved(ledger)) == (3999, 99)
    assert outcome.applied.order.booked_quantity == 10
    r1 = held(ledger, "r1")
    assert (r1.status, r1.consumed, r1.remaining) == (ReservationStatus.ACTIVE, 1001, 99)
    outcome = ledger.record(status("FILLED", 20, order_id="7", filled=10))
    assert (cash(ledger), reserved(ledger)) == (3999, 0)
    assert (r1.status, r1.consumed, r1.released, r1.remaining) == (
        ReservationStatus.RELEASED, 1001, 99, 0,
    )  # fmt: skip
    assert [b.reserved for b in outcome.applied.balances] == [0]
    assert outcome.applied.order.status is OrderStatus.FILLED


@pytest.mark.parametrize("ending", ["CANCELLED", "REJECTED"])
def test_an_order_that_ends_unfilled_releases_all_it_reserved(ending):
    ledger = Ledger()
    ledger.record(deposit(5000))
    ledger.record(reservation("r1", 1000, order_ref="r-7"))
    ledger.record(status("SUBMITTED", 10, order_ref="r-7", remaining=10))
    assert reserved(ledger) == 1000
    ledger.record(status(ending, 20, order_ref="r-7", remaining=10))
    assert reserved(ledger) == 0
    assert held(ledger, "r1").status is ReservationStatus.RELEASED


def test_a_working_status_keeps_the_reservation():
    ledger = Ledger()
    ledger.record(deposit(5000))
    ledger.record(reservation("r1", 1000, order_id="7"))
    ledger.record(status("PARTIALLY_FILLED", 10, order_id="7", filled=1, remaining=9))
    ledger.record(status("PENDING_CANCEL", 11, order_id="7", filled=1, remaining=9))
    assert reserved(ledger) == 1000


def test_a_sell_does_not_consume_a_reservation():
    ledger = Ledger()
    ledger.record(deposit(5000))
    ledger.record(reservation("r1", 1000, order_id="7"))
    ledger.record(order_fill("SELL", 1, 100, order_id="7"))
    assert (cash(ledger), reserved(ledger)) == (5100, 1000)


def test_a_buy_of_another_order_does_not_consume_the_reservation():
    ledger = Ledger()
    ledger.record(deposit(5000))
    ledger.record(reservation("r1", 1000, order_id="7"))
    ledger.record(order_fill("BUY", 1, 100, order_id="8"))
    ledger.record(fill("BUY", 1, 100))  # no order at all
    assert (cash(ledger), reserved(ledger)) == (4800, 1000)


def test_a_reservation_larger_than_available_is_refused_by_the_ledger():
    ledger = Ledger()
    ledger.record(deposit(1000))
    ledger.record(reservation("r1", 800, order_id="7"))
    outcome = ledger.record(reservation("r2", 300, order_id="8"))
    assert outcome.result is Result.ACCEPTED  # journaled, but refused
    refusal = outcome.applied.refusal
    assert refusal.kind is RefusalKind.PRECONDITION
    assert refusal.field == "amount"
    assert "300 USD" in refusal.reason
    assert "200 USD" in refusal.reason
    assert ledger.refusals == {outcome.sequence: refusal}
    assert outcome.applied.balances == ()
    assert reserved(ledger) == 800


def test_explicit_releases_through_the_ledger():
    ledger = Ledger()
    ledger.record(deposit(1000))
    ledger.record(reservation("r1", 500))
    partial = ledger.record(release("r1", 200))
    assert partial.applied.refusal is None
    assert reserved(ledger) == 300
    rest = ledger.record(release("r1"))
    assert rest.applied.balances[0].reserved == 0
    unknown = ledger.record(release("nope"))
    assert unknown.applied.refusal.kind is RefusalKind.NOT_FOUND
    again = ledger.record(release("r1"))
    assert again.applied.refusal.kind is RefusalKind.PRECONDITION
    assert sorted(ledger.refusals) == [unknown.sequence, again.sequence]


def test_a_reservation_by_ref_is_consumed_by_a_fill_naming_the_ref():
    ledger = Ledger()
    ledger.record(deposit(5000))
    ledger.record(reservation("r1", 1000, order_ref="r-7"))
    ledger.record(order_fill("BUY", 5, 100, order_ref="r-7"))
    assert held(ledger, "r1").consumed == 500
    assert reserved(ledger) == 500


def test_a_fill_consumes_its_orders_reservation_whichever_key_it_names():
    ledger = Ledger()
    ledger.record(deposit(5000))
    ledger.record(reservation("r1", 1000, order_ref="r-7"))
    ledger.record(status("SUBMITTED", 10, order_id="7", order_ref="r-7", remaining=10))
    outcome = ledger.record(order_fill("BUY", 10, 100, order_id="7"))
    assert outcome.applied.order.order_ref == "r-7"  # the fill is linked to that order
    assert held(ledger, "r1").consumed == 1000
    assert (cash(ledger), reserved(ledger)) == (4000, 0)


def test_a_fill_consumes_no_more_than_its_cost_across_its_orders_reservations():
    ledger = Ledger()
    ledger.record(deposit(5000))
    ledger.record(reservation("by-id", 1000, order_id="7"))
    ledger.record(reservation("by-ref", 1000, order_ref="r-7"))
    ledger.record(order_fill("BUY", 10, 100, order_id="7", order_ref="r-7"))
    consumed = held(ledger, "by-id").consumed + held(ledger, "by-ref").consumed
    assert consumed == 1000
    assert reserved(ledger) == 1000


def test_a_commission_in_another_currency_is_not_consumed_from_the_reservation():
    ledger = Ledger()
    ledger.record(deposit(5000))
    ledger.record(reservation("r1", 1001, order_id="7"))
    ledger.record(order_fill("BUY", 10, 100, commission=1, commission_currency="EUR",
                             order_id="7"))  # fmt: skip
    assert cash(ledger) == 4000
    assert cash(ledger, EUR) == -1
    r1 = held(ledger, "r1")
    assert (r1.consumed, r1.remaining, r1.status) == (1000, 1, ReservationStatus.ACTIVE)


# -- orders through the ledger ---------------------------------------------------------------


def test_an_illegal_status_is_journaled_flagged_and_leaves_the_order_and_cash_alone():
    ledger = Ledger()
    ledger.record(deposit(5000))
    ledger.record(reservation("r1", 1000, order_id="7"))
    ledger.record(status("CANCELLED", 10, order_id="7", remaining=10))
    outcome = ledger.record(status("FILLED", 11, order_id="7", filled=10))
    assert outcome.result is Result.ACCEPTED
    assert outcome.applied.transition.flag == "illegal transition CANCELLED -> FILLED"
    assert outcome.applied.order.status is OrderStatus.CANCELLED
    assert ledger.refusals == {}  # a flag is not a refusal
    assert reserved(ledger) == 0


def test_the_applied_order_is_a_copy():
    ledger = Ledger()
    outcome = ledger.record(status("SUBMITTED", 1, order_id="7", remaining=1))
    ledger.record(status("FILLED", 2, order_id="7", filled=1))
    assert outcome.applied.order.status is OrderStatus.SUBMITTED
    assert ledger.orders.find("A1", "7").status is OrderStatus.FILLED


# -- accounts --------------------------------------------------------------------------------


def test_a_paper_account_is_funded_with_its_initial_cash_exactly_once():
    ledger = Ledger()
    first = ledger.record(paper_account("P1", "EUR", 100_000))
    assert first.result is Result.ACCEPTED
    key = BalanceKey("P1", "EUR")
    assert cash(ledger, key) == 100_000
    assert [b.key for b in first.applied.balances] == [key]
    assert ledger.record(paper_account("P1", "EUR", 100_000)).result is Result.DUPLICATE
    redefined = ledger.record(paper_account("P1", "EUR", 250_000))
    assert redefined.result is Result.ACCEPTED  # a new definition...
    assert redefined.applied.balances == ()  # ...that pays nothing
    assert cash(ledger, key) == 100_000
    assert ledger.accounts.get("P1").initial_cash == 250_000
    assert ledger.accounts.funded() == {"P1"}


def test_a_paper_account_without_initial_cash_is_funded_by_its_first_definition_with_some():
    ledger = Ledger()
    ledger.record(paper_account("P1", "USD", 0))
    assert ledger.balances.get(BalanceKey("P1", "USD")) is None
    ledger.record(paper_account("P1", "USD", 10))
    ledger.record(paper_account("P1", "USD", 20))
    assert cash(ledger, BalanceKey("P1", "USD")) == 10


def test_an_undefined_account_is_live_in_the_default_currency():
    ledger = Ledger()
    ledger.record(fill("BUY", 1, 1, account="X"))
    account = ledger.accounts.get("X")
    assert account.account_kind.name == "LIVE"
    assert account.base_currency == "USD"
    assert not ledger.accounts.is_defined("X")


# -- instruments -----------------------------------------------------------------------------


def test_an_unknown_instrument_is_registered_provisionally_with_multiplier_one():
    ledger = Ledger()
    ledger.record(fill("BUY", 3, 10, instrument="NEW"))
    registered = ledger.instruments.get("NEW")
    assert registered.provisional
    assert registered.multiplier == 1
    assert registered.currency == "USD"
    assert not ledger.knows("NEW")
    assert cash(ledger) == -30


def test_a_strict_registry_rejects_a_fill_for_an_unknown_instrument_at_admit():
    ledger = Ledger(InstrumentRegistry(strict=True))
    outcome = ledger.record(fill("BUY", 1, 10, instrument="NEW"))
    assert outcome.result is Result.REJECTED
    assert outcome.reason.startswith("instrument_id:")
    assert "'NEW'" in outcome.reason
    assert ledger.sequence == 0
    assert len(ledger.book) == 0
    assert ledger.instruments.get("NEW") is None
    assert ledger.balances.all() == []


def test_a_strict_registry_accepts_a_fill_after_its_instruments_definition():
    ledger = Ledger(InstrumentRegistry(strict=True))
    ledger.record(instrument("NEW"))
    outcome = ledger.record(fill("BUY", 1, 10, instrument="NEW"))
    assert outcome.result is Result.ACCEPTED
    assert outcome.sequence == 2


def test_a_strict_registry_accepts_a_fill_admitted_in_the_same_batch_as_its_definition():
    ledger = Ledger(InstrumentRegistry(strict=True))
    definition, trade = instrument("NEW", multiplier=10), fill("BUY", 1, 10, instrument="NEW")
    admitted = [ledger.admit(definition), ledger.admit(trade)]
    assert [o.result for o in admitted] == [Result.ACCEPTED, Result.ACCEPTED]
    for event, outcome in zip((definition, trade), admitted, strict=True):
        ledger.apply(event, outcome.sequence)
    assert ledger.instruments.get("NEW").multiplier == 10
    assert cash(ledger) == -100


def test_a_defined_instruments_multiplier_drives_cash_and_realized_pnl():
    ledger = Ledger()
    ledger.record(instrument("ES", multiplier=50))
    ledger.record(fill("BUY", 2, 4000, instrument="ES", commission="2.5"))
    assert cash(ledger) == Decimal("-400002.5")
    ledger.record(fill("SELL", 2, 4010, instrument="ES", commission="2.5"))
    assert cash(ledger) == 995
    row = ledger.book.get(PositionKey("A1", "S1", "ES"))
    assert row.multiplier == 50
    assert row.realized_pnl == 1000
    assert row.fees == 5
    assert row.quantity == 0


def test_redefining_the_multiplier_under_positions_is_refused_and_changes_nothing():
    ledger = Ledger()
    ledger.record(instrument("ES", multiplier=50))
    ledger.record(fill("BUY", 1, 4000, instrument="ES"))
    outcome = ledger.record(instrument("ES", multiplier=5))
    assert outcome.result is Result.ACCEPTED
    refusal = ledger.refusals[outcome.sequence]
    assert refusal is outcome.applied.refusal
    assert refusal.kind is RefusalKind.CONFLICT
    assert refusal.field == "multiplier"
    assert ledger.instruments.get("ES").multiplier == 50
    ledger.record(fill("SELL", 1, 4001, instrument="ES"))
    assert ledger.book.get(PositionKey("A1", "S1", "ES")).realized_pnl == 50
    assert cash(ledger) == 50


def test_redefining_the_currency_under_positions_is_refused():
    ledger = Ledger()
    ledger.record(fill("BUY", 1, 10, instrument="SAP"))  # provisional, in USD
    outcome = ledger.record(instrument("SAP", "EUR"))
    assert outcome.applied.refusal.field == "currency"
    assert ledger.instruments.get("SAP").provisional


def test_a_provisional_instrument_may_be_defined_as_it_was_booked():
    ledger = Ledger(InstrumentRegistry(strict=True))
    ledger.instruments.strict = False
    ledger.record(fill("BUY", 1, 10, instrument="NEW"))
    ledger.instruments.strict = True
    assert ledger.record(fill("BUY", 1, 10, instrument="NEW")).result is Result.REJECTED
    outcome = ledger.record(instrument("NEW", "USD", symbol="New Co"))
    assert outcome.applied.refusal is None
    assert not ledger.instruments.get("NEW").provisional
    assert ledger.knows("NEW")
    assert ledger.record(fill("BUY", 1, 10, instrument="NEW")).result is Result.ACCEPTED


def test_descriptive_fields_may_change_under_positions():
    ledger = Ledger()
    ledger.record(instrument("ES", multiplier=50))
    ledger.record(fill("BUY", 1, 4000, instrument="ES"))
    outcome = ledger.record(instrument("ES", multiplier=50, symbol="ESZ6"))
    assert outcome.applied.refusal is None
    assert ledger.refusals == {}
    assert ledger.instruments.get("ES").symbol == "ESZ6"


def test_the_multiplier_may_change_before_any_position():
    ledger = Ledger()
    ledger.record(instrument("ES", multiplier=50))
    outcome = ledger.record(instrument("ES", multiplier=5))
    assert outcome.applied.refusal is None
    ledger.record(fill("BUY", 1, 100, instrument="ES"))
    assert cash(ledger) == -500


def test_every_journaled_kind_has_its_ledger_rules_in_one_table():
    from server.domain.events import EVENT_KINDS
    from server.domain.ledger import KINDS

    assert set(KINDS) == set(EVENT_KINDS.values())
    for cls, rules in KINDS.items():
        assert rules.id_field in cls.__dataclass_fields__ or rules.id_field == "timestamp_ns"
