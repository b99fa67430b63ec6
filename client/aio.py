"""The asyncio client: the same calls as `PortfolioClient`, for event-loop services."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar, cast

import grpc

from client import wire
from client._calls import AsyncCalls
from client.batching import IngestSession, ended_early
from client.call_status import EndedWith
from client.channel import channel_credentials
from client.errors import PortfolioError, from_rpc_error
from client.marks import (
    DEFAULT_MARK_BATCH,
    FxRate,
    MarkAck,
    MarkPrice,
    mark_batches,
    stream_batches_async,
)
from client.models import EventAck, ExecutionEvent, PortfolioUpdate, PositionLevel
from client.queries import Query, R
from client.requests import Request
from client.resume import ResumeCursor
from client.retry import (
    DEFAULT_TIMEOUT,
    INGEST_RETRY_CODES,
    SUBSCRIBE_RESUME_CODES,
    Backoff,
    retry_channel_options,
)
from client.rpcs import IDEMPOTENT_RPCS, SERVICE, UnaryRpc
from client.trace_context import trace_metadata
from portfolio.v1 import portfolio_pb2, portfolio_pb2_grpc

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
_Answer = TypeVar("_Answer")


class AsyncPortfolioClient(AsyncCalls):
    """A grpc.aio connection to the portfolio manager.

    Use it as an async context manager (or await `close`): it owns its channel. Deadlines work
    as in `PortfolioClient`: every unary call and every ingest attempt has one, subscriptions
    have none; so do retries: the channel retries calls safe to send twice on UNAVAILABLE.
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
        options = retry_channel_options(channel_options, SERVICE, IDEMPOTENT_RPCS)
        self._channel = (
            grpc.aio.insecure_channel(target, options=options)
            if credentials is None
            else grpc.aio.secure_channel(target, credentials, options=options)
        )
        self._stub = portfolio_pb2_grpc.PortfolioManagerStub(self._channel)

    async def close(self) -> None:
        """Closes the channel; calls still running fail with CANCELLED."""
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # -----------------------------------------------------------------------------------------
    # Reads (each unary RPC's method is generated into AsyncCalls from client.rpcs)

    async def query(self, request: Query[R], *, timeout: float | None = None) -> R:
        """Any read through the typed Query RPC; the answer's type follows the request's."""
        response = await self._unary(self._stub.Query, wire.query_to_proto(request), timeout)
        return wire.query_result(request, response)

    # -----------------------------------------------------------------------------------------
    # Ingest

    async def ingest(
        self,
        events: Iterable[ExecutionEvent],
        *,
        batch_size: int = 100,
        max_attempts: int = 3,
        timeout: float | None = None,
    ) -> list[EventAck]:
        """Sends events (fills, order statuses, commission amendments, cash transfers) and
        returns their acks, in the order of `events`.

        Same semantics as `PortfolioClient.ingest`: batches are written while acks are read,
        REJECTED is an answer rather than an exception, transient failures resend the unacked
        events (up to `max_attempts` streams, then IngestIncomplete), and `timeout` is the
        deadline of each attempt.
        """
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        session = IngestSession(events, batch_size=batch_size)
        while not session.done:
            if session.attempts:
                await asyncio.sleep(self._backoff.delay(session.attempts))
            failure = await self._ingest_attempt(session, self._deadline(timeout))
            if session.done:
                break
            if session.attempts >= max_attempts:
                raise session.incomplete(failure.code, failure.message)
        return session.acks()

    async def _ingest_attempt(self, session: IngestSession, timeout: float) -> PortfolioError:
        """One stream; returns why it ended short of all acks (retryable), else raises."""
        requests = [batch.request for batch in session.start_attempt()]
        call = self._stub.Ingest(timeout=timeout, metadata=trace_metadata())
        ended = EndedWith(call)
        writer = asyncio.create_task(_send_all(call, requests))
        try:
            while True:
                response = await call.read()
                if not isinstance(response, portfolio_pb2.IngestResponse):
                    break  # grpc.aio.EOF: the service closed the stream
                session.record(response)
        except grpc.RpcError as error:
            failure = from_rpc_error(await ended.instead_of(error))
            if failure.code not in INGEST_RETRY_CODES:
                raise failure from error
            return failure
        finally:
            writer.cancel()
            call.cancel()
            await asyncio.gather(writer, return_exceptions=True)
        return ended_early()

    # -----------------------------------------------------------------------------------------
    # Live updates

    async def subscribe(
        self,
        account_id: str = "",
        strategy_id: str = "",
        instrument_id: str = "",
        level: PositionLevel = PositionLevel.UNSPECIFIED,
        from_sequence: int = 0,
        include_heartbeats: bool = False,
        reconnect: bool = True,
        *,
        include_balances: bool = False,
        include_marks: bool = False,
        include_reconciliations: bool = False,
    ) -> AsyncGenerator[PortfolioUpdate, None]:
        """Live updates; same semantics as `PortfolioClient.subscribe`.

        To stop early and release the stream at once, iterate inside
        `contextlib.aclosing(client.subscribe(...))`.
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
                include_balances=include_balances,
                include_marks=include_marks,
                include_reconciliations=include_reconciliations,
            )
            cursor.new_stream()
            call = self._stub.SubscribeUpdates(request)
            try:
                async for message in call:
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
            await asyncio.sleep(self._backoff.delay(failures))

    # -----------------------------------------------------------------------------------------
    # Marks

    async def send_marks(
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
        return await stream_batches_async(self._stub.StreamMarks, batches, self._deadline(timeout))

    # -----------------------------------------------------------------------------------------

    def _deadline(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    async def _call(
        self, rpc: UnaryRpc, request: Request[_Answer], timeout: float | None
    ) -> _Answer:
        """Sends one request value of the table (encoded before anything is sent, so a bad
        amount fails here) under the client's deadline."""
        message = rpc.encode(request)
        method: grpc.aio.UnaryUnaryMultiCallable[Any, Any] = getattr(self._stub, rpc.rpc)
        return cast(_Answer, rpc.decode(await self._unary(method, message, timeout)))

    async def _walk(
        self, rpc: UnaryRpc, request: Request[Any], timeout: float | None
    ) -> AsyncIterator[Any]:
        """Every item of a paged listing (the generated `iter_*` methods), one call a page under
        the deadline, on until the service gives no next page token."""
        following: Request[Any] | None = request
        while following is not None:
            page = await self._call(rpc, following, timeout)
            for item in rpc.page_items(page):
                yield item
            following = rpc.next_request(following, page)

    async def _unary(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[_Req, _Resp],
        request: _Req,
        timeout: float | None,
    ) -> _Resp:
        try:
            return await method(request, timeout=self._deadline(timeout))
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error


async def _send_all(
    call: grpc.aio.StreamStreamCall[portfolio_pb2.IngestRequest, portfolio_pb2.IngestResponse],
    requests: list[portfolio_pb2.IngestRequest],
) -> None:
    """Writes every batch without waiting for acks, then half-closes the stream."""
    try:
        for request in requests:
            await call.write(request)
        await call.done_writing()
    except (grpc.RpcError, asyncio.InvalidStateError):
        # The call ended early; the reading side reports how.
        return
