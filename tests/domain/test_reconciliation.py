"""Reconciliation against the broker, in the ledger: the legacy cases (seed 004) and how a
run is kept."""

from __future__ import annotations

from decimal import Decimal

import pytest

from server.domain.events import AccountKind, InvalidEvent
from server.domain.ledger import Ledger, Result
from server.domain.position import PositionKey
from server.domain.reconciliation import (
    RESIDUAL,
    UNATTRIBUTED,
    LineStatus,
    Reconciliation,
    ReconciliationBook,
)
from server.domain.refusals import RefusalKind
from tests.domain.builders import fill
from tests.domain.event_builders import broker_positions, instrument, paper_account

D = Decimal


def run(ledger: Ledger, *positions: tuple, account: str = "A1") -> Reconciliation:
    outcome = ledger.record(broker_positions(*positions, account=account))
    assert outcome.result is Result.ACCEPTED
    assert outcome.applied.refusal is None
    result = outcome.applied.reconciliation
    assert result is not None
    return result


def booked(*fills) -> Ledger:
    ledger = Ledger()
    for event in fills:
        assert ledger.record(event).result is Result.ACCEPTED
    return ledger


def only_line(result: Reconciliation):
    (line,) = result.lines
    return line


def test_a_clean_match_adds_no_row_and_reports_no_discrepancy():
    ledger = booked(fill("BUY", 100, 10, strategy="S1"), fill("BUY", 50, 13, strategy="S2"))
    result = run(ledger, ("AAPL", 150, "11.002"))  # the broker's cost includes commissions
    line = only_line(result)
    assert line.status is LineStatus.MATCHED
    assert (line.broker_quantity, line.attributed_quantity, line.residual_quantity) == (150, 150, 0)
    assert line.service_avg_cost == 11 and line.residual is None
    assert result.clean and result.matched == 1 and result.discrepancies == 0
    assert dict(line.strategies) == {"S1": 100, "S2": 50}


def test_a_broker_position_the_service_never_saw_becomes_an_unattributed_row():
    ledger = booked(fill("BUY", 10, 10))
    result = run(ledger, ("AAPL", 10, 10), ("ES", -2, "250000", "50"))
    line = next(line for line in result.lines if line.instrument_id == "ES")
    assert line.status is LineStatus.UNATTRIBUTED
    row = line.residual
    assert row is not None and row.owner == UNATTRIBUTED
    # IB's avgCost of a future is per contract: 250000 / 50 = 5000 per unit of price.
    assert (row.quantity, row.avg_cost, row.cost_basis, row.multiplier) == (-2, 5000, -10000, 50)
    assert line.broker_unit_cost == 5000
    assert result.discrepancies == 1 and not result.clean
    # Nothing was booked for it: the book is as it was.
    assert ledger.book.get(PositionKey("A1", UNATTRIBUTED, "ES")) is None
    assert not ledger.book.has_instrument("ES")


def test_a_residual_row_carries_the_difference_at_the_weighted_average_cost():
    ledger = booked(fill("BUY", 100, 10, strategy="S1"))
    result = run(ledger, ("AAPL", 150, "10.2"))
    line = only_line(result)
    assert line.status is LineStatus.RESIDUAL
    row = line.residual
    assert row is not None and row.owner == RESIDUAL
    # The broker's 150 cost 1530; the strategy's 100 cost 1000: the other 50 cost 530.
    assert (row.quantity, row.cost_basis, row.avg_cost) == (50, 530, D("10.6"))
    strategy_row = ledger.book.get(PositionKey("A1", "S1", "AAPL"))
    assert strategy_row is not None and strategy_row.quantity == 100  # never rewritten


def test_the_broker_holding_less_leaves_a_negative_residual():
    ledger = booked(fill("BUY", 100, 10, strategy="S1"), fill("SELL", 30, 12, strategy="S2"))
    line = only_line(run(ledger, ("AAPL", 40, 10)))
    assert line.status is LineStatus.RESIDUAL
    assert line.residual_quantity == -30 and line.residual is not None
    assert line.residual.quantity == -30


def test_two_strategies_on_opposite_sides_netting_to_zero_are_kept():
    ledger = booked(fill("BUY", 100, 10, strategy="S1"), fill("SELL", 100, 11, strategy="S2"))
    result = run(ledger)  # the broker holds nothing
    line = only_line(result)
    assert line.status is LineStatus.FLAT_ATTRIBUTED
    assert dict(line.strategies) == {"S1": 100, "S2": -100}
    assert line.account_quantity == 0 and line.residual is None
    assert result.clean
    assert ledger.book.get(PositionKey("A1", "S1", "AAPL")).quantity == 100


def test_a_flat_broker_row_with_attribution_kept_matches():
    ledger = booked(fill("BUY", 5, 10, strategy="S1"), fill("SELL", 5, 10, strategy="S2"))
    line = only_line(run(ledger, ("AAPL", 0, 0)))  # TWS reports a position closed today as 0
    assert line.status is LineStatus.FLAT_ATTRIBUTED and line.broker_quantity == 0


def test_flat_on_both_sides_says_nothing_unless_the_broker_lists_it():
    ledger = booked(fill("BUY", 5, 10), fill("SELL", 5, 11))
    assert run(ledger).lines == ()
    line = only_line(run(ledger, ("AAPL", 0, 0)))
    assert line.status is LineStatus.MATCHED


def test_the_service_long_and_the_broker_flat_is_a_residual():
    ledger = booked(fill("BUY", 100, 10))
    line = only_line(run(ledger))
    assert line.status is LineStatus.RESIDUAL
    assert line.residual is not None
    assert (line.residual.quantity, line.residual.avg_cost) == (-100, 10)


@pytest.mark.parametrize(
    ("broker_cost", "status"),
    [("10.05", LineStatus.MATCHED), ("10.0501", LineStatus.COST_MISMATCH)],
)
def test_average_costs_compare_within_the_tolerance(broker_cost, status):
    ledger = booked(fill("BUY", 100, 10))  # tolerance 0.5% of 10 = 0.05
    line = only_line(run(ledger, ("AAPL", 100, broker_cost)))
    assert line.status is status
    assert line.residual is None


def test_a_derivative_cost_is_compared_per_unit_of_price():
    ledger = Ledger()
    ledger.record(instrument("ES", multiplier=50))
    ledger.record(fill("BUY", 2, 5000, instrument="ES"))
    line = only_line(run(ledger, ("ES", 2, "250001.2", 50)))
    assert line.status is LineStatus.MATCHED and line.broker_unit_cost == D("5000.024")


def test_other_accounts_rows_do_not_count():
    ledger = booked(fill("BUY", 7, 10, account="A2"))
    assert run(ledger, account="A1").lines == ()


def test_a_paper_account_is_never_reconciled():
    ledger = Ledger()
    ledger.record(paper_account("P1", "USD", 1000))
    ledger.record(fill("BUY", 1, 10, account="P1"))
    outcome = ledger.record(broker_positions(("AAPL", 5, 10), account="P1"))
    refusal = outcome.applied.refusal
    assert refusal is not None and refusal.kind is RefusalKind.PRECONDITION
    assert "paper" in refusal.reason
    assert ledger.reconciliations.latest("P1") is None
    assert ledger.accounts.get("P1").account_kind is AccountKind.PAPER


def test_a_snapshot_listing_an_instrument_twice_is_invalid():
    with pytest.raises(InvalidEvent, match=r"positions\[1\].instrument_id"):
        broker_positions(("AAPL", 1, 1), ("AAPL", 2, 1))


def test_a_strategy_cannot_take_a_reconciliation_owner_name():
    with pytest.raises(InvalidEvent, match="strategy_id"):
        fill("BUY", 1, 1, strategy=UNATTRIBUTED)


def test_history_keeps_the_latest_in_full_and_older_runs_without_matched_lines():
    ledger = booked(fill("BUY", 10, 10), fill("BUY", 1, 10, instrument="MSFT"))
    first = run(ledger, ("AAPL", 10, 10), ("MSFT", 2, 10))
    second = run(ledger, ("AAPL", 10, 10), ("MSFT", 1, 10))
    runs = list(ledger.reconciliations.runs("A1"))
    assert runs[0] == second and len(second.lines) == 2
    assert [line.instrument_id for line in runs[1].lines] == ["MSFT"]
    assert runs[1].matched == first.matched == 1
    assert ledger.reconciliations.line("A1", "MSFT").status is LineStatus.MATCHED


def test_history_is_bounded():
    book = ReconciliationBook(history=3)
    ledger = booked(fill("BUY", 1, 1))
    for _ in range(5):
        book.record(run(ledger, ("AAPL", 1, 1)))
    assert len(list(book.runs("A1"))) == 3
    assert [r.account_id for r in book.all_runs()] == ["A1"] * 3


def test_a_residual_is_in_its_rows_or_its_instruments_currency_else_the_brokers():
    from server.domain.events import BrokerPosition, BrokerPositions

    ledger = booked(fill("BUY", 1, 10))
    ledger.record(instrument("SAP", "EUR"))
    held = (
        BrokerPosition(instrument_id="AAPL", quantity=D(2), avg_cost=D(10), currency="USD"),
        BrokerPosition(
            instrument_id="SAP", quantity=D(3), avg_cost=D(120), currency="CHF"
        ),  # the definition wins
        BrokerPosition(
            instrument_id="NESN", quantity=D(4), avg_cost=D(90), currency="CHF"
        ),  # known only from the broker
    )
    result = ledger.record(
        BrokerPositions(snapshot_id="s-ccy", account_id="A1", timestamp_ns=1, positions=held)
    ).applied.reconciliation
    currencies = {row.instrument_id: row.currency for row in result.residuals}
    assert currencies == {"AAPL": "USD", "SAP": "EUR", "NESN": "CHF"}
    assert ledger.instruments.get("NESN") is None  # seen at the broker, not registered
