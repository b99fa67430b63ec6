"""Recovery on a real ArcticDB in LMDB leaves the rows' restatement windows in the journal
(restatement.Deferred), read in columns between the corrections and amendments: the ledger that
comes back, and everything it books after, equal a ledger that never stopped."""

from __future__ import annotations

import gc
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.application.ports import Checkpoint
from server.domain.events import ExecutionEvent
from server.domain.ledger import Ledger
from server.domain.restatement import JournaledFills
from server.domain.state import capture, capture_rows, restore
from server.storage.arctic import ArcticEventStore
from tests.domain.test_deferred_windows import WINDOW, arrivals, outcome_of, run
from tests.domain.test_execution_order import DEFINITIONS, book_state


def ledger() -> Ledger:
    return Ledger(correction_window_ns=WINDOW, restatement_window_ns=WINDOW)


def recovered(store: ArcticEventStore) -> Ledger:
    """What WritePath.recover does with the book (ids, traces and views aside)."""
    target = ledger()
    checkpoint = store.latest_checkpoint()
    assert checkpoint is not None
    restore(target, checkpoint.rows, checkpoint.state)
    target.applied_sequence = checkpoint.sequence
    if checkpoint.state.corrections_latest_ns:  # a fill before it (as recover has it)
        (latest,) = checkpoint.state.corrections_latest_ns
        horizon = latest - max(target.corrections.window_ns, target.book.window_ns)
        events = list(store.correctable_fills(horizon, checkpoint.sequence))
        assert all(len(event.sequences) for _, event in events if isinstance(event, JournaledFills))
        differ = target.reload_correctable(
            events, checkpoint.anchors, empty_anchors_left_out=checkpoint.empty_anchors_left_out
        )
        assert differ == []
    target.book.on_differ = _differs
    journal = list(store.events_after(0))
    for sequence, event in journal:  # every id seen (exactly-once), as recover does
        target.remember(event.kind, event.event_id, sequence, event.fingerprint())
    for sequence, event in journal:
        if sequence > checkpoint.sequence:  # the tail, replayed
            target.apply(event, sequence)
    return target


def _differs(key: object) -> None:
    raise AssertionError(f"a row's window read back from the journal differs: {key}")


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(arrivals(), st.data())
def test_recovery_from_the_store_then_more_events_gives_a_run_without_a_restart(arrival, data):
    straight = ledger()
    for definition in DEFINITIONS:
        straight.record(definition)
    expected = [outcome_of(straight.record(event)) for event in arrival]
    checkpointed = data.draw(st.integers(0, len(arrival)))
    stopped = data.draw(st.integers(checkpointed, len(arrival)))
    with tempfile.TemporaryDirectory() as tmp:
        store = ArcticEventStore(f"lmdb://{tmp}/store")
        live = ledger()
        events: list[ExecutionEvent] = [*DEFINITIONS, *arrival[:stopped]]
        outcomes = []
        for number, event in enumerate(events):
            outcome = live.record(event)
            if number >= len(DEFINITIONS):
                outcomes.append(outcome_of(outcome))
            if outcome.sequence:
                store.append([(outcome.sequence, event)])
            if number == len(DEFINITIONS) + checkpointed - 1:
                store.save_checkpoint(
                    Checkpoint(
                        live.applied_sequence, capture_rows(live), capture(live),
                        live.book.anchors(),
                    )
                )  # fmt: skip
        after = recovered(store)
        outcomes += run(after, arrival[stopped:])
        store.close()
        del store
        gc.collect()  # LMDB: one open instance per path and process
    assert outcomes == expected
    assert book_state(after) == book_state(straight)
