"""The PortfolioManager service: requests in, application calls, messages out."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

import grpc
from google.protobuf.message import Message

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.api import pages
from server.api.answers import AnswerCache, RowAnswers
from server.api.auth import booking_refusal
from server.api.errors import (
    REJECT_CODES,
    ApiError,
    answers_errors,
    answers_stream_errors,
    end_with,
    refusal_status,
    status_of,
)
from server.api.framing import length_delimited
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
    parse_decimal,
    position_to_proto,
    trace_to_proto,
)
from server.api.wire_performance import performance_to_proto, risk_to_proto
from server.api.wire_pnl import pnl_history_to_proto
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
from server.application.performance import performance
from server.application.point_in_time import PastPointOutOfRange
from server.application.reads import ReadModel
from server.application.reconciler import Reconciler
from server.application.risk import CONFIDENCES, correlations, risk, strategy_series
from server.application.service import (
    PortfolioChange,
    PortfolioService,
    PositionQuery,
)
from server.application.subscriptions import (
    Published,
    ServiceStopping,
    SubscriberOverflow,
    SubscriptionFilter,
)
from server.domain.events import (
    AccountKind,
    ExecutionEvent,
    InvalidEvent,
    require_id,
    require_trading_date,
)
from server.domain.ledger import Outcome, Result
from server.domain.marks import FxRate, Mark
from server.domain.refusals import RefusalKind

if TYPE_CHECKING:
    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

log = logging.getLogger("portfolio.api")

MAX_MARKS_PER_BATCH = 10_000
MAX_BATCHES_IN_FLIGHT = 64  # per Ingest stream, admitted and waiting for their commit
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
MAX_RECONCILIATIONS_PAGE = 100
DEFAULT_LOOKBACK_DAYS = 250
MAX_CONFIDENCE_LEVELS = 5
MAX_LOOKBACK_DAYS = 2520
POSITIONS_KEPT = 4096  # GetPosition answers kept encoded (a few hundred bytes each)

_RESULTS = {
    Result.ACCEPTED: pb.EVENT_RESULT_ACCEPTED,
    Result.DUPLICATE: pb.EVENT_RESULT_DUPLICATE,
    Result.REJECTED: pb.EVENT_RESULT_REJECTED,
}
_NO_CODE = pb.REJECT_CODE_UNSPECIFIED
_NO_PLACEMENT = pb.BOOKING_PLACEMENT_UNSPECIFIED


class _Admitted(NamedTuple):
    """A batch admitted and not yet answered: its acks are built once it is durable and
    applied (one protobuf per ack, none to patch afterwards)."""

    batch_id: str
    refused: Sequence[pb.EventAck | None] = ()  # per event: its refusal at the door, or None
    outcomes: Sequence[Outcome] = ()  # of the events not refused, in order
    fills: Sequence[bool] = ()  # whether each of those books a fill (its ack says where)
    wait_for: int = 0
    refused_whole: str = ""  # why the whole batch was refused


_Told = Callable[[BaseException | None], None]
_WAITING = object()  # a batch admitted, not durable yet


class _Answers:
    """One Ingest stream's batches, in order, from admission to their answer. The first batch
    asks the commit to tell it once durable (`on_durable`); the handler takes it once told,
    and awaits one future only when there is nothing to send. So a lone message costs the
    handler one wake-up (an asyncio.Queue and a wait for durability cost two, with a future
    each). The end of the stream (None), the reader's error and a stop are entries too, told
    at once: they come after every batch admitted before them."""

    def __init__(self, on_durable: Callable[[int, _Told], None], capacity: int) -> None:
        self._on_durable = on_durable
        self._capacity = capacity
        self._entries: collections.deque[list[Any]] = collections.deque()  # [what, told]
        self._settled: asyncio.Future[None] | None = None  # the handler waits on it
        self._room: asyncio.Future[None] | None = None  # the reader waits on it
        self._ended = False

    def full(self) -> bool:
        return len(self._entries) >= self._capacity

    def add(self, admitted: _Admitted) -> None:
        self._entries.append([admitted, _WAITING])
        if len(self._entries) == 1:
            self._watch_first()

    def _watch_first(self) -> None:
        """Asks the commit about the first entry only: a batch behind it is asked once it is
        first (under a backlog it is durable by then, and told at once without a waiter)."""
        entry = self._entries[0]
        if entry[1] is not _WAITING:
            return

        def told(error: BaseException | None) -> None:
            entry[1] = error
            self._wake()

        self._on_durable(entry[0].wait_for, told)

    def end(self, final: BaseException | None) -> None:
        """The stream's last entry: None (the client closed it) or why it ends."""
        if not self._ended:
            self._ended = True
            self._entries.append([final, None])
            if len(self._entries) == 1:
                self._wake()

    def next(self) -> tuple[Any, BaseException | None] | None:
        """The first entry, once told (what it is, and the error if it cannot be durable);
        None while it waits."""
        if not self._entries or self._entries[0][1] is _WAITING:
            return None
        what, failed = self._entries.popleft()
        if self._room is not None and not self._room.done():
            self._room.set_result(None)
        if self._entries:
            self._watch_first()
        return what, failed

    def settled(self) -> asyncio.Future[None]:
        """Done when the first entry is told (at once if it is)."""
        self._settled = asyncio.get_running_loop().create_future()
        if self._entries and self._entries[0][1] is not _WAITING:
            self._settled.set_result(None)
        return self._settled

    def room(self) -> asyncio.Future[None]:
        """Done when an entry has been taken (the reader waits while `full`)."""
        self._room = asyncio.get_running_loop().create_future()
        return self._room

    def _wake(self) -> None:
        if self._settled is not None and not self._settled.done():
            self._settled.set_result(None)


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


def _require(field: str, value: str) -> None:
    if not value:
        raise FieldViolation(field, "is required")


def _kind_asked(value: pb.AccountKind.ValueType) -> AccountKind | None:
    """A request's `account_kind`: None for UNSPECIFIED (both, side by side)."""
    if value == pb.ACCOUNT_KIND_UNSPECIFIED:
        return None
    kind = ACCOUNT_KIND_FROM_PROTO.get(value)
    if kind is None:
        raise FieldViolation("account_kind", "must be PAPER, LIVE or UNSPECIFIED")
    return kind


def _check_kind(account_id: str, asked: AccountKind | None, found: AccountKind | None) -> None:
    """One account asked for with a kind other than its own is refused, not answered."""
    if asked is not None and found is not asked:
        name = found.name if found else "unknown"
        raise FieldViolation("account_kind", f"account {account_id!r} is {name}, not {asked.name}")


STOPPING = (
    "the service is stopping: reconnect (to another instance, or to this one once it is back) "
    "and resend what was not acknowledged (event ids make a resend harmless)"
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
        self.answers = AnswerCache()  # summaries kept encoded until the state moves
        self.positions = RowAnswers(POSITIONS_KEPT)  # rows, by version and by view
        # At a shutdown (stop_streams): no new stream; open ingest streams (their admitting
        # task -> their answers) admit nothing more, answer what they admitted, then end.
        self.stopping = False
        self._ingest_streams: dict[asyncio.Task[None], _Answers] = {}
        self._mark_streams: set[asyncio.Task[Any]] = set()  # their handlers' tasks

    def stop_streams(self) -> None:
        """At a shutdown: every stream ends UNAVAILABLE (readers resume, relays resend, on
        another instance or once this one is back) instead of holding the server's stop for
        its whole grace. An ingest stream admits no further batch but answers those admitted
        once durable; subscriptions end at once with where to resume."""
        self.stopping = True
        self.service.hub.stop()
        for reader, answers in self._ingest_streams.items():
            reader.cancel()
            answers.end(ApiError.unavailable(STOPPING))
        for task in self._mark_streams:
            task.cancel()

    # -- ingest ----------------------------------------------------------------------------

    @answers_stream_errors
    async def Ingest(
        self,
        request_iterator: AsyncIterator[pb.IngestRequest],
        context: Context,
    ) -> AsyncGenerator[pb.IngestResponse, None]:
        """Admits batches as they arrive and answers each once it is durable, in order: the
        stream is pipelined, so one stream's batches share group commits too. The reader task
        admits; the commit tells the stream when a batch is durable (`_Answers`), so the
        handler wakes only with an answer to send."""
        if self.stopping:
            raise ApiError.unavailable(STOPPING)
        answers = _Answers(self.service.on_durable, MAX_BATCHES_IN_FLIGHT)

        async def admit_all() -> None:
            try:
                async for request in request_iterator:
                    if answers.full():
                        await answers.room()
                    answers.add(self.admit_batch(request))
                answers.end(None)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the store is down, the client went away, or a bug
                answers.end(error)

        reader = asyncio.create_task(admit_all())
        self._ingest_streams[reader] = answers
        try:
            while True:
                if (head := answers.next()) is None:
                    await answers.settled()
                    continue
                answer, failed = head
                if answer is None:
                    break
                if isinstance(answer, grpc.aio.AioRpcError):
                    return
                if isinstance(answer, BaseException):
                    if status_of(answer) is None:
                        log.exception("ingest failed", exc_info=answer)
                        raise ApiError.internal("ingest failed; see logs")
                    raise answer  # the store is down, or a malformed request (the guard's)
                if failed is not None:
                    raise failed  # not durable: the store failed (the relay resends)
                yield self.place_fills(answer)
        finally:
            reader.cancel()
            del self._ingest_streams[reader]

    def admit_batch(self, request: pb.IngestRequest) -> _Admitted:
        """Admits one batch; returns what its answer needs and the sequence to wait for before
        sending it. A bad event is rejected alone, the rest go through. It runs on the event
        loop for every message, so the clock's refusal is caught by a plain `except` (no
        `field_errors` generator) and each event's branch is found once."""
        count = len(request.events)
        if not 1 <= count <= self.max_batch_events:
            return _Admitted(
                request.batch_id,
                refused_whole=f"events: a batch holds 1 to {self.max_batch_events} events, got "
                f"{count}; nothing in it was applied",
            )
        refused: list[pb.EventAck | None] = []  # None: admitted, answered from its outcome
        valid: list[ExecutionEvent] = []
        fills: list[bool] = []  # whether each admitted event books a fill (its ack says where)
        check_time = self.service.check_time
        for index, message in enumerate(request.events):
            of = message.WhichOneof("event")
            refusal = booking_refusal(getattr(message, of).account_id) if of else ""
            if of and refusal:  # the caller may not book this account (server.api.auth)
                self.service.writes.event_counts[of, Result.REJECTED] += 1
                refused.append(
                    pb.EventAck(
                        event_id=event_id_of(message),
                        result=pb.EVENT_RESULT_REJECTED,
                        reason=f"events[{index}].{of}.{refusal}",
                        code=pb.REJECT_CODE_FAILED_PRECONDITION,
                    )
                )
                continue
            try:
                event = event_from_proto(message)
                check_time("timestamp", event.timestamp_ns)
            except (FieldViolation, InvalidEvent) as error:  # counted as the ledger's are
                violation = (
                    error
                    if isinstance(error, FieldViolation)
                    else FieldViolation(f"{of}.{error.field}", error.reason)  # the clock's
                )
                self.service.writes.event_counts[of or "unknown", Result.REJECTED] += 1
                refused.append(
                    pb.EventAck(
                        event_id=event_id_of(message),
                        result=pb.EVENT_RESULT_REJECTED,
                        reason=str(violation.within(f"events[{index}]")),
                        code=pb.REJECT_CODE_INVALID_FIELD,
                    )
                )
                continue
            valid.append(event)
            fills.append(of == "fill")  # a fill or a correction (the fill branch)
            refused.append(None)
        outcomes, wait_for = self.service.admit(valid)
        return _Admitted(request.batch_id, refused, outcomes, fills, wait_for)

    def place_fills(self, admitted: _Admitted) -> pb.IngestResponse:
        """Once a batch is applied, its answer: each ack built once, an accepted fill's with
        where it landed in its rows' history (known only now)."""
        if admitted.refused_whole:
            return pb.IngestResponse(
                batch_id=admitted.batch_id, batch_rejected_reason=admitted.refused_whole
            )
        response = pb.IngestResponse(batch_id=admitted.batch_id)
        add, placement = response.acks.add, self.service.placement
        answered = zip(admitted.outcomes, admitted.fills, strict=True)
        for ack in admitted.refused:
            if ack is not None:
                response.acks.append(ack)
                continue
            outcome, fill = next(answered)
            add(
                event_id=outcome.event_id,
                sequence=outcome.sequence,
                result=_RESULTS[outcome.result],
                reason=outcome.reason,
                code=REJECT_CODES[outcome.refused] if outcome.refused else _NO_CODE,
                placement=PLACEMENTS[placement(outcome.sequence)]
                if fill and outcome.result is Result.ACCEPTED
                else _NO_PLACEMENT,
            )
        return response

    # -- writes ----------------------------------------------------------------------------

    async def _execute(self, event: ExecutionEvent) -> int:
        """Journals one event for a unary RPC and returns its sequence; raises the refusal's
        status when the domain refused it, or ALREADY_EXISTS when the id was used for different
        content."""
        outcome, refusal = await self.service.execute(event)
        if outcome.result is Result.REJECTED:
            if outcome.refused is RefusalKind.RETRY:
                raise ApiError(grpc.StatusCode.UNAVAILABLE, outcome.reason)
            raise ApiError.already_exists(outcome.reason)
        if refusal is not None:
            raise refusal_status(refusal)
        return outcome.sequence

    # -- orders ----------------------------------------------------------------------------

    @answers_errors
    async def GetOrder(self, request: pb.GetOrderRequest, context: Context) -> pb.Order:
        """An order that ended and left memory is read from the store."""
        _require("account_id", request.account_id)
        if not request.order_id and not request.order_ref:
            raise FieldViolation("order_id", "order_id or order_ref is required")
        order = await self.service.order_anywhere(
            request.account_id, request.order_id, request.order_ref
        )
        return order_to_proto(order)

    @answers_errors
    async def ListOpenOrders(
        self, request: pb.ListOpenOrdersRequest, context: Context
    ) -> pb.ListOpenOrdersResponse:
        if request.strategy_id and not request.account_id:
            raise FieldViolation("account_id", "is required with a strategy_id filter")
        limit = pages.page_size(request.page_size, maximum=MAX_PAGE_SIZE, default=DEFAULT_PAGE_SIZE)
        filters = (request.account_id, request.strategy_id)
        after = pages.OPEN_ORDERS.decode(request.page_token, filters)
        page = self.service.open_orders(request.account_id, request.strategy_id, after, limit)
        return pb.ListOpenOrdersResponse(
            orders=[order_to_proto(order) for order in page.orders],
            next_page_token=pages.OPEN_ORDERS.encode(page.last_key, filters)
            if page.last_key
            else "",
            as_of_sequence=page.as_of_sequence,
        )

    # -- instruments and accounts ----------------------------------------------------------

    @answers_errors
    async def DefineInstrument(
        self, request: pb.DefineInstrumentRequest, context: Context
    ) -> pb.Instrument:
        try:
            definition = instrument_from_proto(request.instrument)
        except FieldViolation as violation:
            raise violation.within("instrument") from None
        await self._execute(definition)
        return instrument_to_proto(self.service.instrument(definition.instrument_id))

    @answers_errors
    async def GetInstrument(
        self, request: pb.GetInstrumentRequest, context: Context
    ) -> pb.Instrument:
        _require("instrument_id", request.instrument_id)
        return instrument_to_proto(self.service.instrument(request.instrument_id))

    @answers_errors
    async def ListInstruments(
        self, request: pb.ListInstrumentsRequest, context: Context
    ) -> pb.ListInstrumentsResponse:
        limit = pages.page_size(request.page_size, maximum=MAX_PAGE_SIZE, default=DEFAULT_PAGE_SIZE)
        after = pages.INSTRUMENTS.decode(request.page_token)
        page = self.service.instruments(after or "", limit + 1)
        more = len(page) > limit
        page = page[:limit]
        return pb.ListInstrumentsResponse(
            instruments=[instrument_to_proto(i) for i in page],
            next_page_token=pages.INSTRUMENTS.encode(page[-1].instrument_id) if more else "",
        )

    @answers_errors
    async def DefineAccount(self, request: pb.DefineAccountRequest, context: Context) -> pb.Account:
        try:
            definition = account_from_proto(request.account)
        except FieldViolation as violation:
            raise violation.within("account") from None
        await self._execute(definition)
        return account_to_proto(self.service.account(definition.account_id))

    @answers_errors
    async def ListAccounts(
        self, request: pb.ListAccountsRequest, context: Context
    ) -> pb.ListAccountsResponse:
        return pb.ListAccountsResponse(
            accounts=[account_to_proto(a, defined) for a, defined in self.service.accounts()]
        )

    # -- marks -----------------------------------------------------------------------------

    @answers_stream_errors
    async def StreamMarks(
        self, request_iterator: AsyncIterator[pb.MarkBatch], context: Context
    ) -> AsyncGenerator[pb.MarkAck, None]:
        """At a stop, the stream ends UNAVAILABLE: its task is cancelled where it waits (for
        the next batch, or on the client reading an ack), never while a batch is applied."""
        if self.stopping:
            raise ApiError.unavailable(STOPPING)
        task = asyncio.current_task()
        assert task is not None
        self._mark_streams.add(task)
        try:
            async for ack in self._apply_marks(request_iterator):
                yield ack
        except asyncio.CancelledError:
            if not self.stopping:
                raise
            task.uncancel()
            raise ApiError.unavailable(STOPPING) from None
        finally:
            self._mark_streams.discard(task)

    async def _apply_marks(
        self, request_iterator: AsyncIterator[pb.MarkBatch]
    ) -> AsyncGenerator[pb.MarkAck, None]:
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

    @answers_errors
    async def GetBalances(self, request: pb.GetBalancesRequest, context: Context) -> pb.Balances:
        _require("account_id", request.account_id)
        return balances_to_proto(self.service.balances(request.account_id))

    @answers_errors
    async def ReserveCash(self, request: pb.ReserveCashRequest, context: Context) -> pb.Reservation:
        event = reservation_from_proto(request)
        sequence = await self._execute(event)
        return self._reservation(event.account_id, event.reservation_id, sequence)

    @answers_errors
    async def ReleaseReservation(
        self, request: pb.ReleaseReservationRequest, context: Context
    ) -> pb.Reservation:
        event = release_from_proto(request)
        sequence = await self._execute(event)
        return self._reservation(event.account_id, event.reservation_id, sequence)

    def _reservation(self, account_id: str, reservation_id: str, sequence: int) -> pb.Reservation:
        """The reservation after its event; one forgotten since (a retry long after) is
        answered from the journal, or NOT_FOUND saying so (see PortfolioService)."""
        return reservation_to_proto(self.service.reservation(account_id, reservation_id, sequence))

    # -- the consolidated book -------------------------------------------------------------

    @answers_errors
    async def GetConsolidatedPosition(
        self, request: pb.GetConsolidatedPositionRequest, context: Context
    ) -> pb.ConsolidatedPosition:
        _require("account_id", request.account_id)
        _require("instrument_id", request.instrument_id)
        found = self.service.consolidated(request.account_id, request.instrument_id)
        return consolidated_to_proto(found)

    @answers_errors
    async def GetPosition(  # type: ignore[override]  # kept encoded: api/answers.py
        self, request: pb.GetPositionRequest, context: Context
    ) -> pb.Position | bytes:
        account_id, instrument_id = request.account_id, request.instrument_id
        _require("account_id", account_id)
        _require("instrument_id", instrument_id)
        strategy_id = request.strategy_id
        service = self.service
        return self.positions.answer(
            (account_id, instrument_id, strategy_id),
            service.version,
            lambda: service.get_position(account_id, instrument_id, strategy_id),
        )

    @answers_errors
    async def GetStrategyPortfolio(  # type: ignore[override]  # kept encoded: api/answers.py
        self, request: pb.GetStrategyPortfolioRequest, context: Context
    ) -> pb.StrategyPortfolio | bytes:
        _require("strategy_id", request.strategy_id)
        kind = _kind_asked(request.account_kind)
        reads = await self._reads_as_of(request)

        def build() -> pb.StrategyPortfolio:
            portfolio = reads.strategy_portfolio(
                request.strategy_id, request.account_id, request.include_flat, kind
            )
            _check_kind(request.account_id, kind, portfolio.account_kind)
            return strategy_portfolio_to_proto(portfolio)

        if request.HasField("as_of"):
            return build()
        key = ("strategy", request.SerializeToString(deterministic=True))
        return self.answers.answer(key, self.service.version, build)

    @answers_errors
    async def GetPortfolioSummary(  # type: ignore[override]  # kept encoded: api/answers.py
        self, request: pb.GetPortfolioSummaryRequest, context: Context
    ) -> pb.PortfolioSummary | bytes:
        kind = _kind_asked(request.account_kind)
        reads = await self._reads_as_of(request)

        def build() -> pb.PortfolioSummary:
            summary = reads.portfolio_summary(request.account_id, kind)
            _check_kind(request.account_id, kind, summary.account_kind)
            return summary_to_proto(summary)

        if request.HasField("as_of"):
            return build()
        key = ("summary", request.SerializeToString(deterministic=True))
        return self.answers.answer(key, self.service.version, build)

    @answers_errors
    async def ListPositions(
        self, request: pb.ListPositionsRequest, context: Context
    ) -> pb.ListPositionsResponse:
        if request.level not in _LEVEL_FILTER:
            raise FieldViolation("level", _LEVEL_CHOICES)
        account_level = request.level == pb.POSITION_LEVEL_ACCOUNT
        if account_level and request.strategy_id:
            raise FieldViolation("strategy_id", "must be empty for POSITION_LEVEL_ACCOUNT rows")
        limit = pages.page_size(request.page_size, maximum=MAX_PAGE_SIZE, default=DEFAULT_PAGE_SIZE)
        query = PositionQuery(
            account_id=request.account_id,
            strategy_id=request.strategy_id,
            instrument_id=request.instrument_id,
            account_level=account_level,
            include_flat=request.include_flat,
        )
        reads = await self._reads_as_of(request)
        filters = pages.position_filters(query)
        if request.HasField("as_of"):  # a token resumes at the same point only
            filters.append(f"as_of:{reads.sequence}")
        after = pages.POSITIONS.decode(request.page_token, filters)
        page = reads.list_positions(query, after, limit)
        return pb.ListPositionsResponse(
            positions=[position_to_proto(view) for view in page.positions],
            next_page_token=pages.POSITIONS.encode(page.last_key, filters) if page.last_key else "",
            as_of_sequence=page.as_of_sequence,
        )

    async def _reads_as_of(
        self,
        request: pb.GetPortfolioSummaryRequest
        | pb.GetStrategyPortfolioRequest
        | pb.ListPositionsRequest,
    ) -> ReadModel:
        """The read model of now, or of the past point the request's `as_of` names."""
        if not request.HasField("as_of"):
            return self.service.reads
        point = request.as_of.WhichOneof("point")
        if point is None:
            raise FieldViolation("as_of", "must hold a sequence or a time")
        if point == "time":
            stamp = request.as_of.time
            if not 0 <= stamp.nanos < 1_000_000_000:
                raise FieldViolation("as_of.time", f"nanos must be in [0, 1e9), got {stamp.nanos}")
            moment = stamp.seconds * 1_000_000_000 + stamp.nanos
            sequence = self.service.point_in_time.sequence_at(moment)
        else:
            sequence = request.as_of.sequence
        try:
            return await self.service.point_in_time.reads_at(sequence)
        except PastPointOutOfRange as error:
            raise FieldViolation(f"as_of.{point}", str(error)) from None

    @answers_errors
    async def GetTracePosition(
        self, request: pb.GetTracePositionRequest, context: Context
    ) -> pb.TracePosition:
        _require("trace_id", request.trace_id)
        return trace_to_proto(self.service.trace(request.trace_id))

    @answers_errors
    async def Query(  # type: ignore[override]  # kept encoded: api/answers.py
        self, request: pb.PortfolioQuery, context: Context
    ) -> pb.PortfolioResponse | bytes:
        """Answered by the RPC of the query's kind (see QUERIES), in its answer's branch."""
        which = request.WhichOneof("query")
        if which is None:
            raise FieldViolation("query", "must hold one of the query kinds")
        answer_field, method = QUERIES[which]
        answer = await method(self, getattr(request, which), context)
        if type(answer) is bytes:  # an answer kept encoded (see api/answers.py)
            return in_branch(answer_field, answer)
        response = pb.PortfolioResponse()
        getattr(response, answer_field).CopyFrom(answer)
        return response

    # -- reconciliation --------------------------------------------------------------------

    @answers_errors
    async def Reconcile(self, request: pb.ReconcileRequest, context: Context) -> pb.Reconciliation:
        with field_errors():
            require_id("account_id", request.account_id)  # it names a journaled event
        if self.reconciler is None:
            raise ApiError.unavailable("reconciliation is not configured")
        run = await self.reconciler.reconcile(request.account_id)
        return reconciliation_to_proto(self.service.valued_run(run))

    @answers_errors
    async def GetReconciliation(
        self, request: pb.GetReconciliationRequest, context: Context
    ) -> pb.Reconciliation:
        _require("account_id", request.account_id)
        return reconciliation_to_proto(self.service.reconciliation(request.account_id))

    # -- P&L history -----------------------------------------------------------------------

    @answers_errors
    async def GetPnlHistory(
        self, request: pb.GetPnlHistoryRequest, context: Context
    ) -> pb.PnlHistory:
        _require("account_id", request.account_id)
        _check_dates(request.from_date, request.to_date)
        days = self.service.pnl_history(
            request.account_id, request.strategy_id, request.from_date, request.to_date
        )
        base = self.service.ledger.accounts.base_currency(request.account_id)
        return pnl_history_to_proto(
            request.account_id, request.strategy_id, base, days, self.service.sequence
        )

    @answers_errors
    async def GetPerformance(
        self, request: pb.GetPerformanceRequest, context: Context
    ) -> pb.Performance:
        if not request.strategy_id:
            _require("account_id", request.account_id)
        _check_dates(request.from_date, request.to_date)
        report = performance(
            self.service.ledger,
            request.account_id,
            request.strategy_id,
            request.from_date,
            request.to_date,
            request.instrument_id,
        )
        return performance_to_proto(report, self.service.sequence)

    @answers_errors
    async def GetRiskMetrics(
        self, request: pb.GetRiskMetricsRequest, context: Context
    ) -> pb.RiskMetrics:
        _require("account_id", request.account_id)
        if request.lookback_days > MAX_LOOKBACK_DAYS:
            raise FieldViolation(
                "lookback_days", f"must be at most {MAX_LOOKBACK_DAYS}, got {request.lookback_days}"
            )
        lookback = request.lookback_days or DEFAULT_LOOKBACK_DAYS
        confidences = _confidence_levels(request.confidence_levels)
        report = risk(
            self.service.ledger, request.account_id, request.strategy_id, lookback, confidences
        )
        sequence = self.service.sequence
        if not request.strategy_id:  # the pairs' statistics off the event loop
            series = strategy_series(self.service.ledger, request.account_id, lookback)
            pairs = await asyncio.to_thread(correlations, series)
            report = dataclasses.replace(report, correlations=pairs)
        return risk_to_proto(report, sequence)

    @answers_errors
    async def ListReconciliations(
        self, request: pb.ListReconciliationsRequest, context: Context
    ) -> pb.ListReconciliationsResponse:
        _require("account_id", request.account_id)
        limit = pages.page_size(
            request.page_size, maximum=MAX_RECONCILIATIONS_PAGE, default=MAX_RECONCILIATIONS_PAGE
        )
        filters = (request.account_id,)
        before = pages.RECONCILIATIONS.decode(request.page_token, filters)
        runs = self.service.reconciliations(request.account_id, before or 0, limit)
        page = runs[:limit]
        more = len(runs) > limit
        return pb.ListReconciliationsResponse(
            reconciliations=[reconciliation_to_proto(run) for run in page],
            next_page_token=pages.RECONCILIATIONS.encode(page[-1].reconciliation.sequence, filters)
            if more
            else "",
        )

    # -- subscriptions ---------------------------------------------------------------------

    @answers_errors
    async def SubscribeUpdates(  # type: ignore[override]  # writes with context.write
        self, request: pb.SubscribeUpdatesRequest, context: Context
    ) -> None:
        """Writes through the subscriber rather than yielding, so that a cut-off can end the
        stream while a write waits on a client that stopped reading. A subscriber that asked for
        batches gets everything waiting for it in as few messages as the caps allow."""
        if request.level not in _LEVEL_FILTER:
            raise FieldViolation("level", _LEVEL_CHOICES)
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
        except ServiceStopping as stopping:
            _end_stopping(context, stopping)
            return
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
            end_with(context, overflow)
        except ServiceStopping as stopping:
            _end_stopping(context, stopping)
        finally:
            subscriber.close()

    def _batched(self, items: Iterable[Update]) -> Iterator[tuple[int, bytes]]:
        return batch_messages(items, max_bytes=self.batch_max_bytes)


def _confidence_levels(texts: Sequence[str]) -> tuple[Decimal, ...]:
    """Value at risk's confidence levels: decimals strictly between 0.5 and 1, at most
    MAX_CONFIDENCE_LEVELS; none: 0.95 and 0.99."""
    if not texts:
        return CONFIDENCES
    if len(texts) > MAX_CONFIDENCE_LEVELS:
        raise FieldViolation(
            "confidence_levels", f"at most {MAX_CONFIDENCE_LEVELS}, got {len(texts)}"
        )
    levels = []
    for index, text in enumerate(texts):
        name = f"confidence_levels[{index}]"
        level = parse_decimal(name, text)
        if not Decimal("0.5") < level < 1:
            raise FieldViolation(name, f"must be between 0.5 and 1 (exclusive), got {text}")
        levels.append(level)
    return tuple(levels)


def _check_dates(from_date: str, to_date: str) -> None:
    """A range of trading dates: each YYYY-MM-DD or empty, in order."""
    with field_errors():
        for name, value in (("from_date", from_date), ("to_date", to_date)):
            if value:
                require_trading_date(name, value)
    if from_date and to_date and from_date > to_date:
        raise FieldViolation("to_date", "must not be before from_date")


def in_branch(field: str, answer: bytes) -> bytes:
    """A PortfolioResponse holding the encoded `answer` in its branch `field`, encoded (a
    message with one field set is just that field), so an answer kept encoded is neither parsed
    nor encoded again."""
    return length_delimited(pb.PortfolioResponse.DESCRIPTOR.fields_by_name[field].number, answer)


def _end_stopping(context: Context, stopping: ServiceStopping) -> None:
    """UNAVAILABLE, the status clients retry elsewhere, once what was written has been read."""
    context.set_code(grpc.StatusCode.UNAVAILABLE)
    context.set_details(str(stopping))


def _one_by_one(items: Iterable[Update]) -> Iterator[tuple[int, bytes]]:
    return ((item.sequence, item.payload.message) for item in items)


# The PortfolioQuery oneof, one entry per kind: the answer's branch in PortfolioResponse and the
# RPC that answers it (with its own checks and errors).
QUERIES: dict[
    str,
    tuple[str, Callable[[PortfolioManagerServicer, Any, Context], Awaitable[Message | bytes]]],
] = {
    "get_position": ("position", PortfolioManagerServicer.GetPosition),
    "get_strategy_portfolio": ("strategy_portfolio", PortfolioManagerServicer.GetStrategyPortfolio),
    "get_portfolio_summary": ("portfolio_summary", PortfolioManagerServicer.GetPortfolioSummary),
    "list_positions": ("list_positions", PortfolioManagerServicer.ListPositions),
    "get_trace_position": ("trace_position", PortfolioManagerServicer.GetTracePosition),
    "get_order": ("order", PortfolioManagerServicer.GetOrder),
    "list_open_orders": ("list_open_orders", PortfolioManagerServicer.ListOpenOrders),
    "get_balances": ("balances", PortfolioManagerServicer.GetBalances),
    "get_consolidated_position": (
        "consolidated_position",
        PortfolioManagerServicer.GetConsolidatedPosition,
    ),
    "get_instrument": ("instrument", PortfolioManagerServicer.GetInstrument),
    "get_reconciliation": ("reconciliation", PortfolioManagerServicer.GetReconciliation),
    "get_pnl_history": ("pnl_history", PortfolioManagerServicer.GetPnlHistory),
    "get_performance": ("performance", PortfolioManagerServicer.GetPerformance),
    "get_risk_metrics": ("risk_metrics", PortfolioManagerServicer.GetRiskMetrics),
}
