"""How long ended records (terminal orders, spent reservations) stay in memory.

A record that ended is kept for `retention_ns` of event time, then forgotten: the journal and
the analysts' views still hold it. Event time is the ledger's clock (`now_ns`): the latest
timestamp of any event applied so far. It depends only on the journal, never on the wall
clock, so a replay from a checkpoint forgets the same records at the same sequence.

The clock only moves forward, so records end in clock order: a queue, oldest end first,
forgets what is due in O(1) a record. A record that comes back to life (a correction of an
order's terminal status) is dropped from `_ended`; its stale queue entry is skipped when it
comes up, and a new end queues it anew.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Retention(Generic[K]):
    def __init__(self, retention_ns: int | None = None) -> None:
        if retention_ns is not None and retention_ns < 0:
            raise ValueError(f"retention must be >= 0 ns, got {retention_ns}")
        self.retention_ns = retention_ns  # None: ended records are kept for good
        self.now_ns = 0  # the ledger's event clock
        self._ended: dict[K, int] = {}  # key -> the clock when it ended, in queue order
        self._queue: deque[tuple[int, K]] = deque()

    def __len__(self) -> int:
        return len(self._ended)

    def ended(self, key: K) -> None:
        """The record ended now (a repeated end keeps the first)."""
        if self.retention_ns is None or key in self._ended:
            return
        self._ended[key] = self.now_ns
        self._queue.append((self.now_ns, key))

    def revived(self, key: K) -> None:
        """The record is live again: it stays until it ends anew."""
        self._ended.pop(key, None)

    def due(self) -> Iterator[K]:
        """The records whose retention is over, oldest end first (each once)."""
        if self.retention_ns is None:
            return
        horizon = self.now_ns - self.retention_ns
        queue, ended = self._queue, self._ended
        while queue and queue[0][0] < horizon:
            at_ns, key = queue.popleft()
            if ended.get(key) == at_ns:
                del ended[key]
                yield key

    def entries(self) -> list[tuple[int, K]]:
        """What a checkpoint saves: every retained end, in queue order."""
        return [(at_ns, key) for key, at_ns in self._ended.items()]

    def restore(self, entries: Iterable[tuple[int, K]]) -> None:
        for at_ns, key in entries:
            if self.retention_ns is not None and key not in self._ended:
                self._ended[key] = at_ns
                self._queue.append((at_ns, key))
