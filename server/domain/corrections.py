"""The fills a broker correction may still replace.

A correction names the execution it replaces (IB: the same execId stem, a new suffix). Booking
it needs what was booked for that execution, so recent fills are kept here: every fill whose
time is within `window_ns` of the latest fill time seen. The window depends only on the fills,
so a restart that reloads the fills inside it (from the journal) holds the same entries and
replays corrections the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from sortedcontainers import SortedList

from server.domain.events import Fill

DEFAULT_WINDOW_NS = 24 * 3600 * 10**9


@dataclass(frozen=True, slots=True)
class JournaledFill:
    """A fill as the journal holds it, not decoded: what recovery reloads."""

    account_id: str
    fill_id: str
    timestamp_ns: int
    text: str


class Booked:
    """What was booked for one execution, and under which event id. A fill reloaded from the
    journal keeps its canonical text until a correction needs it: a restart reloads every
    fill of the window, and few are ever corrected."""

    __slots__ = ("_fill", "_text", "event_id", "timestamp_ns")

    def __init__(self, event_id: str, fill: Fill | None, timestamp_ns: int, text: str = "") -> None:
        self.event_id = event_id
        self.timestamp_ns = timestamp_ns
        self._fill = fill
        self._text = text

    @property
    def fill(self) -> Fill:
        if self._fill is None:
            self._fill = Fill.from_text(self._text)
            self._text = ""
        return self._fill


class CorrectableFills:
    def __init__(self, window_ns: int = DEFAULT_WINDOW_NS) -> None:
        self.window_ns = window_ns
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

    def add(self, fill: Fill) -> None:
        """Remembers a booked fill (not a correction)."""
        self._put(fill.account_id, fill.fill_id, Booked(fill.fill_id, fill, fill.timestamp_ns))

    def add_journaled(self, fills: list[JournaledFill]) -> None:
        """Remembers booked fills by their journal text, at once (recovery: a sort, not an
        insertion each)."""
        times = []
        for fill in fills:
            key = (fill.account_id, fill.fill_id)
            if key in self._booked:  # not reached from a journal: ids are unique
                raise ValueError(f"fill {fill.fill_id!r} reloaded twice")
            self._booked[key] = Booked(fill.fill_id, None, fill.timestamp_ns, fill.text)
            times.append((fill.timestamp_ns, *key))
            self.latest_ns = max(self.latest_ns, fill.timestamp_ns)
        self._by_time.update(times)
        self.evict()

    def find(self, account_id: str, fill_id: str) -> tuple[str, Booked] | None:
        """The original id and what is booked for it now, for a fill or correction id."""
        original = self._originals.get((account_id, fill_id), fill_id)
        booked = self._booked.get((account_id, original))
        return (original, booked) if booked is not None else None

    def replace(self, account_id: str, original: str, correction: Fill) -> None:
        """Books a correction (`correction.fill_id` is the correction's id) in place of what
        was booked for `original`."""
        self._originals[(account_id, correction.fill_id)] = original
        self._put(
            account_id, original, Booked(correction.fill_id, correction, correction.timestamp_ns)
        )

    def _put(self, account_id: str, original: str, booked: Booked) -> None:
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
