"""The marks feed's settings: command-line flags, each defaulting to a MARKS_* variable."""

from __future__ import annotations

import argparse
import enum
from dataclasses import dataclass, field

from cli import env_options
from relay.credentials import ServiceCredentials, add_credential_options, credentials_from

__all__ = ["MarketDataType", "MarksConfig", "PriceChoice", "parse_args", "parse_fx_pair"]


class MarketDataType(enum.IntEnum):
    """IB's reqMarketDataType: what TWS serves when the account lacks live permissions or the
    market is closed (frozen: the last price at the close; delayed: 15-20 minutes late)."""

    LIVE = 1
    FROZEN = 2
    DELAYED = 3
    DELAYED_FROZEN = 4


class PriceChoice(enum.Enum):
    """Which price a mark is: the bid/ask midpoint, or the last trade. Either falls back to
    the other, then to the previous close, when TWS has not sent it."""

    MIDPOINT = "midpoint"
    LAST = "last"


@dataclass(frozen=True, slots=True)
class MarksConfig:
    tws_host: str = "127.0.0.1"
    # 4002: IB Gateway paper; 4001 IB Gateway live; 7497 TWS paper; 7496 TWS live.
    tws_port: int = 4002
    # Its own API client id: not the relay's (900), not a strategy's.
    client_id: int = 901
    service: str = "127.0.0.1:50051"
    # The relay's JSON file {"conId": "instrument id"}; empty: instrument ids are conIds.
    contract_map: str = ""
    market_data_type: MarketDataType = MarketDataType.LIVE
    price: PriceChoice = PriceChoice.MIDPOINT
    # At most one mark per instrument (and rate per pair) every this many seconds.
    interval: float = 1.0
    # Seconds between reads of the service's book (which instruments are held).
    refresh_seconds: float = 5.0
    # Pairs always streamed ("EUR.USD"), beside those the book's currencies need.
    fx_pairs: tuple[tuple[str, str], ...] = ()
    connect_timeout: float = 10.0
    log_level: str = "INFO"
    # TLS, mutual TLS and the bearer token shown to the service (the token: MARKS_TOKEN or
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


def _market_data_type(text: str) -> MarketDataType:
    name = text.strip().upper().replace("-", "_")
    if name.isdigit() and int(name) in tuple(MarketDataType):
        return MarketDataType(int(name))
    try:
        return MarketDataType[name]
    except KeyError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: one of live, frozen, delayed, delayed-frozen (or 1-4)"
        ) from None


def _price(text: str) -> PriceChoice:
    try:
        return PriceChoice(text.strip().lower())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: midpoint or last") from None


def parse_fx_pair(text: str) -> tuple[str, str]:
    """ "EUR.USD" (IB's CASH local symbol) or "EUR/USD" -> ("EUR", "USD")."""
    parts = text.strip().upper().replace("/", ".").split(".")
    if len(parts) != 2 or not all(len(p) == 3 and p.isalpha() for p in parts):
        raise ValueError(f"{text!r}: an FX pair is written BASE.QUOTE, like EUR.USD")
    if parts[0] == parts[1]:
        raise ValueError(f"{text!r}: base and quote are the same currency")
    return parts[0], parts[1]


def _fx_pairs(text: str) -> tuple[tuple[str, str], ...]:
    try:
        return tuple(parse_fx_pair(p) for p in text.split(",") if p.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_args(argv: list[str] | None = None) -> MarksConfig:
    defaults = MarksConfig()
    parser = argparse.ArgumentParser(
        prog="python -m relay.marks_feed",
        description="Streams IB market prices of every held instrument, and the FX rates the "
        "book needs, into the portfolio manager.",
    )
    option = env_options(parser, "MARKS_")
    option("--tws-host", str, defaults.tws_host, "TWS / IB Gateway host")
    option("--tws-port", int, defaults.tws_port,
           "TWS / IB Gateway API port (4002 gateway paper, 4001 gateway live, 7497 TWS paper, "
           "7496 TWS live)")  # fmt: skip
    option("--client-id", int, defaults.client_id, "API client id (not the relay's)")
    option("--service", str, defaults.service, "portfolio service address host:port")
    add_credential_options(option, "MARKS_TOKEN")
    option("--contract-map", str, defaults.contract_map,
           'the relay\'s JSON file {"conId": "instrument id"}')  # fmt: skip
    option("--market-data-type", _market_data_type, "live",
           "live, frozen, delayed or delayed-frozen (IB reqMarketDataType 1-4)")  # fmt: skip
    option("--price", _price, "midpoint", "mark at the bid/ask midpoint or the last trade")
    option("--interval", _positive, defaults.interval,
           "seconds: at most one mark per instrument this often")  # fmt: skip
    option("--refresh-seconds", _positive, defaults.refresh_seconds,
           "seconds between reads of which instruments the book holds")  # fmt: skip
    option("--fx-pairs", _fx_pairs, "",
           "comma-separated pairs always streamed (EUR.USD,USD.JPY), beside those the book "
           "needs")  # fmt: skip
    option("--connect-timeout", _positive, defaults.connect_timeout,
           "seconds a TWS connect attempt may take")  # fmt: skip
    option("--log-level", str, defaults.log_level, "logging level")
    args = parser.parse_args(argv)
    credentials = credentials_from(args, parser, "MARKS_TOKEN")
    return MarksConfig(**vars(args), credentials=credentials)
