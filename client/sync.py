"""The blocking client, for scripts, notebooks and threaded services."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from datetime import date
from decimal import Decimal
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc

from client import wire
from client.batching import IngestSession, ended_early
from client.channel import channel_credentials
from client.errors import PortfolioError, from_rpc_error
from client.marks import (
    DEFAULT_MARK_BATCH,
    FxRate,
    MarkAck,
    MarkPrice,
    mark_batches,
    stream_batches,
)
from client.models import (
    AccountKind,
    EventAck,
    ExecutionEvent,
    Performance,
    PnlHistory,
    PortfolioSummary,
    PortfolioUpdate,
    Position,
    PositionLevel,
    PositionPage,
    Reconciliation,
    ReconciliationPage,
    RiskMetrics,
    StrategyPortfolio,
    TracePosition,
)
from client.queries import (
    PerformanceQuery,
    PnlHistoryQuery,
    PortfolioSummaryQuery,
    PositionQuery,
    PositionsQuery,
    Query,
    R,
    RiskMetricsQuery,
    StrategyPortfolioQuery,
    TracePositionQuery,
)
from client.resume import ResumeCursor
from client.retry import DEFAULT_TIMEOUT, INGEST_RETRY_CODES, SUBSCRIBE_RESUME_CODES, Backoff
from portfolio.v1 import portfolio_pb2_grpc

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


class PortfolioClient:
    """A connection to the portfolio manager.

    Use it as a context manager (or call `close`): it owns its channel. Every unary call has a
    deadline, the client's `timeout` unless the call passes its own; an `ingest` attempt has one
    too, since a stuck service must not hang the execution relay. Subscriptions have none: they
    are meant to live for hours, and the service's heartbeats show they are alive.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        channel_options: Sequence[tuple[str, Any]] = (),
        backoff: Backoff | None = None,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
        token: str | None = None,
    ) -> None:
        """TLS when `root_certificates` (the service's CA, PEM) is given, with a client
        certificate (`private_key`, `certificate_chain`) for mutual TLS; `token` is sent as
        `authorization: Bearer <token>`. None of them: plaintext (a service on loopback)."""
        self.timeout = timeout
        self._backoff = backoff or Backoff()
        credentials = channel_credentials(
            root_certificates=root_certificates,
            private_key=private_key,
            certificate_chain=certificate_chain,
            token=token,
        )
        options = list(channel_options)
        self._channel = (
            grpc.insecure_channel(target, options=options)
            if credentials is None
            else grpc.secure_channel(target, credentials, options=options)
        )
        self._stub = portfolio_pb2_grpc.PortfolioManagerStub(self._channel)

    def close(self) -> None:
        """Closes the channel; calls still running fail with CANCELLED."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -----------------------------------------------------------------------------------------
    # Reads

    def get_position(
        self,
        account_id: str,
        instrument_id: str,
        strategy_id: str | None = None,
        *,
        timeout: float | None = None,
    ) -> Position:
        """One row: the strategy's, or the account-level book row when strategy_id is None.

        A row that does not exist raises PortfolioError with NOT_FOUND.
        """
        query = PositionQuery(
            account_id=account_id, instrument_id=instrument_id, strategy_id=strategy_id
        )
        response = self._unary(self._stub.GetPosition, wire.position_request(query), timeout)
        return wire.position_from_proto(response)

    def get_strategy_portfolio(
        self,
        strategy_id: str,
        account_id: str = "",
        include_flat: bool = False,
        *,
        account_kind: AccountKind = AccountKind.UNSPECIFIED,
        timeout: float | None = None,
    ) -> StrategyPortfolio:
        """A strategy's positions and totals, across accounts unless account_id is given:
        then of `account_kind` only, or (UNSPECIFIED) paper and live side by side in
        `by_account_kind`, never added together."""
        query = StrategyPortfolioQuery(
            strategy_id=strategy_id,
            account_id=account_id,
            include_flat=include_flat,
            account_kind=account_kind,
        )
        request = wire.strategy_portfolio_request(query)
        response = self._unary(self._stub.GetStrategyPortfolio, request, timeout)
        return wire.strategy_portfolio_from_proto(response)

    def get_portfolio_summary(
        self,
        account_id: str = "",
        *,
        account_kind: AccountKind = AccountKind.UNSPECIFIED,
        timeout: float | None = None,
    ) -> PortfolioSummary:
        """The account-level totals and each strategy's share; every account if none given:
        then of `account_kind` only, or (UNSPECIFIED) paper and live side by side in
        `by_account_kind`, never added together."""
        query = PortfolioSummaryQuery(account_id=account_id, account_kind=account_kind)
        request = wire.summary_request(query)
        response = self._unary(self._stub.GetPortfolioSummary, request, timeout)
        return wire.summary_from_proto(response)

    def reconcile(self, account_id: str, *, timeout: float | None = None) -> Reconciliation:
        """Reconciles a live account against the broker now (UNAVAILABLE without one)."""
        request = wire.reconcile_request(account_id)
        response = self._unary(self._stub.Reconcile, request, timeout)
        return wire.reconciliation_from_proto(response)

    def get_reconciliation(
        self, account_id: str, *, timeout: float | None = None
    ) -> Reconciliation:
        """The account's latest reconciliation report."""
        request = wire.reconciliation_request(account_id)
        response = self._unary(self._stub.GetReconciliation, request, timeout)
        return wire.reconciliation_from_proto(response)

    def list_reconciliations(
        self,
        account_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> ReconciliationPage:
        """Earlier reports, newest first, one page."""
        request = wire.reconciliations_request(account_id, page_size, page_token)
        response = self._unary(self._stub.ListReconciliations, request, timeout)
        return wire.reconciliation_page_from_proto(response)

    def get_pnl_history(
        self,
        account_id: str,
        strategy_id: str = "",
        *,
        from_date: date | None = None,
        to_date: date | None = None,
        timeout: float | None = None,
    ) -> PnlHistory:
        """The daily P&L recorded at each session close, oldest first: the account's whole
        book, or one strategy's rows in it; trading dates from_date through to_date (None: from
        the first, through the latest). An account with no positions raises NOT_FOUND."""
        query = PnlHistoryQuery(
            account_id=account_id, strategy_id=strategy_id, from_date=from_date, to_date=to_date
        )
        request = wire.pnl_history_request(query)
        response = self._unary(self._stub.GetPnlHistory, request, timeout)
        return wire.pnl_history_from_proto(response)

    def get_performance(
        self,
        account_id: str = "",
        strategy_id: str = "",
        *,
        from_date: date | None = None,
        to_date: date | None = None,
        instrument_id: str = "",
        timeout: float | None = None,
    ) -> Performance:
        """Round trips, venues and daily statistics of an account's book (account_id alone),
        a strategy in one account (both), or a strategy across its accounts (strategy_id
        alone); the dates bound the P&L history the statistics use."""
        query = PerformanceQuery(
            account_id=account_id, strategy_id=strategy_id, from_date=from_date,
            to_date=to_date, instrument_id=instrument_id,
        )  # fmt: skip
        request = wire.performance_request(query)
        response = self._unary(self._stub.GetPerformance, request, timeout)
        return wire.performance_from_proto(response)

    def get_risk_metrics(
        self,
        account_id: str,
        strategy_id: str = "",
        *,
        lookback_days: int = 0,
        confidence_levels: Sequence[Decimal] = (),
        timeout: float | None = None,
    ) -> RiskMetrics:
        """Exposure now, concentration, and (over the last `lookback_days` trading days, 0:
        250) volatility, value at risk and strategies' correlations of an account's book or
        one strategy in it."""
        query = RiskMetricsQuery(
            account_id=account_id, strategy_id=strategy_id, lookback_days=lookback_days,
            confidence_levels=tuple(confidence_levels),
        )  # fmt: skip
        request = wire.risk_metrics_request(query)
        response = self._unary(self._stub.GetRiskMetrics, request, timeout)
        return wire.risk_metrics_from_proto(response)

    def list_positions(
        self,
        account_id: str = "",
        strategy_id: str = "",
        instrument_id: str = "",
        level: PositionLevel = PositionLevel.STRATEGY,
        include_flat: bool = False,
        page_size: int = 0,
        page_token: str = "",
        *,
        timeout: float | None = None,
    ) -> PositionPage:
        """One page of rows in (account, strategy, instrument) order; see `iter_positions`."""
        query = PositionsQuery(
            account_id=account_id,
            strategy_id=strategy_id,
            instrument_id=instrument_id,
            level=level,
            include_flat=include_flat,
            page_size=page_size,
            page_token=page_token,
        )
        return self._list_page(query, timeout)

    def iter_positions(
        self,
        account_id: str = "",
        strategy_id: str = "",
        instrument_id: str = "",
        level: PositionLevel = PositionLevel.STRATEGY,
        include_flat: bool = False,
        page_size: int = 0,
        *,
        timeout: float | None = None,
    ) -> Iterator[Position]:
        """Every matching row, fetching pages as needed; `timeout` applies to each page."""
        query = PositionsQuery(
            account_id=account_id,
            strategy_id=strategy_id,
            instrument_id=instrument_id,
            level=level,
            include_flat=include_flat,
            page_size=page_size,
        )
        while True:
            page = self._list_page(query, timeout)
            yield from page.positions
            if not page.next_page_token:
                return
            query = dataclasses.replace(query, page_token=page.next_page_token)

    def get_trace_position(self, trace_id: str, *, timeout: float | None = None) -> TracePosition:
        """The legs of a multi-step trade; NOT_FOUND once the trace has expired."""
        request = wire.trace_request(TracePositionQuery(trace_id=trace_id))
        response = self._unary(self._stub.GetTracePosition, request, timeout)
        return wire.trace_from_proto(response)

    def query(self, request: Query[R], *, timeout: float | None = None) -> R:
        """Any read through the typed Query RPC; the answer's type follows the request's.

        >>> client.query(PositionQuery(account_id="A1", instrument_id="AAPL", strategy_id="S1"))
        """
        response = self._unary(self._stub.Query, wire.query_to_proto(request), timeout)
        return wire.query_result(request, response)

    # -----------------------------------------------------------------------------------------
    # Ingest

    def ingest(
        self,
        events: Iterable[ExecutionEvent],
        *,
        batch_size: int = 100,
        max_attempts: int = 3,
        timeout: float | None = None,
    ) -> list[EventAck]:
        """Sends events and returns their acks, in the order of `events`.

        Batches are pipelined: all are sent without waiting for earlier acks. A REJECTED ack is
        a normal answer (look at `reason`), not an exception. If the stream breaks with a
        transient status, a new one resends every event not yet acked (safe: the service
        ignores an event id it has seen), up to `max_attempts` streams in all; then
        IngestIncomplete carries the acks so far and the unacked events. A batch the service
        refuses as a whole raises PortfolioError(INVALID_ARGUMENT). `timeout` is the deadline
        of each attempt; raise it for large back-fills.
        """
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        session = IngestSession(events, batch_size=batch_size)
        while not session.done:
            if session.attempts:
                time.sleep(self._backoff.delay(session.attempts))
            failure = self._ingest_attempt(session, self._deadline(timeout))
            if session.done:
                break
            if session.attempts >= max_attempts:
                raise session.incomplete(failure.code, failure.message)
        return session.acks()

    def _ingest_attempt(self, session: IngestSession, timeout: float) -> PortfolioError:
        """One stream; returns why it ended short of all acks (retryable), else raises."""
        requests = [batch.request for batch in session.start_attempt()]
        # A request iterator lets grpc send every batch while this thread reads acks.
        call = self._stub.Ingest(iter(requests), timeout=timeout)
        try:
            for response in call:
                session.record(response)
        except grpc.RpcError as error:
            failure = from_rpc_error(error)
            if failure.code not in INGEST_RETRY_CODES:
                raise failure from error
            return failure
        finally:
            call.cancel()
        return ended_early()

    # -----------------------------------------------------------------------------------------
    # Live updates

    def subscribe(
        self,
        account_id: str = "",
        strategy_id: str = "",
        instrument_id: str = "",
        level: PositionLevel = PositionLevel.UNSPECIFIED,
        from_sequence: int = 0,
        include_heartbeats: bool = False,
        reconnect: bool = True,
    ) -> Generator[PortfolioUpdate, None, None]:
        """Live updates matching the filters (empty means any; UNSPECIFIED level means both).

        `from_sequence` N > 0 replays every update with sequence >= N first; 0 is live only.
        With `reconnect`, a stream that fails with UNAVAILABLE, or that the service ends with
        RESOURCE_EXHAUSTED because this consumer fell behind, or that simply ends, is resumed
        with back-off from where it broke, and each update is still yielded exactly once. A
        sequence the service no longer holds raises ResyncRequired: re-read state, then
        subscribe from its as_of_sequence + 1. The service's heartbeats move the resume point
        whether or not `include_heartbeats` yields them. To stop, call `close()` on the
        generator (or drop every reference to it): that cancels the stream. The stream asks the
        service for batches (several updates per message, far cheaper for it to send); they are
        yielded one update at a time, in order, as ever.
        """
        cursor = ResumeCursor(from_sequence)
        failures = 0
        while True:
            request = wire.subscribe_request(
                account_id=account_id,
                strategy_id=strategy_id,
                instrument_id=instrument_id,
                level=level,
                from_sequence=cursor.from_sequence,
            )
            cursor.new_stream()
            call = self._stub.SubscribeUpdates(request)
            try:
                for message in call:
                    failures = 0
                    for update in wire.updates_from_proto(message):
                        if not cursor.admit(update.sequence, heartbeat=update.is_heartbeat):
                            continue
                        if include_heartbeats or not update.is_heartbeat:
                            yield update
            except grpc.RpcError as error:
                failure = from_rpc_error(error, subscription=True)
                if not (reconnect and failure.code in SUBSCRIBE_RESUME_CODES):
                    raise failure from error
            finally:
                call.cancel()
            if not reconnect:
                return
            failures += 1
            time.sleep(self._backoff.delay(failures))

    # -----------------------------------------------------------------------------------------
    # Marks

    def send_marks(
        self,
        marks: Iterable[MarkPrice] = (),
        fx_rates: Iterable[FxRate] = (),
        *,
        batch_size: int = DEFAULT_MARK_BATCH,
        timeout: float | None = None,
    ) -> list[MarkAck]:
        """Streams marks and FX rates (see `client.marks`) and returns one answer a batch, in
        order. A batch the service refuses whole is an answer (`rejected_reason`), not an
        exception; a failed stream raises PortfolioError (resending is safe)."""
        batches = mark_batches(marks, fx_rates, batch_size=batch_size)
        return stream_batches(self._stub.StreamMarks, batches, self._deadline(timeout))

    # -----------------------------------------------------------------------------------------

    def _deadline(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    def _unary(
        self,
        method: grpc.UnaryUnaryMultiCallable[_Req, _Resp],
        request: _Req,
        timeout: float | None,
    ) -> _Resp:
        try:
            return method(request, timeout=self._deadline(timeout))
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error

    def _list_page(self, query: PositionsQuery, timeout: float | None) -> PositionPage:
        response = self._unary(self._stub.ListPositions, wire.positions_request(query), timeout)
        return wire.page_from_proto(response)
