"""The write-ahead log and the journal that follows it.

A local store acknowledges a group once the log has it on disk; the ArcticDB journal follows on
a thread of its own. What must hold: the log gives back exactly what was written, cuts off only
a torn last write (never an acknowledged record), refuses damage; a start copies into the
journal whatever the log holds beyond it; a reader never sees the journal short of an
acknowledged event; a failing journal append is retried and shows, and a backlog is bounded.
"""

from __future__ import annotations

import logging
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from server.application.ports import Sequenced, StorageUnavailable
from server.domain.booker import Booker
from server.domain.events import Fill, Side
from server.storage.arctic import WAL_FOLDER, ArcticEventStore
from server.storage.disk import StoreUnusable
from server.storage.journal_copier import JournalCopier
from server.storage.wal import LogRecord, WriteAheadLog, written_by

BASE_NS = 1_767_225_600 * 10**9


def fill(n: int) -> Fill:
    return Fill(
        fill_id=f"f{n}", account_id="A1", strategy_id="S1", instrument_id="AAPL",
        side=Side.BUY, quantity=Decimal(n), price=Decimal("100.25"), timestamp_ns=BASE_NS + n,
    )  # fmt: skip


RELAY = Booker("relay-1", "relay")


def records(first: int, last: int) -> list[LogRecord]:
    return [(n, "fill", fill(n).text(), RELAY) for n in range(first, last + 1)]


def test_the_log_gives_back_what_was_written_across_segments(tmp_path: Path) -> None:
    log = WriteAheadLog(tmp_path, segment_bytes=1000)
    assert log.open() == []
    for first in range(1, 60, 10):
        log.write(records(first, first + 9))
    log.close()
    assert len(list(tmp_path.glob("*.wal"))) > 2  # rotated

    again = WriteAheadLog(tmp_path, segment_bytes=1000)
    back = [(r.sequence, r.kind, r.text, r.booker) for r in again.open()]
    assert back == records(1, 60)
    again.write(records(61, 61))
    again.close()
    assert [r.sequence for r in WriteAheadLog(tmp_path).open()] == list(range(1, 62))


def test_each_write_bounds_when_its_events_had_been_received(tmp_path: Path) -> None:
    """A restart after a crash the journal did not follow takes the receipt bounds from the
    log: one per write, never earlier than the write, the last always kept."""
    log = WriteAheadLog(tmp_path)
    log.open()
    before = time.time_ns()
    log.write(records(1, 3))
    between = time.time_ns()
    log.write(records(4, 4))
    after = time.time_ns()
    log.close()
    reopened = WriteAheadLog(tmp_path)
    assert reopened.open(after=4) == []  # the bounds come from every record, decoded or not
    (first, first_ns), (second, second_ns) = reopened.receipts
    assert (first, second) == (3, 4)
    assert before <= first_ns <= between <= second_ns <= after
    many = [(n, n) for n in range(1, 10_001)]  # one write each
    kept = written_by(many)
    assert len(kept) <= 4096 and kept[-1] == (10_000, 10_000)
    assert all(time_ns >= sequence for sequence, time_ns in kept)  # never early


def test_a_torn_last_write_is_cut_off_and_writing_goes_on(tmp_path: Path, caplog) -> None:
    log = WriteAheadLog(tmp_path)
    log.open()
    log.write(records(1, 3))
    log.close()
    (segment,) = tmp_path.glob("*.wal")
    whole = segment.stat().st_size
    with open(segment, "ab") as out:  # a crash in the middle of the next write
        out.write(WriteAheadLog.__module__.encode()[:5] + b"\x00" * 20)

    reopened = WriteAheadLog(tmp_path)
    with caplog.at_level(logging.WARNING, "portfolio.storage"):
        assert [r.sequence for r in reopened.open()] == [1, 2, 3]
    assert "torn" in caplog.text
    assert segment.stat().st_size == whole
    reopened.write(records(4, 4))
    reopened.close()
    assert [r.sequence for r in WriteAheadLog(tmp_path).open()] == [1, 2, 3, 4]


def test_a_start_decodes_only_the_records_beyond_the_journal(tmp_path: Path) -> None:
    """The journal holds most of the segment being written (up to 16 MB): those records are
    checked, not decoded. What comes back beyond any point is exactly what was written there,
    who booked it included, across segments; the receipt bounds come from every record."""
    log = WriteAheadLog(tmp_path, segment_bytes=700)
    log.open()
    written: list[LogRecord] = []
    for first in range(1, 40, 6):
        booker = RELAY if first % 4 == 1 else Booker(f"ops-{first}", "operator")
        group = [(n, kind, text, booker) for n, kind, text, _ in records(first, first + 5)]
        log.write(group)
        written.extend(group)
    log.close()
    assert len(list(tmp_path.glob("*.wal"))) > 2
    whole = WriteAheadLog(tmp_path)
    assert [(r.sequence, r.kind, r.text, r.booker) for r in whole.open()] == written
    assert [sequence for sequence, _ in whole.receipts] == list(range(6, 43, 6))
    for after in (0, 1, 6, 7, 23, 41, 42, 1000):
        again = WriteAheadLog(tmp_path, segment_bytes=700)
        back = [(r.sequence, r.kind, r.text, r.booker) for r in again.open(after=after)]
        assert back == [w for w in written if w[0] > after]
        assert again.receipts == whole.receipts
        again.close()
    whole.close()


@pytest.mark.parametrize("journal_holds", [0, 3])
def test_damage_before_good_records_refuses_to_open(tmp_path: Path, journal_holds: int) -> None:
    """Also in records the journal holds, which a start checks but does not decode."""
    log = WriteAheadLog(tmp_path)
    log.open()
    log.write(records(1, 3))
    log.close()
    (segment,) = tmp_path.glob("*.wal")
    data = bytearray(segment.read_bytes())
    data[30] ^= 0xFF  # inside the first record's payload
    segment.write_bytes(bytes(data))
    with pytest.raises(StoreUnusable, match="damaged"):
        WriteAheadLog(tmp_path).open(after=journal_holds)


def test_release_deletes_only_segments_the_journal_holds_whole(tmp_path: Path) -> None:
    log = WriteAheadLog(tmp_path, segment_bytes=500)
    log.open()
    for first in range(1, 40, 10):
        log.write(records(first, first + 9))  # one segment each (each write passes 500 B)
    names = sorted(path.name for path in tmp_path.glob("*.wal"))
    assert len(names) == 4
    log.release_through(25)  # segments 1-10 and 11-20 are whole in the journal; 21-30 is not
    assert sorted(path.name for path in tmp_path.glob("*.wal")) == names[2:]
    log.release_through(10**9)  # the segment being written stays
    assert sorted(path.name for path in tmp_path.glob("*.wal")) == names[3:]
    log.close()
    assert [r.sequence for r in WriteAheadLog(tmp_path).open()] == list(range(31, 41))


def test_a_start_copies_into_the_journal_what_only_the_log_holds(tmp_path: Path) -> None:
    """A crash after the log's fdatasync (acknowledged) and before the journal's append."""
    uri = f"lmdb://{tmp_path}/store"
    store = ArcticEventStore(uri)
    store.append([(1, fill(1)), (2, fill(2))])
    store.close()
    log = WriteAheadLog(tmp_path / "store" / WAL_FOLDER)  # as the crashed process left it
    log.open()
    log.write(records(3, 5))
    log.close()

    reopened = ArcticEventStore(uri)
    try:
        assert [(s, e.event_id) for s, e in reopened.events_after(0)] == [
            (n, f"f{n}") for n in range(1, 6)
        ]
        reopened.append([(6, fill(6))])  # and the sequence goes on from there
        assert reopened.event_at(6) == fill(6)
    finally:
        reopened.close()


def test_a_log_that_does_not_continue_the_journal_refuses_to_open(tmp_path: Path) -> None:
    uri = f"lmdb://{tmp_path}/store"
    store = ArcticEventStore(uri)
    store.append([(1, fill(1))])
    store.close()
    for segment in (tmp_path / "store" / WAL_FOLDER).glob("*.wal"):
        segment.unlink()
    log = WriteAheadLog(tmp_path / "store" / WAL_FOLDER)
    log.open()
    log.write(records(3, 3))  # 2 is missing
    log.close()
    with pytest.raises(StoreUnusable, match="events are missing"):
        ArcticEventStore(uri)


def test_a_read_right_after_an_append_sees_it(tmp_path: Path) -> None:
    store = ArcticEventStore(f"lmdb://{tmp_path}/store")
    try:
        for n in range(1, 41):
            store.append([(n, fill(n))])
            assert store.event_at(n) == fill(n)  # the journal caught up first
        assert [s for s, _ in store.events_after(30)] == list(range(31, 41))
    finally:
        store.close()


class FailingJournal:
    """A journal whose appends fail `failures` times, then work."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.appended: list[int] = []
        self.released: list[int] = []

    def append(self, group: list[Sequenced]) -> None:
        if self.failures:
            self.failures -= 1
            raise StorageUnavailable("journal append failed: disk full")
        self.appended.extend(sequence for sequence, _ in group)


def test_a_failing_journal_append_is_retried_shows_and_recovers(caplog) -> None:
    journal = FailingJournal(failures=3)
    health: list[bool] = []
    copier = JournalCopier(journal.append, journal.released.append, max_backoff=0.05)
    copier.on_health = health.append
    with caplog.at_level(logging.INFO, "portfolio.storage"):
        copier.put([(1, fill(1)), (2, fill(2))])
        with copier.quiet(timeout=10):
            assert journal.appended == [1, 2]
    assert health == [False, True]
    assert caplog.text.count("retrying") == 1  # logged once, when it starts
    assert "work again" in caplog.text
    assert journal.released == [2]
    assert copier.stop(1)


def test_a_backlog_past_its_bound_refuses_new_groups() -> None:
    release = threading.Event()

    def slow_append(group: list[Sequenced]) -> None:
        release.wait(10)

    copier = JournalCopier(slow_append, lambda sequence: None, max_backlog=3)
    copier.check_room()
    copier.put([(1, fill(1)), (2, fill(2)), (3, fill(3))])
    with pytest.raises(StorageUnavailable, match="3 events behind"):
        copier.check_room()
    release.set()
    deadline = time.monotonic() + 10
    while copier.backlog:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    copier.check_room()
    assert copier.stop(1)
