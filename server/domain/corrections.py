"""The fills a broker correction may still replace.

A correction names the execution it replaces (IB: the same execId stem, a new suffix). Booking
it needs what was booked for that execution, so recent fills are kept here: every fill whose
time is within `window_ns` of the latest fill time seen. The window depends only on the fills,
so a restart that reloads the fills inside it (from the journal) holds the same entries and
replays corrections the same way.

Few fills are ever corrected, and the journal holds every one, so a fill in the window is kept
as little more than where the journal has it: a 64-bit hash of (account, fill id) -> its time
and sequence, about 180 bytes a fill (a decoded fill costs about 1 KB). When a correction
arrives, the fill is read back from the journal (`EventAt`), which also settles a hash that
two fills share. The rare entries that need their ids (corrected fills, fills whose hash is
taken) are kept exactly. Without a journal (a ledger with no store behind), the events are
kept here instead, for as long as they are in the window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from sortedcontainers import SortedList

from server.domain.events import ExecutionEvent, Fill, FillCorrection
from server.domain.seen import EventAt, IdHash, JournalUnreadable, id_hash

DEFAULT_WINDOW_NS = 24 * 3600 * 10**9
_SEQUENCE_BITS = 40  # a kept fill's time and sequence share one int: sequences below 2^40
_HASH_BITS = 64
_SEQUENCE_MASK = (1 << _SEQUENCE_BITS) - 1
_HASH_MASK = (1 << _HASH_BITS) - 1
READ_AHEAD = 64  # events read back and kept: a correction read at admission is not read again


class JournaledFill(NamedTuple):
    """A fill as the journal holds it, not decoded: what recovery reloads (a tuple: a
    million are made at a restart late in the day)."""

    account_id: str
    fill_id: str
    timestamp_ns: int
    text: str


class Booked:
    """What is booked for one execution now, and under which event id (the fill's, or the
    latest correction's); `fill` reads it from the journal when it was not read yet."""

    __slots__ = ("_event_at", "_fill", "event_id", "sequence", "timestamp_ns")

    def __init__(
        self,
        event_id: str,
        sequence: int,
        timestamp_ns: int,
        event_at: EventAt,
        fill: Fill | None = None,
    ) -> None:
        self.event_id = event_id
        self.sequence = sequence
        self.timestamp_ns = timestamp_ns
        self._event_at = event_at
        self._fill = fill

    @property
    def fill(self) -> Fill:
        """What is booked; raises JournalUnreadable if it cannot be read."""
        if self._fill is None:
            booked = _booked_fill(_read(self._event_at, self.sequence))
            if booked is None or booked.fill_id != self.event_id:
                raise JournalUnreadable(
                    f"the journal holds no {self.event_id!r} at sequence {self.sequence}"
                )
            self._fill = booked
        return self._fill


@dataclass(slots=True)
class _Exact:
    """A kept entry with its ids: a corrected fill, or one whose hash another fill has."""

    event_id: str  # the latest correction's id, or the fill's
    sequence: int
    timestamp_ns: int
    hashed: int
    # What is booked, when the event at `sequence` does not hold it whole (a commission
    # amendment names its fill and the commission only).
    fill: Fill | None = None


class CorrectableFills:
    def __init__(
        self,
        window_ns: int = DEFAULT_WINDOW_NS,
        journal: EventAt | None = None,
        *,
        hash_key: IdHash | None = None,
    ) -> None:
        self.window_ns = window_ns
        self.latest_ns = 0  # the latest fill time seen: the window ends there
        self._hash = hash_key or id_hash
        # Without a journal, the events in the window, by sequence (their text when reloaded).
        self._kept: dict[int, ExecutionEvent | str] | None = None if journal else {}
        self._journal: EventAt = journal or self._kept_event
        self._read_ahead: dict[int, ExecutionEvent | None] = {}  # by sequence, oldest first
        # hash of (account_id, fill_id) -> timestamp_ns << 40 | sequence: uncorrected fills.
        self._plain: dict[int, int] = {}
        # (account_id, original fill_id) -> the entry: corrected fills and hash collisions.
        self._exact: dict[tuple[str, str], _Exact] = {}
        self._exact_by_hash: dict[int, list[tuple[str, str]]] = {}
        # timestamp_ns << 64 | hash, for every entry: what leaves the window first.
        self._by_time: SortedList = SortedList()
        # (account_id, id) -> the original fill_id, for every correction: a later correction
        # may name either.
        self._originals: dict[tuple[str, str], str] = {}

    def __len__(self) -> int:
        return len(self._plain) + len(self._exact)

    def _event_at(self, sequence: int) -> ExecutionEvent | None:
        """The journaled event at `sequence`; the last few read are kept (rows never change),
        so that applying a correction reads nothing its admission read."""
        if sequence in self._read_ahead:
            return self._read_ahead[sequence]
        event = self._read_ahead[sequence] = self._journal(sequence)
        if len(self._read_ahead) > READ_AHEAD:
            del self._read_ahead[next(iter(self._read_ahead))]
        return event

    def prime(self, sequence: int, event: ExecutionEvent) -> None:
        """Recovery: the journaled event at `sequence`, already decoded, so that the next
        `find` of it reads nothing."""
        self._read_ahead[sequence] = event
        if len(self._read_ahead) > READ_AHEAD:
            del self._read_ahead[next(iter(self._read_ahead))]

    def _kept_event(self, sequence: int) -> ExecutionEvent | None:
        assert self._kept is not None
        event = self._kept.get(sequence)
        return Fill.from_text(event) if isinstance(event, str) else event

    def add(self, fill: Fill, sequence: int) -> None:
        """Remembers a booked fill (not a correction), journaled at `sequence`."""
        if self._kept is not None:
            self._kept[sequence] = fill
        self._insert(fill.account_id, fill.fill_id, sequence, fill.timestamp_ns)
        self.latest_ns = max(self.latest_ns, fill.timestamp_ns)
        self.evict()

    def add_journaled(self, fills: list[tuple[int, JournaledFill]]) -> None:
        """Remembers booked fills as the journal holds them, at once (recovery: a sort, not an
        insertion each)."""
        times = []
        for sequence, fill in fills:
            if self._kept is not None:
                self._kept[sequence] = fill.text
            times.append(
                self._insert(fill.account_id, fill.fill_id, sequence, fill.timestamp_ns, False)
            )
            self.latest_ns = max(self.latest_ns, fill.timestamp_ns)
        self._by_time.update(times)
        self.evict()

    def _insert(
        self, account_id: str, fill_id: str, sequence: int, time_ns: int, timed: bool = True
    ) -> int:
        """Keeps a new fill; returns its time entry (added to the index if `timed`)."""
        if not 0 < sequence < 1 << _SEQUENCE_BITS:
            raise ValueError(f"sequence {sequence} out of range")
        key = (account_id, fill_id)
        hashed = self._hash(account_id, fill_id)
        if key in self._exact:  # not reached from a journal: fill ids are unique
            raise ValueError(f"fill {fill_id!r} booked twice")
        if hashed in self._plain or hashed in self._exact_by_hash:  # another fill's hash
            self._put_exact(key, _Exact(fill_id, sequence, time_ns, hashed))
        else:
            self._plain[hashed] = time_ns << _SEQUENCE_BITS | sequence
        entry = time_ns << _HASH_BITS | hashed
        if timed:
            self._by_time.add(entry)
        return entry

    def _put_exact(self, key: tuple[str, str], entry: _Exact) -> None:
        self._exact[key] = entry
        self._exact_by_hash.setdefault(entry.hashed, []).append(key)

    def find(self, account_id: str, fill_id: str) -> tuple[str, Booked] | None:
        """The original id and what is booked for it now, for a fill or correction id. Reads
        the journal for a fill kept by its hash (raises JournalUnreadable if it cannot)."""
        original = self._originals.get((account_id, fill_id), fill_id)
        key = (account_id, original)
        exact = self._exact.get(key)
        if exact is not None:
            booked = Booked(
                exact.event_id, exact.sequence, exact.timestamp_ns, self._event_at, exact.fill
            )
            return original, booked
        packed = self._plain.get(self._hash(*key))
        if packed is None:
            return None
        sequence = packed & _SEQUENCE_MASK
        fill = _read(self._event_at, sequence)
        if not (isinstance(fill, Fill) and (fill.account_id, fill.fill_id) == key):
            return None  # another fill with the same hash
        booked = Booked(original, sequence, packed >> _SEQUENCE_BITS, self._event_at, fill)
        return original, booked

    def replace(
        self,
        account_id: str,
        original: str,
        correction: Fill,
        sequence: int,
        *,
        amended: bool = False,
    ) -> None:
        """Books a correction (`correction.fill_id` is the correction's id, journaled at
        `sequence`) in place of what was booked for `original`, found by `find` just before
        (or not there at all). It keeps the corrected fill's execution time: a correction
        takes its fill's place in time, and leaves the window when that fill would have.
        `amended`: the event at `sequence` is a commission amendment, which does not hold the
        fill whole, so the fill is kept here."""
        key = (account_id, original)
        hashed = self._hash(*key)
        place_ns = None  # the corrected fill's execution time: the correction takes its place
        exact = self._exact.pop(key, None)
        if exact is not None:
            self._unindex(key, hashed)
            self._forget(exact.sequence, exact.timestamp_ns << _HASH_BITS | hashed)
            place_ns = exact.timestamp_ns
        else:
            packed = self._plain.get(hashed)
            if packed is not None and self._plain_is(packed, key):
                del self._plain[hashed]
                place_ns = packed >> _SEQUENCE_BITS
                self._forget(packed & _SEQUENCE_MASK, place_ns << _HASH_BITS | hashed)
        self.latest_ns = max(self.latest_ns, correction.timestamp_ns)
        if place_ns is None:  # what it corrects left the window (recovery): nothing to keep
            self.evict()
            return
        if self._kept is not None:
            self._kept[sequence] = correction
        self._originals[(account_id, correction.fill_id)] = original
        kept = correction if amended else None
        self._put_exact(key, _Exact(correction.fill_id, sequence, place_ns, hashed, kept))
        self._by_time.add(place_ns << _HASH_BITS | hashed)
        self.evict()

    def _plain_is(self, packed: int, key: tuple[str, str]) -> bool:
        event = _read(self._event_at, packed & _SEQUENCE_MASK)
        return isinstance(event, Fill) and (event.account_id, event.fill_id) == key

    def _unindex(self, key: tuple[str, str], hashed: int) -> None:
        keys = self._exact_by_hash[hashed]
        keys.remove(key)
        if not keys:
            del self._exact_by_hash[hashed]

    def _forget(self, sequence: int, time_entry: int) -> None:
        self._by_time.discard(time_entry)
        if self._kept is not None:
            self._kept.pop(sequence, None)

    def evict(self) -> None:
        """Forgets what fell out of the window."""
        horizon = self.horizon_ns()
        while self._by_time and self._by_time[0] >> _HASH_BITS < horizon:
            entry = self._by_time.pop(0)
            time_ns, hashed = entry >> _HASH_BITS, entry & _HASH_MASK
            keys = self._exact_by_hash.get(hashed, [])
            gone = next((k for k in keys if self._exact[k].timestamp_ns == time_ns), None)
            if gone is not None:
                self._unindex(gone, hashed)
                exact = self._exact.pop(gone)
                self._originals.pop((gone[0], exact.event_id), None)
                sequence = exact.sequence
            else:
                sequence = self._plain.pop(hashed) & _SEQUENCE_MASK
            if self._kept is not None:
                self._kept.pop(sequence, None)

    def horizon_ns(self) -> int:
        """Fills before this time are out of the window."""
        return self.latest_ns - self.window_ns


def _read(event_at: EventAt, sequence: int) -> ExecutionEvent | None:
    try:
        return event_at(sequence)
    except Exception as error:  # whatever the store raises: nothing was decided
        raise JournalUnreadable(f"the journal could not be read: {error}") from error


def _booked_fill(event: ExecutionEvent | None) -> Fill | None:
    """What a journaled fill or correction booked."""
    if isinstance(event, FillCorrection):
        return event.replacement()
    return event if isinstance(event, Fill) else None
