"""Orders, instruments, accounts, marks, FX, balances and the consolidated book, through a
real gRPC server."""

from __future__ import annotations

import time

import grpc
import pytest

from portfolio.v1 import portfolio_pb2 as pb
from tests.api.protocol import BASE_SECONDS, acks, field_violations, pb_fill, pb_status


def stamp(message: object, seconds: float) -> None:
    nanoseconds = (
        int((BASE_SECONDS + seconds) * 1e9)
        if seconds % 1
        else (BASE_SECONDS + int(seconds)) * 10**9
    )
    message.timestamp.FromNanoseconds(nanoseconds)  # type: ignore[attr-defined]


def status(update_id: str, state: str, seconds: float, **fields: object) -> pb.ExecutionEvent:
    event = pb_status(update_id, state, **fields)
    stamp(event.status, seconds)
    return event


def mark(instrument: str, seconds: int, **prices: str) -> pb.MarkPrice:
    message = pb.MarkPrice(instrument_id=instrument, **prices)
    stamp(message, seconds)
    return message


def fx(base: str, quote: str, rate: str, seconds: int = 1) -> pb.FxRate:
    message = pb.FxRate(base_currency=base, quote_currency=quote, rate=rate)
    stamp(message, seconds)
    return message


def stream_marks(stub, *batches: pb.MarkBatch) -> list[pb.MarkAck]:
    return list(stub.StreamMarks(iter(batches), timeout=10))


def transfer(transfer_id: str, amount: str, currency: str = "USD", **fields: object):
    message = pb.CashTransfer(
        transfer_id=transfer_id, account_id=str(fields.pop("account", "A1")),
        currency=currency, amount=amount, **fields,  # type: ignore[arg-type]
    )  # fmt: skip
    stamp(message, 0)
    return pb.ExecutionEvent(transfer=message)


def define(stub, instrument_id: str, currency: str = "USD", **fields: object) -> pb.Instrument:
    request = pb.DefineInstrumentRequest(
        instrument=pb.Instrument(instrument_id=instrument_id, currency=currency, **fields)  # type: ignore[arg-type]
    )
    return stub.DefineInstrument(request, timeout=10)


# -- orders -----------------------------------------------------------------------------------


def test_an_order_keeps_its_history_and_flags_what_cannot_apply(stub):
    acks(
        stub,
        status("o1", "SUBMITTED", 1, order_id="7", remaining_quantity="10", strategy_id="S1"),
        status("o2", "PARTIALLY_FILLED", 2, order_id="7", filled_quantity="4",
               remaining_quantity="6"),
        status("o3", "SUBMITTED", 1, order_id="7", filled_quantity="0",
               remaining_quantity="10", perm_id="p"),  # correction of o1 (same time)
        status("o4", "CANCELLED", 3, order_id="7", filled_quantity="4"),
        status("o5", "FILLED", 4, order_id="7", filled_quantity="10"),  # after a cancel
        status("o6", "PARTIALLY_FILLED", 2.5, order_id="7", filled_quantity="2",
               remaining_quantity="8"),  # late, and filled goes back at its place
    )  # fmt: skip
    order = stub.GetOrder(pb.GetOrderRequest(account_id="A1", order_id="7"), timeout=5)
    assert order.status == pb.ORDER_STATUS_CANCELLED
    assert order.filled_quantity == "4" and not order.is_open
    history = [(t.update.update_id, t.flag, t.corrects) for t in order.history]
    assert [h[0] for h in history] == ["o3", "o2", "o6", "o4", "o5"]  # by the statuses' times
    assert history[0][2] == "o1" and history[0][1] == ""
    assert order.perm_id == "p"
    assert history[2][1] == "out of order: filled quantity goes back from 4 to 2"
    assert [t.late for t in order.history] == [False, False, True, False, False]
    assert history[4][1] == "illegal transition CANCELLED -> FILLED"
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetOrder(pb.GetOrderRequest(account_id="A1", order_id="8"), timeout=5)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_fills_are_checked_against_their_order(stub):
    acks(
        stub,
        status("s1", "SUBMITTED", 1, order_id="9", remaining_quantity="10"),
        pb_fill("BUY", 3, 100, order_id="9"),
        status("s2", "PARTIALLY_FILLED", 2, order_id="9", filled_quantity="5",
               remaining_quantity="5"),
    )  # fmt: skip
    order = stub.GetOrder(pb.GetOrderRequest(account_id="A1", order_id="9"), timeout=5)
    assert (order.booked_quantity, order.quantity_mismatch, order.booked_fills) == ("3", "2", 1)
    acks(stub, pb_fill("BUY", 2, 100, order_id="9"))
    order = stub.GetOrder(pb.GetOrderRequest(account_id="A1", order_id="9"), timeout=5)
    assert order.quantity_mismatch == "0"


def test_open_orders_are_listed_by_account_and_strategy_in_pages(stub):
    events = [
        status(f"w{i}", "SUBMITTED", i, order_id=str(100 + i), strategy_id=f"S{i % 2}")
        for i in range(5)
    ]
    events.append(status("done", "CANCELLED", 9, order_id="100"))
    acks(stub, *events)
    page = stub.ListOpenOrders(pb.ListOpenOrdersRequest(account_id="A1", page_size=2), timeout=5)
    seen = [order.order_id for order in page.orders]
    while page.next_page_token:
        page = stub.ListOpenOrders(
            pb.ListOpenOrdersRequest(account_id="A1", page_size=2,
                                     page_token=page.next_page_token), timeout=5,
        )  # fmt: skip
        seen += [order.order_id for order in page.orders]
    assert sorted(seen) == ["101", "102", "103", "104"]
    only = stub.ListOpenOrders(
        pb.ListOpenOrdersRequest(account_id="A1", strategy_id="S1"), timeout=5
    )
    assert sorted(o.order_id for o in only.orders) == ["101", "103"]
    query = stub.Query(
        pb.PortfolioQuery(list_open_orders=pb.ListOpenOrdersRequest(account_id="A1")), timeout=5
    )
    assert len(query.list_open_orders.orders) == 4


# -- instruments ------------------------------------------------------------------------------


def test_instruments_are_defined_and_their_multiplier_is_used(stub):
    defined = define(stub, "ES", asset_class=pb.ASSET_CLASS_FUTURE, multiplier="50",
                     expiry="2026-12", tick_size="0.25")  # fmt: skip
    assert (defined.multiplier, defined.provisional) == ("50", False)
    acks(stub, pb_fill("BUY", 2, 6000, instrument="ES"), pb_fill("SELL", 2, 6001, instrument="ES"))
    row = stub.GetPosition(pb.GetPositionRequest(account_id="A1", instrument_id="ES"), timeout=5)
    assert (row.realized_pnl, row.multiplier) == ("100", "50")
    with pytest.raises(grpc.RpcError) as raised:
        define(stub, "ES", asset_class=pb.ASSET_CLASS_FUTURE, multiplier="5", expiry="2026-12")
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert field_violations(raised.value) == ["multiplier"]
    assert stub.GetInstrument(pb.GetInstrumentRequest(instrument_id="ES")).multiplier == "50"


def test_an_unknown_instrument_is_registered_provisionally(stub):
    acks(stub, pb_fill("BUY", 1, 10, instrument="NEW"))
    found = stub.GetInstrument(pb.GetInstrumentRequest(instrument_id="NEW"), timeout=5)
    assert (found.provisional, found.multiplier, found.currency) == (True, "1", "USD")
    listed = stub.ListInstruments(pb.ListInstrumentsRequest(), timeout=5)
    assert [i.instrument_id for i in listed.instruments] == ["NEW"]


def test_a_strict_registry_rejects_fills_of_undefined_instruments():
    import portfolio.v1.portfolio_pb2_grpc as pb_grpc
    from tests.conftest import start_test_server

    server = start_test_server(strict_instruments=True)
    try:
        with grpc.insecure_channel(server.address) as channel:
            strict = pb_grpc.PortfolioManagerStub(channel)
            (ack,) = acks(strict, pb_fill("BUY", 1, 10, instrument="XYZ"))
            assert ack.result == pb.EVENT_RESULT_REJECTED
            assert ack.reason.startswith("instrument_id:")
            define(strict, "XYZ")
            (ack,) = acks(strict, pb_fill("BUY", 1, 10, instrument="XYZ"))
            assert ack.result == pb.EVENT_RESULT_ACCEPTED
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"asset_class": pb.ASSET_CLASS_OPTION, "strike": "100", "expiry": "2026-12",
          "right": pb.OPTION_RIGHT_CALL}, "instrument.underlying"),
        ({"multiplier": "0"}, "instrument.multiplier"),
        ({"multiplier": "1e3"}, "instrument.multiplier"),
        ({"strike": "10"}, "instrument.strike"),
        ({"expiry": "2026-13-01"}, "instrument.expiry"),
        ({"currency": "usd"}, "instrument.currency"),
        ({"provisional": True}, "instrument.provisional"),
    ],
)  # fmt: skip
def test_a_bad_instrument_is_refused_naming_the_field(stub, fields, field):
    fields = {"currency": "USD", **fields}
    with pytest.raises(grpc.RpcError) as raised:
        define(stub, "BAD", **fields)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(raised.value) == [field]
    with pytest.raises(grpc.RpcError):
        stub.GetInstrument(pb.GetInstrumentRequest(instrument_id="BAD"), timeout=5)


# -- marks ------------------------------------------------------------------------------------


def test_marks_value_positions_and_say_where_the_price_comes_from(stub):
    acks(stub, pb_fill("BUY", 10, 100))
    row = stub.GetPosition(pb.GetPositionRequest(account_id="A1", instrument_id="AAPL"))
    assert (row.mark_source, row.market_price) == (pb.MARK_SOURCE_LAST_FILL, "100")
    (ack,) = stream_marks(
        stub, pb.MarkBatch(batch_id="m1", marks=[mark("AAPL", 100, bid="104", ask="106")])
    )
    assert (ack.batch_id, ack.marks_applied, ack.marks_stale) == ("m1", 1, 0)
    row = stub.GetPosition(pb.GetPositionRequest(account_id="A1", instrument_id="AAPL"))
    assert (row.mark_source, row.market_price, row.unrealized_pnl) == (
        pb.MARK_SOURCE_MARKET, "105", "50",
    )  # fmt: skip
    assert row.marked_at.seconds == BASE_SECONDS + 100
    (stale,) = stream_marks(stub, pb.MarkBatch(marks=[mark("AAPL", 50, mark="1")]))
    assert (stale.marks_applied, stale.marks_stale) == (0, 1)
    acks(stub, pb_fill("BUY", 1, 90))  # a fill does not override a market mark
    summary = stub.GetPortfolioSummary(pb.GetPortfolioSummaryRequest(account_id="A1"))
    assert summary.account_totals.unrealized_pnl == "65"  # 11 x 105 - 1090


def test_a_bad_mark_refuses_its_batch_and_the_stream_goes_on(stub):
    acks(stub, pb_fill("BUY", 1, 10))
    answers = stream_marks(
        stub,
        pb.MarkBatch(batch_id="bad", marks=[mark("AAPL", 5, mark="11"),
                                            mark("AAPL", 6, bid="12", ask="11")]),
        pb.MarkBatch(batch_id="good", marks=[mark("AAPL", 7, last="13")]),
    )  # fmt: skip
    assert answers[0].batch_rejected_reason.startswith("marks[1].bid:")
    assert answers[0].marks_applied == 0
    assert answers[1].marks_applied == 1
    row = stub.GetPosition(pb.GetPositionRequest(account_id="A1", instrument_id="AAPL"))
    assert row.market_price == "13"


def test_a_burst_of_marks_reaches_a_subscriber_coalesced(stub):
    acks(stub, pb_fill("BUY", 1, 10))
    updates = stub.SubscribeUpdates(pb.SubscribeUpdatesRequest(include_marks=True), timeout=10)
    batches = [pb.MarkBatch(marks=[mark("AAPL", 10 + i, mark=str(20 + i))]) for i in range(200)]
    stream_marks(stub, *batches)
    received = []
    for update in updates:
        if update.kind == pb.UPDATE_KIND_MARK:
            received.append(update.mark.mark)
            if update.mark.mark == "219":
                break
    updates.cancel()
    assert received[-1] == "219"
    assert len(received) < 50  # 200 ticks, a few updates


# -- currencies -------------------------------------------------------------------------------


def test_pnl_is_reported_in_base_currency_and_a_missing_rate_is_missing(stub):
    define(stub, "SAP", currency="EUR")
    acks(stub, pb_fill("BUY", 10, 100, instrument="SAP"), pb_fill("BUY", 1, 50))
    summary = stub.GetPortfolioSummary(pb.GetPortfolioSummaryRequest(account_id="A1"))
    assert summary.base_currency == "USD"
    assert not summary.HasField("base_totals")
    assert list(summary.missing_fx_rates) == ["EUR"]
    assert [(c.currency, c.fx_rate) for c in summary.by_currency] == [("EUR", ""), ("USD", "1")]
    row = stub.GetPosition(pb.GetPositionRequest(account_id="A1", instrument_id="SAP"))
    assert (row.currency, row.fx_rate, row.market_value_base) == ("EUR", "", "")
    stream_marks(stub, pb.MarkBatch(fx_rates=[fx("EUR", "USD", "1.1")]),
                 pb.MarkBatch(marks=[mark("SAP", 99, mark="110")]))  # fmt: skip
    summary = stub.GetPortfolioSummary(pb.GetPortfolioSummaryRequest(account_id="A1"))
    assert list(summary.missing_fx_rates) == []
    # EUR 1,100 x 1.1 + USD 50; unrealized EUR 100 x 1.1
    assert summary.base_totals.long_exposure == "1260"
    assert summary.base_totals.unrealized_pnl == "110"
    row = stub.GetPosition(pb.GetPositionRequest(account_id="A1", instrument_id="SAP"))
    assert (row.fx_rate, row.market_value_base, row.unrealized_pnl_base) == ("1.1", "1210", "110")


def test_an_inverse_rate_converts_too(stub):
    stub.DefineAccount(pb.DefineAccountRequest(account=pb.Account(
        account_id="EU", kind=pb.ACCOUNT_KIND_LIVE, base_currency="EUR")))  # fmt: skip
    acks(stub, pb_fill("BUY", 4, 100, account="EU"))
    stream_marks(stub, pb.MarkBatch(fx_rates=[fx("EUR", "USD", "1.25")]))
    summary = stub.GetPortfolioSummary(pb.GetPortfolioSummaryRequest(account_id="EU"))
    assert summary.base_currency == "EUR"
    assert summary.base_totals.long_exposure == "320"  # USD 400 / 1.25


# -- accounts and balances --------------------------------------------------------------------


def test_cash_moves_with_fills_transfers_and_reservations(stub):
    stub.DefineAccount(pb.DefineAccountRequest(account=pb.Account(
        account_id="P1", kind=pb.ACCOUNT_KIND_PAPER, base_currency="USD",
        initial_cash="10000")))  # fmt: skip
    acks(stub, transfer("t1", "500", account="P1"), transfer("t2", "-200", account="P1"))
    balances = stub.GetBalances(pb.GetBalancesRequest(account_id="P1"))
    assert balances.account_kind == pb.ACCOUNT_KIND_PAPER
    assert [(b.currency, b.cash) for b in balances.balances] == [("USD", "10300")]

    held = stub.ReserveCash(pb.ReserveCashRequest(
        reservation_id="r1", account_id="P1", currency="USD", amount="2000",
        order_id="55"))  # fmt: skip
    assert (held.remaining, held.status) == ("2000", pb.RESERVATION_STATUS_ACTIVE)
    again = stub.ReserveCash(pb.ReserveCashRequest(
        reservation_id="r1", account_id="P1", currency="USD", amount="2000",
        order_id="55"))  # fmt: skip
    assert again.sequence == held.sequence  # a retry is the same reservation
    with pytest.raises(grpc.RpcError) as raised:
        stub.ReserveCash(pb.ReserveCashRequest(
            reservation_id="r2", account_id="P1", currency="USD", amount="9000"))  # fmt: skip
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "9000" in raised.value.details() and "8300" in raised.value.details()
    assert field_violations(raised.value) == ["amount"]

    acks(
        stub,
        pb_fill("BUY", 10, 150, account="P1", order_id="55", commission="1"),
        status("f1", "FILLED", 5, account_id="P1", order_id="55", filled_quantity="10"),
    )
    balances = stub.GetBalances(pb.GetBalancesRequest(account_id="P1"))
    (usd,) = balances.balances
    assert (usd.cash, usd.reserved, usd.available) == ("8799", "0", "8799")
    assert list(balances.reservations) == []
    summary = stub.GetPortfolioSummary(pb.GetPortfolioSummaryRequest(account_id="P1"))
    assert summary.account_kind == pb.ACCOUNT_KIND_PAPER
    assert [(c.currency, c.cash) for c in summary.cash] == [("USD", "8799")]


def test_a_release_gives_back_what_a_reservation_holds(stub):
    acks(stub, transfer("d", "1000"))
    stub.ReserveCash(pb.ReserveCashRequest(
        reservation_id="r", account_id="A1", currency="USD", amount="600"))  # fmt: skip
    part = stub.ReleaseReservation(pb.ReleaseReservationRequest(
        release_id="x1", account_id="A1", reservation_id="r", amount="100"))  # fmt: skip
    assert (part.remaining, part.released) == ("500", "100")
    with pytest.raises(grpc.RpcError) as raised:
        stub.ReleaseReservation(pb.ReleaseReservationRequest(
            release_id="x2", account_id="A1", reservation_id="r", amount="501"))  # fmt: skip
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    rest = stub.ReleaseReservation(pb.ReleaseReservationRequest(
        release_id="x3", account_id="A1", reservation_id="r"))  # fmt: skip
    assert (rest.remaining, rest.status) == ("0", pb.RESERVATION_STATUS_RELEASED)
    with pytest.raises(grpc.RpcError) as raised:
        stub.ReleaseReservation(pb.ReleaseReservationRequest(
            release_id="x4", account_id="A1", reservation_id="nope"))  # fmt: skip
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    (usd,) = stub.GetBalances(pb.GetBalancesRequest(account_id="A1")).balances
    assert (usd.cash, usd.reserved) == ("1000", "0")


def test_bad_cash_requests_change_nothing(stub):
    (ack,) = acks(stub, transfer("t0", "0"))
    assert ack.result == pb.EVENT_RESULT_REJECTED and ack.reason.startswith(
        "events[0].transfer.amount"
    )
    with pytest.raises(grpc.RpcError) as raised:
        stub.ReserveCash(pb.ReserveCashRequest(
            reservation_id="r", account_id="A1", currency="USD", amount="-5"))  # fmt: skip
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(raised.value) == ["amount"]
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetBalances(pb.GetBalancesRequest(account_id="A1"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


# -- the consolidated book --------------------------------------------------------------------


def test_the_consolidated_view_shows_each_strategy_beside_the_account(stub):
    acks(
        stub,
        pb_fill("BUY", 10, 100, strategy="LONG"),
        pb_fill("SELL", 10, 101, strategy="SHORT"),
        pb_fill("BUY", 5, 100, strategy="FLAT"),
        pb_fill("SELL", 5, 102, strategy="FLAT"),
    )
    found = stub.GetConsolidatedPosition(
        pb.GetConsolidatedPositionRequest(account_id="A1", instrument_id="AAPL"), timeout=5
    )
    assert found.account_kind == pb.ACCOUNT_KIND_LIVE
    assert found.account_position.quantity == "0"
    assert [(p.strategy_id, p.quantity, p.realized_pnl) for p in found.strategy_positions] == [
        ("FLAT", "0", "10"), ("LONG", "10", "0"), ("SHORT", "-10", "0"),
    ]  # fmt: skip
    assert (found.attributed_quantity, found.unattributed_quantity) == ("0", "0")
    via_query = stub.Query(pb.PortfolioQuery(get_consolidated_position=(
        pb.GetConsolidatedPositionRequest(account_id="A1", instrument_id="AAPL"))))  # fmt: skip
    assert via_query.consolidated_position == found


def test_balance_updates_are_streamed_on_request(stub):
    updates = stub.SubscribeUpdates(
        pb.SubscribeUpdatesRequest(account_id="A1", include_balances=True), timeout=10
    )
    time.sleep(0.2)
    acks(stub, pb_fill("BUY", 2, 10, commission="1"))
    kinds = []
    for update in updates:
        kinds.append(update.kind)
        if update.kind == pb.UPDATE_KIND_BALANCE:
            assert update.balance.cash == "-21"
            break
    updates.cancel()
    assert pb.UPDATE_KIND_POSITION_OPENED in kinds


def test_accounts_are_listed_once_each_with_their_kind(stub):
    stub.DefineAccount(pb.DefineAccountRequest(account=pb.Account(
        account_id="P1", kind=pb.ACCOUNT_KIND_PAPER, base_currency="USD",
        initial_cash="5")))  # fmt: skip
    acks(stub, pb_fill("BUY", 1, 1, account="U9"))
    accounts = stub.ListAccounts(pb.ListAccountsRequest()).accounts
    assert [(a.account_id, a.kind, a.defined) for a in accounts] == [
        ("P1", pb.ACCOUNT_KIND_PAPER, True), ("U9", pb.ACCOUNT_KIND_LIVE, False),
    ]  # fmt: skip
