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
