"""A ledger's journal and what recovery does with it, without a store: events recorded with
their sequences, and a checkpoint of a live ledger put back into an empty one, then the
journal's fills inside the windows reloaded (the correctable fills and the rows' restatement
windows)."""

from __future__ import annotations

from collections.abc import Iterable

from server.domain.corrections import JournaledFill
from server.domain.events import CommissionAmendment, ExecutionEvent, Fill, FillCorrection
from server.domain.ledger import Ledger, Result
from server.domain.state import capture, capture_rows, restore


def record(ledger: Ledger, *events: ExecutionEvent) -> list[tuple[int, ExecutionEvent]]:
    """Records events that must be accepted; returns them as the journal holds them."""
    journaled = []
    for event in events:
        outcome = ledger.record(event)
        assert outcome.result is Result.ACCEPTED, (event, outcome.reason)
        journaled.append((outcome.sequence, event))
    return journaled


def journaled(fill: Fill) -> JournaledFill:
    """A fill as a restart reads it from the journal (its row's ids, its time, its text)."""
    return JournaledFill(
        fill.account_id, fill.strategy_id, fill.instrument_id, fill.fill_id, fill.timestamp_ns,
        fill.text(),
    )  # fmt: skip


def restore_checkpoint(
    target: Ledger, live: Ledger, journal: Iterable[tuple[int, ExecutionEvent]]
) -> None:
    """Puts `live`'s checkpoint into `target`; `journal` is every event journaled so far."""
    restore(target, capture_rows(live), capture(live))
    target.applied_sequence = live.applied_sequence
    horizon = live.corrections.latest_ns - max(live.corrections.window_ns, live.book.window_ns)
    differ = target.reload_correctable(
        (
            (sequence, journaled(e)) if isinstance(e, Fill) else (sequence, e)
            for sequence, e in sorted(journal, key=lambda item: item[0])
            if isinstance(e, FillCorrection | CommissionAmendment)
            or (isinstance(e, Fill) and e.timestamp_ns >= horizon)
        ),
        live.book.anchors(),
    )
    assert differ == [], f"rows rebuilt from their windows differ: {differ}"
    target.book.on_differ = _differs  # a window read back later (restatement.Deferred)


def _differs(key: object) -> None:
    raise AssertionError(f"a row's window read back from the journal differs: {key}")
