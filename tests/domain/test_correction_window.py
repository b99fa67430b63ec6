"""The correction window kept compactly (a hash and a journal sequence per fill, the fill read
back when a correction comes) corrects exactly as the window that keeps every fill: with
hashes that collide, fills leaving the window, and a restart that reloads it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.corrections import CorrectableFills
from server.domain.events import ExecutionEvent
from server.domain.ledger import Ledger, Result
from server.domain.seen import SeenIds
from tests.domain.builders import BASE_NS, fill
from tests.domain.event_builders import correction
from tests.domain.restart import restore_checkpoint

SECOND = 10**9
WINDOW = 10 * SECOND


def tiny_hash(account_id: str, event_id: str) -> int:
    return sum(event_id.encode()) % 3  # most fills share a hash with others


class Journal:
    def __init__(self) -> None:
        self.events: dict[int, ExecutionEvent] = {}
        self.reads = 0
        self.broken = False

    def event_at(self, sequence: int) -> ExecutionEvent | None:
        if self.broken:
            raise OSError("store unreachable")
        self.reads += 1
        return self.events.get(sequence)


def compact_ledger(journal: Journal) -> Ledger:
    ledger = Ledger(correction_window_ns=WINDOW, journal=journal.event_at)
    ledger.corrections = CorrectableFills(
        WINDOW, journal.event_at, hash_key=tiny_hash, partition_bits=1, merge_at_least=1
    )  # merged at every fill: the columns answer, not the dicts
    ledger.seen = SeenIds(journal.event_at, hash_id=tiny_hash, merge_at_least=1)
    return ledger


def commit(ledger: Ledger, journal: Journal, event: ExecutionEvent):
    outcome = ledger.admit(event)
    if outcome.result is Result.ACCEPTED:
        journal.events[outcome.sequence] = event
        ledger.apply(event, outcome.sequence)
    return outcome


def restarted(live: Ledger, journal: Journal) -> Ledger:
    """What recovery does: the checkpoint, every id, the window's fills and every correction
    reloaded from the journal."""
    ledger = compact_ledger(journal)
    for sequence, event in sorted(journal.events.items()):
        ledger.remember(event.kind, event.event_id, sequence, event.fingerprint())
    restore_checkpoint(ledger, live, journal.events.items())
    return ledger


def rows(ledger: Ledger):
    return sorted((row.key, row.quantity, row.cost_basis, row.fees) for row in ledger.book.rows())


STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("fill"), st.integers(0, 8), st.integers(0, 4)),
        st.tuples(st.just("correct"), st.integers(0, 8), st.integers(0, 2)),
        st.tuples(st.just("restart")),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(STEPS)
def test_corrects_exactly_as_the_window_that_keeps_every_fill(steps):
    journal = Journal()
    compact = compact_ledger(journal)
    reference = Ledger(correction_window_ns=WINDOW)
    clock = BASE_NS
    ids: list[str] = []
    for number, step in enumerate(steps):
        if step[0] == "restart":
            compact = restarted(compact, journal)
            continue
        if step[0] == "fill":
            _, quantity, seconds = step
            clock += seconds * 3 * SECOND  # now and then past the window
            event: ExecutionEvent = fill("BUY", quantity + 1, 10, fill_id=f"f{number}", at_ns=clock)
        else:
            _, target, price = step
            named = ids[target % len(ids)] if ids else "none"
            event = correction(named, "SELL", target + 1, price + 5, correction_id=f"c{number}",
                               at_ns=clock)  # fmt: skip
        ids.append(event.event_id)
        expected = reference.record(event)
        got = commit(compact, journal, event)
        assert (got.result, got.sequence, got.reason) == (
            expected.result,
            expected.sequence,
            expected.reason,
        )
        assert got.result is Result.REJECTED or (
            reference.refusals.get(got.sequence) == compact.refusals.get(got.sequence)
        )
        assert rows(compact) == rows(reference)
        assert len(compact.corrections) == len(reference.corrections)


def test_a_fill_in_the_window_is_read_back_only_when_a_correction_comes():
    journal = Journal()
    ledger = Ledger(journal=journal.event_at)
    for number in range(200):
        commit(ledger, journal, fill("BUY", 1, 10, fill_id=f"f{number}"))
    assert journal.reads == 0
    fixed = correction("f7", "BUY", 2, 10, correction_id="f7.fix")
    assert commit(ledger, journal, fixed).result is Result.ACCEPTED
    assert journal.reads == 1  # read at admission, not again when applied
    account = [row for row in ledger.book.rows() if row.key.strategy_id == ""]
    assert [row.quantity for row in account] == [201]


def test_an_unreadable_journal_refuses_a_correction_for_now_and_changes_nothing():
    journal = Journal()
    ledger = Ledger(journal=journal.event_at)
    commit(ledger, journal, fill("BUY", 1, 10, fill_id="x.01"))
    journal.broken = True
    fixed = correction("x.01", "BUY", 2, 10, correction_id="x.02")
    refused = ledger.admit(fixed)
    assert refused.result is Result.REJECTED and "retry" in refused.reason
    assert ledger.sequence == 1
    journal.broken = False
    assert commit(ledger, journal, fixed).result is Result.ACCEPTED
    assert [row.quantity for row in ledger.book.rows()] == [2, 2]
