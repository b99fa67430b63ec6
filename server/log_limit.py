"""A log that one source cannot flood: at most one line per key (a client, say) per interval.

What arrives from outside at a rate the outside chooses (bad requests, a misbehaving peer) must
still be seen, but one client sending a thousand bad requests a second must not bury everything
else in the log or spend the service's time writing it. The lines held back are counted, and
the count goes out with the key's next line or when its window is swept, so nothing is hidden.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Window:
    opened: float
    level: int
    held: int = 0
    last: tuple[str, tuple[object, ...]] = ("", ())  # the newest line held back


class LogLimiter:
    """Writes `logger` lines at most once per key per `interval` seconds.

    Memory is one small entry per key seen in the last interval: windows that have closed are
    swept at most once per interval; past `max_keys` open windows, new keys share one window
    (named `overflow_key`), so many sources at once still cost a bounded number of lines."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float,
        *,
        max_keys: int = 10_000,
        overflow_key: str = "other sources",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.max_keys = max_keys
        self.overflow_key = overflow_key
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._next_sweep = clock() + interval

    def log(self, level: int, key: str, message: str, *args: object) -> bool:
        """Logs `message % args` unless `key` had a line in the current interval; returns
        whether it did. The line after held-back ones says how many there were."""
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now, key)
        if key not in self._windows and len(self._windows) >= self.max_keys:
            key = self.overflow_key
        window = self._windows.get(key)
        if window is not None and now - window.opened < self.interval:
            window.held += 1
            window.last = (message, args)
            return False
        self._windows[key] = _Window(now, level)
        if window is not None and window.held:
            message += " (%d more from %s not logged since the last line)"
            args = (*args, window.held, key)
        self.logger.log(level, message, *args)
        return True

    def _sweep(self, now: float, keep: str) -> None:
        """Forgets closed windows but `keep`'s, whose count goes out with its line now."""
        self._next_sweep = now + self.interval
        closed = [
            key
            for key, window in self._windows.items()
            if now - window.opened >= self.interval and key != keep
        ]
        for key in closed:
            window = self._windows.pop(key)
            if window.held:
                message, args = window.last
                self.logger.log(
                    window.level,
                    message + " (the last of %d from %s not logged since the line before)",
                    *args,
                    window.held,
                    key,
                )
