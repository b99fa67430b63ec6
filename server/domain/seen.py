"""Every event id ever journaled, for exactly-once, in about 24 bytes an id.

A dict of (kind, event_id) costs about 300 bytes an id, forever: on a long day the ids alone
outgrow everything else. Here an id lives in a small exact dict only until its event is
journaled (applied), then moves into sorted numpy arrays of (64-bit hash of kind and id,
sequence, 64-bit content fingerprint). The arrays are split by the hash's top bits into
partitions that merge their recent ids on their own, each once its dict holds a thirty-second
of its arrays (and at least MERGE_AT_LEAST): a merge copies one partition, never the whole
set, so the cost per id stays constant however many ids there are (about 32 entries copied
per id); the pause of one merge grows with a partition (about 0.2 ms at a million ids).
A bit filter of the merged hashes (`HashFilter`, 1-4 bytes an id) answers first for an id
not in the dicts: a new id, nearly every id asked about, is told new without a bisection of
its partition, so a new id costs the same at a million ids as at a thousand.

Answers, for an id and the fingerprint of the event now carrying it:
- an exact hit in a dict: the id's own entry;
- a hash hit whose fingerprint matches: the same event again (a duplicate). Wrong only if a
  different id has the same 64-bit hash and its event the same 64-bit digest of a text that
  holds the id: about n / 2^128 for n ids remembered (below 10^-20 for 10^18 ids);
- a hash hit with another fingerprint: the id reused for other content, or two ids whose
  hashes collide (about n / 2^64 per new id: 5 * 10^-12 at 100 million ids). Only the
  journal can tell, so the event at that sequence is read from it (`EventAt`, injected by
  the application: the domain does no I/O). Ids are merged only once their events are
  journaled, so the journal always holds the event a hit points at.

Without an `EventAt` (a ledger with no store behind it) nothing is merged: the exact dicts
answer alone, as before.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from server.domain.events import ExecutionEvent

EventAt = Callable[[int], ExecutionEvent | None]
"""The journaled event at a sequence (None: the journal has no such row); raises if the
store cannot be read."""

IdHash = Callable[[str, str], int]

# 128 partitions, merged at 256 ids or more: measured over a million admissions, p99 12 us and
# p99.9 0.7 ms (a merge), against p99 120 us with 256 partitions merged at 64 (a merge in every
# 64 admissions); the dicts hold at most 128 x 256 ids (about 10 MB) however many there are.
PARTITION_BITS = 7
MERGE_AT_LEAST = 256  # ids a partition's dict gathers before a merge is worth its calls
MERGE_RATIO = 32  # ... or this fraction of the partition: a merge copies ~32 entries per id
CONFIRMED = 1024  # reused ids whose journal read is kept

Hashes = npt.NDArray[np.uint64]
Number = TypeVar("Number", bound=np.generic)
Ints = npt.NDArray[np.int64]


class JournalUnreadable(Exception):
    """The journal could not settle whether an id was seen; nothing was decided."""


_UNSIGNED_64 = (1 << 64) - 1


_MIX = 0x9E3779B97F4A7C15  # odd: multiplying by it permutes the 64-bit values


def id_hash(kind: str, event_id: str) -> int:
    """An unsigned 64-bit hash of an event's kind and id, good for this process only (Python's
    keyed SipHash of each string: never stored, every start rebuilds the arrays from the
    journal's ids). 0.1 us where a blake2b digest took 0.8, once per event admitted and per id
    at every restart. Each string hashed on its own, not as a tuple, so that a restart hashes
    a column of millions in numpy (`id_hashes`) without a tuple per id; the kind's hash is
    multiplied by an odd constant, so that (a, b) and (b, a) do not meet."""
    return (hash(event_id) + hash(kind) * _MIX) & _UNSIGNED_64


def id_hashes(kinds: Sequence[str], event_ids: Sequence[str]) -> Hashes:
    """`id_hash` of each (kind, event id) of two columns, the same values (modulo 2^64 in
    numpy's uint64): about 0.1 us an id, where a tuple per id took 0.3."""
    count = len(event_ids)
    if len(kinds) != count:
        raise ValueError(f"{len(kinds)} kinds for {count} ids")
    ids = np.fromiter(map(hash, event_ids), np.int64, count).view(np.uint64)
    of_kinds = np.fromiter(map(hash, kinds), np.int64, count).view(np.uint64)
    hashes: Hashes = ids + of_kinds * np.uint64(_MIX)
    return hashes


_SIPHASH = id_hash  # what `remember_all` hashes in columns (a test may put another in place)

_MOST_BITS = 1 << 32  # each bit's position is 32 bits of the hash
FILTER_BITS_PER_ID = 16  # at least, when a filter is rebuilt; it grows again below 8


class HashFilter:
    """Which 64-bit hashes may be in sorted columns: two bits of a table set per hash (two
    32-bit halves of it), a hash with either bit clear is not there. Asked before a
    bisection, so that a new id (nearly every id asked about) costs two byte reads instead of
    a bisection of thousands of cold entries, whatever the count: 8 to 32 bits an id (a power
    of two, at least 16 an id when rebuilt, rebuilt below 8), so 0.4% to 5% of new hashes are
    bisected anyway. Never a false negative: the owner adds every hash it puts in its
    columns, and `rebuild`s from all of them when `add` says the table is full (it doubles or
    more: a pause like a dict's resize, 60-70 ms a million ids under load)."""

    __slots__ = ("_count", "_mask", "_table")

    def __init__(self) -> None:
        self._table = bytearray(8)
        self._mask = 63  # bits - 1: a power of two, at most 2^32 bits
        self._count = 0  # hashes added since the table was built

    def __contains__(self, hashed: int) -> bool:
        low, high = hashed & self._mask, (hashed >> 32) & self._mask
        table = self._table
        return bool(table[low >> 3] >> (low & 7) & 1 and table[high >> 3] >> (high & 7) & 1)

    def nbytes(self) -> int:
        return len(self._table)

    def add(self, hashes: Hashes) -> bool:
        """Sets the hashes' bits; True when the table holds more than an eighth of its bits
        in hashes (the caller then rebuilds it from all of its hashes)."""
        self._count += len(hashes)
        if self._count * 8 > self._mask + 1 and self._mask < _MOST_BITS - 1:
            return True  # (at 2^32 bits, half a billion ids, it only fills up: still exact)
        table = np.frombuffer(self._table, np.uint8)
        for bits in (
            hashes & np.uint64(self._mask),
            (hashes >> np.uint64(32)) & np.uint64(self._mask),
        ):
            np.bitwise_or.at(
                table, bits >> np.uint64(3), np.left_shift(1, bits & np.uint64(7)).astype(np.uint8)
            )
        return False

    def rebuild(self, hashes: Hashes) -> None:
        """The table of exactly these hashes, FILTER_BITS_PER_ID bits an id or more (a power of
        two)."""
        size = min(_MOST_BITS, max(64, 1 << (len(hashes) * FILTER_BITS_PER_ID - 1).bit_length()))
        mask = np.uint64(size - 1)
        bits = np.zeros(size, bool)
        bits[hashes & mask] = True
        bits[(hashes >> np.uint64(32)) & mask] = True
        self._table = bytearray(np.packbits(bits, bitorder="little").tobytes())
        self._mask = size - 1
        self._count = len(hashes)


class SeenIds:
    def __init__(
        self,
        event_at: EventAt | None = None,
        *,
        hash_id: IdHash | None = None,
        partition_bits: int | None = None,
        merge_at_least: int | None = None,
    ) -> None:
        """`hash_id` must give values in [0, 2^64). Left out, the module's settings apply
        (read now, so that a test may change them for a whole service)."""
        self.event_at = event_at
        self._hash = hash_id or id_hash
        partition_bits = PARTITION_BITS if partition_bits is None else partition_bits
        self._shift = 64 - partition_bits
        self._merge_at_least = merge_at_least or MERGE_AT_LEAST
        partitions = 1 << partition_bits
        # (kind, event_id) -> its place in the partition's pending columns: ids not merged
        # yet, exact. The columns (hash, sequence, fingerprint) are C arrays, so that a merge
        # takes them as numpy views, with no Python object per id to read or free.
        self._recent: list[dict[tuple[str, str], int]] = [{} for _ in range(partitions)]
        self._pending: list[tuple[array[int], array[int], array[int]]] = [
            _no_columns() for _ in range(partitions)
        ]
        self._last_hashed: tuple[tuple[str, str], int] = (("", ""), 0)  # find, then add
        empty_hashes: Hashes = np.empty(0, np.uint64)
        empty: Ints = np.empty(0, np.int64)
        self._hashes: list[Hashes] = [empty_hashes] * partitions
        self._sequences: list[Ints] = [empty] * partitions
        self._fingerprints: list[Ints] = [empty] * partitions
        self._journaled = 0  # every sequence up to here is in the journal: may be merged
        # Journaled ids remembered at recovery, sorted into the arrays at once when first
        # needed (a sort of all, not a merge each): one at a time, and in columns.
        self._loaded: tuple[array[int], array[int], array[int]] | None = None
        self._loaded_columns: list[tuple[Hashes, Ints, Ints]] = []
        self._count = 0
        self._filter = HashFilter()  # every merged hash: most new ids skip the bisection
        self._merge_at = [self._merge_threshold(0)] * partitions  # a dict's size that merges it
        # Ids the journal confirmed reused, the latest few: a client resending one again
        # costs no second read.
        self._confirmed: dict[tuple[str, str], tuple[int, int]] = {}

    def __len__(self) -> int:
        self._settle()
        return self._count

    def find(self, kind: str, event_id: str, fingerprint: int) -> tuple[int, int] | None:
        """(sequence, fingerprint) of the event journaled under this id, or None for a new id.
        Raises JournalUnreadable when only the journal could tell and it cannot be read."""
        self._settle()
        key = (kind, event_id)
        hashed = self._hashed(key)
        partition = hashed >> self._shift
        at = self._recent[partition].get(key)
        if at is not None:
            pending = self._pending[partition]
            return pending[1][at], pending[2][at]
        if hashed not in self._filter:
            return None
        # memoryviews: a bisection in C over Python ints is ~50x faster than a numpy call with
        # one scalar (measured: 0.5 us against 40 us for a uint64 array).
        hashes = self._hashes[partition].data
        index = bisect_left(hashes, hashed)
        others: list[tuple[int, int]] = []
        while index < len(hashes) and hashes[index] == hashed:
            seen = (
                self._sequences[partition].data[index],
                self._fingerprints[partition].data[index],
            )
            if seen[1] == fingerprint:
                return seen
            others.append(seen)
            index += 1
        if others and key in self._confirmed:
            return self._confirmed[key]
        for seen in others:
            if self._journaled_as(seen[0]) == key:
                self._confirmed[key] = seen
                if len(self._confirmed) > CONFIRMED:
                    del self._confirmed[next(iter(self._confirmed))]
                return seen
        return None

    def _hashed(self, key: tuple[str, str]) -> int:
        last, hashed = self._last_hashed
        if key != last:
            hashed = self._hash(*key)
            self._last_hashed = key, hashed
        return hashed

    def _journaled_as(self, sequence: int) -> tuple[str, str]:
        if self.event_at is None:  # not reached: nothing is merged without it
            raise JournalUnreadable("no journal to check against")
        try:
            event = self.event_at(sequence)
        except Exception as error:  # whatever the store raises: undecided, not new
            raise JournalUnreadable(f"the journal could not be read: {error}") from error
        if event is None:
            raise JournalUnreadable(f"the journal has no event at sequence {sequence}")
        return event.kind, event.event_id

    def add(self, kind: str, event_id: str, sequence: int, fingerprint: int) -> None:
        """Remembers a new id (one `find` answered None for)."""
        self._settle()
        key = (kind, event_id)
        hashed = self._hashed(key)
        partition = hashed >> self._shift
        recent = self._recent[partition]
        hashes, sequences, fingerprints = self._pending[partition]
        recent[key] = len(hashes)
        hashes.append(hashed)
        sequences.append(sequence)
        fingerprints.append(fingerprint)
        self._count += 1
        if len(recent) >= self._merge_at[partition]:
            self._merge(partition)

    def journaled(self, sequence: int) -> None:
        """Every event up to `sequence` is in the journal now: their ids may be merged."""
        self._journaled = max(self._journaled, sequence)

    def remember(self, kind: str, event_id: str, sequence: int, fingerprint: int) -> None:
        """Remembers an id the journal holds (recovery); one journaled twice is kept once."""
        self._journaled = max(self._journaled, sequence)
        if self.event_at is None:
            key = (kind, event_id)
            if key not in self._recent[self._hashed(key) >> self._shift]:
                self.add(kind, event_id, sequence, fingerprint)
            return
        if self._loaded is None:
            self._loaded = (array("Q"), array("q"), array("q"))
        hashes, sequences, fingerprints = self._loaded
        hashes.append(self._hash(kind, event_id))
        sequences.append(sequence)
        fingerprints.append(fingerprint)

    def remember_all(
        self,
        kinds: Sequence[str],
        event_ids: Sequence[str],
        sequences: Ints | Sequence[int],
        fingerprints: Ints | Sequence[int],
    ) -> int:
        """`remember` for columns of ids (a restart: hashed in numpy, no Python object per
        id; about 0.15 us an id with the sort); returns the greatest sequence (0: none)."""
        sequences = np.asarray(sequences, np.int64)
        fingerprints = np.asarray(fingerprints, np.int64)
        count = len(sequences)
        if not len(kinds) == len(event_ids) == count == len(fingerprints):
            raise ValueError("columns of different lengths")
        if not count:
            return 0
        latest = int(sequences.max())
        if self.event_at is None:
            rows = zip(kinds, event_ids, sequences.tolist(), fingerprints.tolist(), strict=True)
            for row in rows:
                self.remember(*row)
            return latest
        self._journaled = max(self._journaled, latest)
        if self._hash is _SIPHASH:
            hashes = id_hashes(kinds, event_ids)
        else:
            hashes = np.fromiter(map(self._hash, kinds, event_ids), np.uint64, count)
        self._loaded_columns.append((hashes, sequences, fingerprints))
        return latest

    def nbytes(self) -> int:
        """What the arrays hold (the dicts and the filter are not counted): for the
        benchmark."""
        self._settle()
        return sum(
            h.nbytes + s.nbytes + f.nbytes
            for h, s, f in zip(self._hashes, self._sequences, self._fingerprints, strict=True)
        )

    def filter_nbytes(self) -> int:
        """What the filter in front of the arrays holds: 1-4 bytes a merged id."""
        self._settle()
        return self._filter.nbytes()

    def _merge_threshold(self, merged: int) -> int:
        """The size of a partition's dict that merges it, when its arrays hold `merged`."""
        if self.event_at is None:
            return 1 << 62  # never: only the exact dicts can answer without a journal
        return max(self._merge_at_least, merged // MERGE_RATIO)

    def _merge(self, partition: int) -> None:
        """Moves the partition's journaled ids from its dict into its arrays."""
        recent = self._recent[partition]
        pending = self._pending[partition]
        all_hashes: Hashes = np.frombuffer(pending[0], np.uint64)
        all_sequences: Ints = np.frombuffer(pending[1], np.int64)
        all_fingerprints: Ints = np.frombuffer(pending[2], np.int64)
        moving = all_sequences <= self._journaled
        if not moving.any():
            return
        hashes, sequences = all_hashes[moving], all_sequences[moving]
        fingerprints = all_fingerprints[moving]
        waiting = ~moving
        places = np.cumsum(waiting) - 1  # where a waiting id goes in the new pending columns
        staying = {key: int(places[at]) for key, at in recent.items() if waiting[at]}
        left = (all_hashes[waiting], all_sequences[waiting], all_fingerprints[waiting])
        del all_hashes, all_sequences, all_fingerprints  # views: the arrays may be replaced
        self._pending[partition] = (
            array("Q", left[0].tobytes()),
            array("q", left[1].tobytes()),
            array("q", left[2].tobytes()),
        )
        if staying:
            self._recent[partition] = staying
        else:  # the usual case: every id's event is journaled
            recent.clear()
        order = np.argsort(hashes, kind="stable")
        hashes, sequences, fingerprints = hashes[order], sequences[order], fingerprints[order]
        # Where each new entry lands, once for the three columns (np.insert of each took 2.7
        # times as long: it works the positions out again for every column).
        at = np.searchsorted(self._hashes[partition], hashes, side="right")
        total = len(self._hashes[partition]) + len(at)
        landing = at + np.arange(len(at))
        kept = np.ones(total, bool)
        kept[landing] = False
        self._hashes[partition] = inserted(self._hashes[partition], hashes, landing, kept)
        self._sequences[partition] = inserted(self._sequences[partition], sequences, landing, kept)
        self._fingerprints[partition] = inserted(
            self._fingerprints[partition], fingerprints, landing, kept
        )
        self._merge_at[partition] = self._merge_threshold(total)
        if self._filter.add(hashes):
            self._filter.rebuild(np.concatenate(self._hashes))

    def settle(self) -> None:
        """Sorts the ids remembered at recovery into the arrays now (else the first event
        admitted waits for it: about 0.1 s a million ids, under load)."""
        self._settle()

    def _settle(self) -> None:
        """Sorts the ids remembered at recovery into the arrays, each journaled id once.
        Split into partitions first (a stable sort of their numbers, linear), then each
        partition sorted on its own: a sort and gathers of millions at once, every access a
        cache miss, took three times as long."""
        if self._loaded is None and not self._loaded_columns:
            return
        columns = [
            (hashes, sequences, fingerprints)
            for hashes, sequences, fingerprints in zip(
                self._hashes, self._sequences, self._fingerprints, strict=True
            )
            if len(hashes)
        ]
        columns += self._loaded_columns
        if self._loaded is not None:
            hashes_, sequences_, fingerprints_ = self._loaded
            columns.append(
                (
                    np.frombuffer(hashes_, np.uint64),
                    np.frombuffer(sequences_, np.int64),
                    np.frombuffer(fingerprints_, np.int64),
                )
            )
        self._loaded, self._loaded_columns = None, []
        hashes = np.concatenate([column[0] for column in columns])
        sequences = np.concatenate([column[1] for column in columns])
        fingerprints = np.concatenate([column[2] for column in columns])
        del columns
        partitions = len(self._hashes)
        order, bounds = by_partition(hashes, self._shift, partitions)
        hashes, sequences, fingerprints = hashes[order], sequences[order], fingerprints[order]
        del order
        count = 0
        for partition in range(partitions):
            start, stop = bounds[partition], bounds[partition + 1]
            count += self._sort_in(
                partition, hashes[start:stop], sequences[start:stop], fingerprints[start:stop]
            )
        self._count = count + sum(len(recent) for recent in self._recent)
        self._filter.rebuild(np.concatenate(self._hashes))

    def _sort_in(self, partition: int, hashes: Hashes, sequences: Ints, fingerprints: Ints) -> int:
        """Makes a partition's arrays of its ids, sorted by hash then sequence, a row journaled
        twice once; returns how many it holds."""
        order, shared = hash_order(hashes)
        if shared:  # ids sharing a hash (rare), or a row journaled twice: by sequence, once
            order = np.lexsort((sequences, hashes))
            ordered, in_sequence = hashes[order], sequences[order]
            once = np.ones(len(order), bool)
            once[1:] = (ordered[1:] != ordered[:-1]) | (in_sequence[1:] != in_sequence[:-1])
            order = order[once]
        self._hashes[partition] = hashes[order]
        self._sequences[partition] = sequences[order]
        self._fingerprints[partition] = fingerprints[order]
        self._merge_at[partition] = self._merge_threshold(len(order))
        return len(order)


def _no_columns() -> tuple[array[int], array[int], array[int]]:
    """Pending columns of (hash, sequence, fingerprint), empty."""
    return array("Q"), array("q"), array("q")


def inserted(
    column: npt.NDArray[Number],
    new: npt.NDArray[Number],
    landing: Ints,
    kept: npt.NDArray[np.bool_],
) -> npt.NDArray[Number]:
    """`column` with `new` at the positions `landing` of the result (the others: `kept`)."""
    merged = np.empty(len(kept), column.dtype)
    merged[landing] = new
    merged[kept] = column
    return merged


def by_partition(hashes: Hashes, shift: int, partitions: int) -> tuple[Ints, list[int]]:
    """The positions of `hashes` grouped by partition (the hash's top bits), each group in
    position order, and where each partition's group starts (then where the last ends). A
    sort of millions of hashes at once, then gathering columns in its order, misses the cache
    at every access; grouped first (a linear radix sort of the partitions' numbers), each
    partition sorts and gathers within a few hundred kilobytes: a third of the time."""
    numbers = hashes >> np.uint64(shift)
    if partitions <= 1 << 16:  # numpy sorts 16-bit keys by radix
        numbers = numbers.astype(np.uint16)
    order: Ints = np.argsort(numbers, kind="stable")
    bounds: list[int] = np.searchsorted(numbers[order], np.arange(partitions + 1)).tolist()
    return order, bounds


def hash_order(hashes: Hashes) -> tuple[Ints, bool]:
    """The order sorting `hashes`, and whether two of them are equal (then the caller orders
    those as it needs: the sort is not stable)."""
    order: Ints = np.argsort(hashes)
    if len(hashes) < 2:
        return order, False
    ordered = hashes[order]
    return order, bool((ordered[1:] == ordered[:-1]).any())
