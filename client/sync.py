"""The blocking client, for scripts, notebooks and threaded services."""

from __future__ import annotations

import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar, cast

import grpc

from client import wire
from client._calls import SyncCalls
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
from portfolio.v1 import portfolio_pb2_grpc

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
_Answer = TypeVar("_Answer")


class PortfolioClient(SyncCalls):
    """A connection to the portfolio manager.

    Use it as a context manager (or call `close`): it owns its channel. Every unary call has a
    deadline, the client's `timeout` unless the call passes its own; an `ingest` attempt has one
    too, since a stuck service must not hang the execution relay. Subscriptions have none: they
    are meant to live for hours, and the service's heartbeats show they are alive.

    Calls safe to send twice (reads, queries, definitions) are retried by the channel on
    UNAVAILABLE within their deadline (see `client.retry`); the others raise at once.
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
    # Reads (each unary RPC's method is generated into SyncCalls from client.rpcs)

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
        """Sends events (fills, order statuses, commission amendments, cash transfers) and
        returns their acks, in the order of `events`.

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
        call = self._stub.Ingest(iter(requests), timeout=timeout, metadata=trace_metadata())
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
        *,
        include_balances: bool = False,
        include_marks: bool = False,
        include_reconciliations: bool = False,
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
        yielded one update at a time, in order, as ever. `include_balances`, `include_marks`
        and `include_reconciliations` add BALANCE, MARK (coalesced, never replayed) and
        RECONCILIATION updates of the matching accounts and instruments.
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

    def _call(self, rpc: UnaryRpc, request: Request[_Answer], timeout: float | None) -> _Answer:
        """Sends one request value of the table (encoded before anything is sent, so a bad
        amount fails here) under the client's deadline."""
        message = rpc.encode(request)
        method: grpc.UnaryUnaryMultiCallable[Any, Any] = getattr(self._stub, rpc.rpc)
        return cast(_Answer, rpc.decode(self._unary(method, message, timeout)))

    def _walk(self, rpc: UnaryRpc, request: Request[Any], timeout: float | None) -> Iterator[Any]:
        """Every item of a paged listing (the generated `iter_*` methods), one call a page under
        the deadline, on until the service gives no next page token."""
        following: Request[Any] | None = request
        while following is not None:
            page = self._call(rpc, following, timeout)
            yield from rpc.page_items(page)
            following = rpc.next_request(following, page)

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
