"""The ingest bookkeeping shared by the sync and asyncio clients: no transport in here.

An `IngestSession` follows one `ingest` call across stream attempts. Each attempt packs the
events still without an ack into batches; the service answers every batch with one response,
in order, holding one ack per event in event order. Because the service is idempotent by event
id, resending an event whose ack was lost is safe: a second copy is acked DUPLICATE with its
original sequence.
"""

from __future__ import annotations

import itertools
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import grpc

from client import wire
from client.errors import IngestIncomplete, PortfolioError, ProtocolViolation
from client.models import EventAck, ExecutionEvent
from portfolio.v1 import portfolio_pb2 as pb

#: The most events the service takes in one IngestRequest.
MAX_BATCH_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class Batch:
    """One IngestRequest and where its events sit in the caller's input."""

    batch_id: str
    #: Indices into the session's events, in the order they were packed.
    indices: tuple[int, ...]
    request: pb.IngestRequest


class IngestSession:
    """The acks of one `ingest` call, matched to its events across stream attempts."""

    def __init__(self, events: Iterable[ExecutionEvent], *, batch_size: int) -> None:
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be 1..{MAX_BATCH_SIZE}, got {batch_size}")
        self._events: list[ExecutionEvent] = list(events)
        # Encode up front: a bad amount or a naive timestamp fails before anything is sent.
        self._encoded = [wire.event_to_proto(e) for e in self._events]
        self._batch_size = batch_size
        self._acks: list[EventAck | None] = [None] * len(self._events)
        self._in_flight: deque[Batch] = deque()
        self._session_id = uuid.uuid4().hex[:12]
        self._batch_numbers = itertools.count(1)
        self.attempts = 0

    @property
    def done(self) -> bool:
        """True once every event has an ack."""
        return all(ack is not None for ack in self._acks)

    def start_attempt(self) -> list[Batch]:
        """The batches for a new stream: every event without an ack, in input order.

        Batches of an earlier attempt still waiting for an answer are forgotten: that stream is
        gone, and their events are packed again here.
        """
        self.attempts += 1
        self._in_flight.clear()
        pending = [i for i, ack in enumerate(self._acks) if ack is None]
        batches = []
        for start in range(0, len(pending), self._batch_size):
            indices = tuple(pending[start : start + self._batch_size])
            batch_id = f"{self._session_id}-{self.attempts}-{next(self._batch_numbers)}"
            request = pb.IngestRequest(
                batch_id=batch_id, events=[self._encoded[i] for i in indices]
            )
            batches.append(Batch(batch_id, indices, request))
        self._in_flight.extend(batches)
        return batches

    def record(self, response: pb.IngestResponse) -> None:
        """Matches one response to the oldest batch still waiting for an answer.

        Raises PortfolioError(INVALID_ARGUMENT) when the service refused the batch as a whole,
        and ProtocolViolation when the response does not fit the batch it answers.
        """
        if not self._in_flight:
            raise ProtocolViolation(f"ingest response {response.batch_id!r} matches no batch")
        batch = self._in_flight.popleft()
        if response.batch_id != batch.batch_id:
            raise ProtocolViolation(
                f"ingest response for batch {response.batch_id!r}, expected {batch.batch_id!r}"
            )
        if response.batch_rejected_reason and not response.acks:
            raise PortfolioError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"batch {batch.batch_id} refused: {response.batch_rejected_reason}",
            )
        if len(response.acks) != len(batch.indices):
            raise ProtocolViolation(
                f"batch {batch.batch_id} of {len(batch.indices)} events got "
                f"{len(response.acks)} acks"
            )
        acks = [wire.ack_from_proto(a) for a in response.acks]
        for index, ack in zip(batch.indices, acks, strict=True):
            expected = self._events[index].event_id
            if ack.event_id != expected:
                raise ProtocolViolation(
                    f"batch {batch.batch_id}: ack for {ack.event_id!r} where {expected!r} was sent"
                )
        for index, ack in zip(batch.indices, acks, strict=True):
            self._acks[index] = ack

    def acks(self) -> list[EventAck]:
        """Every ack, in the order of the input events; only once `done`."""
        if not self.done:
            raise RuntimeError("ingest session is not complete")
        return [ack for ack in self._acks if ack is not None]

    def incomplete(self, code: grpc.StatusCode, message: str) -> IngestIncomplete:
        """The error to raise when giving up, carrying what was acked and what was not."""
        acked = [ack for ack in self._acks if ack is not None]
        unacked = [e for e, ack in zip(self._events, self._acks, strict=True) if ack is None]
        return IngestIncomplete(
            code,
            f"gave up after {self.attempts} attempts: {message}",
            acks=acked,
            unacked=unacked,
        )


def ended_early() -> PortfolioError:
    """Why an attempt that ended cleanly still counts as failed: acks are missing."""
    return PortfolioError(
        grpc.StatusCode.UNAVAILABLE, "the ingest stream ended before every batch was acked"
    )
