"""The write path: one asyncio loop owns all state, and every event takes the same way.

`admit` (dedup, sequence) as a batch arrives, then the group commit makes it durable, then
`replay` applies and publishes it (each kind as `PUBLISHES` says), then the acks go out.
Queries and subscribers only ever see durable events.

Recovery (`recover`): the state after a restart equals the state before, field for field. The
latest checkpoint gives the book at sequence S; every journaled id is remembered (so a fill
replayed by the relay is a duplicate); the journal after S is applied again and published,
which refills the subscribers' replay buffer; traces still alive are rebuilt from the journal.
The analysts' views get the events after their watermark and the rows those may have changed
(the replayed ones, and any rebuilt other than checkpointed): the watermark waits for position
rows not yet written (server/storage/views.py), so a row whose view is out of date changed
after it. Every row only when the views are behind the checkpoint, since which rows changed
before it is not known (copying each row of a large book costs about 7 us a row at a start).
A replay longer than two checkpoint intervals is checkpointed at once, so starts that follow
one another quickly (a crash loop) never replay more and more.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Generic, TypeAlias

from server.application.checkpoints import Checkpointer
from server.application.collector import collector_paused
from server.application.committer import GroupCommitter
from server.application.ports import (
    EventStore,
    OrderTransition,
    ReconciliationRun,
    Sequenced,
    StorageUnavailable,
)
from server.application.projector import ViewProjector
from server.application.publishing import (
    PUBLISHES,
    PortfolioChange,
    ReconciliationChanged,
    Update,
)
from server.application.reads import ReadModel
from server.application.subscriptions import Payload, SubscriptionHub
from server.domain.booker import SYSTEM, Booker
from server.domain.events import ExecutionEvent
from server.domain.ledger import Ledger, Outcome, Result, visits_account
from server.domain.position import Position, PositionKey
from server.domain.refusals import Refusal
from server.domain.restatement import Placement
from server.domain.state import restore
from server.domain.steps import Steps, at_once
from server.domain.time_window import TimeWindow
from server.log_limit import LogLimiter

log = logging.getLogger("portfolio.service")
_misplaced_log = LogLimiter(log, 10.0)  # at most one line per 10 s; the rest are counted
_recovery_log = logging.getLogger("portfolio.recovery")

_booker: ContextVar[Booker] = ContextVar("booker", default=SYSTEM)


def booking_as(booker: Booker) -> None:
    """Names who books the writes of the current call (its task, and tasks it starts): each
    event it has admitted carries them into the journal (the audit trail). A write made in no
    call's name is the service's own (SYSTEM)."""
    _booker.set(booker)


Replayed: TypeAlias = tuple[
    list[tuple[Position, Decimal]], list[OrderTransition], list[ReconciliationChanged]
]
"""What `replay` returns: copies of the rows changed (each with its mark then), the order
transitions, the reconciliation runs."""

EVENTS_PER_STEP = 500
"""Events of one group between two steps when it is applied in steps: 35-100 ms at 70-200 us
an event (a batch may hold 10,000 events; a group taken after the store came back, more)."""

MISPLACED_ALERT_SECONDS = 900.0
"""How long health `books` stays NOT_SERVING after a fill was booked outside its place."""


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    checkpoint_sequence: int
    replayed: int
    sequence: int
    seconds: float
    # What the analysts' views miss: the journaled events after their watermark, and copies
    # of the rows those events may have changed (with their marks), to be written again.
    views_backlog: list[Sequenced] = field(default_factory=list)
    rows: list[tuple[Position, Decimal]] = field(default_factory=list)


class WritePath(Generic[Payload]):
    def __init__(
        self,
        ledger: Ledger,
        hub: SubscriptionHub[PortfolioChange, Payload],
        store: EventStore,
        executor: Executor,
        views_executor: Executor,
        reads: ReadModel,
        *,
        checkpoint_every: int = 10_000,
        checkpoint_seconds: float = 60.0,
        on_health: Callable[[bool], None] = lambda healthy: None,
        clock_ns: Callable[[], int] = time.time_ns,
        time_window: TimeWindow | None = None,
        on_books: Callable[[bool], None] = lambda exact: None,
    ) -> None:
        self.ledger = ledger
        self.hub = hub
        self.reads = reads
        self._store = self.store = store
        self.views_executor = views_executor  # for writes to the analysts' store
        self.committer = GroupCommitter(
            store, self._apply_durable, on_health, ledger.applied_sequence
        )
        self.checkpoints = Checkpointer(
            store, executor, checkpoint_every, checkpoint_seconds, book=self.committer.book
        )
        self.projector = ViewProjector(
            store, views_executor, ledger.book.precision, base_of=reads.base_of
        )
        self._clock_ns = clock_ns
        self.time_window = time_window or TimeWindow()
        # A fill booked OUTSIDE_WINDOW turns `on_books(False)`; it stays so for
        # MISPLACED_ALERT_SECONDS after the latest one (see books_exact).
        self.on_books = on_books
        self.misplaced_at: float | None = None
        self._live = False  # recovered: health may be told from the event loop
        # Counted for metrics (server/telemetry.py reads them when scraped): events by kind and
        # result (a dict increment per event), and fills booked before later ones.
        self.event_counts: collections.Counter[tuple[str, Result]] = collections.Counter()
        self.placed: collections.Counter[Placement] = collections.Counter()

    @property
    def sequence(self) -> int:
        """The last sequence applied: what queries and subscribers see, all of it durable."""
        return self.ledger.applied_sequence

    def check_time(self, field: str, time_ns: int) -> None:
        """Refuses (InvalidEvent naming `field`) a new event's or mark's time that the
        service's clock says cannot be right: see TimeWindow."""
        self.time_window.check(field, time_ns, self._clock_ns())

    def admit(self, events: Sequence[ExecutionEvent]) -> tuple[list[Outcome], int]:
        """Dedups and sequences a batch, in arrival order, and hands what is new to the group
        commit. Returns the outcomes and the sequence that must be durable before they are
        acknowledged (a duplicate waits for its original)."""
        if not self.committer.healthy:
            raise StorageUnavailable(self.committer.fault)
        outcomes = [self.ledger.admit(event) for event in events]
        counts = self.event_counts
        booker = _booker.get()  # one per call, shared by its events
        group: list[Sequenced] = []
        wait_for = 0
        for event, outcome in zip(events, outcomes, strict=True):  # one pass: per message
            result = outcome.result
            counts[event.kind, result] += 1
            if result is Result.REJECTED:
                continue
            if result is Result.ACCEPTED:
                event.booked_by(booker)
                group.append((outcome.sequence, event))
            wait_for = max(wait_for, outcome.sequence)
        if group:
            self.committer.submit(group)
        return outcomes, wait_for

    async def wait_durable(self, sequence: int) -> None:
        await self.committer.wait_durable(sequence)

    async def ingest(self, events: Sequence[ExecutionEvent]) -> list[Outcome]:
        outcomes, wait_for = self.admit(events)
        await self.wait_durable(wait_for)
        return outcomes

    async def execute(self, event: ExecutionEvent) -> tuple[Outcome, Refusal | None]:
        """One event through the write path, for the unary RPCs: its outcome once durable,
        and the domain's refusal if applying it refused it (replays refuse it the same)."""
        (outcome,), wait_for = self.admit([event])
        await self.wait_durable(wait_for)
        if outcome.result is Result.REJECTED:
            return outcome, None
        return outcome, self.ledger.refusals.get(outcome.sequence)

    def _apply_durable(self, group: list[Sequenced]) -> Steps[None]:
        """Applies a durable group, hands it to the views and maybe takes a checkpoint. In
        steps when the group is large (a step every `EVENTS_PER_STEP` events) or an event
        visits a whole account (a day's close): the committer lets the event loop answer
        queries and health checks between them, and no checkpoint is taken until the group
        is done. A close runs with the collector paused (collector.py). What a reader sees
        between steps is the book at an event's end, every event of it durable and its
        updates published; the group's acks are sent after the last step."""
        bulk = any(visits_account(event) for _, event in group)
        if not bulk and len(group) <= EVENTS_PER_STEP:
            at_once(self._applying(group))
            return
        with collector_paused() if bulk else contextlib.nullcontext():
            yield from self._applying(group)

    def _applying(self, group: list[Sequenced]) -> Steps[None]:
        changed, transitions, runs = yield from self._replaying(group)
        self._alert_misplaced(group)
        self.ledger.traces.received(self._clock_ns())  # a trace's TTL counts from receipt
        yield from self.projector.submitting(
            group, changed, transitions, [change.run for change in runs]
        )
        self.checkpoints.after_apply(self.ledger)

    def _alert_misplaced(self, group: list[Sequenced]) -> None:
        """Says so when a fill could not be booked in its place (older than the restatement
        window): logged, counted (`book.misplaced`) and on health."""
        placements = self.ledger.placements
        for sequence, event in group:
            placement = placements.get(sequence)
            if placement is not Placement.IN_ORDER:
                self.placed[placement] += 1
            if placement is Placement.OUTSIDE_WINDOW:
                _misplaced_log.log(
                    logging.WARNING,
                    "misplaced",
                    "%s %s (sequence %d) is older than fills already folded out of the "
                    "restatement window: booked at the window's start, not in its place "
                    "(%d such fills since start)",
                    event.kind,
                    event.event_id,
                    sequence,
                    self.ledger.book.misplaced,
                )
                self.misplaced_at = time.monotonic()
                self.on_books(False)

    def placement(self, sequence: int) -> Placement:
        """Where the fill or correction applied at `sequence` landed in its rows (for its ack,
        sent right after it applied)."""
        return self.ledger.placements.get(sequence)

    def books_exact(self, now: float | None = None) -> bool:
        """False for MISPLACED_ALERT_SECONDS after a fill was booked outside its place, or a
        row's restatement window read back from the journal differed from its checkpoint."""
        if self.misplaced_at is None:
            return True
        return (time.monotonic() if now is None else now) - self.misplaced_at > (
            MISPLACED_ALERT_SECONDS
        )

    def end_books_alert(self, now: float | None = None) -> bool:
        """True once, when the alert of a misplaced fill has run its time (health `books`
        may turn SERVING again)."""
        if self.misplaced_at is None or not self.books_exact(now):
            return False
        self.misplaced_at = None
        return True

    def replay(self, events: Iterable[Sequenced]) -> Replayed:
        """Applies journaled events in sequence order and publishes their updates; returns
        copies of the rows they changed, each with its mark then, the order transitions and
        the reconciliation runs."""
        return at_once(self._replaying(events))

    def _replaying(self, events: Iterable[Sequenced]) -> Steps[Replayed]:
        """`replay` in steps: one every `EVENTS_PER_STEP` events, and those of an event that
        visits a whole account; what was applied before a step is published before it."""
        published: list[Update] = []
        changed: list[tuple[Position, Decimal]] = []
        transitions: list[OrderTransition] = []
        runs: list[ReconciliationChanged] = []
        ledger = self.ledger
        for index, (sequence, event) in enumerate(events):
            stepping = visits_account(event)
            if stepping or (index and index % EVENTS_PER_STEP == 0):
                # What a reader sees between steps is published: its as_of_sequence + 1 is
                # where a subscription starts.
                self.hub.publish(published, through=ledger.applied_sequence)
                published = []
                yield
            publishing = PUBLISHES[type(event)]
            previous = publishing.before(ledger, event)
            if stepping:
                applied = yield from ledger.apply_in_steps(event, sequence)
            else:
                applied = ledger.apply(event, sequence)
            changed.extend((change.position, change.market_price) for change in applied.rows)
            updates, run = publishing.publish(self.reads, event, sequence, applied, previous)
            published.extend(updates)
            if applied.order is not None and applied.transition is not None:
                transitions.append(
                    OrderTransition(sequence, applied.order.order_key, applied.transition)
                )
            if run is not None:
                runs.append(run)
        self.hub.publish(published, through=ledger.applied_sequence)
        return changed, transitions, runs

    def judge(self, events: Iterable[Sequenced]) -> list[OrderTransition]:
        """How status events applied earlier were judged, from their orders' histories (for
        views catching up after a restart)."""
        judged = []
        for sequence, event in events:
            judge = PUBLISHES[type(event)].judged
            transition = None if judge is None else judge(self.ledger, event, sequence)
            if transition is not None:
                judged.append(transition)
        return judged

    def reports_for(self, events: Iterable[Sequenced]) -> list[ReconciliationRun]:
        """The runs of broker snapshots applied earlier, still kept (for views catching up
        after a restart)."""
        found = []
        for sequence, event in events:
            report = PUBLISHES[type(event)].reported
            run = None if report is None else report(self.reads, event, sequence)
            if run is not None:
                found.append(run)
        return found

    def recover(self) -> RecoveryReport:
        """Rebuilds the state the journal and the latest checkpoint hold (see the module's
        docstring), off the event loop, before the committer starts."""
        began = time.perf_counter()
        ledger, store = self.ledger, self._store
        checkpoint = store.latest_checkpoint()
        start = 0
        rows: list[tuple[Position, Decimal]] = []  # rows whose views may be out of date
        if checkpoint is not None:
            restore(ledger, checkpoint.rows, checkpoint.state)
            start = ledger.applied_sequence = checkpoint.sequence
        seen = store.seen_events()
        ledger.remember_all(seen.kinds, seen.event_ids, seen.sequences, seen.fingerprints)
        ledger.seen.settle()  # sorted here, off the event loop
        horizon = time.time_ns() - ledger.traces.ttl_ns  # traces live a TTL from their receipt
        for sequence, fill, received_ns in store.traced_fills_received_since(horizon, start):
            multiplier = ledger.instruments.multiplier(fill.instrument_id)
            ledger.traces.record(fill, sequence, multiplier, received_ns, counted=True)
        ledger.book.on_differ = self._window_differs
        if checkpoint is not None and checkpoint.state.corrections_latest_ns:
            (latest,) = checkpoint.state.corrections_latest_ns
            horizon = latest - max(ledger.corrections.window_ns, ledger.book.window_ns)
            differ = ledger.reload_correctable(
                store.correctable_fills(horizon, start),
                checkpoint.anchors,
                empty_anchors_left_out=checkpoint.empty_anchors_left_out,
            )
            restated = [row for row in map(ledger.book.get, differ) if row is not None]
            rows = [(row.copy(), ledger.book.mark(row.key.instrument_id)) for row in restated]
            if differ:
                self.misplaced_at = time.monotonic()  # health `books` (see _window_differs)
                _recovery_log.error(
                    "%d rows rebuilt from their restatement windows differ from the checkpoint "
                    "(kept as the journal gives them), first %s",
                    len(differ),
                    differ[0],
                )
        self.hub.reset(start)
        tail: list[Sequenced] = []
        for sequence, event in store.events_after(start):
            if sequence <= ledger.applied_sequence or (tail and sequence == tail[-1][0]):
                continue  # a row journaled twice (an append retried after it had landed)
            tail.append((sequence, event))
        changed, _, _ = self.replay(tail)
        rows.extend(changed)  # later than the rows rebuilt above: the views keep the latest
        ledger.traces.received(store.received_by(ledger.applied_sequence))  # the tail's legs
        replayed = len(tail)
        marks, rates = store.latest_marks()
        for mark in marks:  # one older than the checkpoint's is ignored
            ledger.book.set_mark(mark)
        for rate in rates:
            ledger.fx.set(rate)
        self.committer.durable_sequence = ledger.applied_sequence
        self.checkpoints.resume(ledger, start)
        # A crash replays up to two intervals (checkpoints are written one round late); more
        # means short lives in a row (a crash loop): checkpoint now, before taking events, so
        # that the next start replays only what comes now. Not at two or less: writing a book
        # of a million rows costs about 8 s of a start.
        if replayed > 2 * self.checkpoints.every:
            self.checkpoints.save_recovered()
        through = store.views_recorded_through()
        backlog = list(store.events_after(through)) if through < ledger.applied_sequence else []
        if through < start:  # views behind the checkpoint: which rows changed is not known
            rows = [(r.copy(), ledger.book.mark(r.key.instrument_id)) for r in ledger.book.rows()]
        else:  # the latest copy of each
            rows = list({row.key: (row, mark) for row, mark in rows}.values())
        report = RecoveryReport(
            start, replayed, ledger.applied_sequence, time.perf_counter() - began, backlog, rows
        )
        _recovery_log.info(
            "recovered to sequence %d: checkpoint at %d, %d events replayed, %.2fs",
            report.sequence,
            report.checkpoint_sequence,
            report.replayed,
            report.seconds,
        )
        self._live = True
        return report

    def _window_differs(self, key: PositionKey) -> None:
        """A row whose restatement window, read back from the journal after the start (see
        restatement.Deferred), gave other figures than checkpointed: none unless a bug or a
        damaged checkpoint, so it is logged (the first, then one in a thousand), counted by the
        book (a metric), and turns health `books` NOT_SERVING as a misplaced fill does: the
        row's figures changed without a fill that explains it. During recovery (off the event
        loop) only the alert's time is kept; the start sets health from it."""
        count = self.ledger.book.windows_differ
        if count == 1 or count % 1000 == 0:
            _recovery_log.error(
                "a row's restatement window read back from the journal differs from its "
                "checkpointed figures (kept as the journal gives them; %d so far): %s",
                count,
                key,
            )
        self.misplaced_at = time.monotonic()
        if self._live:
            self.on_books(False)
