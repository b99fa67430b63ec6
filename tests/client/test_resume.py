"""The subscription resume cursor: every update exactly once across reconnects."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.resume import ResumeCursor


def feed(cursor: ResumeCursor, sequences: list[int]) -> list[int]:
    """Position updates through the cursor; returns the sequences the caller gets."""
    return [s for s in sequences if cursor.admit(s, heartbeat=False)]


def test_starts_where_asked() -> None:
    assert ResumeCursor().from_sequence == 0
    assert ResumeCursor(5).from_sequence == 5
    with pytest.raises(ValueError, match="from_sequence"):
        ResumeCursor(-1)


def test_resumes_from_the_last_sequence_because_its_group_may_be_incomplete() -> None:
    cursor = ResumeCursor(1)
    cursor.new_stream()
    assert feed(cursor, [1, 1, 2, 2, 3]) == [1, 1, 2, 2, 3]
    assert cursor.from_sequence == 3


def test_break_in_the_middle_of_a_group_yields_the_rest_of_it_once() -> None:
    cursor = ResumeCursor(1)
    cursor.new_stream()
    # Sequence 2 has two updates (strategy row and account row); the stream breaks after one.
    assert feed(cursor, [1, 1, 2]) == [1, 1, 2]
    assert cursor.from_sequence == 2
    cursor.new_stream()
    # The service replays from 2: the first update of 2 was seen, the second was not.
    assert feed(cursor, [2, 2, 3, 3]) == [2, 3, 3]
    assert cursor.from_sequence == 3


def test_a_complete_group_replayed_after_a_break_is_dropped() -> None:
    cursor = ResumeCursor(1)
    cursor.new_stream()
    assert feed(cursor, [1, 1, 2, 2]) == [1, 1, 2, 2]
    cursor.new_stream()
    assert feed(cursor, [2, 2, 3]) == [3]


def test_a_heartbeat_completes_the_group_and_moves_past_it() -> None:
    cursor = ResumeCursor(1)
    cursor.new_stream()
    feed(cursor, [1, 2, 2])
    assert cursor.admit(2, heartbeat=True)
    assert cursor.from_sequence == 3
    # Nothing matched the filters for a while: the heartbeat still moves the cursor.
    assert cursor.admit(9, heartbeat=True)
    assert cursor.from_sequence == 10
    cursor.new_stream()
    assert feed(cursor, [10, 11]) == [10, 11]


def test_a_stale_heartbeat_does_not_move_the_cursor_back() -> None:
    cursor = ResumeCursor(1)
    cursor.new_stream()
    feed(cursor, [5, 5])
    assert cursor.admit(4, heartbeat=True)
    assert cursor.from_sequence == 5
    cursor.admit(7, heartbeat=True)
    assert cursor.admit(6, heartbeat=True)
    assert cursor.from_sequence == 8


def test_updates_older_than_what_was_delivered_are_dropped() -> None:
    cursor = ResumeCursor(10)
    cursor.new_stream()
    assert feed(cursor, [8, 9, 10, 11]) == [10, 11]
    assert feed(cursor, [10]) == []


def test_live_only_stays_live_only_until_something_arrives() -> None:
    cursor = ResumeCursor(0)
    cursor.new_stream()
    assert cursor.from_sequence == 0
    assert cursor.admit(0, heartbeat=True)  # the service has given no sequence yet
    assert cursor.from_sequence == 1
    cursor = ResumeCursor(0)
    cursor.new_stream()
    assert feed(cursor, [42, 42]) == [42, 42]
    assert cursor.from_sequence == 42


@dataclass(frozen=True)
class Message:
    sequence: int
    index: int = 0
    heartbeat: bool = False


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[int], list[bool], list[int]]:
    # Updates per sequence (0: nothing matched the filters), whether the service sends a
    # heartbeat after the sequence, and how many messages each stream gets before breaking.
    sizes = draw(st.lists(st.integers(0, 3), min_size=1, max_size=12))
    heartbeats = draw(st.lists(st.booleans(), min_size=len(sizes), max_size=len(sizes)))
    cuts = draw(st.lists(st.integers(0, 8), max_size=12))
    return sizes, heartbeats, cuts


def stream_from(from_sequence: int, sizes: list[int], heartbeats: list[bool]) -> list[Message]:
    """What the service sends to a subscription replaying from from_sequence (>= 1)."""
    messages = []
    for sequence, (size, heartbeat) in enumerate(zip(sizes, heartbeats, strict=True), start=1):
        if sequence < from_sequence:
            continue
        messages.extend(Message(sequence, index) for index in range(size))
        if heartbeat:
            messages.append(Message(sequence, heartbeat=True))
    return messages


@given(histories())
def test_every_update_is_delivered_exactly_once_in_order(
    history: tuple[list[int], list[bool], list[int]],
) -> None:
    sizes, heartbeats, cuts = history
    expected = [(s, i) for s, size in enumerate(sizes, start=1) for i in range(size)]
    cursor = ResumeCursor(1)
    delivered: list[tuple[int, int]] = []
    for cut in [*cuts, None]:  # the last stream runs to the end
        cursor.new_stream()
        assert cursor.from_sequence >= 1
        for message in stream_from(cursor.from_sequence, sizes, heartbeats)[:cut]:
            admitted = cursor.admit(message.sequence, heartbeat=message.heartbeat)
            if admitted and not message.heartbeat:
                delivered.append((message.sequence, message.index))
    assert delivered == expected
