"""Protobuf's wire framing, for answers and updates joined from parts already encoded: a part
is written once and handed on as bytes, never parsed and encoded again."""

from __future__ import annotations


def varint(value: int) -> bytes:
    """`value` (>= 0) as a protobuf varint: 7 bits a byte, lowest first, high bit on but last."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_LENGTHS = [varint(n) for n in range(2048)]


def length(value: int) -> bytes:
    """A length's varint: most messages are shorter than the table (no loop in Python)."""
    return _LENGTHS[value] if value < len(_LENGTHS) else varint(value)


def length_delimited(number: int, payload: bytes) -> bytes:
    """Field `number` holding `payload` (a message, bytes or a string): tag, length, payload."""
    return varint(number << 3 | 2) + length(len(payload)) + payload
