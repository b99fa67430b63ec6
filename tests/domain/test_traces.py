from decimal import Decimal

from server.domain.ledger import Ledger
from tests.domain.builders import fill

SECOND = 10**9


def test_legs_group_by_trace_and_net_per_instrument():
    ledger = Ledger(trace_ttl_ns=60 * SECOND)
    ledger.record(fill("BUY", 2, 100, instrument="BTC-USD", trace_id="t1", at_ns=10 * SECOND))
    ledger.record(fill("SELL", 2, 101, instrument="BTC-USDT", trace_id="t1", at_ns=11 * SECOND))
    ledger.record(fill("BUY", 1, 5, trace_id="other", at_ns=11 * SECOND))
    trace = ledger.traces.get("t1", now_ns=12 * SECOND)
    assert [leg.step for leg in trace.legs] == [1, 2]
    assert [leg.sequence for leg in trace.legs] == [1, 2]
    assert trace.net["BTC-USD"].quantity == 2
    assert trace.net["BTC-USD"].cash_flow == -200
    assert trace.net["BTC-USDT"].cash_flow == Decimal(202)
    assert trace.expires_at_ns == 71 * SECOND


def test_traces_expire_after_their_ttl():
    ledger = Ledger(trace_ttl_ns=60 * SECOND)
    ledger.record(fill("BUY", 1, 1, trace_id="old", at_ns=10 * SECOND))
    ledger.record(fill("BUY", 1, 1, trace_id="new", at_ns=50 * SECOND))
    assert ledger.traces.get("old", now_ns=70 * SECOND) is None
    assert ledger.traces.expire(now_ns=70 * SECOND) == 1
    assert len(ledger.traces) == 1
    assert ledger.traces.get("new", now_ns=70 * SECOND) is not None


def test_a_late_leg_extends_the_trace():
    ledger = Ledger(trace_ttl_ns=60 * SECOND)
    ledger.record(fill("BUY", 1, 1, trace_id="t", at_ns=10 * SECOND))
    ledger.record(fill("SELL", 1, 1, trace_id="t", at_ns=65 * SECOND))
    assert ledger.traces.expire(now_ns=100 * SECOND) == 0
    assert ledger.traces.get("t", now_ns=100 * SECOND) is not None
