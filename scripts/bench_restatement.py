"""What booking in execution-time order costs, in process (see server/domain/restatement.py).

An in-order fill only appends to its rows' windows; a late one re-applies the fills after its
place, from the nearest snapshot. Baseline, in the same run: the position arithmetic alone
(two rows' `Position.apply_fill`, no book, no window): the floor under any booking.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from decimal import Decimal

from server.domain.book import PositionBook
from server.domain.events import Fill, Side
from server.domain.instruments import InstrumentRegistry
from server.domain.position import Position, PositionKey

BASE_NS = 1_767_225_600 * 10**9
DAY_NS = 86_400 * 10**9
STEP_NS = 10_000  # between in-order fills
PRECISION = Decimal("1e-9")


def _fill(number: int, time_ns: int, side: Side | None = None) -> Fill:
    return Fill(
        fill_id=f"f{number:09d}", account_id="A1", strategy_id="S1", instrument_id="AAPL",
        side=side or (Side.BUY if number % 3 else Side.SELL), quantity=Decimal(1 + number % 5),
        price=Decimal(100) + Decimal(number % 17) / 4, timestamp_ns=time_ns,
        commission=Decimal("0.35"),
    )  # fmt: skip


def _summary(name: str, samples: list[float], baseline: list[float] | None) -> str:
    p50 = statistics.median(samples)
    p99 = statistics.quantiles(samples, n=100, method="inclusive")[98]
    text = f"  {name:<44} p50 {p50:7.2f} us  p99 {p99:7.2f} us"
    if baseline:
        text += f"   ratio(p50) {p50 / statistics.median(baseline):5.2f}x"
    return text


def _timed(book: PositionBook, fill: Fill, sequence: int) -> float:
    began = time.perf_counter_ns()
    book.apply_fill(fill, sequence)
    return (time.perf_counter_ns() - began) / 1000


def restatement_figures(samples: int = 5000) -> list[str]:
    # The floor: the arithmetic of two rows, nothing else.
    rows = [Position(key=PositionKey("A1", s, "AAPL"), multiplier=Decimal(1)) for s in ("S1", "")]
    floor = []
    for number in range(samples):
        fill = _fill(number, BASE_NS + number * STEP_NS)
        began = time.perf_counter_ns()
        for row in rows:
            row.apply_fill(fill, number, PRECISION)
        floor.append((time.perf_counter_ns() - began) / 1000)

    book = PositionBook(InstrumentRegistry(), PRECISION, DAY_NS)
    in_order = [_timed(book, _fill(n, BASE_NS + n * STEP_NS), n + 1) for n in range(samples)]
    lines = [
        _summary("arithmetic alone, 2 rows (baseline)", floor, None),
        _summary("in-order fill, 2 rows, window on", in_order, floor),
    ]
    for late_by, window in ((1, samples), (4, samples), (16, samples), (64, samples),
                            (4, 100), (4, 20_000)):  # fmt: skip
        book = PositionBook(InstrumentRegistry(), PRECISION, DAY_NS)
        number = 0
        for number in range(window):
            book.apply_fill(_fill(number, BASE_NS + number * STEP_NS), number + 1)
        late = []
        for _ in range(min(samples, 2000)):
            number += 1
            latest = book.latest_ns
            book.apply_fill(_fill(number, latest + STEP_NS), number)  # keeps the gap
            number += 1
            place = latest + STEP_NS - late_by * STEP_NS + STEP_NS // 2
            late.append(_timed(book, _fill(number, place), number))
        lines.append(
            _summary(f"fill ~{late_by} places late, row window {window:,}", late, in_order)
        )
    return lines


def book_size_samples(rows: int, samples: int = 3000) -> list[float]:
    """Microseconds per fill with `rows` open rows in its instrument (one per strategy)."""
    book = PositionBook(InstrumentRegistry(), PRECISION, DAY_NS)
    for number in range(rows):  # one open row per strategy
        fill = _fill(number, BASE_NS + number, Side.BUY)
        book.apply_fill(dataclasses.replace(fill, strategy_id=f"S{number}"), number + 1)
    return [_timed(book, _fill(rows + n, BASE_NS + rows + n), rows + n + 1) for n in range(samples)]


def book_size_figures(samples: int = 3000) -> list[str]:
    """A fill's cost with 10 and with 10,000 rows in its instrument (no market mark: each fill
    moves the instrument's price, which every row is valued at): it must not grow."""
    lines = []
    baseline: list[float] | None = None
    for rows in (10, 10_000):
        timed = book_size_samples(rows, samples)
        lines.append(_summary(f"fill, {rows:,} rows in its instrument", timed, baseline))
        baseline = baseline or timed
    return lines


if __name__ == "__main__":
    print("\n".join(restatement_figures()))
    print("\n".join(book_size_figures()))
