"""The filter in front of the sorted hashes never loses an id: every id journaled is found,
across merges, the filter's growth and a restart's bulk load, and every fill in the
correction window is found, across merges, evictions and a bulk load."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.corrections import CorrectableFills
from server.domain.events import ExecutionEvent, Fill
from server.domain.seen import HashFilter, SeenIds, id_hash
from tests.domain.builders import fill

hashes_64 = st.integers(min_value=0, max_value=(1 << 64) - 1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(hashes_64, max_size=300), max_size=8))
def test_a_filter_holds_every_hash_added_across_rebuilds(batches: list[list[int]]) -> None:
    table = HashFilter()
    held: list[int] = []
    for batch in batches:
        column = np.array(batch, np.uint64)
        held += batch
        if table.add(column):
            table.rebuild(np.array(held, np.uint64))
        assert all(hashed in table for hashed in held)


def test_a_filter_says_no_to_most_hashes_it_does_not_hold() -> None:
    held = np.random.default_rng(1).integers(0, 1 << 63, 100_000, np.int64).view(np.uint64)
    table = HashFilter()
    table.rebuild(held)
    others = np.random.default_rng(2).integers(0, 1 << 63, 10_000, np.int64).tolist()
    assert sum(hashed in table for hashed in others) < 500  # about 1.4% at 16 to 32 bits an id
    assert table.nbytes() <= 4 * len(held)  # at most 32 bits an id


class NoJournal:
    """Journal reads would mean a hash hit with another fingerprint: none here."""

    def event_at(self, sequence: int) -> ExecutionEvent | None:
        raise AssertionError(f"read sequence {sequence}")


ids = st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=400, unique=True)


@settings(max_examples=40, deadline=None)
@given(ids, st.integers(1, 4), st.integers(0, 3), st.integers(0, 400), st.integers(0, 5))
def test_every_id_added_is_found_across_merges_and_a_restart(
    event_ids: list[str], merge_at_least: int, partition_bits: int, restart_after: int, lag: int
) -> None:
    """`lag`: the journal is that many events behind admission (those ids wait unmerged)."""

    def fingerprint(event_id: str) -> int:
        return id_hash("fp", event_id) >> 1

    def open_seen() -> SeenIds:
        return SeenIds(
            NoJournal().event_at, partition_bits=partition_bits, merge_at_least=merge_at_least
        )

    seen = open_seen()
    journaled: list[tuple[str, int]] = []
    for sequence, event_id in enumerate(event_ids, start=1):
        if sequence == restart_after:  # a restart: the journal's ids loaded in columns
            seen = open_seen()
            latest = seen.remember_all(
                ["fill"] * len(journaled),
                [event_id for event_id, _ in journaled],
                [sequence for _, sequence in journaled],
                [fingerprint(event_id) for event_id, _ in journaled],
            )
            assert latest == len(journaled)
        assert seen.find("fill", event_id, fingerprint(event_id)) is None
        seen.add("fill", event_id, sequence, fingerprint(event_id))
        seen.journaled(sequence - lag)
        journaled.append((event_id, sequence))
        for earlier, at in journaled[-8:]:
            assert seen.find("fill", earlier, fingerprint(earlier)) == (at, fingerprint(earlier))
    for earlier, at in journaled:
        assert seen.find("fill", earlier, fingerprint(earlier)) == (at, fingerprint(earlier))


def test_ids_loaded_one_at_a_time_at_a_restart_are_found_after_later_merges() -> None:
    seen = SeenIds(NoJournal().event_at, partition_bits=2, merge_at_least=2)
    for sequence in range(1, 2001):
        seen.remember("fill", f"old-{sequence}", sequence, sequence)
    for sequence in range(2001, 2501):
        seen.add("fill", f"new-{sequence}", sequence, sequence)
        seen.journaled(sequence)
    for sequence in range(1, 2001):
        assert seen.find("fill", f"old-{sequence}", sequence) == (sequence, sequence)
    for sequence in range(2001, 2501):
        assert seen.find("fill", f"new-{sequence}", sequence) == (sequence, sequence)
    assert seen.find("fill", "never", 1) is None


class Journal:
    def __init__(self) -> None:
        self.fills: dict[int, Fill] = {}

    def event_at(self, sequence: int) -> ExecutionEvent | None:
        return self.fills.get(sequence)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 300), st.integers(1, 4), st.integers(0, 300), st.integers(20, 400))
def test_every_fill_in_the_window_is_found_across_merges_and_a_bulk_load(
    count: int, merge_at_least: int, bulk_at: int, window: int
) -> None:
    journal = Journal()
    window_ns = window * 10**9
    corrections = CorrectableFills(
        window_ns, journal.event_at, partition_bits=2, merge_at_least=merge_at_least
    )
    booked: list[tuple[int, Fill]] = []
    for sequence in range(1, count + 1):
        event = fill("BUY", 1, 10, fill_id=f"F{sequence}", at_ns=sequence * 10**9)
        journal.fills[sequence] = event
        booked.append((sequence, event))
        if sequence == bulk_at:  # a restart: the window's fills loaded at once
            corrections = CorrectableFills(
                window_ns, journal.event_at, partition_bits=2, merge_at_least=merge_at_least
            )
            corrections.add_columns(
                [f.account_id for _, f in booked],
                [f.fill_id for _, f in booked],
                [s for s, _ in booked],
                [f.timestamp_ns for _, f in booked],
            )
        else:
            corrections.add(event, sequence)
    horizon = corrections.horizon_ns()
    for sequence, event in booked:
        found = corrections.find(event.account_id, event.fill_id)
        if event.timestamp_ns >= horizon:
            assert found is not None and found[1].sequence == sequence
        else:
            assert found is None
