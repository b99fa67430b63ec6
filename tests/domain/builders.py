"""Small builders for domain events, so tests read as trades."""

from __future__ import annotations

import itertools
from decimal import Decimal

from server.domain.events import Fill, Side

_ids = itertools.count(1)
BASE_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z


def fill(
    side: str,
    quantity: object,
    price: object,
    *,
    account: str = "A1",
    strategy: str = "S1",
    instrument: str = "AAPL",
    commission: object = 0,
    fill_id: str | None = None,
    trace_id: str = "",
    at_ns: int | None = None,
) -> Fill:
    number = next(_ids)
    return Fill(
        fill_id=fill_id or f"fill-{number}",
        account_id=account,
        strategy_id=strategy,
        instrument_id=instrument,
        side=Side[side],
        quantity=Decimal(str(quantity)),
        price=Decimal(str(price)),
        commission=Decimal(str(commission)),
        timestamp_ns=at_ns if at_ns is not None else BASE_NS + number,
        trace_id=trace_id,
    )


WORKED_EXAMPLE = [
    ("BUY", 100, 10),
    ("BUY", 50, 12),
    ("SELL", 120, 11),
    ("SELL", 60, 9),
    ("BUY", 30, 8),
]
"""The worked example of the position engine: fee 0.01 per share."""


def worked_example_fills(**kwargs: object) -> list[Fill]:
    return [
        fill(side, quantity, price, commission=Decimal("0.01") * quantity, **kwargs)  # type: ignore[arg-type]
        for side, quantity, price in WORKED_EXAMPLE
    ]
