"""Events on their way to the portfolio service: kept, in order, until the service acked them.

One sender task sends the oldest events in batches. While the service is unreachable it retries
with back-off and keeps everything in memory (the queue depth is logged): nothing is dropped,
and since the service is idempotent by event id, resending a batch whose acks were lost costs
nothing.

A service that refuses the relay's credentials (UNAUTHENTICATED, PERMISSION_DENIED) is not an
outage: the refusal is said at ERROR once per change and once when it clears (`refusals`, shown
on the relay's `authorization` health name), and the events are kept and retried with the same
back-off, so a corrected auth file on the service lets them through.

With a tracer (relay.relay: OTEL_TRACES_EXPORTER), each ingest call runs in a span of its own,
`relay.ingest`, whose context the SDK sends in the call's metadata: the service's spans for
those batches join its trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Callable

from opentelemetry.trace import SpanKind, Tracer

from client import AsyncPortfolioClient, EventAck, ExecutionEvent, Fill, PortfolioError
from client.wire import event_to_proto
from relay.health import Refusals, is_refusal
from tws.connection import ReconnectPolicy

__all__ = ["Outbox"]

log = logging.getLogger("portfolio.broker.outbox")

OnAck = Callable[[ExecutionEvent, EventAck], None]
OnRefused = Callable[[PortfolioError], None]


class Outbox:
    """A FIFO of events drained by one sender task into `client.ingest`."""

    def __init__(
        self,
        client: AsyncPortfolioClient,
        *,
        batch_size: int = 500,
        events_per_call: int = 5_000,
        attempt_timeout: float = 10.0,
        retry: ReconnectPolicy | None = None,
        on_ack: OnAck | None = None,
        tracer: Tracer | None = None,
        on_refused: OnRefused | None = None,
    ) -> None:
        self._client = client
        self._on_refused = on_refused
        #: Whether the service refuses the relay's credentials (for health and the log).
        self.refusals = Refusals("the relay's events", log)
        self._tracer = tracer
        self._batch_size = batch_size
        self._events_per_call = max(events_per_call, batch_size)
        self._attempt_timeout = attempt_timeout
        self._retry = retry or ReconnectPolicy(initial=0.5, factor=2.0, maximum=10.0)
        self._on_ack = on_ack
        self._queue: deque[ExecutionEvent] = deque()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        """Events not acked yet (queued or in flight)."""
        return len(self._queue)

    def put(self, event: ExecutionEvent) -> bool:
        """Queues an event; False (and logged) for one that could never be encoded."""
        try:
            event_to_proto(event)
        except (TypeError, ValueError) as error:
            log.error("dropping %s %s: it cannot be sent: %s", _kind(event), event.event_id, error)
            return False
        self._queue.append(event)
        self._notify()
        return True

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._send_forever(), name="relay outbox sender")

    async def drained(self, timeout: float | None = None) -> None:
        """Until every event put so far is acked (raises TimeoutError after `timeout`)."""
        async with asyncio.timeout(timeout):
            while self._queue:
                await self._changed.wait()

    async def stop(self, flush_timeout: float = 5.0) -> int:
        """Sends what it can within `flush_timeout`, then stops; returns the events left."""
        if self._task is None:
            return len(self._queue)
        with contextlib.suppress(TimeoutError):
            await self.drained(flush_timeout)
        task, self._task = self._task, None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self._queue:
            log.warning("stopped with %d events unsent", len(self._queue))
        return len(self._queue)

    # -----------------------------------------------------------------------------------------

    async def _send_forever(self) -> None:
        failures = 0
        outage = False  # a failure other than a refusal since the last success
        while True:
            while not self._queue:
                await self._changed.wait()
            chunk = list(itertools.islice(self._queue, self._events_per_call))
            try:
                with self._span(len(chunk)):
                    acks = await self._client.ingest(
                        chunk,
                        batch_size=self._batch_size,
                        max_attempts=2,
                        timeout=self._attempt_timeout,
                    )
            except Exception as error:  # PortfolioError (IngestIncomplete too), or a bug
                failures += 1
                delay = self._retry.delay(failures)
                if isinstance(error, PortfolioError) and is_refusal(error):
                    self._refused(error, delay)
                else:
                    outage = True
                    self._failed(error, delay)
                await asyncio.sleep(delay)
                continue
            self.refusals.accepted(f"{len(self._queue)} waiting")
            if outage:
                log.info("portfolio service takes events again; %d waiting", len(self._queue))
            failures, outage = 0, False
            for _ in chunk:
                self._queue.popleft()
            if self._on_ack is not None:
                for event, ack in zip(chunk, acks, strict=True):
                    self._on_ack(event, ack)
            self._notify()

    def _refused(self, error: PortfolioError, delay: float) -> None:
        waiting = len(self._queue)
        self.refusals.refused(
            error, f"{waiting} events kept, retried with back-off (next in {delay:.1f} s)"
        )
        if self._on_refused is not None:
            self._on_refused(error)

    def _failed(self, error: Exception, delay: float) -> None:
        level = logging.WARNING if isinstance(error, PortfolioError) else logging.ERROR
        log.log(
            level,
            "portfolio service did not take the events (%s); %d waiting, retrying in %.1f s",
            error,
            len(self._queue),
            delay,
            exc_info=not isinstance(error, PortfolioError),
        )

    def _span(self, events: int) -> contextlib.AbstractContextManager[object]:
        """The span of one ingest call (current while it runs), or nothing without a tracer."""
        if self._tracer is None:
            return contextlib.nullcontext()
        return self._tracer.start_as_current_span(
            "relay.ingest", kind=SpanKind.CLIENT, attributes={"portfolio.relay.events": events}
        )

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


def _kind(event: ExecutionEvent) -> str:
    return "fill" if isinstance(event, Fill) else "status update"
