"""How far from the service's clock an observed time may lie when it comes in.

A fill stamped in the year 2200 fits the store, yet it is a bug upstream (seconds sent as
milliseconds, a clock gone wrong), and a mark stamped so would make every real mark after it
look stale. So new events and marks are held to a window around now; events read back from
the journal are not (they were admitted when their time was plausible), which is why this is a
check at the door and not an invariant of the event.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.domain.events import InvalidEvent, describe_time

NS_PER_SECOND = 10**9


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """`max_ahead_ns`: clock skew tolerated (a broker's clock may run ahead of ours).
    `max_behind_ns`: how old a new event may be; 0 accepts any age (back-fills)."""

    max_ahead_ns: int = 300 * NS_PER_SECOND
    max_behind_ns: int = 0

    def check(self, field: str, time_ns: int, now_ns: int) -> None:
        """Raises InvalidEvent naming `field` when `time_ns` lies outside the window; an
        untimed value (0: reservations, definitions) passes."""
        if not time_ns:
            return
        if time_ns > now_ns + self.max_ahead_ns:
            raise InvalidEvent(
                field,
                f"{describe_time(time_ns)} is {_seconds(time_ns - now_ns)} after the service's "
                f"clock ({describe_time(now_ns)}); at most {_seconds(self.max_ahead_ns)} ahead "
                "is accepted",
            )
        if self.max_behind_ns and time_ns < now_ns - self.max_behind_ns:
            raise InvalidEvent(
                field,
                f"{describe_time(time_ns)} is {_seconds(now_ns - time_ns)} before the service's "
                f"clock; at most {_seconds(self.max_behind_ns)} back is accepted",
            )


def _seconds(ns: int) -> str:
    seconds = ns / NS_PER_SECOND
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.3f} s"
