"""Daily P&L: each close records every row's day against its previous close, per row and per
scope, in the instrument's currency and in base; the same after a checkpoint and a replay."""

from __future__ import annotations

from decimal import Decimal

import pytest

from server.domain.events import ClosingMark, DayClose, FxFixing, InvalidEvent
from server.domain.ledger import Ledger, Result
from server.domain.position import PositionKey
from server.domain.state import capture, capture_rows, restore
from server.storage.state_frames import state_frame, state_from_frame
from tests.domain.builders import BASE_NS, fill
from tests.domain.event_builders import instrument

D = Decimal
DAY = 86_400 * 10**9


def close(day: int, *marks: tuple[str, object], account: str = "A1") -> DayClose:
    return DayClose(
        account_id=account,
        trading_date=f"2026-01-{day:02d}",
        timestamp_ns=BASE_NS + (day - 1) * DAY + 22 * 3600 * 10**9,
        marks=tuple(ClosingMark(instrument_id=i, price=D(str(p))) for i, p in marks),
    )


def at(day: int, hour: int = 15) -> int:
    return BASE_NS + (day - 1) * DAY + hour * 3600 * 10**9


def record(ledger: Ledger, *events) -> None:
    for event in events:
        outcome = ledger.record(event)
        assert outcome.result is Result.ACCEPTED, outcome.reason
        assert outcome.applied.refusal is None, outcome.applied.refusal


def day_of(ledger: Ledger, strategy: str = "S1", account: str = "A1"):
    return [
        (d.trading_date, {c: (f.realized_pnl, f.unrealized_change, f.fees, f.net_pnl,
                              f.exposure) for c, f in d.by_currency.items()})
        for d in ledger.pnl.days(account, strategy)
    ]  # fmt: skip


def test_a_worked_week_by_hand():
    ledger = Ledger()
    record(ledger, fill("BUY", 10, 100, commission=1, at_ns=at(1)), close(1, ("AAPL", 105)))
    record(ledger, fill("SELL", 4, 110, commission=1, at_ns=at(2)), close(2, ("AAPL", 108)))
    record(ledger, close(3, ("AAPL", 108)))  # nothing traded, nothing moved: held all the same
    record(ledger, fill("SELL", 6, 100, at_ns=at(4)), close(4))  # flat
    record(ledger, close(5))  # flat and quiet: no day
    assert day_of(ledger) == [
        # realized, change in unrealized, fees, net, exposure
        ("2026-01-01", {"USD": (0, 50, 1, 49, 1050)}),
        # sold 4 @110 from avg 100: 40; 6 left @108: 48 unrealized (was 50): -2; fee 1
        ("2026-01-02", {"USD": (40, -2, 1, 37, 648)}),
        ("2026-01-03", {"USD": (0, 0, 0, 0, 648)}),
        ("2026-01-04", {"USD": (0, -48, 0, -48, 0)}),
    ]
    # The account-level book has the same days (one strategy).
    assert day_of(ledger, "") == day_of(ledger)
    # Each day's net is the change in what the position and its cash are worth.
    assert sum(d[1]["USD"][3] for d in day_of(ledger)) == -1000 - 1 + 440 - 1 + 600


def test_rows_record_their_start_and_end_and_each_scope_sums_its_rows():
    ledger = Ledger()
    record(
        ledger,
        fill("BUY", 10, 100, strategy="S1", at_ns=at(1)),
        fill("SELL", 5, 100, strategy="S2", at_ns=at(1, 16)),
        fill("BUY", 2, 50, strategy="S1", instrument="MSFT", at_ns=at(1, 17)),
    )
    outcome = ledger.record(close(1, ("AAPL", 101), ("MSFT", 49)))
    days = {day.key: day for day in outcome.applied.days}
    assert set(days) == {
        PositionKey("A1", "S1", "AAPL"), PositionKey("A1", "S2", "AAPL"),
        PositionKey("A1", "S1", "MSFT"), PositionKey("A1", "", "AAPL"),
        PositionKey("A1", "", "MSFT"),
    }  # fmt: skip
    s2 = days[PositionKey("A1", "S2", "AAPL")]
    assert (s2.start_quantity, s2.start_mark, s2.end_quantity, s2.end_mark) == (0, None, -5, 101)
    assert (s2.unrealized_pnl, s2.exposure) == (-5, -505)
    (s1,) = ledger.pnl.days("A1", "S1")
    assert s1.by_currency["USD"].unrealized_pnl == 10 - 2
    assert s1.by_currency["USD"].exposure == 1010 + 98
    (account,) = ledger.pnl.days("A1", "")
    assert account.by_currency["USD"].exposure == 505 + 98
    assert account.by_currency["USD"].gross_exposure == 505 + 98
    assert ledger.pnl.scopes("A1") == ["", "S1", "S2"]


def test_base_figures_convert_at_the_rates_the_ledger_holds_at_the_close():
    ledger = Ledger()
    record(
        ledger,
        instrument("SAP", "EUR"),
        FxFixing(base="EUR", quote="USD", rate=D("1.1"), timestamp_ns=at(1, 9)),
        fill("BUY", 10, 100, instrument="SAP", commission=1, at_ns=at(1)),
        close(1, ("SAP", 102)),
    )
    (day,) = ledger.pnl.days("A1", "S1")
    assert day.base_currency == "USD" and not day.missing_fx_rates
    assert (day.unrealized_pnl_base, day.fees_base, day.net_pnl_base) == (
        D("22.0"),
        D("1.1"),
        D("20.9"),
    )
    assert day.exposure_base == D("1122.0")
    # A currency without a rate: base figures missing, named.
    record(ledger, instrument("7203", "JPY"), fill("BUY", 1, 2000, instrument="7203"))
    record(ledger, close(2, ("SAP", 102), ("7203", 2100)))
    second = ledger.pnl.days("A1", "S1")[1]
    assert second.net_pnl_base is None and second.missing_fx_rates == {"JPY"}
    assert second.by_currency["JPY"].net_pnl == 100


def test_a_date_closed_already_or_an_earlier_one_changes_nothing():
    ledger = Ledger()
    record(ledger, fill("BUY", 1, 10, at_ns=at(2)), close(2, ("AAPL", 11)))
    assert ledger.record(close(2, ("AAPL", 12))).result is Result.REJECTED  # the id: reused
    earlier = ledger.record(close(1, ("AAPL", 12)))
    assert earlier.result is Result.ACCEPTED and earlier.applied.refusal is not None
    assert "closed through 2026-01-02" in str(earlier.applied.refusal)
    assert len(ledger.pnl.days("A1", "S1")) == 1


@pytest.mark.parametrize(
    ("field", "value"), [("trading_date", "2026-01"), ("trading_date", "01/02/2026")]
)
def test_a_close_needs_a_trading_date(field, value):
    with pytest.raises(InvalidEvent) as raised:
        DayClose(account_id="A1", trading_date=value, timestamp_ns=at(1))
    assert raised.value.field == field


def test_a_checkpoint_in_the_middle_and_a_replay_record_the_same_days():
    events = [
        instrument("SAP", "EUR"),
        FxFixing(base="EUR", quote="USD", rate=D("1.1"), timestamp_ns=at(1, 9)),
        fill("BUY", 10, 100, at_ns=at(1)),
        fill("BUY", 3, 50, instrument="SAP", strategy="S2", commission=1, at_ns=at(1)),
        close(1, ("AAPL", 105), ("SAP", 49)),
        fill("SELL", 4, 110, commission=1, at_ns=at(2)),
        FxFixing(base="EUR", quote="USD", rate=D("1.2"), timestamp_ns=at(2, 9)),
        close(2, ("AAPL", 108), ("SAP", 52)),
        fill("SELL", 3, 55, instrument="SAP", strategy="S2", at_ns=at(3)),
        close(3, ("AAPL", 107)),
    ]
    straight = Ledger()
    record(straight, *events)
    for cut in range(len(events) + 1):
        before = Ledger()
        record(before, *events[:cut])
        after = Ledger()
        state = state_from_frame(state_frame(capture(before)))  # through the stored form
        restore(after, capture_rows(before), state)
        after.applied_sequence = after.sequence = before.sequence
        record(after, *events[cut:])
        for scope in ("", "S1", "S2"):
            assert after.pnl.days("A1", scope) == straight.pnl.days("A1", scope), (cut, scope)
    replayed = Ledger()
    for number, event in enumerate(events, start=1):
        assert replayed.admit(event).sequence == number
        replayed.apply(event, number)
    assert replayed.pnl.all_days() == straight.pnl.all_days()
