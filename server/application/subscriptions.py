"""Live updates: a bounded replay buffer and one bounded queue per subscriber.

Publishing never waits: a subscriber whose queue is full is cut off (it resumes from its last
sequence), so a slow reader can never slow ingestion. Subscribing copies the replay slice and
registers the live queue in one step on the event loop, so nothing falls between the two.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import deque
from collections.abc import Callable, Sequence
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

    def __init__(self, capacity: int, last_delivered: int) -> None:
        super().__init__(
            f"subscriber fell behind: its queue of {capacity} updates overflowed; "
            f"resubscribe with from_sequence {last_delivered + 1}"
        )
        self.last_delivered = last_delivered


class Subscriber(Generic[Change, Payload]):
    def __init__(self, hub: SubscriptionHub[Change, Payload], filter_: SubscriptionFilter) -> None:
        self.filter = filter_
        self._hub = hub
        self._items: deque[Published[Change, Payload]] = deque()
        self._wakeup = asyncio.Event()
        self.overflowed = False
        self.last_delivered = 0

    def offer(self, item: Published[Change, Payload], capacity: int) -> bool:
        """Queues an item; returns False (and marks the overflow) when the queue is full."""
        if len(self._items) >= capacity:
            self.overflowed = True
            self._wakeup.set()
            return False
        self._items.append(item)
        self._wakeup.set()
        return True

    async def next_batch(self, timeout: float) -> list[Published[Change, Payload]]:
        """Every queued item, waiting up to `timeout` seconds; [] when idle."""
        if not self._items and not self.overflowed:
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except TimeoutError:
                return []
        if self.overflowed:
            raise SubscriberOverflow(self._hub.queue_capacity, self.last_delivered)
        batch = list(self._items)
        self._items.clear()
        return batch

    def close(self) -> None:
        self._hub.unsubscribe(self)


class SubscriptionHub(Generic[Change, Payload]):
    def __init__(
        self,
        encode: Callable[[Change], Payload],
        replay_capacity: int,
        queue_capacity: int,
        latest_sequence: int = 0,
    ) -> None:
        self.encode = encode
        self.replay_capacity = replay_capacity
        self.queue_capacity = queue_capacity
        self.latest_sequence = latest_sequence
        # The replay buffer is _replay[_head:], in sequence order.
        self._replay: list[Published[Change, Payload]] = []
        self._head = 0
        # The oldest sequence whose updates are all still in the buffer.
        self._oldest_complete = latest_sequence + 1
        self._subscribers: set[Subscriber[Change, Payload]] = set()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def publish(self, changes: Sequence[tuple[int, Topic, Change]]) -> None:
        """Publishes the (sequence, topic, change) updates of one or more events, in order."""
        for sequence, topic, change in changes:
            item = Published(sequence, topic, change, self.encode)
            self._replay.append(item)
            self.latest_sequence = max(self.latest_sequence, item.sequence)
            for subscriber in list(self._subscribers):
                if subscriber.filter.matches(item.topic) and not subscriber.offer(
                    item, self.queue_capacity
                ):
                    self._subscribers.discard(subscriber)
        self._trim()

    def publish_ephemeral(self, changes: Sequence[tuple[Topic, Change]]) -> None:
        """Publishes state that is not an event (market prices): to live subscribers only,
        under the latest sequence, never into the replay buffer."""
        for topic, change in changes:
            item = Published(self.latest_sequence, topic, change, self.encode)
            for subscriber in list(self._subscribers):
                if subscriber.filter.matches(topic) and not subscriber.offer(
                    item, self.queue_capacity
                ):
                    self._subscribers.discard(subscriber)

    def reset(self, latest_sequence: int) -> None:
        """Starts over after `latest_sequence` with an empty buffer (recovery)."""
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
            self._head = 0

    def subscribe(
        self, filter_: SubscriptionFilter, from_sequence: int = 0
    ) -> tuple[list[Published[Change, Payload]], Subscriber[Change, Payload]]:
        """The replay of every matching update with sequence >= from_sequence (none for 0),
        and a subscriber that receives everything published after this call."""
        replay: list[Published[Change, Payload]] = []
        if from_sequence:
            if not self._oldest_complete <= from_sequence <= self.latest_sequence + 1:
                raise SequenceOutOfRange(from_sequence, self._oldest_complete, self.latest_sequence)
            start = bisect.bisect_left(
                self._replay, from_sequence, lo=self._head, key=lambda item: item.sequence
            )
            replay = [item for item in self._replay[start:] if filter_.matches(item.topic)]
        subscriber = Subscriber(self, filter_)
        self._subscribers.add(subscriber)
        return replay, subscriber

    def unsubscribe(self, subscriber: Subscriber[Change, Payload]) -> None:
        self._subscribers.discard(subscriber)
