"""Summaries and positions are kept encoded until what they were read from changes: a repeated
read is not recomputed, and no change (a fill, a mark even at the same price, an FX rate, a
definition, a day close) leaves a stale answer."""

from __future__ import annotations

from decimal import Decimal

from portfolio.v1 import portfolio_pb2 as pb
from server.domain.events import ClosingMark, DayClose
from tests.api.protocol import BASE_SECONDS, acks, pb_fill
from tests.api.test_reference_and_cash import define, fx, mark, stream_marks


def summary(stub) -> pb.PortfolioSummary:
    return stub.GetPortfolioSummary(pb.GetPortfolioSummaryRequest(account_id="A1"), timeout=10)


def portfolio(stub) -> pb.StrategyPortfolio:
    request = pb.GetStrategyPortfolioRequest(strategy_id="S1", account_id="A1")
    return stub.GetStrategyPortfolio(request, timeout=10)


def test_a_repeated_summary_is_not_recomputed(stub, server):
    acks(stub, pb_fill("BUY", 10, 100))
    service = server.running.service
    calls = []
    computed = service.reads.portfolio_summary

    def counted(*args):
        calls.append(args)
        return computed(*args)

    service.reads.portfolio_summary = counted
    first, second = summary(stub), summary(stub)
    assert first == second and len(calls) == 1
    query = stub.Query(pb.PortfolioQuery(get_portfolio_summary=pb.GetPortfolioSummaryRequest(
        account_id="A1")), timeout=10)  # fmt: skip
    assert query.portfolio_summary == first and len(calls) == 1
    acks(stub, pb_fill("BUY", 1, 100))
    assert summary(stub).account_totals.open_positions == 1 and len(calls) == 2


def test_no_change_leaves_a_stale_answer(stub):
    define(stub, "SAP", currency="EUR")
    acks(stub, pb_fill("BUY", 10, 100), pb_fill("BUY", 10, 50, instrument="SAP"))
    before = portfolio(stub), summary(stub)
    stream_marks(stub, pb.MarkBatch(marks=[mark("AAPL", 10, mark="100")]))  # the same price
    row = {p.instrument_id: p for p in portfolio(stub).positions}["AAPL"]
    assert row.mark_source == pb.MARK_SOURCE_MARKET  # was the last fill's: a new answer
    stream_marks(stub, pb.MarkBatch(marks=[mark("AAPL", 11, mark="110")]))
    assert summary(stub).by_currency[1].totals.unrealized_pnl == "100"
    assert not before[1].HasField("base_totals")  # no EUR rate yet
    stream_marks(stub, pb.MarkBatch(fx_rates=[fx("EUR", "USD", "1.1")]))
    assert summary(stub).HasField("base_totals")
    acks(stub, pb_fill("SELL", 10, 110))
    assert summary(stub).by_currency[1].totals.realized_pnl == "100"


def test_the_cache_keeps_the_latest_version_bounded_in_number_and_size():
    from server.api.answers import LARGEST, AnswerCache

    cache = AnswerCache(capacity=2)
    built = []

    def build(size: int):
        def make() -> pb.Position:
            built.append(size)
            return pb.Position(account_id="A" * size)

        return make

    assert cache.answer("a", 1, build(1)) == cache.answer("a", 1, build(1))
    assert built == [1]
    cache.answer("a", 2, build(1))  # a new version: built again
    cache.answer("b", 2, build(2))
    cache.answer("c", 2, build(3))  # over capacity: "a" (least recently asked) goes
    cache.answer("a", 2, build(1))
    assert built == [1, 1, 2, 3, 1]
    cache.answer("big", 1, build(LARGEST + 1))
    cache.answer("big", 1, build(LARGEST + 1))  # too large to keep: built each time
    assert built[-2:] == [LARGEST + 1, LARGEST + 1]


def position(stub, instrument: str = "SAP") -> pb.Position:
    request = pb.GetPositionRequest(account_id="A1", instrument_id=instrument, strategy_id="S1")
    return stub.GetPosition(request, timeout=10)


def test_a_repeated_position_is_not_recomputed(stub, server):
    acks(stub, pb_fill("BUY", 10, 100))
    service = server.running.service
    calls = []
    computed = service.get_position

    def counted(*args):
        calls.append(args)
        return computed(*args)

    service.get_position = counted
    first, second = position(stub, "AAPL"), position(stub, "AAPL")
    assert first == second and first.quantity == "10" and len(calls) == 1
    asked = pb.GetPositionRequest(account_id="A1", instrument_id="AAPL", strategy_id="S1")
    query = stub.Query(pb.PortfolioQuery(get_position=asked), timeout=10)
    assert query.position == first and len(calls) == 1
    account_level = pb.GetPositionRequest(account_id="A1", instrument_id="AAPL")
    assert stub.GetPosition(account_level, timeout=10).level == pb.POSITION_LEVEL_ACCOUNT
    assert len(calls) == 2  # another row: its own answer


def test_a_kept_position_shows_every_change_of_what_it_was_read_from(stub, server):
    define(stub, "SAP", currency="EUR")
    acks(stub, pb_fill("BUY", 10, 50, instrument="SAP"))
    kept = position(stub)
    assert kept == position(stub) and kept.quantity == "10"
    acks(stub, pb_fill("BUY", 5, 50, instrument="SAP"))  # a fill of the row
    assert position(stub).quantity == "15"
    acks(stub, pb_fill("BUY", 1, 52, instrument="SAP", strategy="S2"))  # another row's fill
    assert (position(stub).market_price, position(stub).unrealized_pnl) == ("52", "30")
    stream_marks(stub, pb.MarkBatch(marks=[mark("SAP", 10, mark="55")]))  # a mark
    marked = position(stub)
    assert (marked.market_price, marked.unrealized_pnl) == ("55", "75")
    assert (marked.fx_rate, marked.unrealized_pnl_base) == ("", "")  # no EUR rate yet
    stream_marks(stub, pb.MarkBatch(fx_rates=[fx("EUR", "USD", "1.1")]))  # an FX rate
    converted = position(stub)
    assert (converted.fx_rate, converted.unrealized_pnl_base) == ("1.1", "82.5")
    assert converted.day_unrealized_change == "75"  # no close yet: since the row opened
    close = DayClose(
        account_id="A1", trading_date="2026-01-05",
        timestamp_ns=(BASE_SECONDS + 4 * 86_400 + 79_200) * 10**9,
        marks=(ClosingMark(instrument_id="SAP", price=Decimal(54)),),
    )  # fmt: skip
    (outcome,) = server.call(server.running.service.ingest([close]))  # a day close
    assert outcome.result.name == "ACCEPTED", outcome.reason
    closed = position(stub)
    assert closed.day_unrealized_change == "15"  # 15 x (55 - 54) since the close
    assert closed.unrealized_pnl == "75"


def test_a_kept_answer_goes_into_a_query_branch_as_encoding_would_put_it():
    from server.api.servicer import QUERIES, in_branch

    for size in (0, 1, 127, 128, 20_000, 3_000_000):
        answer = pb.Position(account_id="A" * size)
        framed = pb.PortfolioResponse(position=answer).SerializeToString()
        assert in_branch("position", answer.SerializeToString()) == framed
    summary = pb.PortfolioSummary(account_id="A1", as_of_sequence=7)
    for field, _ in QUERIES.values():  # every branch's tag
        if field == "portfolio_summary":
            expected = pb.PortfolioResponse(portfolio_summary=summary).SerializeToString()
            assert in_branch(field, summary.SerializeToString()) == expected
        response = pb.PortfolioResponse.FromString(in_branch(field, b""))
        assert response.WhichOneof("response") == field
