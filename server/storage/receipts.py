"""When the service received what it journaled, as far as a restart needs to know it.

The journal keeps no receipt time per event (its schema is static: a new column would stop
appends to every existing journal). A trace lives a TTL past the receipt of its latest leg, so
a restart must know, for each journaled leg, a time by which it had surely been received. The
store notes an anchor after each append that landed: "every event up to sequence S had been
received by time T" (T read after the append, so it is never early). The anchors ride in each
checkpoint's metadata and carry over from one process to the next.

A leg's receipt bound is the time of the first anchor at or after its sequence: never earlier
than the truth, later by at most the anchor spacing. Anchors are thinned as they age (kept
spacing is about their age / DENSITY; past LIMIT they are thinned to LIMIT / 2 at most, the
oldest dropped first), so their number stays bounded whatever the rate (0.6 us per append),
and a bound a TTL ago is within a few TTL / DENSITY of the truth (measured: 4 s at 5 minutes,
one append every 10 ms).

`floor` is the sequence the anchors start from: events at or before it (a journal written
before anchors existed) have no bound but the first anchor's.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

DENSITY = 64  # anchors per doubling of age, about
LIMIT = 2048  # thin when past this many (about 40 KB of metadata); keep half


@dataclass(slots=True)
class Receipts:
    floor: int = 0
    # (sequence, time_ns), both increasing.
    anchors: list[tuple[int, int]] = field(default_factory=list)

    def note(self, sequence: int, time_ns: int) -> None:
        """Everything up to `sequence` had been received by `time_ns`."""
        if self.anchors:
            last_sequence, last_time = self.anchors[-1]
            if sequence <= last_sequence:
                return
            time_ns = max(time_ns, last_time)  # a clock stepping back keeps the bounds sound
        self.anchors.append((sequence, time_ns))
        if len(self.anchors) > LIMIT:
            self.thin(time_ns)

    def thin(self, now_ns: int) -> None:
        """Keeps the newest anchor and, going back, one whenever the gap to the last kept is
        at least the anchor's age / DENSITY: dense where recent, sparse where old."""
        kept = [self.anchors[-1]]
        for anchor in reversed(self.anchors[:-1]):
            if kept[-1][1] - anchor[1] >= (now_ns - anchor[1]) // DENSITY:
                kept.append(anchor)
        kept.reverse()
        self.anchors = kept[-(LIMIT // 2) :]

    def received_by(self, sequence: int) -> int | None:
        """The time by which the event at `sequence` had surely been received (None: after
        every anchor)."""
        i = bisect.bisect_left(self.anchors, (sequence, -1))
        return self.anchors[i][1] if i < len(self.anchors) else None

    def received_before(self, time_ns: int) -> int:
        """The last sequence surely received at or before `time_ns` (0 if none is known)."""
        found = 0
        for sequence, at_ns in self.anchors:  # a few hundred at most, read at a restart
            if at_ns > time_ns:
                break
            found = sequence
        return found

    def encoded(self) -> dict[str, object]:
        return {"floor": self.floor, "anchors": [list(anchor) for anchor in self.anchors]}

    @classmethod
    def decoded(cls, value: object, also: Iterable[tuple[int, int]] = ()) -> Receipts:
        """Anchors as a checkpoint's metadata holds them (None: there is no checkpoint, the
        whole journal is replayed), with further known ones (the checkpoint's and the
        journal's last write); a checkpoint from before anchors starts them at the latest of
        those."""
        extra = sorted(also)
        if isinstance(value, dict) and "anchors" in value:
            receipts = cls(int(value["floor"]), [(int(s), int(t)) for s, t in value["anchors"]])
        else:
            receipts = cls(extra[-1][0] if extra and value is not None else 0)
        merged: dict[int, int] = dict(receipts.anchors)
        for sequence, time_ns in extra:
            merged[sequence] = min(merged.get(sequence, time_ns), time_ns)
        # Bounds only ever tighten: a later anchor's time also bounds every earlier sequence.
        anchors: list[tuple[int, int]] = []
        for sequence, time_ns in sorted(merged.items(), reverse=True):
            if anchors and time_ns >= anchors[-1][1]:
                continue
            anchors.append((sequence, time_ns))
        receipts.anchors = anchors[::-1]
        return receipts
