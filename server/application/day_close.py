"""Trading-day closes: at each session close the service journals one `DayClose` per account
that holds rows, so that the P&L history (server/domain/pnl_history.py) is a function of the
journal, rebuilt identically by a restart.

The session closes at one time of day in one time zone (17:00 America/New_York by default,
where US equities and most futures roll their day), on the configured weekdays. A trading day
is named by the date of its close in that zone. A close the service was down for is journaled
at the next start, marked `late` (its figures then include what arrived since the close
instant); only the latest missed one: the days in between had no close to record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from server.application.ports import StorageUnavailable
from server.application.writes import WritePath
from server.domain.events import DayClose
from server.domain.ledger import Result

log = logging.getLogger("portfolio.day_close")

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
LATE_AFTER_NS = 60 * 10**9
"""A close journaled more than this after its instant is marked late."""
RETRY_SECONDS = 30.0
"""A close the store refused is offered again this often."""


@dataclass(frozen=True, slots=True)
class SessionCalendar:
    close_time: day_time
    zone: ZoneInfo
    weekdays: frozenset[int]  # 0 = Monday

    @classmethod
    def parse(cls, close_time: str, zone: str, days: str) -> SessionCalendar:
        """From the flags' texts ("17:00", "America/New_York", "mon-fri" / "mon,wed" / "all");
        raises ValueError naming what is wrong."""
        try:
            hour, minute = (int(part) for part in close_time.split(":"))
            when = day_time(hour, minute)
        except ValueError:
            raise ValueError(f"session close {close_time!r}: use HH:MM, e.g. 17:00") from None
        try:
            tz = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"session time zone {zone!r}: not an IANA zone name") from None
        return cls(when, tz, _weekdays(days))

    def close_ns(self, trading_date: date) -> int:
        """The close's instant on `trading_date` (a wall time a DST change skips or repeats
        resolves as zoneinfo does: the earlier reading)."""
        moment = datetime.combine(trading_date, self.close_time, tzinfo=self.zone)
        return int(moment.timestamp()) * 10**9

    def latest_close(self, now_ns: int) -> tuple[str, int] | None:
        """The trading date and instant of the latest close at or before `now_ns`."""
        today = datetime.fromtimestamp(now_ns / 1e9, UTC).astimezone(self.zone).date()
        for back in range(8):
            day = today - timedelta(days=back)
            if day.weekday() in self.weekdays and self.close_ns(day) <= now_ns:
                return day.isoformat(), self.close_ns(day)
        return None

    def next_close_ns(self, now_ns: int) -> int:
        today = datetime.fromtimestamp(now_ns / 1e9, UTC).astimezone(self.zone).date()
        for ahead in range(9):
            day = today + timedelta(days=ahead)
            if day.weekday() in self.weekdays and self.close_ns(day) > now_ns:
                return self.close_ns(day)
        raise ValueError("a calendar with no session day has no close")


def _weekdays(text: str) -> frozenset[int]:
    spec = text.strip().lower()
    if spec == "all":
        return frozenset(range(7))
    if spec == "none":  # no close: no P&L history
        return frozenset()
    days: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.strip().partition("-")
        if first not in _WEEKDAYS or (last and last not in _WEEKDAYS):
            raise ValueError(f"session days {text!r}: use e.g. mon-fri, mon,wed,fri, all or none")
        start, end = _WEEKDAYS.index(first), _WEEKDAYS.index(last or first)
        days.update(range(start, end + 1) if start <= end else [*range(start, 7), *range(end + 1)])
    return frozenset(days)


class DayCloser:
    """Journals the closes that are due (`close_due`), and keeps doing so at each close
    (`run`, a supervised task)."""

    def __init__(
        self,
        writes: WritePath[Any],
        calendar: SessionCalendar,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._writes = writes
        self.calendar = calendar
        self._clock_ns = clock_ns

    def due(self, now_ns: int) -> list[DayClose]:
        """A close of the latest session day for every account with rows not closed through
        it yet."""
        latest = self.calendar.latest_close(now_ns)
        if latest is None:
            return []
        trading_date, close_ns = latest
        ledger = self._writes.ledger
        return [
            DayClose(
                account_id=account_id,
                trading_date=trading_date,
                timestamp_ns=close_ns,
                marks=ledger.closing_marks(account_id),
                late=now_ns - close_ns > LATE_AFTER_NS,
            )
            for account_id in sorted(ledger.book.accounts())
            if ledger.pnl.closed_through(account_id) < trading_date
        ]

    async def close_due(self) -> int:
        """Journals the closes due now; returns how many were recorded."""
        closes = self.due(self._clock_ns())
        if not closes:
            return 0
        outcomes = await self._writes.ingest(closes)
        recorded = sum(outcome.result is Result.ACCEPTED for outcome in outcomes)
        log.info(
            "trading day %s closed for %d accounts%s",
            closes[0].trading_date,
            recorded,
            " (late: the service was down at the close)" if closes[0].late else "",
        )
        return recorded

    async def run(self) -> None:
        while True:
            try:
                await self.close_due()
            except StorageUnavailable as error:
                log.error("day close not journaled, the store is unavailable (%s): retrying", error)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            now = self._clock_ns()
            wait = (self.calendar.next_close_ns(now) - now) / 1e9
            await asyncio.sleep(min(max(wait, 0.0), 3600.0))  # wall clocks jump: look again
