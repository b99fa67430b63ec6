"""The FX history: the rate in force at a time, whatever order the rates came in, bounded by
the window; and the journaled FX event the ledger feeds it from."""

from __future__ import annotations

from decimal import Decimal

import pytest

from server.domain.events import EVENT_KINDS, FxFixing, InvalidEvent
from server.domain.fx_history import FX_HORIZON_MARGIN_NS, FxHistory, fixed_rate, fx_fixing
from server.domain.ledger import Ledger, Result
from server.domain.marks import FxRate, FxTable
from server.domain.state import capture, capture_rows, restore
from tests.domain.builders import fill

D = Decimal
DAY_NS = 86_400 * 10**9


def history(*rates: tuple[str, str, str, int]) -> FxHistory:
    held = FxHistory()
    for sequence, (base, quote, rate, time_ns) in enumerate(rates, start=1):
        held.record(FxRate(base, quote, D(rate), time_ns), sequence)
    return held


def test_the_rate_in_force_is_the_latest_stamped_at_or_before_the_time():
    held = history(("EUR", "USD", "1.08", 10), ("EUR", "USD", "1.09", 20))
    assert held.rate_at("EUR", "USD", 9) is None  # before any rate
    assert held.rate_at("EUR", "USD", 10) == D("1.08")  # at it
    assert held.rate_at("EUR", "USD", 19) == D("1.08")
    assert held.rate_at("EUR", "USD", 20) == D("1.09")
    assert held.rate_at("EUR", "USD", 10**18) == D("1.09")  # long after
    assert held.rate_at("EUR", "JPY", 20) is None  # a pair never quoted
    assert held.rate_at("EUR", "EUR", 1) == held.rate_at("GBP", "GBP", 1) == 1


def test_a_rate_answers_either_way_round_rounded_as_the_valuation_table_rounds():
    held = history(("EUR", "USD", "1.08", 10), ("USD", "EUR", "0.8", 20))
    table = FxTable()
    table.set(FxRate("EUR", "USD", D("1.08"), 10))
    assert held.rate_at("USD", "EUR", 15) == table.rate("USD", "EUR")
    assert held.rate_at("USD", "EUR", 15) == D("0.925925925925925926")
    assert held.rate_at("USD", "EUR", 20) == D("0.8")  # quoted that way round now
    assert held.rate_at("EUR", "USD", 20) == D("1.25")


def test_a_late_rate_takes_its_place_in_time():
    held = history(("EUR", "USD", "1.10", 10), ("EUR", "USD", "1.30", 30))
    held.record(FxRate("EUR", "USD", D("1.20"), 20), 3)
    assert [held.rate_at("EUR", "USD", t) for t in (10, 25, 30)] == [
        D("1.10"),
        D("1.20"),
        D("1.30"),
    ]
    held.record(FxRate("EUR", "USD", D("1.00"), 5), 4)  # before every other
    assert held.rate_at("EUR", "USD", 7) == D("1.00")
    assert [rate.time_ns for _, rate in held.rates()] == [5, 10, 20, 30]


def test_a_rate_of_a_time_held_answers_from_then_on_and_the_first_before_it():
    held = history(("EUR", "USD", "1.10", 10))  # sequence 1
    held.record(FxRate("USD", "EUR", D("0.5"), 10), 3)  # the same time, the other way round
    assert held.rate_at("EUR", "USD", 10) == D(2)
    assert held.rate_at("EUR", "USD", 10, sequence=4) == D(2)
    assert held.rate_at("EUR", "USD", 10, sequence=2) == D("1.10")  # booked between the two
    assert held.rate_at("EUR", "USD", 9) is None


def test_a_booking_sees_only_the_rates_journaled_before_it():
    held = history(("EUR", "USD", "1.10", 10), ("EUR", "USD", "1.30", 30))  # sequences 1, 2
    held.record(FxRate("EUR", "USD", D("1.20"), 20), 7)  # journaled late, at sequence 7
    assert held.rate_at("EUR", "USD", 25, sequence=5) == D("1.10")  # 1.20 came after it
    assert held.rate_at("EUR", "USD", 25, sequence=8) == D("1.20")
    assert held.rate_at("EUR", "USD", 10, sequence=1) is None  # nothing journaled before 1
    assert held.rate_at("EUR", "USD", 25) == D("1.20")  # no sequence: every rate held


def test_eviction_forgets_rates_before_the_horizon_but_keeps_the_one_in_force_there():
    held = history(
        ("EUR", "USD", "1.1", 10), ("EUR", "USD", "1.2", 20), ("EUR", "USD", "1.3", 30),
        ("EUR", "USD", "1.4", 40), ("USD", "JPY", "150", 5), ("GBP", "USD", "1.25", 50),
    )  # fmt: skip
    held.evict(35)
    assert held.rate_at("EUR", "USD", 35) == D("1.3")  # in force at the horizon: kept
    assert held.rate_at("EUR", "USD", 40) == D("1.4")
    assert held.rate_at("EUR", "USD", 25) is None  # forgotten
    assert held.rate_at("USD", "JPY", 35) == D(150)  # the only one of its pair: in force
    assert held.rate_at("GBP", "USD", 50) == D("1.25")
    assert len(held) == 4
    held.evict(35)  # again: nothing more goes
    assert len(held) == 4
    held.evict(30)  # a horizon at a rate's own time keeps the one before it too
    assert held.rate_at("EUR", "USD", 30) == D("1.3")


def test_memory_is_bounded_by_the_rates_inside_the_window():
    held = FxHistory()
    window = 100
    for time_ns in range(1, 20_001):
        held.record(FxRate("EUR", "USD", D(1) + D(time_ns % 13) / 100, time_ns), time_ns)
        held.evict(time_ns - window)
        assert len(held) <= window + 2
    ((_, rates),) = held._pairs.items()
    assert len(rates.times) <= window + 2 + 2 * 1024  # evicted slots are cut in bulk
    assert held.rate_at("EUR", "USD", 19_950) == D(1) + D(19_950 % 13) / 100


def test_a_checkpoint_of_the_history_restores_the_same_answers():
    held = history(("EUR", "USD", "1.10", 10), ("USD", "EUR", "0.8", 30), ("USD", "JPY", "150", 5))
    held.record(FxRate("EUR", "USD", D("1.20"), 20), 9)
    restored = FxHistory()
    restored.restore(held.rates())
    assert restored.rates() == held.rates()
    for time_ns in range(0, 40):
        for sequence in (None, 2, 10):
            for pair in (("EUR", "USD"), ("USD", "EUR"), ("JPY", "USD")):
                assert restored.rate_at(*pair, time_ns, sequence) == held.rate_at(
                    *pair, time_ns, sequence
                )


# -- the journaled event ------------------------------------------------------------------


def test_an_fx_event_is_a_journaled_kind_with_an_id_of_its_pair_and_time():
    event = fx_fixing(FxRate("EUR", "USD", D("1.0825"), 1_700_000_000_000_000_000))
    assert EVENT_KINDS["fx"] is FxFixing
    assert event.event_id == "EUR/USD@1700000000000000000"
    assert event.account_id == ""
    assert FxFixing.from_text(event.text()) == event
    assert fixed_rate(event) == FxRate("EUR", "USD", D("1.0825"), 1_700_000_000_000_000_000)
    with pytest.raises(InvalidEvent) as raised:
        FxFixing(base="EUR", quote="EUR", rate=D(1), timestamp_ns=1)
    assert raised.value.field == "quote"
    with pytest.raises(InvalidEvent) as raised:
        FxFixing(base="EUR", quote="USD", rate=D(0), timestamp_ns=1)
    assert raised.value.field == "rate"


def fixing(base: str, quote: str, rate: str, time_ns: int) -> FxFixing:
    return FxFixing(base=base, quote=quote, rate=D(rate), timestamp_ns=time_ns)


def test_the_ledger_keeps_journaled_rates_in_its_history_and_valuation_table():
    ledger = Ledger()
    assert ledger.record(fixing("EUR", "USD", "1.10", 20)).result is Result.ACCEPTED
    assert ledger.record(fixing("EUR", "USD", "1.05", 10)).result is Result.ACCEPTED  # late
    assert ledger.fx.rate("EUR", "USD") == D("1.10")  # the valuation table keeps the newest
    assert ledger.fx_history.rate_at("EUR", "USD", 15) == D("1.05")  # the history has both
    again = ledger.record(fixing("EUR", "USD", "1.10", 20))
    assert again.result is Result.DUPLICATE
    other = ledger.record(fixing("EUR", "USD", "1.11", 20))  # same pair and time, other rate
    assert other.result is Result.REJECTED
    assert other.reason.startswith("timestamp_ns: already used by a different event")
    assert ledger.fx_history.rate_at("EUR", "USD", 20) == D("1.10")
    assert ledger.clock_ns == 0  # market data does not move the event clock (retention)


def test_the_ledger_evicts_rates_older_than_the_books_window_after_fills_and_rates():
    ledger = Ledger(correction_window_ns=DAY_NS)
    start = 1_767_225_600 * 10**9
    for hour in range(0, 48):
        ledger.record(fixing("EUR", "USD", f"1.{hour:02d}", start + hour * 3600 * 10**9))
    assert len(ledger.fx_history) == 48  # no fill yet: no window to evict to
    ledger.record(fill("BUY", 1, 100, at_ns=start + 47 * 3600 * 10**9))
    horizon = ledger.book.horizon_ns() - FX_HORIZON_MARGIN_NS
    kept = [rate.time_ns for _, rate in ledger.fx_history.rates()]
    assert kept[0] < horizon <= kept[1]  # the one in force at the horizon, then the window's
    assert len(kept) == 26  # hours 22 (in force at the horizon, 22:45) to 47
    assert ledger.fx_history.rate_at("EUR", "USD", horizon) == D("1.22")


def test_a_restored_ledger_has_the_same_fx_history():
    ledger = Ledger()
    ledger.record(fixing("EUR", "USD", "1.10", 20))
    ledger.record(fixing("USD", "JPY", "150", 20))
    ledger.record(fixing("EUR", "USD", "1.05", 10))
    restored = Ledger()
    restore(restored, capture_rows(ledger), capture(ledger))
    assert restored.fx_history.rates() == ledger.fx_history.rates()
    assert restored.fx.rates() == ledger.fx.rates()
