"""The table of the service's unary calls: one row per RPC, the single home of what the SDK
knows about it (the SDK method's name, the request value, how it is encoded and decoded, the
`Query` branch it also travels in, whether retrying it is safe).

The clients' methods are generated from this table (`python -m client.codegen` writes
`client/_calls.py`), so the blocking and asyncio clients cannot drift apart, and the channel's
retry policy names exactly the rows marked idempotent. The streams (`Ingest`,
`SubscribeUpdates`, `StreamMarks`) and the generic `Query` are written by hand in the clients;
`HAND_WRITTEN` names their methods, so a test can check every RPC of the descriptor has one.
A paged listing's row also names its iterator (`Paged`): generated beside its one-page method,
it walks every page through the clients' one walker, so no listing has a loop of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar, cast

from google.protobuf.message import Message

from client import wire
from client.errors import ProtocolViolation
from client.queries import (
    BalancesQuery,
    ConsolidatedPositionQuery,
    InstrumentQuery,
    OpenOrdersQuery,
    OrderQuery,
    PerformanceQuery,
    PnlHistoryQuery,
    PortfolioSummaryQuery,
    PositionQuery,
    PositionsQuery,
    Query,
    ReconciliationQuery,
    RiskMetricsQuery,
    StrategyPortfolioQuery,
    TracePositionQuery,
)
from client.requests import (
    DefineAccount,
    DefineInstrument,
    ListAccounts,
    ListInstruments,
    ListReconciliations,
    Reconcile,
    ReleaseReservation,
    Request,
)
from client.requests import ReserveCash as ReserveCashRequest
from portfolio.v1 import portfolio_pb2 as pb

SERVICE = "portfolio.v1.PortfolioManager"

R = TypeVar("R")


@dataclass(frozen=True, slots=True, kw_only=True)
class Paged:
    """How a listing pages: its request has `page_token`, its answer `next_page_token` (empty
    on the last page) beside the page's items."""

    #: The clients' method yielding every item of every page.
    iterator: str
    #: The answer's field holding the page's items.
    items: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UnaryRpc:
    """One unary RPC of the service, as the SDK offers it."""

    #: The method of PortfolioManager.
    rpc: str
    #: The clients' method.
    method: str
    #: The value the method builds from its arguments (its fields are the arguments).
    request: type[Request[Any]]
    encode: Callable[[Any], Message]
    decode: Callable[[Any], Any]
    #: Safe to send twice: the channel retries it on UNAVAILABLE. Reads are; so are the
    #: definitions (the service identifies a definition by its content: the same one twice is
    #: a duplicate). Reservations, releases and reconciliation runs are not retried for the
    #: caller: they change state, and the caller decides (reservations and releases are
    #: idempotent by their id, so resending the same request is safe).
    idempotent: bool
    #: How many leading arguments may be passed by position (the rest are keyword-only).
    positional: int = 0
    #: The PortfolioQuery branch that carries the same request, and the PortfolioResponse
    #: branch that answers it; empty when the Query RPC has none.
    query_branch: str = ""
    answer_branch: str = ""
    #: The method's docstring.
    doc: str = ""
    #: A paged listing's iterator; None for a call answered in one message.
    paged: Paged | None = None

    def page_items(self, page: Any) -> tuple[Any, ...]:
        """The items of one page of this listing."""
        if self.paged is None:
            raise TypeError(f"{self.rpc} is not a paged listing")
        return cast(tuple[Any, ...], getattr(page, self.paged.items))

    def next_request(self, request: Any, page: Any) -> Any | None:
        """The request for the page after `page` (same filters, the token the service gave),
        or None after the last page. A service that answers with the token it was sent would
        have the walk fetch the same page for ever: ProtocolViolation instead."""
        token: str = page.next_page_token
        if not token:
            return None
        if token == request.page_token:
            raise ProtocolViolation(f"{self.rpc} gave back the page token it was sent")
        return replace(request, page_token=token)


def _row(**fields: Any) -> UnaryRpc:
    return UnaryRpc(**fields)


UNARY: tuple[UnaryRpc, ...] = (
    _row(
        rpc="GetPosition", method="get_position", request=PositionQuery,
        encode=wire.position_request, decode=wire.position_from_proto, idempotent=True,
        positional=3, query_branch="get_position", answer_branch="position",
        doc="One row: the strategy's, or the account-level book row when strategy_id is None. "
        "A row that does not exist raises PortfolioError with NOT_FOUND.",
    ),
    _row(
        rpc="GetStrategyPortfolio", method="get_strategy_portfolio",
        request=StrategyPortfolioQuery, encode=wire.strategy_portfolio_request,
        decode=wire.strategy_portfolio_from_proto, idempotent=True, positional=3,
        query_branch="get_strategy_portfolio", answer_branch="strategy_portfolio",
        doc="A strategy's positions and totals, across accounts unless account_id is given: "
        "then of `account_kind` only, or (UNSPECIFIED) paper and live side by side in "
        "`by_account_kind`, never added together.",
    ),
    _row(
        rpc="GetPortfolioSummary", method="get_portfolio_summary",
        request=PortfolioSummaryQuery, encode=wire.summary_request,
        decode=wire.summary_from_proto, idempotent=True, positional=1,
        query_branch="get_portfolio_summary", answer_branch="portfolio_summary",
        doc="The account-level totals and each strategy's share; every account if none given: "
        "then of `account_kind` only, or (UNSPECIFIED) paper and live side by side in "
        "`by_account_kind`, never added together.",
    ),
    _row(
        rpc="ListPositions", method="list_positions", request=PositionsQuery,
        encode=wire.positions_request, decode=wire.page_from_proto, idempotent=True,
        positional=7, query_branch="list_positions", answer_branch="list_positions",
        doc="One page of rows in (account, strategy, instrument) order.",
        paged=Paged(iterator="iter_positions", items="positions"),
    ),
    _row(
        rpc="GetTracePosition", method="get_trace_position", request=TracePositionQuery,
        encode=wire.trace_request, decode=wire.trace_from_proto, idempotent=True, positional=1,
        query_branch="get_trace_position", answer_branch="trace_position",
        doc="The legs of a multi-step trade; NOT_FOUND once the trace has expired.",
    ),
    _row(
        rpc="GetOrder", method="get_order", request=OrderQuery, encode=wire.order_request,
        decode=wire.order_from_proto, idempotent=True, positional=1,
        query_branch="get_order", answer_branch="order",
        doc="One order with its whole history, by the broker's order_id or by order_ref "
        "(the latest order with it).",
    ),
    _row(
        rpc="ListOpenOrders", method="list_open_orders", request=OpenOrdersQuery,
        encode=wire.open_orders_request, decode=wire.order_page_from_proto, idempotent=True,
        positional=2, query_branch="list_open_orders", answer_branch="list_open_orders",
        doc="One page of working orders (pending submit to pending cancel), without histories.",
        paged=Paged(iterator="iter_open_orders", items="orders"),
    ),
    _row(
        rpc="GetBalances", method="get_balances", request=BalancesQuery,
        encode=wire.balances_request, decode=wire.balances_from_proto, idempotent=True,
        positional=1, query_branch="get_balances", answer_branch="balances",
        doc="An account's cash per currency and chain, reserved and available, and the "
        "reservations still holding cash.",
    ),
    _row(
        rpc="GetConsolidatedPosition", method="get_consolidated_position",
        request=ConsolidatedPositionQuery, encode=wire.consolidated_request,
        decode=wire.consolidated_from_proto, idempotent=True, positional=2,
        query_branch="get_consolidated_position", answer_branch="consolidated_position",
        doc="One instrument of one account: the account-level row next to each strategy's "
        "attributed row, and the latest reconciliation's view of it.",
    ),
    _row(
        rpc="GetInstrument", method="get_instrument", request=InstrumentQuery,
        encode=wire.instrument_request, decode=wire.instrument_from_proto, idempotent=True,
        positional=1, query_branch="get_instrument", answer_branch="instrument",
        doc="One instrument's definition (provisional for one only seen in fills).",
    ),
    _row(
        rpc="GetReconciliation", method="get_reconciliation", request=ReconciliationQuery,
        encode=lambda q: wire.reconciliation_request(q.account_id),
        decode=wire.reconciliation_from_proto, idempotent=True, positional=1,
        query_branch="get_reconciliation", answer_branch="reconciliation",
        doc="The account's latest reconciliation report; NOT_FOUND before the first run.",
    ),
    _row(
        rpc="GetPnlHistory", method="get_pnl_history", request=PnlHistoryQuery,
        encode=wire.pnl_history_request, decode=wire.pnl_history_from_proto, idempotent=True,
        positional=2, query_branch="get_pnl_history", answer_branch="pnl_history",
        doc="The daily P&L recorded at each session close, oldest first: the account's whole "
        "book, or one strategy's rows in it; trading dates from_date through to_date (None: "
        "from the first, through the latest). An account with no positions raises NOT_FOUND.",
    ),
    _row(
        rpc="GetPerformance", method="get_performance", request=PerformanceQuery,
        encode=wire.performance_request, decode=wire.performance_from_proto, idempotent=True,
        positional=2, query_branch="get_performance", answer_branch="performance",
        doc="Round trips, venues and daily statistics of an account's book (account_id alone), "
        "a strategy in one account (both), or a strategy across its accounts (strategy_id "
        "alone); the dates bound the P&L history the statistics use.",
    ),
    _row(
        rpc="GetRiskMetrics", method="get_risk_metrics", request=RiskMetricsQuery,
        encode=wire.risk_metrics_request, decode=wire.risk_metrics_from_proto, idempotent=True,
        positional=2, query_branch="get_risk_metrics", answer_branch="risk_metrics",
        doc="Exposure now, concentration, and (over the last `lookback_days` trading days, 0: "
        "250) volatility, value at risk and strategies' correlations of an account's book or "
        "one strategy in it.",
    ),
    _row(
        rpc="DefineInstrument", method="define_instrument", request=DefineInstrument,
        encode=lambda r: pb.DefineInstrumentRequest(
            instrument=wire.instrument_to_proto(r.instrument)
        ),
        decode=wire.instrument_from_proto, idempotent=True, positional=1,
        doc="Registers or redefines an instrument (journaled); answers with it as defined. "
        "A new multiplier or currency for an instrument with positions: FAILED_PRECONDITION.",
    ),
    _row(
        rpc="ListInstruments", method="list_instruments", request=ListInstruments,
        encode=lambda r: pb.ListInstrumentsRequest(page_size=r.page_size, page_token=r.page_token),
        decode=wire.instrument_page_from_proto, idempotent=True,
        doc="One page of instruments, defined or provisional, in id order.",
        paged=Paged(iterator="iter_instruments", items="instruments"),
    ),
    _row(
        rpc="DefineAccount", method="define_account", request=DefineAccount,
        encode=lambda r: pb.DefineAccountRequest(account=wire.account_to_proto(r.account)),
        decode=wire.account_from_proto, idempotent=True, positional=1,
        doc="Registers or redefines an account (paper or live, base currency, a paper "
        "account's starting cash, paid in once); answers with it as defined.",
    ),
    _row(
        rpc="ListAccounts", method="list_accounts", request=ListAccounts,
        encode=lambda r: pb.ListAccountsRequest(), decode=wire.accounts_from_proto,
        idempotent=True, doc="Every account, defined or known only from its events.",
    ),
    _row(
        rpc="ReserveCash", method="reserve_cash", request=ReserveCashRequest,
        encode=wire.reserve_request, decode=wire.reservation_from_proto, idempotent=False,
        doc="Sets cash aside for a pending order; more than is available raises "
        "FAILED_PRECONDITION naming both figures. Not retried by the SDK; resending the same "
        "reservation_id is safe (the service answers with the reservation it made).",
    ),
    _row(
        rpc="ReleaseReservation", method="release_reservation", request=ReleaseReservation,
        encode=wire.release_request, decode=wire.reservation_from_proto, idempotent=False,
        doc="Gives back part (amount) or all (None) of what a reservation still holds. Not "
        "retried by the SDK; resending the same release_id is safe.",
    ),
    _row(
        rpc="Reconcile", method="reconcile", request=Reconcile,
        encode=lambda r: wire.reconcile_request(r.account_id),
        decode=wire.reconciliation_from_proto, idempotent=False, positional=1,
        doc="Reconciles a live account against the broker now (UNAVAILABLE without one); "
        "each call is a new run, so it is not retried.",
    ),
    _row(
        rpc="ListReconciliations", method="list_reconciliations", request=ListReconciliations,
        encode=lambda r: wire.reconciliations_request(r.account_id, r.page_size, r.page_token),
        decode=wire.reconciliation_page_from_proto, idempotent=True, positional=1,
        doc="Earlier reports, newest first, one page.",
        paged=Paged(iterator="iter_reconciliations", items="reconciliations"),
    ),
)  # fmt: skip

#: The RPCs the clients implement by hand (streams, and the generic Query), by method name.
HAND_WRITTEN = {
    "Ingest": "ingest",
    "SubscribeUpdates": "subscribe",
    "StreamMarks": "send_marks",
    "Query": "query",
}

#: Safe to retry on UNAVAILABLE: the idempotent rows, and Query (reads only).
IDEMPOTENT_RPCS: tuple[str, ...] = (*(r.rpc for r in UNARY if r.idempotent), "Query")

BY_RPC: dict[str, UnaryRpc] = {row.rpc: row for row in UNARY}
_BY_REQUEST: dict[type[Request[Any]], UnaryRpc] = {row.request: row for row in UNARY}


def for_request(request: Request[Any]) -> UnaryRpc:
    """The row that sends `request`; TypeError for anything else."""
    row = _BY_REQUEST.get(type(request))
    if row is None:
        raise TypeError(f"not a portfolio request: {type(request).__name__}")
    return row


def query_to_proto(query: Query[Any]) -> pb.PortfolioQuery:
    """The Query RPC's request for a read request value."""
    row = for_request(query)
    if not row.query_branch:
        raise TypeError(f"{type(query).__name__} has no branch in the Query RPC")
    message = pb.PortfolioQuery()
    branch = getattr(message, row.query_branch)
    branch.SetInParent()  # an all-default request still picks its branch
    branch.CopyFrom(row.encode(query))
    return message


def query_result(query: Query[R], response: pb.PortfolioResponse) -> R:
    """The Query RPC's answer as the type the request names; ProtocolViolation when the
    service answered in a branch other than the one asked for."""
    row = for_request(query)
    branch = response.WhichOneof("response")
    if branch is None or branch != row.answer_branch:
        raise ProtocolViolation(f"{type(query).__name__} answered with {branch or 'nothing'}")
    return cast(R, row.decode(getattr(response, branch)))
