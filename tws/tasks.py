"""Stopping tasks that may not take one cancellation.

On Python 3.11 `asyncio.wait_for` swallows a cancellation that arrives in the same step as its
inner awaitable completes (CPython gh-86296, fixed in 3.12), so a loop around it (the
connection's heartbeat, ib_async's connect) can go on after one `cancel()`, and a stop that
awaits it once waits forever: seen as a relay's stop hanging a test run's teardown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any]], *, every: float = 0.5) -> None:
    """Cancels `tasks` and returns once every one has ended, cancelling again every `every`
    seconds those still running; their exceptions are taken (a stop reports none of them)."""
    tasks = list(tasks)
    running = {task for task in tasks if not task.done()}
    while running:
        for task in running:
            task.cancel()
        _, running = await asyncio.wait(running, timeout=every)
    for task in tasks:
        if not task.cancelled():
            task.exception()
