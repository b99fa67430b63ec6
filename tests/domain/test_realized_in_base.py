"""Realized P&L in base currency converts at the rate in force when it was realized (the
journaled FX history at the realizing fill's execution time), not at today's rate: so it stays
what it was when the rate moves, follows a restatement, and survives a restart."""

from __future__ import annotations

from decimal import Decimal

from server.domain.events import AccountDefinition, AccountKind, FxFixing
from server.domain.ledger import Ledger, Result
from server.domain.position import PositionKey
from server.domain.refusals import RefusalKind
from tests.domain.builders import BASE_NS, fill
from tests.domain.event_builders import instrument
from tests.domain.restart import record, restore_checkpoint

SECOND = 10**9
ROW = PositionKey("A1", "S1", "SAP")


def eur_usd(rate: str, at_s: int) -> FxFixing:
    return FxFixing(
        base="EUR", quote="USD", rate=Decimal(rate), timestamp_ns=BASE_NS + at_s * SECOND
    )


def sap(side: str, quantity: int, price: int, at_s: int, **fields: object):
    return fill(side, quantity, price, instrument="SAP", at_ns=BASE_NS + at_s * SECOND, **fields)


def new_ledger() -> Ledger:
    ledger = Ledger()
    record(ledger, instrument("SAP", "EUR"))
    return ledger


def view(ledger: Ledger, key: PositionKey = ROW):
    row = ledger.book.get(key)
    assert row is not None
    rate = ledger.fx.rate(row.currency, "USD")
    return ledger.book.view(row, "USD", rate)


def test_realized_converts_at_the_rate_then_and_stays_when_the_rate_moves():
    ledger = new_ledger()
    record(ledger, eur_usd("1.10", 0), sap("BUY", 10, 100, 1), eur_usd("1.20", 2))
    record(ledger, sap("SELL", 10, 110, 3))  # realizes 100 EUR at 1.20
    record(ledger, eur_usd("1.30", 4))
    figures = view(ledger).in_base()
    assert figures.realized_pnl == Decimal("120.00")  # not 130 at today's rate
    totals = ledger.book.account_currency_totals("A1")["EUR"]
    assert (totals.realized_pnl, totals.realized_pnl_base) == (100, Decimal("120.00"))
    converted = totals.converted("USD", Decimal("1.30"), Decimal("1e-9"), historic=True)
    assert converted is not None and converted.realized_pnl == Decimal("120.00")


def test_a_rate_missing_when_realized_leaves_realized_in_base_missing():
    ledger = new_ledger()
    record(ledger, sap("BUY", 10, 100, 1), sap("SELL", 5, 110, 2))  # no EUR rate yet
    record(ledger, eur_usd("1.10", 3))
    assert view(ledger).in_base().realized_pnl is None  # missing, not guessed at 1.10
    totals = ledger.book.strategy_currency_totals("S1", "A1")["EUR"]
    assert totals.converted("USD", Decimal("1.1"), Decimal("1e-9"), historic=True) is None
    assert totals.converted("USD", Decimal("1.1"), Decimal("1e-9"), historic=False) is not None


def test_a_late_fill_restates_realized_in_base_at_each_fills_own_rate():
    in_order, late = new_ledger(), new_ledger()
    rates = [eur_usd("1.10", 0), eur_usd("1.20", 5), eur_usd("1.40", 15)]
    buy, sell_1, sell_2 = sap("BUY", 10, 100, 1), sap("SELL", 4, 110, 10), sap("SELL", 6, 90, 20)
    record(in_order, *rates, buy, sell_1, sell_2)
    record(late, *rates, buy, sell_2, sell_1)  # sell_1 arrives after sell_2
    # 4 x 10 EUR at 1.20 = 48, 6 x -10 EUR at 1.40 = -84
    assert view(late).in_base().realized_pnl == view(in_order).in_base().realized_pnl == -36


def test_a_rate_journaled_after_a_fill_does_not_change_its_realized_in_base():
    """A booking asks only for rates journaled before it, so recomputing it later (a
    restatement, a restart) gives the same figure."""
    ledger = new_ledger()
    record(ledger, eur_usd("1.10", 0), sap("BUY", 10, 100, 1), sap("SELL", 10, 110, 3))
    record(ledger, eur_usd("1.50", 2))  # stamped before the sell, journaled after it
    assert view(ledger).in_base().realized_pnl == Decimal("110.00")
    record(ledger, sap("BUY", 1, 100, 2))  # a late fill restates the row
    assert view(ledger).in_base().realized_pnl == Decimal("110.00")


def test_a_restart_from_a_checkpoint_keeps_realized_in_base():
    live = new_ledger()
    journal = [(1, instrument("SAP", "EUR"))]
    journal += record(live, eur_usd("1.10", 0), sap("BUY", 10, 100, 1), eur_usd("1.20", 2))
    journal += record(live, sap("SELL", 4, 110, 3))
    restarted = Ledger()
    restore_checkpoint(restarted, live, journal)
    for sequence, event in journal:
        restarted.remember(event.kind, event.event_id, sequence, event.fingerprint())
    for target in (live, restarted):
        record(target, sap("SELL", 2, 120, 4), sap("BUY", 1, 90, 2))  # one late
    assert view(restarted) == view(live)
    assert view(restarted).in_base().realized_pnl == view(live).in_base().realized_pnl


def test_an_accounts_base_currency_cannot_change_once_it_has_positions():
    ledger = new_ledger()
    record(ledger, sap("BUY", 1, 100, 1))
    outcome = ledger.record(
        AccountDefinition(account_id="A1", account_kind=AccountKind.LIVE, base_currency="EUR")
    )
    assert outcome.result is Result.ACCEPTED
    refusal = ledger.refusals[outcome.sequence]
    assert (refusal.kind, refusal.field) == (RefusalKind.PRECONDITION, "base_currency")
    assert ledger.accounts.base_currency("A1") == "USD"
