"""Shared inputs for the end-to-end SDK tests (the `server_address` fixture comes from tests/)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from client import Fill, Side

ACCOUNT = "A1"
STRATEGY = "S1"
INSTRUMENT = "AAPL"
T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
COMMISSION_PER_SHARE = Decimal("0.01")

FillFactory = Callable[..., Fill]


@pytest.fixture
def make_fill() -> FillFactory:
    """A fill of S1 on A1 in AAPL, complete with the optional fields a relay fills in."""

    def build(
        number: int, side: Side, quantity: int | str, price: int | str, **overrides: Any
    ) -> Fill:
        amount = Decimal(quantity)
        fields: dict[str, Any] = {
            "fill_id": f"F{number}",
            "account_id": ACCOUNT,
            "strategy_id": STRATEGY,
            "instrument_id": INSTRUMENT,
            "side": side,
            "quantity": amount,
            "price": Decimal(price),
            "timestamp": T0 + timedelta(seconds=number),
            "commission": COMMISSION_PER_SHARE * amount,
            "commission_currency": "USD",
            "order_ref": f"{STRATEGY}-{number}",
            "venue": "SMART",
            "order_id": str(1000 + number),
        }
        fields.update(overrides)
        return Fill(**fields)

    return build


@pytest.fixture
def worked_example(make_fill: FillFactory) -> list[Fill]:
    """BUY 100 @ 10, BUY 50 @ 12, SELL 120 @ 11, SELL 60 @ 9, BUY 30 @ 8, 0.01 a share.

    Ends flat with realized P&L 20, fees 3.60 and net P&L 16.40; after the fourth fill the row is
    short 30 at an average cost of 9.
    """
    steps = [
        (Side.BUY, 100, 10),
        (Side.BUY, 50, 12),
        (Side.SELL, 120, 11),
        (Side.SELL, 60, 9),
        (Side.BUY, 30, 8),
    ]
    return [
        make_fill(number, side, quantity, price)
        for number, (side, quantity, price) in enumerate(steps, start=1)
    ]
