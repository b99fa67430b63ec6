"""The update stream's messages: one per change, encoded once and shared by subscribers; for a
subscriber that asked for batches, several of those encodings framed into one message.

A write to a stream costs the service about 40-50 us of CPU for a small message, so at hundreds
of updates a second per subscriber the count of writes is most of the cost of fan-out; a batch
of hundreds of updates also costs by its bytes, and takes its share of the write budget so.
A batch is built from the bytes each update already has (a repeated field is its elements'
encodings, each behind its tag and length), so batching encodes nothing again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from portfolio.v1 import portfolio_pb2 as pb
from server.api.framing import length, varint
from server.api.wire import fill_to_proto, position_to_proto, status_to_proto
from server.api.wire_reconciliation import reconciliation_to_proto
from server.api.wire_reference import balance_to_proto, mark_to_proto, order_to_proto
from server.application.publishing import (
    BalanceChanged,
    MarkChanged,
    OrderStatusChanged,
    PortfolioChange,
    PositionChanged,
    ReconciliationChanged,
)
from server.application.subscriptions import Published
from server.domain.events import Fill
from server.domain.position import ChangeKind
from server.domain.restatement import Placement

UPDATE_KIND = {
    ChangeKind.OPENED: pb.UPDATE_KIND_POSITION_OPENED,
    ChangeKind.MODIFIED: pb.UPDATE_KIND_POSITION_MODIFIED,
    ChangeKind.CLOSED: pb.UPDATE_KIND_POSITION_CLOSED,
}


# A batch message's caps: whichever comes first (an update larger than the byte cap goes alone).
BATCH_MAX_UPDATES = 500
BATCH_MAX_BYTES = 1024 * 1024

_BATCH_ELEMENT_TAG = bytes([11 << 3 | 2])  # PortfolioUpdate.batch (11), length-delimited
_SEQUENCE_TAG = bytes([1 << 3])  # PortfolioUpdate.sequence (1), varint
_KIND_BATCH = bytes([2 << 3, pb.UPDATE_KIND_BATCH])  # PortfolioUpdate.kind (2) = BATCH


class EncodedUpdate:
    """An update's wire form, made once and shared by every stream: kept framed as an element
    of a batch (tag, length, the update's bytes), so that a batch is one join of elements;
    `message` is the update on its own."""

    __slots__ = ("element", "start")

    def __init__(self, message: bytes) -> None:
        head = _BATCH_ELEMENT_TAG + length(len(message))
        self.element = head + message
        self.start = len(head)

    @property
    def message(self) -> bytes:
        return self.element[self.start :]


# A write's fixed cost buys about as much of the service's CPU as moving this many bytes of
# a message (scripts/benchmark.py --only fanout: batched fan-out's cost follows its bytes).
BYTES_PER_WRITE = 32 * 1024


def write_cost(message: bytes) -> float:
    """A message's share of the fan-out write budget, in writes' worth of CPU."""
    return 1 + len(message) / BYTES_PER_WRITE


def encode_update(change: PortfolioChange) -> EncodedUpdate:
    if isinstance(change, PositionChanged):  # most updates: two per fill
        return EncodedUpdate(position_update_bytes(change))
    return EncodedUpdate(update_to_proto(change).SerializeToString())


_POSITION_TAG = bytes([4 << 3 | 2])  # PortfolioUpdate.position (4), length-delimited
_FILL_TAG = bytes([6 << 3 | 2])  # PortfolioUpdate.fill (6), length-delimited

# The fill last encoded, with its `corrects` and its bytes: a fill moves two rows (its
# strategy's and its account's), so the second update reuses the first one's fill.
_last_fill: tuple[Fill | None, str, bytes] = (None, "", b"")


def position_update_bytes(change: PositionChanged) -> bytes:
    """`update_to_proto(change).SerializeToString()`, the same bytes, made from parts: a
    message serializes its fields in number order, so the head (sequence, kind, event_id),
    the position (4), the fill (6) and the placement (12) are joined as encoded, and the
    fill is encoded once for both rows it moved (tests/api/test_wire_encoding.py)."""
    global _last_fill
    head = pb.PortfolioUpdate(
        sequence=change.sequence, kind=UPDATE_KIND[change.kind], event_id=change.fill.fill_id
    ).SerializeToString()
    position = position_to_proto(change.position).SerializeToString()
    fill, corrects, placement = change.fill, change.corrects, change.placement
    last, last_corrects, fill_bytes = _last_fill
    if last is not fill or last_corrects != corrects:
        fill_bytes = fill_to_proto(fill, corrects).SerializeToString()
        _last_fill = (fill, corrects, fill_bytes)
    return b"".join(
        (
            head,
            _POSITION_TAG,
            length(len(position)),
            position,
            _FILL_TAG,
            length(len(fill_bytes)),
            fill_bytes,
            _IN_ORDER if placement is Placement.IN_ORDER else _PLACEMENT_FIELD[placement],
        )
    )


def batch_messages(
    updates: Iterable[Published[PortfolioChange, EncodedUpdate]],
    max_updates: int = BATCH_MAX_UPDATES,
    max_bytes: int = BATCH_MAX_BYTES,
) -> Iterator[tuple[int, bytes]]:
    """Updates, in order, framed as messages of at most `max_updates` updates and about
    `max_bytes`: (the last carried update's sequence, the message). A message of one update is
    that update as is, so it reads the same batched or not.

    Lazy: it reads `updates` only as far as the message it is building, so a replay read
    from the buffer as it is consumed stays so."""
    if isinstance(updates, list):  # what was queued: whole slices, few steps per update
        for start in range(0, len(updates), max_updates):
            chunk = updates[start : start + max_updates]
            elements = [item.payload.element for item in chunk]
            if sum(map(len, elements)) <= max_bytes:
                yield chunk[-1].sequence, _frame(elements, chunk[0].payload, chunk[-1].sequence)
            else:
                yield from _by_size(chunk, max_updates, max_bytes)
        return
    yield from _by_size(updates, max_updates, max_bytes)


def _by_size(
    updates: Iterable[Published[PortfolioChange, EncodedUpdate]], max_updates: int, max_bytes: int
) -> Iterator[tuple[int, bytes]]:
    elements: list[bytes] = []
    first: EncodedUpdate | None = None
    size = last = 0
    for item in updates:
        encoded = item.payload
        element = encoded.element
        if elements and (len(elements) >= max_updates or size + len(element) > max_bytes):
            yield last, _frame(elements, first, last)
            elements, size = [], 0
        if not elements:
            first = encoded
        elements.append(element)
        size += len(element)
        last = item.sequence
    if elements:
        yield last, _frame(elements, first, last)


def _frame(elements: list[bytes], first: EncodedUpdate | None, last: int) -> bytes:
    if len(elements) == 1 and first is not None:
        return first.message
    return b"".join((_SEQUENCE_TAG, varint(last), _KIND_BATCH, *elements))


PLACEMENTS = {
    Placement.IN_ORDER: pb.BOOKING_PLACEMENT_IN_ORDER,
    Placement.RESTATED: pb.BOOKING_PLACEMENT_RESTATED,
    Placement.OUTSIDE_WINDOW: pb.BOOKING_PLACEMENT_OUTSIDE_WINDOW,
}
_PLACEMENT_FIELD = {  # PortfolioUpdate.placement (12), encoded
    placement: pb.PortfolioUpdate(placement=number).SerializeToString()
    for placement, number in PLACEMENTS.items()
}
_IN_ORDER = _PLACEMENT_FIELD[Placement.IN_ORDER]


def update_to_proto(change: PortfolioChange) -> pb.PortfolioUpdate:
    if isinstance(change, PositionChanged):  # most updates: two per fill
        update = pb.PortfolioUpdate(
            sequence=change.sequence, kind=UPDATE_KIND[change.kind], event_id=change.fill.fill_id
        )
        position_to_proto(change.position, into=update.position)
        fill_to_proto(change.fill, change.corrects, into=update.fill)
        update.placement = PLACEMENTS[change.placement]
        return update
    if isinstance(change, OrderStatusChanged):
        return pb.PortfolioUpdate(
            sequence=change.sequence,
            kind=pb.UPDATE_KIND_ORDER_STATUS,
            event_id=change.update.update_id,
            order_status=status_to_proto(change.update),
            order=order_to_proto(change.order),
        )
    if isinstance(change, BalanceChanged):
        return pb.PortfolioUpdate(
            sequence=change.sequence,
            kind=pb.UPDATE_KIND_BALANCE,
            balance=balance_to_proto(change.balance),
        )
    if isinstance(change, MarkChanged):
        return pb.PortfolioUpdate(
            sequence=change.sequence, kind=pb.UPDATE_KIND_MARK, mark=mark_to_proto(change.mark)
        )
    if isinstance(change, ReconciliationChanged):
        # Residual rows as the run valued them, by instrument.
        return pb.PortfolioUpdate(
            sequence=change.sequence,
            kind=pb.UPDATE_KIND_RECONCILIATION,
            event_id=change.run.reconciliation.snapshot_id,
            reconciliation=reconciliation_to_proto(change.run),
        )
    raise TypeError(f"no update for {type(change).__name__}")
