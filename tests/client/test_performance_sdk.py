"""The SDK's P&L history, performance and risk calls (and their Query values, and a strategy
portfolio's track record) against a real service, sync and asyncio alike, on a week of trading
days the service closed; figures by hand. Then how the SDK reads what the service leaves
absent (None, never zero) and a malformed date.

S1 holds 10 AAPL bought at 100 (fee 1), S2 one MSFT at 100; S3 made two round trips in IBM
before the first close: +10 and -3, then held nothing, so only its first day was recorded (a
flat row that did not move has no day). The closes' marks make the days below.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from client import (
    AsyncPortfolioClient,
    EventResult,
    Exposure,
    Fill,
    PerformanceQuery,
    PnlHistoryQuery,
    PortfolioClient,
    PortfolioError,
    ProtocolViolation,
    RiskMetricsQuery,
    Side,
    ValueAtRisk,
    wire,
)
from portfolio.v1 import portfolio_pb2 as pb
from server.domain.events import ClosingMark, DayClose
from tests.conftest import ServerThread, start_test_server

T0 = datetime(2026, 1, 2, 14, 30, tzinfo=UTC)
FIRST_DATE = date(2026, 1, 5)
AAPL_MARKS = [110, 105, 108, 100, 112]
MSFT_MARKS = [101, 103, 102, 104, 103]
S1_DAYS = [Decimal(d) for d in (99, -50, 30, -80, 120)]  # the first day paid the fee
S2_DAYS = [Decimal(d) for d in (1, 2, -1, 2, -1)]
S3_DAYS = [Decimal(7)]


def closed_at(day: int) -> datetime:
    """22:00 UTC on each trading date."""
    return datetime.combine(FIRST_DATE + timedelta(days=day), datetime.min.time(), UTC) + (
        timedelta(hours=22)
    )


def fill(number: int, strategy: str, instrument: str, side: Side, quantity: int, price: int,
         **fields: object) -> Fill:  # fmt: skip
    return Fill(
        fill_id=f"perf-{number}",
        account_id="A1",
        strategy_id=strategy,
        instrument_id=instrument,
        side=side,
        quantity=Decimal(quantity),
        price=Decimal(price),
        timestamp=T0 + timedelta(minutes=number),
        **fields,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def week() -> Iterator[ServerThread]:
    server = start_test_server()
    try:
        with PortfolioClient(server.address) as pm:
            acks = pm.ingest(
                [
                    fill(1, "S1", "AAPL", Side.BUY, 10, 100, venue="ARCA", commission=Decimal(1)),
                    fill(2, "S2", "MSFT", Side.BUY, 1, 100, venue="ISLAND"),
                    fill(3, "S3", "IBM", Side.BUY, 2, 50, venue="ARCA"),
                    fill(4, "S3", "IBM", Side.SELL, 2, 55, venue="ARCA"),
                    fill(5, "S3", "IBM", Side.BUY, 1, 60, venue="IEX"),
                    fill(6, "S3", "IBM", Side.SELL, 1, 57, venue="IEX"),
                ]
            )
            assert {ack.result for ack in acks} == {EventResult.ACCEPTED}
        for day in range(5):
            close = DayClose(
                account_id="A1",
                trading_date=(FIRST_DATE + timedelta(days=day)).isoformat(),
                timestamp_ns=int(closed_at(day).timestamp()) * 10**9,
                marks=(
                    ClosingMark(instrument_id="AAPL", price=Decimal(AAPL_MARKS[day])),
                    ClosingMark(instrument_id="MSFT", price=Decimal(MSFT_MARKS[day])),
                ),
            )
            (outcome,) = server.call(server.running.service.ingest([close]))
            assert outcome.result.name == "ACCEPTED", outcome.reason
        yield server
    finally:
        server.stop()


@pytest.fixture
def pm(week: ServerThread) -> Iterator[PortfolioClient]:
    with PortfolioClient(week.address) as client:
        yield client


def test_the_pnl_history_in_sdk_types(pm: PortfolioClient):
    history = pm.get_pnl_history("A1", "S1")
    assert (history.account_id, history.strategy_id, history.base_currency) == ("A1", "S1", "USD")
    assert [d.trading_date for d in history.days] == [
        FIRST_DATE + timedelta(days=n) for n in range(5)
    ]
    assert [d.closed_at for d in history.days] == [closed_at(n) for n in range(5)]
    assert [d.net_pnl_base for d in history.days] == S1_DAYS
    first = history.days[0]
    assert not first.late and first.missing_fx_rates == () and first.sequence > 0
    (usd,) = first.by_currency
    # Bought at 100, marked 110: unrealized 100 (all of it the day's change), fee 1.
    assert (usd.currency, usd.realized_pnl, usd.unrealized_pnl, usd.unrealized_change) == (
        "USD", 0, 100, 100,
    )  # fmt: skip
    assert (usd.fees, usd.net_pnl, usd.exposure, usd.gross_exposure) == (1, 99, 1100, 1100)
    assert isinstance(usd.net_pnl, Decimal) and isinstance(first.fees_base, Decimal)
    account = pm.get_pnl_history("A1")
    assert [d.net_pnl_base for d in account.days] == [
        a + b + c for a, b, c in zip(S1_DAYS, S2_DAYS, S3_DAYS + [0] * 4, strict=True)
    ]
    middle = pm.get_pnl_history("A1", "S1", from_date=date(2026, 1, 6), to_date=date(2026, 1, 8))
    assert middle.days == history.days[1:4]
    query = PnlHistoryQuery(account_id="A1", strategy_id="S1", from_date=date(2026, 1, 9))
    assert pm.query(query).days == history.days[4:]


def test_performance_in_sdk_types(pm: PortfolioClient):
    found = pm.get_performance("A1", "S1")
    days = [float(d) for d in S1_DAYS]
    assert found.trading_days == 5 and found.days_missing_base == 0
    assert found.total_daily_pnl == sum(S1_DAYS) == Decimal(119)
    assert found.mean_daily_pnl == pytest.approx(statistics.fmean(days))
    assert found.volatility == pytest.approx(statistics.stdev(days))
    assert found.sharpe_ratio == pytest.approx(
        statistics.fmean(days) / statistics.stdev(days) * math.sqrt(252)
    )
    assert isinstance(found.sortino_ratio, float)
    # The curve 99, 49, 79, -1, 119 falls 100 from the first close to the fourth.
    assert found.max_drawdown == Decimal(100)
    assert (
        found.max_drawdown_peak_date,
        found.max_drawdown_trough_date,
        found.max_drawdown_recovered_date,
    ) == (date(2026, 1, 5), date(2026, 1, 8), date(2026, 1, 9))
    assert found.inception_time == T0 + timedelta(minutes=1)
    (usd,) = found.by_currency
    assert (usd.trade_count, usd.round_trips, usd.open_trips) == (1, 0, 1)
    # No trip closed: the statistics of trips are absent, not zero.
    assert usd.win_rate is None and usd.profit_factor is None
    assert usd.average_win is None and usd.average_loss is None and usd.expectancy is None
    assert (usd.gross_pnl, usd.fees, usd.net_pnl, usd.realized_pnl) == (0, 1, -1, 0)
    (arca,) = found.venues
    assert (arca.venue, arca.currency, arca.fills, arca.volume, arca.fees) == (
        "ARCA", "USD", 1, 1000, 1,
    )  # fmt: skip
    assert pm.query(PerformanceQuery(account_id="A1", strategy_id="S1")) == found


def test_round_trips_wins_and_losses(pm: PortfolioClient):
    found = pm.get_performance("A1", "S3")
    (usd,) = found.by_currency
    assert (usd.trade_count, usd.round_trips, usd.open_trips, usd.wins, usd.losses) == (
        4, 2, 0, 1, 1,
    )  # fmt: skip
    assert usd.win_rate == 0.5 and usd.profit_factor == pytest.approx(10 / 3)
    assert (usd.average_win, usd.average_loss, usd.expectancy) == (10, -3, Decimal("3.5"))
    assert (usd.largest_win, usd.largest_loss, usd.realized_pnl) == (10, -3, 7)
    assert [(v.venue, v.fills, v.volume, v.realized_pnl) for v in found.venues] == [
        ("ARCA", 2, 210, 10),
        ("IEX", 2, 117, -3),
    ]
    # One day, +7: no fall (no drawdown dates), no spread to estimate.
    assert found.trading_days == 1 and found.total_daily_pnl == 7
    assert found.mean_daily_pnl == 7.0 and found.volatility is None and found.sharpe_ratio is None
    assert found.max_drawdown == 0 and found.max_drawdown_peak_date is None
    assert found.max_drawdown_trough_date is None and found.max_drawdown_recovered_date is None
    across = pm.get_performance(strategy_id="S3")  # across the strategy's accounts
    assert across.account_id == "" and across.by_currency == found.by_currency


def test_risk_metrics_in_sdk_types(pm: PortfolioClient):
    found = pm.get_risk_metrics("A1", "S1")
    # At the book's price now: the last fill's (100), no mark streamed.
    assert found.total == Exposure(
        long=Decimal(1000), short=Decimal(0), gross=Decimal(1000), net=Decimal(1000)
    )
    assert [(e.name, e.exposure) for e in found.by_instrument] == [("AAPL", found.total)]
    assert found.largest_instrument == "AAPL" and found.concentration == 1
    assert (found.lookback_days, found.trading_days) == (250, 5)
    assert found.volatility == pytest.approx(statistics.stdev(float(d) for d in S1_DAYS))
    # 5 days: k = ceil(0.05 x 5) = 1, the -80 day, at both confidences.
    assert found.value_at_risk == (
        ValueAtRisk(
            confidence=Decimal("0.95"),
            value_at_risk=Decimal(80),
            expected_shortfall=Decimal(80),
            days_in_tail=1,
        ),
        ValueAtRisk(
            confidence=Decimal("0.99"),
            value_at_risk=Decimal(80),
            expected_shortfall=Decimal(80),
            days_in_tail=1,
        ),
    )
    assert found.correlations == ()  # a strategy's own: no pairs
    (only,) = pm.get_risk_metrics("A1", "S1", confidence_levels=[Decimal("0.9")]).value_at_risk
    assert (only.confidence, only.value_at_risk) == (Decimal("0.9"), Decimal(80))
    with pytest.raises(TypeError):
        pm.get_risk_metrics("A1", confidence_levels=[0.9])  # type: ignore[list-item]
    flat = pm.get_risk_metrics("A1", "S3")
    assert flat.total == Exposure(long=Decimal(0), short=Decimal(0), gross=Decimal(0),
                                  net=Decimal(0))  # fmt: skip
    assert flat.largest_instrument == "" and flat.concentration is None


def test_correlations_over_the_lookback(pm: PortfolioClient):
    found = pm.get_risk_metrics("A1", lookback_days=3)
    assert found.trading_days == 3 and found.strategy_id == ""
    pairs = {(c.strategy_a, c.strategy_b): c for c in found.correlations}
    s1_s2 = pairs["S1", "S2"]
    assert s1_s2.days == 3 and s1_s2.correlation == pytest.approx(
        statistics.correlation([float(d) for d in S1_DAYS[-3:]], [float(d) for d in S2_DAYS[-3:]])
    )
    # S3 recorded no day in the last three: no common day, no correlation.
    assert (pairs["S1", "S3"].days, pairs["S1", "S3"].correlation) == (0, None)
    assert pm.query(RiskMetricsQuery(account_id="A1", lookback_days=3)) == found


def test_a_strategy_portfolio_carries_its_track_record(pm: PortfolioClient):
    portfolio = pm.get_strategy_portfolio("S1", "A1")
    assert portfolio.trade_count == 1 and portfolio.inception_time == T0 + timedelta(minutes=1)
    assert (portfolio.total_pnl, portfolio.total_fees) == (-1, 1)
    assert portfolio.max_drawdown == 100
    assert portfolio.sharpe_ratio == pytest.approx(pm.get_performance("A1", "S1").sharpe_ratio)


def test_bad_arguments_are_refused_before_any_call():
    # Nothing listens on port 1: reaching the network would raise PortfolioError instead.
    with PortfolioClient("127.0.0.1:1", timeout=1) as nowhere:
        with pytest.raises(TypeError, match="from_date"):
            nowhere.get_pnl_history("A1", from_date=datetime(2026, 1, 5, tzinfo=UTC))
        with pytest.raises(TypeError, match="to_date"):
            nowhere.get_performance("A1", to_date="2026-01-05")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="to_date 2026-01-04 is before from_date"):
            nowhere.get_performance("A1", from_date=FIRST_DATE, to_date=date(2026, 1, 4))
        for days in (-1, 2521):
            with pytest.raises(ValueError, match=r"lookback_days must be within 0\.\.2520"):
                nowhere.get_risk_metrics("A1", lookback_days=days)
        with pytest.raises(TypeError, match="lookback_days"):
            nowhere.query(RiskMetricsQuery(account_id="A1", lookback_days=True))
        with pytest.raises(ValueError, match="before from_date"):
            nowhere.query(PnlHistoryQuery(account_id="A1", from_date=FIRST_DATE,
                                          to_date=date(2026, 1, 1)))  # fmt: skip


def test_the_service_names_what_it_refuses(pm: PortfolioClient):
    with pytest.raises(PortfolioError) as missing:
        pm.get_performance()
    assert missing.value.code.name == "INVALID_ARGUMENT" and "account_id" in str(missing.value)
    with pytest.raises(PortfolioError) as unknown:
        pm.get_risk_metrics("A1", "S9")
    assert unknown.value.code.name == "NOT_FOUND"
    with pytest.raises(PortfolioError) as nobody:
        pm.get_pnl_history("NOBODY")
    assert nobody.value.code.name == "NOT_FOUND"


async def test_the_async_client_answers_the_same(week: ServerThread, pm: PortfolioClient):
    async with AsyncPortfolioClient(week.address) as client:
        assert await client.get_pnl_history(
            "A1", "S1", from_date=date(2026, 1, 6)
        ) == pm.get_pnl_history("A1", "S1", from_date=date(2026, 1, 6))
        assert await client.get_performance("A1", "S3") == pm.get_performance("A1", "S3")
        assert await client.get_risk_metrics("A1", lookback_days=3) == pm.get_risk_metrics(
            "A1", lookback_days=3
        )
        assert await client.query(PerformanceQuery(account_id="A1")) == pm.get_performance("A1")
        assert (await client.get_strategy_portfolio("S1", "A1")).max_drawdown == 100
        with pytest.raises(ValueError, match="lookback_days"):
            await client.get_risk_metrics("A1", lookback_days=-1)
        with pytest.raises(PortfolioError) as missing:
            await client.get_performance()
        assert missing.value.code.name == "INVALID_ARGUMENT"


def test_absent_figures_read_as_none_not_zero():
    missing_rate = pb.PnlDay(
        trading_date="2026-01-05",
        by_currency=[pb.PnlCurrencyDay(currency="EUR", net_pnl="5")],
        missing_fx_rates=["EUR"],
    )
    (day,) = wire.pnl_history_from_proto(pb.PnlHistory(days=[missing_rate])).days
    assert day.net_pnl_base is None and day.exposure_base is None and day.closed_at is None
    assert day.missing_fx_rates == ("EUR",) and day.by_currency[0].net_pnl == 5
    bare = wire.strategy_portfolio_from_proto(pb.StrategyPortfolio(strategy_id="S1"))
    assert (bare.trade_count, bare.inception_time, bare.total_pnl, bare.total_fees) == (
        0, None, None, None,
    )  # fmt: skip
    assert bare.max_drawdown is None and bare.sharpe_ratio is None
    zero = wire.performance_from_proto(pb.Performance(sharpe_ratio=0.0))
    assert zero.sharpe_ratio == 0.0 and zero.volatility is None  # set to 0 is not absent


def test_a_malformed_date_from_the_service_is_a_protocol_violation():
    with pytest.raises(ProtocolViolation, match="YYYY-MM-DD"):
        wire.performance_from_proto(pb.Performance(max_drawdown_peak_date="5 Jan"))
    with pytest.raises(ProtocolViolation, match="without a trading date"):
        wire.pnl_history_from_proto(pb.PnlHistory(days=[pb.PnlDay(sequence=7)]))
