"""Live updates: a bounded replay buffer and one bounded queue per subscriber.

Publishing never waits: a subscriber whose queue is full is cut off (it resumes from its last
sequence), so a slow reader can never slow ingestion; a cut-off also ends a stream whose write
is blocked because its reader stopped reading. Subscribing copies the replay slice and
registers the live queue in one step on the event loop, so nothing falls between the two.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

Change = TypeVar("Change")
Payload = TypeVar("Payload")


@dataclass(frozen=True, slots=True)
class Topic:
    """What an update is about, for filtering. `strategy_id` is "" for account-level rows;
    `is_position` is false for order and balance updates; `is_market` marks an instrument's
    price, which concerns every account (only an instrument filter applies)."""

    account_id: str
    strategy_id: str
    instrument_id: str
    is_position: bool = True
    is_account_level: bool = False
    is_market: bool = False
    is_balance: bool = False
    is_reconciliation: bool = False


@dataclass(frozen=True, slots=True)
class SubscriptionFilter:
    account_id: str = ""
    strategy_id: str = ""
    instrument_id: str = ""
    account_level: bool | None = None  # None: both levels
    include_balances: bool = False
    include_marks: bool = False
    include_reconciliations: bool = False

    def matches(self, topic: Topic) -> bool:
        if topic.is_market:
            return self.include_marks and (
                not self.instrument_id or topic.instrument_id == self.instrument_id
            )
        if topic.is_balance and not self.include_balances:
            return False
        if topic.is_reconciliation and not self.include_reconciliations:
            return False
        if self.account_id and topic.account_id != self.account_id:
            return False
        if self.strategy_id and topic.strategy_id != self.strategy_id:
            return False
        if self.instrument_id and topic.instrument_id != self.instrument_id:
            return False
        return not (
            topic.is_position
            and self.account_level is not None
            and topic.is_account_level != self.account_level
        )


class Published(Generic[Change, Payload]):
    """One update: the change, and its wire form, encoded on first use and then shared by every
    subscriber (nothing is encoded while nobody listens)."""

    __slots__ = ("_encode", "_payload", "change", "sequence", "topic")

    def __init__(
        self, sequence: int, topic: Topic, change: Change, encode: Callable[[Change], Payload]
    ) -> None:
        self.sequence = sequence
        self.topic = topic
        self.change = change
        self._encode = encode
        self._payload: Payload | None = None

    @property
    def payload(self) -> Payload:
        if self._payload is None:
            self._payload = self._encode(self.change)
        return self._payload


class SequenceOutOfRange(Exception):
    """The requested sequence is no longer (or not yet) in the replay buffer."""

    def __init__(self, requested: int, oldest: int, latest: int) -> None:
        super().__init__(
            f"from_sequence {requested} is outside the replay window "
            f"[{oldest}, {latest + 1}]: re-read state, then subscribe from its sequence + 1"
        )
        self.requested, self.oldest, self.latest = requested, oldest, latest


class SubscriberOverflow(Exception):
    """A subscriber's queue filled up; its stream ends and it should resume."""

    def __init__(self, capacity: int, resume_from: int) -> None:
        super().__init__(
            f"subscriber fell behind: more than {capacity} updates were waiting for it; "
            f"resubscribe with from_sequence {resume_from} (updates of that sequence already "
            "received come again)"
        )
        self.resume_from = resume_from


class ServiceStopping(Exception):
    """The service is shutting down: the stream ends and its reader should resume elsewhere
    (another instance, or this one once restarted) from `resume_from`."""

    def __init__(self, resume_from: int) -> None:
        super().__init__(
            "the service is stopping: reconnect (to another instance, or to this one once it "
            f"is back) and resubscribe with from_sequence {resume_from}"
        )
        self.resume_from = resume_from


Sent = TypeVar("Sent")


class WriteBudget:
    """At most `rate` writes per second to subscribers, all streams together (0: no limit).

    A write costs the event loop about 40 us on a 2-core machine whatever its size, and the
    loop is the one that admits and acknowledges fills: the budget keeps fan-out to a share of
    it. Waiting writers are served in arrival order, so streams share the budget fairly; a
    subscriber that cannot keep up within it falls behind and is cut off, as any slow reader.

    A large write (a batch of updates) costs more than one token: its `cost` in writes' worth
    of CPU. The writer at the head goes as soon as one token is there and leaves the rest as a
    debt the next writers wait out, so no cost is too large to be paid and the rate holds.
    """

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._burst = max(1.0, rate / 500)  # 2 ms worth: the loop holds the GIL in short turns
        self._tokens = self._burst
        self._stamp = 0.0
        self._waiters: deque[tuple[asyncio.Future[None], float]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    async def take(self, cost: float = 1.0) -> None:
        if self.rate <= 0:
            return
        loop = asyncio.get_running_loop()
        if not self._waiters:
            self._refill(loop.time())
            if self._tokens >= 1:
                self._tokens -= cost
                return
        waiter = loop.create_future()
        self._waiters.append((waiter, cost))
        if self._timer is None:
            self._schedule(loop)
        await waiter

    def _refill(self, now: float) -> None:
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = loop.call_later(max(1 - self._tokens, 0) / self.rate, self._release, loop)

    def _release(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._refill(loop.time())
        waiters = self._waiters
        while waiters and self._tokens >= 1:
            waiter, cost = waiters.popleft()
            if not waiter.done():  # a cancelled one (cut off, or the client left) costs nothing
                waiter.set_result(None)
                self._tokens -= cost
        if waiters:
            self._schedule(loop)


class Subscriber(Generic[Change, Payload]):
    """One stream's queue. Its handler drains it in batches (one wakeup per publish, however
    many updates) and writes through `send`, so that a cut-off ends the stream even while a
    write waits on a reader that stopped reading (HTTP/2 flow control holds it forever)."""

    def __init__(
        self, hub: SubscriptionHub[Change, Payload], filter_: SubscriptionFilter, resume_from: int
    ) -> None:
        self.filter = filter_
        self._hub = hub
        self._items: deque[Published[Change, Payload]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[object] | None = None
        self.overflowed = False
        self.stopping = False
        # Where to resume: the sequence of the last update sent (an event's updates can be
        # split by a cut-off), or where the subscription started when nothing was sent yet.
        self.resume_from = resume_from

    def accept(self, matched: Sequence[Published[Change, Payload]], capacity: int) -> bool:
        """Queues one publish's matching items and wakes the handler once; returns False (and
        cuts the subscriber off) when its queue would hold more than `capacity`."""
        queued = self._items
        if len(queued) + len(matched) > capacity:
            self.cut_off()
            return False
        queued.extend(matched)
        self._wake()
        return True

    def cut_off(self) -> None:
        """Ends the stream: the handler raises SubscriberOverflow at its next step, or now if
        it is blocked in a write."""
        self.overflowed = True  # its queue is freed with it, by its handler, not here in publish
        self._wake()
        if self._writer is not None:
            self._writer.cancel()

    def stop(self) -> None:
        """Ends the stream because the service stops: the handler raises ServiceStopping at its
        next step, or now if it is blocked in a write."""
        self.stopping = True
        self._wake()
        if self._writer is not None:
            self._writer.cancel()

    def _raise_if_ended(self) -> None:
        if self.stopping:
            raise ServiceStopping(self.resume_from)
        if self.overflowed:
            raise SubscriberOverflow(self._hub.queue_capacity, self.resume_from)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def next_batch(self, timeout: float) -> list[Published[Change, Payload]]:
        """Every queued item, waiting up to `timeout` seconds; [] when idle."""
        if not self._items and not self.overflowed and not self.stopping:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(timeout, _release, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        self._raise_if_ended()
        batch = list(self._items)
        self._items.clear()
        return batch

    async def send(
        self, write: Callable[[Sent], Awaitable[object]], message: Sent, cost: float = 1.0
    ) -> None:
        """Awaits one write (`cost` writes' worth of the budget); a cut-off meanwhile abandons
        it and raises SubscriberOverflow (ServiceStopping at a stop).

        The cut-off cancels the handler's task while it waits here (for the write budget or
        the write), and only here, so no other await of the handler is ever interrupted."""
        self._raise_if_ended()
        task = asyncio.current_task()
        self._writer = task
        try:
            await self._hub.budget.take(cost)
            await write(message)
        except asyncio.CancelledError:
            if not (self.overflowed or self.stopping) or task is None:
                raise
            task.uncancel()
        finally:
            self._writer = None
        self._raise_if_ended()

    def close(self) -> None:
        self._hub.unsubscribe(self)


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class SubscriptionHub(Generic[Change, Payload]):
    def __init__(
        self,
        encode: Callable[[Change], Payload],
        replay_capacity: int,
        queue_capacity: int,
        latest_sequence: int = 0,
        writes_per_second: float = 0,
    ) -> None:
        self.encode = encode
        self.budget = WriteBudget(writes_per_second)
        self.replay_capacity = replay_capacity
        self.queue_capacity = queue_capacity
        self.latest_sequence = latest_sequence
        # The replay buffer is _replay[_head:], in sequence order; _replay[0] is the update
        # published _base-th (positions stay valid while the buffer is trimmed).
        self._replay: list[Published[Change, Payload]] = []
        self._head = 0
        self._base = 0
        # The oldest sequence whose updates are all still in the buffer.
        self._oldest_complete = latest_sequence + 1
        self._subscribers: set[Subscriber[Change, Payload]] = set()
        self._open: set[Subscriber[Change, Payload]] = set()
        self.stopping = False  # at a shutdown: no new subscription, the open ones ended

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    @property
    def open_streams(self) -> int:
        """Subscriptions whose handler has not ended yet, cut-off ones included."""
        return len(self._open)

    def publish(self, changes: Sequence[tuple[int, Topic, Change]], through: int = 0) -> None:
        """Publishes the (sequence, topic, change) updates of one or more events, in order;
        `through`: the last event applied, counted published even if it (and those before it)
        published nothing, so a reader's `as_of_sequence + 1` is where a subscription starts.

        Runs on the admission path: it only queues (one wakeup per subscriber per call);
        encoding and writing happen in each subscriber's handler."""
        items = [
            Published(sequence, topic, change, self.encode) for sequence, topic, change in changes
        ]
        if items:
            self._replay.extend(items)
            self.latest_sequence = max(self.latest_sequence, max(item.sequence for item in items))
            self._fan_out(items)
            self._trim()
        self.latest_sequence = max(self.latest_sequence, through)

    def publish_ephemeral(self, changes: Sequence[tuple[Topic, Change]]) -> None:
        """Publishes state that is not an event (market prices): to live subscribers only,
        under the latest sequence, never into the replay buffer."""
        self._fan_out(
            [
                Published(self.latest_sequence, topic, change, self.encode)
                for topic, change in changes
            ]
        )

    def _fan_out(self, items: list[Published[Change, Payload]]) -> None:
        """Filters once per distinct filter (most subscribers share one), not per subscriber."""
        capacity = self.queue_capacity
        by_filter: dict[SubscriptionFilter, list[Published[Change, Payload]]] = {}
        dropped = []
        for subscriber in self._subscribers:
            matched = by_filter.get(subscriber.filter)
            if matched is None:
                matches = subscriber.filter.matches
                matched = by_filter[subscriber.filter] = [i for i in items if matches(i.topic)]
            if matched and not subscriber.accept(matched, capacity):
                dropped.append(subscriber)
        self._subscribers.difference_update(dropped)

    def reset(self, latest_sequence: int) -> None:
        """Starts over after `latest_sequence` with an empty buffer (recovery)."""
        self._base += len(self._replay)
        self._replay.clear()
        self._head = 0
        self.latest_sequence = latest_sequence
        self._oldest_complete = latest_sequence + 1

    def _trim(self) -> None:
        excess = len(self._replay) - self._head - self.replay_capacity
        if excess <= 0:
            return
        self._head += excess
        self._oldest_complete = self._replay[self._head - 1].sequence + 1
        # An event's updates go together: drop the rest of a partly dropped sequence.
        while self._head < len(self._replay) and (
            self._replay[self._head].sequence < self._oldest_complete
        ):
            self._head += 1
        if self._head > self.replay_capacity:
            del self._replay[: self._head]
            self._base += self._head
            self._head = 0

    def subscribe(
        self, filter_: SubscriptionFilter, from_sequence: int = 0
    ) -> tuple[Iterator[Published[Change, Payload]], Subscriber[Change, Payload]]:
        """The replay of every matching update with sequence >= from_sequence (none for 0),
        and a subscriber that receives everything published after this call.

        The replay is read from the buffer as it is consumed: resubscribing far behind does
        not filter thousands of updates in one step on the loop."""
        replay: Iterator[Published[Change, Payload]] = iter(())
        subscriber = Subscriber(self, filter_, from_sequence or self.latest_sequence + 1)
        if self.stopping:
            raise ServiceStopping(subscriber.resume_from)
        if from_sequence:
            if not self._oldest_complete <= from_sequence <= self.latest_sequence + 1:
                raise SequenceOutOfRange(from_sequence, self._oldest_complete, self.latest_sequence)
            start = bisect.bisect_left(
                self._replay, from_sequence, lo=self._head, key=lambda item: item.sequence
            )
            replay = self._replay_between(
                subscriber, self._base + start, self._base + len(self._replay)
            )
        self._subscribers.add(subscriber)
        self._open.add(subscriber)
        return replay, subscriber

    def _replay_between(
        self, subscriber: Subscriber[Change, Payload], start: int, end: int
    ) -> Iterator[Published[Change, Payload]]:
        """The matching updates at positions [start, end); SubscriberOverflow if the reader
        fell so far behind that they left the buffer."""
        matches = subscriber.filter.matches
        for position in range(start, end):
            index = position - self._base
            if index < self._head:
                raise SubscriberOverflow(self.queue_capacity, subscriber.resume_from)
            item = self._replay[index]
            if matches(item.topic):
                yield item

    def stop(self) -> None:
        """At a shutdown: ends every open stream (each handler returns at once, with a status
        telling its reader to resume elsewhere) and refuses new ones, so the server's stop does
        not wait its whole grace on readers that never hang up."""
        self.stopping = True
        for subscriber in list(self._open):
            subscriber.stop()

    def unsubscribe(self, subscriber: Subscriber[Change, Payload]) -> None:
        self._subscribers.discard(subscriber)
        self._open.discard(subscriber)
