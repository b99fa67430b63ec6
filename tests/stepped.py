"""Work in steps (server/domain/steps.py) run to its end in tests, counting its steps."""

from __future__ import annotations

from typing import TypeVar

from server.domain.steps import Steps

T = TypeVar("T")


def counted(steps: Steps[T]) -> tuple[int, T]:
    """Runs every step now; returns how many times it yielded, and its result."""
    taken = 0
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return taken, done.value  # type: ignore[no-any-return]
        taken += 1
