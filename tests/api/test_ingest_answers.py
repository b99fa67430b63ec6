"""An Ingest stream answers its batches in order, each once durable, with one wake-up of its
handler per answer: the commit tells each batch (GroupCommitter.on_durable) instead of the
handler awaiting a queue and then a durability future."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from portfolio.v1 import portfolio_pb2 as pb
from server.api.servicer import _Admitted, _Answers
from server.application.committer import GroupCommitter
from server.application.ports import Sequenced, StorageUnavailable
from tests.api.protocol import ingest, pb_fill
from tests.domain.builders import fill

Told = Callable[[BaseException | None], None]


class _Durability:
    """Stands for the committer: keeps who waits for which sequence until told to settle."""

    def __init__(self) -> None:
        self.durable = 0
        self.waiting: list[tuple[int, Told]] = []

    def on_durable(self, sequence: int, told: Told) -> None:
        if sequence <= self.durable:
            told(None)
        else:
            self.waiting.append((sequence, told))

    def reach(self, sequence: int) -> None:
        self.durable = sequence
        for waits, told in [w for w in self.waiting if w[0] <= sequence]:
            self.waiting.remove((waits, told))
            told(None)


async def test_a_batch_already_answerable_waits_behind_one_not_yet_durable():
    durability = _Durability()
    answers = _Answers(durability.on_durable, capacity=8)
    answers.add(_Admitted("first", wait_for=1))
    answers.add(_Admitted("refused", refused_whole="no"))  # wait_for 0: answerable at once
    assert answers.next() is None  # the first is not durable: nothing to send yet
    waiting = answers.settled()
    await asyncio.sleep(0)
    assert not waiting.done()
    durability.reach(1)
    assert waiting.done()
    assert [answers.next()[0].batch_id, answers.next()[0].batch_id] == ["first", "refused"]
    assert answers.next() is None


async def test_the_end_and_errors_come_after_every_batch_admitted_before_them():
    durability = _Durability()
    answers = _Answers(durability.on_durable, capacity=8)
    answers.add(_Admitted("first", wait_for=1))
    answers.end(None)
    answers.end(RuntimeError("a stop after the end changes nothing"))
    assert answers.next() is None
    durability.reach(1)
    assert answers.next()[0].batch_id == "first"
    assert answers.next() == (None, None)
    assert answers.next() is None


async def test_a_batch_that_cannot_be_durable_is_told_why_and_a_full_stream_waits_for_room():
    durability = _Durability()
    answers = _Answers(durability.on_durable, capacity=2)
    answers.add(_Admitted("lost", wait_for=1))
    answers.add(_Admitted("next", wait_for=2))
    assert answers.full()
    room = answers.room()
    ((_, told),) = durability.waiting  # only the first batch waits to be told
    told(StorageUnavailable("store unavailable: disk gone"))
    admitted, failed = answers.next()
    assert admitted.batch_id == "lost" and isinstance(failed, StorageUnavailable)
    assert room.done() and not answers.full()


class _Store:
    def __init__(self) -> None:
        self.down = False

    def append(self, group: list[Sequenced]) -> None:
        if self.down:
            raise StorageUnavailable("disk gone")


async def test_the_committer_tells_after_applying_at_once_if_durable_and_the_error_if_not():
    store, applied, told = _Store(), [], []
    committer = GroupCommitter(store, lambda group: applied.extend(group))  # type: ignore[arg-type]
    committer.start()
    committer.on_durable(0, told.append)
    assert told == [None]  # nothing to wait for
    committer.submit([(1, fill("BUY", 1, 10))])
    committer.on_durable(1, lambda error: told.append((error, len(applied))))
    assert told == [None]  # not yet durable
    await asyncio.wait_for(committer.wait_durable(1), 5)
    assert told == [None, (None, 1)]  # told once applied
    committer.on_durable(1, told.append)
    assert told[-1] is None  # durable already: at once

    store.down = True
    committer.submit([(2, fill("BUY", 1, 10))])
    committer.on_durable(2, told.append)
    for _ in range(100):
        if not committer.healthy:
            break
        await asyncio.sleep(0.01)
    assert isinstance(told[-1], StorageUnavailable)
    committer.on_durable(3, told.append)
    assert isinstance(told[-1], StorageUnavailable) and len(told) == 5  # told at once

    store.down = False  # the group is retried (with back-off) until it lands
    for _ in range(500):
        if committer.healthy:
            break
        await asyncio.sleep(0.01)
    assert committer.healthy and committer.durable_sequence == 2
    assert [sequence for sequence, _ in applied] == [1, 2]
    committer.submit([(3, fill("BUY", 1, 10))])
    await asyncio.wait_for(committer.wait_durable(3), 5)
    await asyncio.wait_for(committer.stop(), 5)
    assert [sequence for sequence, _ in applied] == [1, 2, 3]


def test_one_fill_batches_and_refused_ones_pipelined_are_answered_in_order(stub):
    """More batches than a stream keeps in flight; every other one refused whole (nothing to
    wait for), so it would be answerable before the fill ahead of it is durable."""
    count = 200
    batches = [[pb_fill("BUY", 1, 10)] if i % 2 == 0 else [] for i in range(count)]
    responses = ingest(stub, *batches)
    assert [r.batch_id for r in responses] == [f"b{i}" for i in range(count)]
    accepted = [r for r in responses if r.acks]
    assert [r.acks[0].sequence for r in accepted] == list(range(1, count // 2 + 1))
    assert all(r.batch_rejected_reason for r in responses if not r.acks)
    position = stub.GetPosition(pb.GetPositionRequest(account_id="A1", instrument_id="AAPL"))
    assert position.quantity == str(count // 2)
