"""Exact decimal arithmetic for money and quantities.

The engine never rounds silently: `EXACT` traps any rounded or inexact result, so a sum or a
product either is exact or fails loudly. The one place that must round, taking a share of a
cost basis, goes through `divide_half_even` at an explicit quantum.
"""

from __future__ import annotations

from decimal import (
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


def divide_half_even(numerator: Decimal, denominator: Decimal, quantum: Decimal) -> Decimal:
    """numerator / denominator rounded half-even to a multiple of `quantum` (a power of ten).

    Done in integers, so the result is correctly rounded whatever the operands' sizes: the
    same inputs give the same last digit on every machine.
    """
    if not denominator:
        raise ZeroDivisionError("divide_half_even by zero")
    n_sign, n_digits, n_exp = numerator.as_tuple()
    d_sign, d_digits, d_exp = denominator.as_tuple()
    q_exp = quantum.as_tuple().exponent
    assert isinstance(n_exp, int) and isinstance(d_exp, int) and isinstance(q_exp, int)
    n = int("".join(map(str, n_digits)) or "0")
    d = int("".join(map(str, d_digits)) or "0")
    # numerator / denominator / 10**q_exp = n / d * 10**shift
    shift = n_exp - d_exp - q_exp
    if shift >= 0:
        n *= 10**shift
    else:
        d *= 10 ** (-shift)
    units, remainder = divmod(n, d)
    twice = 2 * remainder
    if twice > d or (twice == d and units % 2 == 1):
        units += 1
    negative = n_sign != d_sign and units != 0
    return Decimal((1 if negative else 0, tuple(int(c) for c in str(units)), q_exp))


def canonical(value: Decimal) -> str:
    """The one text form of an amount: plain notation, no exponent, no trailing zeros, no -0."""
    if not value:
        return "0"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text
