"""Benchmark: the service against a no-op gRPC server measured in the same run.

    scripts/bench            # or: .venv/bin/python scripts/benchmark.py [--fills N]

Both servers run as separate processes on 127.0.0.1 (as in production, the client is another
process). Prints Ingest throughput (batches of 100 fills) next to a no-op stream of the same
batches, fill-to-ack latency, query latency next to a no-op unary call with a book of 10,000+
positions, and the in-process cost of each step of the hot path.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "protos")]

from portfolio.v1 import portfolio_pb2 as pb  # noqa: E402
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc  # noqa: E402

if TYPE_CHECKING:
    from server.domain.events import Fill

BATCH = 100


# -- the no-op baseline ------------------------------------------------------------------------


class NoOpServicer(pb_grpc.PortfolioManagerServicer):
    """Parses requests and answers with empty messages: the stack's own cost."""

    async def Ingest(self, request_iterator, context):
        async for request in request_iterator:
            yield pb.IngestResponse(batch_id=request.batch_id)

    async def GetPosition(self, request, context):
        return pb.Position()


async def serve_noop() -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_PortfolioManagerServicer_to_server(NoOpServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    await server.wait_for_termination()


def start(command: list[str]) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "protos")])}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:
        found = re.search(r"listening on (127\.0\.0\.1:\d+)", line)
        if found:
            return process, found.group(1)
    raise RuntimeError(f"{command} did not start")


# -- workloads ---------------------------------------------------------------------------------


def fill(
    number: int,
    account: str = "BENCH",
    strategy: str = "S1",
    instrument: str = "AAPL",
    side: int = pb.SIDE_BUY,
) -> pb.ExecutionEvent:
    message = pb.Fill(
        fill_id=f"{account}-{number}",
        account_id=account,
        strategy_id=strategy,
        instrument_id=instrument,
        side=side,
        quantity="100",
        price=f"{100 + number % 50}.25",
        commission="0.35",
        commission_currency="USD",
        order_ref=f"{strategy}-ord",
        venue="SMART",
    )
    message.timestamp.FromNanoseconds(1_767_225_600 * 10**9 + number)
    return pb.ExecutionEvent(fill=message)


def batches(total: int, account: str) -> Iterator[pb.IngestRequest]:
    for start in range(0, total, BATCH):
        events = [
            fill(n, account, side=pb.SIDE_BUY if n % 3 else pb.SIDE_SELL)
            for n in range(start, start + BATCH)
        ]
        yield pb.IngestRequest(batch_id=str(start), events=events)


def ingest_rate(stub: pb_grpc.PortfolioManagerStub, requests: list[pb.IngestRequest]) -> float:
    began = time.perf_counter()
    answered = sum(1 for _ in stub.Ingest(iter(requests)))
    elapsed = time.perf_counter() - began
    assert answered == len(requests)
    return len(requests) * BATCH / elapsed


def latencies(call: Callable[[], object], count: int) -> list[float]:
    for _ in range(200):
        call()
    samples = []
    for _ in range(count):
        began = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - began) / 1e6)
    return samples


def pct(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


def row(name: str, service: list[float], baseline: list[float] | None, unit: str = "ms") -> str:
    p50, p99 = statistics.median(service), pct(service, 99)
    text = f"{name:<34} p50 {p50:8.3f} {unit}  p99 {p99:8.3f} {unit}"
    if baseline:
        text += f"   no-op p50 {statistics.median(baseline):.3f} p99 {pct(baseline, 99):.3f}"
        text += f"   ratio(p50) {p50 / statistics.median(baseline):.2f}x"
    return text


# -- the hot path, in process -------------------------------------------------------------------


def hot_path_steps(count: int) -> list[str]:
    from server.api.updates import encode_update
    from server.api.wire import event_from_proto
    from server.application.publishing import PositionChanged
    from server.domain.ledger import Ledger

    events = [
        fill(n, "STEPS", strategy=f"S{n % 7}", instrument=f"I{n % 13}",
             side=pb.SIDE_BUY if n % 3 else pb.SIDE_SELL)
        for n in range(count)
    ]  # fmt: skip
    wire = [
        pb.IngestRequest(events=events[i : i + BATCH]).SerializeToString()
        for i in range(0, count, BATCH)
    ]
    ledger = Ledger()
    clock = time.perf_counter_ns
    began = clock()
    parsed = [pb.IngestRequest.FromString(data) for data in wire]
    t_parse, began = clock() - began, clock()
    domain = [event_from_proto(e) for batch in parsed for e in batch.events]
    t_convert, began = clock() - began, clock()
    admitted = [(ledger.admit(event).sequence, event) for event in domain]
    t_admit, began = clock() - began, clock()
    applied = [(s, e, ledger.apply(e, s)) for s, e in admitted]
    t_apply, began = clock() - began, clock()
    for sequence, event, done in applied:
        for change in done.rows:  # encoded as the subscription hub does: to bytes, once
            encode_update(
                PositionChanged(
                    sequence=sequence, kind=change.kind, fill=event,  # type: ignore[arg-type]
                    row=change.position, price=ledger.book.price(change.position.key.instrument_id),
                    precision=ledger.book.precision, base_currency="USD", fx_rate=Decimal(1),
                )
            )  # fmt: skip
    t_encode = clock() - began

    def per(ns: int) -> str:
        return f"{ns / count / 1000:7.2f} us/fill"

    return [
        f"  protobuf parse (in batches of {BATCH})      {per(t_parse)}",
        f"  validate + convert to domain          {per(t_convert)}",
        f"  dedup + sequence (admit)              {per(t_admit)}",
        f"  apply to 2 rows, totals, revaluation  {per(t_apply)}",
        f"  encode 2 updates, once, if subscribed {per(t_encode)}",
    ]


# -- reconciliation, in process -----------------------------------------------------------------


def reconciliation_figures(positions: int, samples: int) -> list[str]:
    """One run over an account of `positions` instruments (2 strategies each), against a
    broker snapshot of the same size with 1% residuals, next to a bare walk of the account's
    rows (what any comparison must read) measured in the same run."""
    from server.domain.events import BrokerPosition, BrokerPositions, Fill, Side
    from server.domain.ledger import Ledger

    ledger = Ledger()
    sequence = 0
    for n in range(positions):
        for strategy, side, quantity in (("S1", Side.BUY, 100), ("S2", Side.SELL, 40)):
            sequence += 1
            trade = Fill(
                fill_id=f"f{sequence}",
                account_id="BENCH",
                strategy_id=strategy,
                instrument_id=f"I{n}",
                side=side,
                quantity=Decimal(quantity),
                price=Decimal("100.25"),
                timestamp_ns=1_767_225_600 * 10**9 + sequence,
            )
            ledger.apply(trade, sequence)
    held = tuple(
        BrokerPosition(
            instrument_id=f"I{n}",
            quantity=Decimal(60 if n % 100 else 61),
            avg_cost=Decimal("100.25"),
        )
        for n in range(positions)
    )

    def run() -> None:
        nonlocal sequence
        sequence += 1
        ledger.apply(
            BrokerPositions(
                snapshot_id=f"s{sequence}", account_id="BENCH", timestamp_ns=1, positions=held
            ),
            sequence,
        )

    def walk() -> None:
        for rows in ledger.account_instrument_rows("BENCH").values():
            for row in rows:
                _ = row.quantity

    runs = latencies(run, samples)
    baseline = latencies(walk, samples)
    return [row(f"  reconcile {positions:,} positions", runs, baseline)]


# -- main --------------------------------------------------------------------------------------


def service_figures(args: argparse.Namespace, store: str, label: str) -> None:
    """Ingest throughput and fill-to-ack latency, next to the no-op server, for one store."""
    service, service_address = start(
        [sys.executable, "-m", "server", "--port", "0", "--store", store]
    )
    noop, noop_address = start([sys.executable, __file__, "--serve-noop"])
    try:
        with (
            grpc.insecure_channel(service_address) as channel_s,
            grpc.insecure_channel(noop_address) as channel_n,
        ):
            svc = pb_grpc.PortfolioManagerStub(channel_s)
            base = pb_grpc.PortfolioManagerStub(channel_n)
            print(f"{label}\n  Ingest, bidi stream, {args.fills:,} fills in batches of {BATCH}:")
            warm = list(batches(10_000, "WARM"))
            ingest_rate(svc, warm), ingest_rate(base, warm)
            runs_s, runs_n = [], []
            for round_ in range(3):
                requests = list(batches(args.fills, f"R{round_}"))
                runs_n.append(ingest_rate(base, requests))
                runs_s.append(ingest_rate(svc, requests))
            best_s, best_n = max(runs_s), max(runs_n)
            print(
                f"    service {best_s:>10,.0f} fills/s   no-op {best_n:>10,.0f} fills/s   "
                f"ratio {best_s / best_n:.2f} (best of 3)"
            )
            counter = iter(range(10**9))

            def one_fill(stub: pb_grpc.PortfolioManagerStub) -> Callable[[], object]:
                stream = _Stream(stub)

                def send() -> object:
                    request = pb.IngestRequest(events=[fill(next(counter), "LAT")])
                    return next(stream.send(request))

                return send

            print("  Fill to acknowledged, updated state (one-fill batch, time to its ack):")
            print(row("    ack", latencies(one_fill(svc), args.samples),
                      latencies(one_fill(base), args.samples)))  # fmt: skip
            if store != "mem://":
                return
            # A book of 10,000+ rows: 100 strategies x 100 instruments (plus account rows).
            big = [
                fill(n, "BIG", strategy=f"S{n // 100}", instrument=f"I{n % 100}")
                for n in range(10_000)
            ]
            for i in range(0, len(big), 1000):
                list(svc.Ingest(iter([pb.IngestRequest(events=big[i : i + 1000])])))
            summary = svc.GetPortfolioSummary(pb.GetPortfolioSummaryRequest())
            rows = summary.account_totals.total_positions + sum(
                s.totals.total_positions for s in summary.strategies
            )
            print(
                f"  Queries, sequential unary calls, book of {rows:,} position rows "
                f"({summary.as_of_sequence:,} events):"
            )
            get = pb.GetPositionRequest(account_id="BIG", strategy_id="S42", instrument_id="I42")
            baseline = latencies(lambda: base.GetPosition(get), args.samples)
            print(row("    GetPosition", latencies(lambda: svc.GetPosition(get), args.samples),
                      baseline))  # fmt: skip
            request = pb.GetPortfolioSummaryRequest(account_id="BIG")
            print(row("    GetPortfolioSummary (100 strats)",
                      latencies(lambda: svc.GetPortfolioSummary(request), args.samples // 4),
                      baseline))  # fmt: skip
    finally:
        for process in (service, noop):
            process.terminate()
            process.wait(10)


def folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def commit_figures(commits: int) -> None:
    """Journal appends of one event each on LMDB: latency and disk use stay flat."""
    from server.api.wire import fill_from_proto
    from server.storage.arctic import ArcticEventStore

    with tempfile.TemporaryDirectory() as tmp:
        store = ArcticEventStore(f"lmdb://{tmp}/store")
        window = max(commits // 10, 1)
        print(f"\nJournal appends on LMDB, one event per commit, {commits:,} commits "
              f"(pruned, compacted every 1,000):")  # fmt: skip
        samples: list[float] = []
        for n in range(1, commits + 1):
            event = fill_from_proto(fill(n, "COMMITS").fill)
            began = time.perf_counter_ns()
            store.append([(n, event)])
            samples.append((time.perf_counter_ns() - began) / 1e6)
            if n % window == 0:
                mb = folder_size(Path(tmp)) / 2**20
                print(row(f"    commits {n - window + 1:>7,}-{n:<7,}", samples, None)
                      + f"   disk {mb:7.1f} MB")  # fmt: skip
                samples = []
        store.close()


def startup_fill(n: int) -> Fill:
    """The startup journal's fills: 4 accounts x 20 strategies x 500 instruments."""
    from server.api.wire import fill_from_proto
    from server.domain.events import Fill

    side = pb.SIDE_BUY if n % 3 else pb.SIDE_SELL
    event = fill_from_proto(
        fill(n, f"U{n % 4}", strategy=f"S{n % 20}", instrument=f"I{n % 500}", side=side).fill
    )
    assert isinstance(event, Fill)
    return event


def build_startup_store(
    uri: str, fills_count: int, checkpoint_every: int, make: Callable[[int], Fill] = startup_fill
) -> int:
    """Journals fills 1..N straight through the store, with the views and the checkpoint
    `checkpoint_every` events behind that a running service leaves; returns the book's rows."""
    from server.application.ports import Checkpoint
    from server.domain.ledger import Ledger
    from server.domain.state import capture, capture_rows
    from server.storage.arctic import ArcticEventStore

    store = ArcticEventStore(uri)
    ledger = Ledger(journal=make)  # compact, as the service runs: fill n is sequence n
    checkpoint_at = fills_count - checkpoint_every
    group = []
    for n in range(1, fills_count + 1):
        event = make(n)
        ledger.apply(event, n)
        group.append((n, event))
        if len(group) == 10_000:
            store.append(group)
            store.record_views(group, [])  # as a running service keeps them
            group = []
        if n == checkpoint_at:
            # with the rows' anchors, as the service writes it: without them a restart skips
            # rebuilding the restatement windows (decoding every fill inside them)
            anchors = ledger.book.anchors()
            store.save_checkpoint(Checkpoint(n, capture_rows(ledger), capture(ledger), anchors))
    if group:
        store.append(group)
        store.record_views(group, [])
    store.record_views([], [ledger.book.view(r) for r in ledger.book.rows()])
    store.close()
    return len(ledger.book)


def listening_seconds(uri: str) -> float:
    """From starting the service's process on the store to its listening."""
    began = time.perf_counter()
    process, _ = start([sys.executable, "-m", "server", "--port", "0", "--store", uri])
    seconds = time.perf_counter() - began
    process.terminate()
    try:
        process.wait(120)  # a graceful stop checkpoints the book: a large one takes a while
    except subprocess.TimeoutExpired:
        process.kill()  # only the start is measured; the store is thrown away
        process.wait()
    return seconds


def startup_figures(fills_count: int, checkpoint_every: int) -> None:
    """Time to start on a journal of N fills, with the checkpoint a running service leaves."""
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"lmdb://{tmp}/store"
        began = time.perf_counter()
        rows = build_startup_store(uri, fills_count, checkpoint_every)
        print(f"\nStartup on a journal of {fills_count:,} fills ({rows:,} rows, "
              f"checkpoint {checkpoint_every:,} events behind; built in "
              f"{time.perf_counter() - began:.0f} s):")  # fmt: skip
        print(f"    process start to listening: {listening_seconds(uri):.2f} s")


# -- fan-out: ingest while subscribers listen ---------------------------------------------------


async def serve_subscribers(address: str, readers: int, stuck: int, batch: bool = False) -> None:
    """Holds `readers` subscriptions that read everything (resuming after a cut-off) and
    `stuck` ones that never read, each on its own connection, all asking for batches if
    `batch`; prints what the readers got (updates, not messages) when stdin closes."""
    method = "/portfolio.v1.PortfolioManager/SubscribeUpdates"
    request = pb.SubscribeUpdatesRequest(batch=batch)
    received = [0] * readers
    endings: dict[str, int] = {}

    def channel() -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(
            address, options=[("grpc.use_local_subchannel_pool", 1), ("grpc.http2.bdp_probe", 0)]
        )

    async def read(index: int) -> None:
        """Reads, and resumes after a cut-off as the client library does."""
        last = 0
        async with channel() as ch:
            subscribe = ch.unary_stream(
                method,
                request_serializer=pb.SubscribeUpdatesRequest.SerializeToString,
                response_deserializer=pb.PortfolioUpdate.FromString,
            )
            while True:
                call = subscribe(
                    pb.SubscribeUpdatesRequest(from_sequence=last + 1 if last else 0, batch=batch)
                )
                try:
                    async for update in call:
                        batched = update.kind == pb.UPDATE_KIND_BATCH
                        received[index] += len(update.batch) if batched else 1
                        last = max(last, update.sequence)
                    ending = "ended"
                except grpc.aio.AioRpcError as error:
                    ending = error.code().name
                endings[ending] = endings.get(ending, 0) + 1
                if ending != "RESOURCE_EXHAUSTED":
                    return
                await asyncio.sleep(0.1)  # the client library's first back-off

    stuck_channels = [channel() for _ in range(stuck)]
    stuck_calls: list[grpc.aio.Call] = [
        ch.unary_stream(method, request_serializer=pb.SubscribeUpdatesRequest.SerializeToString)(
            request
        )
        for ch in stuck_channels
    ]
    tasks = [asyncio.create_task(read(i)) for i in range(readers)]
    print("subscribed", file=sys.stderr, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    print(f"{sum(received)} {min(received, default=0)} {endings}", flush=True)
    for task in tasks:
        task.cancel()
    for call in stuck_calls:
        call.cancel()


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used (user + system), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def paced_acks(
    stub: pb_grpc.PortfolioManagerStub,
    rate: int,
    seconds: float,
    tag: str,
    acked: dict[str, float] | None = None,
) -> tuple[float, list[float]]:
    """One-fill batches sent at `rate` per second on one stream, without waiting for acks:
    the achieved ack rate and each fill's time to its ack (ms); `acked` gets each fill's ack
    time (perf_counter) by fill id."""
    import queue
    import threading

    count = int(rate * seconds)
    sent: dict[str, float] = {}
    requests: queue.Queue[pb.IngestRequest | None] = queue.Queue()

    def pace() -> None:
        began = time.perf_counter()
        for n in range(count):
            delay = began + n / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            batch_id = f"{tag}-{n}"
            sent[batch_id] = time.perf_counter()
            requests.put(pb.IngestRequest(batch_id=batch_id, events=[fill(n, tag)]))
        requests.put(None)

    sender = threading.Thread(target=pace, daemon=True)
    began = time.perf_counter()
    sender.start()
    samples = []
    for answer in stub.Ingest(iter(requests.get, None)):
        now = time.perf_counter()
        samples.append((now - sent[answer.batch_id]) * 1000)
        if acked is not None:
            acked.update((ack.event_id, now) for ack in answer.acks)
    elapsed = time.perf_counter() - began
    sender.join()
    return len(samples) / elapsed, samples


def fanout_figures(args: argparse.Namespace) -> None:
    """Ingest with no subscriber, with 100 unfiltered ones (10 never read), with none, with 100
    asking for batches, and with none again, in one run: the baseline is the runs without, so
    drift in the run (a growing store, other load on the machine) does not count as the
    subscribers' cost."""
    readers, stuck, rate = 90, 10, args.fanout_rate
    # With the service's default queue of 10,000 updates, at 300 fills/s (600 updates) the
    # stuck subscribers are cut off about 17 s into the paced run.
    with tempfile.TemporaryDirectory() as tmp:
        service, address = start(
            [sys.executable, "-m", "server", "--port", "0", "--store", f"lmdb://{tmp}/store",
             *args.fanout_service_args]
        )  # fmt: skip
        listeners: subprocess.Popen[str] | None = None
        try:
            with grpc.insecure_channel(address) as channel:
                stub = pb_grpc.PortfolioManagerStub(channel)
                ingest_rate(stub, list(batches(10_000, "WARM")))
                runs: dict[str, list[tuple[float, float, list[float], float, float]]] = {}
                delivered: dict[str, tuple[str, float]] = {}
                for phase, label in enumerate(("none", "100", "none", "100 batched", "none")):
                    if label != "none":
                        listeners = subprocess.Popen(
                            [sys.executable, __file__, "--serve-subscribers", address,
                             str(readers), str(stuck), str(int(label == "100 batched"))],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                        )  # fmt: skip
                        assert listeners.stderr is not None
                        listeners.stderr.readline()
                        time.sleep(2)  # every subscription registered
                    elif listeners is not None:
                        listeners_cpu = cpu_seconds(listeners.pid)
                        got, _ = listeners.communicate("", timeout=60)
                        delivered[("100", "100 batched")[phase // 2 - 1]] = (got, listeners_cpu)
                        listeners = None
                        time.sleep(2)  # every subscription gone
                    # Paced first: a burst leaves readers a backlog that would skew it.
                    began = cpu_seconds(service.pid)
                    achieved, samples = paced_acks(stub, rate, args.fanout_seconds, f"P{phase}")
                    paced_cpu = cpu_seconds(service.pid) - began
                    requests = list(batches(args.fanout_fills, f"B{phase}"))
                    began = cpu_seconds(service.pid)
                    burst = ingest_rate(stub, requests)
                    burst_cpu = (cpu_seconds(service.pid) - began) / args.fanout_fills * 1e6
                    runs.setdefault(label, []).append(
                        (burst, achieved, samples, paced_cpu / len(samples) * 1e6, burst_cpu)
                    )
        finally:
            if listeners is not None and listeners.poll() is None:
                listeners.kill()
            service.terminate()
            service.wait(10)
    figures = {
        label: (
            statistics.mean(run[0] for run in phase_runs),
            statistics.mean(run[1] for run in phase_runs),
            [sample for run in phase_runs for sample in run[2]],
            statistics.mean(run[3] for run in phase_runs),
            statistics.mean(run[4] for run in phase_runs),
        )
        for label, phase_runs in runs.items()
    }
    print(f"\nFan-out (LMDB; subscribers in another process, {readers} reading + {stuck} stuck, "
          f"unfiltered, {' '.join(args.fanout_service_args) or 'default options'}):")  # fmt: skip
    base_burst, base_achieved, base_samples, base_cpu, base_burst_cpu = figures["none"]
    print("  (no subscriber: the mean of the runs before, between and after those with them)")
    print(f"  No subscriber: ingest, batches of {BATCH}, {args.fanout_fills:,} fills: "
          f"{base_burst:,.0f} fills/s ({base_burst_cpu:,.0f} us CPU per fill); one-fill "
          f"batches at {rate}/s for "
          f"{args.fanout_seconds:.0f} s: acked {base_achieved:,.0f}/s, service CPU per fill "
          f"{base_cpu:,.0f} us (all its threads)")  # fmt: skip
    print(row("    ack, no subscriber", base_samples, None))
    for label, title in (("100", "one update per message"), ("100 batched", "batches")):
        burst, achieved, samples, cpu, burst_cpu = figures[label]
        got, listeners_cpu = delivered[label]
        print(f"  {readers + stuck} subscribers, {title}:")
        print(f"    ingest {burst:,.0f} fills/s (ratio {burst / base_burst:.2f}), {burst_cpu:,.0f} "
              f"us CPU per fill (ratio {burst_cpu / base_burst_cpu:.2f}); paced: acked "
              f"{achieved:,.0f}/s (ratio {achieved / base_achieved:.2f}), service CPU per fill "
              f"{cpu:,.0f} us (ratio {cpu / base_cpu:.2f})")  # fmt: skip
        print(row("    ack", samples, None))
        print(f"    ratio to no subscriber: p50 "
              f"{statistics.median(samples) / statistics.median(base_samples):.2f}x  "
              f"p99 {pct(samples, 99) / pct(base_samples, 99):.2f}x")  # fmt: skip
        total, least, endings = got.split(" ", 2)
        print(f"    readers got {int(total):,} updates (the least: {int(least):,}); streams "
              f"ended: {endings.strip()}; their process used {listeners_cpu:.1f} s of CPU on "
              f"the same machine")  # fmt: skip


SECTIONS = ["service", "hot-path", "restatement", "reconcile", "commits", "startup", "fanout",
            "memory", "targets", "attribution", "metrics", "traces"]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fills", type=int, default=100_000, help="fills per throughput run")
    parser.add_argument("--samples", type=int, default=2000, help="calls per latency figure")
    parser.add_argument("--commits", type=int, default=20_000, help="journal appends to time")
    parser.add_argument("--startup-fills", type=int, default=1_000_000, help="journal size")
    parser.add_argument("--memory-fills", type=int, default=1_000_000, help="fills per memory run")
    parser.add_argument("--memory-orders", type=int, default=100_000, help="ended orders to run")
    parser.add_argument(
        "--only",
        choices=SECTIONS,
        action="append", help="run only these sections (repeatable)",
    )  # fmt: skip
    parser.add_argument("--fanout-rate", type=int, default=300, help="paced one-fill batches/s")
    parser.add_argument("--fanout-seconds", type=float, default=30, help="paced ingest length")
    parser.add_argument("--fanout-fills", type=int, default=20_000, help="fills per burst run")
    parser.add_argument(
        "--fanout-service-args", nargs="*", default=[],
        help="extra service options for the fan-out section (e.g. --fanout-writes-per-second=0)",
    )  # fmt: skip
    parser.add_argument(
        "--targets-quick", action="store_true", help="targets: every size scaled down (~3 min)"
    )
    parser.add_argument("--targets-rows", type=int, help="targets: rows in all (1,000,000)")
    parser.add_argument(
        "--targets-restart-fills", type=int, help="targets: journal to restart on (5,000,000)"
    )
    parser.add_argument(
        "--attribution-quick", action="store_true", help="attribution: sizes of a smoke run"
    )
    parser.add_argument("--serve-noop", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-subscribers", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_noop:
        asyncio.run(serve_noop())
        return 0
    if args.serve_subscribers:
        address, readers, stuck, batch = args.serve_subscribers
        asyncio.run(serve_subscribers(address, int(readers), int(stuck), batch == "1"))
        return 0
    print(
        f"portfolio manager benchmark ({os.cpu_count()} cores, python "
        f"{sys.version.split()[0]}, grpcio {grpc.__version__})\n"
    )
    sections = set(args.only or SECTIONS)
    if "service" in sections:
        service_figures(
            args, "mem://", "ArcticDB in memory (--store mem://: the same code, no disk):"
        )
        with tempfile.TemporaryDirectory() as tmp:
            print()
            service_figures(
                args, f"lmdb://{tmp}/store", "Durable (LMDB; acks after the fsynced append):"
            )
    if "hot-path" in sections:
        print("\nHot path in process, per fill (10,000 fills, 7 strategies x 13 instruments):")
        print("\n".join(hot_path_steps(10_000)))
    if "restatement" in sections:
        from bench_restatement import book_size_figures, restatement_figures  # scripts/

        print("\nBooking in execution-time order, in process, per fill (one account, one "
              "instrument; ratios: in-order to the arithmetic, late to in-order):")  # fmt: skip
        print("\n".join(restatement_figures(5000)))
        print("A fill's cost against the size of its instrument's book (ratio: to 10 rows):")
        print("\n".join(book_size_figures()))
    if "reconcile" in sections:
        print("\nReconciliation in process, one account (2 strategies per instrument):")
        print("\n".join(reconciliation_figures(10_000, 50)))
    if args.commits and "commits" in sections:
        commit_figures(args.commits)
    if args.startup_fills and "startup" in sections:
        startup_figures(args.startup_fills, 10_000)
    if "fanout" in sections:
        fanout_figures(args)
    if args.memory_fills and "memory" in sections:
        from bench_memory import memory_figures  # scripts/: a fresh process per run

        print(f"\nMemory per fill in process ({args.memory_fills:,} fills, all in the correction "
              "window; before: everything kept whole, as main did; after: compact):")  # fmt: skip
        print("\n".join(memory_figures(args.memory_fills)))
    if args.memory_orders and "memory" in sections:
        from bench_memory import order_figures

        print("\nMemory per ended order in process (before: kept for good; after: "
              "--order-retention-days 1):")  # fmt: skip
        print("\n".join(order_figures(args.memory_orders)))
    if "targets" in sections:
        from bench_targets import sizes_for, targets_figures  # scripts/

        sizes = sizes_for(args.targets_quick, args.targets_rows, args.targets_restart_fills)
        print("\n".join(targets_figures(sizes)))
    if "attribution" in sections:
        from bench_attribution import FULL, QUICK, attribution_figures  # scripts/

        attribution_figures(QUICK if args.attribution_quick else FULL)
    if "metrics" in sections:
        from bench_metrics import all_figures  # scripts/

        print("\nMetrics on (--metrics-port) and off, the same service, rounds interleaved:")
        print("\n".join(all_figures(args.fills, args.samples)))
    if "traces" in sections:
        from bench_traces import all_figures as trace_figures  # scripts/

        print("\nTraces on (--trace-export otlp) and off, both pushing metrics by OTLP, rounds "
              "interleaved:")  # fmt: skip
        print("\n".join(trace_figures(args.fills, args.samples)))
    return 0


class _Stream:
    """One long-lived Ingest stream driven one request at a time."""

    def __init__(self, stub: pb_grpc.PortfolioManagerStub) -> None:
        import queue

        self._requests: queue.Queue[pb.IngestRequest] = queue.Queue()
        self._responses = stub.Ingest(iter(self._requests.get, None))

    def send(self, request: pb.IngestRequest) -> Iterator[pb.IngestResponse]:
        self._requests.put(request)
        yield next(self._responses)


if __name__ == "__main__":
    raise SystemExit(main())
