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
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "protos")]

from portfolio.v1 import portfolio_pb2 as pb  # noqa: E402
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc  # noqa: E402
from server.application.subscriptions import SubscriptionFilter  # noqa: E402

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
    from server.api.wire import event_from_proto
    from server.app import build_service
    from server.config import ServiceConfig

    events = [
        fill(
            n,
            "STEPS",
            strategy=f"S{n % 7}",
            instrument=f"I{n % 13}",
            side=pb.SIDE_BUY if n % 3 else pb.SIDE_SELL,
        )
        for n in range(count)
    ]
    wire = [
        pb.IngestRequest(events=events[i : i + BATCH]).SerializeToString()
        for i in range(0, count, BATCH)
    ]
    service = build_service(ServiceConfig(replay_capacity=4 * count))

    began = time.perf_counter_ns()
    parsed_batches = [pb.IngestRequest.FromString(data) for data in wire]
    t_parse = time.perf_counter_ns() - began
    began = time.perf_counter_ns()
    domain = [[event_from_proto(e) for e in batch.events] for batch in parsed_batches]
    t_convert = time.perf_counter_ns() - began
    began = time.perf_counter_ns()
    for batch in domain:
        service.ingest(batch)
    t_apply = time.perf_counter_ns() - began
    replay, _subscriber = service.subscribe(SubscriptionFilter(), 1)
    began = time.perf_counter_ns()
    for item in replay:
        item.payload  # noqa: B018 (encodes, once, for every subscriber)
    t_encode = time.perf_counter_ns() - began
    per = lambda ns: f"{ns / count / 1000:7.2f} us/fill"  # noqa: E731
    return [
        f"  protobuf parse (in batches of {BATCH})      {per(t_parse)}",
        f"  validate + convert to domain          {per(t_convert)}",
        f"  dedup + sequence + apply + publish    {per(t_apply)}",
        f"  total before the ack                  {per(t_parse + t_convert + t_apply)}",
        f"  encode 2 updates, once, if subscribed {per(t_encode)}",
    ]


# -- main --------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fills", type=int, default=100_000, help="fills per throughput run")
    parser.add_argument("--samples", type=int, default=2000, help="calls per latency figure")
    parser.add_argument("--serve-noop", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_noop:
        asyncio.run(serve_noop())
        return 0

    service, service_address = start([sys.executable, "-m", "server", "--port", "0"])
    noop, noop_address = start([sys.executable, __file__, "--serve-noop"])
    try:
        with (
            grpc.insecure_channel(service_address) as channel_s,
            grpc.insecure_channel(noop_address) as channel_n,
        ):
            svc, base = (
                pb_grpc.PortfolioManagerStub(channel_s),
                pb_grpc.PortfolioManagerStub(channel_n),
            )
            print(
                f"portfolio manager benchmark ({os.cpu_count()} cores, python "
                f"{sys.version.split()[0]}, grpcio {grpc.__version__})\n"
            )

            print(f"Ingest, bidi stream, {args.fills:,} fills in batches of {BATCH}:")
            warm = list(batches(10_000, "WARM"))
            ingest_rate(svc, warm), ingest_rate(base, warm)
            runs_s, runs_n = [], []
            for round_ in range(3):
                requests = list(batches(args.fills, f"R{round_}"))
                runs_n.append(ingest_rate(base, requests))
                runs_s.append(ingest_rate(svc, requests))
            best_s, best_n = max(runs_s), max(runs_n)
            print(
                f"  service {best_s:>10,.0f} fills/s   no-op {best_n:>10,.0f} fills/s   "
                f"ratio {best_s / best_n:.2f} (best of 3)\n"
            )

            print("Fill to updated state (one-fill batch, time to its ack):")
            counter = iter(range(10**9))

            def one_fill(stub: pb_grpc.PortfolioManagerStub) -> Callable[[], object]:
                def send() -> object:
                    request = pb.IngestRequest(events=[fill(next(counter), "LAT")])
                    return next(stream.send(request))

                stream = _Stream(stub)
                return send

            print(
                row(
                    "  ack",
                    latencies(one_fill(svc), args.samples),
                    latencies(one_fill(base), args.samples),
                )
            )

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
                f"\nQueries, sequential unary calls, book of {rows:,} position rows "
                f"({summary.as_of_sequence:,} events):"
            )
            get = pb.GetPositionRequest(account_id="BIG", strategy_id="S42", instrument_id="I42")
            baseline = latencies(lambda: base.GetPosition(get), args.samples)
            print(
                row(
                    "  GetPosition", latencies(lambda: svc.GetPosition(get), args.samples), baseline
                )
            )
            summary = pb.GetPortfolioSummaryRequest(account_id="BIG")
            print(
                row(
                    "  GetPortfolioSummary (100 strats)",
                    latencies(lambda: svc.GetPortfolioSummary(summary), args.samples // 4),
                    baseline,
                )
            )
            print("\nHot path in process, per fill (10,000 fills, 7 strategies x 13 instruments):")
            print("\n".join(hot_path_steps(10_000)))
    finally:
        service.terminate()
        noop.terminate()
        service.wait(10)
        noop.wait(10)
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
