"""Every RPC and every Query branch through the SDK, blocking and asyncio alike, against the real
service on 127.0.0.1 (one service for the module, on LMDB in a tmp folder, loaded once with a
small book).

The book: paper account P1 (base USD, 100,000 USD paid in), the future ESM4 (USD, multiplier
50) and the stock SAP (EUR); 5,000 EUR deposited; order 101 submitted; S1 buys 2 ESM4 at
5000.25 (4.50 USD commission), S2 sells 1 at 5001 (both legs of trace TR1, at CME); S1 buys 10
SAP at 180; one EUR is 1.1 USD. Tests that change state use their own ids per client kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncGenerator, Callable, Generator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import grpc
import pytest

from client import (
    Account,
    AccountKind,
    AssetClass,
    AsyncPortfolioClient,
    BalancesQuery,
    CashTransfer,
    ConsolidatedPositionQuery,
    EventResult,
    Fill,
    FxRate,
    Instrument,
    InstrumentQuery,
    MarkSource,
    OpenOrdersQuery,
    OptionRight,
    OrderQuery,
    OrderStatus,
    OrderStatusUpdate,
    PerformanceQuery,
    PnlHistoryQuery,
    PortfolioClient,
    PortfolioError,
    PortfolioSummaryQuery,
    PortfolioUpdate,
    PositionLevel,
    PositionQuery,
    PositionsQuery,
    Query,
    ReconciliationQuery,
    ReservationStatus,
    RiskMetricsQuery,
    Side,
    StrategyPortfolioQuery,
    TracePositionQuery,
    UpdateKind,
)
from client.rpcs import for_request
from tests.conftest import ServerThread, start_test_server

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
D = Decimal

#: The sequence of each event of the book, as acked (filled in by the `book` fixture).
SEQUENCE: dict[str, int] = {}


def book_events() -> list[Any]:
    return [
        CashTransfer(
            transfer_id="T1", account_id="P1", currency="EUR", amount=D(5000), timestamp=T0
        ),
        OrderStatusUpdate(
            update_id="U1", account_id="P1", strategy_id="S1", instrument_id="ESM4",
            order_id="101", status=OrderStatus.SUBMITTED, remaining_quantity=D(3),
            side=Side.BUY, timestamp=T0,
        ),
        Fill(
            fill_id="F1", account_id="P1", strategy_id="S1", instrument_id="ESM4", side=Side.BUY,
            quantity=D(2), price=D("5000.25"), commission=D("4.5"), commission_currency="USD",
            timestamp=T0 + timedelta(seconds=1), order_id="101", trace_id="TR1", venue="CME",
        ),
        Fill(
            fill_id="F2", account_id="P1", strategy_id="S2", instrument_id="ESM4",
            side=Side.SELL, quantity=D(1), price=D(5001), timestamp=T0 + timedelta(seconds=2),
            trace_id="TR1", venue="CME",
        ),
        Fill(
            fill_id="F3", account_id="P1", strategy_id="S1", instrument_id="SAP", side=Side.BUY,
            quantity=D(10), price=D(180), timestamp=T0 + timedelta(seconds=3),
        ),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    running = start_test_server(store=f"lmdb://{tmp_path_factory.mktemp('whole_api')}/store")
    try:
        with PortfolioClient(running.address) as pm:
            pm.define_account(
                Account(account_id="P1", kind=AccountKind.PAPER, base_currency="USD",
                        initial_cash=D(100_000))
            )  # fmt: skip
            pm.define_instrument(
                Instrument(instrument_id="ESM4", currency="USD", symbol="ES",
                           asset_class=AssetClass.FUTURE, multiplier=D(50), underlying="ES",
                           expiry="2024-06")
            )  # fmt: skip
            pm.define_instrument(
                Instrument(instrument_id="SAP", currency="EUR", asset_class=AssetClass.EQUITY)
            )
            acks = pm.ingest(book_events())
            assert all(ack.result is EventResult.ACCEPTED for ack in acks), acks
            SEQUENCE.update({ack.event_id: ack.sequence for ack in acks})
            pm.send_marks(fx_rates=[FxRate(base="EUR", quote="USD", rate=D("1.1"), timestamp=T0)])
        yield running
    finally:
        running.stop()


class Api:
    """One client kind behind one calling convention: `api("get_order", "P1", ...)`."""

    def __init__(self, kind: str, address: str) -> None:
        self.kind = kind
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sync: PortfolioClient | None = None
        self._aio: AsyncPortfolioClient | None = None
        if kind == "sync":
            self._sync = PortfolioClient(address)
        else:
            self._loop = asyncio.new_event_loop()

            async def connect() -> AsyncPortfolioClient:
                return AsyncPortfolioClient(address)

            self._aio = self._loop.run_until_complete(connect())

    def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self._sync is not None:
            return getattr(self._sync, method)(*args, **kwargs)
        assert self._loop is not None
        return self._loop.run_until_complete(getattr(self._aio, method)(*args, **kwargs))

    def take(self, count: int, **filters: Any) -> list[PortfolioUpdate]:
        """The first `count` updates of a subscription, which is then closed."""
        if self._sync is not None:
            updates: Generator[PortfolioUpdate, None, None] = self._sync.subscribe(**filters)
            with contextlib.closing(updates):
                return [update for update, _ in zip(updates, range(count), strict=False)]
        assert self._loop is not None and self._aio is not None
        stream: AsyncGenerator[PortfolioUpdate, None] = self._aio.subscribe(**filters)

        async def collect() -> list[PortfolioUpdate]:
            taken: list[PortfolioUpdate] = []
            async with contextlib.aclosing(stream):
                async for update in stream:
                    taken.append(update)
                    if len(taken) == count:
                        break
            return taken

        return self._loop.run_until_complete(asyncio.wait_for(collect(), timeout=30))

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
        elif self._loop is not None and self._aio is not None:
            self._loop.run_until_complete(self._aio.close())
            self._loop.close()


@pytest.fixture(params=["sync", "aio"])
def api(request: pytest.FixtureRequest, service: ServerThread) -> Iterator[Api]:
    client = Api(request.param, service.address)
    try:
        yield client
    finally:
        client.close()


def failure(call: Callable[[], Any]) -> grpc.StatusCode:
    with pytest.raises(PortfolioError) as caught:
        call()
    return caught.value.code


# ---------------------------------------------------------------------------------------------
# Positions and the book


def test_get_position_carries_currency_and_base_figures(api: Api) -> None:
    row = api("get_position", "P1", "SAP", "S1")
    assert (row.quantity, row.avg_cost, row.market_value, row.currency) == (
        D(10),
        D(180),
        D(1800),
        "EUR",
    )
    assert (row.base_currency, row.fx_rate, row.market_value_base) == ("USD", D("1.1"), D(1980))
    assert (row.realized_pnl_base, row.net_pnl_base, row.fees_base) == (D(0), D(0), D(0))
    assert row.mark_source is MarkSource.LAST_FILL and row.marked_at == T0 + timedelta(seconds=3)
    book = api("get_position", "P1", "ESM4")
    assert book.level is PositionLevel.ACCOUNT
    assert (book.quantity, book.realized_pnl, book.unrealized_pnl, book.fees, book.net_pnl) == (
        D(1),
        D("37.5"),
        D("37.5"),
        D("4.5"),
        D("70.5"),
    )


def test_get_strategy_portfolio_keeps_currencies_apart(api: Api) -> None:
    portfolio = api("get_strategy_portfolio", "S1", "P1")
    assert sorted(p.instrument_id for p in portfolio.positions) == ["ESM4", "SAP"]
    assert portfolio.totals is None  # two currencies: no single-currency total
    by_currency = {c.currency: c for c in portfolio.by_currency}
    assert by_currency["EUR"].fx_rate == D("1.1")
    assert by_currency["USD"].totals.unrealized_pnl == D(75)
    assert portfolio.base_currency == "USD"
    assert portfolio.base_totals is not None
    assert (portfolio.base_totals.net_pnl, portfolio.base_totals.long_exposure) == (
        D("70.5"),
        D(500100 + 1980),
    )
    assert portfolio.account_kind is AccountKind.PAPER


def test_get_portfolio_summary_has_each_strategy(api: Api) -> None:
    summary = api("get_portfolio_summary", "P1")
    assert summary.account_kind is AccountKind.PAPER and summary.base_currency == "USD"
    strategies = {s.strategy_id: s for s in summary.strategies}
    assert strategies["S2"].totals is not None
    assert strategies["S2"].totals.net_exposure == D(-250050)
    assert summary.base_totals is not None
    assert summary.base_totals.gross_exposure == D(250050 + 1980)


def test_list_positions_pages_the_account_rows(api: Api) -> None:
    first = api("list_positions", "P1", level=PositionLevel.ACCOUNT, page_size=1)
    assert [p.instrument_id for p in first.positions] == ["ESM4"]
    second = api(
        "list_positions", "P1", level=PositionLevel.ACCOUNT, page_token=first.next_page_token
    )
    assert [(p.instrument_id, p.quantity) for p in second.positions] == [("SAP", D(10))]
    assert second.next_page_token == ""


def test_reads_as_of_a_past_sequence(api: Api) -> None:
    page = api("list_positions", "P1", level=PositionLevel.ACCOUNT, as_of=SEQUENCE["F1"])
    assert [(p.instrument_id, p.quantity) for p in page.positions] == [("ESM4", D(2))]
    assert page.as_of_sequence == SEQUENCE["F1"]


def test_get_trace_position_nets_the_legs(api: Api) -> None:
    trace = api("get_trace_position", "TR1")
    assert [(leg.fill_id, leg.side, leg.quantity) for leg in trace.legs] == [
        ("F1", Side.BUY, D(2)), ("F2", Side.SELL, D(1))
    ]  # fmt: skip
    assert [(n.instrument_id, n.quantity, n.cash_flow) for n in trace.net] == [
        ("ESM4", D(1), D(-249975))
    ]


def test_get_consolidated_position_sets_rows_side_by_side(api: Api) -> None:
    consolidated = api("get_consolidated_position", "P1", "ESM4")
    assert consolidated.account_position is not None
    assert consolidated.account_position.quantity == D(1)
    assert sorted((p.strategy_id, p.quantity) for p in consolidated.strategy_positions) == [
        ("S1", D(2)), ("S2", D(-1))
    ]  # fmt: skip
    assert (consolidated.attributed_quantity, consolidated.unattributed_quantity) == (D(1), D(0))
    assert consolidated.broker_quantity is None  # never reconciled


# ---------------------------------------------------------------------------------------------
# Orders


def test_get_order_has_its_history(api: Api) -> None:
    order = api("get_order", "P1", order_id="101")
    assert (order.order_key, order.status, order.is_open) == ("id:101", OrderStatus.SUBMITTED, True)
    assert (order.remaining_quantity, order.booked_quantity, order.booked_fills) == (D(3), D(2), 1)
    assert order.avg_fill_price is None
    assert [t.update.update_id for t in order.history if t.update] == ["U1"]


def test_list_open_orders(api: Api) -> None:
    page = api("list_open_orders", "P1")
    assert [(o.order_id, o.history) for o in page.orders] == [("101", ())]
    assert page.next_page_token == ""


# ---------------------------------------------------------------------------------------------
# Cash


def test_get_balances_after_a_transfer_and_fills(api: Api) -> None:
    balances = api("get_balances", "P1")
    cash = {b.currency: b for b in balances.balances}
    assert (cash["EUR"].cash, cash["EUR"].available) == (D(3200), D(3200))  # 5000 - 10 * 180
    # 100,000 paid in, -2 * 5000.25 * 50 - 4.50, +1 * 5001 * 50.
    assert cash["USD"].cash == D("-149979.5")
    assert balances.account_kind is AccountKind.PAPER and balances.base_currency == "USD"


def _paper_account(api: Api, account_id: str) -> None:
    account = Account(
        account_id=account_id, kind=AccountKind.PAPER, base_currency="USD", initial_cash=D(1000)
    )
    api("define_account", account)


def test_reserve_cash_sets_cash_aside(api: Api) -> None:
    account = f"R-{api.kind}"
    _paper_account(api, account)
    reservation = api(
        "reserve_cash", reservation_id=f"R1-{api.kind}", account_id=account, currency="USD",
        amount=D("600.25"), order_id="201",
    )  # fmt: skip
    assert (reservation.remaining, reservation.status, reservation.order_key) == (
        D("600.25"),
        ReservationStatus.ACTIVE,
        "id:201",
    )
    (usd,) = api("get_balances", account).balances
    assert (usd.cash, usd.reserved, usd.available) == (D(1000), D("600.25"), D("399.75"))
    # More than is available: refused, nothing reserved.
    code = failure(
        lambda: api("reserve_cash", reservation_id=f"R2-{api.kind}", account_id=account,
                    currency="USD", amount=D(400))
    )  # fmt: skip
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert api("get_balances", account).balances[0].reserved == D("600.25")


def test_release_reservation_gives_cash_back(api: Api) -> None:
    account = f"L-{api.kind}"
    _paper_account(api, account)
    reservation = f"R3-{api.kind}"
    api("reserve_cash", reservation_id=reservation, account_id=account, currency="USD",
        amount=D(500))  # fmt: skip
    part = api(
        "release_reservation", release_id=f"L1-{api.kind}", account_id=account,
        reservation_id=reservation, amount=D(200),
    )  # fmt: skip
    assert (part.remaining, part.released, part.status) == (
        D(300),
        D(200),
        ReservationStatus.ACTIVE,
    )
    rest = api("release_reservation", release_id=f"L2-{api.kind}", account_id=account,
               reservation_id=reservation)  # fmt: skip
    assert (rest.remaining, rest.released, rest.status) == (
        D(0),
        D(500),
        ReservationStatus.RELEASED,
    )
    (usd,) = api("get_balances", account).balances
    assert (usd.reserved, usd.available) == (D(0), D(1000))


# ---------------------------------------------------------------------------------------------
# Reference data


def test_define_get_and_list_instruments(api: Api) -> None:
    option = Instrument(
        instrument_id=f"AAPL-C-{api.kind}", currency="USD", symbol="AAPL",
        asset_class=AssetClass.OPTION, multiplier=D(100), underlying="AAPL",
        strike=D("190.5"), expiry="2024-06-21", right=OptionRight.CALL,
        tick_size=D("0.01"),
    )  # fmt: skip
    defined = api("define_instrument", option)
    assert defined == option
    assert api("define_instrument", option) == option  # the same definition again: no change
    assert api("get_instrument", option.instrument_id) == option
    listed = api("list_instruments", page_size=1000).instruments
    assert option in listed
    assert {i.instrument_id for i in listed} >= {"ESM4", "SAP"}


def test_define_and_list_accounts(api: Api) -> None:
    account = Account(
        account_id=f"E-{api.kind}", kind=AccountKind.PAPER, base_currency="EUR",
        initial_cash=D("2500.50"),
    )  # fmt: skip
    defined = api("define_account", account)
    assert defined == dataclasses.replace(account, defined=True)
    assert dataclasses.replace(account, defined=True) in api("list_accounts")
    (eur,) = api("get_balances", account.account_id).balances
    assert (eur.currency, eur.cash) == ("EUR", D("2500.50"))


# ---------------------------------------------------------------------------------------------
# Reconciliation (no broker here)


def test_reconcile_without_a_broker_is_unavailable(api: Api) -> None:
    assert failure(lambda: api("reconcile", "P1")) == grpc.StatusCode.UNAVAILABLE


def test_get_reconciliation_before_any_run_is_not_found(api: Api) -> None:
    assert failure(lambda: api("get_reconciliation", "P1")) == grpc.StatusCode.NOT_FOUND


def test_list_reconciliations_before_any_run_is_empty(api: Api) -> None:
    page = api("list_reconciliations", "P1")
    assert (page.reconciliations, page.next_page_token) == ((), "")


# ---------------------------------------------------------------------------------------------
# P&L history, performance, risk


def test_get_pnl_history_without_a_close_has_no_day(api: Api) -> None:
    history = api("get_pnl_history", "P1")
    assert (history.account_id, history.base_currency, history.days) == ("P1", "USD", ())


def test_get_performance_per_currency_venue_and_trace(api: Api) -> None:
    performance = api("get_performance", "P1")
    usd = {c.currency: c for c in performance.by_currency}["USD"]
    assert (usd.trade_count, usd.gross_pnl, usd.fees, usd.net_pnl, usd.realized_pnl) == (
        2,
        D(75),
        D("4.5"),
        D("70.5"),
        D("37.5"),
    )
    venues = {(v.venue, v.currency): v for v in performance.venues}
    assert venues["CME", "USD"].volume == D(2 * 5000.25 * 50 + 5001 * 50)
    (trace,) = performance.trace_venues
    assert (trace.venue, trace.steps, trace.average_step_latency) == (
        "CME",
        1,
        timedelta(seconds=1),
    )


def test_get_risk_metrics_exposure_in_base_currency(api: Api) -> None:
    risk = api("get_risk_metrics", "P1", confidence_levels=[D("0.9")])
    assert (risk.total.long, risk.total.short) == (D(250050 + 1980), D(0))
    assert risk.largest_instrument == "ESM4"
    assert [v.confidence for v in risk.value_at_risk] == [D("0.9")]


# ---------------------------------------------------------------------------------------------
# Every Query branch answers as its own RPC does


QUERIES: list[Query[Any]] = [
    PositionQuery(account_id="P1", instrument_id="SAP", strategy_id="S1"),
    StrategyPortfolioQuery(strategy_id="S1", account_id="P1"),
    PortfolioSummaryQuery(account_id="P1"),
    PositionsQuery(account_id="P1", level=PositionLevel.ACCOUNT, as_of=3),
    TracePositionQuery(trace_id="TR1"),
    OrderQuery(account_id="P1", order_id="101"),
    OpenOrdersQuery(account_id="P1"),
    BalancesQuery(account_id="P1"),
    ConsolidatedPositionQuery(account_id="P1", instrument_id="ESM4"),
    InstrumentQuery(instrument_id="ESM4"),
    PnlHistoryQuery(account_id="P1"),
    PerformanceQuery(account_id="P1"),
    RiskMetricsQuery(account_id="P1", lookback_days=20),
]


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: type(q).__name__)
def test_query_branch_answers_like_its_rpc(api: Api, query: Query[Any]) -> None:
    row = for_request(query)
    arguments = {f.name: getattr(query, f.name) for f in dataclasses.fields(query)}  # type: ignore[arg-type]
    direct = api(row.method, **arguments)
    answer = api("query", query)
    assert type(answer) is type(direct)
    assert answer == direct


def test_query_branch_errors_like_its_rpc(api: Api) -> None:
    query = ReconciliationQuery(account_id="P1")
    assert failure(lambda: api("query", query)) == grpc.StatusCode.NOT_FOUND
    assert failure(lambda: api("get_reconciliation", "P1")) == grpc.StatusCode.NOT_FOUND


# ---------------------------------------------------------------------------------------------
# Subscriptions carry orders and (opt-in) balances


def test_subscription_carries_balances_and_orders(api: Api) -> None:
    updates = api.take(2, account_id="P1", from_sequence=SEQUENCE["T1"], include_balances=True)
    balance, order = updates
    assert balance.kind is UpdateKind.BALANCE and balance.balance is not None
    assert (balance.balance.currency, balance.balance.cash) == ("EUR", D(5000))
    assert order.kind is UpdateKind.ORDER_STATUS and order.order is not None
    assert (order.order.order_key, order.order.status) == ("id:101", OrderStatus.SUBMITTED)


def test_subscription_leaves_balances_out_unless_asked(api: Api) -> None:
    (first,) = api.take(1, account_id="P1", from_sequence=SEQUENCE["T1"])
    assert first.kind is UpdateKind.ORDER_STATUS
