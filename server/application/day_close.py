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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from server.application.ports import StorageUnavailable
from server.application.stepping import in_steps
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


def account_sessions(text: str) -> dict[str, SessionCalendar]:
    """`--account-sessions`: "ACCOUNT=HH:MM ZONE [DAYS]" entries separated by ";" (say,
    "U123=16:30 Europe/London mon-fri; U456=06:00 Asia/Tokyo"); raises ValueError naming the
    entry at fault."""
    calendars: dict[str, SessionCalendar] = {}
    for entry in filter(None, (part.strip() for part in text.split(";"))):
        account_id, equals, spec = entry.partition("=")
        parts = spec.split()
        if not equals or not account_id.strip() or len(parts) not in (2, 3):
            raise ValueError(
                f"account session {entry!r}: use ACCOUNT=HH:MM ZONE [DAYS], e.g. "
                "U123=16:30 Europe/London mon-fri"
            )
        try:
            calendars[account_id.strip()] = SessionCalendar.parse(
                parts[0], parts[1], parts[2] if len(parts) == 3 else "mon-fri"
            )
        except ValueError as error:
            raise ValueError(f"account session {entry!r}: {error}") from None
    return calendars


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
    """Journals the closes that are due (`close_due`), then records each in the analysts'
    store (`pnl`, and the rows and balances at the close in `position_history` and
    `balances`), and keeps doing so at each close (`run`, a supervised task)."""

    def __init__(
        self,
        writes: WritePath[Any],
        calendar: SessionCalendar,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        accounts: Mapping[str, SessionCalendar] | None = None,
    ) -> None:
        self._writes = writes
        self.calendar = calendar  # every account's but those in `accounts`
        self.accounts = dict(accounts or {})
        self._clock_ns = clock_ns
        # account -> (its latest close is late, its rows and balances at the close are ours to
        # write: a close replayed at a start; one this process journaled went to the views
        # with the commit, ViewProjector.submit).
        self._unrecorded: dict[str, tuple[bool, bool]] = {}
        self._said_lost: set[tuple[str, str]] = set()

    def calendar_of(self, account_id: str) -> SessionCalendar:
        return self.accounts.get(account_id, self.calendar)

    async def due(self, now_ns: int) -> list[DayClose]:
        """A close of its latest session day for every account with rows not closed through
        it yet (each account on its own calendar). Its marks are the book's prices, taken in
        steps with the committer's lock held (no event applies in between; a million rows at
        once held the event loop about 0.4 s)."""
        ledger = self._writes.ledger
        closes = []
        for account_id in sorted(ledger.book.accounts()):
            latest = self.calendar_of(account_id).latest_close(now_ns)
            if latest is None:
                continue
            trading_date, close_ns = latest
            if ledger.pnl.closed_through(account_id) >= trading_date:
                continue
            async with self._writes.committer.book:
                marks = await in_steps(ledger.pricing_close(account_id))
            closes.append(
                DayClose(
                    account_id=account_id,
                    trading_date=trading_date,
                    timestamp_ns=close_ns,
                    marks=marks,
                    late=now_ns - close_ns > LATE_AFTER_NS,
                )
            )
        return closes

    def next_close_ns(self, now_ns: int) -> int:
        """The next close of any calendar."""
        calendars = [self.calendar, *self.accounts.values()]
        return min(c.next_close_ns(now_ns) for c in calendars if c.weekdays)

    async def close_due(self) -> int:
        """Journals the closes due now, then records them in the store; returns how many
        were journaled."""
        closes = await self.due(self._clock_ns())
        recorded = 0
        if closes:
            outcomes = await self._writes.ingest(closes)
            recorded = sum(outcome.result is Result.ACCEPTED for outcome in outcomes)
            log.info(
                "trading day closed for %d accounts (%s)%s",
                recorded,
                ", ".join(sorted({close.trading_date for close in closes})),
                " (late: the service was down at a close)" if any(c.late for c in closes) else "",
            )
            for close in closes:
                self._unrecorded[close.account_id] = (close.late, False)
        await self.record_closes()
        return recorded

    async def record_closes(self) -> None:
        """Writes each account's latest close the store does not hold yet; raises
        StorageUnavailable (what is left is tried again). The rows and balances at a close
        this process journaled are not taken again here: the views took them with the commit
        (ViewProjector.submit), exactly as the close left them, and a view of every row built
        here, on the event loop, cost as much as the close itself (18.8 us a row, loaded: 19 s
        at a million rows) to be appended nowhere (`record_close` appends a close once)."""
        ledger, reads, store = self._writes.ledger, self._writes.reads, self._writes.store
        loop = asyncio.get_running_loop()
        executor = self._writes.views_executor
        for account_id, (late, snapshot) in list(self._unrecorded.items()):
            days = ledger.pnl.latest_rows(account_id)
            if days is None:
                self._unrecorded.pop(account_id, None)
                continue
            await loop.run_in_executor(executor, store.record_pnl, days, late)
            if snapshot:
                views = [
                    reads.view(row)
                    for group in ledger.account_instrument_rows(account_id).values()
                    for row in group
                ]
                balances = [b.copy() for b in ledger.balances.of_account(account_id)]
                close_ns = days[0].close_ns if days else self._clock_ns()
                await loop.run_in_executor(executor, store.record_close, close_ns, views, balances)
            ledger.pnl.written(account_id, days)
            self._unrecorded.pop(account_id, None)

    async def catch_up(self) -> None:
        """At start: closes the journal holds that the store missed (the service stopped
        between the two) are written if this process replayed them, else said once."""
        ledger, store = self._writes.ledger, self._writes.store
        loop = asyncio.get_running_loop()
        for account_id in sorted(ledger.book.accounts()):
            closed = ledger.pnl.closed_through(account_id)
            if not closed:
                continue
            written = await loop.run_in_executor(
                self._writes.views_executor, store.pnl_written_through, account_id
            )
            if written >= closed:
                continue
            if ledger.pnl.latest_rows(account_id) is not None:
                self._unrecorded[account_id] = (False, True)
            elif (account_id, closed) not in self._said_lost:
                self._said_lost.add((account_id, closed))
                log.error(
                    "the pnl library of %s holds its days through %s, the journal through %s: "
                    "the rows of the close(s) in between were not written before the service "
                    "stopped (GetPnlHistory has the days)",
                    account_id,
                    written or "none",
                    closed,
                )

    async def run(self) -> None:
        caught_up = False
        while True:
            try:
                if not caught_up:
                    await self.catch_up()
                    caught_up = True
                await self.close_due()
            except StorageUnavailable as error:
                log.error("day close not recorded, the store is unavailable (%s): retrying", error)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            now = self._clock_ns()
            wait = (self.next_close_ns(now) - now) / 1e9
            await asyncio.sleep(min(max(wait, 0.0), 3600.0))  # wall clocks jump: look again
