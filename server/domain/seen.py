"""Every event id ever journaled, for exactly-once, in about 24 bytes an id.

A dict of (kind, event_id) costs about 300 bytes an id, forever: on a long day the ids alone
outgrow everything else. Here an id lives in a small exact dict only until its event is
journaled (applied), then moves into sorted numpy arrays of (64-bit hash of kind and id,
sequence, 64-bit content fingerprint). The arrays are split by the hash's top bits into
partitions that merge their recent ids on their own, each once its dict holds a thirty-second
of its arrays (and at least MERGE_AT_LEAST): a merge copies one partition, never the whole
set, so the cost per id stays constant however many ids there are (about 32 entries copied
per id); the pause of one merge grows with a partition (about 0.2 ms at a million ids).

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
from collections.abc import Callable

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
Ints = npt.NDArray[np.int64]


class JournalUnreadable(Exception):
    """The journal could not settle whether an id was seen; nothing was decided."""


_UNSIGNED_64 = (1 << 64) - 1


def id_hash(kind: str, event_id: str) -> int:
    """An unsigned 64-bit hash of an event's kind and id, good for this process only (Python's
    keyed SipHash: never stored, every start rebuilds the arrays from the journal's ids). 0.1 us
    where a blake2b digest took 0.8, once per event admitted and per id at every restart."""
    return hash((kind, event_id)) & _UNSIGNED_64


_SIPHASH = id_hash  # what `remember_all` inlines (a test may put another id_hash in place)


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
        # (kind, event_id) -> (sequence, fingerprint, hash): ids not merged yet, exact.
        self._recent: list[dict[tuple[str, str], tuple[int, int, int]]] = [
            {} for _ in range(partitions)
        ]
        self._last_hashed: tuple[tuple[str, str], int] = (("", ""), 0)  # find, then add
        empty_hashes: Hashes = np.empty(0, np.uint64)
        empty: Ints = np.empty(0, np.int64)
        self._hashes: list[Hashes] = [empty_hashes] * partitions
        self._sequences: list[Ints] = [empty] * partitions
        self._fingerprints: list[Ints] = [empty] * partitions
        self._journaled = 0  # every sequence up to here is in the journal: may be merged
        # Journaled ids remembered at recovery, sorted into the arrays at once when first
        # needed (a sort of all, not a merge each).
        self._loaded: tuple[array[int], array[int], array[int]] | None = None
        self._count = 0
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
        exact = self._recent[partition].get(key)
        if exact is not None:
            return exact[0], exact[1]
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
        recent = self._recent[hashed >> self._shift]
        recent[key] = (sequence, fingerprint, hashed)
        self._count += 1
        if len(recent) >= self._merge_threshold(hashed >> self._shift):
            self._merge(hashed >> self._shift)

    def journaled(self, sequence: int) -> None:
        """Every event up to `sequence` is in the journal now: their ids may be merged."""
        self._journaled = max(self._journaled, sequence)

    def remember(self, kind: str, event_id: str, sequence: int, fingerprint: int) -> None:
        """Remembers an id the journal holds (recovery); one journaled twice is kept once."""
        self._journaled = max(self._journaled, sequence)
        if self.event_at is None:
            hashed = self._hash(kind, event_id)
            recent = self._recent[hashed >> self._shift]
            if (kind, event_id) not in recent:
                recent[(kind, event_id)] = (sequence, fingerprint, hashed)
                self._count += 1
            return
        if self._loaded is None:
            self._loaded = (array("Q"), array("q"), array("q"))
        hashes, sequences, fingerprints = self._loaded
        hashes.append(self._hash(kind, event_id))
        sequences.append(sequence)
        fingerprints.append(fingerprint)

    def remember_all(
        self, kinds: list[str], event_ids: list[str], sequences: list[int], fingerprints: list[int]
    ) -> None:
        """`remember` for columns of ids in sequence order (a restart: about 0.3 us an id)."""
        if self.event_at is None or not sequences:
            for row in zip(kinds, event_ids, sequences, fingerprints, strict=True):
                self.remember(*row)
            return
        self._journaled = max(self._journaled, sequences[-1])
        if self._loaded is None:
            self._loaded = (array("Q"), array("q"), array("q"))
        hashes, kept_sequences, kept_fingerprints = self._loaded
        if self._hash is _SIPHASH:  # id_hash inlined: a call less per id
            keys = zip(kinds, event_ids, strict=True)
            hashes.extend([hash(key) & _UNSIGNED_64 for key in keys])
        else:
            hashes.extend(map(self._hash, kinds, event_ids))
        kept_sequences.extend(sequences)
        kept_fingerprints.extend(fingerprints)

    def nbytes(self) -> int:
        """What the arrays hold (the dicts are not counted): for the benchmark."""
        self._settle()
        return sum(
            h.nbytes + s.nbytes + f.nbytes
            for h, s, f in zip(self._hashes, self._sequences, self._fingerprints, strict=True)
        )

    def _merge_threshold(self, partition: int) -> int:
        if self.event_at is None:
            return 1 << 62  # never: only the exact dicts can answer without a journal
        return max(self._merge_at_least, len(self._hashes[partition]) // MERGE_RATIO)

    def _merge(self, partition: int) -> None:
        """Moves the partition's journaled ids from its dict into its arrays."""
        recent = self._recent[partition]
        moving = [(key, seen) for key, seen in recent.items() if seen[0] <= self._journaled]
        if not moving:
            return
        for key, _ in moving:
            del recent[key]
        hashes = np.fromiter((seen[2] for _, seen in moving), np.uint64, len(moving))
        sequences = np.fromiter((seen[0] for _, seen in moving), np.int64, len(moving))
        fingerprints = np.fromiter((seen[1] for _, seen in moving), np.int64, len(moving))
        order = np.argsort(hashes, kind="stable")
        hashes, sequences, fingerprints = hashes[order], sequences[order], fingerprints[order]
        at = np.searchsorted(self._hashes[partition], hashes, side="right")
        self._hashes[partition] = np.insert(self._hashes[partition], at, hashes)
        self._sequences[partition] = np.insert(self._sequences[partition], at, sequences)
        self._fingerprints[partition] = np.insert(self._fingerprints[partition], at, fingerprints)

    def settle(self) -> None:
        """Sorts the ids remembered at recovery into the arrays now (else the first event
        admitted waits for it: about 0.3 s a million ids)."""
        self._settle()

    def _settle(self) -> None:
        """Sorts the ids remembered at recovery into the arrays, each journaled id once."""
        if self._loaded is None:
            return
        loaded, self._loaded = self._loaded, None
        hashes = np.concatenate([*self._hashes, np.frombuffer(loaded[0], np.uint64)])
        sequences = np.concatenate([*self._sequences, np.frombuffer(loaded[1], np.int64)])
        fingerprints = np.concatenate([*self._fingerprints, np.frombuffer(loaded[2], np.int64)])
        del loaded
        order = np.lexsort((sequences, hashes))
        hashes, sequences, fingerprints = hashes[order], sequences[order], fingerprints[order]
        if len(hashes):  # a row journaled twice (an append retried after it landed): once
            once = np.ones(len(hashes), bool)
            once[1:] = (hashes[1:] != hashes[:-1]) | (sequences[1:] != sequences[:-1])
            hashes, sequences, fingerprints = hashes[once], sequences[once], fingerprints[once]
        partitions = len(self._hashes)
        bounds = np.searchsorted(
            hashes >> np.uint64(self._shift), np.arange(partitions + 1, dtype=np.uint64)
        )
        for partition in range(partitions):
            start, stop = int(bounds[partition]), int(bounds[partition + 1])
            self._hashes[partition] = hashes[start:stop].copy()
            self._sequences[partition] = sequences[start:stop].copy()
            self._fingerprints[partition] = fingerprints[start:stop].copy()
        self._count = len(hashes) + sum(len(recent) for recent in self._recent)
