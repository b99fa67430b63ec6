"""The compact set of ids seen answers exactly as a dict of every id would: a new event is
never taken for a duplicate, a replay is a duplicate with its original sequence, an id reused
for other content is rejected, across merges, hash collisions and restarts."""

from __future__ import annotations

import hashlib
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.events import ExecutionEvent
from server.domain.ledger import Ledger, Result
from server.domain.seen import JournalUnreadable, SeenIds
from tests.domain.builders import fill


def digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1


def tiny_hash(kind: str, event_id: str) -> int:
    """Three values for every id there is: most ids collide with others."""
    return sum(event_id.encode()) % 3


class Journal:
    """What the store would hold: events by sequence, read back one at a time."""

    def __init__(self) -> None:
        self.events: dict[int, ExecutionEvent] = {}
        self.reads: list[int] = []
        self.broken = False

    def event_at(self, sequence: int) -> ExecutionEvent | None:
        if self.broken:
            raise OSError("disk gone")
        assert sequence in self.events, f"asked for sequence {sequence}, not journaled yet"
        self.reads.append(sequence)
        return self.events.get(sequence)


def compact_ledger(journal: Journal, **seen_options: object) -> Ledger:
    ledger = Ledger(journal=journal.event_at)
    options = {"hash_id": tiny_hash, "partition_bits": 1, "merge_at_least": 1} | seen_options
    ledger.seen = SeenIds(journal.event_at, **options)  # type: ignore[arg-type]
    return ledger


def version(fill_id: str, content: int):
    return fill("BUY", content + 1, 10, fill_id=fill_id, at_ns=1_000 + content)


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, 12), st.integers(0, 2)),
        st.tuples(st.just("commit")),
        st.tuples(st.just("restart")),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(OPERATIONS)
def test_answers_exactly_as_a_dict_of_every_id(operations):
    journal = Journal()
    ledger = compact_ledger(journal)
    expected: dict[str, tuple[int, int]] = {}  # fill id -> (sequence, content)
    pending: list[tuple[int, ExecutionEvent]] = []  # admitted, not journaled yet
    for operation in operations:
        if operation[0] == "send":
            _, number, content = operation
            event = version(f"f{number}", content)
            outcome = ledger.admit(event)
            known = expected.get(event.fill_id)
            if known is None:
                assert outcome.result is Result.ACCEPTED
                assert outcome.sequence == max(ledger.applied_sequence, *journal.events, 0) + 1 + (
                    len(pending)
                )
                expected[event.fill_id] = (outcome.sequence, content)
                pending.append((outcome.sequence, event))
            elif known[1] == content:
                assert (outcome.result, outcome.sequence) == (Result.DUPLICATE, known[0])
            else:
                assert outcome.result is Result.REJECTED
                assert f"sequence {known[0]}" in outcome.reason
        elif operation[0] == "commit":
            for sequence, event in pending:
                journal.events[sequence] = event
                ledger.apply(event, sequence)
            pending = []
        else:  # a crash: what was not journaled is gone, and so is its id
            for _, event in pending:
                del expected[event.event_id]
            pending = []
            ledger = compact_ledger(journal)
            rows = sorted(journal.events.items())
            for sequence, event in rows + rows[-1:]:  # the last row journaled twice
                ledger.remember(event.kind, event.event_id, sequence, event.fingerprint())
            ledger.applied_sequence = ledger.sequence
    assert len(ledger.seen) == len(expected)


def test_a_hash_collision_is_settled_by_the_journal():
    journal = Journal()
    seen = SeenIds(journal.event_at, hash_id=lambda kind, event_id: 7, merge_at_least=1)
    first = version("a", 0)
    journal.events[1] = first
    seen.add("fill", "a", 1, first.fingerprint())
    seen.journaled(1)
    seen.add("fill", "z", 2, 99)  # merges "a" into the arrays
    journal.events[2] = version("z", 0)
    seen.journaled(2)
    seen.add("fill", "y", 3, 98)  # merges "z"
    other = version("b", 0)  # same hash as "a", another id
    assert seen.find("fill", "b", other.fingerprint()) is None
    assert sorted(journal.reads) == [1, 2]  # both candidates were read, and neither is "b"
    journal.reads.clear()
    assert seen.find("fill", "a", first.fingerprint()) == (1, first.fingerprint())
    assert journal.reads == []  # a duplicate needs no read
    assert seen.find("fill", "a", version("a", 1).fingerprint()) == (1, first.fingerprint())
    assert journal.reads == [1]
    assert seen.find("fill", "a", version("a", 2).fingerprint()) == (1, first.fingerprint())
    assert journal.reads == [1]  # a reused id resent: its read is kept


def test_an_id_not_journaled_yet_is_never_read_back():
    journal = Journal()
    seen = SeenIds(journal.event_at, hash_id=lambda kind, event_id: 7, merge_at_least=1)
    for sequence in range(1, 50):
        seen.add("fill", f"f{sequence}", sequence, sequence)  # nothing journaled
    assert seen.nbytes() == 0
    assert seen.find("fill", "f3", 3) == (3, 3)
    assert seen.find("fill", "new", 1234) is None
    assert journal.reads == []


def test_many_ids_across_merges_and_a_restart():
    journal = Journal()
    seen = SeenIds(journal.event_at, partition_bits=2, merge_at_least=8)
    prints = {f"id{i}": digest(f"id{i}") for i in range(5000)}
    for sequence, (event_id, fingerprint) in enumerate(prints.items(), 1):
        assert seen.find("fill", event_id, fingerprint) is None
        seen.add("fill", event_id, sequence, fingerprint)
        seen.journaled(sequence - 3)  # the group commit a few events behind
    assert seen.nbytes() >= 24 * 4000  # most are in the arrays
    restarted = SeenIds(journal.event_at, partition_bits=2, merge_at_least=8)
    for sequence, (event_id, fingerprint) in enumerate(prints.items(), 1):
        restarted.remember("fill", event_id, sequence, fingerprint)
    for ids in (seen, restarted):
        assert len(ids) == 5000
        for sequence, (event_id, fingerprint) in enumerate(prints.items(), 1):
            assert ids.find("fill", event_id, fingerprint) == (sequence, fingerprint)
            assert ids.find("status", event_id, fingerprint) is None
        assert ids.find("fill", "id-new", 1) is None
    assert journal.reads == []  # no collisions, no reused ids: the journal was never read


def test_an_unreadable_journal_refuses_for_now_and_changes_nothing():
    journal = Journal()
    ledger = compact_ledger(journal, hash_id=lambda kind, event_id: 7)
    for number in range(3):
        event = version(f"f{number}", 0)
        outcome = ledger.admit(event)
        journal.events[outcome.sequence] = event
        ledger.apply(event, outcome.sequence)
    assert ledger.admit(version("f0", 0)).result is Result.DUPLICATE
    journal.broken = True
    refused = ledger.admit(version("new", 0))
    assert refused.result is Result.REJECTED and "retry" in refused.reason
    assert ledger.sequence == 3
    journal.broken = False
    assert ledger.admit(version("new", 0)).sequence == 4


def test_without_a_journal_nothing_is_merged():
    seen = SeenIds(hash_id=lambda kind, event_id: 7, merge_at_least=1)
    for sequence in range(1, 100):
        seen.add("fill", f"f{sequence}", sequence, sequence)
        seen.journaled(sequence)
    assert seen.nbytes() == 0
    assert seen.find("fill", "f5", 0) == (5, 5)
    assert seen.find("fill", "f100", 0) is None


@pytest.mark.parametrize("quantity", [Decimal(3)])
def test_a_service_ledger_replays_and_rejects_as_before(quantity):
    journal = Journal()
    ledger = Ledger(journal=journal.event_at)
    event = fill("BUY", quantity, 10, fill_id="x")
    outcome = ledger.admit(event)
    journal.events[outcome.sequence] = event
    ledger.apply(event, outcome.sequence)
    assert ledger.admit(event).result is Result.DUPLICATE
    assert ledger.admit(fill("BUY", quantity + 1, 10, fill_id="x")).result is Result.REJECTED


def test_a_journal_error_is_not_a_new_id():
    journal = Journal()
    seen = SeenIds(journal.event_at, hash_id=lambda kind, event_id: 7, merge_at_least=1)
    journal.events[1] = version("a", 0)
    seen.add("fill", "a", 1, 5)
    seen.journaled(1)
    seen.add("fill", "b", 2, 6)
    journal.broken = True
    with pytest.raises(JournalUnreadable):
        seen.find("fill", "c", 7)


@pytest.mark.parametrize("hash_id", [None, tiny_hash], ids=["siphash", "colliding"])
def test_remembering_the_journal_at_once_answers_as_one_id_at_a_time(hash_id) -> None:
    """A restart remembers the journal's ids as columns (remember_all): the answers, for ids
    seen, ids reused and new ids, are those of remembering them one by one; a row journaled
    twice counts once."""
    journal = Journal()
    rows = []
    for sequence in range(1, 41):
        event = version(f"f{sequence % 30}", sequence)  # ids 0-9 come back with new content
        journal.events[sequence] = event
        rows.append(("fill", event.event_id, sequence, digest(event.text())))
    rows.append(rows[-1])  # an append retried after it landed
    one_by_one = SeenIds(journal.event_at, hash_id=hash_id)
    for row in rows:
        one_by_one.remember(*row)
    at_once = SeenIds(journal.event_at, hash_id=hash_id)
    kinds, event_ids, sequences, fingerprints = (list(column) for column in zip(*rows, strict=True))
    at_once.remember_all(kinds, event_ids, sequences, fingerprints)

    assert len(at_once) == len(one_by_one) == 40
    for sequence in range(1, 60):
        event = version(f"f{sequence % 35}", sequence)
        fingerprint = digest(event.text())
        assert at_once.find("fill", event.event_id, fingerprint) == one_by_one.find(
            "fill", event.event_id, fingerprint
        )
