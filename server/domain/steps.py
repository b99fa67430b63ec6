"""Work done in steps: a generator that yields between steps and returns its result.

A few events visit every row of an account when they apply (a day's close: a million rows on
a large book). Written as steps, the same code runs at once where nothing else waits (a replay,
a test: `at_once`), or a step per turn of the service's event loop, so that queries and health
checks are answered in between (the application layer drives it). Steps must not leave what
others read half done: what they change is put in place after the last step.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator, Iterable, Iterator
from typing import TypeAlias, TypeVar

T = TypeVar("T")

ROWS_PER_STEP = 2_000
"""Rows between two steps of work that visits every row of an account: 20-40 ms at 10-20 us a
row (read at each call, so a test may make steps of one row)."""

COPIES_PER_STEP = 20_000
"""Rows copied or gathered between two steps (a checkpoint's snapshot, a close's rows): about
20 ms at 1 us a row (read at each call too)."""

Steps: TypeAlias = Generator[None, None, T]


def at_once(steps: Steps[T]) -> T:
    """Runs every step now; returns the result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def copies(items: Iterable[T]) -> Iterator[list[T]]:
    """`items` in lists of `COPIES_PER_STEP`: the caller yields (a step) after each."""
    found = iter(items)
    while chunk := list(itertools.islice(found, COPIES_PER_STEP)):
        yield chunk
