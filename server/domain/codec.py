"""The canonical text of an event: every field, in declaration order, one text form each.

The journal stores this text, and its digest tells a replayed event from an id reused for a
different one, so it must be the same in every process: amounts in canonical form ("10" and
"10.0" alike), enums by name, absent optionals as "".
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import types
import typing
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

from server.domain.decimals import canonical

FIELD_SEPARATOR = "\x1f"  # never in a field: ids are printable, amounts canonical

T = TypeVar("T")
_Encoder = Callable[[Any], str]
_Decoder = Callable[[str], Any]


def fingerprint_of(text: str) -> int:
    """A stable 64-bit digest of an event's text, as a signed integer."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _codec_for(hint: Any) -> tuple[_Encoder, _Decoder]:
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) and type(None) in args:
        (inner,) = (arg for arg in args if arg is not type(None))
        encode, decode = _codec_for(inner)
        return (
            lambda value: "" if value is None else encode(value),
            lambda text: None if text == "" else decode(text),
        )
    if hint is str:
        return (lambda value: value), (lambda text: text)
    if hint is bool:
        return (lambda value: "1" if value else "0"), (lambda text: text == "1")
    if hint is int:
        return str, int
    if hint is Decimal:
        return canonical, Decimal
    if typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis:
        # A tuple of records: JSON of each record's field texts (JSON escapes the separator).
        item = TextCodec(args[0])
        return (
            lambda value: json.dumps([item.fields(v) for v in value], separators=(",", ":")),
            lambda text: tuple(item.from_fields(parts) for parts in json.loads(text)),
        )
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        enum_type = hint
        return (lambda value: value.name), (lambda text: enum_type[text])
    raise TypeError(f"no text form for {hint!r}")


class TextCodec:
    """Encodes and decodes one dataclass type; built once per type."""

    def __init__(self, cls: type) -> None:
        hints = typing.get_type_hints(cls)
        self.names = [field.name for field in dataclasses.fields(cls) if field.init]
        codecs = [_codec_for(hints[name]) for name in self.names]
        self._encoders = [encode for encode, _ in codecs]
        self._decoders = [decode for _, decode in codecs]
        self._cls = cls

    def fields(self, value: object) -> list[str]:
        return [
            encode(getattr(value, name))
            for name, encode in zip(self.names, self._encoders, strict=True)
        ]

    def encode(self, value: object) -> str:
        return FIELD_SEPARATOR.join(self.fields(value))

    def decode(self, text: str) -> Any:
        return self.from_fields(text.split(FIELD_SEPARATOR))

    def from_fields(self, parts: list[str]) -> Any:
        if len(parts) != len(self.names):
            raise ValueError(
                f"{self._cls.__name__}: {len(parts)} fields, expected {len(self.names)}"
            )
        return self._cls(
            **{
                name: decode(part)
                for name, decode, part in zip(self.names, self._decoders, parts, strict=True)
            }
        )
