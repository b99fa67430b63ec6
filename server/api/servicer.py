"""The PortfolioManager service: requests in, application calls, messages out."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import grpc
from google.protobuf.message import Message

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.api.errors import ApiError
from server.api.malformed import MalformedRequest
from server.api.updates import (
    BATCH_MAX_BYTES,
    PLACEMENTS,
    EncodedUpdate,
    batch_messages,
    write_cost,
)
from server.api.wire import (
    FieldViolation,
    event_from_proto,
    event_id_of,
    field_errors,
    heartbeat,
    position_to_proto,
    trace_to_proto,
)
from server.api.wire_reconciliation import reconciliation_to_proto
from server.api.wire_reference import (
    ACCOUNT_KIND_FROM_PROTO,
    account_from_proto,
    account_to_proto,
    balances_to_proto,
    consolidated_to_proto,
    fx_rate_from_proto,
    instrument_from_proto,
    instrument_to_proto,
    mark_from_proto,
    order_to_proto,
    release_from_proto,
    reservation_from_proto,
    reservation_to_proto,
)
from server.api.wire_summary import strategy_portfolio_to_proto, summary_to_proto
from server.application.ports import BrokerUnavailable, StorageUnavailable
from server.application.reconciler import NoBroker, Reconciler
from server.application.service import (
    NotAllowed,
    NotFound,
    PortfolioChange,
    PortfolioService,
    PositionQuery,
)
from server.application.subscriptions import (
    Published,
    SequenceOutOfRange,
    SubscriberOverflow,
    SubscriptionFilter,
)
from server.domain.events import AccountKind, ExecutionEvent, Fill, FillCorrection, require_id
from server.domain.ledger import Result
from server.domain.marks import FxRate, Mark
from server.domain.position import PositionKey
from server.domain.refusals import Refusal, RefusalKind

if TYPE_CHECKING:
    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

log = logging.getLogger("portfolio.api")

MAX_MARKS_PER_BATCH = 10_000
MAX_BATCHES_IN_FLIGHT = 64  # per Ingest stream, admitted and waiting for their commit
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
MAX_RECONCILIATIONS_PAGE = 100

_RESULTS = {
    Result.ACCEPTED: pb.EVENT_RESULT_ACCEPTED,
    Result.DUPLICATE: pb.EVENT_RESULT_DUPLICATE,
    Result.REJECTED: pb.EVENT_RESULT_REJECTED,
}
_LEVEL_FILTER = {
    pb.POSITION_LEVEL_UNSPECIFIED: None,
    pb.POSITION_LEVEL_STRATEGY: False,
    pb.POSITION_LEVEL_ACCOUNT: True,
}

_LEVEL_CHOICES = (
    "must be POSITION_LEVEL_STRATEGY, POSITION_LEVEL_ACCOUNT or unset (residual rows come with "
    "reconciliation reports: GetReconciliation)"
)

Update: TypeAlias = Published[PortfolioChange, EncodedUpdate]
Request = TypeVar("Request", bound=Message)
Response = TypeVar("Response", bound=Message)


def _require(field: str, value: str) -> None:
    if not value:
        raise ApiError.invalid(FieldViolation(field, "is required"))


def _kind_asked(value: pb.AccountKind.ValueType) -> AccountKind | None:
    """A request's `account_kind`: None for UNSPECIFIED (both, side by side)."""
    if value == pb.ACCOUNT_KIND_UNSPECIFIED:
        return None
    kind = ACCOUNT_KIND_FROM_PROTO.get(value)
    if kind is None:
        raise ApiError.invalid(FieldViolation("account_kind", "must be PAPER, LIVE or UNSPECIFIED"))
    return kind


def _check_kind(account_id: str, asked: AccountKind | None, found: AccountKind | None) -> None:
    """One account asked for with a kind other than its own is refused, not answered."""
    if asked is not None and found is not asked:
        name = found.name if found else "unknown"
        raise ApiError.invalid(
            FieldViolation("account_kind", f"account {account_id!r} is {name}, not {asked.name}")
        )


class PortfolioManagerServicer(pb_grpc.PortfolioManagerServicer):
    def __init__(
        self,
        service: PortfolioService[EncodedUpdate],
        *,
        max_batch_events: int,
        heartbeat_seconds: float,
        reconciler: Reconciler | None = None,
        batch_max_bytes: int = BATCH_MAX_BYTES,
    ) -> None:
        self.service = service
        self.reconciler = reconciler
        self.batch_max_bytes = batch_max_bytes
        self.max_batch_events = max_batch_events
        self.heartbeat_seconds = heartbeat_seconds

    # -- ingest ----------------------------------------------------------------------------

    async def Ingest(
        self,
        request_iterator: AsyncIterator[pb.IngestRequest],
        context: Context,
    ) -> AsyncIterator[pb.IngestResponse]:
        """Admits batches as they arrive and answers each once it is durable, in order: the
        stream is pipelined, so one stream's batches share group commits too."""
        answers: asyncio.Queue[tuple[pb.IngestResponse, int] | BaseException | None]
        answers = asyncio.Queue(maxsize=MAX_BATCHES_IN_FLIGHT)

        async def admit_all() -> None:
            try:
                async for request in request_iterator:
                    await answers.put(self.admit_batch(request))
                await answers.put(None)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the store is down, the client went away, or a bug
                await answers.put(error)

        reader = asyncio.create_task(admit_all())
        try:
            while (answer := await answers.get()) is not None:
                if isinstance(answer, StorageUnavailable):
                    await context.abort(grpc.StatusCode.UNAVAILABLE, str(answer))
                if isinstance(answer, MalformedRequest):
                    raise answer  # the client's fault: the guard answers and logs it
                if isinstance(answer, BaseException):
                    if not isinstance(answer, grpc.aio.AioRpcError):
                        log.exception("ingest failed", exc_info=answer)
                        await context.abort(grpc.StatusCode.INTERNAL, "ingest failed; see logs")
                    return
                response, wait_for = answer
                try:
                    await self.service.wait_durable(wait_for)
                except StorageUnavailable as error:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
                self.place_fills(response)
                yield response
        finally:
            reader.cancel()

    def admit_batch(self, request: pb.IngestRequest) -> tuple[pb.IngestResponse, int]:
        """Admits one batch; returns its answer and the sequence to wait for before sending it.
        A bad event is rejected alone, the rest go through."""
        count = len(request.events)
        if not 1 <= count <= self.max_batch_events:
            return pb.IngestResponse(
                batch_id=request.batch_id,
                batch_rejected_reason=f"events: a batch holds 1 to {self.max_batch_events} "
                f"events, got {count}; nothing in it was applied",
            ), 0
        acks = [pb.EventAck() for _ in range(count)]
        valid: list[ExecutionEvent] = []
        valid_at: list[int] = []
        for index, message in enumerate(request.events):
            try:
                event = event_from_proto(message)
                with field_errors({"timestamp": f"{message.WhichOneof('event')}.timestamp"}):
                    self.service.check_time("timestamp", event.timestamp_ns)
                valid.append(event)
                valid_at.append(index)
            except FieldViolation as violation:
                acks[index] = pb.EventAck(
                    event_id=event_id_of(message),
                    result=pb.EVENT_RESULT_REJECTED,
                    reason=str(violation.within(f"events[{index}]")),
                )
        outcomes, wait_for = self.service.admit(valid)
        for index, admitted, outcome in zip(valid_at, valid, outcomes, strict=True):
            acks[index] = pb.EventAck(
                event_id=outcome.event_id,
                sequence=outcome.sequence,
                result=_RESULTS[outcome.result],
                reason=outcome.reason,
            )
            if outcome.result is Result.ACCEPTED and isinstance(admitted, Fill | FillCorrection):
                acks[index].placement = pb.BOOKING_PLACEMENT_IN_ORDER  # set once applied
        return pb.IngestResponse(batch_id=request.batch_id, acks=acks), wait_for

    def place_fills(self, response: pb.IngestResponse) -> None:
        """Once a batch is applied: where each accepted fill landed in its rows' history."""
        placements = self.service.ledger.placements
        for ack in response.acks:
            if ack.placement:
                ack.placement = PLACEMENTS[placements.get(ack.sequence)]

    # -- queries ---------------------------------------------------------------------------

    async def _answer(
        self,
        handler: Callable[[Request], Response],
        request: Request,
        context: Context,
    ) -> Response:
        try:
            return handler(request)
        except ApiError as error:
            await context.abort_with_status(error.to_status())
        except NotFound as missing:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(missing))
        raise AssertionError("abort returned")  # pragma: no cover

    async def _execute(self, event: ExecutionEvent, context: Context) -> int:
        """Journals one event for a unary RPC; aborts with the refusal's status when the
        domain refused it, or when the id was used for different content. Returns its
        sequence."""
        try:
            outcome, refusal = await self.service.execute(event)
        except StorageUnavailable as error:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
            raise
        if outcome.result is Result.REJECTED:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, outcome.reason)
        if refusal is not None:
            await self._refuse(refusal, context)
        return outcome.sequence

    @staticmethod
    async def _refuse(refusal: Refusal, context: Context) -> None:
        if refusal.kind is RefusalKind.NOT_FOUND:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(refusal))
        error = ApiError.precondition(refusal.field, refusal.reason)
        await context.abort_with_status(error.to_status())

    async def _invalid(self, violation: FieldViolation, context: Context) -> None:
        await context.abort_with_status(ApiError.invalid(violation).to_status())

    # -- orders ----------------------------------------------------------------------------

    async def GetOrder(self, request: pb.GetOrderRequest, context: Context) -> pb.Order:
        try:
            return self.get_order(request)
        except ApiError as error:
            await context.abort_with_status(error.to_status())
        except NotFound:  # not in memory: it may have ended and left; the store may have it
            try:
                stored = await self.service.order_anywhere(
                    request.account_id, request.order_id, request.order_ref
                )
                return order_to_proto(stored)
            except NotFound as missing:
                await context.abort(grpc.StatusCode.NOT_FOUND, str(missing))
            except StorageUnavailable as error:
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
        raise AssertionError("abort returned")  # pragma: no cover

    def get_order(self, request: pb.GetOrderRequest) -> pb.Order:
        _require("account_id", request.account_id)
        if not request.order_id and not request.order_ref:
            raise ApiError.invalid(FieldViolation("order_id", "order_id or order_ref is required"))
        order = self.service.order(request.account_id, request.order_id, request.order_ref)
        return order_to_proto(order)

    async def ListOpenOrders(
        self, request: pb.ListOpenOrdersRequest, context: Context
    ) -> pb.ListOpenOrdersResponse:
        return await self._answer(self.list_open_orders, request, context)

    def list_open_orders(self, request: pb.ListOpenOrdersRequest) -> pb.ListOpenOrdersResponse:
        if request.strategy_id and not request.account_id:
            raise ApiError.invalid(
                FieldViolation("account_id", "is required with a strategy_id filter")
            )
        _check_page_size(request.page_size)
        tag = f"orders|{request.account_id}|{request.strategy_id}"
        after = _decode_token(request.page_token, tag) if request.page_token else None
        page = self.service.open_orders(
            request.account_id,
            request.strategy_id,
            (after[0], after[1], after[2]) if after else None,
            request.page_size or DEFAULT_PAGE_SIZE,
        )
        return pb.ListOpenOrdersResponse(
            orders=[order_to_proto(order) for order in page.orders],
            next_page_token=_encode_token(list(page.last_key), tag) if page.last_key else "",
            as_of_sequence=page.as_of_sequence,
        )

    # -- instruments and accounts ----------------------------------------------------------

    async def DefineInstrument(
        self, request: pb.DefineInstrumentRequest, context: Context
    ) -> pb.Instrument:
        try:
            definition = instrument_from_proto(request.instrument)
        except FieldViolation as violation:
            await self._invalid(violation.within("instrument"), context)
            raise
        await self._execute(definition, context)
        return self.get_instrument(pb.GetInstrumentRequest(instrument_id=definition.instrument_id))

    async def GetInstrument(
        self, request: pb.GetInstrumentRequest, context: Context
    ) -> pb.Instrument:
        return await self._answer(self.get_instrument, request, context)

    def get_instrument(self, request: pb.GetInstrumentRequest) -> pb.Instrument:
        _require("instrument_id", request.instrument_id)
        return instrument_to_proto(self.service.instrument(request.instrument_id))

    async def ListInstruments(
        self, request: pb.ListInstrumentsRequest, context: Context
    ) -> pb.ListInstrumentsResponse:
        return await self._answer(self.list_instruments, request, context)

    def list_instruments(self, request: pb.ListInstrumentsRequest) -> pb.ListInstrumentsResponse:
        _check_page_size(request.page_size)
        after = _decode_token(request.page_token, "instruments") if request.page_token else None
        limit = request.page_size or DEFAULT_PAGE_SIZE
        page = self.service.instruments(after[0] if after else "", limit + 1)
        more = len(page) > limit
        page = page[:limit]
        return pb.ListInstrumentsResponse(
            instruments=[instrument_to_proto(i) for i in page],
            next_page_token=_encode_token([page[-1].instrument_id], "instruments") if more else "",
        )

    async def DefineAccount(self, request: pb.DefineAccountRequest, context: Context) -> pb.Account:
        try:
            definition = account_from_proto(request.account)
        except FieldViolation as violation:
            await self._invalid(violation.within("account"), context)
            raise
        await self._execute(definition, context)
        return account_to_proto(self.service.account(definition.account_id))

    async def ListAccounts(
        self, request: pb.ListAccountsRequest, context: Context
    ) -> pb.ListAccountsResponse:
        return pb.ListAccountsResponse(
            accounts=[account_to_proto(a, defined) for a, defined in self.service.accounts()]
        )

    # -- marks -----------------------------------------------------------------------------

    async def StreamMarks(
        self, request_iterator: AsyncIterator[pb.MarkBatch], context: Context
    ) -> AsyncIterator[pb.MarkAck]:
        """Applies each batch whole or not at all, and answers it; a bad batch is refused
        alone and the stream goes on."""
        async for batch in request_iterator:
            count = len(batch.marks) + len(batch.fx_rates)
            if count > MAX_MARKS_PER_BATCH:
                yield pb.MarkAck(
                    batch_id=batch.batch_id,
                    batch_rejected_reason=f"marks: a batch holds at most {MAX_MARKS_PER_BATCH} "
                    f"marks and rates, got {count}; nothing in it was applied",
                )
                continue
            marks: list[Mark] = []
            rates: list[FxRate] = []
            try:
                for index, message in enumerate(batch.marks):
                    try:
                        mark = mark_from_proto(message)
                        with field_errors():
                            self.service.check_time("timestamp", mark.time_ns)
                        marks.append(mark)
                    except FieldViolation as violation:
                        raise violation.within(f"marks[{index}]") from None
                for index, rate_message in enumerate(batch.fx_rates):
                    try:
                        rate = fx_rate_from_proto(rate_message)
                        with field_errors():
                            self.service.check_time("timestamp", rate.time_ns)
                        rates.append(rate)
                    except FieldViolation as violation:
                        raise violation.within(f"fx_rates[{index}]") from None
            except FieldViolation as violation:
                yield pb.MarkAck(
                    batch_id=batch.batch_id,
                    batch_rejected_reason=f"{violation}; nothing in the batch was applied",
                )
                continue
            stale_marks, stale_rates = self.service.apply_marks(marks, rates)
            yield pb.MarkAck(
                batch_id=batch.batch_id,
                marks_applied=len(marks) - stale_marks,
                marks_stale=stale_marks,
                fx_rates_applied=len(rates) - stale_rates,
                fx_rates_stale=stale_rates,
            )

    # -- balances --------------------------------------------------------------------------

    async def GetBalances(self, request: pb.GetBalancesRequest, context: Context) -> pb.Balances:
        return await self._answer(self.get_balances, request, context)

    def get_balances(self, request: pb.GetBalancesRequest) -> pb.Balances:
        _require("account_id", request.account_id)
        return balances_to_proto(self.service.balances(request.account_id))

    async def ReserveCash(self, request: pb.ReserveCashRequest, context: Context) -> pb.Reservation:
        try:
            event = reservation_from_proto(request)
        except FieldViolation as violation:
            await self._invalid(violation, context)
            raise
        sequence = await self._execute(event, context)
        return await self._reservation(event.account_id, event.reservation_id, sequence, context)

    async def ReleaseReservation(
        self, request: pb.ReleaseReservationRequest, context: Context
    ) -> pb.Reservation:
        try:
            event = release_from_proto(request)
        except FieldViolation as violation:
            await self._invalid(violation, context)
            raise
        sequence = await self._execute(event, context)
        return await self._reservation(event.account_id, event.reservation_id, sequence, context)

    async def _reservation(
        self, account_id: str, reservation_id: str, sequence: int, context: Context
    ) -> pb.Reservation:
        """The reservation after its event; one forgotten since (a retry long after) is
        answered from the journal, or NOT_FOUND saying so (see PortfolioService)."""
        try:
            return reservation_to_proto(
                self.service.reservation(account_id, reservation_id, sequence)
            )
        except NotFound as missing:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(missing))
        except StorageUnavailable as error:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
        raise AssertionError("abort returned")  # pragma: no cover

    # -- the consolidated book -------------------------------------------------------------

    async def GetConsolidatedPosition(
        self, request: pb.GetConsolidatedPositionRequest, context: Context
    ) -> pb.ConsolidatedPosition:
        return await self._answer(self.get_consolidated_position, request, context)

    def get_consolidated_position(
        self, request: pb.GetConsolidatedPositionRequest
    ) -> pb.ConsolidatedPosition:
        _require("account_id", request.account_id)
        _require("instrument_id", request.instrument_id)
        found = self.service.consolidated(request.account_id, request.instrument_id)
        return consolidated_to_proto(found)

    async def GetPosition(self, request: pb.GetPositionRequest, context: Context) -> pb.Position:
        return await self._answer(self.get_position, request, context)

    async def GetStrategyPortfolio(
        self, request: pb.GetStrategyPortfolioRequest, context: Context
    ) -> pb.StrategyPortfolio:
        return await self._answer(self.get_strategy_portfolio, request, context)

    async def GetPortfolioSummary(
        self, request: pb.GetPortfolioSummaryRequest, context: Context
    ) -> pb.PortfolioSummary:
        return await self._answer(self.get_portfolio_summary, request, context)

    async def ListPositions(
        self, request: pb.ListPositionsRequest, context: Context
    ) -> pb.ListPositionsResponse:
        return await self._answer(self.list_positions, request, context)

    async def GetTracePosition(
        self, request: pb.GetTracePositionRequest, context: Context
    ) -> pb.TracePosition:
        return await self._answer(self.get_trace_position, request, context)

    async def Query(self, request: pb.PortfolioQuery, context: Context) -> pb.PortfolioResponse:
        if request.WhichOneof("query") == "get_order":  # may read the store: see GetOrder
            return pb.PortfolioResponse(order=await self.GetOrder(request.get_order, context))
        return await self._answer(self.query, request, context)

    def query(self, request: pb.PortfolioQuery) -> pb.PortfolioResponse:
        which = request.WhichOneof("query")
        if which == "get_position":
            return pb.PortfolioResponse(position=self.get_position(request.get_position))
        if which == "get_strategy_portfolio":
            return pb.PortfolioResponse(
                strategy_portfolio=self.get_strategy_portfolio(request.get_strategy_portfolio)
            )
        if which == "get_portfolio_summary":
            return pb.PortfolioResponse(
                portfolio_summary=self.get_portfolio_summary(request.get_portfolio_summary)
            )
        if which == "list_positions":
            return pb.PortfolioResponse(list_positions=self.list_positions(request.list_positions))
        if which == "get_trace_position":
            return pb.PortfolioResponse(
                trace_position=self.get_trace_position(request.get_trace_position)
            )
        if which == "get_order":
            return pb.PortfolioResponse(order=self.get_order(request.get_order))
        if which == "list_open_orders":
            return pb.PortfolioResponse(
                list_open_orders=self.list_open_orders(request.list_open_orders)
            )
        if which == "get_balances":
            return pb.PortfolioResponse(balances=self.get_balances(request.get_balances))
        if which == "get_consolidated_position":
            return pb.PortfolioResponse(
                consolidated_position=self.get_consolidated_position(
                    request.get_consolidated_position
                )
            )
        if which == "get_instrument":
            return pb.PortfolioResponse(instrument=self.get_instrument(request.get_instrument))
        if which == "get_reconciliation":
            return pb.PortfolioResponse(
                reconciliation=self.get_reconciliation(request.get_reconciliation)
            )
        raise ApiError.invalid(FieldViolation("query", "must hold one of the query kinds"))

    def get_position(self, request: pb.GetPositionRequest) -> pb.Position:
        _require("account_id", request.account_id)
        _require("instrument_id", request.instrument_id)
        view = self.service.get_position(
            request.account_id, request.instrument_id, request.strategy_id
        )
        return position_to_proto(view)

    def get_strategy_portfolio(
        self, request: pb.GetStrategyPortfolioRequest
    ) -> pb.StrategyPortfolio:
        _require("strategy_id", request.strategy_id)
        kind = _kind_asked(request.account_kind)
        portfolio = self.service.strategy_portfolio(
            request.strategy_id, request.account_id, request.include_flat, kind
        )
        _check_kind(request.account_id, kind, portfolio.account_kind)
        return strategy_portfolio_to_proto(portfolio)

    def get_portfolio_summary(self, request: pb.GetPortfolioSummaryRequest) -> pb.PortfolioSummary:
        kind = _kind_asked(request.account_kind)
        summary = self.service.portfolio_summary(request.account_id, kind)
        _check_kind(request.account_id, kind, summary.account_kind)
        return summary_to_proto(summary)

    def list_positions(self, request: pb.ListPositionsRequest) -> pb.ListPositionsResponse:
        if request.level not in _LEVEL_FILTER:
            raise ApiError.invalid(FieldViolation("level", _LEVEL_CHOICES))
        account_level = request.level == pb.POSITION_LEVEL_ACCOUNT
        if account_level and request.strategy_id:
            raise ApiError.invalid(
                FieldViolation("strategy_id", "must be empty for POSITION_LEVEL_ACCOUNT rows")
            )
        _check_page_size(request.page_size)
        query = PositionQuery(
            account_id=request.account_id,
            strategy_id=request.strategy_id,
            instrument_id=request.instrument_id,
            account_level=account_level,
            include_flat=request.include_flat,
        )
        after = _decode_page_token(request.page_token, query) if request.page_token else None
        page = self.service.list_positions(query, after, request.page_size or DEFAULT_PAGE_SIZE)
        return pb.ListPositionsResponse(
            positions=[position_to_proto(view) for view in page.positions],
            next_page_token=_encode_page_token(page.last_key, query) if page.last_key else "",
            as_of_sequence=page.as_of_sequence,
        )

    def get_trace_position(self, request: pb.GetTracePositionRequest) -> pb.TracePosition:
        _require("trace_id", request.trace_id)
        return trace_to_proto(self.service.trace(request.trace_id))

    # -- reconciliation --------------------------------------------------------------------

    async def Reconcile(self, request: pb.ReconcileRequest, context: Context) -> pb.Reconciliation:
        try:
            with field_errors():
                require_id("account_id", request.account_id)  # it names a journaled event
        except FieldViolation as violation:
            await self._invalid(violation, context)
        if self.reconciler is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "reconciliation is not configured")
            raise AssertionError("abort returned")  # pragma: no cover
        try:
            run = await self.reconciler.reconcile(request.account_id)
        except (NoBroker, BrokerUnavailable, StorageUnavailable) as error:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
            raise
        except NotAllowed as refused:
            await self._refuse(refused.refusal, context)
            raise
        return reconciliation_to_proto(run, self.service.residual_view)

    async def GetReconciliation(
        self, request: pb.GetReconciliationRequest, context: Context
    ) -> pb.Reconciliation:
        return await self._answer(self.get_reconciliation, request, context)

    def get_reconciliation(self, request: pb.GetReconciliationRequest) -> pb.Reconciliation:
        _require("account_id", request.account_id)
        run = self.service.reconciliation(request.account_id)
        return reconciliation_to_proto(run, self.service.residual_view)

    async def ListReconciliations(
        self, request: pb.ListReconciliationsRequest, context: Context
    ) -> pb.ListReconciliationsResponse:
        return await self._answer(self.list_reconciliations, request, context)

    def list_reconciliations(
        self, request: pb.ListReconciliationsRequest
    ) -> pb.ListReconciliationsResponse:
        _require("account_id", request.account_id)
        if not 0 <= request.page_size <= MAX_RECONCILIATIONS_PAGE:
            raise ApiError.invalid(
                FieldViolation("page_size", f"must be between 0 and {MAX_RECONCILIATIONS_PAGE}")
            )
        tag = f"reconciliations|{request.account_id}"
        before = _decode_token(request.page_token, tag) if request.page_token else None
        if before is not None and not (len(before) == 1 and before[0].isdigit()):
            raise ApiError.invalid(FieldViolation("page_token", "is not a token this service gave"))
        limit = request.page_size or MAX_RECONCILIATIONS_PAGE
        runs = self.service.reconciliations(
            request.account_id, int(before[0]) if before else 0, limit
        )
        page = runs[:limit]
        more = len(runs) > limit
        return pb.ListReconciliationsResponse(
            reconciliations=[
                reconciliation_to_proto(run, self.service.residual_view) for run in page
            ],
            next_page_token=_encode_token([str(page[-1].sequence)], tag) if more else "",
        )

    # -- subscriptions ---------------------------------------------------------------------

    async def SubscribeUpdates(  # type: ignore[override]  # writes with context.write
        self, request: pb.SubscribeUpdatesRequest, context: Context
    ) -> None:
        """Writes through the subscriber rather than yielding, so that a cut-off can end the
        stream while a write waits on a client that stopped reading. A subscriber that asked for
        batches gets everything waiting for it in as few messages as the caps allow."""
        if request.level not in _LEVEL_FILTER:
            error = ApiError.invalid(FieldViolation("level", _LEVEL_CHOICES))
            await context.abort_with_status(error.to_status())
        filter_ = SubscriptionFilter(
            account_id=request.account_id,
            strategy_id=request.strategy_id,
            instrument_id=request.instrument_id,
            account_level=_LEVEL_FILTER[request.level],
            include_balances=request.include_balances,
            include_marks=request.include_marks,
            include_reconciliations=request.include_reconciliations,
        )
        try:
            replay, subscriber = self.service.subscribe(filter_, request.from_sequence)
        except SequenceOutOfRange as out_of_range:
            await context.abort(grpc.StatusCode.OUT_OF_RANGE, str(out_of_range))
        try:
            # Headers go out now, on their own: a write the cut-off abandons never carries them.
            await context.send_initial_metadata(())
            messages = self._batched if request.batch else _one_by_one
            for sequence, message in messages(replay):
                await subscriber.send(context.write, message, write_cost(message))
                subscriber.resume_from = sequence
            while True:
                batch = await subscriber.next_batch(self.heartbeat_seconds)
                if not batch:
                    idle = heartbeat(self.service.hub.latest_sequence)
                    await subscriber.send(context.write, idle)
                for sequence, message in messages(batch):
                    await subscriber.send(context.write, message, write_cost(message))
                    subscriber.resume_from = sequence
        except SubscriberOverflow as overflow:
            # The status follows what the client has not read yet; this handler ends now.
            context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)
            context.set_details(str(overflow))
        finally:
            subscriber.close()

    def _batched(self, items: Iterable[Update]) -> Iterator[tuple[int, bytes]]:
        return batch_messages(items, max_bytes=self.batch_max_bytes)


def _one_by_one(items: Iterable[Update]) -> Iterator[tuple[int, bytes]]:
    return ((item.sequence, item.payload.message) for item in items)


def _check_page_size(page_size: int) -> None:
    if not 0 <= page_size <= MAX_PAGE_SIZE:
        raise ApiError.invalid(
            FieldViolation("page_size", f"must be between 0 and {MAX_PAGE_SIZE}")
        )


def _encode_token(key: list[str], tag: str) -> str:
    text = json.dumps([key, tag], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode()


def _decode_token(token: str, tag: str) -> list[str]:
    try:
        key, token_tag = json.loads(base64.urlsafe_b64decode(token.encode()))
        if not isinstance(key, list) or not all(isinstance(part, str) for part in key):
            raise ValueError("not a key")
    except (ValueError, TypeError) as error:
        raise ApiError.invalid(
            FieldViolation("page_token", "is not a token this service gave")
        ) from error
    if token_tag != tag:
        raise ApiError.invalid(
            FieldViolation("page_token", "was given for different filters; start over without it")
        )
    return key


def _filters_tag(query: PositionQuery) -> str:
    return "|".join(
        (
            query.account_id,
            query.strategy_id,
            query.instrument_id,
            str(int(query.account_level)),
            str(int(query.include_flat)),
        )
    )


def _encode_page_token(last_key: PositionKey, query: PositionQuery) -> str:
    return _encode_token(list(last_key), _filters_tag(query))


def _decode_page_token(token: str, query: PositionQuery) -> PositionKey:
    key = _decode_token(token, _filters_tag(query))
    if len(key) != len(PositionKey._fields):
        raise ApiError.invalid(FieldViolation("page_token", "is not a token this service gave"))
    return PositionKey(*key)
