"""Traces: legs grouped by trace id, each trace living a TTL past the receipt of its latest leg
(the time the service passes in), whatever the legs' own fill times."""

from decimal import Decimal

from server.domain.ledger import Ledger
from server.domain.traces import TraceBook
from tests.domain.builders import fill

SECOND = 10**9
HOUR = 3600 * SECOND


def test_legs_group_by_trace_and_net_per_instrument():
    ledger = Ledger(trace_ttl_ns=60 * SECOND)
    ledger.record(fill("BUY", 2, 100, instrument="BTC-USD", trace_id="t1", at_ns=10 * SECOND))
    ledger.record(fill("SELL", 2, 101, instrument="BTC-USDT", trace_id="t1", at_ns=11 * SECOND))
    ledger.record(fill("BUY", 1, 5, trace_id="other", at_ns=11 * SECOND))
    ledger.traces.received(11 * SECOND)
    trace = ledger.traces.get("t1", now_ns=12 * SECOND)
    assert [leg.step for leg in trace.legs] == [1, 2]
    assert [leg.sequence for leg in trace.legs] == [1, 2]
    assert trace.net["BTC-USD"].quantity == 2
    assert trace.net["BTC-USD"].cash_flow == -200
    assert trace.net["BTC-USDT"].cash_flow == Decimal(202)
    assert (trace.first_fill_ns, trace.last_fill_ns) == (10 * SECOND, 11 * SECOND)
    assert trace.received_at_ns == 11 * SECOND
    assert trace.expires_at_ns == 71 * SECOND


def test_traces_expire_a_ttl_after_their_latest_leg_was_received():
    ledger = Ledger(trace_ttl_ns=60 * SECOND)
    ledger.record(fill("BUY", 1, 1, trace_id="old", at_ns=10 * SECOND))
    ledger.traces.received(10 * SECOND)
    ledger.record(fill("BUY", 1, 1, trace_id="new", at_ns=10 * SECOND))
    ledger.traces.received(50 * SECOND)
    assert ledger.traces.get("old", now_ns=70 * SECOND) is None
    assert ledger.traces.expire(now_ns=70 * SECOND) == 1
    assert len(ledger.traces) == 1
    assert ledger.traces.get("new", now_ns=70 * SECOND) is not None
    assert ledger.traces.expire(now_ns=110 * SECOND) == 1
    assert len(ledger.traces) == 0


def test_a_leg_back_filled_hours_later_does_not_expire_on_arrival():
    ledger = Ledger(trace_ttl_ns=300 * SECOND)
    now = 10 * HOUR
    ledger.record(fill("BUY", 1, 100, trace_id="t", at_ns=now - 3 * HOUR))
    ledger.record(fill("SELL", 1, 101, trace_id="t", at_ns=now - 3 * HOUR + SECOND))
    ledger.traces.received(now)
    assert ledger.traces.expire(now_ns=now + SECOND) == 0
    trace = ledger.traces.get("t", now_ns=now + 299 * SECOND)
    assert trace is not None
    assert trace.expires_at_ns == now + 300 * SECOND
    assert trace.last_fill_ns == now - 3 * HOUR + SECOND  # the fill times stay as they were
    assert ledger.traces.get("t", now_ns=now + 300 * SECOND) is None
    assert ledger.traces.expire(now_ns=now + 300 * SECOND) == 1


def test_a_late_leg_extends_the_trace_from_its_receipt():
    ledger = Ledger(trace_ttl_ns=60 * SECOND)
    ledger.record(fill("BUY", 1, 1, trace_id="t", at_ns=65 * SECOND))
    ledger.traces.received(65 * SECOND)
    ledger.record(fill("SELL", 1, 1, trace_id="t", at_ns=10 * SECOND))  # filled long before
    ledger.traces.received(90 * SECOND)
    assert ledger.traces.expire(now_ns=140 * SECOND) == 0
    assert ledger.traces.get("t", now_ns=149 * SECOND).expires_at_ns == 150 * SECOND


def test_a_leg_not_yet_stamped_cannot_expire_and_the_next_look_stamps_it():
    ledger = Ledger(trace_ttl_ns=60 * SECOND)
    ledger.record(fill("BUY", 1, 1, trace_id="t", at_ns=10 * SECOND))
    ledger.traces.received(10 * SECOND)
    ledger.record(fill("BUY", 1, 1, trace_id="t", at_ns=20 * SECOND))  # no receipt time yet
    assert ledger.traces.expire(now_ns=100 * SECOND) == 0  # stamped at 100: lives to 160
    assert ledger.traces.get("t", now_ns=159 * SECOND).received_at_ns == 100 * SECOND
    assert ledger.traces.expire(now_ns=160 * SECOND) == 1


def test_recovery_passes_each_legs_receipt_bound_and_a_trace_keeps_its_latest():
    book = TraceBook(ttl_ns=60 * SECOND)
    book.record(fill("BUY", 1, 1, trace_id="t", at_ns=1), 1, Decimal(1), received_ns=50 * SECOND)
    book.record(fill("BUY", 1, 1, trace_id="t", at_ns=2), 2, Decimal(1), received_ns=40 * SECOND)
    trace = book.get("t", now_ns=60 * SECOND)
    assert (trace.received_at_ns, trace.expires_at_ns) == (50 * SECOND, 110 * SECOND)
    assert [leg.sequence for leg in trace.legs] == [1, 2]
    assert book.expire(now_ns=109 * SECOND) == 0
    assert book.expire(now_ns=110 * SECOND) == 1


def test_the_same_legs_and_receipt_times_rebuild_the_same_traces():
    legs = [fill("BUY", n, 10, trace_id=t, at_ns=n) for n, t in enumerate("aba", 1)]

    def build() -> TraceBook:
        book = TraceBook(ttl_ns=60 * SECOND)
        for n, (leg, received) in enumerate(zip(legs, [5, 7, 9], strict=True), 1):
            book.record(leg, n, Decimal(1))
            book.received(received * SECOND)
        return book

    first, second = build(), build()
    for trace_id in ("a", "b"):
        assert first.get(trace_id, 10 * SECOND) == second.get(trace_id, 10 * SECOND)
    assert first.get("a", 10 * SECOND).expires_at_ns == 69 * SECOND


def test_venues_of_steps_their_latency_and_how_their_traces_ended():
    import dataclasses

    ledger = Ledger(trace_ttl_ns=60 * SECOND)
    legs = [
        ("t1", "BUY", "ARCA", 10 * SECOND),
        ("t1", "SELL", "ISLAND", 10 * SECOND + 5_000_000),  # 5 ms later: done (flat)
        ("t2", "BUY", "ARCA", 20 * SECOND),  # left open
        ("t2", "BUY", "ARCA", 21 * SECOND),  # 1 s later, still open
    ]
    for trace_id, side, venue, at_ns in legs:
        leg = fill(side, 1, 100, trace_id=trace_id, at_ns=at_ns)
        ledger.record(dataclasses.replace(leg, venue=venue))
    ledger.traces.received(30 * SECOND)
    venues = ledger.traces.venues
    assert (venues[("A1", "ISLAND")].steps, venues[("A1", "ISLAND")].latency_ns) == (1, 5_000_000)
    assert (venues[("A1", "ARCA")].steps, venues[("A1", "ARCA")].latency_ns) == (1, SECOND)
    assert venues[("A1", "ARCA")].success_rate is None  # no trace ended yet
    assert ledger.traces.expire(now_ns=100 * SECOND) == 2
    arca, island = venues[("A1", "ARCA")], venues[("A1", "ISLAND")]
    assert (arca.legs_done, arca.legs_open, arca.success_rate) == (1, 2, 1 / 3)
    assert (island.legs_done, island.legs_open, island.success_rate) == (1, 0, 1.0)
