"""When to try a stream again, and how long to wait first.

Retrying is only safe because the service is idempotent by event id (ingest) and replays by
sequence (subscriptions); the code sets below list the statuses where trying again can help.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import grpc

#: Seconds a unary call (or one ingest attempt) may take unless the caller says otherwise.
DEFAULT_TIMEOUT = 5.0

#: Ingest reopens its stream on these and resends whatever was not acked.
INGEST_RETRY_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
    }
)

#: A subscription reconnects from its cursor on these. RESOURCE_EXHAUSTED is how the service
#: ends the stream of a consumer too slow for its queue; the replay buffer usually still holds
#: what was missed, and if not the reconnect fails with OUT_OF_RANGE (ResyncRequired).
SUBSCRIBE_RESUME_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Exponential back-off with jitter, so clients of a restarting service do not reconnect in
    lockstep."""

    initial: float = 0.1
    maximum: float = 5.0
    multiplier: float = 2.0
    #: Each delay is shortened by up to this fraction, at random.
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < 0 or self.multiplier < 1:
            raise ValueError(f"invalid back-off {self}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be within [0, 1], got {self.jitter}")

    def delay(self, failures: int) -> float:
        """Seconds to wait after `failures` consecutive failures (1 for the first)."""
        if failures <= 0:
            return 0.0
        exponent = min(failures - 1, 64)
        base = min(self.maximum, self.initial * self.multiplier**exponent)
        return base * (1 - self.jitter * random.random())
