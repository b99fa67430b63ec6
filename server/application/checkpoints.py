"""Checkpoints: the whole book, saved now and then, so a restart replays only the journal's tail.

A snapshot is taken every `every` events counted from the stored checkpoint (not from this
process's start), every `seconds` while events arrive, and a checkpoint is written on a graceful
stop; so what a restart replays is bounded by the interval, however short each process lived.

Each periodic snapshot is saved one turn late: the one taken at a turn is written at the next.
The stored checkpoint thus trails the book by about one interval, and after a crash the
replayed tail refills the subscribers' replay buffer, so a subscriber that was a little behind
resumes without OUT_OF_RANGE. A graceful stop writes the snapshot held (taken up to one interval
earlier) or, when none is held, the book as it stands: a subscriber behind that point at the
stop is answered OUT_OF_RANGE after the restart and re-reads state; one up to date resumes. It
writes none when the last checkpoint took too long to fit before the stop's limit (`stop`).

A periodic snapshot is taken in steps, between two groups of the committer (it holds the
committer's lock): the event loop answers queries between its steps, and no event applies
until it is taken.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor

from server.application.collector import collector_paused
from server.application.ports import Checkpoint, EventStore
from server.application.stepping import in_steps
from server.domain.ledger import Ledger
from server.domain.state import capturing, capturing_rows
from server.domain.steps import Steps, at_once

log = logging.getLogger("portfolio.checkpoint")

STOP_MARGIN = 1.5
"""A stop takes its checkpoint only if the time left before its limit is this many times what
the last one took (taking and writing): one cut off at the limit is lost work, and exits 1."""


def snapshot(ledger: Ledger) -> Checkpoint:
    """The book as it stands, at once; only where it is consistent (at start, at a stop)."""
    return at_once(snapshotting(ledger))


def snapshotting(ledger: Ledger) -> Steps[Checkpoint]:
    """`snapshot` in steps (the rows, their round trips and their anchors, `COPIES_PER_STEP`
    at a time): whoever drives it applies nothing in between. A copy of every row and
    record, so made with the collector paused (collector.py)."""
    with collector_paused():
        sequence = ledger.applied_sequence
        rows = yield from capturing_rows(ledger)
        state = yield from capturing(ledger)
        anchors = yield from ledger.book.anchoring()
        return Checkpoint(sequence, rows, state, anchors)


class Checkpointer:
    def __init__(
        self,
        store: EventStore,
        executor: Executor,
        every: int,
        seconds: float = 60.0,
        book: asyncio.Lock | None = None,
    ) -> None:
        self._store = store
        self._executor = executor
        self.every = every
        self.seconds = seconds
        # The committer's: held while a group applies (server/application/committer.py), and
        # by a snapshot in steps, so that no event applies between its steps.
        self.book = book or asyncio.Lock()
        self._ledger: Ledger | None = None
        self._held: Checkpoint | None = None
        self._taken = 0  # the sequence of the last snapshot taken, or of the stored one
        self._timer: asyncio.TimerHandle | None = None
        self._turning: asyncio.Task[None] | None = None
        self._writing: asyncio.Future[None] | None = None  # a turn's write, on the executor
        self.saved_sequence = 0
        # What the last checkpoint took to take (a snapshot, in steps or at once) and to
        # write, in seconds: a stop's estimate of its own (None: not measured yet).
        self.snapshot_seconds: float | None = None
        self.write_seconds: float | None = None

    def resume(self, ledger: Ledger, stored: int) -> None:
        """After recovery: the stored checkpoint is at `stored`; counting starts there."""
        self._ledger = ledger
        self._held = None
        self._taken = self.saved_sequence = stored

    def save_recovered(self) -> None:
        """At start, when the replay was longer than two intervals: saves the recovered book
        (synchronously, before the service takes events), so a crash loop of short lives
        cannot make every start replay more."""
        if self._ledger is None or self._ledger.applied_sequence <= self.saved_sequence:
            return
        checkpoint = snapshot(self._ledger)
        try:
            self._write(checkpoint)
        except Exception as error:  # the journal is the truth: only startup gets slower
            log.warning("checkpoint at %d not saved: %s", checkpoint.sequence, error)
            return
        self._taken = self.saved_sequence = checkpoint.sequence

    def after_apply(self, ledger: Ledger) -> None:
        """Called on the event loop after events were applied."""
        self._ledger = ledger
        if ledger.applied_sequence >= self._taken + self.every:
            self._turn(ledger)
        self._arm()

    def _arm(self) -> None:
        if self._timer is None and self.seconds > 0:
            self._timer = asyncio.get_running_loop().call_later(self.seconds, self._tick)

    def _tick(self) -> None:
        self._timer = None
        ledger = self._ledger
        if ledger is None or (self._held is None and ledger.applied_sequence <= self._taken):
            return  # idle: the next applied event arms the timer again
        self._turn(ledger)
        self._arm()  # the snapshot this turn takes is written at the next

    def _turn(self, ledger: Ledger) -> None:
        """Starts a turn, unless one is under way: it writes the snapshot held since the last
        turn, and holds a new one if events were applied since."""
        if self._turning is not None and not self._turning.done():
            return
        self._turning = asyncio.get_running_loop().create_task(
            self._take_turn(ledger), name="checkpoint-turn"
        )
        self._turning.add_done_callback(self._turned)

    async def _take_turn(self, ledger: Ledger) -> None:
        """The new snapshot is taken in steps, once the group applying (if any) is done, with
        the committer's lock held: queries are answered between its steps, and events
        admitted, but none applies until it is taken (a million rows at once held the event
        loop 2-3 s)."""
        taken = None
        if ledger.applied_sequence > self._taken:
            try:
                async with self.book:
                    began = time.perf_counter()
                    taken = await in_steps(snapshotting(ledger))
                    self.snapshot_seconds = time.perf_counter() - began
            except Exception:  # a bug: the journal is the truth, only a restart gets slower
                log.exception("checkpoint snapshot failed; the next is taken an interval later")
                self._taken = ledger.applied_sequence  # not again at every group
                return
            self._taken = taken.sequence
        held, self._held = self._held, taken
        if held is not None and held.sequence > self.saved_sequence:
            try:
                future = asyncio.get_running_loop().run_in_executor(
                    self._executor, self._write, held
                )
            except RuntimeError:  # the service is stopping: its executor takes no more work
                return
            future.add_done_callback(functools.partial(self._saved, held))
            self._writing = future

    def _write(self, checkpoint: Checkpoint) -> None:
        """On the executor's thread: saves `checkpoint`, timed."""
        began = time.perf_counter()
        self._store.save_checkpoint(checkpoint)
        self.write_seconds = time.perf_counter() - began

    @staticmethod
    def _turned(turn: asyncio.Task[None]) -> None:
        """Whatever else failed in a turn is logged with its cause; the next turn tries again.
        How far the stored checkpoint trails shows in the metrics (server/telemetry.py)."""
        if not turn.cancelled() and turn.exception() is not None:
            log.error("checkpoint turn failed", exc_info=turn.exception())

    def _saved(self, checkpoint: Checkpoint, done: asyncio.Future[None]) -> None:
        if done.exception() is not None:  # the journal is the truth: only startup gets slower
            log.warning("checkpoint at %d not saved: %s", checkpoint.sequence, done.exception())
        else:
            self.saved_sequence = max(self.saved_sequence, checkpoint.sequence)

    async def stop(self, time_left: Callable[[], float] | None = None) -> None:
        """On a graceful stop, after the last commit: writes the snapshot held, or the book now
        when nothing newer than the stored checkpoint is held. Not when `time_left` (seconds
        before the stop's limit) is shorter than STOP_MARGIN times what the last checkpoint
        took: the next start then replays from the stored one, as after a crash (at 1M rows a
        checkpoint takes about 10 s, more than the default limit leaves)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._turning is not None:  # its snapshot, if any, is the one held now
            await asyncio.gather(self._turning, return_exceptions=True)  # a failure: logged
        if self._writing is not None:  # a turn's write under way: the stop's comes after it
            await asyncio.gather(self._writing, return_exceptions=True)  # a failure: logged
        held, self._held = self._held, None
        checkpoint = held if held is not None and held.sequence > self.saved_sequence else None
        ledger = self._ledger
        taking = (
            checkpoint is None
            and ledger is not None
            and ledger.applied_sequence > self.saved_sequence
        )
        if checkpoint is None and not taking:
            return
        if time_left is not None and self.write_seconds is not None:
            needed = self.write_seconds + ((self.snapshot_seconds or 0.0) if taking else 0.0)
            left = time_left()
            if needed * STOP_MARGIN > left:
                log.warning(
                    "no checkpoint at stop: the last took %.1fs, %.1fs are left before the "
                    "stop's limit (--grace-seconds); the next start replays from sequence %d",
                    needed,
                    left,
                    self.saved_sequence,
                )
                return
        if checkpoint is None:
            assert ledger is not None
            began = time.perf_counter()
            checkpoint = snapshot(ledger)
            self.snapshot_seconds = time.perf_counter() - began
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._executor, self._write, checkpoint
            )
        except Exception as error:  # the journal is the truth: only startup gets slower
            log.warning("checkpoint at %d not saved on stop: %s", checkpoint.sequence, error)
            return
        self.saved_sequence = max(self.saved_sequence, checkpoint.sequence)
        log.info("checkpoint at %d saved on stop", checkpoint.sequence)
