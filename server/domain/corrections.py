"""The fills a broker correction may still replace.

A correction names the execution it replaces (IB: the same execId stem, a new suffix). Booking
it needs what was booked for that execution, so recent fills are kept here: every fill whose
time is within `window_ns` of the latest fill time seen. The window depends only on the fills,
so a restart that reloads the fills inside it (from the journal) holds the same entries and
replays corrections the same way.

Few fills are ever corrected, and the journal holds every one, so a fill in the window is kept
as little more than where the journal has it: a 64-bit hash of (account, fill id), its time and
its sequence, in sorted numpy columns (24 bytes a fill; a dict and a sorted list of Python ints
took about 180, a decoded fill about 1 KB). As in `seen.py`, the columns are split by the
hash's top bits into partitions; a new fill waits in its partition's small dict until the dict
holds a thirty-second of the partition, then the partition is merged (one partition copied,
never the whole window: about 32 entries copied per fill, whatever the window holds); a bit
filter of the merged hashes (1-4 bytes a fill, seen.py's `HashFilter`) tells a new fill's hash
is not taken without a bisection. A fill leaving the window is no longer seen at once (its
time is before the horizon) and its entry is dropped at its partition's next merge. A restart
loads the window's fills at once: hashed in one pass and sorted, no Python object per fill.

When a correction arrives, the fill is read back from the journal (`EventAt`), which also
settles a hash that two fills share. The rare entries that need their ids (corrected fills,
fills whose hash is taken) are kept exactly, and leave the window one by one. Without a journal
(a ledger with no store behind), the events are kept here instead, until their entry leaves.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from sortedcontainers import SortedList

from server.domain.events import ExecutionEvent, Fill, FillCorrection
from server.domain.seen import (
    _SIPHASH,
    MERGE_AT_LEAST,
    MERGE_RATIO,
    PARTITION_BITS,
    EventAt,
    Hashes,
    HashFilter,
    IdHash,
    Ints,
    JournalUnreadable,
    by_partition,
    hash_order,
    id_hash,
    id_hashes,
    inserted,
)

DEFAULT_WINDOW_NS = 24 * 3600 * 10**9
_SEQUENCE_BITS = 40  # a kept fill's time and sequence share one int: sequences below 2^40
_HASH_BITS = 64
_SEQUENCE_MASK = (1 << _SEQUENCE_BITS) - 1
_HASH_MASK = (1 << _HASH_BITS) - 1
READ_AHEAD = 64  # events read back and kept: a correction read at admission is not read again
_GONE = -(1 << 63)  # the time of a merged entry corrected since: before any horizon


class JournaledFill(NamedTuple):
    """A fill as the journal holds it, not decoded: what recovery reloads (a tuple: a
    million are made at a restart late in the day), with its strategy row's ids as the
    journal's columns hold them."""

    account_id: str
    strategy_id: str
    instrument_id: str
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
        partition_bits: int | None = None,
        merge_at_least: int | None = None,
    ) -> None:
        """`hash_key` must give values in [0, 2^64). `partition_bits` and `merge_at_least`
        left out, seen.py's settings apply (tests set them small to merge often)."""
        self.window_ns = window_ns
        self.latest_ns = 0  # the latest fill time seen: the window ends there
        self._hash = hash_key or id_hash
        partition_bits = PARTITION_BITS if partition_bits is None else partition_bits
        self._shift = 64 - partition_bits
        self._merge_at_least = merge_at_least or MERGE_AT_LEAST
        partitions = 1 << partition_bits
        # Without a journal, the events in the window, by sequence (their text when reloaded).
        self._kept: dict[int, ExecutionEvent | str] | None = None if journal else {}
        self._journal: EventAt = journal or self._kept_event
        self._read_ahead: dict[int, ExecutionEvent | None] = {}  # by sequence, oldest first
        # Uncorrected fills, by partition: hash -> time_ns << 40 | sequence, not merged yet;
        # then the merged columns, sorted by hash. A time before the horizon: gone.
        self._recent: list[dict[int, int]] = [{} for _ in range(partitions)]
        # array.array, not numpy: a bisection over one is twice as fast (numpy views of them
        # for merges: np.frombuffer, no copy).
        self._hashes: list[array[int]] = [array("Q") for _ in range(partitions)]
        self._times: list[array[int]] = [array("q") for _ in range(partitions)]
        self._sequences: list[array[int]] = [array("q") for _ in range(partitions)]
        self._merge_at = [self._merge_at_least] * partitions  # a dict's size that merges it
        self._filter = HashFilter()  # every merged hash: a new fill skips the bisection
        # (account_id, original fill_id) -> the entry: corrected fills and hash collisions.
        self._exact: dict[tuple[str, str], _Exact] = {}
        self._exact_by_hash: dict[int, list[tuple[str, str]]] = {}
        # timestamp_ns << 64 | hash, for every exact entry: which leaves the window first.
        self._by_time: SortedList = SortedList()
        # (account_id, id) -> the original fill_id, for every correction: a later correction
        # may name either.
        self._originals: dict[tuple[str, str], str] = {}

    def __len__(self) -> int:
        """Entries in the window (counts every partition: for tests and benchmarks)."""
        horizon = self._seen_from()
        plain = sum(int(np.count_nonzero(_ints(times) >= horizon)) for times in self._times)
        for recent in self._recent:
            plain += sum(1 for packed in recent.values() if packed >> _SEQUENCE_BITS >= horizon)
        return plain + len(self._exact)

    def nbytes(self) -> int:
        """What the merged columns hold (the dicts are not counted): for the benchmark."""
        columns = (*self._hashes, *self._times, *self._sequences)
        return sum(len(column) * column.itemsize for column in columns)

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
        """Remembers booked fills as the journal holds them, at once (recovery)."""
        self.add_columns(
            [fill.account_id for _, fill in fills],
            [fill.fill_id for _, fill in fills],
            [sequence for sequence, _ in fills],
            [fill.timestamp_ns for _, fill in fills],
            [fill.text for _, fill in fills] if self._kept is not None else None,
        )

    def add_columns(
        self,
        account_ids: Sequence[str],
        fill_ids: Sequence[str],
        sequences: Ints | Sequence[int],
        times_ns: Ints | Sequence[int],
        texts: Sequence[str] | None = None,
    ) -> None:
        """`add` for columns of journaled fills in sequence order (`texts`: their journal
        text, needed without a journal only; numbers as lists or numpy columns). A batch large
        against what is kept is hashed in numpy and sorted in with the rest (a restart: about
        0.2 us a fill); a small one goes in fill by fill, as live fills do."""
        sequences = np.asarray(sequences, np.int64)
        times = np.asarray(times_ns, np.int64)
        count = len(sequences)
        if not len(account_ids) == len(fill_ids) == count == len(times):
            raise ValueError("columns of different lengths")
        if count and count >= self._merge_threshold(sum(map(len, self._hashes))):
            self._add_bulk(account_ids, fill_ids, sequences, times)
        else:
            rows = zip(account_ids, fill_ids, sequences.tolist(), times.tolist(), strict=True)
            for row in rows:
                self._insert(*row)
        if self._kept is not None:
            if texts is None:
                raise ValueError("without a journal, the fills' texts are kept: pass them")
            self._kept.update(zip(sequences.tolist(), texts, strict=True))
        if count:
            self.latest_ns = max(self.latest_ns, int(times.max()))
        self.evict()

    def _insert(self, account_id: str, fill_id: str, sequence: int, time_ns: int) -> None:
        if not 0 < sequence < 1 << _SEQUENCE_BITS:
            raise ValueError(f"sequence {sequence} out of range")
        key = (account_id, fill_id)
        hashed = self._hash(account_id, fill_id)
        if key in self._exact:  # not reached from a journal: fill ids are unique
            raise ValueError(f"fill {fill_id!r} booked twice")
        partition, horizon = hashed >> self._shift, self._seen_from()
        recent = self._recent[partition]
        # The dict's entry with this hash, if any, was put there when the columns had none.
        in_dict = recent.get(hashed)
        if (
            hashed in self._exact_by_hash
            or (in_dict is not None and in_dict >> _SEQUENCE_BITS >= horizon)
            or (in_dict is None and self._merged(partition, hashed, horizon) >= 0)
        ):  # another fill's hash
            self._put_exact(key, _Exact(fill_id, sequence, time_ns, hashed))
            self._by_time.add(time_ns << _HASH_BITS | hashed)
            return
        if in_dict is not None and self._kept is not None:  # it left the window: forgotten
            self._kept.pop(in_dict & _SEQUENCE_MASK, None)
        recent[hashed] = time_ns << _SEQUENCE_BITS | sequence
        if len(recent) >= self._merge_at[partition]:
            self._merge(partition)

    def _add_bulk(
        self, account_ids: Sequence[str], fill_ids: Sequence[str], sequences: Ints, times: Ints
    ) -> None:
        """Hashes a batch in numpy and sorts it in with every entry still in the window: each
        hash's first fill (one kept before the batch, else the batch's first) stays plain, the
        others are kept exactly, as `_insert` one by one would."""
        count = len(sequences)
        if self._hash is _SIPHASH:
            new_hashes = id_hashes(account_ids, fill_ids)
        else:
            new_hashes = np.fromiter(map(self._hash, account_ids, fill_ids), np.uint64, count)
        new_times, new_sequences = times, sequences
        bad = (new_sequences <= 0) | (new_sequences >= 1 << _SEQUENCE_BITS)
        if bad.any():
            raise ValueError(f"sequence {sequences[int(np.argmax(bad))]} out of range")
        old_hashes, old_times, old_sequences = self._live_columns()
        before = len(old_hashes)  # positions below this: kept before the batch
        hashes = np.concatenate([old_hashes, new_hashes])
        grouped, bounds = by_partition(hashes, self._shift, len(self._hashes))
        hashes = hashes[grouped]
        all_times = np.concatenate([old_times, new_times])[grouped]
        all_sequences = np.concatenate([old_sequences, new_sequences])[grouped]
        taken = np.fromiter(self._exact_by_hash, np.uint64, len(self._exact_by_hash))
        columns: list[tuple[Hashes, Ints, Ints]] = []
        exact: list[int] = []  # the batch's fills kept exactly, by position in the batch
        for partition in range(len(self._hashes)):
            start, stop = bounds[partition], bounds[partition + 1]
            own, positions = hashes[start:stop], grouped[start:stop]
            order, shared = hash_order(own)
            if shared:  # a hash's entries: the kept one, then the batch's in order
                order = np.argsort(own, kind="stable")
            own, positions = own[order], positions[order]
            if shared or len(taken):
                first = np.ones(len(own), bool)
                first[1:] = own[1:] != own[:-1]
                plain = (positions < before) | (first & ~np.isin(own, taken))
                exact.extend((positions[~plain] - before).tolist())
                own, order = own[plain], order[plain]
            columns.append((own, all_times[start:stop][order], all_sequences[start:stop][order]))
        exact.sort()
        for at in exact:
            if (account_ids[at], fill_ids[at]) in self._exact:  # not reached from a journal
                raise ValueError(f"fill {fill_ids[at]!r} booked twice")
        for at in exact:
            key, hashed_at = (account_ids[at], fill_ids[at]), int(new_hashes[at])
            entry = _Exact(fill_ids[at], int(sequences[at]), int(times[at]), hashed_at)
            self._put_exact(key, entry)
            self._by_time.add(entry.timestamp_ns << _HASH_BITS | hashed_at)
        for partition, (own, own_times, own_sequences) in enumerate(columns):
            self._put(partition, own, own_times, own_sequences)
        self._rebuild_filter()

    def _live_columns(self) -> tuple[Hashes, Ints, Ints]:
        """Every plain entry still in the window, as columns (the dicts emptied, and what left
        forgotten)."""
        horizon = self._seen_from()
        hashes: list[Hashes] = []
        times: list[Ints] = []
        sequences: list[Ints] = []
        for partition in range(len(self._recent)):
            self._merge(partition)
            live = _ints(self._times[partition]) >= horizon
            hashes.append(np.frombuffer(self._hashes[partition], np.uint64)[live])
            times.append(_ints(self._times[partition])[live])
            sequences.append(_ints(self._sequences[partition])[live])
        return np.concatenate(hashes), np.concatenate(times), np.concatenate(sequences)

    def _put(self, partition: int, hashes: Hashes, times: Ints, sequences: Ints) -> None:
        self._hashes[partition] = array("Q", hashes.tobytes())
        self._times[partition] = array("q", times.tobytes())
        self._sequences[partition] = array("q", sequences.tobytes())
        self._merge_at[partition] = self._merge_threshold(len(hashes))

    def _merge_threshold(self, merged: int) -> int:
        return max(self._merge_at_least, merged // MERGE_RATIO)

    def _merge(self, partition: int) -> None:
        """Moves the partition's dict into its columns; entries that left the window, or were
        corrected, are dropped (and forgotten, without a journal)."""
        recent, horizon = self._recent[partition], self._seen_from()
        hashes = np.frombuffer(self._hashes[partition], np.uint64)
        times, sequences = _ints(self._times[partition]), _ints(self._sequences[partition])
        live = times >= horizon
        if self._kept is not None:
            for sequence in sequences[(times != _GONE) & ~live].tolist():
                self._kept.pop(sequence, None)
        if not recent and live.all():
            return
        moving = [
            (hashed, packed >> _SEQUENCE_BITS, packed & _SEQUENCE_MASK)
            for hashed, packed in recent.items()
            if packed >> _SEQUENCE_BITS >= horizon or self._forgotten(packed & _SEQUENCE_MASK)
        ]
        recent.clear()
        if not live.all():
            hashes, times, sequences = hashes[live], times[live], sequences[live]
        if not moving:
            self._put(partition, hashes, times, sequences)
            return
        moved_, moved_times_, moved_sequences_ = zip(*moving, strict=True)
        moved = np.array(moved_, np.uint64)
        order = np.argsort(moved, kind="stable")
        moved = moved[order]
        # Each new entry after those with its hash already there (as a stable sort of all
        # would place it), without sorting the partition again: its columns copied once.
        at = np.searchsorted(hashes, moved, side="right")
        landing = at + np.arange(len(at))
        kept = np.ones(len(hashes) + len(at), bool)
        kept[landing] = False
        self._put(
            partition,
            inserted(hashes, moved, landing, kept),
            inserted(times, np.array(moved_times_, np.int64)[order], landing, kept),
            inserted(sequences, np.array(moved_sequences_, np.int64)[order], landing, kept),
        )
        if self._filter.add(moved):
            self._rebuild_filter()

    def _rebuild_filter(self) -> None:
        """The filter of every hash in the columns (those that left the window since the last
        rebuild go: only a merge drops them)."""
        self._filter.rebuild(np.concatenate([np.frombuffer(h, np.uint64) for h in self._hashes]))

    def _forgotten(self, sequence: int) -> bool:
        """Drops a fill's kept event (an entry that left the window); False, to filter."""
        if self._kept is not None:
            self._kept.pop(sequence, None)
        return False

    def _plain(self, hashed: int) -> tuple[int, int, int] | None:
        """(time_ns, sequence, index) of the uncorrected fill in the window with this hash
        (index -1: in its partition's dict), or None."""
        partition, horizon = hashed >> self._shift, self._seen_from()
        packed = self._recent[partition].get(hashed)
        if packed is not None and packed >> _SEQUENCE_BITS >= horizon:
            return packed >> _SEQUENCE_BITS, packed & _SEQUENCE_MASK, -1
        index = self._merged(partition, hashed, horizon)
        if index < 0:
            return None
        return self._times[partition][index], self._sequences[partition][index], index

    def _merged(self, partition: int, hashed: int, horizon: int) -> int:
        """The index in the partition's columns of the entry in the window with this hash, or
        -1."""
        if hashed not in self._filter:
            return -1
        hashes = self._hashes[partition]
        index = bisect_left(hashes, hashed)
        while index < len(hashes) and hashes[index] == hashed:
            if self._times[partition][index] >= horizon:
                return index
            index += 1
        return -1

    def _drop_plain(self, hashed: int, index: int) -> None:
        partition = hashed >> self._shift
        if index < 0:
            del self._recent[partition][hashed]
        else:
            self._times[partition][index] = _GONE

    def _put_exact(self, key: tuple[str, str], entry: _Exact) -> None:
        self._exact[key] = entry
        self._exact_by_hash.setdefault(entry.hashed, []).append(key)

    def original_of(self, account_id: str, fill_id: str) -> str:
        """The id of the fill that a correction `fill_id` replaced (its own for a fill)."""
        return self._originals.get((account_id, fill_id), fill_id)

    def find(self, account_id: str, fill_id: str) -> tuple[str, Booked] | None:
        """The original id and what is booked for it now, for a fill or correction id. Reads
        the journal for a fill kept by its hash (raises JournalUnreadable if it cannot)."""
        original = self.original_of(account_id, fill_id)
        key = (account_id, original)
        exact = self._exact.get(key)
        if exact is not None:
            booked = Booked(
                exact.event_id, exact.sequence, exact.timestamp_ns, self._event_at, exact.fill
            )
            return original, booked
        plain = self._plain(self._hash(*key))
        if plain is None:
            return None
        time_ns, sequence, _ = plain
        fill = _read(self._event_at, sequence)
        if not (isinstance(fill, Fill) and (fill.account_id, fill.fill_id) == key):
            return None  # another fill with the same hash
        return original, Booked(original, sequence, time_ns, self._event_at, fill)

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
            self._by_time.discard(exact.timestamp_ns << _HASH_BITS | hashed)
            self._forget(exact.sequence)
            place_ns = exact.timestamp_ns
        else:
            plain = self._plain(hashed)
            if plain is not None and self._plain_is(plain[1], key):
                place_ns, replaced, index = plain
                self._drop_plain(hashed, index)
                self._forget(replaced)
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

    def _plain_is(self, sequence: int, key: tuple[str, str]) -> bool:
        event = _read(self._event_at, sequence)
        return isinstance(event, Fill) and (event.account_id, event.fill_id) == key

    def _unindex(self, key: tuple[str, str], hashed: int) -> None:
        keys = self._exact_by_hash[hashed]
        keys.remove(key)
        if not keys:
            del self._exact_by_hash[hashed]

    def _forget(self, sequence: int) -> None:
        if self._kept is not None:
            self._kept.pop(sequence, None)

    def evict(self) -> None:
        """Forgets the exact entries that fell out of the window (the plain ones are no longer
        seen, and dropped at their partition's next merge)."""
        horizon = self.horizon_ns()
        while self._by_time and self._by_time[0] >> _HASH_BITS < horizon:
            entry = self._by_time.pop(0)
            time_ns, hashed = entry >> _HASH_BITS, entry & _HASH_MASK
            keys = self._exact_by_hash[hashed]
            gone = next(k for k in keys if self._exact[k].timestamp_ns == time_ns)
            self._unindex(gone, hashed)
            exact = self._exact.pop(gone)
            self._originals.pop((gone[0], exact.event_id), None)
            self._forget(exact.sequence)

    def horizon_ns(self) -> int:
        """Fills before this time are out of the window."""
        return self.latest_ns - self.window_ns

    def _seen_from(self) -> int:
        """The horizon as the columns compare it: a corrected entry (_GONE) is before it
        however long the window (an int64 column compared with an int64)."""
        return max(self.latest_ns - self.window_ns, _GONE + 1)


def _ints(column: array[int]) -> Ints:
    """A numpy view of a column of int64 (no copy)."""
    return np.frombuffer(column, np.int64)


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
