"""The crash test: nothing acknowledged is ever lost, nothing is counted twice.

The service runs as a subprocess on a real LMDB store; a client streams thousands of fills and
the service is killed with SIGKILL at a random point, several rounds. After each restart the
client re-sends everything it has no ack for, and some it has. At the end the service's state
must equal a reference engine fed each fill exactly once, in the service's sequence order, and
the journal must hold every acked fill exactly once.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from decimal import Decimal

import arcticdb as adb
import grpc
import pandas as pd

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.api.wire import fill_from_proto
from server.domain.ledger import Ledger
from server.domain.position import PositionKey
from tests.api.protocol import pb_fill
from tests.service_process import start_service

ROUNDS = 5
FILLS = 3000
BATCH = 50
BROKEN = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
)


def start_crashable(store: str) -> tuple[subprocess.Popen[str], str]:
    process, address = start_service("--store", store, "--checkpoint-every", "700")
    # Keep draining stderr so the service never blocks on a full pipe.
    threading.Thread(target=process.stderr.read, daemon=True).start()  # type: ignore[union-attr]
    return process, address


def stream(address: str, events: list[pb.ExecutionEvent], acked: dict[str, int]) -> None:
    """Sends events in batches on one stream, recording every ack until the stream breaks."""
    batches = [
        pb.IngestRequest(batch_id=str(i), events=events[i : i + BATCH])
        for i in range(0, len(events), BATCH)
    ]
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.PortfolioManagerStub(channel)
        try:
            for response in stub.Ingest(iter(batches), timeout=60):
                for ack in response.acks:
                    assert ack.result in (pb.EVENT_RESULT_ACCEPTED, pb.EVENT_RESULT_DUPLICATE)
                    previous = acked.setdefault(ack.event_id, ack.sequence)
                    assert previous == ack.sequence, "an event's sequence changed"
        except grpc.RpcError as error:
            if error.code() not in BROKEN:  # the kill breaks the stream; nothing else may
                raise


def fills(rng: random.Random) -> list[pb.ExecutionEvent]:
    return [
        pb_fill(
            rng.choice(["BUY", "SELL"]),
            rng.randint(1, 500),
            f"{rng.randint(50, 150)}.{rng.randint(0, 99):02d}",
            account=rng.choice(["U1", "U2"]),
            strategy=rng.choice(["alpha", "beta", "gamma"]),
            instrument=rng.choice(["AAPL", "MSFT", "ES"]),
            commission=f"{rng.randint(0, 200) / 100}",
            fill_id=f"crash-{i}",
        )
        for i in range(FILLS)
    ]


def test_sigkill_at_random_points_loses_no_acked_fill_and_counts_each_once(tmp_path):
    rng = random.Random(int(os.environ.get("CRASH_SEED", time.time_ns())))
    store = f"lmdb://{tmp_path}/store"
    events = fills(rng)
    by_id = {e.fill.fill_id: e for e in events}
    acked: dict[str, int] = {}

    for _ in range(ROUNDS):
        process, address = start_crashable(store)
        unacked = [e for e in events if e.fill.fill_id not in acked]
        again = rng.sample(sorted(acked), min(len(acked), 200))
        to_send = [by_id[i] for i in again] + unacked
        rng.shuffle(to_send)
        sender = threading.Thread(target=stream, args=(address, to_send, acked))
        sender.start()
        time.sleep(rng.uniform(0.05, 1.5))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        sender.join(timeout=60)
        assert not sender.is_alive()

    process, address = start_crashable(store)
    try:
        resend = [e for e in events if e.fill.fill_id not in acked]
        resend += [by_id[i] for i in rng.sample(sorted(acked), min(len(acked), 300))]
        stream(address, resend, acked)
        assert len(acked) == FILLS
        assert sorted(acked.values()) == list(range(1, FILLS + 1))  # gap-free, each once

        reference = Ledger()
        for fill_id in sorted(acked, key=acked.__getitem__):
            reference.record(fill_from_proto(by_id[fill_id].fill))
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            for level in (pb.POSITION_LEVEL_STRATEGY, pb.POSITION_LEVEL_ACCOUNT):
                rows = stub.ListPositions(
                    pb.ListPositionsRequest(level=level, include_flat=True, page_size=1000)
                ).positions
                assert len(rows) == len(
                    reference.book.strategy_rows if level == 1 else reference.book.account_rows
                )
                for row in rows:
                    key = PositionKey(row.account_id, row.strategy_id, row.instrument_id)
                    expected = reference.book.view(reference.book.get(key))
                    assert Decimal(row.quantity) == expected.quantity, key
                    assert Decimal(row.cost_basis) == expected.cost_basis, key
                    assert Decimal(row.realized_pnl) == expected.realized_pnl, key
                    assert Decimal(row.unrealized_pnl) == expected.unrealized_pnl, key
                    assert Decimal(row.fees) == expected.fees, key
                    assert row.trade_count == expected.trade_count, key
                    assert row.last_sequence == expected.last_sequence, key
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)

    arctic = adb.Arctic(store)
    journal = arctic.get_library("journal").read("events").data
    assert sorted(journal["event_id"]) == sorted(acked)
    assert list(journal["sequence"]) == list(range(1, FILLS + 1))
    # The analysts' fills caught up after the kills: every acked fill, once, exactly.
    fills_view = arctic.get_library("fills")
    per_account = [fills_view.read(account).data for account in ("U1", "U2")]
    assert all(rows.index.is_unique and rows.index.is_monotonic_increasing for rows in per_account)
    rows = pd.concat(per_account)
    assert sorted(rows["fill_id"]) == sorted(acked)
    for row in rows.itertuples():
        assert acked[row.fill_id] == row.sequence
        assert Decimal(by_id[row.fill_id].fill.price) == Decimal(row.price_exact)
