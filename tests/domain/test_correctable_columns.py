"""The correctable fills kept as sorted columns answer as if every fill had been added one at a
time: fills loaded at once (a restart) or one by one, merged often or never, with hashes that
collide, corrections, and fills leaving the window."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.corrections import CorrectableFills
from server.domain.events import ExecutionEvent, Fill
from tests.domain.builders import BASE_NS, fill

SECOND = 10**9
WINDOW = 10 * SECOND


def tiny_hash(account_id: str, event_id: str) -> int:
    return sum(event_id.encode()) % 3  # most fills share a hash with others


def high_hash(account_id: str, event_id: str) -> int:
    """Collides as often as tiny_hash, in every partition (the top bits vary)."""
    return (sum(event_id.encode()) % 5) << 61 | len(account_id)


GROUPS = st.lists(
    st.one_of(
        # fills journaled together: (account, seconds after the previous fill)
        st.lists(
            st.tuples(st.sampled_from(["A1", "A2"]), st.integers(0, 6)), min_size=1, max_size=12
        ),
        st.tuples(st.just("correct"), st.integers(0, 40)),
    ),
    max_size=20,
)


def answer(fills: CorrectableFills, account_id: str, fill_id: str) -> object:
    found = fills.find(account_id, fill_id)
    if found is None:
        return None
    original, booked = found
    return original, booked.event_id, booked.sequence, booked.timestamp_ns, booked.fill


@pytest.mark.parametrize("hash_key", [None, tiny_hash, high_hash])
@settings(max_examples=120, deadline=None)
@given(GROUPS)
def test_fills_added_at_once_answer_as_fills_added_one_by_one(hash_key, groups) -> None:
    journal: dict[int, ExecutionEvent] = {}
    one_by_one = CorrectableFills(WINDOW)  # no journal: keeps the events, never merges early
    merged_often = CorrectableFills(
        WINDOW, journal.get, hash_key=hash_key, partition_bits=2, merge_at_least=1
    )
    at_once = CorrectableFills(
        WINDOW, journal.get, hash_key=hash_key, partition_bits=2, merge_at_least=1
    )
    default = CorrectableFills(WINDOW, journal.get, hash_key=hash_key)
    compact = (merged_often, at_once, default)
    clock, sequence = BASE_NS, 0
    ids: list[tuple[str, str]] = []
    for group in groups:
        if group[0] == "correct":
            if not ids:
                continue
            account_id, named = ids[group[1] % len(ids)]
            found = one_by_one.find(account_id, named)
            sequence += 1
            fixed = fill("SELL", 2, 11, account=account_id, fill_id=f"c{sequence}", at_ns=clock)
            journal[sequence] = fixed
            original = found[0] if found else named
            for fills in (one_by_one, *compact):
                fills.replace(account_id, original, fixed, sequence)
            ids.append((account_id, fixed.fill_id))
        else:
            batch: list[tuple[int, Fill]] = []
            for account_id, seconds in group:
                clock += seconds * SECOND
                sequence += 1
                event = fill("BUY", 1, 10, account=account_id, fill_id=f"f{sequence}", at_ns=clock)
                journal[sequence] = event
                batch.append((sequence, event))
                ids.append((account_id, event.fill_id))
            for number, event in batch:
                one_by_one.add(event, number)
                merged_often.add(event, number)
            for fills in (at_once, default):
                fills.add_columns(
                    [event.account_id for _, event in batch],
                    [event.fill_id for _, event in batch],
                    [number for number, _ in batch],
                    [event.timestamp_ns for _, event in batch],
                )
        expected = len(one_by_one)
        assert [len(fills) for fills in compact] == [expected] * 3
        for account_id, fill_id in [*ids, ("A1", "never")]:
            wanted = answer(one_by_one, account_id, fill_id)
            for fills in compact:
                assert answer(fills, account_id, fill_id) == wanted


def test_a_restart_loads_a_large_window_at_once_and_keeps_it_small() -> None:
    """Fills loaded at once land in the columns (24 bytes each), not one dict entry each; a
    fill of them stays correctable and a later fill leaving the window is dropped at a merge."""
    journal: dict[int, ExecutionEvent] = {}
    count = 5000
    for number in range(1, count + 1):
        journal[number] = fill("BUY", 1, 10, fill_id=f"f{number}", at_ns=BASE_NS + number)
    fills = CorrectableFills(WINDOW, journal.get)
    fills.add_columns(
        ["A1"] * count, [f"f{n}" for n in range(1, count + 1)], list(range(1, count + 1)),
        [BASE_NS + n for n in range(1, count + 1)],
    )  # fmt: skip
    assert len(fills) == count
    assert fills.nbytes() == 24 * count
    found = fills.find("A1", "f1234")
    assert found is not None and found[1].fill == journal[1234]
    later = fill("BUY", 1, 10, fill_id="late", at_ns=BASE_NS + WINDOW + count + 1)
    journal[count + 1] = later
    fills.add(later, count + 1)  # every earlier fill has left the window
    assert len(fills) == 1
    assert fills.find("A1", "f1234") is None


def test_sequences_out_of_range_are_refused_at_once_too() -> None:
    fills = CorrectableFills(WINDOW, {}.get, merge_at_least=1)
    with pytest.raises(ValueError, match="out of range"):
        fills.add_columns(["A1", "A1"], ["a", "b"], [1, 0], [BASE_NS, BASE_NS])
    assert len(fills) == 0


def test_a_window_longer_than_the_columns_can_count_still_forgets_a_corrected_fill() -> None:
    """A corrected fill's merged entry is marked with the lowest time there is; a window so
    long that its horizon is lower still must not bring the entry back."""
    journal: dict[int, ExecutionEvent] = {}
    journal[1] = fill("BUY", 1, 10, fill_id="a", at_ns=BASE_NS)
    fills = CorrectableFills(1 << 64, journal.get, merge_at_least=1)
    fills.add(journal[1], 1)  # merged into the columns at once
    fixed = journal[2] = fill("BUY", 2, 10, fill_id="a.2", at_ns=BASE_NS)
    fills.replace("A1", "a", fixed, 2)
    assert len(fills) == 1
    found = fills.find("A1", "a")
    assert found is not None and found[1].event_id == "a.2"
    other = journal[3] = fill("BUY", 3, 10, fill_id="b", at_ns=BASE_NS + 1)
    fills.add(other, 3)
    assert len(fills) == 2
