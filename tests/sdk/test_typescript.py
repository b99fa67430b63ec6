"""The TypeScript client (client/typescript/) against the real service, run by Node.

The service starts as an operator starts it (LMDB in a tmp folder); `npm ci` runs only when
node_modules is missing or was installed from another lock file; the Node tests get the
service's address in PORTFOLIO_TARGET. A failing Node test fails here with Node's output.
Three services, one per mode: open (with the paper broker, so Reconcile has something to
answer), guarded by bearer tokens, and mutual TLS (certificates made here, their paths told to
Node in PORTFOLIO_TLS_*).
"""

from __future__ import annotations

import collections
import concurrent.futures
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
from tests.api.test_tls import issue, pem
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
def _running(*services: tuple[str, ...]) -> Iterator[list[str]]:
    """The services started with these arguments (at once: each start takes seconds), their
    addresses, stopped (and checked) at the end."""
    with concurrent.futures.ThreadPoolExecutor(len(services)) as pool:
        starts = [pool.submit(start_service, *args) for args in services]
    started = [start.result() for start in starts if start.exception() is None]
    # Drain each service's log so it never blocks on a full pipe; keep its end for a failure.
    tails: list[collections.deque[str]] = []
    readers = []
    for process, _ in started:
        tails.append(collections.deque(maxlen=50))
        assert process.stderr is not None
        readers.append(
            threading.Thread(target=tails[-1].extend, args=(process.stderr,), daemon=True)
        )
        readers[-1].start()
    try:
        for start in starts:
            start.result()  # a service that did not start fails here, the others are stopped
        yield [address for _, address in started]
    finally:
        for process, _ in started:
            process.send_signal(signal.SIGTERM)
        for (process, _), reader in zip(started, readers, strict=True):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            reader.join(timeout=5)
    for (process, _), tail in zip(started, tails, strict=True):
        assert process.returncode == 0, "a service failed:\n" + "".join(tail)


def _certificates(folder: Path) -> dict[str, Path]:
    """A CA, the service's certificate (127.0.0.1 and localhost), a client's it signed, and a
    stranger's signed by another CA: PEM files, by name."""
    ca = issue("test CA")
    issued = {
        "ca": pem(ca),
        "server": pem(issue("localhost", ca)),
        "client": pem(issue("ts-sdk", ca)),
        "stranger": pem(issue("ts-sdk", issue("another CA"))),
    }
    files: dict[str, Path] = {}
    for name, pair in issued.items():
        files[name] = folder / f"{name}.pem"
        files[name].write_bytes(pair.certificate)
        files[f"{name}-key"] = folder / f"{name}.key"
        files[f"{name}-key"].write_bytes(pair.key)
    return files


@pytest.fixture(scope="module")
def services(tmp_path_factory) -> Iterator[dict[str, str]]:
    """The Node tests' environment: an open service (the paper broker reconciles live accounts
    on demand), one that wants a bearer token, and one that wants a client certificate."""
    folder = tmp_path_factory.mktemp("ts-sdk")
    auth_file = folder / "principals.json"
    principal = {"name": "ts-sdk", "role": "reader", "accounts": "*"}
    auth_file.write_text(
        json.dumps({"principals": [{**principal, "token_sha256": token_hash(TOKEN)}]})
    )
    pki = _certificates(folder)
    # A small replay buffer, so a Node test can outrun it (ResyncRequired) with a few hundred
    # updates; the others replay far less.
    with _running(
        ("--store", f"lmdb://{folder}/open", "--replay-capacity", str(REPLAY_CAPACITY),
         "--broker", "paper", "--reconcile-seconds", "0"),
        ("--store", f"lmdb://{folder}/guarded", "--auth-file", str(auth_file)),
        ("--store", f"lmdb://{folder}/mtls", "--tls-cert", str(pki["server"]),
         "--tls-key", str(pki["server-key"]), "--tls-client-ca", str(pki["ca"])),
    ) as (address, guarded, mutual):  # fmt: skip
        yield {
            "PORTFOLIO_TARGET": address,
            "PORTFOLIO_REPLAY_CAPACITY": str(REPLAY_CAPACITY),
            "PORTFOLIO_AUTH_TARGET": guarded,
            "PORTFOLIO_TOKEN": TOKEN,
            "PORTFOLIO_TLS_TARGET": mutual,
            "PORTFOLIO_TLS_CA": str(pki["ca"]),
            "PORTFOLIO_TLS_CERT": str(pki["client"]),
            "PORTFOLIO_TLS_KEY": str(pki["client-key"]),
            "PORTFOLIO_TLS_STRANGER_CERT": str(pki["stranger"]),
            "PORTFOLIO_TLS_STRANGER_KEY": str(pki["stranger-key"]),
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
    """ingest with a resend after a killed stream, a resumed subscription (and ResyncRequired
    past the replay buffer), an error with its BadRequest, the refusal of a number, deadlines,
    a bearer token, TLS with a client certificate (UNAVAILABLE without one); and every RPC
    and Query branch on a small book, checked against the generated service descriptor."""
    run = _npm(node_package, "test", **services)
    assert run.returncode == 0, f"Node tests failed:\n{run.stdout[-20000:]}\n{run.stderr[-5000:]}"
    assert "# fail 0" in run.stdout and "# cancelled 0" in run.stdout, run.stdout
