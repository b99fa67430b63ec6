"""Reference data from a file: the instruments and accounts to define at start.

    {"instruments": [{"instrument_id": "ES-202612", "currency": "USD", "asset_class": "FUTURE",
                      "multiplier": "50", "expiry": "2026-12", "tick_size": "0.25"}],
     "accounts": [{"account_id": "PAPER-1", "kind": "PAPER", "base_currency": "USD",
                   "initial_cash": "1000000"}]}

Amounts are decimal strings; enums by name. Each entry becomes a journaled definition, so a
file read again at the next start adds nothing, and a changed entry redefines.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from server.domain.events import (
    AccountDefinition,
    AccountKind,
    AssetClass,
    InstrumentDefinition,
    InvalidEvent,
    OptionRight,
)

_DECIMALS = ("multiplier", "tick_size", "strike")


class ReferenceFileError(RuntimeError):
    """The file cannot be used; the message names the entry and field."""


def _instrument(entry: dict[str, Any]) -> InstrumentDefinition:
    fields = dict(entry)
    for name in _DECIMALS:
        if name in fields and fields[name] is not None:
            fields[name] = Decimal(str(fields[name]))
    if "asset_class" in fields:
        fields["asset_class"] = AssetClass[fields["asset_class"]]
    if fields.get("right"):
        fields["right"] = OptionRight[fields["right"]]
    return InstrumentDefinition(**fields)


def _account(entry: dict[str, Any], base_currency: str) -> AccountDefinition:
    return AccountDefinition(
        account_id=entry["account_id"],
        account_kind=AccountKind[entry.get("kind", "LIVE")],
        base_currency=entry.get("base_currency", base_currency),
        initial_cash=Decimal(str(entry.get("initial_cash", "0"))),
    )


def load_reference(
    path: str, base_currency: str = "USD"
) -> list[InstrumentDefinition | AccountDefinition]:
    """The file's definitions; accounts without a base currency get `base_currency`."""
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ReferenceFileError(f"reference file {path}: {error}") from error
    definitions: list[InstrumentDefinition | AccountDefinition] = []
    builders: tuple[tuple[str, Callable[[dict[str, Any]], Any]], ...] = (
        ("instruments", _instrument),
        ("accounts", lambda entry: _account(entry, base_currency)),
    )
    for section, build in builders:
        for index, entry in enumerate(document.get(section, [])):
            try:
                definitions.append(build(entry))
            except InvalidEvent as invalid:
                raise ReferenceFileError(
                    f"reference file {path}: {section}[{index}].{invalid.field}: {invalid.reason}"
                ) from None
            except (KeyError, TypeError, ValueError, InvalidOperation) as error:
                raise ReferenceFileError(
                    f"reference file {path}: {section}[{index}]: {error!r}"
                ) from None
    return definitions
