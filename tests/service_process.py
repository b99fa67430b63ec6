"""The service as an operator starts it: `python -m server` in a subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# No trading-day closes, as in tests/conftest.py: a close journaled at a restart would add
# events between "before" and "after" (a test that wants them passes --session-days).
ENV = {
    **os.environ,
    "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'protos'}",
    "PORTFOLIO_SESSION_DAYS": "none",
}


def run_service(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=ROOT, env=ENV, capture_output=True, text=True, **kwargs,  # type: ignore[call-overload]
    )  # fmt: skip


def start_service(
    *args: str, program: tuple[str, ...] = ("-m", "server")
) -> tuple[subprocess.Popen[str], str]:
    """Starts the service on a free port and returns it with its address once it listens.
    Give it a `--store` in a temporary folder. Its stderr is left to the caller to read.
    `program`: what the interpreter runs (a test's own wrapper around server.app, say)."""
    process = subprocess.Popen(
        [sys.executable, *program, "--port", "0", *args],
        cwd=ROOT, env=ENV, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stderr is not None
    for line in process.stderr:
        found = re.search(r"listening on (127\.0\.0\.1:\d+)", line)
        if found:
            return process, found.group(1)
    raise AssertionError(f"the service did not start (exit {process.wait()})")
