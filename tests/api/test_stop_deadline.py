"""A stop cannot be held hostage by a blocked event loop: the stop's limit (grace plus
`STOP_MARGIN_SECONDS`) is kept by a thread, started by the signal's Python handler, so the
process exits non-zero within it even while the loop is busy in one long callback (as a day's
close of a million rows kept it for about a minute), and the next start recovers everything
acknowledged from the journal."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import grpc

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.app import STOP_MARGIN_SECONDS
from tests.api.protocol import acks, pb_fill
from tests.service_process import start_service

# The service, with a thread that blocks its event loop (a Python loop of short sleeps, so
# signal handlers still run in the main thread, as they do between a long close's bytecodes)
# once the file named by the last argument exists.
BLOCKING_SERVICE = """
import asyncio, os, sys, threading, time
from server import app

trigger, real_start = sys.argv.pop(), app.start_server

def block() -> None:
    for _ in range(2400):  # 120 s
        time.sleep(0.05)

async def start_server(config):
    running = await real_start(config)
    loop = asyncio.get_running_loop()

    def watch() -> None:
        while not os.path.exists(trigger):
            time.sleep(0.02)
        loop.call_soon_threadsafe(block)

    threading.Thread(target=watch, daemon=True).start()
    return running

app.start_server = start_server
sys.exit(app.main(sys.argv[1:]))
"""
GRACE = 0.5


def _start_blocking(trigger: Path, store: str) -> tuple[subprocess.Popen[str], str]:
    return start_service(
        "--store", store, "--grace-seconds", str(GRACE), str(trigger),  # the trigger: last
        program=("-c", BLOCKING_SERVICE),
    )  # fmt: skip


def test_a_stop_while_the_loop_is_blocked_ends_within_its_limit_and_loses_nothing(tmp_path):
    store = f"lmdb://{tmp_path}/store"
    trigger = tmp_path / "block"
    process, address = _start_blocking(trigger, store)
    try:
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            for n in range(3):
                (ack,) = acks(stub, pb_fill("BUY", 1, 10 + n, fill_id=f"F{n}"))
                assert ack.result == pb.EVENT_RESULT_ACCEPTED
        trigger.touch()
        time.sleep(0.5)  # the loop is blocked now
        process.terminate()
        started = time.monotonic()
        code = process.wait(timeout=GRACE + STOP_MARGIN_SECONDS + 10)
        took = time.monotonic() - started
        assert process.stderr is not None
        rest = process.stderr.read()
        assert code == 1
        assert f"shutdown did not finish within {GRACE + STOP_MARGIN_SECONDS:.1f}s" in rest
        assert took < GRACE + STOP_MARGIN_SECONDS + 3.0
    finally:
        process.kill()
    again, _ = start_service("--store", store)
    try:
        again.terminate()
        assert again.wait(timeout=30) == 0
        assert again.stderr is not None
        assert "stopped at sequence 3" in again.stderr.read()
    finally:
        again.kill()
