"""Group commit: every event admitted since the last commit goes to the store in one append.

No timer: while one append is in flight, new events gather into the next group, so a group is
as large as the load makes it and an idle service commits a lone event at once. Appends run on
the committer's own thread (`_AppendThread`), not on the executor checkpoints are written on: an
ack never waits behind a checkpoint's write. An event is
applied to the book, published and acknowledged only after the append holding it returned.
When the store fails, waiting acks fail with StorageUnavailable (the relay resends: the
events are already admitted, so the resend waits for them), and the group is retried with
back-off until the store works again.

Any other failure (a bug: an event that cannot be encoded, an apply that raises) cannot be
retried into success. It is fatal, never silent: the waiting acks fail, new events are refused
with the cause, and the task ends with the error so the service's supervision stops the process
(non-zero exit) for a supervisor to restart from the journal. The door's checks are what keep
such an event from being admitted at all.

A large group, or one holding an event that visits a whole account (a day's close of a million
rows), is applied in steps (WritePath._apply_durable), with the event loop's other work between
them: queries and health checks are answered meanwhile, and new events admitted; they are
committed, applied and acknowledged after it, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence

from opentelemetry.trace import Link, SpanContext, Tracer, get_current_span

from server import tracing
from server.application.ports import EventStore, Sequenced, StorageUnavailable, WriterFenced
from server.application.stepping import in_steps
from server.domain.steps import Steps

log = logging.getLogger("portfolio.commit")


class GroupCommitter:
    def __init__(
        self,
        store: EventStore,
        apply: Callable[[list[Sequenced]], Steps[None] | None],
        on_health: Callable[[bool], None] = lambda healthy: None,
        durable_sequence: int = 0,
        max_backoff: float = 5.0,
        book: asyncio.Lock | None = None,
    ) -> None:
        self.store = store
        # Held while a group applies, steps included: whoever needs the book to stand still
        # across turns of the loop (a checkpoint's snapshot in steps) takes it too.
        self.book = book or asyncio.Lock()
        self.durable_sequence = durable_sequence
        self.healthy = True
        self.fault = ""
        self._appender = _AppendThread()
        self._apply = apply
        self._on_health = on_health
        self._max_backoff = max_backoff
        self._pending: list[Sequenced] = []
        # Who waits for which sequence: told None once it is durable, or the error.
        self._waiters: list[tuple[int, int, Callable[[BaseException | None], None]]] = []
        self._order = itertools.count()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        # Metrics (server/telemetry.py): told once per group its size, its append's seconds
        # and each batch's admission time; None (metrics off) costs nothing per batch.
        self.on_commit: Callable[[int, float, Sequence[float]], None] | None = None
        self._admitted_at: list[float] = []
        # Traces (server/tracing.py): each batch's span context, for the commit's links;
        # nothing is taken while tracing is off.
        self._links: list[SpanContext] = []

    def start(self) -> asyncio.Task[None]:
        """Starts the commit task and returns it, for supervision."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit")
        return self._task

    async def stop(self) -> None:
        """Commits what is pending (unless the store is down or the task died), then stops."""
        if self.healthy and self._task is not None and not self._task.done():
            await self.drained()
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._appender.close()  # no append outlives the stop (the store closes next)

    def submit(self, group: list[Sequenced]) -> None:
        if not self.healthy:
            raise StorageUnavailable(self.fault)
        self._pending.extend(group)
        if self.on_commit is not None:
            self._admitted_at.append(time.perf_counter())
        if tracing.tracer() is not None:
            self._links.append(get_current_span().get_span_context())
        self._idle.clear()
        self._wakeup.set()

    async def wait_durable(self, sequence: int) -> None:
        if sequence <= self.durable_sequence:
            return
        if not self.healthy:
            raise StorageUnavailable(self.fault)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(
            self._waiters, (sequence, next(self._order), lambda error: _settle(future, error))
        )
        await future

    def on_durable(self, sequence: int, told: Callable[[BaseException | None], None]) -> None:
        """Calls `told(None)` once `sequence` is durable and applied (at once if it is), or
        `told(error)` when the store fails first, as `wait_durable` would raise. On the event
        loop, from the commit's own step: an ingest stream is woken once per answer it can
        send, not once to learn of a batch and again when it is durable."""
        if sequence <= self.durable_sequence:
            told(None)
        elif not self.healthy:
            told(StorageUnavailable(self.fault))
        else:
            heapq.heappush(self._waiters, (sequence, next(self._order), told))

    @property
    def pending(self) -> int:
        """Events admitted and not yet in an append (the admission queue)."""
        return len(self._pending)

    async def drained(self) -> None:
        await self._idle.wait()

    async def _run(self) -> None:
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._pending:
                    group, self._pending = self._pending, []
                    admitted_at, self._admitted_at = self._admitted_at, []
                    links, self._links = self._links, []
                    await self._commit(group, admitted_at, links)
                self._idle.set()
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # logged by whoever supervises the task
            self.healthy, self.fault = False, f"commit failed: {error!r}; the service must restart"
            self._pending.clear()
            self._fail_waiters()
            self._on_health(False)
            raise

    async def _commit(
        self,
        group: list[Sequenced],
        admitted_at: Sequence[float] = (),
        links: Sequence[SpanContext] = (),
    ) -> None:
        tracer = tracing.tracer()
        if tracer is None:
            await self._commit_group(group, admitted_at, None)
            return
        with tracer.start_as_current_span(
            tracing.COMMIT,
            links=[Link(context) for context in links if context.is_valid],
            attributes={
                "portfolio.commit.events": len(group),
                "portfolio.sequence.first": group[0][0],
                "portfolio.sequence.last": group[-1][0],
            },
        ):
            await self._commit_group(group, admitted_at, tracer)

    async def _commit_group(
        self, group: list[Sequenced], admitted_at: Sequence[float], tracer: Tracer | None
    ) -> None:
        delay = 0.05
        append = self.store.append
        if tracer is not None:
            append = tracing.for_thread(tracer, tracing.JOURNAL_APPEND, append)
        while True:
            try:
                began = time.perf_counter()
                await self._appender.run(append, group)
                break
            except WriterFenced:
                raise  # another service writes the store now: this one can only stop
            except StorageUnavailable as error:
                if self.healthy:
                    log.error("store failed, not acknowledging until it works: %s", error)
                    self.healthy, self.fault = False, f"store unavailable: {error}"
                    self._on_health(False)
                    self._fail_waiters()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)
        if not self.healthy:
            log.info("store works again; acknowledging from sequence %d", group[0][0])
            self.healthy, self.fault = True, ""
            self._on_health(True)
        async with self.book:  # a snapshot in steps holds it too: one at a time
            with (
                contextlib.nullcontext()
                if tracer is None
                else tracer.start_as_current_span(tracing.APPLY)
            ):
                steps = self._apply(group)
                if steps is not None:  # a group applied in steps: other work between them
                    await in_steps(steps)
        self.durable_sequence = group[-1][0]
        while self._waiters and self._waiters[0][0] <= self.durable_sequence:
            heapq.heappop(self._waiters)[2](None)
        if self.on_commit is not None:
            self.on_commit(len(group), time.perf_counter() - began, admitted_at)

    def _fail_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for _, _, told in waiters:
            told(StorageUnavailable(self.fault))


_Job = tuple[Callable[[], None], asyncio.AbstractEventLoop, "asyncio.Future[None]"]


class _AppendThread:
    """The thread appends run on, one group at a time, woken by a condition. Not an executor:
    its future, its queue and the asyncio future wrapping it cost the loop about 10 us a group
    (measured: 28-38 against 19-27 us of loop CPU per round trip). Idle for IDLE_SECONDS, the
    thread ends (a committer never stopped, as in tests, leaves no thread behind); the next
    append starts it again."""

    IDLE_SECONDS = 5.0

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._job: _Job | None = None
        self._thread: threading.Thread | None = None
        self._closing = False

    def run(
        self, append: Callable[[list[Sequenced]], None], group: list[Sequenced]
    ) -> asyncio.Future[None]:
        """`append(group)` on the thread; the future ends as it does."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._condition:
            self._job = (lambda: append(group), loop, future)
            if self._thread is None:
                self._closing = False
                self._thread = threading.Thread(
                    target=self._work, name="portfolio-commit", daemon=True
                )
                self._thread.start()
            else:
                self._condition.notify()
        return future

    async def close(self) -> None:
        """Ends the thread once its append in flight, if any, has returned."""
        with self._condition:
            thread, self._closing = self._thread, True
            self._condition.notify()
        if thread is not None:
            await asyncio.to_thread(thread.join)

    def _work(self) -> None:
        while True:
            with self._condition:
                if self._job is None and not self._closing:
                    self._condition.wait(self.IDLE_SECONDS)
                if self._job is None:  # closing, or idle for IDLE_SECONDS
                    self._thread = None
                    return
                call, loop, future = self._job
                self._job = None
            error: BaseException | None = None
            try:
                call()
            except BaseException as raised:  # handed to the committer, which decides
                error = raised
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(_settle, future, error)
            del call, future, error


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # cancelled: the commit task (a stop with the store down) or a waiter
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
