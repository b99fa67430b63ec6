"""Both clients against a scripted in-process service: retries, resumption, errors, deadlines.

The fake service below does only what each test scripts, so these tests pin down the SDK's own
behaviour (what it resends, where it resumes, what it raises) independently of the real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from client import (
    AsyncPortfolioClient,
    Backoff,
    EventAck,
    EventResult,
    Fill,
    IngestIncomplete,
    PortfolioClient,
    PortfolioError,
    PortfolioUpdate,
    Position,
    PositionQuery,
    ProtocolViolation,
    ResyncRequired,
    Side,
    StrategyPortfolioQuery,
    UpdateKind,
)
from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc

FAST = Backoff(initial=0.01, maximum=0.05)
T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)

IngestBehaviour = Callable[
    ["FakeService", Iterator[pb.IngestRequest], grpc.ServicerContext], Iterator[pb.IngestResponse]
]
SubscribeBehaviour = Callable[
    [pb.SubscribeUpdatesRequest, grpc.ServicerContext], Iterator[pb.PortfolioUpdate]
]


# ---------------------------------------------------------------------------------------------
# The scripted service


@dataclass
class FakeService(portfolio_pb2_grpc.PortfolioManagerServicer):
    """Plays one scripted behaviour per stream, and records what the client sent."""

    ingest_script: list[IngestBehaviour] = field(default_factory=list)
    subscribe_script: list[SubscribeBehaviour] = field(default_factory=list)
    unary: dict[str, Callable[[Any, grpc.ServicerContext], Any]] = field(default_factory=dict)
    ingest_streams: list[list[pb.IngestRequest]] = field(default_factory=list)
    subscribe_requests: list[pb.SubscribeUpdatesRequest] = field(default_factory=list)
    unary_requests: list[Any] = field(default_factory=list)
    # The idempotent ledger: event id -> the sequence it was applied under.
    applied: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def apply(self, request: pb.IngestRequest) -> pb.IngestResponse:
        acks = []
        with self.lock:
            for event in request.events:
                event_id = event.fill.fill_id
                if event_id in self.applied:
                    result = pb.EVENT_RESULT_DUPLICATE
                else:
                    self.applied[event_id] = len(self.applied) + 1
                    result = pb.EVENT_RESULT_ACCEPTED
                acks.append(
                    pb.EventAck(event_id=event_id, sequence=self.applied[event_id], result=result)
                )
        return pb.IngestResponse(batch_id=request.batch_id, acks=acks)

    def Ingest(
        self, request_iterator: Iterator[pb.IngestRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.IngestResponse]:
        received: list[pb.IngestRequest] = []
        self.ingest_streams.append(received)
        behaviour = self.ingest_script[len(self.ingest_streams) - 1]

        def recording() -> Iterator[pb.IngestRequest]:
            for request in request_iterator:
                received.append(request)
                yield request

        yield from behaviour(self, recording(), context)

    def SubscribeUpdates(
        self, request: pb.SubscribeUpdatesRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.PortfolioUpdate]:
        self.subscribe_requests.append(request)
        behaviour = self.subscribe_script[len(self.subscribe_requests) - 1]
        yield from behaviour(request, context)

    def _unary(self, name: str, request: Any, context: grpc.ServicerContext) -> Any:
        self.unary_requests.append(request)
        return self.unary[name](request, context)

    def GetPosition(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._unary("GetPosition", request, context)

    def ListPositions(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._unary("ListPositions", request, context)

    def Query(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._unary("Query", request, context)


# Ingest behaviours


def ack_all(
    service: FakeService, requests: Iterator[pb.IngestRequest], context: grpc.ServicerContext
) -> Iterator[pb.IngestResponse]:
    for request in requests:
        yield service.apply(request)


def apply_then_fail(applied: int, acked: int, code: grpc.StatusCode) -> IngestBehaviour:
    """Applies the first `applied` batches but acks only `acked` of them, then fails."""

    def behaviour(
        service: FakeService, requests: Iterator[pb.IngestRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.IngestResponse]:
        for number, request in enumerate(requests, start=1):
            response = service.apply(request)
            if number <= acked:
                yield response
            if number == applied:
                break
        context.abort(code, "connection reset by peer")

    return behaviour


def ack_first_then_end(
    service: FakeService, requests: Iterator[pb.IngestRequest], context: grpc.ServicerContext
) -> Iterator[pb.IngestResponse]:
    yield service.apply(next(requests))


def read_everything_first(
    service: FakeService, requests: Iterator[pb.IngestRequest], context: grpc.ServicerContext
) -> Iterator[pb.IngestResponse]:
    # Only a client that sends without waiting for acks gets past this line.
    received = list(requests)
    for request in received:
        yield service.apply(request)


def refuse_batches(
    service: FakeService, requests: Iterator[pb.IngestRequest], context: grpc.ServicerContext
) -> Iterator[pb.IngestResponse]:
    for request in requests:
        yield pb.IngestResponse(batch_id=request.batch_id, batch_rejected_reason="too many events")


def fail_with(code: grpc.StatusCode) -> IngestBehaviour:
    def behaviour(
        service: FakeService, requests: Iterator[pb.IngestRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.IngestResponse]:
        context.abort(code, "not allowed")
        yield from ()

    return behaviour


# Subscription behaviours


def position_update(sequence: int, strategy_id: str) -> pb.PortfolioUpdate:
    level = pb.POSITION_LEVEL_STRATEGY if strategy_id else pb.POSITION_LEVEL_ACCOUNT
    return pb.PortfolioUpdate(
        sequence=sequence,
        kind=pb.UPDATE_KIND_POSITION_MODIFIED,
        event_id=f"F{sequence}",
        position=pb.Position(
            account_id="A1",
            strategy_id=strategy_id,
            instrument_id="AAPL",
            level=level,
            quantity=str(sequence),
            last_sequence=sequence,
        ),
    )


def heartbeat(sequence: int) -> pb.PortfolioUpdate:
    return pb.PortfolioUpdate(sequence=sequence, kind=pb.UPDATE_KIND_HEARTBEAT)


def send(*messages: pb.PortfolioUpdate, then: grpc.StatusCode | None = None) -> SubscribeBehaviour:
    """Sends messages, then ends the stream with `then` (None: a clean end)."""

    def behaviour(
        request: pb.SubscribeUpdatesRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.PortfolioUpdate]:
        yield from messages
        if then is not None:
            context.abort(then, f"stream ended: {then.name}")

    return behaviour


def rich_abort(context: grpc.ServicerContext, code: grpc.StatusCode, field_name: str) -> None:
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=field_name, description="must not be empty"
                )
            ]
        )
    )
    status = status_pb2.Status(code=code.value[0], message="invalid request", details=[detail])
    context.abort_with_status(rpc_status.to_status(status))


# ---------------------------------------------------------------------------------------------
# Driving both clients the same way


class Driver:
    """Runs one operation with a fresh client; the two flavours must behave alike."""

    flavour = ""

    def __init__(self, address: str) -> None:
        self.address = address

    def ingest(self, events: list[Fill], **kwargs: Any) -> list[EventAck]:
        raise NotImplementedError

    def take(
        self, count: int, **kwargs: Any
    ) -> tuple[list[PortfolioUpdate], PortfolioError | None]:
        """Up to `count` updates, and the error that ended the subscription, if any."""
        raise NotImplementedError

    def unary(self, name: str, *args: Any, client_timeout: float = 5.0, **kwargs: Any) -> Any:
        raise NotImplementedError

    def positions(self, **kwargs: Any) -> list[Position]:
        raise NotImplementedError


class SyncDriver(Driver):
    flavour = "sync"

    def ingest(self, events: list[Fill], **kwargs: Any) -> list[EventAck]:
        with PortfolioClient(self.address, backoff=FAST) as client:
            return client.ingest(events, **kwargs)

    def take(
        self, count: int, **kwargs: Any
    ) -> tuple[list[PortfolioUpdate], PortfolioError | None]:
        updates: list[PortfolioUpdate] = []
        with PortfolioClient(self.address, backoff=FAST) as client:
            try:
                with contextlib.closing(client.subscribe(**kwargs)) as stream:
                    for update in stream:
                        updates.append(update)
                        if len(updates) == count:
                            break
            except PortfolioError as error:
                return updates, error
        return updates, None

    def unary(self, name: str, *args: Any, client_timeout: float = 5.0, **kwargs: Any) -> Any:
        with PortfolioClient(self.address, timeout=client_timeout, backoff=FAST) as client:
            return getattr(client, name)(*args, **kwargs)

    def positions(self, **kwargs: Any) -> list[Position]:
        with PortfolioClient(self.address, backoff=FAST) as client:
            return list(client.iter_positions(**kwargs))


class AsyncDriver(Driver):
    flavour = "aio"

    def ingest(self, events: list[Fill], **kwargs: Any) -> list[EventAck]:
        async def run() -> list[EventAck]:
            async with AsyncPortfolioClient(self.address, backoff=FAST) as client:
                return await client.ingest(events, **kwargs)

        return asyncio.run(run())

    def take(
        self, count: int, **kwargs: Any
    ) -> tuple[list[PortfolioUpdate], PortfolioError | None]:
        updates: list[PortfolioUpdate] = []

        async def run() -> PortfolioError | None:
            async with AsyncPortfolioClient(self.address, backoff=FAST) as client:
                try:
                    async with contextlib.aclosing(client.subscribe(**kwargs)) as stream:
                        async for update in stream:
                            updates.append(update)
                            if len(updates) == count:
                                break
                except PortfolioError as error:
                    return error
            return None

        return updates, asyncio.run(run())

    def unary(self, name: str, *args: Any, client_timeout: float = 5.0, **kwargs: Any) -> Any:
        async def run() -> Any:
            async with AsyncPortfolioClient(
                self.address, timeout=client_timeout, backoff=FAST
            ) as client:
                return await getattr(client, name)(*args, **kwargs)

        return asyncio.run(run())

    def positions(self, **kwargs: Any) -> list[Position]:
        async def run() -> list[Position]:
            async with AsyncPortfolioClient(self.address, backoff=FAST) as client:
                return [p async for p in client.iter_positions(**kwargs)]

        return asyncio.run(run())


@pytest.fixture
def service() -> FakeService:
    return FakeService()


@pytest.fixture(params=[SyncDriver, AsyncDriver], ids=["sync", "aio"])
def driver(request: pytest.FixtureRequest, service: FakeService) -> Iterator[Driver]:
    server = grpc.server(ThreadPoolExecutor(max_workers=8))
    portfolio_pb2_grpc.add_PortfolioManagerServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield request.param(f"127.0.0.1:{port}")
    finally:
        server.stop(grace=None).wait()


def fills(count: int) -> list[Fill]:
    return [
        Fill(
            fill_id=f"F{n}",
            account_id="A1",
            strategy_id="S1",
            instrument_id="AAPL",
            side=Side.BUY,
            quantity=Decimal(n),
            price=Decimal("10.25"),
            timestamp=T0,
        )
        for n in range(1, count + 1)
    ]


def event_ids(stream: list[pb.IngestRequest]) -> list[list[str]]:
    return [[e.fill.fill_id for e in request.events] for request in stream]


# ---------------------------------------------------------------------------------------------
# Ingest


def test_ingest_resends_unacked_events_after_the_stream_breaks(
    driver: Driver, service: FakeService
) -> None:
    # Stream 1 applies F1..F4 but the ack for F3, F4 is lost; stream 2 must resend F3..F5.
    service.ingest_script = [apply_then_fail(2, 1, grpc.StatusCode.UNAVAILABLE), ack_all]
    acks = driver.ingest(fills(5), batch_size=2)
    assert len(service.ingest_streams) == 2
    assert event_ids(service.ingest_streams[1]) == [["F3", "F4"], ["F5"]]
    assert [(a.event_id, a.sequence, a.result) for a in acks] == [
        ("F1", 1, EventResult.ACCEPTED),
        ("F2", 2, EventResult.ACCEPTED),
        ("F3", 3, EventResult.DUPLICATE),
        ("F4", 4, EventResult.DUPLICATE),
        ("F5", 5, EventResult.ACCEPTED),
    ]


def test_ingest_gives_up_after_max_attempts(driver: Driver, service: FakeService) -> None:
    broken = apply_then_fail(1, 1, grpc.StatusCode.UNAVAILABLE)
    service.ingest_script = [broken, broken, ack_all]
    events = fills(5)
    with pytest.raises(IngestIncomplete) as caught:
        driver.ingest(events, batch_size=2, max_attempts=2)
    assert len(service.ingest_streams) == 2
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert [a.event_id for a in caught.value.acks] == ["F1", "F2", "F3", "F4"]
    assert caught.value.unacked == events[4:]


def test_ingest_does_not_retry_a_permanent_failure(driver: Driver, service: FakeService) -> None:
    # A permanent failure repeats on every stream, as a real service's would. When the abort
    # races the client's own write, grpc.aio reports only a local send failure, which the SDK
    # retries (safe: events are idempotent); the next stream then shows the real status.
    service.ingest_script = [fail_with(grpc.StatusCode.PERMISSION_DENIED)] * 3
    with pytest.raises(PortfolioError) as caught:
        driver.ingest(fills(3), max_attempts=3)
    assert not isinstance(caught.value, IngestIncomplete)
    assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert len(service.ingest_streams) < 3


def test_ingest_raises_when_a_batch_is_refused(driver: Driver, service: FakeService) -> None:
    service.ingest_script = [refuse_batches]
    with pytest.raises(PortfolioError, match="too many events") as caught:
        driver.ingest(fills(3))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_ingest_pipelines_batches(driver: Driver, service: FakeService) -> None:
    service.ingest_script = [read_everything_first]
    acks = driver.ingest(fills(5), batch_size=1, max_attempts=1, timeout=5)
    assert [a.sequence for a in acks] == [1, 2, 3, 4, 5]
    assert event_ids(service.ingest_streams[0]) == [["F1"], ["F2"], ["F3"], ["F4"], ["F5"]]


def test_ingest_treats_a_stream_ended_early_as_broken(driver: Driver, service: FakeService) -> None:
    service.ingest_script = [ack_first_then_end, ack_all]
    acks = driver.ingest(fills(3), batch_size=1)
    assert [(a.event_id, a.sequence) for a in acks] == [("F1", 1), ("F2", 2), ("F3", 3)]
    assert event_ids(service.ingest_streams[1]) == [["F2"], ["F3"]]


def test_ingest_of_nothing_opens_no_stream(driver: Driver, service: FakeService) -> None:
    assert driver.ingest([]) == []
    assert service.ingest_streams == []


# ---------------------------------------------------------------------------------------------
# Subscriptions


def test_subscription_resumes_mid_group_and_yields_each_update_once(
    driver: Driver, service: FakeService
) -> None:
    service.subscribe_script = [
        # Breaks between the two updates of sequence 2.
        send(
            position_update(1, "S1"),
            position_update(1, ""),
            position_update(2, "S1"),
            then=grpc.StatusCode.UNAVAILABLE,
        ),
        # The service drops this slow consumer right after sequence 3's first update.
        send(
            position_update(2, "S1"),
            position_update(2, ""),
            position_update(3, "S1"),
            then=grpc.StatusCode.RESOURCE_EXHAUSTED,
        ),
        # A heartbeat confirms sequence 3 is complete; then the stream just ends.
        send(position_update(3, "S1"), heartbeat(3)),
        # By now sequence 4 has left the replay buffer.
        send(then=grpc.StatusCode.OUT_OF_RANGE),
    ]
    updates, error = driver.take(100, account_id="A1", from_sequence=1)
    assert [(u.sequence, u.position.strategy_id if u.position else None) for u in updates] == [
        (1, "S1"),
        (1, ""),
        (2, "S1"),
        (2, ""),
        (3, "S1"),
    ]
    assert isinstance(error, ResyncRequired)
    assert [r.from_sequence for r in service.subscribe_requests] == [1, 2, 3, 4]
    assert all(r.account_id == "A1" for r in service.subscribe_requests)


def test_heartbeats_are_yielded_only_when_asked(driver: Driver, service: FakeService) -> None:
    script = [
        send(heartbeat(0), position_update(1, "S1"), heartbeat(1), position_update(2, "S1")),
        send(then=grpc.StatusCode.PERMISSION_DENIED),
    ]
    service.subscribe_script = list(script)
    updates, error = driver.take(100)
    assert [u.sequence for u in updates] == [1, 2]
    assert isinstance(error, PortfolioError)
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    assert [r.from_sequence for r in service.subscribe_requests] == [0, 2]

    service.subscribe_script = list(script)
    service.subscribe_requests.clear()
    updates, _ = driver.take(100, include_heartbeats=True)
    assert [(u.sequence, u.kind) for u in updates] == [
        (0, UpdateKind.HEARTBEAT),
        (1, UpdateKind.POSITION_MODIFIED),
        (1, UpdateKind.HEARTBEAT),
        (2, UpdateKind.POSITION_MODIFIED),
    ]


def test_subscription_without_reconnect_raises(driver: Driver, service: FakeService) -> None:
    service.subscribe_script = [
        send(position_update(5, "S1"), then=grpc.StatusCode.UNAVAILABLE),
        send(position_update(5, "S1"), position_update(6, "S1")),
    ]
    updates, error = driver.take(100, from_sequence=5, reconnect=False)
    assert [u.sequence for u in updates] == [5]
    assert error is not None
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert len(service.subscribe_requests) == 1


def test_subscription_passes_its_filters(driver: Driver, service: FakeService) -> None:
    service.subscribe_script = [send(position_update(1, "S1"))]
    updates, error = driver.take(
        1, account_id="A1", strategy_id="S1", instrument_id="AAPL", from_sequence=1
    )
    assert error is None
    assert len(updates) == 1
    (request,) = service.subscribe_requests
    assert (request.account_id, request.strategy_id, request.instrument_id) == ("A1", "S1", "AAPL")
    assert request.level == pb.POSITION_LEVEL_UNSPECIFIED


# ---------------------------------------------------------------------------------------------
# Unary calls


def test_field_violations_reach_the_caller(driver: Driver, service: FakeService) -> None:
    service.unary["GetPosition"] = lambda request, context: rich_abort(
        context, grpc.StatusCode.INVALID_ARGUMENT, "account_id"
    )
    with pytest.raises(PortfolioError) as caught:
        driver.unary("get_position", "", "AAPL", "S1")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.field_violations == [("account_id", "must not be empty")]


def test_calls_have_a_deadline_by_default(driver: Driver, service: FakeService) -> None:
    def slow(request: pb.GetPositionRequest, context: grpc.ServicerContext) -> pb.Position:
        time.sleep(0.5)
        return pb.Position(account_id="A1", instrument_id="AAPL", quantity="7")

    service.unary["GetPosition"] = slow
    with pytest.raises(PortfolioError) as caught:
        driver.unary("get_position", "A1", "AAPL", client_timeout=0.1)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    position = driver.unary("get_position", "A1", "AAPL", client_timeout=0.1, timeout=5)
    assert position.quantity == Decimal(7)
    assert not service.unary_requests[-1].HasField("strategy_id")


def test_query_returns_the_type_its_request_names(driver: Driver, service: FakeService) -> None:
    service.unary["Query"] = lambda request, context: pb.PortfolioResponse(
        position=pb.Position(account_id="A1", instrument_id="AAPL", quantity="-30", avg_cost="9")
    )
    position = driver.unary(
        "query", PositionQuery(account_id="A1", instrument_id="AAPL", strategy_id="S1")
    )
    assert isinstance(position, Position)
    assert (position.quantity, position.avg_cost) == (Decimal(-30), Decimal(9))
    assert service.unary_requests[-1].get_position.strategy_id == "S1"
    with pytest.raises(ProtocolViolation):
        driver.unary("query", StrategyPortfolioQuery(strategy_id="S1"))


def test_iter_positions_follows_page_tokens(driver: Driver, service: FakeService) -> None:
    rows = {"": ("p2", ["AAPL", "MSFT"]), "p2": ("p3", ["NVDA"]), "p3": ("", ["TSLA"])}

    def list_positions(
        request: pb.ListPositionsRequest, context: grpc.ServicerContext
    ) -> pb.ListPositionsResponse:
        next_token, instruments = rows[request.page_token]
        return pb.ListPositionsResponse(
            positions=[
                pb.Position(account_id="A1", strategy_id="S1", instrument_id=i, quantity="1")
                for i in instruments
            ],
            next_page_token=next_token,
        )

    service.unary["ListPositions"] = list_positions
    positions = driver.positions(account_id="A1", page_size=2, include_flat=True)
    assert [p.instrument_id for p in positions] == ["AAPL", "MSFT", "NVDA", "TSLA"]
    assert [r.page_token for r in service.unary_requests] == ["", "p2", "p3"]
    assert all(
        (r.account_id, r.page_size, r.include_flat, r.level)
        == ("A1", 2, True, pb.POSITION_LEVEL_STRATEGY)
        for r in service.unary_requests
    )
