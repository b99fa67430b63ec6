"""The one conversion of `ib_async`'s floats to `Decimal`.

`ib_async` parses every number TWS sends as text into a float. `repr` of a float is the shortest
text that reads back as the same float, so for any value of at most 15 significant digits it is
exactly the decimal text TWS sent: `Decimal(repr(x))` recovers the broker's figure, where
`Decimal(x)` would expose the binary approximation (100.1 -> 100.0999999999999943...).
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation

from ib_async.util import UNSET_DOUBLE, UNSET_INTEGER

__all__ = ["MissingAmount", "amount", "amount_from_text", "optional_amount"]

# UNSET_DOUBLE as TWS writes it in text fields ("1.7976931348623157E308").
_UNSET_DOUBLE_TEXT = Decimal(repr(UNSET_DOUBLE))
# Below this every integer is a float exactly.
_EXACT_INTEGERS = 2.0**53


class MissingAmount(ValueError):
    """IB sent no usable figure (a sentinel, NaN or infinity) where one is needed."""


def optional_amount(value: float | int) -> Decimal | None:
    """The exact decimal of an `ib_async` number; None for "not set" (ib_async's UNSET_DOUBLE
    and UNSET_INTEGER sentinels, NaN, infinities)."""
    if isinstance(value, bool):
        raise TypeError(f"expected a number, got a bool: {value!r}")
    if isinstance(value, int):
        return None if value == UNSET_INTEGER else Decimal(value)
    if not math.isfinite(value) or value == UNSET_DOUBLE:
        return None
    if value.is_integer() and abs(value) < _EXACT_INTEGERS:
        return Decimal(int(value))  # 100, not 100.0; and -0.0 is plain 0
    return Decimal(repr(value))


def amount(value: float | int, what: str) -> Decimal:
    """Like `optional_amount`, for a figure that must be there; `what` names it in the error."""
    converted = optional_amount(value)
    if converted is None:
        raise MissingAmount(f"{what}: not set ({value!r})")
    return converted


def amount_from_text(text: str) -> Decimal | None:
    """A figure IB sends as text (account values): None when it is not a finite number."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None
    if not value.is_finite() or value.copy_abs() >= _UNSET_DOUBLE_TEXT:
        return None
    return value
