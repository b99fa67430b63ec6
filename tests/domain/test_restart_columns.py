"""A restart hashes and sorts millions of journaled ids in numpy (no Python object per id): the
columns answer exactly as the same ids taken one at a time, and numpy's values never leak into
the ledger's own figures."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.corrections import CorrectableFills
from server.domain.events import ExecutionEvent
from server.domain.ledger import Ledger
from server.domain.seen import SeenIds, by_partition, hash_order, id_hash, id_hashes
from tests.domain.builders import BASE_NS, fill

TEXTS = st.text(max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(TEXTS, TEXTS), max_size=40))
def test_a_column_of_ids_hashes_as_each_id_alone(pairs) -> None:
    kinds = [kind for kind, _ in pairs]
    event_ids = [event_id for _, event_id in pairs]
    hashes = id_hashes(kinds, event_ids)
    assert hashes.dtype == np.uint64
    assert [int(h) for h in hashes] == [id_hash(kind, event_id) for kind, event_id in pairs]
    assert all(0 <= id_hash(kind, event_id) < 1 << 64 for kind, event_id in pairs)


def test_a_kind_and_an_id_swapped_hash_apart() -> None:
    assert id_hash("fill", "order") != id_hash("order", "fill")
    assert id_hash("a", "a") != id_hash("b", "b")


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(0, (1 << 64) - 1), max_size=300),
    st.integers(1, 4),
    st.booleans(),
)
def test_grouped_by_partition_then_sorted_is_a_stable_sort(values, bits, narrow) -> None:
    """Grouping by the top bits, then sorting each group (ties put back in position order),
    gives the order of one stable sort of them all."""
    if narrow:  # many equal hashes
        values = [value % 5 << 61 for value in values]
    hashes = np.array(values, dtype=np.uint64)
    grouped, bounds = by_partition(hashes, 64 - bits, 1 << bits)
    assert bounds[0] == 0 and bounds[-1] == len(values) and len(bounds) == (1 << bits) + 1
    order = []
    for start, stop in itertools.pairwise(bounds):
        own = hashes[grouped[start:stop]]
        within, shared = hash_order(own)
        assert shared == (len(set(own.tolist())) < len(own))
        if shared:
            within = np.argsort(own, kind="stable")
        order.extend(grouped[start:stop][within].tolist())
    assert order == np.argsort(hashes, kind="stable").tolist()


def digest(text: str) -> int:
    return hash(text) & ((1 << 62) - 1)


def tiny_hash(kind: str, event_id: str) -> int:
    return sum(event_id.encode()) % 3


@pytest.mark.parametrize("hash_id", [None, tiny_hash], ids=["siphash", "colliding"])
def test_seen_ids_from_numpy_columns_answer_as_from_lists(hash_id) -> None:
    """A restart hands the journal's sequences and fingerprints as numpy columns: the answers
    are those of lists, a row journaled twice counts once, and the ledger's sequence stays a
    Python int (a numpy one would leak into every later sequence)."""
    journal: dict[int, ExecutionEvent] = {}
    rows = []
    for sequence in range(1, 61):
        event = fill("BUY", sequence, 10, fill_id=f"f{sequence % 45}", at_ns=BASE_NS + sequence)
        journal[sequence] = event
        rows.append(("fill", event.event_id, sequence, digest(event.text())))
    rows.append(rows[-1])  # an append retried after it landed
    kinds, event_ids, sequences, fingerprints = (list(column) for column in zip(*rows, strict=True))
    from_lists = SeenIds(journal.get, hash_id=hash_id)
    from_lists.remember_all(kinds, event_ids, sequences, fingerprints)
    ledger = Ledger(journal=journal.get)
    ledger.seen = SeenIds(journal.get, hash_id=hash_id, merge_at_least=1)
    ledger.remember_all(
        kinds, event_ids, np.array(sequences, np.int64), np.array(fingerprints, np.int64)
    )
    assert type(ledger.sequence) is int and ledger.sequence == 60
    assert len(ledger.seen) == len(from_lists) == 60
    for sequence in range(1, 80):
        event = fill("BUY", sequence, 10, fill_id=f"f{sequence % 50}", at_ns=BASE_NS + sequence)
        fingerprint = digest(event.text())
        wanted = from_lists.find("fill", event.event_id, fingerprint)
        assert ledger.seen.find("fill", event.event_id, fingerprint) == wanted
        if wanted is not None:
            assert all(type(part) is int for part in wanted)


def test_remembering_nothing_changes_nothing() -> None:
    ledger = Ledger(journal={}.get)
    ledger.remember_all([], [], np.empty(0, np.int64), np.empty(0, np.int64))
    assert ledger.sequence == 0 and len(ledger.seen) == 0


@pytest.mark.parametrize("hash_key", [None, tiny_hash], ids=["siphash", "colliding"])
def test_correctable_fills_from_numpy_columns_answer_as_from_lists(hash_key) -> None:
    journal: dict[int, ExecutionEvent] = {}
    count = 400
    for number in range(1, count + 1):
        journal[number] = fill(
            "BUY", 1, 10, account=f"A{number % 3}", fill_id=f"f{number}", at_ns=BASE_NS + number
        )
    columns = (
        [journal[n].account_id for n in journal],
        [journal[n].event_id for n in journal],
        list(journal),
        [journal[n].timestamp_ns for n in journal],
    )
    from_lists = CorrectableFills(10**12, journal.get, hash_key=hash_key)
    from_lists.add_columns(*columns)
    from_arrays = CorrectableFills(10**12, journal.get, hash_key=hash_key)
    from_arrays.add_columns(
        columns[0], columns[1], np.array(columns[2], np.int64), np.array(columns[3], np.int64)
    )
    assert len(from_arrays) == len(from_lists) == count
    assert type(from_arrays.latest_ns) is int and from_arrays.latest_ns == BASE_NS + count
    for number in [*range(1, count + 1, 7), count + 5]:
        account_id, fill_id = f"A{number % 3}", f"f{number}"
        wanted = from_lists.find(account_id, fill_id)
        found = from_arrays.find(account_id, fill_id)
        if wanted is None:
            assert found is None
            continue
        assert found is not None and found[0] == wanted[0]
        assert (found[1].sequence, found[1].timestamp_ns, found[1].fill) == (
            wanted[1].sequence, wanted[1].timestamp_ns, wanted[1].fill,
        )  # fmt: skip
        assert type(found[1].sequence) is int and type(found[1].timestamp_ns) is int
