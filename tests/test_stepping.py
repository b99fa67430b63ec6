"""Work in steps driven on the event loop (server/application/stepping.py)."""

from __future__ import annotations

import asyncio
import gc

import pytest

from server.application.collector import collector_paused
from server.application.stepping import in_steps


async def test_steps_cancelled_in_a_pause_are_closed_and_let_the_collector_go():
    """A stop cancels the committer's task in the middle of a group's steps: what the steps
    hold (here the collector paused, as a close or a snapshot holds it) is let go at once,
    not when the generator is collected some time later."""
    assert gc.isenabled()
    ended: list[str] = []

    def steps():  # type: ignore[no-untyped-def]
        with collector_paused():
            try:
                for _ in range(1000):
                    yield
            finally:
                ended.append("closed")

    task = asyncio.ensure_future(in_steps(steps()))
    await asyncio.sleep(0.01)  # a few steps in
    assert not gc.isenabled()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ended == ["closed"] and gc.isenabled()


async def test_the_steps_result_is_returned():
    def steps():  # type: ignore[no-untyped-def]
        yield
        yield
        return 42

    assert await in_steps(steps()) == 42
