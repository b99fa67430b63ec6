"""The attribution benchmark (scripts/bench_attribution.py) still runs: its quick sizes, through
`scripts/benchmark.py --only attribution` as `scripts/bench` runs it, print every figure.
Nothing here judges a timing (the machine running the suite is not the one benchmarked)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIGURE = r"p50 +[\d.]+ (us|ms) +p99 +[\d.]+ (us|ms) .* ratio p50 [\d.]+x"


@pytest.mark.timeout(90)
def test_quick_run_prints_every_figure() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "protos")])}
    done = subprocess.run(
        [sys.executable, "scripts/benchmark.py", "--only", "attribution", "--attribution-quick"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=85,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for name in (
        "Ledger.record, attribution as built",
        "Performance.booked alone",
        "GetRiskMetrics, the account",
        "GetRiskMetrics, one strategy",
        "GetPerformance, the account",
        "GetPerformance, one strategy",
        "GetPosition, GetRiskMetrics(account) meanwhile",
        "one close (Ledger.record of its DayClose)",
    ):
        found = [line for line in out.splitlines() if name in line]
        assert found, f"no {name!r} row in:\n{out}"
        if name != "Performance.booked alone":
            assert re.search(FIGURE, found[0]), found[0]
    assert re.search(r"difference, fill by fill +p50 +[-+][\d.]+ us", out), out
    assert re.search(r"100 strategies, \d+ closes in the lookback, 4,950 strategy pairs", out), out
