"""Fan-out shares a write budget: subscribers never get more than it, ingest never waits on it,
and each subscriber still sees every update once, in sequence order."""

import contextlib
import threading
import time

import grpc

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from tests.api.protocol import acks, pb_fill
from tests.conftest import start_test_server

RATE = 100  # writes per second, all subscribers together


def test_subscribers_share_the_write_budget_and_ingest_does_not_wait_for_it():
    server = start_test_server(fanout_writes_per_second=RATE, heartbeat_seconds=30)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            acks(stub, *[pb_fill("BUY", 1, 1) for _ in range(60)])  # 120 updates to replay
            received: list[list[int]] = [[], []]
            began = time.monotonic()
            calls = [
                stub.SubscribeUpdates(pb.SubscribeUpdatesRequest(from_sequence=1), timeout=30)
                for _ in received
            ]

            def read(call, into):
                with contextlib.suppress(grpc.RpcError):  # cancelled at the end
                    into.extend(update.sequence for update in call)

            readers = [
                threading.Thread(target=read, args=(call, into), daemon=True)
                for call, into in zip(calls, received, strict=True)
            ]
            for reader in readers:
                reader.start()
            # Ingest is answered at once although the subscribers' writes wait on the budget.
            answers = acks(stub, *[pb_fill("BUY", 1, 1) for _ in range(20)])
            assert {a.result for a in answers} == {pb.EVENT_RESULT_ACCEPTED}
            time.sleep(0.5)
            elapsed = time.monotonic() - began
            sent = sum(len(into) for into in received)
            assert sent <= 2 + RATE * elapsed + 2  # the burst, the rate, rounding
            # Everything arrives in the end, once and in order, on each stream.
            deadline = time.monotonic() + 15
            while min(len(into) for into in received) < 160 and time.monotonic() < deadline:
                time.sleep(0.1)
            for call in calls:
                call.cancel()
            for into in received:
                assert len(into) == 160
                assert into == sorted(into)
                assert sorted(set(into)) == list(range(1, 81))
    finally:
        server.stop()
