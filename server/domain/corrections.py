"""The fills a broker correction may still replace.

A correction names the execution it replaces (IB: the same execId stem, a new suffix). Booking
it needs what was booked for that execution, so recent fills are kept here: every fill whose
time is within `window_ns` of the latest fill time seen. The window depends only on the fills,
so a restart that reloads the fills inside it (from the journal) holds the same entries and
replays corrections the same way.

With the journal to read from (`EventAt`), an entry keeps only the sequence of what was booked
and reads the event back when a correction arrives (rare): about 300 bytes a fill in the window
instead of about 1 KB for a decoded fill. Without it, the fill itself is kept.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from sortedcontainers import SortedList

from server.domain.events import Fill, FillCorrection
from server.domain.seen import EventAt, JournalUnreadable

DEFAULT_WINDOW_NS = 24 * 3600 * 10**9


@dataclass(frozen=True, slots=True)
class JournaledFill:
    """A fill as the journal holds it, not decoded: what recovery reloads."""

    account_id: str
    fill_id: str
    timestamp_ns: int
    text: str


class Booked:
    """What was booked for one execution, and under which event id: the fill, its canonical
    text (reloaded without a journal to read: decoded when first asked), or the sequence of
    the fill or correction that booked it, read back from the journal when asked (few fills
    are ever corrected)."""

    __slots__ = ("_event_at", "_source", "event_id", "timestamp_ns")

    def __init__(
        self,
        event_id: str,
        source: Fill | str | int,
        timestamp_ns: int,
        event_at: EventAt | None = None,
    ) -> None:
        self.event_id = event_id
        self.timestamp_ns = timestamp_ns
        self._source = source
        self._event_at = event_at

    @property
    def fill(self) -> Fill:
        """What is booked; raises JournalUnreadable if it must be read and cannot be."""
        source = self._source
        if isinstance(source, Fill):
            return source
        if isinstance(source, str):
            self._source = Fill.from_text(source)
            return self._source
        if self._event_at is None:  # not reached: a sequence is kept only with a journal
            raise JournalUnreadable("no journal to read the fill from")
        try:
            event = self._event_at(source)
        except Exception as error:
            raise JournalUnreadable(f"the journal could not be read: {error}") from error
        if isinstance(event, FillCorrection) and event.correction_id == self.event_id:
            self._source = event.replacement()
        elif isinstance(event, Fill) and event.fill_id == self.event_id:
            self._source = event
        else:
            raise JournalUnreadable(f"the journal holds no {self.event_id!r} at sequence {source}")
        return self._source  # kept: its correction, which asked, replaces it soon


class CorrectableFills:
    def __init__(self, window_ns: int = DEFAULT_WINDOW_NS, journal: EventAt | None = None) -> None:
        self.window_ns = window_ns
        self.journal = journal
        self.latest_ns = 0  # the latest fill time seen: the window ends there
        # (account_id, original fill_id) -> what is booked for it now (the original, or the
        # latest correction of it).
        self._booked: dict[tuple[str, str], Booked] = {}
        self._by_time: SortedList = SortedList()  # (timestamp_ns, account_id, original id)
        # (account_id, id) -> the original fill_id, for every correction: a later correction
        # may name either.
        self._originals: dict[tuple[str, str], str] = {}

    def __len__(self) -> int:
        return len(self._booked)

    def add(self, fill: Fill, sequence: int) -> None:
        """Remembers a booked fill (not a correction), journaled at `sequence`."""
        source = fill if self.journal is None else sequence
        self._put(fill.account_id, fill.fill_id, self._booked_as(fill.fill_id, source, fill))

    def _booked_as(self, event_id: str, source: Fill | str | int, fill: Fill) -> Booked:
        return Booked(event_id, source, fill.timestamp_ns, self.journal)

    def add_journaled(self, fills: list[tuple[int, JournaledFill]]) -> None:
        """Remembers booked fills as the journal holds them, at once (recovery: a sort, not an
        insertion each)."""
        times = []
        for sequence, fill in fills:
            key = (sys.intern(fill.account_id), fill.fill_id)
            if key in self._booked:  # not reached from a journal: ids are unique
                raise ValueError(f"fill {fill.fill_id!r} reloaded twice")
            source = fill.text if self.journal is None else sequence
            self._booked[key] = Booked(fill.fill_id, source, fill.timestamp_ns, self.journal)
            times.append((fill.timestamp_ns, *key))
            self.latest_ns = max(self.latest_ns, fill.timestamp_ns)
        self._by_time.update(times)
        self.evict()

    def find(self, account_id: str, fill_id: str) -> tuple[str, Booked] | None:
        """The original id and what is booked for it now, for a fill or correction id."""
        original = self._originals.get((account_id, fill_id), fill_id)
        booked = self._booked.get((account_id, original))
        return (original, booked) if booked is not None else None

    def replace(self, account_id: str, original: str, correction: Fill, sequence: int) -> None:
        """Books a correction (`correction.fill_id` is the correction's id, journaled at
        `sequence`) in place of what was booked for `original`."""
        account_id = sys.intern(account_id)
        self._originals[(account_id, correction.fill_id)] = original
        source = correction if self.journal is None else sequence
        self._put(account_id, original, self._booked_as(correction.fill_id, source, correction))

    def _put(self, account_id: str, original: str, booked: Booked) -> None:
        account_id = sys.intern(account_id)
        key = (account_id, original)
        held = self._booked.get(key)
        if held is not None:
            self._by_time.discard((held.timestamp_ns, account_id, original))
        self._booked[key] = booked
        self._by_time.add((booked.timestamp_ns, account_id, original))
        self.latest_ns = max(self.latest_ns, booked.timestamp_ns)
        self.evict()

    def evict(self) -> None:
        """Forgets what fell out of the window."""
        horizon = self.horizon_ns()
        while self._by_time and self._by_time[0][0] < horizon:
            _, old_account, old_id = self._by_time.pop(0)
            gone = self._booked.pop((old_account, old_id))
            self._originals.pop((old_account, gone.event_id), None)

    def horizon_ns(self) -> int:
        """Fills before this time are out of the window."""
        return self.latest_ns - self.window_ns
