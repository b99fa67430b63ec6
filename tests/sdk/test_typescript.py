"""The TypeScript client (client/typescript/) against the real service, run by Node.

The service starts as an operator starts it (LMDB in a tmp folder); `npm ci` runs only when
node_modules is missing or was installed from another lock file; the Node tests get the
service's address in PORTFOLIO_TARGET. A failing Node test fails here with Node's output.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.auth_config import token_hash
from tests.service_process import ROOT, start_service

PACKAGE = ROOT / "client" / "typescript"
REPLAY_CAPACITY = 200
TOKEN = "ts-sdk-test-token"


def _generator_script():
    spec = importlib.util.spec_from_file_location(
        "generate_protos", ROOT / "scripts" / "generate_protos.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def node_package() -> Path:
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    assert not missing, (
        f"the TypeScript client's tests need Node.js 20+ and npm: {missing} not found"
    )
    _generator_script().ensure_node_modules()
    return PACKAGE


@contextlib.contextmanager
def _running(*args: str) -> Iterator[str]:
    """The service started with `args`, its address, stopped (and checked) at the end."""
    process, address = start_service(*args)
    # Drain the service's log so it never blocks on a full pipe; keep its end for a failure.
    tail: collections.deque[str] = collections.deque(maxlen=50)
    assert process.stderr is not None
    reader = threading.Thread(target=tail.extend, args=(process.stderr,), daemon=True)
    reader.start()
    try:
        yield address
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(timeout=5)
    assert process.returncode == 0, "the service failed:\n" + "".join(tail)


@pytest.fixture(scope="module")
def services(tmp_path_factory) -> Iterator[dict[str, str]]:
    """The Node tests' environment: an open service, and one that wants a bearer token."""
    folder = tmp_path_factory.mktemp("ts-sdk")
    auth_file = folder / "principals.json"
    principal = {"name": "ts-sdk", "role": "reader", "accounts": "*"}
    auth_file.write_text(
        json.dumps({"principals": [{**principal, "token_sha256": token_hash(TOKEN)}]})
    )
    # A small replay buffer, so a Node test can outrun it (ResyncRequired) with a few hundred
    # updates; the others replay far less.
    with (
        _running(
            "--store", f"lmdb://{folder}/open", "--replay-capacity", str(REPLAY_CAPACITY)
        ) as address,
        _running("--store", f"lmdb://{folder}/guarded", "--auth-file", str(auth_file)) as guarded,
    ):
        yield {
            "PORTFOLIO_TARGET": address,
            "PORTFOLIO_REPLAY_CAPACITY": str(REPLAY_CAPACITY),
            "PORTFOLIO_AUTH_TARGET": guarded,
            "PORTFOLIO_TOKEN": TOKEN,
        }


def _npm(package: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **env, "NO_COLOR": "1"}
    command = ["npm", *args]
    try:
        return subprocess.run(
            command, cwd=package, env=env, capture_output=True, text=True, timeout=100
        )
    except subprocess.TimeoutExpired as timeout:
        output = [
            part.decode() if isinstance(part, bytes) else part or ""
            for part in (timeout.stdout, timeout.stderr)
        ]
        pytest.fail(f"{' '.join(command)} did not finish in 100 s:\n" + "\n".join(output))


def test_the_client_compiles_under_tsc_strict(node_package):
    built = _npm(node_package, "run", "build")
    assert built.returncode == 0, f"tsc --strict failed:\n{built.stdout}\n{built.stderr}"


def test_the_node_tests_pass_against_the_service(node_package, services):
    """ingest with a resend after a killed stream, GetPosition and a Query branch, a resumed
    subscription (and ResyncRequired past the replay buffer), an error with its BadRequest, the
    refusal of a number, deadlines, a bearer token."""
    run = _npm(node_package, "test", **services)
    assert run.returncode == 0, f"Node tests failed:\n{run.stdout[-20000:]}\n{run.stderr[-5000:]}"
    assert "# fail 0" in run.stdout and "# cancelled 0" in run.stdout, run.stdout
