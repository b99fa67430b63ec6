"""Output: a fixed-width table for people, JSON for scripts.

JSON keeps amounts exact: a `Decimal` becomes its string, never a float; times are ISO 8601 and
enums their names, so a script can compare what it reads with what the service holds.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp


def plain(value: Any) -> Any:
    """A JSON-ready copy of an SDK model, a proto message or anything built of them."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, Message):
        return _message(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _message(message: Message) -> Any:
    """A proto message as the SDK's models read: every field present (empty ones too), 64-bit
    integers as numbers, enums by their short names (BUY, not SIDE_BUY), times in ISO 8601,
    and amounts, which the protocol already carries as decimal text, untouched."""
    if isinstance(message, Timestamp):
        if not (message.seconds or message.nanos):
            return None
        return message.ToDatetime(tzinfo=UTC).isoformat()
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.is_repeated:
            out[field.name] = [_field(field, item) for item in value]
        elif field.message_type is not None and not message.HasField(field.name):
            out[field.name] = None
        else:
            out[field.name] = _field(field, value)
    return out


def _field(field: FieldDescriptor, value: Any) -> Any:
    if field.message_type is not None:
        return _message(value)
    if field.enum_type is not None:
        return enum_name(field.enum_type, value)
    return value


def enum_name(enum_type: EnumDescriptor, number: int) -> str | int:
    """ORDER_STATUS_FILLED -> FILLED, as the SDK's enums name it; an unknown number as is."""
    found = enum_type.values_by_number.get(number)
    if found is None:
        return number
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum_type.name).upper() + "_"
    name: str = found.name
    return name.removeprefix(prefix)


def to_json(value: Any) -> str:
    return json.dumps(plain(value), indent=2, sort_keys=False)


def to_json_line(value: Any) -> str:
    return json.dumps(plain(value), separators=(",", ":"))


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned, text left."""
    texts = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in texts)]) for i, h in enumerate(headers)]
    numeric = [
        bool(texts) and all(_is_number(r[i]) for r in texts if r[i]) for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out = [line(headers), line(["-" * w for w in widths]), *(line(r) for r in texts)]
    return "\n".join(out)


def _is_number(text: str) -> bool:
    try:
        Decimal(text)
    except ArithmeticError:
        return False
    return True
