"""Receipt anchors: a time by which each journaled event had surely been received."""

from __future__ import annotations

from server.storage.receipts import LIMIT, Receipts

SECOND = 10**9


def test_an_events_bound_is_the_first_anchor_at_or_after_it():
    receipts = Receipts()
    receipts.note(3, 10 * SECOND)
    receipts.note(7, 20 * SECOND)
    assert [receipts.received_by(s) for s in (1, 3, 4, 7, 8)] == [
        10 * SECOND, 10 * SECOND, 20 * SECOND, 20 * SECOND, None,
    ]  # fmt: skip
    assert receipts.received_before(9 * SECOND) == 0
    assert receipts.received_before(10 * SECOND) == 3
    assert receipts.received_before(25 * SECOND) == 7


def test_a_clock_stepping_back_never_makes_a_bound_earlier():
    receipts = Receipts()
    receipts.note(3, 10 * SECOND)
    receipts.note(5, 8 * SECOND)
    receipts.note(5, 30 * SECOND)  # the same sequence again: nothing new
    assert receipts.anchors == [(3, 10 * SECOND), (5, 10 * SECOND)]


def test_anchors_thin_as_they_age_and_stay_few():
    receipts = Receipts()
    for n in range(1, 200_001):  # one append every 10 ms for over half an hour
        receipts.note(n, n * SECOND // 100)
    assert len(receipts.anchors) <= LIMIT
    now = 200_000 * SECOND // 100
    # A bound near five minutes ago is within a few seconds of the truth.
    sequence = 200_000 - 300 * 100
    assert 0 <= receipts.received_by(sequence) - sequence * SECOND // 100 <= 10 * SECOND
    assert receipts.received_before(now - 300 * SECOND) >= sequence - 10 * 100


def test_anchors_round_trip_with_the_checkpoints_and_the_journals_writes():
    receipts = Receipts()
    receipts.note(3, 10 * SECOND)
    receipts.note(7, 20 * SECOND)
    again = Receipts.decoded(receipts.encoded(), [(5, 30 * SECOND), (9, 40 * SECOND)])
    assert again.floor == 0
    assert again.anchors == [(3, 10 * SECOND), (7, 20 * SECOND), (9, 40 * SECOND)]


def test_a_checkpoint_from_before_anchors_starts_them_at_the_journals_last_write():
    legacy = Receipts.decoded({}, [(5, 30 * SECOND), (9, 40 * SECOND)])
    assert legacy.floor == 9
    assert legacy.anchors == [(5, 30 * SECOND), (9, 40 * SECOND)]


def test_without_a_checkpoint_the_journals_last_write_bounds_every_event():
    fresh = Receipts.decoded(None, [(9, 40 * SECOND)])
    assert (fresh.floor, fresh.anchors) == (0, [(9, 40 * SECOND)])
    assert fresh.received_by(1) == 40 * SECOND
    assert Receipts.decoded(None).anchors == []
