"""GetOrder of an order that left memory: the look-up in the store's views (`stored_order`).

    .venv/bin/python scripts/bench_stored_order.py [ORDERS]

One account's orders view holds ORDERS orders (submitted, then filled: two rows each) and its
fills view one fill each, on LMDB in a temporary folder. Prints the median and p99 of a
look-up, and of reading the account's whole orders view (the baseline: what a look-up without
the query filter would cost). It runs on the views' thread, never on the event loop.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import arcticdb as adb
import pandas as pd

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]

from server.storage.stored_orders import stored_order  # noqa: E402
from server.storage.view_layouts import numeric_fill  # noqa: E402
from server.storage.views import FILL_COLUMNS, ORDER_COLUMNS, ArcticViews  # noqa: E402

BASE_NS = 1_767_225_600 * 10**9


def frame(rows: list[tuple[object, ...]], columns: list[str], time_column: str) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=columns)
    table[time_column] = pd.to_datetime(table[time_column], unit="ns", utc=True)
    table.index = pd.DatetimeIndex(table[time_column], name="timestamp")
    return table


def fill_views(views: ArcticViews, orders: int) -> None:
    statuses = [
        (f"U{n}{k}", 2 * n + k + 1, BASE_NS + n * 10**9 + k, f"id:{n}", "S1", "", str(n), "",
         "I1", "BUY", state, "10" if k else "0", "0" if k else "10", "100" if k else "", "",
         False, "")
        for n in range(orders)
        for k, state in enumerate(("SUBMITTED", "FILLED"))
    ]  # fmt: skip
    views.orders.write("A1", frame(statuses, ORDER_COLUMNS, "status_time"))
    fills = [
        (f"F{n}", 2 * orders + n + 1, BASE_NS + n * 10**9 + 5, "S1", "I1", "BUY", "10", "100",
         "0", "USD", "", str(n), "X", "")
        for n in range(orders)
    ]  # fmt: skip
    table = [numeric_fill(row) for row in fills]  # amounts as floats beside their text
    views.fills.write("A1", frame(table, FILL_COLUMNS, "fill_time"))


def timed(call: Callable[[int], object], count: int) -> list[float]:
    samples = []
    for i in range(count):
        began = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - began) * 1e3)
    return sorted(samples)


def main() -> int:
    orders = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with tempfile.TemporaryDirectory() as folder:
        views = ArcticViews(adb.Arctic(f"lmdb://{folder}"))
        fill_views(views, orders)

        def look_up(i: int) -> None:
            order = stored_order(views, "A1", str(i * 7919 % orders), "")
            assert order is not None and order.booked_quantity == 10 and len(order.history) == 2

        found = timed(look_up, 50)
        whole = timed(lambda i: views.orders.read("A1"), 50)
    print(f"GetOrder from the store, one account of {orders:,} orders ({2 * orders:,} rows):")
    for name, samples in (("stored_order", found), ("baseline: read whole view", whole)):
        median, p99 = samples[len(samples) // 2], samples[len(samples) * 99 // 100]
        ratio = median / whole[len(whole) // 2]
        print(f"  {name:<28} median {median:7.1f} ms  p99 {p99:7.1f} ms   x{ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
