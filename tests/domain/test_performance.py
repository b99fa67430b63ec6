"""Performance attribution by hand: round trips (to flat, and through a flip), their
statistics, venues, and the statistics of daily P&L with their edge cases."""

from __future__ import annotations

import dataclasses
import math
from decimal import Decimal

import pytest

from server.domain.ledger import Ledger, Result
from server.domain.performance import Performance, RoundTrips, daily_statistics, max_drawdown
from server.domain.position import PositionKey
from server.domain.state import capture, capture_rows, restore
from server.domain.steps import at_once
from server.storage.state_frames import state_frame, state_from_frame
from tests.domain.builders import fill

D = Decimal


def record(ledger: Ledger, *fills) -> None:
    for event in fills:
        assert ledger.record(event).result is Result.ACCEPTED


def trips(ledger: Ledger, strategy: str = "S1", instrument: str = "AAPL") -> RoundTrips:
    found = ledger.performance.trips([(PositionKey("A1", strategy, instrument), "USD")])
    return found.get("USD", RoundTrips())


def test_round_trips_to_flat_and_through_a_flip():
    ledger = Ledger()
    record(
        ledger,
        fill("BUY", 10, 100, commission=1),
        fill("SELL", 10, 110, commission=1),  # trip 1: +100 - 2 = 98
        fill("BUY", 5, 100),
        fill("SELL", 5, 90),  # trip 2: -50
        fill("BUY", 10, 100),
        fill("SELL", 15, 105, commission="1.5"),  # trip 3 (the flip): +50 - 1.5 = 48.5
    )
    assert trips(ledger).count == 3
    record(ledger, fill("BUY", 5, 100))  # trip 4, the short: 5 x (105 - 100) = 25
    found = trips(ledger)
    assert (found.count, found.wins, found.losses) == (4, 3, 1)
    assert (found.gross_win, found.gross_loss) == (D("171.5"), D(-50))
    assert (found.largest_win, found.largest_loss) == (D(98), D(-50))
    assert found.win_rate == 0.75
    assert found.average_win() == D("171.5") / 3 and found.average_loss() == D(-50)
    assert found.profit_factor() == pytest.approx(171.5 / 50)
    assert found.expectancy() == D("121.5") / 4
    # The account-level book saw the same trips (one strategy).
    assert trips(ledger, "") == found
    assert ledger.performance.open_trips([PositionKey("A1", "S1", "AAPL")]) == 0


def test_two_strategies_net_on_the_account_book_but_keep_their_trips():
    ledger = Ledger()
    record(
        ledger,
        fill("BUY", 10, 100, strategy="S1"),
        fill("SELL", 10, 100, strategy="S2"),  # the account is flat: its trip closes at 0
        fill("SELL", 10, 104, strategy="S1"),  # S1: +40
        fill("BUY", 10, 101, strategy="S2"),  # S2: -10
    )
    assert trips(ledger, "S1").net == 40 and trips(ledger, "S2").net == -10
    account = trips(ledger, "")
    assert account.count == 2 and account.net == 30  # 0, then 40 - 10 on the second trip


def test_venues_count_fills_volume_fees_and_the_realized_pnl_they_booked():
    ledger = Ledger()
    record(
        ledger,
        dataclasses.replace(fill("BUY", 10, 100, commission=1), venue="ARCA"),
        dataclasses.replace(fill("SELL", 4, 110, commission=1), venue="ISLAND"),
        dataclasses.replace(fill("SELL", 6, 90), venue="ARCA"),
    )
    venues = ledger.performance.venues("A1")
    arca, island = venues[("ARCA", "USD")], venues[("ISLAND", "USD")]
    assert (arca.fills, arca.volume, arca.fees, arca.realized_pnl) == (2, 1540, 1, -60)
    assert (island.fills, island.volume, island.fees, island.realized_pnl) == (1, 440, 1, 40)


DAYS = [("d1", D(100)), ("d2", D(-50)), ("d3", D(30)), ("d4", D(-80)), ("d5", D(120))]


def test_daily_statistics_by_hand():
    stats = daily_statistics(DAYS)
    assert (stats.days, stats.total, stats.mean) == (5, 120, 24.0)
    volatility = math.sqrt((76**2 + 74**2 + 6**2 + 104**2 + 96**2) / 4)
    assert stats.volatility == pytest.approx(volatility)
    assert stats.sharpe_ratio == pytest.approx(24 / volatility * math.sqrt(252))
    downside = math.sqrt((50**2 + 80**2) / 5)
    assert stats.sortino_ratio == pytest.approx(24 / downside * math.sqrt(252))
    # The curve: 100, 50, 80, 0, 120: down 100 from d1 to d4, back above on d5.
    drawdown = stats.drawdown
    assert (drawdown.amount, drawdown.peak_date, drawdown.trough_date) == (100, "d1", "d4")
    assert drawdown.recovered_date == "d5"


@pytest.mark.parametrize(
    ("days", "sharpe", "sortino", "drawdown"),
    [
        ([], None, None, 0),  # no trading day yet
        ([("d1", D(10))], None, None, 0),  # one day: no dispersion
        (
            [("d1", D(10)), ("d2", D(20))],
            pytest.approx(15 / math.sqrt(50) * math.sqrt(252)),
            None,
            0,
        ),  # all wins: no downside
        ([("d1", D(5)), ("d2", D(5))], None, None, 0),  # zero volatility
        ([("d1", D(-5)), ("d2", D(-5))], None, pytest.approx(-math.sqrt(252)), 10),
    ],
)
def test_edge_cases(days, sharpe, sortino, drawdown):
    stats = daily_statistics(days)
    assert stats.sharpe_ratio == sharpe
    assert stats.sortino_ratio == sortino
    assert stats.drawdown.amount == drawdown


def test_a_loss_from_the_first_day_is_a_drawdown_from_zero():
    assert max_drawdown([("d1", D(-5)), ("d2", D(2))]).peak_date == ""
    assert max_drawdown([("d1", D(-5)), ("d2", D(2))]).trough_date == "d1"


def test_the_same_after_a_checkpoint():
    fills = [
        dataclasses.replace(fill("BUY", 10, 100, commission=1), venue="ARCA"),
        fill("SELL", 15, 110),
        fill("BUY", 5, 100, instrument="MSFT", strategy="S2"),
        fill("BUY", 5, 100),
    ]
    straight = Ledger()
    record(straight, *fills)
    for cut in range(len(fills) + 1):
        before = Ledger()
        record(before, *fills[:cut])
        after = Ledger()
        restore(after, capture_rows(before), state_from_frame(state_frame(capture(before))))
        after.applied_sequence = after.sequence = before.sequence
        record(after, *fills[cut:])
        assert after.performance.state() == straight.performance.state(), cut


def test_a_checkpoint_lists_the_trips_in_the_books_order_and_those_of_rows_gone_after():
    """Trips opened in any order are listed in the order of the keys given (the book's, kept
    sorted: no sort of a million trips at a snapshot), those of rows not given after, sorted;
    the same trips as the sorted listing."""
    ledger = Ledger()
    names = ["MSFT", "AAPL", "IBM", "ZM", "BABA"]
    record(ledger, *(fill("BUY", 5, 100, instrument=name, strategy="S2") for name in names))
    record(ledger, fill("SELL", 5, 101, instrument="IBM", strategy="S2"))  # a trip closed
    open_trips, closed, _, _ = ledger.performance.state()
    assert [key for key, *_ in open_trips] == sorted(key for key, *_ in open_trips)
    order = [row.key for row in ledger.book.rows()]
    assert order != sorted(order)  # strategy rows, then account rows: another order
    given = order[3:] + order[:1]  # some rows not given (as if evicted)
    listed, listed_closed, _, _ = ledger.performance.state(given)
    keys = [key for key, *_ in listed]
    rest = sorted(set(keys) - set(given))
    assert keys == [key for key in given if key in keys] + rest and rest
    assert sorted(listed) == open_trips and listed_closed == closed
    # The account row's closed trip is given; the strategy row's (not given) comes after.
    assert [key for key, _ in listed_closed] == [PositionKey("A1", "", "IBM"),
                                                 PositionKey("A1", "S2", "IBM")]  # fmt: skip
    listed, listed_closed, _, _ = ledger.performance.state(order)
    assert [key for key, *_ in listed] == [key for key in order if key.instrument_id != "IBM"]
    assert [key for key, _ in listed_closed] == [PositionKey("A1", "S2", "IBM"),
                                                 PositionKey("A1", "", "IBM")]  # fmt: skip


def test_restored_trips_in_progress_keep_each_start_and_share_one_record_per_same_objects():
    """A checkpoint reads one Decimal per distinct text: trips whose starts are the same
    objects share one record; equal starts of other exponents stay apart, and starts made and
    dropped one by one (an id reused) each come back as given."""
    zero, fee = D("0"), D("0.35")
    keys = [PositionKey("A1", f"S{n}", "AAPL") for n in range(5)]
    given = [(keys[0], 1, zero, fee), (keys[1], 1, zero, fee), (keys[2], -1, zero, fee),
             (keys[3], 1, D("0.00"), D("0.350")), (keys[4], 1, D("-2.5"), fee)]  # fmt: skip

    def texts(performance: Performance) -> list[tuple[PositionKey, int, str, str]]:
        opened, _, _, _ = at_once(performance.stating(keys))
        return [(key, sign, str(realized), str(fees)) for key, sign, realized, fees in opened]

    expected = [(key, sign, str(realized), str(fees)) for key, sign, realized, fees in given]
    shared = Performance()
    shared.restore(given, [], [], [])
    assert texts(shared) == expected
    assert shared._open[keys[0]] is shared._open[keys[1]]
    assert shared._open[keys[2]] is not shared._open[keys[0]]  # the other side
    one_by_one = Performance()
    one_by_one.restore(
        ((key, sign, D(str(realized)), D(str(fees))) for key, sign, realized, fees in given),
        [], [], [],
    )  # fmt: skip
    assert texts(one_by_one) == expected
