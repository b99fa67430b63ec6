"""A day's close hands the views every row of the account, taken on the event loop: the same
rows `_row` makes one at a time, each currency's base and rate asked once per close."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from server.application.projector import ViewProjector
from server.domain import steps
from server.domain.position import Position, PositionKey


@pytest.mark.parametrize("step_rows", [1, 4, steps.ROWS_PER_STEP])
def test_a_close_takes_each_row_as_submit_would_asking_each_rate_once(
    step_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In steps of any size (they stop nowhere but between rows)."""
    monkeypatch.setattr(steps, "ROWS_PER_STEP", step_rows)
    rates = {"USD": Decimal(1), "EUR": Decimal("1.1"), "JPY": None}
    asked: list[str] = []

    def base_of(account_id: str, currency: str) -> tuple[str, Decimal | None]:
        asked.append(currency)
        return "USD", rates[currency]

    rows = [
        (
            Position(
                key=PositionKey("A1", f"S{n % 3}", f"I{n % 4}"),
                multiplier=Decimal(1),
                quantity=Decimal(n),
                cost_basis=Decimal(10 * n),
                currency=currency,
                other_fees={"JPY": Decimal(3), "EUR": Decimal("0.5")} if n % 5 == 0 else None,
            ),
            Decimal(n + 1),
        )
        for n, currency in enumerate(["USD", "EUR", "JPY"] * 7)
    ]
    with ThreadPoolExecutor(1) as executor:
        projector = ViewProjector(None, executor, Decimal("0.01"), base_of=base_of)  # type: ignore[arg-type]
        projector.rows_of = lambda account_id: rows
        expected = [projector._row(row, mark) for row, mark in rows]
        asked.clear()
        closing = projector._close_rows("A1")
        taken = 0
        while True:
            try:
                next(closing)
            except StopIteration as done:
                made = done.value
                break
            taken += 1
    assert taken == (len(rows) - 1) // step_rows
    assert made == expected
    assert [row.fee_rates for row in made if row.position.other_fees] == [
        (Decimal("1.1"), None)
    ] * 5
    # Once per currency for the rows, and once per other-currency fee (rows that have any).
    assert sorted(asked) == sorted(["USD", "EUR", "JPY"] + ["EUR", "JPY"] * 5)
