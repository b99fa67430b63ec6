"""The flat-cost line of scripts/bench_targets.py (a fill's cost in a big book against a small
one) still runs: two books, each in its own process, take turns round after round, and the
line gives the median of the rounds' ratios with their spread. Small sizes; nothing here
judges a timing (the machine running the suite is not the one benchmarked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "protos")]

import bench_targets  # noqa: E402  (scripts/)


@pytest.mark.timeout(120)
def test_two_books_take_turns_and_every_round_is_reported() -> None:
    rounds = bench_targets.book_rounds(few_rows=1000, many_rows=3000, rounds=4, samples=50)
    assert len(rounds.few) == len(rounds.many) == 4
    assert rounds.few_info["rows"] == 1001  # 1,000 strategy rows and their account's row
    assert rounds.many_info["rows"] == 3003
    for figures in rounds.few + rounds.many:
        assert figures["p50_us"] > 0 and figures["cpu_us"] > 0
        assert figures["gen2"] >= 0
    ratios = rounds.ratios("p50_us")
    pairs = zip(rounds.few, rounds.many, strict=True)
    assert ratios == [many["p50_us"] / few["p50_us"] for few, many in pairs]
    assert min(ratios) <= rounds.ratio("p50_us") <= max(ratios)
    assert rounds.spread("cpu_us").startswith("cpu_us ratio median ")


@pytest.mark.timeout(120)
def test_one_child_alone_prints_one_round() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "protos")])}
    done = subprocess.run(
        [sys.executable, "scripts/bench_targets.py", "--book-child", "2000", "100"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=110,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.splitlines()[-1])
    assert figures["rows"] == 2002
    assert figures["bytes_per_row"] > 0 and figures["p50_us"] > 0
