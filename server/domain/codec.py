"""The canonical text of an event: every field, in declaration order, one text form each.

The journal stores this text, and its digest tells a replayed event from an id reused for a
different one, so it must be the same in every process: amounts in canonical form ("10" and
"10.0" alike), enums by name, absent optionals as "".

Versions: each record type's text has a version. Version 1 carries no mark (every text written
before versions existed is one, so their texts, digests and definition ids stay as they were);
a later version starts with a mark field, VERSION_MARK and the number (no text of version 1
can start so: its first field is an id or a currency code, printable). A text of an older
version is raised to the current one on decode, one step at a time, by TEXT_UPCASTERS; one of
a newer version than this release knows is refused (NewerTextVersion), never misread. A
layout that changed before versions existed is version 0, told by its number of fields
(UNMARKED_LAYOUTS). Encoding costs nothing more at version 1 and one constant field after.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import operator
import types
import typing
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

from server.domain.decimals import canonical

FIELD_SEPARATOR = "\x1f"  # never in a field: ids are printable, amounts canonical
VERSION_MARK = "\x1e"  # starts the first field of a text of version 2 or later

T = TypeVar("T")
_Encoder = Callable[[Any], str]
_Decoder = Callable[[str], Any]
Upcaster = Callable[[list[str]], list[str]]
"""The fields of one version of a record's text -> the fields of the next version."""

# -- the registry: a record type's current text version, and how each older one becomes the
# next. Keyed by the record's class name (an event kind's class, or a record inside one).
# Bumping a version: add the upcaster from the old version here and a test that decodes a
# text of the old version (tests/storage/test_upgrade.py). A bump changes the text, so the
# digest, of an event resent after it: the exactly-once check compares digests, so the first
# bump of a journaled kind must also give the journal's older rows of that kind the digest of
# their upcast text (seen_events), or a resend of one is refused as a different event.

TEXT_VERSIONS: dict[str, int] = {
    # 2: the broker's cash per currency. Snapshots are the service's own (ids with their time),
    # never resent by a client, so older rows' digests need no upcast text.
    "BrokerPositions": 2,
}
"""Current version per record type; a type not listed is at version 1."""

TEXT_UPCASTERS: dict[tuple[str, int], Upcaster] = {
    # A broker position of the reconciliation release, before the contract's currency
    # (its texts have 5 fields): the currency was not known, "" as an unknown one is.
    ("BrokerPosition", 0): lambda fields: [*fields, ""],
    # A snapshot before the broker's cash was journaled: none reported.
    ("BrokerPositions", 1): lambda fields: [*fields, "[]"],
}

UNMARKED_LAYOUTS: dict[tuple[str, int], int] = {
    ("BrokerPosition", 5): 0,
}
"""Texts written before versions existed carry no mark; where a type's layout changed before
then, the number of fields tells the older layout: (type, fields) -> version."""


class NewerTextVersion(ValueError):
    """A text written by a later release than this one: refused, never misread."""

    def __init__(self, type_name: str, version: int, known: int) -> None:
        super().__init__(
            f"{type_name} text of version {version}: this release reads versions up to {known}"
            " (written by a later release; run that release or a later one)"
        )
        self.type_name = type_name
        self.version = version
        self.known = known


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
        # Every field's value in one C call (about half the time of a getattr per field, on
        # the write path once per event); one field or none gives no tuple by itself.
        self._values: Callable[[object], tuple[Any, ...]] = (
            operator.attrgetter(*self.names)
            if len(self.names) > 1
            else (lambda value: tuple(getattr(value, name) for name in self.names))
        )
        self._cls = cls
        self.version = TEXT_VERSIONS.get(cls.__name__, 1)
        self._mark = f"{VERSION_MARK}{self.version}" if self.version > 1 else None

    def fields(self, value: object) -> list[str]:
        parts = [
            encode(field) for encode, field in zip(self._encoders, self._values(value), strict=True)
        ]
        if self._mark is not None:
            parts.insert(0, self._mark)
        return parts

    def encode(self, value: object) -> str:
        return FIELD_SEPARATOR.join(self.fields(value))

    def decode(self, text: str) -> Any:
        return self.from_fields(text.split(FIELD_SEPARATOR))

    def from_fields(self, parts: list[str]) -> Any:
        if parts and parts[0][:1] == VERSION_MARK:
            parts = self._upcast(int(parts[0][1:]), parts[1:])
        elif self.version > 1 or len(parts) != len(self.names):
            name = self._cls.__name__
            parts = self._upcast(UNMARKED_LAYOUTS.get((name, len(parts)), 1), parts)
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

    def _upcast(self, version: int, parts: list[str]) -> list[str]:
        """The fields of a text of `version` as the current version has them."""
        name = self._cls.__name__
        if version > self.version:
            raise NewerTextVersion(name, version, self.version)
        while version < self.version:
            upcaster = TEXT_UPCASTERS.get((name, version))
            if upcaster is None:
                raise ValueError(f"{name}: no upcaster from text version {version}")
            parts = upcaster(parts)
            version += 1
        return parts
