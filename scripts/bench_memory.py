"""Memory per fill, in process: the section `memory` of scripts/benchmark.py.

    .venv/bin/python scripts/bench_memory.py [FILLS]      # or: scripts/bench --only memory

A ledger admits and applies FILLS fills (all inside the one-day correction window, the worst
case), once keeping everything whole (no journal to read back from: as main did) and once
with the journal behind it (what the service runs); each run is a fresh process, so the
growth of its resident memory is the ledger's. Then, under tracemalloc, the two structures
that grew with every fill: the exactly-once ids (a dict, against the compact set, through
admission and through recovery's `remember`) and the correction window.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
from array import array
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from server.domain.events import (  # noqa: E402
    CashReservation,
    CashTransfer,
    ExecutionEvent,
    Fill,
    OrderStatus,
    OrderStatusUpdate,
    Side,
)

BASE_NS = 1_767_225_600 * 10**9


def bench_fill(number: int) -> Fill:
    """The benchmark's fills: 7 strategies x 13 instruments, one order per strategy."""
    return Fill(
        fill_id=f"BENCH-{number}",
        account_id="BENCH",
        strategy_id=f"S{number % 7}",
        instrument_id=f"I{number % 13}",
        side=Side.BUY if number % 3 else Side.SELL,
        quantity=Decimal(100),
        price=Decimal(f"{100 + number % 50}.25"),
        timestamp_ns=BASE_NS + number * 1000,
        commission=Decimal("0.35"),
        commission_currency="USD",
        order_ref=f"S{number % 7}-ord",
        order_id="",
        venue="SMART",
    )


def journal_of_bench(sequence: int) -> Fill:
    """The journal of a run: the fill at `sequence` is the benchmark's fill number - 1."""
    return bench_fill(sequence - 1)


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def ledger_run(mode: str, count: int) -> dict[str, float]:
    from server.domain.ledger import Ledger

    ledger = Ledger(journal=journal_of_bench if mode == "compact" else None)
    warm = min(10_000, count // 10)
    for number in range(warm):
        event = bench_fill(number)
        ledger.apply(event, ledger.admit(event).sequence)
    samples = array("q", bytes(8 * count))  # allocated before the measure
    gc.collect()
    before = rss()
    clock = time.perf_counter_ns
    for number in range(warm, count):
        event = bench_fill(number)
        began = clock()
        outcome = ledger.admit(event)
        samples[number] = clock() - began
        ledger.apply(event, outcome.sequence)
    gc.collect()
    grown = rss() - before
    admits = sorted(samples[warm:])
    assert len(ledger.corrections) == count, "every fill is inside the window"
    return {
        "bytes_per_fill": grown / (count - warm),
        "admit_median_us": admits[len(admits) // 2] / 1000,
        "admit_p99_us": admits[len(admits) * 99 // 100] / 1000,
    }


class _Seen:  # what main kept per id: (kind, event_id) -> _Seen(sequence, fingerprint)
    __slots__ = ("fingerprint", "sequence")

    def __init__(self, sequence: int, fingerprint: int) -> None:
        self.sequence, self.fingerprint = sequence, fingerprint


def _fingerprint(number: int) -> int:
    return (number * 0x9E3779B97F4A7C15) % 2**64 - 2**63


def traced(build: Callable[[], object]) -> tuple[float, float, float]:
    """Bytes held after `build` (and its peak), and its seconds; what it built is dropped."""
    gc.collect()
    tracemalloc.start()
    began = time.perf_counter()
    built = build()
    seconds = time.perf_counter() - began
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del built
    return held, peak, seconds


def parts_run(count: int) -> dict[str, float]:
    from server.domain.corrections import CorrectableFills
    from server.domain.seen import SeenIds

    def ids_dict() -> object:
        seen = {}
        for number in range(count):
            seen[("fill", f"BENCH-{number}")] = _Seen(number + 1, _fingerprint(number))
        return seen

    def ids_admitted() -> object:
        seen = SeenIds(journal_of_bench)
        for number in range(count):
            seen.add("fill", f"BENCH-{number}", number + 1, _fingerprint(number))
            seen.journaled(number - 99)  # the group commit about 100 events behind
        return seen

    def ids_remembered() -> object:
        seen = SeenIds(journal_of_bench)
        for number in range(count):
            seen.remember("fill", f"BENCH-{number}", number + 1, _fingerprint(number))
        len(seen)  # sorts them in
        return seen

    def window(journal: Callable[[int], Fill] | None) -> Callable[[], object]:
        def build() -> object:
            fills = CorrectableFills(journal=journal)
            for number in range(count):
                fills.add(bench_fill(number), number + 1)
            return fills

        return build

    journaled = [bench_fill(number) for number in range(count)]
    columns = (
        [fill.account_id for fill in journaled], [fill.fill_id for fill in journaled],
        list(range(1, count + 1)), [fill.timestamp_ns for fill in journaled],
    )  # fmt: skip
    del journaled

    def window_loaded() -> object:
        """The window as a restart loads it: the journal's fills at once."""
        fills = CorrectableFills(journal=journal_of_bench)
        fills.add_columns(*columns)
        return fills

    figures: dict[str, float] = {}
    for name, build in [
        ("ids_dict", ids_dict),
        ("ids_admitted", ids_admitted),
        ("ids_remembered", ids_remembered),
        ("window_whole", window(None)),
        ("window_compact", window(journal_of_bench)),
        ("window_loaded", window_loaded),
    ]:
        held, peak, seconds = traced(build)
        figures[name] = held / count
        figures[name + "_peak"] = peak / count
        figures[name + "_us"] = seconds / count * 1e6
    return figures


ORDER_GAP_NS = 10 * 10**9  # an order every 10 s of event time: 100,000 span 11.6 days
DAY_NS = 86_400 * 10**9


def order_event(sequence: int) -> ExecutionEvent:
    """The journal of an orders run: a deposit, then per order a reservation, its submission,
    one fill and its FILLED status (every one ends: retention applies to all)."""
    if sequence == 1:
        return CashTransfer(
            transfer_id="D", account_id="BENCH", currency="USD", amount=Decimal(10**12),
            timestamp_ns=BASE_NS - 1,
        )  # fmt: skip
    number, step = divmod(sequence - 2, 4)
    at, order_id, strategy = BASE_NS + number * ORDER_GAP_NS, str(number), f"S{number % 7}"
    if step == 0:
        return CashReservation(
            reservation_id=f"R{number}",
            account_id="BENCH",
            currency="USD",
            amount=Decimal(1010),
            order_id=order_id,
        )
    if step == 2:
        return Fill(
            fill_id=f"F{number}",
            account_id="BENCH",
            strategy_id=strategy,
            instrument_id=f"I{number % 13}",
            side=Side.BUY,
            quantity=Decimal(10),
            price=Decimal("100.25"),
            timestamp_ns=at + 10**6,
            commission=Decimal("0.35"),
            commission_currency="USD",
            order_ref="",
            order_id=order_id,
            venue="SMART",
        )
    submitted = step == 1
    return OrderStatusUpdate(
        update_id=f"U{number}{'s' if submitted else 'f'}", account_id="BENCH",
        status=OrderStatus.SUBMITTED if submitted else OrderStatus.FILLED,
        timestamp_ns=at if submitted else at + 2 * 10**6, strategy_id=strategy, order_id=order_id,
        instrument_id=f"I{number % 13}", side=Side.BUY,
        filled_quantity=Decimal(0 if submitted else 10),
        remaining_quantity=Decimal(10 if submitted else 0),
        avg_fill_price=None if submitted else Decimal("100.25"),
    )  # fmt: skip


def orders_run(mode: str, count: int) -> dict[str, float]:
    """`count` orders through a ledger with its journal behind it (as the service runs),
    ended orders and reservations kept for good ("keep") or for one day of event time."""
    from server.domain.ledger import Ledger

    retention = None if mode == "keep" else DAY_NS
    ledger = Ledger(journal=order_event, retention_ns=retention)
    events = 1 + 4 * count
    warm = 1 + 4 * min(10_000, count // 10)
    for sequence in range(1, warm + 1):
        event = order_event(sequence)
        ledger.apply(event, ledger.admit(event).sequence)
    gc.collect()
    before = rss()
    began = time.perf_counter()
    for sequence in range(warm + 1, events + 1):
        event = order_event(sequence)
        ledger.apply(event, ledger.admit(event).sequence)
    seconds = time.perf_counter() - began
    gc.collect()
    orders = (events - warm) / 4
    return {
        "bytes_per_order": (rss() - before) / orders,
        "us_per_order": seconds / orders * 1e6,
        "orders_kept": len(ledger.orders),
        "reservations_kept": len(ledger.balances.reservations),
    }


def order_figures(count: int) -> list[str]:
    """Bytes per ended order, ended orders and reservations kept for good against kept one
    day of event time (`--order-retention-days 1`)."""
    keep, retain = child("orders-keep", count), child("orders-retain", count)
    days = count * ORDER_GAP_NS / DAY_NS
    ratio = retain["bytes_per_order"] / keep["bytes_per_order"]
    return [
        f"  {count:,} orders over {days:.1f} days of event time, each reserved, submitted, "
        "filled once, FILLED; RSS growth per order (fills, ids, rows included):",
        f"  {'':<38} {'kept for good':>16}  {'1 day retention':>16}   ratio",
        f"  {'bytes per order':<38} {keep['bytes_per_order']:13.0f} B  "
        f"{retain['bytes_per_order']:13.0f} B   x{ratio:.2f}",
        f"  {'us per order (4 events)':<38} {keep['us_per_order']:13.1f}    "
        f"{retain['us_per_order']:13.1f}     x{retain['us_per_order'] / keep['us_per_order']:.2f}",
        f"  {'orders / reservations in memory at end':<38} "
        f"{keep['orders_kept']:>7.0f} / {keep['reservations_kept']:<7.0f} "
        f"{retain['orders_kept']:>7.0f} / {retain['reservations_kept']:<7.0f}",
    ]


def child(kind: str, count: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", kind, str(count)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    figures: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return figures


def memory_figures(count: int) -> list[str]:
    whole, compact = child("whole", count), child("compact", count)
    parts = child("parts", count)

    def line(name: str, before: float, after: float, unit: str = "B/fill") -> str:
        return f"  {name:<38} {before:9.0f} {unit}  {after:9.0f} {unit}   x{after / before:.2f}"

    return [
        f"  {'':<38} {'before':>16}  {'after':>16}   ratio",
        line(
            "ledger admit + apply, RSS growth", whole["bytes_per_fill"], compact["bytes_per_fill"]
        ),
        f"  {'  admit median / p99 (us)':<38} "
        f"{whole['admit_median_us']:7.1f} / {whole['admit_p99_us']:<6.1f}  "
        f"{compact['admit_median_us']:7.1f} / {compact['admit_p99_us']:<6.1f}",
        line("exactly-once ids, admitted", parts["ids_dict"], parts["ids_admitted"], "B/id  "),
        line(
            "exactly-once ids, remembered (recovery)",
            parts["ids_dict"],
            parts["ids_remembered"],
            "B/id  ",
        ),
        f"  {'  remember: us per id, peak B/id':<38} "
        f"{parts['ids_dict_us']:9.2f} {parts['ids_dict_peak']:6.0f}  "
        f"{parts['ids_remembered_us']:9.2f} {parts['ids_remembered_peak']:6.0f}",
        line(
            "correction window (1 day: every fill)", parts["window_whole"], parts["window_compact"]
        ),
        line("  the same, loaded at once (restart)", parts["window_whole"], parts["window_loaded"]),
        f"  {'  add: us per fill, one by one / at once':<38} "
        f"{parts['window_compact_us']:9.2f} {parts['window_loaded_us']:9.2f}",
    ]


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        kind, count = sys.argv[2], int(sys.argv[3])
        if kind.startswith("orders-"):
            figures = orders_run(kind.removeprefix("orders-"), count)
        else:
            figures = parts_run(count) if kind == "parts" else ledger_run(kind, count)
        print(json.dumps(figures))
        return 0
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    print(f"Memory per fill in process ({count:,} fills, all inside the correction window):")
    print("\n".join(memory_figures(count)))
    orders = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    print(f"\nMemory per ended order ({orders:,} orders):")
    print("\n".join(order_figures(orders)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
