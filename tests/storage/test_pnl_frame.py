"""A close's `pnl` frame, built column by column, is the frame a list per row gave (columns,
order, types, texts, NaN for a figure without a rate), whatever the values' exponents."""

from __future__ import annotations

from decimal import Decimal

import pandas as pd

from server.domain.decimals import canonical
from server.domain.pnl_history import DailyPnl
from server.domain.position import ACCOUNT_LEVEL, PositionKey
from server.storage.pnl_views import PNL_AMOUNTS, PNL_COLUMNS, pnl_frame

D = Decimal
CLOSE_NS = 1_767_225_600 * 10**9


def by_row(days: list[DailyPnl], late: bool) -> pd.DataFrame:
    """The frame as it was built before: one list per row."""

    def row(day: DailyPnl) -> list[object]:
        texts = [
            "" if (amount := getattr(day, name)) is None else canonical(amount)
            for name in PNL_AMOUNTS
        ]
        key = day.key
        return [
            day.trading_date, day.sequence, "ACCOUNT" if key.is_account_level else "STRATEGY",
            key.strategy_id, key.instrument_id, day.currency, day.base_currency, late,
            *(float(text) if text else float("nan") for text in texts), *texts,
            ";".join(f"{currency} {canonical(amount)}" for currency, amount in day.other_fees),
        ]  # fmt: skip

    frame = pd.DataFrame([row(day) for day in days], columns=PNL_COLUMNS)
    frame["sequence"] = frame["sequence"].astype("int64")
    frame.index = pd.to_datetime([days[0].close_ns] * len(days), unit="ns", utc=True)
    return frame


def day(
    n: int, strategy: str, *, base: bool = True, fees: tuple[tuple[str, D], ...] = ()
) -> DailyPnl:
    figure = D(n) / D("8")  # exponents vary: 0.125, 0.25, 0.5 ...
    maybe = figure if base else None
    return DailyPnl(
        trading_date="2026-01-02", close_ns=CLOSE_NS, sequence=100 + n,
        key=PositionKey("A1", strategy, f"I{n % 3}"), currency="EUR",
        start_quantity=D(n), start_mark=None if n == 2 else D("101.250"),
        end_quantity=D("-0") if n == 3 else D(n), end_mark=D("1E+2"), realized_pnl=figure,
        unrealized_pnl=-figure, unrealized_change=D("0.00"), fees=D("0.35"), other_fees=fees,
        net_pnl=figure * 2, exposure=D(n * 100), base_currency="USD",
        realized_pnl_base=maybe, unrealized_pnl_base=maybe, fees_base=maybe,
        net_pnl_base=maybe, exposure_base=maybe,
    )  # fmt: skip


def test_the_frame_is_the_one_a_list_per_row_made() -> None:
    days = [
        day(1, "S1"), day(2, ACCOUNT_LEVEL, base=False), day(3, "S2", fees=(("JPY", D("120")),)),
        day(4, "S1", fees=(("JPY", D("1.50")), ("GBP", D("0")))), day(5, ACCOUNT_LEVEL),
    ]  # fmt: skip
    for late in (False, True):
        for some in (days, days[:1], days[1:2]):
            pd.testing.assert_frame_equal(pnl_frame(some, late), by_row(some, late))
