from decimal import Decimal
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from server.domain.decimals import canonical, divide_half_even

amounts = st.decimals(min_value=-(10**12), max_value=10**12, places=6, allow_nan=False)


@given(amounts, amounts.filter(bool), st.sampled_from(["1e-9", "1e-2", "1", "1e2"]))
def test_divide_half_even_is_the_correctly_rounded_quotient(numerator, denominator, quantum):
    quantum = Decimal(quantum)
    result = divide_half_even(numerator, denominator, quantum)
    exact = Fraction(numerator) / Fraction(denominator) / Fraction(quantum)
    assert Fraction(result) / Fraction(quantum) == round(exact)  # round() is half-even
    assert result.as_tuple().exponent == quantum.as_tuple().exponent


def test_halves_round_to_even():
    q = Decimal("1")
    assert divide_half_even(Decimal(5), Decimal(2), q) == 2
    assert divide_half_even(Decimal(7), Decimal(2), q) == 4
    assert divide_half_even(Decimal(-5), Decimal(2), q) == -2


def test_canonical_is_plain_and_trimmed():
    assert canonical(Decimal("3.60")) == "3.6"
    assert canonical(Decimal("1E+3")) == "1000"
    assert canonical(Decimal("-0.000")) == "0"
    assert canonical(Decimal("0E-9")) == "0"
    assert canonical(Decimal("-30.000000000")) == "-30"
    assert canonical(Decimal("1e-12")) == "0.000000000001"
