from decimal import Decimal

from server.domain.book import ALL
from server.domain.ledger import Ledger
from server.domain.marks import Mark
from server.domain.position import PositionKey
from tests.domain.builders import fill


def test_opposite_strategies_net_zero_at_account_level_and_both_rows_are_kept():
    ledger = Ledger()
    ledger.record(fill("BUY", 100, 10, strategy="LONG"))
    ledger.record(fill("SELL", 100, 11, strategy="SHORT"))
    book = ledger.book
    assert book.get(PositionKey("A1", "LONG", "AAPL")).quantity == 100
    assert book.get(PositionKey("A1", "SHORT", "AAPL")).quantity == -100
    account = book.view(book.get(PositionKey("A1", "", "AAPL")))
    assert account.quantity == 0
    # The account book realized the netting; the strategies hold it as unrealized.
    assert account.realized_pnl == 100
    long_row = book.view(book.get(PositionKey("A1", "LONG", "AAPL")))
    short_row = book.view(book.get(PositionKey("A1", "SHORT", "AAPL")))
    assert long_row.unrealized_pnl + short_row.unrealized_pnl == 100


def test_totals_follow_fills_and_marks():
    ledger = Ledger()
    ledger.record(fill("BUY", 10, 100, strategy="S1", commission=1))
    ledger.record(fill("SELL", 4, 50, strategy="S2", instrument="MSFT", commission=1))
    ledger.book.set_mark(Mark("AAPL", Decimal(110), 1))
    totals = ledger.book.account_totals("A1")
    assert totals.unrealized_pnl == 100
    assert totals.long_exposure == 1100
    assert totals.short_exposure == 200
    assert totals.gross_exposure == 1300
    assert totals.net_exposure == 900
    assert totals.fees == 2
    assert totals.open_positions == 2
    assert totals.net_pnl == 98
    s1 = ledger.book.strategy_totals("S1", "A1")
    assert (s1.unrealized_pnl, s1.fees, s1.open_positions) == (100, 1, 1)
    assert ledger.book.strategy_totals("S1") == s1  # across accounts: only A1 here


def test_totals_are_kept_per_account_and_across_accounts():
    ledger = Ledger()
    ledger.record(fill("BUY", 1, 10, account="A1"))
    ledger.record(fill("BUY", 2, 10, account="A2"))
    assert ledger.book.account_totals("A1").long_exposure == 10
    assert ledger.book.account_totals("A2").long_exposure == 20
    assert ledger.book.account_totals(ALL).long_exposure == 30
    assert list(ledger.book.strategies("A2")) == ["S1"]
    assert ledger.book.strategy_totals("S1").long_exposure == 30
