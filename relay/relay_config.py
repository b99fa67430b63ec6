"""The relay's settings: command-line flags, each defaulting to a RELAY_* variable."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from cli import env_options
from relay.credentials import ServiceCredentials, add_credential_options, credentials_from
from relay.executions import DEFAULT_STRATEGY

DEAD_LETTERS = "relay-dead-letters.jsonl"

__all__ = ["RelayConfig", "parse_args"]


@dataclass(frozen=True, slots=True)
class RelayConfig:
    tws_host: str = "127.0.0.1"
    # 4002: IB Gateway paper; 4001 IB Gateway live; 7497 TWS paper; 7496 TWS live.
    tws_port: int = 4002
    # Should be TWS's "Master API client ID", so that TWS reports every client's orders to it.
    client_id: int = 900
    service: str = "127.0.0.1:50051"
    # The strategy of executions whose order has no orderRef.
    default_strategy: str = DEFAULT_STRATEGY
    # A JSON file {"conId": "instrument id"}; empty: every instrument is str(conId).
    contract_map: str = ""
    # Seconds a fill waits for its commission report before it is sent without one.
    commission_wait: float = 10.0
    # Seconds between sweeps of TWS's executions (catches fills whose live events did not fire).
    sweep_seconds: float = 60.0
    connect_timeout: float = 10.0
    log_level: str = "INFO"
    # JSON lines of events the service refused and executions the relay could not map.
    dead_letters: str = DEAD_LETTERS
    # Resend the dead letters (after a fix) instead of relaying; those refused again stay.
    replay_dead_letters: bool = False
    # A grpc.health.v1 server on 127.0.0.1 at this port (tws, visibility, dead_letters,
    # authorization); 0: off.
    health_port: int = 0
    # TLS, mutual TLS and the bearer token shown to the service (the token: RELAY_TOKEN or
    # --token-file, never a flag); none: plaintext to a service on loopback.
    credentials: ServiceCredentials = field(default_factory=ServiceCredentials)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def _strategy(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("the default strategy must not be empty")
    return text.strip()


def parse_args(argv: list[str] | None = None) -> RelayConfig:
    defaults = RelayConfig()
    parser = argparse.ArgumentParser(
        prog="python -m relay",
        description="Streams IB executions and order statuses into the portfolio manager.",
        epilog="Traces are set by OpenTelemetry's variables only, no flag: OTEL_TRACES_EXPORTER="
        "otlp (with OTEL_EXPORTER_OTLP_ENDPOINT, e.g. http://127.0.0.1:4317), console or none.",
    )

    option = env_options(parser, "RELAY_")
    option("--tws-host", str, defaults.tws_host, "TWS / IB Gateway host")
    option("--tws-port", int, defaults.tws_port,
           "TWS / IB Gateway API port (4002 gateway paper, 4001 gateway live, 7497 TWS paper, "
           "7496 TWS live)")  # fmt: skip
    option("--client-id", int, defaults.client_id,
           "API client id: set TWS's Master API client ID to it")  # fmt: skip
    option("--service", str, defaults.service, "portfolio service address host:port")
    add_credential_options(option, "RELAY_TOKEN")
    option("--default-strategy", _strategy, defaults.default_strategy,
           "strategy of executions without an orderRef")  # fmt: skip
    option("--contract-map", str, defaults.contract_map,
           'JSON file {"conId": "instrument id"}; others are booked as the conId')  # fmt: skip
    option("--commission-wait", _positive, defaults.commission_wait,
           "seconds a fill waits for its commission report")  # fmt: skip
    option("--sweep-seconds", _positive, defaults.sweep_seconds,
           "seconds between sweeps of TWS's executions")  # fmt: skip
    option("--connect-timeout", _positive, defaults.connect_timeout,
           "seconds a TWS connect attempt may take")  # fmt: skip
    option("--log-level", str, defaults.log_level, "logging level")
    option("--dead-letters", str, defaults.dead_letters,
           "JSON-lines file of events the service refused (see --replay-dead-letters)")  # fmt: skip
    option("--health-port", int, defaults.health_port,
           "port of a grpc.health.v1 server on 127.0.0.1 (tws, visibility, dead_letters, "
           "authorization); 0: off")  # fmt: skip
    parser.add_argument(
        "--replay-dead-letters",
        action="store_true",
        help="resend the dead letters (after a fix) and exit; those refused again stay",
    )
    args = parser.parse_args(argv)
    credentials = credentials_from(args, parser, "RELAY_TOKEN")
    return RelayConfig(**vars(args), credentials=credentials)
