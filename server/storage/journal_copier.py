"""Copies what the write-ahead log made durable into the ArcticDB journal, on its own thread.

Acks wait for the log only (storage/wal.py); the journal follows up to MIN_INTERVAL behind, in
groups as large as the backlog (one ArcticDB append has a fixed cost of 3-5 ms whatever its
size). A failing append is logged once with its cause, shows on health `journal`, and is
retried with back-off; nothing is lost meanwhile (the log holds it, and a restart copies it).
The backlog is bounded: past `max_backlog` events the store refuses new groups (the committer
then stops acknowledging, as for any store failure) rather than grow without limit.

Readers of the journal (`quiet`) wait until it holds everything written so far and keep the
copier out while they read, so a read never misses an acknowledged event.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from opentelemetry.trace import Link, SpanContext, get_current_span

from server import tracing
from server.application.ports import Sequenced, StorageUnavailable

log = logging.getLogger("portfolio.storage")

MAX_BACKLOG = 200_000  # events not yet in the journal before new groups are refused
# Seconds from one append's start to the next's, unless a reader waits. An append costs about
# 3.5 ms of CPU whatever its size plus 10 us an event (LMDB, measured), much of it holding the
# GIL: at 0.1 s that was 45 us of CPU per one-fill message at 1,000/s, at 0.25 s about 25.
MIN_INTERVAL = 0.25
READ_WAIT_SECONDS = 30.0  # how long a reader waits for the journal to catch up


class JournalCopier:
    def __init__(
        self,
        append: Callable[[list[Sequenced]], None],
        copied: Callable[[int], None],
        *,
        max_backlog: int = MAX_BACKLOG,
        max_backoff: float = 5.0,
        min_interval: float = MIN_INTERVAL,
    ) -> None:
        self._append = append
        self._copied = copied  # told the last sequence the journal holds after each append
        self._max_backlog = max_backlog
        self._max_backoff = max_backoff
        self._min_interval = min_interval
        self._readers = 0  # waiting in `quiet`: the next append does not wait its interval
        self._pending: list[Sequenced] = []
        self._copying = 0  # events taken by the append in flight
        # Traces (server/tracing.py): the commits whose groups wait, for the copy's links.
        self._links: list[SpanContext] = []
        self._condition = threading.Condition()
        self._idle = False  # waiting for events: only then does a put wake the thread
        self._stopping = False
        self.fault = ""  # why the last append failed ("" while the journal keeps up)
        self.on_health: Callable[[bool], None] = lambda healthy: None
        self._thread = threading.Thread(target=self._run, name="journal-copy", daemon=True)
        self._thread.start()

    @property
    def backlog(self) -> int:
        return len(self._pending) + self._copying

    def check_room(self) -> None:
        """Refuses (StorageUnavailable) while the backlog is full: called before the log is
        written, so a refused group is in neither."""
        if self.backlog >= self._max_backlog:
            raise StorageUnavailable(
                f"the journal is {self.backlog:,} events behind the write-ahead log "
                f"({self.fault or 'appends too slow'}); not acknowledging until it catches up"
            )

    def put(self, group: Sequence[Sequenced]) -> None:
        with self._condition:
            self._pending.extend(group)
            if tracing.tracer() is not None:
                self._links.append(get_current_span().get_span_context())
            if self._idle:  # not while it copies or waits out its interval: a wake for nothing
                self._condition.notify_all()  # costs the writer a GIL handoff per group

    @contextlib.contextmanager
    def quiet(self, timeout: float = READ_WAIT_SECONDS) -> Iterator[None]:
        """Holds the copier still, with the journal holding everything put so far."""
        with self._condition:
            self._readers += 1
            self._condition.notify_all()
            try:
                caught_up = self._condition.wait_for(lambda: not self.backlog, timeout)
            finally:
                self._readers -= 1
            if not caught_up:
                raise StorageUnavailable(
                    f"the journal is {self.backlog:,} events behind the write-ahead log "
                    f"after {timeout:.0f} s ({self.fault or 'appends too slow'})"
                )
            yield

    def stop(self, timeout: float) -> bool:
        """Copies what is pending (for up to `timeout` seconds), then stops the thread.
        Returns whether the journal holds everything (if not, the log still does)."""
        with self._condition:
            self._condition.wait_for(lambda: not self.backlog or bool(self.fault), timeout)
            self._stopping = True
            self._condition.notify_all()
        self._thread.join(timeout)
        return not self.backlog

    def _copy(self, group: list[Sequenced], links: list[SpanContext]) -> None:
        tracer = tracing.tracer()
        if tracer is None:
            self._append(group)
            return
        with tracer.start_as_current_span(
            tracing.JOURNAL_COPY,
            links=[Link(context) for context in links if context.is_valid],
            attributes={"portfolio.journal.events": len(group)},
        ):
            self._append(group)

    def _run(self) -> None:
        delay = 0.05
        while True:
            with self._condition:
                self._idle = True
                self._condition.wait_for(lambda: bool(self._pending) or self._stopping)
                self._idle = False
                if self._stopping:
                    return
                group, self._pending = self._pending, []
                links, self._links = self._links, []
                self._copying = len(group)
            began = time.monotonic()
            try:
                self._copy(group, links)
            except Exception as error:  # ArcticDB, the OS and the network all raise their own
                with self._condition:
                    self._pending[:0] = group
                    self._links[:0] = links
                    self._copying = 0
                    if not self.fault:
                        log.error("journal append failed, retrying (the write-ahead log holds "
                                  "every event): %s", error)  # fmt: skip
                        self.on_health(False)
                    self.fault = f"journal append failed: {error}"
                    self._condition.notify_all()
                time.sleep(delay)
                delay = min(delay * 2, self._max_backoff)
                continue
            delay = 0.05
            self._copied(group[-1][0])
            with self._condition:
                self._copying = 0
                if self.fault:
                    log.info("journal appends work again; %d events behind", len(self._pending))
                    self.fault = ""
                    self.on_health(True)
                self._condition.notify_all()
                # An ArcticDB append holds the GIL for milliseconds: few large ones leave the
                # event loop (acks, queries) free; a reader that waits is not kept waiting.
                self._condition.wait_for(
                    lambda: self._stopping or self._readers > 0,
                    max(0.0, began + self._min_interval - time.monotonic()),
                )
