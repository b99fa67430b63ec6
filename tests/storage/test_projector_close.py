"""A day's close hands the views every row of the account, taken on the event loop: the same
rows `_row` makes one at a time, each currency's base and rate asked once per close."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from server.application.projector import ViewProjector
from server.domain import steps
from server.domain.position import Position, PositionKey
from tests.stepped import counted


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
        taken, made = counted(projector._close_rows("A1"))
    assert taken == (len(rows) - 1) // step_rows
    assert made == expected
    assert [row.fee_rates for row in made if row.position.other_fees] == [
        (Decimal("1.1"), None)
    ] * 5
    # Once per currency for the rows, and once per other-currency fee (rows that have any).
    assert sorted(asked) == sorted(["USD", "EUR", "JPY"] + ["EUR", "JPY"] * 5)


class _Store:
    """Records what the views are given (the projector's port, in memory)."""

    def __init__(self) -> None:
        self.closes: list[int] = []

    def record_close(self, close_ns: int, rows: list[object], balances: list[object]) -> None:
        self.closes.append(len(rows))

    def record_views(self, *parts: object) -> None:
        pass

    def record_marks(self, marks: object, rates: object) -> None:
        pass


async def test_a_views_write_between_the_steps_of_a_close_loses_none_of_its_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The mark feed may start a views write while a close copies its rows in steps: the
    close is handed over whole, to the write after."""
    from server.domain.events import DayClose

    monkeypatch.setattr(steps, "ROWS_PER_STEP", 1)
    rows = [
        (Position(key=PositionKey("A1", "S1", f"I{n}"), multiplier=Decimal(1)), Decimal(1))
        for n in range(3)
    ]
    store = _Store()
    with ThreadPoolExecutor(1) as executor:
        projector = ViewProjector(store, executor, Decimal("0.01"), min_interval=0.0)  # type: ignore[arg-type]
        projector.rows_of = lambda account_id: iter(rows)
        close = DayClose(account_id="A1", trading_date="2026-01-02", timestamp_ns=1, marks=())
        submitting = projector.submitting([(1, close)], [])
        next(submitting)  # one row copied
        projector.submit_marks([], [])  # a views write starts now, between two steps
        await projector.drained()
        for _ in submitting:
            pass
        await projector.drained()
    assert store.closes == [3]
