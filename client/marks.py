"""Market prices in: instrument marks and FX rates for the service's `StreamMarks`.

Marks are market data, not events of record: the service applies each batch at once, whole or
not at all, and keeps the latest price per instrument (and rate per currency pair). A mark older
than the one it holds is counted stale and ignored, so resending is always safe, and a feed that
loses a batch simply sends newer prices next.

    from client.marks import FxRate, MarkPrice

    acks = client.send_marks(
        marks=[MarkPrice(instrument_id="AAPL", mark=Decimal("190.12"), timestamp=now)],
        fx_rates=[FxRate(base="EUR", quote="USD", rate=Decimal("1.0842"), timestamp=now)],
    )
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeVar

import grpc

from client.call_status import EndedWith
from client.errors import PortfolioError, from_rpc_error
from client.models import FxRate, MarkPrice
from client.wire import format_decimal, to_timestamp
from portfolio.v1 import portfolio_pb2 as pb

__all__ = [
    "DEFAULT_MARK_BATCH",
    "MAX_MARK_BATCH",
    "FxRate",
    "MarkAck",
    "MarkPrice",
    "mark_batches",
    "stream_batches",
    "stream_batches_async",
]

#: The service refuses a batch of more marks and rates than this, as a whole.
MAX_MARK_BATCH = 10_000
DEFAULT_MARK_BATCH = 1_000

#: How long a failed write waits for the call's real status (it is on its way: the write failed
#: because the call had ended) before reporting the transport as gone.

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class MarkAck:
    """The service's answer to one batch."""

    batch_id: str
    marks_applied: int = 0
    #: Older than what the service holds: ignored (not an error).
    marks_stale: int = 0
    fx_rates_applied: int = 0
    fx_rates_stale: int = 0
    #: Set when the batch was refused whole (names the entry and field): nothing applied.
    rejected_reason: str = ""

    @property
    def rejected(self) -> bool:
        return bool(self.rejected_reason)


def _optional(value: Decimal | None) -> str:
    return "" if value is None else format_decimal(value)


def mark_to_proto(mark: MarkPrice) -> pb.MarkPrice:
    return pb.MarkPrice(
        instrument_id=mark.instrument_id,
        mark=_optional(mark.mark),
        bid=_optional(mark.bid),
        ask=_optional(mark.ask),
        last=_optional(mark.last),
        timestamp=to_timestamp(mark.timestamp),
    )


def fx_rate_to_proto(rate: FxRate) -> pb.FxRate:
    return pb.FxRate(
        base_currency=rate.base,
        quote_currency=rate.quote,
        rate=format_decimal(rate.rate),
        timestamp=to_timestamp(rate.timestamp),
    )


def ack_from_proto(message: pb.MarkAck) -> MarkAck:
    return MarkAck(
        batch_id=message.batch_id,
        marks_applied=message.marks_applied,
        marks_stale=message.marks_stale,
        fx_rates_applied=message.fx_rates_applied,
        fx_rates_stale=message.fx_rates_stale,
        rejected_reason=message.batch_rejected_reason,
    )


def mark_batches(
    marks: Iterable[MarkPrice] = (),
    fx_rates: Iterable[FxRate] = (),
    *,
    batch_size: int = DEFAULT_MARK_BATCH,
) -> list[pb.MarkBatch]:
    """Marks then rates, `batch_size` entries a batch, ids `<random>-<n>` (n from 0).
    Conversion errors (a naive timestamp, a non-finite amount) raise here, before sending."""
    if not 1 <= batch_size <= MAX_MARK_BATCH:
        raise ValueError(f"batch_size must be within 1..{MAX_MARK_BATCH}, got {batch_size}")
    entries: Iterator[pb.MarkPrice | pb.FxRate] = itertools.chain(
        (mark_to_proto(m) for m in marks), (fx_rate_to_proto(r) for r in fx_rates)
    )
    prefix = uuid.uuid4().hex[:12]
    batches: list[pb.MarkBatch] = []
    for number in itertools.count():
        chunk = list(itertools.islice(entries, batch_size))
        if not chunk:
            break
        batch = pb.MarkBatch(batch_id=f"{prefix}-{number}")
        for entry in chunk:
            if isinstance(entry, pb.MarkPrice):
                batch.marks.append(entry)
            else:
                batch.fx_rates.append(entry)
        batches.append(batch)
    return batches


def _ended_early(received: int, sent: int) -> PortfolioError:
    return PortfolioError(
        grpc.StatusCode.UNAVAILABLE,
        f"the marks stream ended after {received} of {sent} batch answers",
    )


def stream_batches(
    method: grpc.StreamStreamMultiCallable[pb.MarkBatch, pb.MarkAck],
    batches: Sequence[pb.MarkBatch],
    timeout: float,
) -> list[MarkAck]:
    """Streams the batches on one call and returns the answers in order (blocking). A failed
    call raises PortfolioError; resending everything is safe (stale marks are ignored)."""
    if not batches:
        return []
    try:
        acks = [ack_from_proto(m) for m in method(iter(batches), timeout=timeout)]
    except grpc.RpcError as error:
        raise from_rpc_error(error) from error
    if len(acks) < len(batches):
        raise _ended_early(len(acks), len(batches))
    return acks


async def stream_batches_async(
    method: grpc.aio.StreamStreamMultiCallable[pb.MarkBatch, pb.MarkAck],
    batches: Sequence[pb.MarkBatch],
    timeout: float,
) -> list[MarkAck]:
    """`stream_batches` for grpc.aio: batches are written while answers are read."""
    if not batches:
        return []
    call = method(timeout=timeout)
    ended = EndedWith(call)
    writer = asyncio.create_task(_write_all(call, batches))
    acks: list[MarkAck] = []
    try:
        async for message in _answers(call):
            acks.append(ack_from_proto(message))
    except grpc.RpcError as error:
        raise from_rpc_error(await ended.instead_of(error)) from error
    finally:
        writer.cancel()
        call.cancel()
        await asyncio.gather(writer, return_exceptions=True)
    if len(acks) < len(batches):
        raise _ended_early(len(acks), len(batches))
    return acks


async def _answers(
    call: grpc.aio.StreamStreamCall[pb.MarkBatch, pb.MarkAck],
) -> AsyncIterator[pb.MarkAck]:
    while True:
        message = await call.read()
        if not isinstance(message, pb.MarkAck):
            return  # grpc.aio.EOF
        yield message


async def _write_all(
    call: grpc.aio.StreamStreamCall[pb.MarkBatch, pb.MarkAck],
    batches: Sequence[pb.MarkBatch],
) -> None:
    try:
        for batch in batches:
            await call.write(batch)
        await call.done_writing()
    except (grpc.RpcError, asyncio.InvalidStateError):
        return  # the call ended early; the reading side reports how
