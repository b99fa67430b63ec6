import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from portfolio.v1 import portfolio_pb2 as pb
from server.api.servicer import QUERIES
from tests.api.protocol import acks, field_violations, pb_fill


@pytest.fixture
def book(stub):
    """Two strategies on opposite sides of AAPL, one long MSFT, one flat row, two accounts."""
    acks(
        stub,
        pb_fill("BUY", 100, 10, strategy="LONG", commission="1"),
        pb_fill("SELL", 100, 11, strategy="SHORT", commission="1"),
        pb_fill("BUY", 10, 300, strategy="LONG", instrument="MSFT"),
        pb_fill("BUY", 5, 20, strategy="FLAT", instrument="IBM"),
        pb_fill("SELL", 5, 22, strategy="FLAT", instrument="IBM"),
        pb_fill("BUY", 1, 50, account="A2", strategy="LONG", instrument="XOM"),
    )
    return stub


def get(stub, account="A1", instrument="AAPL", strategy=None):
    request = pb.GetPositionRequest(account_id=account, instrument_id=instrument)
    if strategy is not None:
        request.strategy_id = strategy
    return stub.GetPosition(request)


def test_strategy_rows_and_the_account_row(book):
    assert get(book, strategy="LONG").quantity == "100"
    assert get(book, strategy="SHORT").quantity == "-100"
    account = get(book)
    assert account.level == pb.POSITION_LEVEL_ACCOUNT
    assert account.strategy_id == ""
    assert (account.quantity, account.realized_pnl, account.fees) == ("0", "100", "2")
    # Marked at the last fill (11): the strategies hold the netting as unrealized.
    assert get(book, strategy="LONG").unrealized_pnl == "100"
    assert get(book, strategy="SHORT").unrealized_pnl == "0"
    assert get(book, strategy="").level == pb.POSITION_LEVEL_ACCOUNT


def test_unknown_position_is_not_found(book):
    with pytest.raises(grpc.RpcError) as raised:
        get(book, strategy="NOPE")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert "NOPE" in raised.value.details()


@pytest.mark.parametrize(
    ("call", "request_", "field"),
    [
        ("GetPosition", pb.GetPositionRequest(instrument_id="AAPL"), "account_id"),
        ("GetPosition", pb.GetPositionRequest(account_id="A1"), "instrument_id"),
        ("GetStrategyPortfolio", pb.GetStrategyPortfolioRequest(), "strategy_id"),
        ("GetTracePosition", pb.GetTracePositionRequest(), "trace_id"),
        ("ListPositions", pb.ListPositionsRequest(page_size=1001), "page_size"),
        ("ListPositions", pb.ListPositionsRequest(page_size=-1), "page_size"),
        ("ListPositions", pb.ListPositionsRequest(level=7), "level"),
        ("ListPositions", pb.ListPositionsRequest(page_token="garbage"), "page_token"),
        (
            "ListPositions",
            pb.ListPositionsRequest(level=pb.POSITION_LEVEL_ACCOUNT, strategy_id="S1"),
            "strategy_id",
        ),
        ("Query", pb.PortfolioQuery(), "query"),
    ],
)
def test_invalid_requests_name_the_field(book, call, request_, field):
    with pytest.raises(grpc.RpcError) as raised:
        getattr(book, call)(request_)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(raised.value) == [field]
    assert field in raised.value.details()


def test_strategy_portfolio_with_totals(book):
    portfolio = book.GetStrategyPortfolio(pb.GetStrategyPortfolioRequest(strategy_id="LONG"))
    assert [(p.account_id, p.instrument_id) for p in portfolio.positions] == [
        ("A1", "AAPL"),
        ("A1", "MSFT"),
        ("A2", "XOM"),
    ]
    assert portfolio.totals.long_exposure == str(100 * 11 + 10 * 300 + 50)
    assert portfolio.totals.open_positions == 3
    assert portfolio.as_of_sequence == 6
    in_a2 = book.GetStrategyPortfolio(
        pb.GetStrategyPortfolioRequest(strategy_id="LONG", account_id="A2")
    )
    assert [p.instrument_id for p in in_a2.positions] == ["XOM"]
    flat = book.GetStrategyPortfolio(pb.GetStrategyPortfolioRequest(strategy_id="FLAT"))
    assert list(flat.positions) == []
    assert flat.totals.realized_pnl == "10"
    with_flat = book.GetStrategyPortfolio(
        pb.GetStrategyPortfolioRequest(strategy_id="FLAT", include_flat=True)
    )
    assert [p.quantity for p in with_flat.positions] == ["0"]


def test_unknown_strategy_or_account_is_not_found(book):
    with pytest.raises(grpc.RpcError) as raised:
        book.GetStrategyPortfolio(pb.GetStrategyPortfolioRequest(strategy_id="GHOST"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as raised:
        book.GetPortfolioSummary(pb.GetPortfolioSummaryRequest(account_id="GHOST"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_portfolio_summary_per_account_and_across_accounts(book):
    summary = book.GetPortfolioSummary(pb.GetPortfolioSummaryRequest(account_id="A1"))
    totals = summary.account_totals
    assert (totals.realized_pnl, totals.fees) == ("110", "2")  # AAPL netting + IBM round trip
    assert (totals.long_exposure, totals.short_exposure) == ("3000", "0")
    assert (totals.open_positions, totals.total_positions) == (1, 3)
    assert totals.net_pnl == "108"
    assert [s.strategy_id for s in summary.strategies] == ["FLAT", "LONG", "SHORT"]
    by_strategy = {s.strategy_id: s.totals for s in summary.strategies}
    assert by_strategy["SHORT"].short_exposure == "1100"
    assert by_strategy["LONG"].long_exposure == "4100"
    everything = book.GetPortfolioSummary(pb.GetPortfolioSummaryRequest())
    assert everything.account_totals.long_exposure == "3050"
    assert everything.as_of_sequence == 6


def test_list_positions_pages_through_every_row_once(book):
    seen, token = [], ""
    while True:
        page = book.ListPositions(
            pb.ListPositionsRequest(page_size=2, page_token=token, include_flat=True)
        )
        seen += [(p.account_id, p.strategy_id, p.instrument_id) for p in page.positions]
        token = page.next_page_token
        if not token:
            break
    assert seen == [
        ("A1", "FLAT", "IBM"),
        ("A1", "LONG", "AAPL"),
        ("A1", "LONG", "MSFT"),
        ("A1", "SHORT", "AAPL"),
        ("A2", "LONG", "XOM"),
    ]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"account_id": "A1"}, [("LONG", "AAPL"), ("LONG", "MSFT"), ("SHORT", "AAPL")]),
        ({"account_id": "A1", "strategy_id": "LONG"}, [("LONG", "AAPL"), ("LONG", "MSFT")]),
        ({"strategy_id": "LONG"}, [("LONG", "AAPL"), ("LONG", "MSFT"), ("LONG", "XOM")]),
        ({"instrument_id": "AAPL"}, [("LONG", "AAPL"), ("SHORT", "AAPL")]),
        (
            {"account_id": "A1", "include_flat": True},
            [("FLAT", "IBM"), ("LONG", "AAPL"), ("LONG", "MSFT"), ("SHORT", "AAPL")],
        ),
        ({"level": pb.POSITION_LEVEL_ACCOUNT}, [("", "MSFT"), ("", "XOM")]),
        (
            {"level": pb.POSITION_LEVEL_ACCOUNT, "include_flat": True, "account_id": "A1"},
            [("", "AAPL"), ("", "IBM"), ("", "MSFT")],
        ),
        (
            {"level": pb.POSITION_LEVEL_ACCOUNT, "instrument_id": "AAPL", "include_flat": True},
            [("", "AAPL")],
        ),
    ],
)
def test_list_positions_filters(book, filters, expected):
    page = book.ListPositions(pb.ListPositionsRequest(**filters))
    assert [(p.strategy_id, p.instrument_id) for p in page.positions] == expected
    assert page.next_page_token == ""


def test_a_page_token_only_works_with_its_filters(book):
    page = book.ListPositions(pb.ListPositionsRequest(page_size=1))
    with pytest.raises(grpc.RpcError) as raised:
        book.ListPositions(
            pb.ListPositionsRequest(page_size=1, page_token=page.next_page_token, account_id="A2")
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_query_carries_every_kind(book):
    answers = {
        "position": pb.PortfolioQuery(
            get_position=pb.GetPositionRequest(account_id="A1", instrument_id="MSFT")
        ),
        "strategy_portfolio": pb.PortfolioQuery(
            get_strategy_portfolio=pb.GetStrategyPortfolioRequest(strategy_id="SHORT")
        ),
        "portfolio_summary": pb.PortfolioQuery(
            get_portfolio_summary=pb.GetPortfolioSummaryRequest(account_id="A2")
        ),
        "list_positions": pb.PortfolioQuery(
            list_positions=pb.ListPositionsRequest(account_id="A2")
        ),
    }
    for branch, query in answers.items():
        response = book.Query(query)
        assert response.WhichOneof("response") == branch
    assert book.Query(answers["position"]).position.quantity == "10"
    assert book.Query(answers["list_positions"]).list_positions.positions[0].instrument_id == "XOM"
    with pytest.raises(grpc.RpcError) as raised:
        book.Query(
            pb.PortfolioQuery(
                get_position=pb.GetPositionRequest(account_id="A1", instrument_id="NOPE")
            )
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_every_query_kind_is_answered_by_the_rpc_of_its_request_and_answer():
    kinds = pb.PortfolioQuery.DESCRIPTOR.oneofs_by_name["query"].fields
    answers = pb.PortfolioResponse.DESCRIPTOR.oneofs_by_name["response"].fields
    rpcs = pb.DESCRIPTOR.services_by_name["PortfolioManager"].methods_by_name
    assert set(QUERIES) == {kind.name for kind in kinds}
    for kind in kinds:
        answer, method = QUERIES[kind.name]
        rpc = rpcs[method.__name__]
        assert rpc.input_type is kind.message_type
        (field,) = [field for field in answers if field.name == answer]
        assert field.message_type is rpc.output_type


@pytest.mark.parametrize(
    ("kind", "request_"),
    [
        ("get_position", pb.GetPositionRequest(account_id="A1", instrument_id="MSFT")),
        ("get_strategy_portfolio", pb.GetStrategyPortfolioRequest(strategy_id="LONG")),
        ("get_portfolio_summary", pb.GetPortfolioSummaryRequest(account_id="A1")),
        ("list_positions", pb.ListPositionsRequest(page_size=1)),
        ("list_positions", pb.ListPositionsRequest(page_token="garbage")),
        ("get_trace_position", pb.GetTracePositionRequest(trace_id="never-seen")),
        ("get_order", pb.GetOrderRequest(account_id="A1", order_id="never-seen")),
        ("get_order", pb.GetOrderRequest(account_id="A1")),
        ("list_open_orders", pb.ListOpenOrdersRequest(account_id="A1")),
        ("get_balances", pb.GetBalancesRequest(account_id="A1")),
        (
            "get_consolidated_position",
            pb.GetConsolidatedPositionRequest(account_id="A1", instrument_id="AAPL"),
        ),
        ("get_instrument", pb.GetInstrumentRequest(instrument_id="AAPL")),
        ("get_instrument", pb.GetInstrumentRequest(instrument_id="NOPE")),
        ("get_reconciliation", pb.GetReconciliationRequest(account_id="A1")),
    ],
)
def test_a_query_answers_as_its_rpc_does(book, kind, request_):
    """The same answer, or the same status, code, message and field."""

    def outcome(call, message):
        try:
            return call(message)
        except grpc.RpcError as error:
            return error.code(), error.details(), field_violations(error)

    answer_field, method = QUERIES[kind]
    direct = outcome(getattr(book, method.__name__), request_)
    via_query = outcome(book.Query, pb.PortfolioQuery(**{kind: request_}))
    if isinstance(direct, tuple):
        assert via_query == direct
    else:
        assert via_query.WhichOneof("response") == answer_field
        assert getattr(via_query, answer_field) == direct


def test_trace_positions_group_the_legs_of_a_multi_step_trade(stub):
    now = Timestamp()
    now.GetCurrentTime()
    acks(
        stub,
        pb_fill("BUY", 2, 100, instrument="BTC-USD", trace_id="arb-1", venue="X", timestamp=now),
        pb_fill("SELL", 2, 101, instrument="BTC-EUR", trace_id="arb-1", venue="Y", timestamp=now),
    )
    trace = stub.GetTracePosition(pb.GetTracePositionRequest(trace_id="arb-1"))
    assert [(leg.step, leg.instrument_id, leg.venue) for leg in trace.legs] == [
        (1, "BTC-USD", "X"),
        (2, "BTC-EUR", "Y"),
    ]
    assert {n.instrument_id: (n.quantity, n.cash_flow) for n in trace.net} == {
        "BTC-USD": ("2", "-200"),
        "BTC-EUR": ("-2", "202"),
    }
    via_query = stub.Query(
        pb.PortfolioQuery(get_trace_position=pb.GetTracePositionRequest(trace_id="arb-1"))
    )
    assert via_query.trace_position == trace
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetTracePosition(pb.GetTracePositionRequest(trace_id="never-seen"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
