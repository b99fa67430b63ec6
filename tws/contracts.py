"""Which instrument id an IB contract is booked under.

The relay books fills under these ids and the broker adapter reports positions under them, so
reconciliation compares like with like only if both ask this one map. IB's conId identifies a
contract for its whole life (unlike symbols, which are reused and renamed), so it is the key:
an optional JSON file names instruments (`{"265598": "AAPL", "495512563": "ES-202612"}`), and
any other contract is booked as `str(conId)`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from ib_async import Contract

__all__ = ["ContractMap", "ContractMapError"]


class ContractMapError(ValueError):
    """The contract map file cannot be used; the message names the file and the entry."""


@dataclass(frozen=True, slots=True)
class ContractMap:
    """conId -> instrument id; contracts it does not name map to `str(conId)`."""

    ids: Mapping[int, str] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def load(cls, path: str | Path) -> ContractMap:
        """Reads a JSON object of `"conId": "instrument id"` entries; raises ContractMapError."""
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ContractMapError(f"contract map {path}: {error}") from error
        if not isinstance(document, dict):
            raise ContractMapError(f"contract map {path}: must be a JSON object of conId: id")
        return cls.from_entries(document, source=str(path))

    @classmethod
    def from_entries(cls, entries: Mapping[str, object], source: str = "") -> ContractMap:
        """Validates entries as read from JSON: positive integer keys, distinct non-empty ids."""
        where = f"contract map {source}" if source else "contract map"
        ids: dict[int, str] = {}
        owners: dict[str, int] = {}
        for key, value in entries.items():
            if not (key.isascii() and key.isdigit() and int(key) > 0):
                raise ContractMapError(f"{where}: entry {key!r}: conId must be a positive integer")
            if not isinstance(value, str) or not value or value != value.strip():
                raise ContractMapError(
                    f"{where}: entry {key!r}: instrument id must be a non-empty string "
                    f"without surrounding blanks, got {value!r}"
                )
            con_id = int(key)
            if value in owners:
                raise ContractMapError(
                    f"{where}: entry {key!r}: instrument id {value!r} is already conId "
                    f"{owners[value]}'s (two contracts cannot share one position)"
                )
            ids[con_id] = value
            owners[value] = con_id
        return cls(MappingProxyType(ids))

    def instrument_id(self, contract: Contract) -> str:
        """The id fills and positions of this contract are booked under."""
        con_id = contract.conId
        if con_id <= 0:
            raise ValueError(f"contract {contract.symbol!r} has no conId")
        return self.ids.get(con_id) or str(con_id)

    def __len__(self) -> int:
        return len(self.ids)
