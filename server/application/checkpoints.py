"""Checkpoints: the whole book, saved now and then, so a restart replays only the journal's tail.

Each checkpoint is saved one interval late: the snapshot taken at sequence S is written when the
next one is taken, K events later. So the stored checkpoint is always at least K events behind,
and after a restart the replayed tail refills the subscribers' replay buffer: a subscriber that
was up to date before the restart resumes without OUT_OF_RANGE.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent.futures import Executor

from server.application.ports import Checkpoint, EventStore
from server.domain.ledger import Ledger
from server.domain.state import capture, capture_rows

log = logging.getLogger("portfolio.checkpoint")


class Checkpointer:
    def __init__(self, store: EventStore, executor: Executor, every: int) -> None:
        self._store = store
        self._executor = executor
        self.every = every
        self._held: Checkpoint | None = None
        self._next_at = every
        self.saved_sequence = 0

    def start_after(self, sequence: int) -> None:
        self._next_at = sequence + self.every

    def after_apply(self, ledger: Ledger) -> None:
        """Called on the event loop after events were applied: the book is consistent here."""
        if ledger.applied_sequence < self._next_at:
            return
        snapshot = Checkpoint(ledger.applied_sequence, capture_rows(ledger), capture(ledger))
        held, self._held = self._held, snapshot
        self._next_at = ledger.applied_sequence + self.every
        if held is not None:
            future = asyncio.get_running_loop().run_in_executor(
                self._executor, self._store.save_checkpoint, held
            )
            future.add_done_callback(functools.partial(self._saved, held))

    def _saved(self, checkpoint: Checkpoint, done: asyncio.Future[None]) -> None:
        if done.exception() is not None:  # the journal is the truth: only startup gets slower
            log.warning("checkpoint at %d not saved: %s", checkpoint.sequence, done.exception())
        else:
            self.saved_sequence = checkpoint.sequence
