"""GetPerformance, GetRiskMetrics and a strategy portfolio's track record through the gRPC API,
on a week of trading days closed by the service (figures by hand)."""

from __future__ import annotations

import math
import statistics
from decimal import Decimal

import grpc
import pytest

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.domain.events import ClosingMark, DayClose
from tests.api.protocol import BASE_SECONDS, acks, pb_fill
from tests.conftest import ServerThread, start_test_server

DAY_SECONDS = 86_400
# S1 holds 10 AAPL bought at 100, S2 one MSFT at 100; the closes' marks make these days:
AAPL_MARKS = [110, 105, 108, 100, 112]  # S1: +100, -50, +30, -80, +120
MSFT_MARKS = [101, 103, 102, 104, 103]  # S2: +1, +2, -1, +2, -1
S1_DAYS = [100, -50, 30, -80, 120]
S2_DAYS = [1, 2, -1, 2, -1]


def close(day: int) -> DayClose:
    return DayClose(
        account_id="A1",
        trading_date=f"2026-01-{5 + day:02d}",
        timestamp_ns=(BASE_SECONDS + 4 * DAY_SECONDS + day * DAY_SECONDS + 79_200) * 10**9,
        marks=(
            ClosingMark(instrument_id="AAPL", price=Decimal(AAPL_MARKS[day])),
            ClosingMark(instrument_id="MSFT", price=Decimal(MSFT_MARKS[day])),
        ),
    )


@pytest.fixture(scope="module")
def week():
    server = start_test_server()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            acks(
                stub,
                pb_fill("BUY", 10, 100, strategy="S1", venue="ARCA", commission=1),
                pb_fill("BUY", 1, 100, strategy="S2", instrument="MSFT", venue="ISLAND"),
            )
        for day in range(5):
            journal(server, close(day))
        yield server
    finally:
        server.stop()


def journal(server: ServerThread, event: DayClose) -> None:
    (outcome,) = server.call(server.running.service.ingest([event]))
    assert outcome.result.name == "ACCEPTED", outcome.reason


@pytest.fixture
def stub(week):
    with grpc.insecure_channel(week.address) as channel:
        yield pb_grpc.PortfolioManagerStub(channel)


def s1_days() -> list[Decimal]:
    return [Decimal(S1_DAYS[0] - 1), *map(Decimal, S1_DAYS[1:])]  # day 1 paid the fee


def test_the_pnl_history_is_the_week(stub):
    history = stub.GetPnlHistory(pb.GetPnlHistoryRequest(account_id="A1", strategy_id="S1"))
    assert [Decimal(d.net_pnl_base) for d in history.days] == s1_days()
    account = stub.GetPnlHistory(pb.GetPnlHistoryRequest(account_id="A1"))
    assert [Decimal(d.net_pnl_base) for d in account.days] == [
        a + b for a, b in zip(s1_days(), S2_DAYS, strict=True)
    ]
    assert [d.by_currency[0].exposure for d in account.days][-1] == "1223"


def test_performance_of_a_strategy(stub):
    found = stub.GetPerformance(pb.GetPerformanceRequest(account_id="A1", strategy_id="S1"))
    days = [float(d) for d in s1_days()]
    assert found.trading_days == 5 and Decimal(found.total_daily_pnl) == sum(s1_days())
    volatility = statistics.stdev(days)
    assert found.volatility == pytest.approx(volatility)
    assert found.sharpe_ratio == pytest.approx(statistics.fmean(days) / volatility * math.sqrt(252))
    assert found.HasField("sortino_ratio")
    # The curve: 99, 49, 79, -1, 119: down 100 from the first close to the fourth.
    assert (found.max_drawdown, found.max_drawdown_peak_date) == ("100", "2026-01-05")
    assert found.max_drawdown_trough_date == "2026-01-08"
    assert found.max_drawdown_recovered_date == "2026-01-09"
    (usd,) = found.by_currency
    assert (usd.currency, usd.trade_count, usd.round_trips, usd.open_trips) == ("USD", 1, 0, 1)
    assert not usd.HasField("win_rate")  # no trip closed yet
    # Now, at the book's price (the last fill's: no mark streamed; a close's marks are its own).
    assert (usd.gross_pnl, usd.fees, usd.net_pnl) == ("0", "1", "-1")
    assert [(v.venue, v.fills, v.volume, v.fees) for v in found.venues] == [
        ("ARCA", 1, "1000", "1")
    ]
    assert found.inception_time.seconds > 0


def test_risk_metrics_by_hand(stub):
    found = stub.GetRiskMetrics(pb.GetRiskMetricsRequest(account_id="A1", strategy_id="S1"))
    # At the book's price now (the last fill's, 100: no mark streamed).
    assert (found.total.long, found.total.gross, found.total.net) == ("1000", "1000", "1000")
    assert found.largest_instrument == "AAPL" and found.concentration == "1"
    assert found.trading_days == 5 and found.lookback_days == 250
    # 5 days: the k-th worst with k = ceil(0.05 x 5) = 1: the -80 day, at 95% and at 99%.
    assert [
        (v.confidence, v.value_at_risk, v.expected_shortfall, v.days_in_tail)
        for v in found.value_at_risk
    ] == [("0.95", "80", "80", 1), ("0.99", "80", "80", 1)]
    assert found.volatility == pytest.approx(statistics.stdev(float(d) for d in s1_days()))
    assert list(found.correlations) == []  # a strategy's own: no pairs


def test_account_risk_names_instruments_classes_and_correlations(stub):
    found = stub.GetRiskMetrics(pb.GetRiskMetricsRequest(account_id="A1", lookback_days=3))
    assert found.trading_days == 3
    assert [e.name for e in found.by_instrument][:1] == ["AAPL"]
    assert [e.name for e in found.by_asset_class] == ["UNSPECIFIED"]
    assert [e.name for e in found.by_currency] == ["USD"]
    (pair,) = found.correlations
    # Over the lookback: the last 3 days.
    expected = statistics.correlation(
        [float(d) for d in s1_days()[-3:]], [float(d) for d in S2_DAYS[-3:]]
    )
    assert (pair.strategy_a, pair.strategy_b, pair.days) == ("S1", "S2", 3)
    assert pair.correlation == pytest.approx(expected)
    via_query = stub.Query(
        pb.PortfolioQuery(get_risk_metrics=pb.GetRiskMetricsRequest(account_id="A1"))
    )
    assert via_query.risk_metrics.account_id == "A1"
    performance = stub.Query(
        pb.PortfolioQuery(get_performance=pb.GetPerformanceRequest(account_id="A1"))
    )
    assert performance.performance.trading_days == 5


def test_value_at_risk_at_the_confidence_levels_asked(stub):
    found = stub.GetRiskMetrics(
        pb.GetRiskMetricsRequest(
            account_id="A1", strategy_id="S1", confidence_levels=["0.6", "0.9"]
        )
    )
    # 5 days: k = ceil(0.4 x 5) = 2 at 60% (the -50 day; the tail -80, -50), 1 at 90%.
    assert [
        (v.confidence, v.value_at_risk, v.expected_shortfall, v.days_in_tail)
        for v in found.value_at_risk
    ] == [("0.6", "50", "65", 2), ("0.9", "80", "80", 1)]
    for levels, field in ((["1"], "confidence_levels[0]"), (["0.95", "x"], "confidence_levels[1]"),
                          (["0.9"] * 6, "confidence_levels")):  # fmt: skip
        with pytest.raises(grpc.RpcError) as error:
            stub.GetRiskMetrics(pb.GetRiskMetricsRequest(account_id="A1", confidence_levels=levels))
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in error.value.details()


def test_performance_of_one_instrument(stub):
    found = stub.GetPerformance(pb.GetPerformanceRequest(account_id="A1", instrument_id="MSFT"))
    (usd,) = found.by_currency
    assert (usd.trade_count, usd.fees) == (1, "0")  # the MSFT row only (S1's fee is AAPL's)
    assert list(found.venues) == [] and found.trading_days == 5  # the account's days
    with pytest.raises(grpc.RpcError) as error:
        stub.GetPerformance(pb.GetPerformanceRequest(account_id="A1", instrument_id="TSLA"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_strategy_portfolio_carries_its_track_record(stub):
    portfolio = stub.GetStrategyPortfolio(
        pb.GetStrategyPortfolioRequest(strategy_id="S1", account_id="A1")
    )
    assert portfolio.trade_count == 1 and portfolio.inception_time.seconds > 0
    assert (portfolio.total_pnl, portfolio.total_fees) == ("-1", "1")
    assert portfolio.max_drawdown == "100" and portfolio.HasField("sharpe_ratio")


@pytest.mark.parametrize(
    ("call", "request_message", "code", "field"),
    [
        ("GetPerformance", pb.GetPerformanceRequest(), "INVALID_ARGUMENT", "account_id"),
        ("GetPerformance", pb.GetPerformanceRequest(account_id="A9"), "NOT_FOUND", ""),
        ("GetPerformance", pb.GetPerformanceRequest(strategy_id="S9"), "NOT_FOUND", ""),
        (
            "GetPerformance",
            pb.GetPerformanceRequest(account_id="A1", from_date="x"),
            "INVALID_ARGUMENT",
            "from_date",
        ),
        ("GetRiskMetrics", pb.GetRiskMetricsRequest(), "INVALID_ARGUMENT", "account_id"),
        (
            "GetRiskMetrics",
            pb.GetRiskMetricsRequest(account_id="A1", lookback_days=9999),
            "INVALID_ARGUMENT",
            "lookback_days",
        ),
        (
            "GetRiskMetrics",
            pb.GetRiskMetricsRequest(account_id="A1", strategy_id="S9"),
            "NOT_FOUND",
            "",
        ),
    ],
)
def test_bad_requests_say_which_field(stub, call, request_message, code, field):
    with pytest.raises(grpc.RpcError) as error:
        getattr(stub, call)(request_message)
    assert error.value.code() == getattr(grpc.StatusCode, code)
    assert field in error.value.details()


def test_last_a_closed_trip_counts_as_a_win(week, stub):
    (sold,) = acks(stub, pb_fill("SELL", 1, 110, strategy="S2", instrument="MSFT", venue="ARCA"))
    assert sold.result == pb.EVENT_RESULT_ACCEPTED
    found = stub.GetPerformance(pb.GetPerformanceRequest(account_id="A1", strategy_id="S2"))
    (usd,) = found.by_currency
    assert (usd.round_trips, usd.wins, usd.win_rate, usd.expectancy) == (1, 1, 1.0, "10")
    assert usd.largest_win == "10" and not usd.HasField("profit_factor")  # no loss to divide
    account = stub.GetPerformance(pb.GetPerformanceRequest(account_id="A1"))
    assert {v.venue: v.fills for v in account.venues} == {"ARCA": 2, "ISLAND": 1}
    across = stub.GetPerformance(pb.GetPerformanceRequest(strategy_id="S2"))  # every account
    assert across.by_currency[0].round_trips == 1 and across.trading_days == 5


def test_multi_step_trades_per_venue():
    server = start_test_server()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            first = pb_fill("BUY", 2, 100, account="T1", trace_id="tr-1", venue="ARCA")
            second = pb_fill("SELL", 2, 101, account="T1", trace_id="tr-1", venue="ISLAND")
            first.fill.timestamp.FromNanoseconds(BASE_SECONDS * 10**9)
            second.fill.timestamp.FromNanoseconds(BASE_SECONDS * 10**9 + 5_000_000)
            acks(stub, first, second)
            found = stub.GetPerformance(pb.GetPerformanceRequest(account_id="T1"))
    finally:
        server.stop()
    assert [
        (v.venue, v.steps, v.average_step_latency.ToMilliseconds()) for v in found.trace_venues
    ] == [("ISLAND", 1, 5)]  # a trace's first leg is no step
    assert not found.trace_venues[0].HasField("success_rate")  # the trace has not ended
