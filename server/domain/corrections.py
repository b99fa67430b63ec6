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

DEFAULT_WINDOW_NS = 7 * 24 * 3600 * 10**9


@dataclass(frozen=True, slots=True)
class Booked:
    """What was booked for one execution, and under which event id."""

    event_id: str
    fill: Fill


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
        self._put(fill.account_id, fill.fill_id, Booked(fill.fill_id, fill))

    def find(self, account_id: str, fill_id: str) -> tuple[str, Booked] | None:
        """The original id and what is booked for it now, for a fill or correction id."""
        original = self._originals.get((account_id, fill_id), fill_id)
        booked = self._booked.get((account_id, original))
        return (original, booked) if booked is not None else None

    def corrected_by(self, account_id: str, fill_id: str) -> str:
        """The correction that replaced this fill, or ""."""
        booked = self._booked.get((account_id, fill_id))
        if booked is None or booked.event_id == fill_id:
            return ""
        return booked.event_id

    def replace(self, account_id: str, original: str, correction: Fill) -> None:
        """Books a correction (`correction.fill_id` is the correction's id) in place of what
        was booked for `original`."""
        self._originals[(account_id, correction.fill_id)] = original
        self._put(account_id, original, Booked(correction.fill_id, correction))

    def _put(self, account_id: str, original: str, booked: Booked) -> None:
        key = (account_id, original)
        held = self._booked.get(key)
        if held is not None:
            self._by_time.discard((held.fill.timestamp_ns, account_id, original))
        self._booked[key] = booked
        self._by_time.add((booked.fill.timestamp_ns, account_id, original))
        self.latest_ns = max(self.latest_ns, booked.fill.timestamp_ns)
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
