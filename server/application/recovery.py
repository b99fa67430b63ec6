"""Recovery: the state after a restart equals the state before, field for field.

The latest checkpoint gives the book at sequence S; every journaled id is remembered (so a fill
replayed by the relay is a duplicate); the journal after S is applied again and published,
which refills the subscribers' replay buffer; traces still alive are rebuilt from the journal.
A replay longer than one checkpoint interval is checkpointed at once, so starts that follow
one another quickly (a crash loop) never replay more and more.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from server.application.ports import EventStore, Sequenced
from server.application.service import PortfolioService
from server.domain.position import Position
from server.domain.state import restore

log = logging.getLogger("portfolio.recovery")


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    checkpoint_sequence: int
    replayed: int
    sequence: int
    seconds: float
    # What the analysts' views miss: journaled events, and every row (they are rewritten).
    views_backlog: list[Sequenced] = field(default_factory=list)
    rows: list[tuple[Position, Decimal]] = field(default_factory=list)


def recover(service: PortfolioService[Any], store: EventStore) -> RecoveryReport:
    began = time.perf_counter()
    ledger = service.ledger
    checkpoint = store.latest_checkpoint()
    start = 0
    if checkpoint is not None:
        restore(ledger, checkpoint.rows, checkpoint.state)
        start = ledger.applied_sequence = checkpoint.sequence
    for seen in store.seen_events():
        ledger.remember(seen.kind, seen.event_id, seen.sequence, seen.fingerprint)
    ledger.seen.settle()  # sorted here, off the event loop
    horizon = time.time_ns() - ledger.traces.ttl_ns  # traces live a TTL from their receipt
    for sequence, fill, received_ns in store.traced_fills_received_since(horizon, start):
        multiplier = ledger.instruments.multiplier(fill.instrument_id)
        ledger.traces.record(fill, sequence, multiplier, received_ns)
    if checkpoint is not None and checkpoint.state.corrections_latest_ns:
        (latest,) = checkpoint.state.corrections_latest_ns
        horizon = latest - max(ledger.corrections.window_ns, ledger.book.window_ns)
        differ = ledger.reload_correctable(
            store.correctable_fills(horizon, start), checkpoint.anchors
        )
        if differ:
            log.error(
                "%d rows rebuilt from their restatement windows differ from the checkpoint "
                "(kept as the journal gives them), first %s",
                len(differ),
                differ[0],
            )
    service.hub.reset(start)
    tail: list[Sequenced] = []
    for sequence, event in store.events_after(start):
        if sequence <= ledger.applied_sequence or (tail and sequence == tail[-1][0]):
            continue  # a row journaled twice (an append retried after it had landed)
        tail.append((sequence, event))
    service.replay(tail)
    ledger.traces.received(store.received_by(ledger.applied_sequence))  # the tail's legs
    replayed = len(tail)
    marks, rates = store.latest_marks()
    for mark in marks:  # one older than the checkpoint's is ignored
        ledger.book.set_mark(mark)
    for rate in rates:
        ledger.fx.set(rate)
    service.committer.durable_sequence = ledger.applied_sequence
    service.checkpoints.resume(ledger, start)
    if replayed >= service.checkpoints.every:
        service.checkpoints.save_recovered()  # the next start replays only what comes now
    through = store.views_recorded_through()
    backlog = list(store.events_after(through)) if through < ledger.applied_sequence else []
    rows = [(row.copy(), ledger.book.mark(row.key.instrument_id)) for row in ledger.book.rows()]
    report = RecoveryReport(
        start, replayed, ledger.applied_sequence, time.perf_counter() - began, backlog, rows
    )
    log.info(
        "recovered to sequence %d: checkpoint at %d, %d events replayed, %.2fs",
        report.sequence,
        report.checkpoint_sequence,
        report.replayed,
        report.seconds,
    )
    return report
