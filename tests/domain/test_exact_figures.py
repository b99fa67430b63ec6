"""Figures derived from exact amounts stay exact: the engine admits amounts of 18 integer and
18 decimal digits, so their sums and differences reach 37 significant digits, which Python's
default decimal context (28) would round. Each read below runs outside `localcontext(EXACT)`,
as the event loop and the wire encoders run it."""

from __future__ import annotations

import dataclasses
from decimal import Decimal, getcontext

from server.api.wire import totals_to_proto
from server.api.wire_reference import consolidated_to_proto
from server.application.reads import ReadModel
from server.application.risk import Exposure, historical_var
from server.domain.decimals import EXACT
from server.domain.events import ClosingMark, DayClose
from server.domain.ledger import Ledger, Result
from server.domain.performance import (
    Performance,
    RoundTrips,
    VenueFigures,
    daily_statistics,
    max_drawdown,
)
from server.domain.pnl_history import CurrencyDay
from server.domain.totals import Totals
from tests.domain.builders import BASE_NS, fill

D = Decimal

A = D("123456789012345678.123456789012345678")
B = D("987654321098765432.987654321098765432")
C = D("555555555555555555.555555555555555555")


def neg(amount: Decimal) -> Decimal:
    return EXACT.minus(amount)  # unary minus rounds too, in the default context


def exact(*terms: Decimal) -> Decimal:
    total = D(0)
    for term in terms:
        total = EXACT.add(total, term)
    return total


def test_the_figures_are_rounded_in_the_default_context():
    # The premise: 28 significant digits cannot hold these sums.
    assert getcontext().prec == 28
    assert exact(A, B) != A + B


def test_totals_net_pnl_and_exposures():
    totals = Totals(
        currency="USD", realized_pnl=A, unrealized_pnl=B, fees=C, long_exposure=A, short_exposure=B
    )
    assert totals.net_pnl == exact(A, B, neg(C))
    assert totals.gross_exposure == exact(A, B)
    assert totals.net_exposure == exact(A, neg(B))


def test_totals_through_a_real_ledger_and_the_wire():
    ledger = Ledger()
    quantity, price = D("1000000.123456789012345678"), D("100000000000.000000000000000001")
    for event in (
        fill("BUY", quantity, price, commission=C),
        fill("SELL", quantity, price + 1, commission=A),
    ):
        assert ledger.record(event).result is Result.ACCEPTED
    totals = ledger.book.account_currency_totals("A1")["USD"]
    expected = exact(totals.realized_pnl, totals.unrealized_pnl, neg(totals.fees))
    assert len(expected.as_tuple().digits) > 28
    assert totals.net_pnl == expected
    assert D(totals_to_proto(totals).net_pnl) == expected


def test_a_days_net_pnl():
    day = CurrencyDay(realized_pnl=A, unrealized_change=B, fees=C)
    assert day.net_pnl == exact(A, B, neg(C))


def test_round_trips_merged_and_net():
    trips = RoundTrips()
    trips.merge(RoundTrips(1, 1, 0, A, D(0), A, D(0)))
    trips.merge(RoundTrips(2, 1, 1, B, neg(C), B, neg(C)))
    assert (trips.gross_win, trips.gross_loss) == (exact(A, B), neg(C))
    assert trips.net == exact(A, B, neg(C))
    # An average is a quotient: exact when it can be, as before (28 digits) when it cannot.
    assert RoundTrips(1, 1, 0, exact(A, B), D(0), A, D(0)).average_win() == exact(A, B)
    assert RoundTrips(2, 2, 0, exact(A, A), D(0), A, D(0)).expectancy() == A
    assert RoundTrips(3, 3, 0, D("171.5"), D(0), D(1), D(0)).average_win() == D("171.5") / 3


def test_venue_figures_summed_across_accounts():
    performance = Performance()
    performance.restore(
        [],
        [],
        [
            (("A1", "S1", "ARCA", "USD"), VenueFigures(1, A, C, A)),
            (("A2", "S1", "ARCA", "USD"), VenueFigures(1, B, A, B)),
        ],
        [],
    )
    figures = performance.venues()[("ARCA", "USD")]
    assert (figures.volume, figures.fees, figures.realized_pnl) == (
        exact(A, B),
        exact(C, A),
        exact(A, B),
    )


def test_daily_total_and_drawdown():
    days = [("2026-01-02", A), ("2026-01-05", neg(exact(A, B))), ("2026-01-06", C)]
    found = daily_statistics(days)
    assert found.total == exact(C, neg(B))
    assert found.drawdown.amount == exact(A, B)
    assert max_drawdown([("2026-01-02", neg(A)), ("2026-01-05", neg(B))]).amount == exact(A, B)


def test_risk_exposure_and_expected_shortfall():
    exposure = Exposure(long=A, short=neg(B))
    assert exposure.gross == exact(A, B)
    assert exposure.net == exact(A, neg(B))
    # 2 days at 50%: a tail of one day, its loss as it is; 4 at 50%: the 2 worst's average.
    found = historical_var([neg(exact(A, B)), C], D("0.5"))
    assert (found.value_at_risk, found.expected_shortfall) == (exact(A, B), exact(A, B))
    found = historical_var([neg(exact(A, B)), neg(exact(A, B)), C, C], D("0.5"))
    assert found.expected_shortfall == exact(A, B)


def test_unattributed_quantity_on_the_wire():
    ledger = Ledger()
    assert ledger.record(fill("BUY", A, 1)).result is Result.ACCEPTED
    reads = ReadModel(ledger, None, None, clock_ns=lambda: 0)  # type: ignore[arg-type]
    found = reads.consolidated("A1", "AAPL")
    # Say the strategies held less than the account: the rest is unattributed.
    found = dataclasses.replace(found, attributed_quantity=neg(B))
    message = consolidated_to_proto(found)
    assert D(message.unattributed_quantity) == exact(A, B)


def two_accounts_closed() -> Ledger:
    """Strategy S1 in two accounts, each closing a day with 18+18-digit unrealized P&L."""
    ledger = Ledger()
    for account, mark in (("A1", A), ("A2", B)):
        for event in (
            fill("BUY", 1, 1, account=account, at_ns=BASE_NS + 10**9),
            DayClose(
                account_id=account,
                trading_date="2026-01-01",
                timestamp_ns=BASE_NS + 22 * 3600 * 10**9,
                marks=(ClosingMark(instrument_id="AAPL", price=EXACT.add(mark, 1)),),
            ),
        ):
            assert ledger.record(event).result is Result.ACCEPTED
    return ledger


def test_a_strategys_days_summed_across_accounts():
    ledger = two_accounts_closed()
    reads = ReadModel(ledger, None, None, clock_ns=lambda: 0)  # type: ignore[arg-type]
    daily = reads.strategy_portfolio("S1").daily
    assert daily is not None and daily.total == exact(A, B)


def test_average_cost_divides_the_whole_basis_outside_the_exact_context():
    """avg_cost is read by the reconciler outside EXACT: a basis of 37 digits must not be
    rounded to 28 before the division."""
    from server.domain.position import Position, PositionKey

    row = Position(key=PositionKey("U1", "S1", "I1"), multiplier=D(1))
    row.quantity = D("-1")
    row.cost_basis = EXACT.minus(exact(A, B))  # 37 significant digits
    assert getcontext().prec == 28
    assert row.avg_cost(D("1e-18")) == exact(A, B)


def test_a_strategys_performance_sums_its_accounts_days_exactly():
    from server.application.performance import performance

    report = performance(two_accounts_closed(), "", "S1")
    assert report.daily.total == exact(A, B)
