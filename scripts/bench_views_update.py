"""What a fill costs the `fills` view when it is not simply appended (issue 14, part 4).

    .venv/bin/python scripts/bench_views_update.py [ROWS]

One account's `fills` symbol holds ROWS fills (default 100,000) on LMDB in a temporary folder.
Each case below goes through the views' own code (`ArcticViews._write_executions`, as the
views thread runs it) and prints median and p99 per event, and the ratio to the baseline
measured in the same run: an in-order fill, appended.

- late fill: inserted at its execution time, an hour back (a read of the nanoseconds around
  it, then update() of that empty span);
- correction: the corrected fill found near its time (a QueryBuilder filter on the minute
  around it), the correction appended to `corrections`, update() of the row;
- late commission, a minute after its fill: the same look-up, appended to `commissions`,
  update() of the row;
- late commission, hours after its fill: found in the day's range (the second window);
- look-up over the whole symbol: what a correction costs when its execution is not within
  the days around its time (the fallback full scan), for scale.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import arcticdb as adb

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]

from server.domain.events import (  # noqa: E402
    CommissionAmendment,
    Fill,
    FillCorrection,
    Side,
)
from server.storage.view_layouts import FILL_COLUMNS, numeric_fill  # noqa: E402
from server.storage.views import COMPACT_EVERY, ArcticViews, _fill_row  # noqa: E402

BASE_NS = 1_767_225_600 * 10**9
SECOND = 10**9
SAMPLES = 100


def fill(n: int, time_ns: int, side: Side = Side.BUY, fill_id: str = "") -> Fill:
    return Fill(
        fill_id=fill_id or f"F{n}",
        account_id="A1",
        strategy_id="S1",
        instrument_id="I1",
        side=side,
        quantity=Decimal(10),
        price=Decimal("100.25"),
        timestamp_ns=time_ns,
        commission=Decimal(1),
        commission_currency="USD",
    )


def seed(views: ArcticViews, rows: int) -> None:
    """ROWS fills a second apart, written in chunks and compacted into segments as the views
    compact them (COMPACT_EVERY rows)."""
    state = views._log(views.fills, "A1")
    chunk = 20_000
    for first in range(0, rows, chunk):
        table = [
            numeric_fill(_fill_row(n + 1, fill(n, BASE_NS + n * SECOND)))
            for n in range(first, min(first + chunk, rows))
        ]
        times = [BASE_NS + n * SECOND for n in range(first, first + len(table))]
        views._append_rows(views.fills, "A1", state, table, times, FILL_COLUMNS, "fill_time")
    views.fills.compact_data("A1", rows_per_segment=COMPACT_EVERY, prune_previous_versions=True)


def timed(call: Callable[[int], object], count: int = SAMPLES) -> list[float]:
    samples = []
    for i in range(count):
        began = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - began) * 1e3)
    return sorted(samples)


def main() -> int:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with tempfile.TemporaryDirectory() as folder:
        views = ArcticViews(adb.Arctic(f"lmdb://{folder}?map_size=4GB"))
        seed(views, rows)
        sequence = rows + 1
        end_ns = BASE_NS + rows * SECOND

        def write(event: Fill | FillCorrection | CommissionAmendment) -> None:
            nonlocal sequence
            sequence += 1
            views._write_executions("A1", [(sequence, event)])

        def appended(i: int) -> None:
            write(fill(rows + i, end_ns + i * SECOND))

        def late(i: int) -> None:
            write(fill(2 * rows + i, end_ns - 3600 * SECOND + i * 7 + 1))

        def corrected(i: int) -> None:
            n = rows - 10_000 + 37 * i  # spread over the last hours' fills
            replacement = fill(n, BASE_NS + n * SECOND, Side.SELL, fill_id=f"C{n}")
            write(FillCorrection.replacing(f"F{n}", replacement))

        def amended(i: int) -> None:
            n = rows - 20_000 + 41 * i
            write(
                CommissionAmendment(
                    amendment_id=f"A{n}",
                    account_id="A1",
                    fill_id=f"F{n}",
                    commission=Decimal("1.5"),
                    timestamp_ns=BASE_NS + n * SECOND + 60 * SECOND,
                )
            )

        def amended_later(i: int) -> None:
            n = rows - 40_000 + 43 * i
            write(
                CommissionAmendment(
                    amendment_id=f"B{n}",
                    account_id="A1",
                    fill_id=f"F{n}",
                    commission=Decimal("1.5"),
                    timestamp_ns=BASE_NS + (n + 5 * 3600) * SECOND,
                )
            )

        def scanned(i: int) -> None:
            assert views._find_fill("A1", f"F{1000 + i}", end_ns * 4) is not None

        results = {
            "baseline: in-order fill, append": timed(appended),
            "late fill, update() in place": timed(late),
            "correction, update() in place": timed(corrected),
            "late commission, update()": timed(amended),
            "late commission 5 h on, update()": timed(amended_later),
            "look-up over the whole symbol": timed(scanned, 20),
        }
        assert len(views.fills.read("A1", columns=["fill_id"]).data) == rows + 2 * SAMPLES
    base = results["baseline: in-order fill, append"]
    print(f"fills view, one account of {rows:,} rows, {SAMPLES} events of each kind:")
    for name, samples in results.items():
        median, p99 = samples[len(samples) // 2], samples[len(samples) * 99 // 100]
        ratio = median / base[len(base) // 2]
        print(f"  {name:<34} median {median:7.1f} ms  p99 {p99:7.1f} ms   x{ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
