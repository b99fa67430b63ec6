"""The service's TOML configuration file (`--config`): every setting a flag holds, grouped as
the service specification groups them. A setting comes from, lowest first: its default, the
file, its `PORTFOLIO_*` environment variable, its flag.

Keys are the flags' names with underscores (`--checkpoint-every` is `checkpoint_every`), each
in its group's table. An unknown table or key, a key in another group's table, or a value its
flag would refuse stops the start, naming the file, the key and why.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

GROUPS: dict[str, tuple[str, ...]] = {
    "service": (
        "host", "port", "grace_seconds", "max_batch_events", "max_message_bytes", "log_level",
        "log_format",
        "precision", "base_currency", "strict_instruments", "reference_file",
        "max_clock_ahead_seconds", "max_event_age_days", "order_retention_days",
        "correction_window_days", "restatement_window_days", "tls_cert", "tls_key",
        "tls_client_ca", "insecure", "auth_file",
    ),
    "storage": ("store", "checkpoint_every", "checkpoint_seconds", "position_history_seconds",
                "views_process"),
    "reconciliation": (
        "broker", "ib_host", "ib_port", "ib_client_id", "ib_connect_timeout", "contract_map",
        "reconcile_seconds", "reconcile_accounts", "reconcile_confirm_runs", "cost_tolerance",
        "cost_tolerance_floor", "cash_tolerance",
    ),
    "traces": ("trace_ttl_seconds",),
    "risk": ("session_close", "session_timezone", "session_days", "account_sessions"),
    "monitoring": (
        "replay_capacity", "subscriber_queue", "fanout_writes_per_second", "heartbeat_seconds",
        "mark_publish_seconds", "fx_journal_seconds", "metrics_port", "metrics_host",
        "ack_p99_ms", "query_p99_ms", "latency_window_seconds", "max_rows", "trace_export",
        "otlp_endpoint",
    ),
}  # fmt: skip
"""Each setting's table. A setting added to ServiceConfig goes in one (tests check it)."""

GROUP_OF = {key: group for group, keys in GROUPS.items() for key in keys}

_SECRET = re.compile(r"(?i)((?:secret|access|password|passwd|token|aws_[a-z_]*)=)([^&;\s]+)")


def mask_secrets(text: str) -> str:
    """Credentials in a URI or a command line (`secret=...`, `access=...`, `aws_*=...`,
    `password=...`, `token=...`) as `***`: for logs, errors and --print-config."""
    return _SECRET.sub(r"\1***", text)


class ConfigFileError(ValueError):
    """The file cannot be used: its message names the file, the key and why."""


def read_config_file(path: str, check: Mapping[str, Callable[[str], Any]]) -> dict[str, str]:
    """The settings the file holds, as their flags' texts (so that each is parsed as its flag
    would be); `check` maps a setting to its flag's parser, which must accept the value."""
    try:
        with Path(path).open("rb") as file:
            tables = tomllib.load(file)
    except OSError as error:
        raise ConfigFileError(f"{path}: cannot be read: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigFileError(f"{path}: not TOML: {error}") from None
    values: dict[str, str] = {}
    for group, table in tables.items():
        if group not in GROUPS:
            raise ConfigFileError(
                f"{path}: [{group}] is not a group of settings (use {', '.join(GROUPS)})"
            )
        if not isinstance(table, dict):
            raise ConfigFileError(f"{path}: {group} must be a table ([{group}])")
        for key, value in table.items():
            where = f"{path}: [{group}] {key}"
            if key not in GROUP_OF:
                raise ConfigFileError(f"{where}: not a setting")
            if GROUP_OF[key] != group:
                raise ConfigFileError(f"{where}: belongs in [{GROUP_OF[key]}]")
            if isinstance(value, dict | list):
                raise ConfigFileError(f"{where}: must be a string, a number or a boolean")
            text = str(value).lower() if isinstance(value, bool) else str(value)
            try:
                check[key](text)
            except Exception as error:  # the flag's own parser says why
                raise ConfigFileError(f"{where}: {error or type(error).__name__}") from None
            values[key] = text
    return values


def effective_toml(config: object) -> str:
    """A configuration as a TOML file of every setting, secrets masked (--print-config)."""
    current = {field.name: getattr(config, field.name) for field in fields(config)}  # type: ignore[arg-type]
    lines: list[str] = []
    for group, keys in GROUPS.items():
        lines.append(f"[{group}]")
        for key in keys:
            if key in current:
                lines.append(f"{key} = {_toml_value(current[key])}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = mask_secrets(str(value)).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
