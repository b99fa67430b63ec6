"""How the book keeps its rows compactly, as behaviour: amounts shared by text (never merging
two figures that are equal numbers with different exponents), and what a row's window holds."""

from __future__ import annotations

from decimal import Decimal

from server.domain.ledger import Ledger
from server.domain.position import PositionKey
from server.domain.restatement import SharedAmounts
from tests.domain.builders import fill


def test_an_amount_of_a_text_seen_before_is_the_one_kept_before():
    amounts = SharedAmounts()
    first = Decimal("100.25")
    assert amounts.shared(first) is first
    again = Decimal("100.25")
    assert again is not first
    assert amounts.shared(again) is first


def test_equal_numbers_of_other_texts_stay_themselves():
    amounts = SharedAmounts()
    for text in ("100", "100.0", "1E+2", "-0", "0", "0.00"):
        amount = Decimal(text)
        assert str(amounts.shared(amount)) == text


def test_the_table_starts_over_when_full():
    amounts = SharedAmounts(limit=3)
    kept = [amounts.shared(Decimal(n)) for n in range(3)]
    assert len(amounts) == 3
    amounts.shared(Decimal(3))  # full: starts over with this one
    assert len(amounts) == 1
    assert amounts.shared(Decimal(0)) is not kept[0]


def test_rows_share_the_amounts_of_their_fills_and_keep_each_figure_as_booked():
    ledger = Ledger()
    ledger.record(fill("BUY", "100", "10.50", strategy="S1", commission="0.35"))
    ledger.record(fill("BUY", "100", "10.50", strategy="S2", commission="0.35"))
    ledger.record(fill("BUY", "100.0", "10.5", strategy="S3", commission="0.350"))
    book = ledger.book
    one, two, three = (book.row_at(PositionKey("A1", s, "AAPL")) for s in ("S1", "S2", "S3"))
    assert one.quantity is two.quantity
    assert one.fees is two.fees
    assert (str(three.quantity), str(three.fees)) == ("100.0", "0.350")
    assert (str(one.cost_basis), str(three.cost_basis)) == ("1050.00", "1050.00")
    account = book.row_at(PositionKey("A1", "", "AAPL"))
    assert (account.quantity, str(account.fees)) == (Decimal(300), "1.050")
