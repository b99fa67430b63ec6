"""Issue 14's costs, each beside a baseline measured in the same run: `--only attribution`.

    scripts/bench --only attribution [--attribution-quick]
    .venv/bin/python scripts/bench_attribution.py [--quick]

1. What keeping attribution (round trips, venues: domain/performance.py) adds to each fill:
   `Ledger.record` of the same fills with the ledger's `Performance` as built and with a no-op
   stand-in of the same interface, in process.
2. GetRiskMetrics and GetPerformance over a year of trading-day closes for 100 strategies in
   one account, through the service on 127.0.0.1 (another process, LMDB in a temporary
   folder, its history ingested through its own write path before it says it listens), next
   to a no-op server answering the same requests with the service's own answers as bytes.
3. One trading-day close of an account of 10,000 rows, in process, next to a walk of the same
   rows revaluing each (what any close must do at least).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import gc
import logging
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from functools import partial
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "protos"), str(Path(__file__).resolve().parent)]

import benchmark as bench  # noqa: E402  (scripts/)

from portfolio.v1 import portfolio_pb2 as pb  # noqa: E402
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc  # noqa: E402
from server.domain.events import ClosingMark, DayClose, Fill, Side  # noqa: E402
from server.domain.ledger import Ledger  # noqa: E402
from server.domain.performance import Performance  # noqa: E402
from server.domain.position import Position  # noqa: E402

BASE_NS = 1_735_689_600 * 10**9  # 2025-01-01 00:00 UTC: a year of closes ends before today
SERVICE = "/portfolio.v1.PortfolioManager/"
VENUES = ("ARCA", "NYSE", "NASDAQ", "IEX", "BATS")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sizes:
    fills: int  # per run of the per-fill cost (over `rows` rows); four runs
    rows: int
    strategies: int  # in the queried account
    days: int  # trading-day closes of its history
    samples: int  # calls per query figure, at most...
    seconds: float  # ...or as many as fit in this many seconds (at least 20)
    close_rows: int  # rows of the account a timed close records
    closes: int  # closes timed

    def describe(self) -> str:
        return (
            f"{self.fills:,} fills over {self.rows:,} rows x4; {self.strategies} strategies x "
            f"{self.days} closes; up to {self.samples:,} calls or {self.seconds:g} s a query; "
            f"{self.closes} closes of {self.close_rows:,} rows"
        )


FULL = Sizes(
    fills=20_000, rows=1000, strategies=100, days=252, samples=500, seconds=20,
    close_rows=10_000, closes=20,
)  # fmt: skip
QUICK = Sizes(
    fills=2000, rows=1000, strategies=100, days=20, samples=30, seconds=1, close_rows=2000,
    closes=3,
)  # fmt: skip


def p50(samples: list[float]) -> float:
    return statistics.median(samples)


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[98]


def line(name: str, samples: list[float], base_name: str, base: list[float], unit: str) -> str:
    """One figure: median and p99, its baseline's, and the ratios."""
    return (
        f"  {name:<48} p50 {p50(samples):9.3f} {unit}  p99 {p99(samples):9.3f} {unit}   "
        f"{base_name} p50 {p50(base):.3f} p99 {p99(base):.3f}   "
        f"ratio p50 {p50(samples) / p50(base):.2f}x p99 {p99(samples) / p99(base):.2f}x"
    )


# -- 1. the cost per fill of keeping attribution -------------------------------------------------


class NoPerformance(Performance):
    """The stand-in: takes every fill, keeps nothing."""

    def booked(
        self,
        fill: Fill,
        rows: Iterable[Position],
        *,
        realized_before: Decimal,
        notional: Decimal,
        currency: str,
    ) -> None:
        return None


@dataclasses.dataclass
class Mix:
    opens: int = 0
    adds: int = 0
    reduces: int = 0
    closes: int = 0
    flips: int = 0


def mixed_fills(count: int, rows: int, seed: int = 14) -> tuple[list[Fill], Mix]:
    """`count` fills over `rows` rows (2 accounts x 5 strategies x rows/10 instruments), 5
    venues; each row opens, adds, reduces, closes to flat and flips through zero in turn at
    random, as strategies trade."""
    chance = random.Random(seed)
    instruments = max(rows // 10, 1)
    held: dict[tuple[str, str, str], int] = {}
    prices = [Decimal(50 + n % 200) for n in range(instruments)]
    mix = Mix()
    fills = []
    for n in range(count):
        account, strategy = f"A{n % 2}", f"S{chance.randrange(5)}"
        index = chance.randrange(instruments)
        key = (account, strategy, f"I{index}")
        now = held.get(key, 0)
        size = 100 * chance.randint(1, 5)
        roll = chance.random()
        if not now:
            signed, mix.opens = (size if roll < 0.6 else -size), mix.opens + 1
        elif roll < 0.3:
            signed, mix.adds = (size if now > 0 else -size), mix.adds + 1
        elif roll < 0.55:
            cut = min(size, abs(now) - 100) or abs(now)
            signed = -cut if now > 0 else cut
            if cut == abs(now):
                mix.closes += 1
            else:
                mix.reduces += 1
        elif roll < 0.85:
            signed, mix.closes = -now, mix.closes + 1
        else:
            signed, mix.flips = (-now - size if now > 0 else -now + size), mix.flips + 1
        held[key] = now + signed
        prices[index] += Decimal(chance.randint(-20, 20)) / 100
        fills.append(Fill(
            fill_id=f"F{n}", account_id=account, strategy_id=strategy, instrument_id=f"I{index}",
            side=Side.BUY if signed > 0 else Side.SELL, quantity=Decimal(abs(signed)),
            price=max(prices[index], Decimal(1)), timestamp_ns=BASE_NS + n * 1000,
            commission=Decimal("0.35"), commission_currency="USD", order_ref=f"{strategy}-{n}",
            venue=VENUES[chance.randrange(len(VENUES))],
        ))  # fmt: skip
    return fills, mix


def record_us(fills: list[Fill], *kept: Performance) -> list[list[float]]:
    """Microseconds of `Ledger.record` per fill, one fresh ledger per `kept` Performance, the
    ledgers taking each fill in turn (so that whatever else the machine does falls on all of
    them alike); the first tenth is the warm-up (rows open) and is not counted."""
    ledgers = []
    for performance in kept:
        ledger = Ledger()
        ledger.performance = performance
        ledgers.append(ledger)
    gc.collect()
    clock = time.perf_counter_ns
    samples: list[list[float]] = [[] for _ in ledgers]
    skip = len(fills) // 10
    for number, fill in enumerate(fills):
        for ledger, into in zip(ledgers, samples, strict=True):
            began = clock()
            ledger.record(fill)
            if number >= skip:
                into.append((clock() - began) / 1000)
    return samples


class TimedPerformance(Performance):
    """The real one, its own time per fill noted (the timer's cost included)."""

    def __init__(self) -> None:
        super().__init__()
        self.spent: list[float] = []

    def booked(
        self,
        fill: Fill,
        rows: Iterable[Position],
        *,
        realized_before: Decimal,
        notional: Decimal,
        currency: str,
    ) -> None:
        began = time.perf_counter_ns()
        super().booked(
            fill, rows, realized_before=realized_before, notional=notional, currency=currency
        )
        self.spent.append((time.perf_counter_ns() - began) / 1000)


def per_fill_lines(sizes: Sizes) -> list[str]:
    fills, mix = mixed_fills(sizes.fills, sizes.rows)
    # Both ways side by side, fill by fill, in both orders (the one recording second may find
    # the fill's objects warm in the caches); each way's samples from both runs.
    kept = Performance()
    first, second = record_us(fills, kept, NoPerformance())
    third, fourth = record_us(fills, NoPerformance(), Performance())
    built, noop = first + fourth, second + third
    paired = [a - b for a, b in zip(first + fourth, second + third, strict=True)]
    timed = TimedPerformance()
    record_us(fills, timed)
    own = timed.spent[len(timed.spent) // 10 :]
    ledger = Ledger()
    for fill in fills:
        ledger.record(fill)
    trips = kept.trips((row.key, row.currency) for row in ledger.book.rows())
    return [
        f"  fills: {len(fills):,} over {len(ledger.book):,} rows ({mix.opens:,} opens, "
        f"{mix.adds:,} adds, {mix.reduces:,} reduces, {mix.closes:,} closes, {mix.flips:,} "
        f"flips; {len(VENUES)} venues; {sum(t.count for t in trips.values()):,} round trips "
        "booked)",
        line("Ledger.record, attribution as built", built, "no-op stand-in", noop, "us"),
        f"  {'difference, fill by fill':<48} p50 {p50(paired):+9.3f} us  "
        f"(of the medians {p50(built) - p50(noop):+.3f} us, of the p99s "
        f"{p99(built) - p99(noop):+.3f} us)",
        f"  {'Performance.booked alone (timer included)':<48} p50 {p50(own):9.3f} us  "
        f"p99 {p99(own):9.3f} us   share of Ledger.record p50 {p50(own) / p50(built):.0%}",
    ]


# -- 2. the queries over a year of history, through gRPC -----------------------------------------


def trading_dates(count: int) -> list[datetime.date]:
    """`count` weekdays from 2025-01-02."""
    day, dates = datetime.date(2025, 1, 2), list[datetime.date]()
    while len(dates) < count:
        if day.weekday() < 5:
            dates.append(day)
        day += datetime.timedelta(days=1)
    return dates


def history_days(strategies: int, days: int, seed: int = 14) -> Iterator[list[Fill | DayClose]]:
    """Account RISK: each of `strategies` strategies holds 3 of 50 instruments and trades one
    of them a day; each trading day ends with its close at the day's marks (a random walk of
    2% a day), so every strategy's daily P&L varies."""
    chance = random.Random(seed)
    instruments = [f"I{n:02d}" for n in range(50)]
    marks = {name: Decimal(100 + 3 * n) for n, name in enumerate(instruments)}
    held: dict[tuple[str, str], int] = {}
    number = 0
    for day in trading_dates(days):
        noon = int(datetime.datetime(day.year, day.month, day.day, 16, tzinfo=datetime.UTC)
                   .timestamp()) * 10**9  # fmt: skip
        events: list[Fill | DayClose] = []
        for s in range(strategies):
            strategy = f"S{s:03d}"
            instrument = instruments[(3 * s + chance.randrange(3)) % len(instruments)]
            now = held.get((strategy, instrument), 0)
            signed = chance.choice((-300, -200, -100, 100, 200, 300)) - (now // 2 if now else 0)
            signed = signed or 100
            held[(strategy, instrument)] = now + signed
            number += 1
            events.append(Fill(
                fill_id=f"H{number}", account_id="RISK", strategy_id=strategy,
                instrument_id=instrument, side=Side.BUY if signed > 0 else Side.SELL,
                quantity=Decimal(abs(signed)), price=marks[instrument], timestamp_ns=noon + s,
                commission=Decimal("1.00"), commission_currency="USD",
                venue=VENUES[s % len(VENUES)],
            ))  # fmt: skip
        for name in instruments:
            step = Decimal(round(chance.gauss(0, 0.02), 4))
            marks[name] = max((marks[name] * (1 + step)).quantize(Decimal("0.01")), Decimal(1))
        events.append(DayClose(
            account_id="RISK", trading_date=day.isoformat(), timestamp_ns=noon + 6 * 3600 * 10**9,
            marks=tuple(ClosingMark(instrument_id=n, price=p) for n, p in marks.items()),
        ))  # fmt: skip
        yield events


async def serve_history(store: str, strategies: int, days: int) -> None:
    """The service on `store`, its history ingested through its own write path (durable, as
    any event), then listening (and saying so)."""
    from server.app import start_server
    from server.config import parse_args
    from server.domain.ledger import Result

    logging.basicConfig(level=logging.WARNING)
    config = parse_args(["--port", "0", "--store", store, "--session-days", "none"])
    running = await start_server(config)
    began = time.perf_counter()
    for events in history_days(strategies, days):
        outcomes = await running.service.ingest(events)
        refused = [o for o in outcomes if o.result is not Result.ACCEPTED]
        assert not refused, refused
        assert not running.service.ledger.refusals, running.service.ledger.refusals
    print(f"history ingested in {time.perf_counter() - began:.1f} s", file=sys.stderr, flush=True)
    print(f"listening on 127.0.0.1:{running.port}", file=sys.stderr, flush=True)
    await running.server.wait_for_termination()


async def serve_same_bytes(answers_file: str) -> None:
    """The no-op server: each (method, request bytes) answered with the bytes the service
    answered, read once (no work per call but a dict lookup)."""
    import json

    table = {
        (method, bytes.fromhex(request)): bytes.fromhex(answer)
        for method, request, answer in json.loads(Path(answers_file).read_text())
    }

    def answering(method: str) -> grpc.RpcMethodHandler[bytes, bytes]:
        async def answer(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            return table[(method, request)]

        return grpc.unary_unary_rpc_method_handler(answer)

    handler = grpc.method_handlers_generic_handler(
        "portfolio.v1.PortfolioManager", {method: answering(method) for method, _ in table}
    )
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    await server.wait_for_termination()


def timed_calls(call: Callable[[], object], count: int, seconds: float) -> list[float]:
    """Milliseconds per call: 3 warm-up calls, then `count` or as many as fit in `seconds`
    (at least 20)."""
    for _ in range(3):
        call()
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(samples) < count and (len(samples) < 20 or time.perf_counter() < deadline):
        began = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - began) / 1e6)
    return samples


ACCOUNT_RISK = pb.GetRiskMetricsRequest(account_id="RISK", lookback_days=252)
QUERIES: list[tuple[str, str, pb.GetRiskMetricsRequest | pb.GetPerformanceRequest]] = [
    ("GetRiskMetrics, the account (VaR, correlations)", "GetRiskMetrics", ACCOUNT_RISK),
    ("GetRiskMetrics, one strategy", "GetRiskMetrics",
     pb.GetRiskMetricsRequest(account_id="RISK", strategy_id="S042", lookback_days=252)),
    ("GetPerformance, the account", "GetPerformance", pb.GetPerformanceRequest(account_id="RISK")),
    ("GetPerformance, one strategy", "GetPerformance",
     pb.GetPerformanceRequest(account_id="RISK", strategy_id="S042")),
]  # fmt: skip


def query_lines(sizes: Sizes) -> list[str]:
    import json

    lines: list[str] = []
    others: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            began = time.perf_counter()
            service, address = bench.start([
                sys.executable, __file__, "--serve-history", f"lmdb://{tmp}/store",
                str(sizes.strategies), str(sizes.days),
            ])  # fmt: skip
            others.append(service)
            with grpc.insecure_channel(address) as channel:
                answers: list[tuple[str, str, str]] = []
                for _, method, request in QUERIES:
                    call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                        SERVICE + method
                    )
                    answered: bytes = call(request.SerializeToString())
                    answers.append((method, request.SerializeToString().hex(), answered.hex()))
                risk = pb.RiskMetrics.FromString(bytes.fromhex(answers[0][2]))
                lines.append(
                    f"  service: {sizes.strategies} strategies, {risk.trading_days} closes in the "
                    f"lookback, {len(risk.correlations):,} strategy pairs correlated; started "
                    f"with its history in {time.perf_counter() - began:.0f} s"
                )
                (Path(tmp) / "answers.json").write_text(json.dumps(answers))
                noop, noop_address = bench.start(
                    [sys.executable, __file__, "--serve-same-bytes", f"{tmp}/answers.json"]
                )
                others.append(noop)
                with grpc.insecure_channel(noop_address) as noop_channel:
                    stubs = (pb_grpc.PortfolioManagerStub(channel),
                             pb_grpc.PortfolioManagerStub(noop_channel))  # fmt: skip
                    for (name, method, request), (_, _, hexed) in zip(
                        QUERIES, answers, strict=True
                    ):
                        service_ms, noop_ms = (
                            timed_calls(partial(getattr(stub, method), request), sizes.samples,
                                        sizes.seconds)
                            for stub in stubs
                        )  # fmt: skip
                        size = len(hexed) // 2
                        lines.append(line(
                            f"{name} ({size:,} B)", service_ms, "no-op same bytes", noop_ms, "ms"
                        ) + f"   ({len(service_ms)} calls)")  # fmt: skip
                    lines.append(stalled_line(stubs[0], sizes))
        finally:
            for process in reversed(others):
                if process.poll() is None:
                    process.terminate()
                    process.wait(30)
    return lines


def stalled_line(service: pb_grpc.PortfolioManagerStub, sizes: Sizes) -> str:
    """GetPosition while another client asks GetRiskMetrics of the account back to back, next
    to GetPosition alone: what the other calls of the service wait meanwhile."""
    get = pb.GetPositionRequest(account_id="RISK", strategy_id="S000", instrument_id="I00")
    alone = timed_calls(partial(service.GetPosition, get), sizes.samples, sizes.seconds)
    stop, asked = threading.Event(), [0]

    def ask() -> None:
        while not stop.is_set():
            service.GetRiskMetrics(ACCOUNT_RISK)
            asked[0] += 1

    other = threading.Thread(target=ask, daemon=True)
    other.start()
    try:
        during = timed_calls(partial(service.GetPosition, get), sizes.samples, sizes.seconds)
    finally:
        stop.set()
        other.join(60)
    name = "GetPosition, GetRiskMetrics(account) meanwhile"
    counts = f"   ({len(during)} calls; {asked[0]} GetRiskMetrics meanwhile)"
    return line(name, during, "GetPosition alone", alone, "ms") + counts


# -- 3. a trading-day close of 10,000 rows -----------------------------------------------------


def close_lines(sizes: Sizes) -> list[str]:
    """Account CLOSE: 100 strategies x close_rows/100 instruments, every row held; between
    two closes a few hundred fills move some rows and every mark moves."""
    chance = random.Random(14)
    instruments = max(sizes.close_rows // 100, 1)
    ledger, number = Ledger(), 0

    def trade(strategy: int, instrument: int, signed: int, at: int) -> None:
        nonlocal number
        number += 1
        ledger.record(Fill(
            fill_id=f"C{number}", account_id="CLOSE", strategy_id=f"S{strategy}",
            instrument_id=f"I{instrument}", side=Side.BUY if signed > 0 else Side.SELL,
            quantity=Decimal(abs(signed)), price=Decimal(100 + instrument % 50),
            timestamp_ns=at + number, commission=Decimal("0.35"), commission_currency="USD",
        ))  # fmt: skip

    for instrument in range(instruments):
        for strategy in range(100):
            trade(strategy, instrument, 100 if (strategy + instrument) % 3 else -100, BASE_NS)
    marks = {f"I{n}": Decimal(100 + n % 50) for n in range(instruments)}
    closes, walks = [], []
    for day in trading_dates(sizes.closes + 1)[1:]:
        at = int(datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC)
                 .timestamp()) * 10**9  # fmt: skip
        for _ in range(300):
            trade(chance.randrange(100), chance.randrange(instruments),
                  chance.choice((-100, 100)), at)  # fmt: skip
        for name in marks:
            marks[name] += Decimal(chance.randint(-100, 100)) / 100
        close = DayClose(
            account_id="CLOSE", trading_date=day.isoformat(), timestamp_ns=at + 10**12,
            marks=tuple(ClosingMark(instrument_id=n, price=p) for n, p in marks.items()),
        )  # fmt: skip
        gc.collect()
        began = time.perf_counter_ns()
        walk_rows(ledger, marks)
        walks.append((time.perf_counter_ns() - began) / 1e6)
        began = time.perf_counter_ns()
        outcome = ledger.record(close)
        closes.append((time.perf_counter_ns() - began) / 1e6)
        assert outcome.applied.refusal is None, outcome
    recorded = len(outcome.applied.days)
    per_row = f"   ({p50(closes) / recorded * 1000:.1f} us a row)"
    return [
        f"  account of {len(ledger.book):,} rows ({recorded:,} recorded by each close)",
        line("one close (Ledger.record of its DayClose)", closes, "walk revaluing the rows",
             walks, "ms") + per_row,
    ]  # fmt: skip


def walk_rows(ledger: Ledger, marks: dict[str, Decimal]) -> None:
    """The least a close does: every row of the account, revalued at its mark."""
    for instrument_id, rows in ledger.account_instrument_rows("CLOSE").items():
        mark = marks[instrument_id]
        for row in rows:
            if row.quantity:
                row.unrealized_pnl(mark)


# -- the section ---------------------------------------------------------------------------------


def attribution_figures(sizes: Sizes) -> None:
    """Prints each part as it is measured."""
    print(f"\nAttribution and risk (issue 14; {sizes.describe()}):", flush=True)
    print("Keeping attribution, per fill, in process (ratio: as built to the no-op):", flush=True)
    print("\n".join(per_fill_lines(sizes)), flush=True)
    print(f"Queries through gRPC over {sizes.days} closes, one account (ratio: to the no-op "
          "server answering the same bytes):", flush=True)  # fmt: skip
    print("\n".join(query_lines(sizes)), flush=True)
    print("A trading-day close, in process (ratio: to the walk):", flush=True)
    print("\n".join(close_lines(sizes)), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="sizes for a smoke run (< 1 min)")
    parser.add_argument("--serve-history", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--serve-same-bytes", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_history:
        store, strategies, days = args.serve_history
        asyncio.run(serve_history(store, int(strategies), int(days)))
    elif args.serve_same_bytes:
        asyncio.run(serve_same_bytes(args.serve_same_bytes))
    else:
        attribution_figures(QUICK if args.quick else FULL)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
