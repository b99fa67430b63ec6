"""Checkpoints: the whole book, saved now and then, so a restart replays only the journal's tail.

A snapshot is taken every `every` events counted from the stored checkpoint (not from this
process's start), every `seconds` while events arrive, and a checkpoint is written on a graceful
stop; so what a restart replays is bounded by the interval, however short each process lived.

Each periodic snapshot is saved one turn late: the one taken at a turn is written at the next.
The stored checkpoint thus trails the book by about one interval, and after a crash the
replayed tail refills the subscribers' replay buffer, so a subscriber that was a little behind
resumes without OUT_OF_RANGE. A graceful stop writes the snapshot held (taken up to one interval
earlier) or, when none is held, the book as it stands: a subscriber behind that point at the
stop is answered OUT_OF_RANGE after the restart and re-reads state; one up to date resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Iterator
from concurrent.futures import Executor

from server.application.collector import collector_paused
from server.application.ports import Checkpoint, EventStore
from server.domain.ledger import Ledger
from server.domain.state import capture, capture_rows

log = logging.getLogger("portfolio.checkpoint")


def snapshot(ledger: Ledger) -> Checkpoint:
    """The book as it stands; only where it is consistent (between commits, or at start).
    A copy of every row and record, so made with the collector paused (collector.py)."""
    with collector_paused():
        return Checkpoint(
            ledger.applied_sequence, capture_rows(ledger), capture(ledger), ledger.book.anchors()
        )


class Checkpointer:
    def __init__(
        self, store: EventStore, executor: Executor, every: int, seconds: float = 60.0
    ) -> None:
        self._store = store
        self._executor = executor
        self.every = every
        self.seconds = seconds
        self._ledger: Ledger | None = None
        self._held: Checkpoint | None = None
        self._taken = 0  # the sequence of the last snapshot taken, or of the stored one
        self._timer: asyncio.TimerHandle | None = None
        self.saved_sequence = 0
        self._holding = False  # a group applying in steps: the book is not consistent

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
            self._store.save_checkpoint(checkpoint)
        except Exception as error:  # the journal is the truth: only startup gets slower
            log.warning("checkpoint at %d not saved: %s", checkpoint.sequence, error)
            return
        self._taken = self.saved_sequence = checkpoint.sequence

    def after_apply(self, ledger: Ledger) -> None:
        """Called on the event loop after events were applied: the book is consistent here."""
        self._ledger = ledger
        if ledger.applied_sequence >= self._taken + self.every:
            self._turn(ledger)
        self._arm()

    def _arm(self) -> None:
        if self._timer is None and self.seconds > 0:
            self._timer = asyncio.get_running_loop().call_later(self.seconds, self._tick)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """No snapshot by the timer while a group applies in steps (the event loop runs other
        work between them, the book half applied); the next one after it counts as usual."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False

    def _tick(self) -> None:
        self._timer = None
        if self._holding:
            self._arm()
            return
        ledger = self._ledger
        if ledger is None or (self._held is None and ledger.applied_sequence <= self._taken):
            return  # idle: the next applied event arms the timer again
        self._turn(ledger)
        if self._held is not None:
            self._arm()

    def _turn(self, ledger: Ledger) -> None:
        """Writes the snapshot held since the last turn, and holds a new one if events were
        applied since."""
        held, self._held = self._held, None
        if ledger.applied_sequence > self._taken:
            self._held = snapshot(ledger)
            self._taken = ledger.applied_sequence
        if held is not None and held.sequence > self.saved_sequence:
            try:
                future = asyncio.get_running_loop().run_in_executor(
                    self._executor, self._store.save_checkpoint, held
                )
            except RuntimeError:  # the service is stopping: its executor takes no more work
                return
            future.add_done_callback(functools.partial(self._saved, held))

    def _saved(self, checkpoint: Checkpoint, done: asyncio.Future[None]) -> None:
        if done.exception() is not None:  # the journal is the truth: only startup gets slower
            log.warning("checkpoint at %d not saved: %s", checkpoint.sequence, done.exception())
        else:
            self.saved_sequence = max(self.saved_sequence, checkpoint.sequence)

    async def stop(self) -> None:
        """On a graceful stop, after the last commit: writes the snapshot held, or the book now
        when nothing newer than the stored checkpoint is held."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        held, self._held = self._held, None
        checkpoint = held if held is not None and held.sequence > self.saved_sequence else None
        ledger = self._ledger
        if (
            checkpoint is None
            and ledger is not None
            and ledger.applied_sequence > self.saved_sequence
        ):
            checkpoint = snapshot(ledger)
        if checkpoint is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._executor, self._store.save_checkpoint, checkpoint
            )
        except Exception as error:  # the journal is the truth: only startup gets slower
            log.warning("checkpoint at %d not saved on stop: %s", checkpoint.sequence, error)
            return
        self.saved_sequence = max(self.saved_sequence, checkpoint.sequence)
        log.info("checkpoint at %d saved on stop", checkpoint.sequence)
