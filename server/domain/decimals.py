"""Exact decimal arithmetic for money and quantities.

The engine never rounds silently: `EXACT` traps any rounded or inexact result, so a sum or a
product either is exact or fails loudly. The one place that must round, taking a share of a
cost basis, goes through `divide_half_even` at an explicit quantum.
"""

from __future__ import annotations

from decimal import (
    ROUND_05UP,
    ROUND_HALF_EVEN,
    Clamped,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
    Underflow,
)

# Inputs are bounded (see MAX_INTEGER_DIGITS), so products of three inputs and long sums stay
# far below this precision: reaching it means a bug, and the traps turn that into an error.
EXACT = Context(
    prec=200,
    Emax=10_000,
    Emin=-10_000,
    traps=[InvalidOperation, DivisionByZero, Overflow, Underflow, Inexact, Rounded, Clamped],
)

# Input amounts are below 10**MAX_INTEGER_DIGITS with at most MAX_FRACTION_DIGITS decimals.
MAX_INTEGER_DIGITS = 18
MAX_FRACTION_DIGITS = 18

ZERO = Decimal(0)
ONE = Decimal(1)


# Division first rounds with ROUND_05UP at a precision at least two digits beyond the final
# quantum, which makes the second rounding (half-even, at the quantum) correct: the result is
# the exact quotient correctly rounded, on every machine.
_DIVISION = Context(
    prec=120,
    rounding=ROUND_05UP,
    Emax=10_000,
    Emin=-10_000,
    traps=[InvalidOperation, DivisionByZero, Overflow],
)
_QUANTIZE = Context(
    prec=120,
    rounding=ROUND_HALF_EVEN,
    Emax=10_000,
    Emin=-10_000,
    traps=[InvalidOperation, DivisionByZero, Overflow],
)


def divide_half_even(numerator: Decimal, denominator: Decimal, quantum: Decimal) -> Decimal:
    """numerator / denominator, correctly rounded half-even to a multiple of `quantum`."""
    if not denominator:
        raise ZeroDivisionError("divide_half_even by zero")
    return _DIVISION.divide(numerator, denominator).quantize(quantum, context=_QUANTIZE)


def canonical(value: Decimal) -> str:
    """The one text form of an amount: plain notation, no exponent, no trailing zeros, no -0."""
    if not value:
        return "0"
    text = str(value)
    if "E" in text:
        text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


class CanonicalTexts(dict[Decimal, str]):
    """`canonical` of each amount, made once per distinct value (equal values have one
    canonical text, whatever their exponents). A million rows' checkpoint made 6.9M texts at
    about 0.25 us each, most of them of a few thousand values, where a hit costs about 0.02 us
    (a Decimal keeps its hash; a new one's first hash costs up to 1 us, and a close's million
    new days still took 10 s of CPU against 17-21 s without). At most MAX_CANONICAL_TEXTS are
    kept: a book of distinct figures costs a look-up more per amount, not memory."""

    def __missing__(self, value: Decimal) -> str:
        text = canonical(value)
        if len(self) < MAX_CANONICAL_TEXTS:
            self[value] = text
        return text


MAX_CANONICAL_TEXTS = 65_536
