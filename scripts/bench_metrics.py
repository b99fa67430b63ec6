"""What metrics cost the write path: the same service with `--metrics-port` and without, in
the same run, rounds interleaved (server/telemetry.py).

Ingest throughput (bidi stream, batches of 100) shows the per-fill cost; one-fill batches show
the per-batch cost (a group commit, its ack latency, the RPC's duration); GetPosition shows
the per-call cost of the RPC interceptor. Ratios are metrics-on to metrics-off.
"""

from __future__ import annotations

import socket
import statistics
import sys
import tempfile
import urllib.request
from collections.abc import Callable

import grpc
from benchmark import _Stream, batches, fill, ingest_rate, latencies, pct, start  # scripts/

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _compare(name: str, on: list[float], off: list[float], unit: str = "ms") -> str:
    p50_on, p50_off = statistics.median(on), statistics.median(off)
    return (
        f"    {name:<28} on p50 {p50_on:7.3f} p99 {pct(on, 99):7.3f} {unit}   "
        f"off p50 {p50_off:7.3f} p99 {pct(off, 99):7.3f} {unit}   ratio(p50) {p50_on / p50_off:.3f}"
    )


def on_off_stores(store: str) -> tuple[str, str]:
    """The two services' stores: two LMDB folders, or mem:// (one per process anyway)."""
    if store == "mem://":
        return store, store
    return f"{store}-on", f"{store}-off"


def on_off_figures(on_address: str, off_address: str, fills: int, samples: int) -> list[str]:
    """One service with a feature against the same without, rounds interleaved so that drift
    on the machine hits both: ingest throughput (batches of 100: the per-fill cost), one-fill
    batches to their ack (the per-batch cost), GetPosition (the per-call cost)."""
    lines = []
    with (
        grpc.insecure_channel(on_address) as channel_on,
        grpc.insecure_channel(off_address) as channel_off,
    ):
        stub_on = pb_grpc.PortfolioManagerStub(channel_on)
        stub_off = pb_grpc.PortfolioManagerStub(channel_off)
        warm = list(batches(10_000, "WARM"))
        ingest_rate(stub_on, warm), ingest_rate(stub_off, warm)
        rates_on, rates_off = [], []
        for round_ in range(5):
            requests = list(batches(fills, f"R{round_}"))
            rates_off.append(ingest_rate(stub_off, requests))
            rates_on.append(ingest_rate(stub_on, requests))
        best_on, best_off = max(rates_on), max(rates_off)
        median_on, median_off = statistics.median(rates_on), statistics.median(rates_off)
        per_fill_us = (1 / median_on - 1 / median_off) * 1e6
        lines.append(
            f"    Ingest {fills:,} fills, batches of 100: on {best_on:,.0f} fills/s   "
            f"off {best_off:,.0f} fills/s   ratio {best_on / best_off:.3f} (best of 5; "
            f"medians {median_on / median_off:.3f}; {per_fill_us:+.2f} us a fill)"
        )
        counter = iter(range(10**9))

        def one_fill(stub: pb_grpc.PortfolioManagerStub) -> Callable[[], object]:
            stream = _Stream(stub)

            def send() -> object:
                return next(stream.send(pb.IngestRequest(events=[fill(next(counter), "L")])))

            return send

        send_on, send_off = one_fill(stub_on), one_fill(stub_off)
        acks_on, acks_off = [], []
        for _ in range(4):
            acks_off += latencies(send_off, samples // 4)
            acks_on += latencies(send_on, samples // 4)
        lines.append(_compare("one-fill batch to its ack", acks_on, acks_off))
        get = pb.GetPositionRequest(account_id="L", strategy_id="S1", instrument_id="AAPL")
        gets_on, gets_off = [], []
        for _ in range(4):
            gets_off += latencies(lambda: stub_off.GetPosition(get), samples // 4)
            gets_on += latencies(lambda: stub_on.GetPosition(get), samples // 4)
        lines.append(_compare("GetPosition", gets_on, gets_off))
    return lines


def metrics_figures(fills: int, samples: int, store: str, label: str) -> list[str]:
    port = _free_port()
    command = [sys.executable, "-m", "server", "--port", "0"]
    on_store, off_store = on_off_stores(store)
    on, on_address = start([*command, "--store", on_store, "--metrics-port", str(port)])
    off, off_address = start([*command, "--store", off_store])
    lines = [label]
    try:
        lines += on_off_figures(on_address, off_address, fills, samples)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        counted = [line for line in text.splitlines() if line.startswith("portfolio_events_total")]
        lines.append(f"    scraped: {len(text):,} bytes; {counted[0].split('}')[-1].strip()} fills")
    finally:
        for process in (on, off):
            process.terminate()
            process.wait(10)
    return lines


def all_figures(fills: int, samples: int) -> list[str]:
    lines = metrics_figures(fills, samples, "mem://", "In memory (mem://: CPU alone):")
    with tempfile.TemporaryDirectory() as tmp:
        lines += metrics_figures(
            fills, samples, f"lmdb://{tmp}/store", "Durable (LMDB, acks after the fsync):"
        )
    return lines


if __name__ == "__main__":
    print("\n".join(all_figures(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000, 2000)))
