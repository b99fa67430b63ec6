"""Trading-day closes: the session calendar across time zones, weekends and DST; a close the
service was down for is journaled at the next start (late); GetPnlHistory and its Query branch
answer the days, the same after a restart (checkpoint or journal)."""

from __future__ import annotations

from datetime import datetime, timedelta

import arcticdb as adb
import grpc
import pytest

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.application.day_close import SessionCalendar
from server.config import parse_args
from tests.api.protocol import acks, pb_fill
from tests.conftest import a_missed_close, start_test_server
from tests.polling import wait_for


def ns(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp()) * 10**9


NEW_YORK = SessionCalendar.parse("17:00", "America/New_York", "mon-fri")


@pytest.mark.parametrize(
    ("now", "trading_date", "close"),
    [
        # Winter: 17:00 in New York is 22:00 UTC; before it, the day before's close.
        ("2026-01-07T21:59:00+00:00", "2026-01-06", "2026-01-06T22:00:00+00:00"),
        ("2026-01-07T22:00:00+00:00", "2026-01-07", "2026-01-07T22:00:00+00:00"),
        # Summer (EDT): 21:00 UTC.
        ("2026-07-07T21:30:00+00:00", "2026-07-07", "2026-07-07T21:00:00+00:00"),
        # DST starts Sunday 2026-03-08: Friday's close was at 22:00 UTC, Monday's at 21:00.
        ("2026-03-09T21:30:00+00:00", "2026-03-09", "2026-03-09T21:00:00+00:00"),
        ("2026-03-09T20:59:00+00:00", "2026-03-06", "2026-03-06T22:00:00+00:00"),
        # DST ends Sunday 2026-11-01: Monday's close is back at 22:00 UTC.
        ("2026-11-02T21:30:00+00:00", "2026-10-30", "2026-10-30T21:00:00+00:00"),
        # The weekend has no close: Friday's stands until Monday's.
        ("2026-01-11T12:00:00+00:00", "2026-01-09", "2026-01-09T22:00:00+00:00"),
        # A New York trading date can be the next UTC day's evening... or not: 23:30 UTC on
        # Wednesday is Wednesday 18:30 in New York, after Wednesday's close.
        ("2026-01-07T23:30:00+00:00", "2026-01-07", "2026-01-07T22:00:00+00:00"),
    ],
)
def test_the_latest_close_in_new_york(now, trading_date, close):
    assert NEW_YORK.latest_close(ns(now)) == (trading_date, ns(close))


def test_a_close_east_of_utc_falls_on_the_previous_utc_day():
    tokyo = SessionCalendar.parse("06:00", "Asia/Tokyo", "all")
    # 06:00 in Tokyo on the 8th is 21:00 UTC on the 7th.
    assert tokyo.latest_close(ns("2026-01-07T21:00:00+00:00")) == (
        "2026-01-08",
        ns("2026-01-07T21:00:00+00:00"),
    )
    assert tokyo.next_close_ns(ns("2026-01-07T21:00:00+00:00")) == ns("2026-01-08T21:00:00+00:00")


def test_next_close_skips_the_weekend():
    assert NEW_YORK.next_close_ns(ns("2026-01-09T22:00:00+00:00")) == ns(
        "2026-01-12T22:00:00+00:00"
    )


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--session-close", "5pm", "HH:MM"),
        ("--session-timezone", "Mars/Olympus", "IANA"),
        ("--session-days", "weekdays", "mon-fri"),
    ],
)
def test_a_bad_session_stops_the_start_naming_it(flag, value, says, capsys):
    with pytest.raises(SystemExit):
        parse_args([flag, value])
    assert says in capsys.readouterr().err


def test_days_wrap_around_the_week():
    assert SessionCalendar.parse("17:00", "UTC", "sun-tue").weekdays == {6, 0, 1}


def history(stub: pb_grpc.PortfolioManagerStub, strategy: str = "S1") -> list[tuple]:
    answer = stub.GetPnlHistory(pb.GetPnlHistoryRequest(account_id="A1", strategy_id=strategy))
    return [
        (
            day.trading_date,
            day.late,
            [(c.currency, c.realized_pnl, c.unrealized_pnl, c.fees, c.net_pnl, c.exposure)
             for c in day.by_currency],
            day.net_pnl_base,
        )
        for day in answer.days
    ]  # fmt: skip


def day_figures(stub: pb_grpc.PortfolioManagerStub) -> tuple[str, ...]:
    row = stub.GetPosition(
        pb.GetPositionRequest(account_id="A1", instrument_id="AAPL", strategy_id="S1")
    )
    return (row.day_realized_pnl, row.day_unrealized_change, row.day_fees, row.day_net_pnl)


@pytest.mark.parametrize("checkpoint_every", [1, 10_000], ids=["checkpoint", "journal"])
def test_a_missed_close_is_recorded_at_start_and_kept_across_restarts(tmp_path, checkpoint_every):
    store = f"lmdb://{tmp_path / 'store'}"
    # A session that closed five minutes ago: the service was not running.
    closed, session = a_missed_close(checkpoint_every=checkpoint_every)
    trading_date = closed.date().isoformat()
    server = start_test_server(store=store, **session)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            acks(stub, pb_fill("BUY", 10, 100, commission=1), pb_fill("SELL", 4, 110))
            with pytest.raises(grpc.RpcError) as error:  # no day closed yet, none asked for
                stub.GetPnlHistory(pb.GetPnlHistoryRequest(account_id="NOPE"))
            assert error.value.code() == grpc.StatusCode.NOT_FOUND
            assert history(stub) == []
    finally:
        server.stop()
    server = start_test_server(store=store, **session)  # the close is due: journaled now
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            assert wait_for(lambda: history(stub) != [])  # the closer runs as it starts
            first = history(stub)
            # 6 left at the last fill price (110, no mark): unrealized 60; realized 40; fee 1.
            assert first == [
                (trading_date, True, [("USD", "40", "60", "1", "99", "660")], "99"),
            ]
            assert history(stub, "") == first  # the account-level book: one strategy
            # Each row's day is kept only until the analysts' pnl library has it (about 1 KB a
            # row: on a book of a million rows, a gigabyte until the next close).
            pnl = server.running.service.writes.ledger.pnl
            assert wait_for(lambda: pnl.latest_rows("A1") is None)
            # Since the start of the day (the close): nothing yet; then a sale of 2 at 120.
            assert day_figures(stub) == ("0", "0", "0", "0")
            acks(stub, pb_fill("SELL", 2, 120))
            # Realized 2 x (120 - 100) = 40; 4 left at 120: unrealized 80, was 60 at the close.
            assert day_figures(stub) == ("40", "20", "0", "60")
            query = stub.Query(
                pb.PortfolioQuery(
                    get_pnl_history=pb.GetPnlHistoryRequest(
                        account_id="A1", from_date=trading_date, to_date=trading_date
                    )
                )
            )
            assert [d.trading_date for d in query.pnl_history.days] == [trading_date]
            later = (closed.date() + timedelta(days=1)).isoformat()
            empty = stub.GetPnlHistory(pb.GetPnlHistoryRequest(account_id="A1", from_date=later))
            assert list(empty.days) == [] and empty.base_currency == "USD"
            with pytest.raises(grpc.RpcError) as error:
                stub.GetPnlHistory(
                    pb.GetPnlHistoryRequest(account_id="A1", from_date=later, to_date="2020-01-01")
                )
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "to_date" in error.value.details()
    finally:
        server.stop()
    server = start_test_server(store=store, **session)  # nothing due: the same history
    try:
        with grpc.insecure_channel(server.address) as channel:
            assert history(pb_grpc.PortfolioManagerStub(channel)) == first
    finally:
        server.stop()
    # The analysts' store: one row per row of the book and day, written once.
    pnl = adb.Arctic(store).get_library("pnl").read("A1").data
    assert sorted(zip(pnl.level, pnl.strategy_id, pnl.instrument_id, strict=True)) == [
        ("ACCOUNT", "", "AAPL"),
        ("STRATEGY", "S1", "AAPL"),
    ]
    assert set(pnl.trading_date) == {trading_date} and pnl.late.all()
    assert list(pnl.net_pnl_exact) == ["99", "99"] and pnl.net_pnl.sum() == 198.0
    assert (pnl.end_quantity == 6).all() and (pnl.exposure_exact == "660").all()  # at the close
    history_rows = adb.Arctic(store).get_library("position_history").read("A1").data
    assert (history_rows.reason == "close").sum() == 2


def test_a_bad_date_is_refused_naming_the_field(stub):
    with pytest.raises(grpc.RpcError) as error:
        stub.GetPnlHistory(pb.GetPnlHistoryRequest(account_id="A1", from_date="2026-13-01"))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "from_date" in error.value.details()


def test_no_session_days_means_no_close():
    none = SessionCalendar.parse("17:00", "UTC", "none")
    assert none.weekdays == frozenset()
    assert none.latest_close(ns("2026-01-07T23:30:00+00:00")) is None


def test_an_account_on_its_own_calendar_closes_on_it(tmp_path):
    store = f"lmdb://{tmp_path / 'store'}"
    server = start_test_server(store=store)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            acks(stub, pb_fill("BUY", 1, 100, account="A1"), pb_fill("BUY", 1, 100, account="A2"))
    finally:
        server.stop()
    closed, _ = a_missed_close()
    # No close for the others; A1 closed five minutes ago on its own calendar.
    sessions = f"A1={closed.strftime('%H:%M')} UTC all"
    server = start_test_server(store=store, session_days="none", account_sessions=sessions)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            assert wait_for(lambda: history(stub, "") != [])
            days = stub.GetPnlHistory(pb.GetPnlHistoryRequest(account_id="A1")).days
            assert [day.trading_date for day in days] == [closed.date().isoformat()]
            assert list(stub.GetPnlHistory(pb.GetPnlHistoryRequest(account_id="A2")).days) == []
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("U1", "ACCOUNT=HH:MM ZONE"),
        ("U1=16:30", "ACCOUNT=HH:MM ZONE"),
        ("U1=16:30 Mars/Olympus", "U1=16:30 Mars/Olympus"),
        ("U1=4pm UTC", "HH:MM"),
    ],
)
def test_a_bad_account_session_stops_the_start_naming_it(value, says, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--account-sessions", value])
    assert says in capsys.readouterr().err
