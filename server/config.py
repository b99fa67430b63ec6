"""The service's settings: command-line flags, each defaulting to a PORTFOLIO_* variable."""

from __future__ import annotations

import argparse
import os
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from cli import env_options
from server.application.day_close import SessionCalendar, account_sessions
from server.config_file import ConfigFileError, effective_toml, read_config_file


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    # Where state lives: LMDB in a local folder by default; s3://..., mem:// (nothing kept).
    store: str = "lmdb://data"
    host: str = "127.0.0.1"
    port: int = 50051
    # Cost-basis shares and displayed average costs are rounded to this quantum.
    precision: Decimal = Decimal("1e-9")
    trace_ttl_seconds: float = 300.0
    replay_capacity: int = 100_000
    subscriber_queue: int = 10_000
    # Update writes per second to all subscribers together (0: no limit). A write costs the
    # event loop about 40-50 us on 2 cores whatever its size; 1,000 a second kept 100
    # subscribers within ~10% of ingest's latency in scripts/benchmark.py --only fanout.
    fanout_writes_per_second: float = 1000.0
    heartbeat_seconds: float = 5.0
    max_batch_events: int = 10_000
    max_message_bytes: int = 16 * 1024 * 1024
    grace_seconds: float = 5.0
    # Events between checkpoints of the whole book, counted from the stored one; also one every
    # checkpoint_seconds while events arrive, and one on a graceful stop. A restart replays at
    # most about 2 intervals after a crash, less than 1 after a graceful stop.
    checkpoint_every: int = 10_000
    checkpoint_seconds: float = 60.0
    log_level: str = "INFO"
    # "text" for people, "json" for log shippers (one object a line, with the trace id).
    log_format: str = "text"
    # A JSON file of instruments and accounts, journaled at start (unchanged ones are
    # duplicates); see docs/protocol.md, "Instruments". Empty: none.
    reference_file: str = ""
    # Refuse fills for instruments nobody defined (else: registered with defaults, flagged).
    strict_instruments: bool = False
    # The base currency of accounts nobody defined, of unknown instruments, and of totals
    # across accounts.
    base_currency: str = "USD"
    # Mark updates reach subscribers at most this often per instrument (the latest one).
    mark_publish_seconds: float = 0.1
    # FX rates of the mark stream are journaled (the rate in force when P&L was realized) at
    # most this often, the latest per pair; 0: every rate.
    fx_journal_seconds: float = 1.0
    # Changed position rows are appended to the `position_history` view at most this often
    # (seconds; 0: at every view write, about once a second).
    position_history_seconds: float = 60.0
    # On a local (LMDB) store the analysts' views are written by a process of their own
    # (server/storage/views_process.py), off the service's GIL; false: by a thread of the
    # service (as on mem:// and object stores, always).
    views_process: bool = True
    # The broker live accounts are reconciled against: "" (none), "ib" (TWS / IB Gateway), or
    # "paper" (the service's own account-level book: a setup with no broker, where every run
    # matches; for staging and drills).
    broker: str = ""
    ib_host: str = "127.0.0.1"
    ib_port: int = 4002  # IB Gateway paper; 4001 live, TWS 7497 paper / 7496 live
    ib_client_id: int = 90
    ib_connect_timeout: float = 10.0
    # JSON {conId: instrument_id}; conIds not in it map to str(conId). Share it with the relay.
    contract_map: str = ""
    # Seconds between reconciliation runs of every live account; 0: on demand only.
    reconcile_seconds: float = 60.0
    # Comma-separated accounts to reconcile; empty: every account the broker holds (not paper).
    reconcile_accounts: str = ""
    # A discrepancy turns health NOT_SERVING (and is logged as a warning) once this many runs
    # in a row show it for the same instrument.
    reconcile_confirm_runs: int = 2
    # Average costs match when the broker's is within this fraction of the service's cost
    # band (without to with the row's fees: IB's avgCost includes commissions)...
    cost_tolerance: Decimal = Decimal("0.005")
    # ... or within this much per unit of price, whichever is more (costs near zero).
    cost_tolerance_floor: Decimal = Decimal("0.0001")
    # A currency's cash matches the broker's when they differ by at most this much.
    cash_tolerance: Decimal = Decimal("0.01")
    # A broker correction may replace a fill up to this many days before the latest fill.
    # IB reports corrections the same day (reqExecutions lists the current day's executions).
    correction_window_days: float = 1.0
    # Rows keep the fills of this many days (by execution time, before the latest fill) to
    # book a late fill in its place; 0: the correction window. Never less than it (a
    # correction takes its fill's place). Memory grows with the fills inside it.
    restatement_window_days: float = 0.0
    # Ended orders (filled, cancelled, rejected) and spent reservations leave memory this many
    # days of event time after they ended (the store still answers GetOrder); 0: never.
    order_retention_days: float = 1.0
    # New fills, status changes, transfers, marks and FX rates stamped further ahead of the
    # service's clock than this are refused (clock skew allowed; year 3000 is a bug upstream).
    max_clock_ahead_seconds: float = 300.0
    # ...and those older than this many days; 0: any age (back-fills of old history).
    max_event_age_days: float = 0.0
    # Trading days close at this time of day in this IANA time zone, on these weekdays
    # ("mon-fri", "mon,wed,fri", "all"; "none": no closes, no P&L history): each close
    # records the day's P&L of every account.
    session_close: str = "17:00"
    session_timezone: str = "America/New_York"
    session_days: str = "mon-fri"
    # Accounts on another calendar: "ACCOUNT=HH:MM ZONE [DAYS]; ..." (e.g.
    # "U123=16:30 Europe/London mon-fri").
    account_sessions: str = ""
    # Prometheus scrapes metrics at http://metrics_host:metrics_port/metrics; 0: no metrics.
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    # Traces (server/tracing.py): "none" (nothing built), "otlp" (to otlp_endpoint) or
    # "console" (stdout). An OTLP collector (gRPC, e.g. http://127.0.0.1:4317) also gets the
    # metrics pushed when otlp_endpoint is set; "": no OTLP.
    trace_export: str = "none"
    otlp_endpoint: str = ""
    # Health thresholds (server/application/thresholds.py), each its own health name: fill ->
    # durable ack p99 and query p99 over the last latency_window_seconds (0: not watched),
    # position rows held (0: no limit).
    ack_p99_ms: float = 10.0
    query_p99_ms: float = 1.0
    latency_window_seconds: float = 60.0
    max_rows: int = 0
    # TLS: the server's certificate chain and key (PEM files); with a client CA, clients must
    # present a certificate it signed (mutual TLS). Plaintext on an address other than
    # loopback needs `insecure`. The auth file lists principals and roles (server.auth_config);
    # without one every caller may do everything, so the service then listens on loopback only.
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    insecure: bool = False
    auth_file: str = ""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def _precision(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not a decimal") from None
    if not value.is_finite() or value <= 0 or value != Decimal(1).scaleb(value.adjusted()):
        raise argparse.ArgumentTypeError(f"{text!r} must be a power of ten such as 1e-9")
    return value


def _fraction(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not a decimal") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a decimal >= 0 such as 0.005")
    return value


def _retention_days(text: str) -> float:
    """At least 0 and finite; at most 100 years (its nanoseconds must fit 64 bits)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days") from None
    if not 0 <= value <= 36_500:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 36500 days")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 86_400:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 86400 seconds")
    return value


def _log_format(text: str) -> str:
    if text not in ("text", "json"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a log format: use text or json")
    return text


def _trace_export(text: str) -> str:
    if text not in ("none", "otlp", "console"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a trace export: use none, otlp, console")
    return text


def _otlp_endpoint(text: str) -> str:
    """An OTLP/gRPC collector's URL: http:// (plaintext) or https://, a host and a port."""
    if not text:
        return text
    parsed = urllib.parse.urlsplit(text)
    try:
        port = parsed.port
    except ValueError:
        port = None
    if parsed.scheme not in ("http", "https") or not parsed.hostname or port is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an OTLP endpoint: give http://HOST:PORT (or https://), such as "
            "http://127.0.0.1:4317"
        )
    return text


def _broker(text: str) -> str:
    if text not in ("", "ib", "paper"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a broker: use ib, paper or ''")
    return text


def _flag(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def _session(part: str) -> Callable[[str], str]:
    """A parser of one part of the session calendar's settings (the text, checked)."""

    def parse(text: str) -> str:
        try:
            if part == "accounts":
                account_sessions(text)
            else:
                given = {"close": "17:00", "zone": "UTC", "days": "all", part: text}
                SessionCalendar.parse(given["close"], given["zone"], given["days"])
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return text

    return parse


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number >= 0")
    return value


def _positive(text: str) -> float:
    value = _non_negative(text)
    if not value:
        raise argparse.ArgumentTypeError(f"{text!r} is not > 0")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not >= 0")
    return value


def _env_name(key: str) -> str:
    return "PORTFOLIO_" + key.upper()


def parse_args(argv: list[str] | None = None) -> ServiceConfig:
    defaults = ServiceConfig()
    parser = argparse.ArgumentParser(prog="python -m server", description="The portfolio manager.")
    parser.add_argument(
        "--config", default=os.environ.get("PORTFOLIO_CONFIG", ""),
        help="TOML file of settings (below it: PORTFOLIO_* variables, then flags; env "
        "PORTFOLIO_CONFIG)",
    )  # fmt: skip
    parser.add_argument(
        "--print-config", action="store_true",
        help="print the effective configuration (secrets masked) as TOML, and exit",
    )  # fmt: skip
    parsers: dict[str, Callable[[str], object]] = {}  # setting -> its flag's parser
    env_option = env_options(parser, "PORTFOLIO_")

    def option(flag: str, kind: type | object, default: object, help_: str) -> None:
        parsers[flag.removeprefix("--").replace("-", "_")] = kind  # type: ignore[assignment]
        env_option(flag, kind, default, help_)

    option("--store", str, defaults.store, "ArcticDB URI of the store")
    option("--host", str, defaults.host, "interface to listen on")
    option("--port", int, defaults.port, "port to listen on; 0 picks a free one")
    option("--precision", _precision, defaults.precision, "rounding quantum of cost shares")
    option("--trace-ttl-seconds", float, defaults.trace_ttl_seconds, "life of a trace")
    option("--replay-capacity", int, defaults.replay_capacity, "updates kept for resuming")
    option("--subscriber-queue", int, defaults.subscriber_queue, "updates a subscriber may lag")
    option("--fanout-writes-per-second", float, defaults.fanout_writes_per_second,
           "update writes per second to all subscribers together; 0: no limit")  # fmt: skip
    option("--heartbeat-seconds", float, defaults.heartbeat_seconds, "idle heartbeat period")
    option("--max-batch-events", int, defaults.max_batch_events, "events per ingest batch")
    option("--max-message-bytes", int, defaults.max_message_bytes, "largest request accepted")
    option("--grace-seconds", float, defaults.grace_seconds, "time to finish calls on stop")
    option("--checkpoint-every", int, defaults.checkpoint_every, "events between checkpoints")
    option("--checkpoint-seconds", float, defaults.checkpoint_seconds,
           "seconds between checkpoints while events arrive; 0: by count only")  # fmt: skip
    option("--log-level", str, defaults.log_level, "logging level")
    option("--log-format", _log_format, defaults.log_format,
           "text, or json (one object a line, for log shippers)")  # fmt: skip
    option("--reference-file", str, defaults.reference_file, "instruments and accounts (JSON)")
    option("--strict-instruments", _flag, defaults.strict_instruments,
           "refuse fills of undefined instruments")  # fmt: skip
    option("--base-currency", str, defaults.base_currency, "default base currency")
    option("--mark-publish-seconds", float, defaults.mark_publish_seconds,
           "mark updates' coalescing interval")  # fmt: skip
    option("--fx-journal-seconds", _seconds, defaults.fx_journal_seconds,
           "seconds between journal writes of FX rates (the latest per pair); 0: every "
           "rate")  # fmt: skip
    option("--position-history-seconds", _seconds, defaults.position_history_seconds,
           "seconds between snapshots of changed position rows in the position_history "
           "view; 0: every view write")  # fmt: skip
    option("--views-process", _flag, defaults.views_process,
           "write the analysts' views in a process of their own (LMDB stores)")  # fmt: skip
    option(
        "--broker", _broker, defaults.broker, "broker to reconcile live accounts with: ib, paper"
    )
    option("--ib-host", str, defaults.ib_host, "TWS / IB Gateway host")
    option("--ib-port", int, defaults.ib_port, "TWS / IB Gateway API port")
    option("--ib-client-id", int, defaults.ib_client_id, "API client id of the reconciler")
    option("--ib-connect-timeout", float, defaults.ib_connect_timeout, "connect time-out")
    option("--contract-map", str, defaults.contract_map, "conId -> instrument_id (JSON)")
    option("--reconcile-seconds", float, defaults.reconcile_seconds,
           "seconds between reconciliations; 0: on demand only")  # fmt: skip
    option("--reconcile-accounts", str, defaults.reconcile_accounts,
           "accounts to reconcile (comma-separated); empty: the broker's")  # fmt: skip
    option("--reconcile-confirm-runs", int, defaults.reconcile_confirm_runs,
           "runs in a row a discrepancy must show before it counts")  # fmt: skip
    option("--metrics-port", int, defaults.metrics_port,
           "port of the Prometheus /metrics endpoint; 0: no metrics")  # fmt: skip
    option("--metrics-host", str, defaults.metrics_host, "interface of the metrics endpoint")
    option("--trace-export", _trace_export, defaults.trace_export,
           "traces: none, otlp (to --otlp-endpoint) or console")  # fmt: skip
    option("--otlp-endpoint", _otlp_endpoint, defaults.otlp_endpoint,
           "OTLP/gRPC collector (http://HOST:PORT) for traces and pushed metrics; "
           "empty: none")  # fmt: skip
    option("--ack-p99-ms", _non_negative, defaults.ack_p99_ms,
           "health ack_latency NOT_SERVING above this fill -> durable ack p99; 0: off")  # fmt: skip
    option("--query-p99-ms", _non_negative, defaults.query_p99_ms,
           "health query_latency NOT_SERVING above this query p99; 0: off")  # fmt: skip
    option("--latency-window-seconds", _positive, defaults.latency_window_seconds,
           "sliding window of the latency thresholds")  # fmt: skip
    option("--max-rows", _non_negative_int, defaults.max_rows,
           "health capacity NOT_SERVING above this many position rows; 0: no limit")  # fmt: skip
    option("--cost-tolerance", _fraction, defaults.cost_tolerance,
           "relative tolerance of average costs (the service's with its fees)")  # fmt: skip
    option("--cost-tolerance-floor", _fraction, defaults.cost_tolerance_floor,
           "absolute tolerance of average costs per unit of price, if more")  # fmt: skip
    option("--cash-tolerance", _fraction, defaults.cash_tolerance,
           "absolute tolerance of cash per currency against the broker's")  # fmt: skip
    option("--correction-window-days", float, defaults.correction_window_days,
           "how far back a broker correction may reach")  # fmt: skip
    option("--restatement-window-days", float, defaults.restatement_window_days,
           "days of fills rows keep to book a late fill in its place; 0: the correction "
           "window")  # fmt: skip
    option("--order-retention-days", _retention_days, defaults.order_retention_days,
           "days of event time ended orders/reservations stay in memory; 0: forever")  # fmt: skip
    option("--max-clock-ahead-seconds", float, defaults.max_clock_ahead_seconds,
           "how far ahead of the clock a new event or mark may be stamped")  # fmt: skip
    option("--max-event-age-days", float, defaults.max_event_age_days,
           "how old a new event may be; 0: any age")  # fmt: skip
    option("--session-close", _session("close"), defaults.session_close,
           "time of day trading days close, HH:MM (in --session-timezone)")  # fmt: skip
    option("--session-timezone", _session("zone"), defaults.session_timezone,
           "IANA zone of the close")  # fmt: skip
    option("--session-days", _session("days"), defaults.session_days,
           "weekdays with a close: mon-fri, mon,wed,fri, all or none")  # fmt: skip
    option("--account-sessions", _session("accounts"), defaults.account_sessions,
           "accounts on another calendar: 'ACCOUNT=HH:MM ZONE [DAYS]; ...'")  # fmt: skip
    option("--tls-cert", str, defaults.tls_cert, "server certificate chain (PEM): serve TLS")
    option("--tls-key", str, defaults.tls_key, "server private key (PEM)")
    option("--tls-client-ca", str, defaults.tls_client_ca,
           "CA (PEM) client certificates must be signed by: mutual TLS")  # fmt: skip
    parsers["insecure"] = _flag  # a bare flag: `--insecure` alone means true
    parser.add_argument(
        "--insecure", nargs="?", const=True, type=_flag,
        default=os.environ.get("PORTFOLIO_INSECURE", defaults.insecure),
        help="allow plaintext on an address other than loopback (logs a warning) (env "
        "PORTFOLIO_INSECURE, default %(default)s)",
    )  # fmt: skip
    option("--auth-file", str, defaults.auth_file,
           "principals and roles (JSON or TOML); none: loopback only, no checks")  # fmt: skip
    chosen, _ = parser.parse_known_args(argv)
    if chosen.config:  # the file's settings, below PORTFOLIO_* variables and flags
        try:
            from_file = read_config_file(chosen.config, parsers)
        except ConfigFileError as error:
            parser.error(str(error))
        parser.set_defaults(
            **{key: text for key, text in from_file.items() if _env_name(key) not in os.environ}
        )
    args = parser.parse_args(argv)
    del args.config
    if args.__dict__.pop("print_config"):
        print(effective_toml(ServiceConfig(**vars(args))), end="")
        parser.exit(0)
    try:
        SessionCalendar.parse(args.session_close, args.session_timezone, args.session_days)
        account_sessions(args.account_sessions)
    except ValueError as error:
        parser.error(str(error))
    if args.trace_export == "otlp" and not args.otlp_endpoint:
        parser.error("--trace-export otlp: needs --otlp-endpoint (e.g. http://127.0.0.1:4317)")
    if 0 < args.restatement_window_days < args.correction_window_days or (
        args.restatement_window_days < 0
    ):
        parser.error(
            "--restatement-window-days: must be 0 (the correction window) or at least "
            f"--correction-window-days ({args.correction_window_days:g})"
        )
    return ServiceConfig(**vars(args))
