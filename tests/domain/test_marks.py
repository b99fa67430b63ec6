"""Market prices: quotes, FX rates, and the book valued at them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from server.domain.book import NO_PRICE
from server.domain.events import InvalidEvent
from server.domain.ledger import Ledger
from server.domain.marks import INVERSE_RATE_QUANTUM, FxRate, FxTable, Mark, MarkSource
from server.domain.position import PositionKey
from tests.domain.builders import fill
from tests.domain.event_builders import instrument

D = Decimal

# -- quotes ----------------------------------------------------------------------------------


def test_a_given_mark_beats_the_mid_and_the_last():
    mark = Mark.from_quote("AAPL", 5, mark=D("101"), bid=D("99"), ask=D("100"), last=D("98"))
    assert mark.price == 101
    assert (mark.bid, mark.ask, mark.last, mark.time_ns) == (99, 100, 98, 5)


def test_the_mid_beats_the_last_and_is_exact():
    mark = Mark.from_quote("AAPL", 5, bid=D("1.01"), ask=D("1.02"), last=D("7"))
    assert mark.price == D("1.015")


def test_the_last_trade_is_the_price_of_last_resort():
    assert Mark.from_quote("AAPL", 5, last=D("42.5")).price == D("42.5")
    # One side of the book alone is not a price.
    assert Mark.from_quote("AAPL", 5, bid=D("40"), last=D("42.5")).price == D("42.5")


def test_a_crossed_quote_is_rejected():
    with pytest.raises(InvalidEvent) as raised:
        Mark.from_quote("AAPL", 5, bid=D("100.01"), ask=D("100"))
    assert raised.value.field == "bid"
    # A locked quote is fine.
    assert Mark.from_quote("AAPL", 5, bid=D("100"), ask=D("100")).price == 100


@pytest.mark.parametrize("quote", [{}, {"bid": D(1)}, {"ask": D(1)}])
def test_a_quote_without_a_price_is_rejected(quote):
    with pytest.raises(InvalidEvent) as raised:
        Mark.from_quote("AAPL", 5, **quote)
    assert raised.value.field == "mark"


@pytest.mark.parametrize(
    ("instrument_id", "time_ns", "quote", "field"),
    [
        ("", 5, {"mark": D(1)}, "instrument_id"),
        ("AAPL", 0, {"mark": D(1)}, "timestamp"),
        ("AAPL", 5, {"mark": D("NaN")}, "mark"),
        ("AAPL", 5, {"last": D("1e30")}, "last"),
    ],
)
def test_invalid_quotes_name_the_field(instrument_id, time_ns, quote, field):
    with pytest.raises(InvalidEvent) as raised:
        Mark.from_quote(instrument_id, time_ns, **quote)
    assert raised.value.field == field


# -- FX --------------------------------------------------------------------------------------


def test_fx_direct_inverse_same_and_missing():
    table = FxTable()
    assert table.set(FxRate("EUR", "USD", D("1.08"), 10))
    assert table.rate("EUR", "USD") == D("1.08")
    inverse = table.rate("USD", "EUR")
    assert inverse == D("0.925925925925925926")  # 1/1.08 rounded half-even to 1e-18
    assert inverse.as_tuple().exponent == INVERSE_RATE_QUANTUM.as_tuple().exponent == -18
    assert table.rate("JPY", "JPY") == 1
    assert table.rate("EUR", "JPY") is None
    assert table.rate("GBP", "USD") is None


def test_an_inverse_rate_rounds_half_even():
    table = FxTable()
    # 1/1.6 = 0.625 exactly; 1/3 rounds down; 1/(3/2) rounds up.
    table.set(FxRate("A1X", "B1X", D("1.6"), 1))
    table.set(FxRate("A2X", "B2X", D(3), 1))
    table.set(FxRate("A3X", "B3X", D("1.5"), 1))
    assert table.rate("B1X", "A1X") == D("0.625")
    assert table.rate("B2X", "A2X") == D("0.333333333333333333")
    assert table.rate("B3X", "A3X") == D("0.666666666666666667")


def test_a_stale_rate_is_ignored_either_way_round():
    table = FxTable()
    table.set(FxRate("EUR", "USD", D("1.08"), 10))
    assert not table.set(FxRate("EUR", "USD", D("1.50"), 9))
    assert not table.set(FxRate("USD", "EUR", D("0.5"), 9))
    assert table.rate("EUR", "USD") == D("1.08")
    assert table.rates() == [FxRate("EUR", "USD", D("1.08"), 10)]


def test_a_newer_rate_of_the_pair_replaces_the_held_one_either_way_round():
    table = FxTable()
    table.set(FxRate("EUR", "USD", D("1.08"), 10))
    assert table.set(FxRate("EUR", "USD", D("1.09"), 10))  # same time: the later one wins
    assert table.rate("EUR", "USD") == D("1.09")
    assert table.set(FxRate("USD", "EUR", D("0.8"), 11))
    assert table.rate("USD", "EUR") == D("0.8")
    assert table.rate("EUR", "USD") == D("1.25")
    assert table.rates() == [FxRate("USD", "EUR", D("0.8"), 11)]


@pytest.mark.parametrize(
    ("base", "quote", "rate", "time_ns", "field"),
    [
        ("EUR", "EUR", D(1), 1, "quote"),
        ("eur", "USD", D(1), 1, "base"),
        ("EUR", "USD", D(0), 1, "rate"),
        ("EUR", "USD", D(-1), 1, "rate"),
        ("EUR", "USD", D(1), 0, "timestamp"),
    ],
)
def test_invalid_rates_name_the_field(base, quote, rate, time_ns, field):
    with pytest.raises(InvalidEvent) as raised:
        FxRate(base, quote, rate, time_ns)
    assert raised.value.field == field


# -- the book at its marks -------------------------------------------------------------------


def test_a_row_is_valued_at_the_last_fill_until_a_market_mark_arrives():
    ledger = Ledger()
    ledger.record(fill("BUY", 10, 100, at_ns=1_000))
    ledger.record(fill("BUY", 10, 102, strategy="S2", at_ns=2_000))
    book = ledger.book
    row = book.get(PositionKey("A1", "S1", "AAPL"))
    view = book.view(row)
    assert view.mark_source is MarkSource.LAST_FILL
    assert view.market_price == 102  # the instrument's last fill, whichever strategy
    assert view.marked_at_ns == 2_000
    assert view.unrealized_pnl == 20

    assert book.set_mark(Mark("AAPL", D(110), 3_000))
    view = book.view(row)
    assert view.mark_source is MarkSource.MARKET
    assert (view.market_price, view.marked_at_ns) == (110, 3_000)
    assert view.unrealized_pnl == 100
    assert view.market_value == 1100

    # A later fill does not displace the market mark.
    ledger.record(fill("BUY", 1, 90, at_ns=4_000))
    view = book.view(row)
    assert (view.mark_source, view.market_price, view.marked_at_ns) == (
        MarkSource.MARKET, 110, 3_000,
    )  # fmt: skip
    assert book.fill_price("AAPL").price == 90


def test_an_instrument_never_priced_has_no_price():
    ledger = Ledger()
    assert ledger.book.price("AAPL") == NO_PRICE
    assert NO_PRICE.source is MarkSource.NONE


def test_a_stale_mark_is_ignored():
    ledger = Ledger()
    ledger.record(fill("BUY", 10, 100))
    book = ledger.book
    assert book.set_mark(Mark("AAPL", D(110), 20))
    before = book.account_totals("A1")
    assert not book.set_mark(Mark("AAPL", D(50), 19))
    assert book.mark("AAPL") == 110
    assert book.price("AAPL").time_ns == 20
    assert book.market_marks() == [Mark("AAPL", D(110), 20)]
    assert book.account_totals("A1") == before
    assert book.set_mark(Mark("AAPL", D(120), 20))  # the same time is not stale


def test_a_mark_from_the_future_held_from_before_does_not_freeze_the_price():
    """A mark stamped 2200, kept before the door refused such times, must give way to real
    marks, not make every one of them look stale."""
    ledger = Ledger()
    ledger.record(fill("BUY", 10, 100))
    book = ledger.book
    book.set_mark(Mark("AAPL", D(999), 7_258_118_400 * 10**9))
    assert not book.set_mark(Mark("AAPL", D(110), 20))  # no clock given: it still wins
    assert book.set_mark(Mark("AAPL", D(110), 20), latest_plausible_ns=100)
    assert book.mark("AAPL") == 110
    assert not book.set_mark(Mark("AAPL", D(105), 19), latest_plausible_ns=100)  # truly stale


def test_a_rate_from_the_future_gives_way_to_real_ones():
    table = FxTable()
    table.set(FxRate("EUR", "USD", D("9"), 7_258_118_400 * 10**9 - 1))
    assert table.set(FxRate("USD", "EUR", D("0.9"), 20), latest_plausible_ns=100)
    assert table.rate("USD", "EUR") == D("0.9")


def test_totals_are_revalued_by_every_mark():
    ledger = Ledger()
    ledger.record(fill("BUY", 10, 100, strategy="S1"))
    ledger.record(fill("SELL", 5, 100, strategy="S2"))
    book = ledger.book
    for time_ns, price, unrealized in ((1, 110, 50), (2, 90, -50), (3, 100, 0)):
        book.set_mark(Mark("AAPL", D(price), time_ns))
        s1, s2 = book.strategy_totals("S1"), book.strategy_totals("S2")
        account = book.account_totals("A1")
        assert s1.unrealized_pnl == (price - 100) * 10
        assert s2.unrealized_pnl == (100 - price) * 5
        assert account.unrealized_pnl == unrealized  # 5 net long at account level
        assert (s1.long_exposure, s2.short_exposure) == (price * 10, price * 5)
        assert account.long_exposure == price * 5
        # The totals agree with the rows they sum.
        rows = [book.view(r) for r in book.rows() if not r.key.is_account_level]
        assert sum(v.unrealized_pnl for v in rows) == s1.unrealized_pnl + s2.unrealized_pnl


def test_a_mark_for_another_instrument_leaves_the_totals_alone():
    ledger = Ledger()
    ledger.record(fill("BUY", 10, 100))
    before = ledger.book.account_totals("A1")
    ledger.book.set_mark(Mark("MSFT", D(500), 1))
    assert ledger.book.account_totals("A1") == before


def test_totals_are_kept_per_currency():
    ledger = Ledger()
    ledger.record(instrument("SAP", "EUR"))
    ledger.record(instrument("ES", "USD", multiplier=50))
    ledger.record(fill("BUY", 10, 100, instrument="AAPL", commission=1))
    ledger.record(fill("BUY", 5, 200, instrument="SAP", commission=2))
    ledger.record(fill("SELL", 1, 4000, instrument="ES", strategy="S2"))
    book = ledger.book
    book.set_mark(Mark("AAPL", D(110), 1))
    book.set_mark(Mark("SAP", D(190), 1))
    book.set_mark(Mark("ES", D(3990), 1))
    totals = book.account_currency_totals("A1")
    assert list(totals) == ["EUR", "USD"]
    eur, usd = totals["EUR"], totals["USD"]
    assert (eur.unrealized_pnl, eur.long_exposure, eur.fees, eur.open_positions) == (-50, 950, 2, 1)
    assert usd.unrealized_pnl == 100 + 500  # AAPL up 10 x 10, ES short 1 x 10 x 50
    assert (usd.long_exposure, usd.short_exposure) == (1100, 3990 * 50)
    assert (usd.fees, usd.open_positions) == (1, 2)
    # Per strategy too: S2 holds only ES.
    assert list(book.strategy_currency_totals("S2", "A1")) == ["USD"]
    assert list(book.strategy_currency_totals("S1", "A1")) == ["EUR", "USD"]
    # The rows say which currency their P&L is in.
    assert book.view(book.get(PositionKey("A1", "S1", "SAP"))).currency == "EUR"
    assert book.view(book.get(PositionKey("A1", "", "AAPL"))).currency == "USD"


def test_per_currency_totals_across_accounts():
    ledger = Ledger()
    ledger.record(instrument("SAP", "EUR"))
    ledger.record(fill("BUY", 1, 100, instrument="SAP", account="A1"))
    ledger.record(fill("BUY", 2, 100, instrument="SAP", account="A2"))
    ledger.record(fill("BUY", 3, 10, instrument="AAPL", account="A2"))
    totals = ledger.book.account_currency_totals()
    assert {c: t.long_exposure for c, t in totals.items()} == {"EUR": 300, "USD": 30}
    assert list(ledger.book.account_currency_totals("A1")) == ["EUR"]


def test_a_price_move_touches_no_other_row_until_totals_are_read():
    """What a fill costs must not grow with the book: moving an instrument's price revalues
    nothing at once; reading a scope's totals brings only its moved rows up to date."""
    from decimal import Decimal

    from server.domain.ledger import Ledger
    from server.domain.position import PositionKey
    from tests.domain.builders import fill

    ledger = Ledger()
    for number in range(50):
        ledger.record(fill("BUY", 1, 100, strategy=f"S{number}"))
    quiet = ledger.book.get(PositionKey("A1", "S7", "AAPL"))
    assert quiet is not None and quiet.valued_at == 100
    ledger.record(fill("BUY", 1, 110, strategy="S0"))  # moves AAPL's price to 110
    assert quiet.valued_at == 100  # not revalued by the fill
    totals = ledger.book.strategy_currency_totals("S7", "A1")["USD"]
    assert quiet.valued_at == 110
    assert (totals.unrealized_pnl, totals.long_exposure) == (Decimal(10), Decimal(110))
    assert ledger.book.account_currency_totals("A1")["USD"].unrealized_pnl == 50 * 10
