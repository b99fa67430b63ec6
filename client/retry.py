"""When to try a call again, and how long to wait first.

Unary calls are retried by gRPC itself, through the retry policy of the channel's service
config (`retry_channel_options`): only the calls safe to send twice (`client.rpcs` marks them),
only on UNAVAILABLE, within the call's one deadline. Streams cannot be retried that way once
they have carried a message, so ingest and subscriptions resume by hand with `Backoff`: that is
safe only because the service is idempotent by event id (ingest) and replays by sequence
(subscriptions); the code sets below list the statuses where trying again can help.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

#: Seconds a unary call (or one ingest attempt) may take unless the caller says otherwise.
DEFAULT_TIMEOUT = 5.0

#: gRPC's retry policy for the idempotent unary calls: up to 5 attempts in all, waiting a
#: random time up to 0.1 s, 0.2 s, 0.4 s, 0.8 s between them (gRPC's jittered exponential
#: back-off), and only on UNAVAILABLE: the status of a service that is restarting or not
#: reachable yet. Every other status is an answer. The call's deadline bounds all attempts.
RETRY_POLICY: dict[str, Any] = {
    "maxAttempts": 5,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}

#: Retries stop while more than half of a channel's recent calls failed (gRPC's token bucket:
#: each failure costs 1 of 10 tokens, each success gives 0.1 back), so a client does not
#: multiply the load on a service that is struggling rather than restarting.
RETRY_THROTTLING: dict[str, Any] = {"maxTokens": 10, "tokenRatio": 0.1}

SERVICE_CONFIG_OPTION = "grpc.service_config"


def retry_service_config(service: str, methods: Iterable[str]) -> str:
    """The service config (JSON) retrying `methods` of `service` under RETRY_POLICY."""
    names = [{"service": service, "method": method} for method in methods]
    return json.dumps(
        {
            "methodConfig": [{"name": names, "retryPolicy": RETRY_POLICY}],
            "retryThrottling": RETRY_THROTTLING,
        }
    )


def retry_channel_options(
    options: Sequence[tuple[str, Any]], service: str, methods: Iterable[str]
) -> list[tuple[str, Any]]:
    """The caller's channel options with the retry policy added; a caller that passes its own
    `grpc.service_config` (or `grpc.enable_retries` 0) keeps it."""
    given = {name for name, _ in options}
    added: list[tuple[str, Any]] = []
    if SERVICE_CONFIG_OPTION not in given:
        added.append((SERVICE_CONFIG_OPTION, retry_service_config(service, methods)))
    if "grpc.enable_retries" not in given:
        added.append(("grpc.enable_retries", 1))
    return [*options, *added]


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
