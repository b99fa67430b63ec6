"""The order in which rows' bookings leave the restatement window: (time, row key) entries,
taken earliest first.

A heap of (time, key) tuples cost 64 bytes an entry, and every row with fills in the window
has one. Fills mostly come in execution-time order, so entries mostly come in time order:
those go to the end of columns (times in an int64 array, keys in a list: 16 bytes an entry),
in chunks, so that taking the earliest never moves the others; only an entry earlier than the
latest there goes to a heap of tuples. The earliest entry is the earlier of the two heads.
Which of two entries of the same time comes first is not kept (the book folds each row on its
own: the order among them changes nothing).
"""

from __future__ import annotations

import heapq
from array import array
from collections import deque
from collections.abc import Iterator

from server.domain.position import PositionKey

CHUNK = 4096
"""Entries per chunk of the in-order columns."""


class ExpiryQueue:
    __slots__ = ("_chunks", "_head", "_late")

    def __init__(self) -> None:
        # (times, keys) chunks, each in time order and after the one before; the first's
        # entries before `_head` are taken.
        self._chunks: deque[tuple[array[int], list[PositionKey]]] = deque()
        self._head = 0
        self._late: list[tuple[int, PositionKey]] = []  # a heap: entries that came late

    def __len__(self) -> int:
        return sum(len(keys) for _, keys in self._chunks) - self._head + len(self._late)

    def __iter__(self) -> Iterator[tuple[int, PositionKey]]:
        """The entries, in no particular order."""
        for number, (times, keys) in enumerate(self._chunks):
            start = self._head if number == 0 else 0
            yield from zip(times[start:], keys[start:], strict=True)
        yield from self._late

    def push(self, time_ns: int, key: PositionKey) -> None:
        chunks = self._chunks
        if chunks:
            times, keys = chunks[-1]
            if time_ns < times[-1]:
                heapq.heappush(self._late, (time_ns, key))
                return
            if len(keys) < CHUNK:
                times.append(time_ns)
                keys.append(key)
                return
        chunks.append((array("q", [time_ns]), [key]))

    def extend(self, times_ns: list[int], keys: list[PositionKey]) -> None:
        """`push` of each entry in turn, for entries in time order: a chunk's slice at a time
        rather than a call an entry (a million rows' windows at a start)."""
        chunks = self._chunks
        start = 0
        if chunks and times_ns:
            times, last = chunks[-1]
            if times_ns[0] < times[-1]:  # not after the last entry: each where it goes
                for time_ns, key in zip(times_ns, keys, strict=True):
                    self.push(time_ns, key)
                return
            start = min(CHUNK - len(last), len(keys))
            times.extend(times_ns[:start])
            last.extend(keys[:start])
        for at in range(start, len(keys), CHUNK):
            chunks.append((array("q", times_ns[at : at + CHUNK]), keys[at : at + CHUNK]))

    def pop_before(self, horizon_ns: int) -> PositionKey | None:
        """Takes out the earliest entry if its time is before `horizon_ns`, and returns its
        key; None when there is none."""
        late = self._late
        chunks = self._chunks
        if chunks:
            times, keys = chunks[0]
            head = self._head
            first = times[head]
            if not late or first <= late[0][0]:
                if first >= horizon_ns:
                    return None
                key = keys[head]
                if head + 1 == len(keys):
                    chunks.popleft()
                    self._head = 0
                else:
                    self._head = head + 1
                return key
        if late and late[0][0] < horizon_ns:
            return heapq.heappop(late)[1]
        return None
