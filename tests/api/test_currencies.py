"""Money carries its currency on the wire, and paper is never added to live (issue 11), through
a real gRPC server and the SDK.

The tests named `..._fee_...` need the book to keep a row's fees per currency (a USD commission
on an EUR row lands in USD, in `PositionView.other_fees` and the USD totals).
"""

from __future__ import annotations

from decimal import Decimal

import grpc
import pytest

from client import (
    AccountKind,
    AsyncPortfolioClient,
    PortfolioClient,
    PortfolioError,
    StrategyPortfolioQuery,
)
from portfolio.v1 import portfolio_pb2 as pb
from tests.api.protocol import acks, field_violations, pb_fill
from tests.api.test_reference_and_cash import define, fx, mark, stream_marks, transfer


def define_account(stub, account_id: str, kind: str = "LIVE", base: str = "USD", cash: str = ""):
    account = pb.Account(
        account_id=account_id,
        kind=pb.AccountKind.Value(f"ACCOUNT_KIND_{kind}"),
        base_currency=base,
        initial_cash=cash,
    )
    return stub.DefineAccount(pb.DefineAccountRequest(account=account), timeout=10)


def summary(stub, account_id: str = "", kind: str = "UNSPECIFIED") -> pb.PortfolioSummary:
    request = pb.GetPortfolioSummaryRequest(
        account_id=account_id, account_kind=pb.AccountKind.Value(f"ACCOUNT_KIND_{kind}")
    )
    return stub.GetPortfolioSummary(request, timeout=10)


def position(stub, account_id: str, instrument_id: str, strategy_id: str = "S1") -> pb.Position:
    request = pb.GetPositionRequest(
        account_id=account_id, instrument_id=instrument_id, strategy_id=strategy_id
    )
    return stub.GetPosition(request, timeout=10)


def by_currency(message) -> dict[str, tuple[str, str, str, int]]:
    """currency -> (realized, fees, net, total_positions) of a message's per-currency totals."""
    return {
        c.currency: (c.totals.realized_pnl, c.totals.fees, c.totals.net_pnl,
                     c.totals.total_positions)
        for c in message.by_currency
    }  # fmt: skip


def eur_round_trip_with_usd_fees(stub, account: str = "A1") -> None:
    """+100 EUR realized on SAP with a 5 USD commission, and a USD row with a 1 USD one: the
    issue's example, whose mixed sum was net_pnl 94."""
    define(stub, "SAP", currency="EUR")
    results = acks(
        stub,
        pb_fill("BUY", 10, 100, account=account, instrument="SAP", commission="5",
                commission_currency="USD"),
        pb_fill("SELL", 10, 110, account=account, instrument="SAP"),
        pb_fill("BUY", 1, 50, account=account, commission="1", commission_currency="USD"),
    )  # fmt: skip
    assert all(ack.result == pb.EVENT_RESULT_ACCEPTED for ack in results)


# -- a row's fees per currency ----------------------------------------------------------------


def test_a_usd_fee_on_an_eur_row_is_kept_apart_from_its_eur_figures(stub):
    define(stub, "SAP", currency="EUR")
    acks(stub, pb_fill("BUY", 10, 100, instrument="SAP", commission="5",
                       commission_currency="USD"))  # fmt: skip
    row = position(stub, "A1", "SAP")
    assert (row.currency, row.base_currency) == ("EUR", "USD")
    assert row.fees == "0"
    assert [(f.currency, f.amount) for f in row.other_fees] == [("USD", "5")]
    assert row.net_pnl == "0"  # EUR: the USD commission is not in it
    # No EUR rate: every base figure is missing, never zero; nothing was realized: 0.
    assert (row.fx_rate, row.fees_base, row.net_pnl_base) == ("",) * 3
    assert row.realized_pnl_base == "0"

    stream_marks(stub, pb.MarkBatch(fx_rates=[fx("EUR", "USD", "1.1")]),
                 pb.MarkBatch(marks=[mark("SAP", 99, mark="110")]))  # fmt: skip
    row = position(stub, "A1", "SAP")
    assert (row.unrealized_pnl, row.net_pnl) == ("100", "100")
    assert (row.fx_rate, row.unrealized_pnl_base) == ("1.1", "110")
    # Each currency at its own rate: EUR 0 x 1.1 + USD 5 x 1.
    assert (row.fees_base, row.net_pnl_base) == ("5", "105")


def test_a_fee_whose_currency_has_no_rate_leaves_the_base_fees_missing(stub):
    define_account(stub, "EU", base="EUR")
    define(stub, "SAP", currency="EUR")
    acks(stub, pb_fill("BUY", 10, 100, account="EU", instrument="SAP", commission="5",
                       commission_currency="USD"))  # fmt: skip
    row = position(stub, "EU", "SAP")
    assert [(f.currency, f.amount) for f in row.other_fees] == [("USD", "5")]
    # EUR into EUR needs no rate; the USD fee does: missing, never zero.
    assert (row.fx_rate, row.realized_pnl_base, row.market_value_base) == ("1", "0", "1000")
    assert (row.fees_base, row.net_pnl_base) == ("", "")

    stream_marks(stub, pb.MarkBatch(fx_rates=[fx("EUR", "USD", "1.25")]))
    row = position(stub, "EU", "SAP")
    assert (row.fees_base, row.net_pnl_base) == ("4", "-4")  # USD 5 / 1.25


def test_a_fee_in_another_currency_makes_the_totals_per_currency_only(stub):
    define(stub, "SAP", currency="EUR")
    acks(stub, pb_fill("BUY", 10, 100, instrument="SAP", commission="5",
                       commission_currency="USD"))  # fmt: skip
    found = summary(stub, "A1")
    # One instrument currency, but fees in two: no single-currency total exists.
    assert not found.HasField("account_totals")
    assert by_currency(found) == {"EUR": ("0", "0", "0", 1), "USD": ("0", "5", "-5", 0)}
    (strategy,) = found.strategies
    assert not strategy.HasField("totals")
    assert by_currency(strategy) == by_currency(found)


# -- totals never add two currencies ----------------------------------------------------------


def test_a_summary_of_eur_and_usd_rows_has_no_mixed_totals(stub):
    eur_round_trip_with_usd_fees(stub)
    found = summary(stub, "A1")
    assert not found.HasField("account_totals")  # was net_pnl 94 = 100 EUR - 6 USD
    (strategy,) = found.strategies
    assert not strategy.HasField("totals")
    assert set(by_currency(found)) == {"EUR", "USD"}
    assert by_currency(found)["EUR"][0] == "100"
    assert found.base_currency == "USD"
    assert list(found.missing_fx_rates) == ["EUR"]
    assert not found.HasField("base_totals")
    assert [(c.currency, c.fx_rate) for c in found.by_currency] == [("EUR", ""), ("USD", "1")]

    # A rate now does not say what EUR was worth when the 100 EUR were realized: still missing.
    stream_marks(stub, pb.MarkBatch(fx_rates=[fx("EUR", "USD", "1.1")]))
    found = summary(stub, "A1")
    assert list(found.missing_fx_rates) == ["EUR"]
    assert not found.HasField("base_totals")
    assert [(c.currency, c.fx_rate) for c in found.by_currency] == [("EUR", "1.1"), ("USD", "1")]
    assert found.strategies[0].base_totals == found.base_totals


def test_realized_pnl_in_base_stays_at_the_rate_in_force_when_realized(stub):
    stream_marks(stub, pb.MarkBatch(fx_rates=[fx("EUR", "USD", "1.1")]))
    eur_round_trip_with_usd_fees(stub)
    found = summary(stub, "A1")
    assert list(found.missing_fx_rates) == []
    assert found.base_totals.realized_pnl == "110"  # EUR 100 x 1.1
    assert list(found.strategies[0].by_currency) == list(found.by_currency)
    assert found.strategies[0].base_totals == found.base_totals
    stream_marks(stub, pb.MarkBatch(fx_rates=[fx("EUR", "USD", "1.3", seconds=5)]))
    found = summary(stub, "A1")
    assert [(c.currency, c.fx_rate) for c in found.by_currency] == [("EUR", "1.3"), ("USD", "1")]
    assert found.base_totals.realized_pnl == "110"  # not 130: realized when EUR was 1.1
    row = position(stub, "A1", "SAP")
    assert (row.realized_pnl, row.realized_pnl_base, row.fx_rate) == ("100", "110", "1.3")


def test_the_eur_row_and_usd_fees_convert_each_at_their_own_rate_fee(stub):
    stream_marks(stub, pb.MarkBatch(fx_rates=[fx("EUR", "USD", "1.1")]))
    eur_round_trip_with_usd_fees(stub)
    assert by_currency(summary(stub, "A1")) == {
        "EUR": ("100", "0", "100", 1),
        "USD": ("0", "6", "-6", 1),
    }
    stream_marks(stub, pb.MarkBatch(fx_rates=[fx("EUR", "USD", "1.1")]))
    base = summary(stub, "A1").base_totals
    assert (base.realized_pnl, base.fees, base.net_pnl) == ("110", "6", "104")


def test_a_single_currency_account_keeps_its_totals(stub):
    acks(stub, pb_fill("BUY", 10, 100, commission="1", commission_currency="USD"))
    found = summary(stub, "A1")
    assert found.HasField("account_totals")
    assert (found.account_totals.long_exposure, found.account_totals.fees) == ("1000", "1")
    (usd,) = found.by_currency
    assert usd.totals == found.account_totals
    assert found.strategies[0].totals == found.account_totals


def test_a_strategy_portfolio_carries_per_currency_and_base_totals(stub):
    eur_round_trip_with_usd_fees(stub)
    request = pb.GetStrategyPortfolioRequest(strategy_id="S1", include_flat=True)
    portfolio = stub.GetStrategyPortfolio(request, timeout=10)
    assert not portfolio.HasField("totals")
    assert set(by_currency(portfolio)) == {"EUR", "USD"}
    assert (portfolio.base_currency, list(portfolio.missing_fx_rates)) == ("USD", ["EUR"])
    assert not portfolio.HasField("base_totals")
    assert {p.instrument_id: p.currency for p in portfolio.positions} == {
        "AAPL": "USD",
        "SAP": "EUR",
    }
    stream_marks(stub, pb.MarkBatch(fx_rates=[fx("EUR", "USD", "1.1")]))
    portfolio = stub.GetStrategyPortfolio(request, timeout=10)
    assert not portfolio.HasField("base_totals")  # realized with no EUR rate: for good
    assert list(portfolio.missing_fx_rates) == ["EUR"]

    acks(stub, pb_fill("BUY", 2, 10, strategy="S2"))
    single = stub.GetStrategyPortfolio(pb.GetStrategyPortfolioRequest(strategy_id="S2"))
    assert single.HasField("totals") and single.totals.long_exposure == "20"
    assert single.base_totals == single.totals


def test_a_strategy_across_accounts_of_different_base_currencies_uses_the_reporting_one(stub):
    define_account(stub, "EU1", base="EUR")
    define_account(stub, "EU2", base="EUR")
    acks(
        stub,
        pb_fill("BUY", 1, 10, account="EU1", strategy="EUR_ONLY"),
        pb_fill("BUY", 1, 10, account="EU2", strategy="EUR_ONLY"),
        pb_fill("BUY", 1, 10, account="EU1", strategy="BOTH"),
        pb_fill("BUY", 1, 10, account="A1", strategy="BOTH"),
    )

    def base_of(strategy_id: str, account_id: str = "") -> str:
        request = pb.GetStrategyPortfolioRequest(strategy_id=strategy_id, account_id=account_id)
        return stub.GetStrategyPortfolio(request, timeout=10).base_currency

    assert base_of("EUR_ONLY") == "EUR"  # the accounts share it
    assert base_of("BOTH", "EU1") == "EUR"
    assert base_of("BOTH") == "USD"  # EUR and USD accounts: the service's reporting currency


# -- paper is never added to live -------------------------------------------------------------


def paper_and_live(stub) -> None:
    define_account(stub, "P1", kind="PAPER", cash="10000")
    define_account(stub, "L2", kind="LIVE")
    acks(
        stub,
        transfer("d1", "3000", account="A1"),  # A1: never defined, so live
        pb_fill("BUY", 10, 100, account="A1"),
        pb_fill("BUY", 5, 100, account="P1"),
        pb_fill("BUY", 1, 100, account="L2", strategy="S2"),
    )


def test_across_accounts_paper_and_live_come_side_by_side(stub):
    paper_and_live(stub)
    found = summary(stub)
    assert found.account_kind == pb.ACCOUNT_KIND_UNSPECIFIED
    assert not found.HasField("account_totals") and not found.HasField("base_totals")
    assert (list(found.strategies), list(found.by_currency), list(found.cash)) == ([], [], [])
    paper, live = found.by_account_kind
    assert (paper.account_kind, live.account_kind) == (pb.ACCOUNT_KIND_PAPER, pb.ACCOUNT_KIND_LIVE)
    assert paper.account_totals.long_exposure == "500"
    assert live.account_totals.long_exposure == "1100"  # A1 and L2, not P1
    assert [(s.strategy_id, s.totals.long_exposure) for s in paper.strategies] == [("S1", "500")]
    assert [(s.strategy_id, s.totals.long_exposure) for s in live.strategies] == [
        ("S1", "1000"),
        ("S2", "100"),
    ]
    assert [(c.currency, c.cash) for c in paper.cash] == [("USD", "9500")]
    assert [(c.currency, c.cash) for c in live.cash] == [("USD", "1900")]  # 3000 - 1000 - 100
    assert paper.base_totals.long_exposure == "500" and paper.base_currency == "USD"
    assert [part.account_id for part in found.by_account_kind] == ["", ""]


def test_asking_for_one_kind_covers_only_its_accounts(stub):
    paper_and_live(stub)
    paper = summary(stub, kind="PAPER")
    assert paper.account_kind == pb.ACCOUNT_KIND_PAPER
    assert paper.account_totals.long_exposure == "500"
    assert [(c.currency, c.cash) for c in paper.cash] == [("USD", "9500")]
    assert list(paper.by_account_kind) == []
    live = summary(stub, kind="LIVE")
    assert live.account_totals.long_exposure == "1100"
    assert [s.strategy_id for s in live.strategies] == ["S1", "S2"]
    assert summary(stub).by_account_kind[1] == live


def test_with_one_kind_present_the_figures_are_that_kinds(stub):
    acks(stub, pb_fill("BUY", 10, 100), pb_fill("BUY", 1, 100, account="A2"))
    found = summary(stub)
    assert found.account_kind == pb.ACCOUNT_KIND_LIVE
    assert found.account_totals.long_exposure == "1100"
    (live,) = found.by_account_kind
    assert live.account_totals == found.account_totals
    assert summary(stub, kind="PAPER").account_totals.total_positions == 0


def test_one_accounts_summary_is_unchanged_and_checks_the_kind_asked(stub):
    paper_and_live(stub)
    assert summary(stub, "P1").account_kind == pb.ACCOUNT_KIND_PAPER
    assert summary(stub, "P1", kind="PAPER").account_totals.long_exposure == "500"
    assert list(summary(stub, "P1").by_account_kind) == []
    with pytest.raises(grpc.RpcError) as raised:
        summary(stub, "P1", kind="LIVE")
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(raised.value) == ["account_kind"]
    assert "PAPER" in raised.value.details()
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetPortfolioSummary(pb.GetPortfolioSummaryRequest(account_kind=7), timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(raised.value) == ["account_kind"]


# -- the SDK ----------------------------------------------------------------------------------


@pytest.fixture
def client(server_address: str):
    with PortfolioClient(server_address) as client:
        yield client


def test_the_sdk_models_carry_the_currency_and_base_figures(stub, client):
    eur_round_trip_with_usd_fees(stub)
    stream_marks(stub, pb.MarkBatch(marks=[mark("SAP", 99, mark="120")]))
    acks(stub, pb_fill("BUY", 10, 100, instrument="SAP"))
    row = client.get_position("A1", "SAP", strategy_id="S1")
    assert (row.currency, row.base_currency, row.fx_rate) == ("EUR", "USD", None)
    assert row.unrealized_pnl_base is None and row.net_pnl_base is None
    stream_marks(stub, pb.MarkBatch(fx_rates=[fx("EUR", "USD", "1.1")]))
    row = client.get_position("A1", "SAP", strategy_id="S1")
    assert row.fx_rate == Decimal("1.1")
    assert row.unrealized_pnl == Decimal(200)  # (120 - 100) x 10, mark after the last fill
    assert row.unrealized_pnl_base == Decimal(220)
    assert row.market_value_base == Decimal(1320)

    found = client.get_portfolio_summary("A1")
    assert found.account_totals is None
    assert found.account_kind is AccountKind.LIVE
    assert [c.currency for c in found.by_currency] == ["EUR", "USD"]
    assert found.by_currency[0].fx_rate == Decimal("1.1")
    # 100 EUR realized before any EUR rate: realized P&L in base stays missing.
    assert found.base_totals is None and found.missing_fx_rates == ("EUR",)
    portfolio = client.get_strategy_portfolio("S1")
    assert portfolio.totals is None and portfolio.base_currency == "USD"
    assert portfolio.base_totals == found.strategies[0].base_totals


def test_the_sdk_asks_for_one_kind_or_gets_both_side_by_side(stub, client):
    paper_and_live(stub)
    both = client.get_portfolio_summary()
    assert both.account_totals is None
    assert [part.account_kind for part in both.by_account_kind] == [
        AccountKind.PAPER,
        AccountKind.LIVE,
    ]
    paper = client.get_portfolio_summary(account_kind=AccountKind.PAPER)
    assert paper.account_totals is not None
    assert paper.account_totals.long_exposure == Decimal(500)
    assert paper == both.by_account_kind[0]


def test_the_sdk_position_carries_fees_in_other_currencies_fee(stub, client):
    define(stub, "SAP", currency="EUR")
    acks(stub, pb_fill("BUY", 10, 100, instrument="SAP", commission="5",
                       commission_currency="USD"))  # fmt: skip
    row = client.get_position("A1", "SAP", strategy_id="S1")
    assert row.fees == Decimal(0)
    assert row.other_fees == (("USD", Decimal(5)),)
    assert row.fees_base is None  # no EUR rate yet


def test_updates_carry_the_base_fees_queries_give(stub):
    """One home for base figures: a subscriber's row equals GetPosition's, fees in other
    currencies included (each at its own rate)."""
    from tests.api.test_subscriptions import Reader

    define(stub, "SAP", currency="EUR")
    stream_marks(stub, pb.MarkBatch(fx_rates=[fx("EUR", "USD", "1.1")]))
    reader = Reader(stub, account_id="A1", strategy_id="S1")
    try:
        reader.take(1, heartbeats=True)
        acks(stub, pb_fill("BUY", 10, 100, instrument="SAP", commission="5",
                           commission_currency="USD"))  # fmt: skip
        (update,) = [u for u in reader.take(1) if u.position.instrument_id == "SAP"]
    finally:
        reader.close()
    row = position(stub, "A1", "SAP")
    assert (update.position.fees_base, update.position.net_pnl_base) == ("5", "-5")
    assert update.position == row


# -- a strategy across paper and live accounts ------------------------------------------------


def strategy(
    stub,
    strategy_id: str = "S1",
    account_id: str = "",
    kind: str = "UNSPECIFIED",
    *,
    through_query: bool = False,
) -> pb.StrategyPortfolio:
    """GetStrategyPortfolio, or the same request through the Query RPC's branch."""
    request = pb.GetStrategyPortfolioRequest(
        strategy_id=strategy_id, account_id=account_id, include_flat=True,
        account_kind=pb.AccountKind.Value(f"ACCOUNT_KIND_{kind}"),
    )  # fmt: skip
    if not through_query:
        return stub.GetStrategyPortfolio(request, timeout=10)
    response = stub.Query(pb.PortfolioQuery(get_strategy_portfolio=request), timeout=10)
    assert response.WhichOneof("response") == "strategy_portfolio"
    return response.strategy_portfolio


def refused(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


@pytest.mark.parametrize("through_query", [False, True])
def test_a_strategy_in_paper_and_live_accounts_comes_side_by_side(stub, through_query):
    paper_and_live(stub)  # S1: 5 x 100 in paper P1, 10 x 100 in live A1 (it summed 1500)
    found = strategy(stub, through_query=through_query)
    assert (found.account_id, found.account_kind) == ("", pb.ACCOUNT_KIND_UNSPECIFIED)
    assert not found.HasField("totals") and not found.HasField("base_totals")
    assert (list(found.by_currency), list(found.missing_fx_rates)) == ([], [])
    assert found.base_currency == "USD"  # the reporting currency
    assert [p.account_id for p in found.positions] == ["P1", "A1"]  # rows, never summed
    paper, live = found.by_account_kind
    assert (paper.account_kind, live.account_kind) == (pb.ACCOUNT_KIND_PAPER, pb.ACCOUNT_KIND_LIVE)
    assert (paper.totals.long_exposure, live.totals.long_exposure) == ("500", "1000")
    assert [p.account_id for p in paper.positions] == ["P1"]
    assert [p.account_id for p in live.positions] == ["A1"]
    assert paper.base_totals == paper.totals and [c.currency for c in paper.by_currency] == ["USD"]
    assert (paper.strategy_id, paper.account_id, list(paper.by_account_kind)) == ("S1", "", [])


@pytest.mark.parametrize("through_query", [False, True])
def test_asking_a_strategy_for_one_kind_covers_only_its_accounts(stub, through_query):
    paper_and_live(stub)
    define_account(stub, "L3", kind="LIVE")
    acks(stub, pb_fill("SELL", 2, 100, account="L3"))  # S1 short 2 in a second live account
    paper = strategy(stub, kind="PAPER", through_query=through_query)
    assert paper.account_kind == pb.ACCOUNT_KIND_PAPER
    assert (paper.totals.long_exposure, paper.totals.total_positions) == ("500", 1)
    assert list(paper.by_account_kind) == []
    live = strategy(stub, kind="LIVE", through_query=through_query)
    assert [p.account_id for p in live.positions] == ["A1", "L3"]
    totals = live.totals
    assert (totals.long_exposure, totals.short_exposure, totals.total_positions) == (
        "1000", "200", 2,
    )  # fmt: skip
    assert strategy(stub, through_query=through_query).by_account_kind[1] == live
    error = refused(lambda: strategy(stub, "S2", kind="PAPER", through_query=through_query))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "PAPER" in error.details()


def test_a_strategy_in_one_kind_keeps_its_figures_at_the_top(stub):
    paper_and_live(stub)  # S2 trades in live L2 only
    found = strategy(stub, "S2")
    assert (found.account_kind, found.totals.long_exposure) == (pb.ACCOUNT_KIND_LIVE, "100")
    (live,) = found.by_account_kind
    assert live.totals == found.totals and list(live.positions) == list(found.positions)


@pytest.mark.parametrize("through_query", [False, True])
def test_one_accounts_strategy_checks_the_kind_asked(stub, through_query):
    paper_and_live(stub)
    in_p1 = strategy(stub, account_id="P1", through_query=through_query)
    assert (in_p1.account_kind, in_p1.totals.long_exposure) == (pb.ACCOUNT_KIND_PAPER, "500")
    assert list(in_p1.by_account_kind) == []
    assert strategy(stub, account_id="P1", kind="PAPER", through_query=through_query) == in_p1
    assert strategy(stub, account_id="A1", kind="LIVE").account_kind == pb.ACCOUNT_KIND_LIVE
    error = refused(
        lambda: strategy(stub, account_id="P1", kind="LIVE", through_query=through_query)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == ["account_kind"] and "PAPER" in error.details()
    request = pb.GetStrategyPortfolioRequest(strategy_id="S1", account_kind=7)
    error = refused(lambda: stub.GetStrategyPortfolio(request, timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == ["account_kind"]


def test_the_sdk_asks_a_strategy_for_one_kind_or_gets_both_side_by_side(stub, client):
    paper_and_live(stub)
    both = client.get_strategy_portfolio("S1")
    assert both.totals is None and both.account_kind is AccountKind.UNSPECIFIED
    assert [p.account_id for p in both.positions] == ["P1", "A1"]
    assert [part.account_kind for part in both.by_account_kind] == [
        AccountKind.PAPER,
        AccountKind.LIVE,
    ]
    paper = client.get_strategy_portfolio("S1", account_kind=AccountKind.PAPER)
    assert paper.totals is not None and paper.totals.long_exposure == Decimal(500)
    assert paper == both.by_account_kind[0]
    query = StrategyPortfolioQuery(strategy_id="S1", account_kind=AccountKind.LIVE)
    assert client.query(query) == both.by_account_kind[1]
    with pytest.raises(PortfolioError) as raised:
        client.get_strategy_portfolio("S1", "P1", account_kind=AccountKind.LIVE)
    assert raised.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in raised.value.field_violations] == ["account_kind"]


async def test_the_asyncio_sdk_asks_a_strategy_for_one_kind_or_both(stub, server_address):
    paper_and_live(stub)
    async with AsyncPortfolioClient(server_address) as client:
        both = await client.get_strategy_portfolio("S1")
        live = await client.get_strategy_portfolio("S1", account_kind=AccountKind.LIVE)
        query = StrategyPortfolioQuery(strategy_id="S1", account_kind=AccountKind.PAPER)
        paper = await client.query(query)
    assert both.totals is None and both.by_account_kind == (paper, live)
    assert live.totals is not None and live.totals.long_exposure == Decimal(1000)
