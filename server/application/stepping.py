"""Work written in steps (server.domain.steps) driven on the event loop: a pause after each
step for the loop's other work (queries, health checks, admission)."""

from __future__ import annotations

import asyncio
from typing import TypeVar

from server.domain.steps import Steps

T = TypeVar("T")

STEP_PAUSE_SECONDS = 0.001
"""The event loop's time for other work between two steps: a query needs several turns of the
loop and the gRPC poller's thread a moment to hand it over, which one bare turn (`sleep(0)`)
does not give."""


async def in_steps(steps: Steps[T]) -> T:
    """Runs `steps`, pausing after each; returns the result. Cancelled in a pause (a stop),
    the steps are closed: what they hold (the collector paused, say) is let go at once."""
    try:
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            await asyncio.sleep(STEP_PAUSE_SECONDS)
    finally:
        steps.close()
