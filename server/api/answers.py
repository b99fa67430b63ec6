"""Answers kept as their encoded bytes until what they were read from changes.

A dashboard polls the same summary many times between two fills or marks; building and
encoding it every time costs milliseconds for a large book. An answer is kept with the
service's version (events applied, price moves, FX rates kept: `ReadModel.version`) and given
again, as the same bytes, while that version holds. Errors are never kept.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

from google.protobuf.message import Message

from server.api.wire import position_to_proto
from server.domain.book import PositionView

CAPACITY = 256
"""Answers kept (the least recently asked go first): one per (query, arguments) in use."""
LARGEST = 1 << 20
"""Larger answers (a strategy with thousands of rows) are not kept: memory stays bounded
(256 MiB at the very most) and such answers are rare."""


class AnswerCache:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._answers: OrderedDict[Hashable, tuple[Hashable, bytes]] = OrderedDict()

    def answer(self, key: Hashable, version: Hashable, build: Callable[[], Message]) -> bytes:
        """The encoded answer for `key` at `version`, built only when not held at it."""
        held = self._answers.get(key)
        if held is not None and held[0] == version:
            self._answers.move_to_end(key)
            return held[1]
        encoded = build().SerializeToString()
        if len(encoded) > LARGEST:
            self._answers.pop(key, None)
            return encoded
        self._answers[key] = (version, encoded)
        self._answers.move_to_end(key)
        if len(self._answers) > self.capacity:
            self._answers.popitem(last=False)
        return encoded


class RowAnswers:
    """GetPosition's answers, one per row, kept as their bytes with the version they were read
    at and the view they were built from; the least recently asked go first.

    At the same version, the same bytes. On a live book the version moves with every event,
    so most reads find it moved though their row did not: the row's view is read again and,
    when equal to the kept one, the kept bytes are given again (comparing two views costs
    about a twentieth of building and encoding the message); only a row that changed is
    encoded again. The message itself is not kept: holding each row's message besides its
    bytes (two caches, by version and by view) made every answer built slower, not faster.

    The bytes depend only on the view's values (every amount is written by value), except the
    precision's exponent, which the base-currency rounding follows: that must be the same
    object (it is: the book's)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._rows: OrderedDict[Hashable, tuple[Hashable, PositionView, bytes]] = OrderedDict()

    def answer(self, key: Hashable, version: Hashable, read: Callable[[], PositionView]) -> bytes:
        """The row's encoded message at `version`; `read` gives its view (or raises)."""
        rows = self._rows
        held = rows.get(key)
        if held is not None:
            if held[0] == version:
                rows.move_to_end(key)
                return held[2]
            view = read()
            kept = held[1]
            if kept.precision is view.precision and kept == view:
                rows[key] = (version, kept, held[2])
                rows.move_to_end(key)
                return held[2]
            encoded = position_to_proto(view).SerializeToString()
            rows[key] = (version, view, encoded)
            rows.move_to_end(key)
            return encoded
        view = read()  # a row not held (the usual for a large book): added last, as asked last
        encoded = position_to_proto(view).SerializeToString()
        rows[key] = (version, view, encoded)
        if len(rows) > self.capacity:
            rows.popitem(last=False)
        return encoded
