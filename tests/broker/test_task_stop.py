"""A stop ends a task that takes no notice of one cancellation (Python 3.11's asyncio.wait_for
swallows one arriving as its inner awaitable completes), instead of waiting for it forever."""

from __future__ import annotations

import asyncio

import pytest

from tws.tasks import cancel_and_wait


async def deaf_to_one_cancel(loops: list[int]) -> None:
    """A heartbeat whose wait_for lost the first cancellation: it goes on looping."""
    swallowed = False
    while True:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed = True
        loops[0] += 1


async def failing() -> None:
    raise RuntimeError("a task that failed before the stop")


async def test_a_task_that_swallows_a_cancellation_still_stops() -> None:
    loops = [0]
    task = asyncio.create_task(deaf_to_one_cancel(loops))
    await asyncio.sleep(0.05)
    await asyncio.wait_for(cancel_and_wait([task], every=0.05), 5)
    assert task.cancelled()
    after = loops[0]
    await asyncio.sleep(0.05)
    assert loops[0] == after  # it no longer runs


async def test_one_cancel_and_a_single_await_would_have_hung() -> None:
    """The stop this replaces: cancel once, then await."""
    task = asyncio.create_task(deaf_to_one_cancel([0]))
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), 0.3)
    await cancel_and_wait([task])


async def test_ended_and_failed_tasks_are_taken_without_raising() -> None:
    done = asyncio.create_task(asyncio.sleep(0))
    broken = asyncio.create_task(failing())
    await asyncio.sleep(0.01)
    await cancel_and_wait([done, broken])
    assert done.done() and broken.done()
