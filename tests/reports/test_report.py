"""scripts/report end to end: a real service on 127.0.0.1 with a week of closes on LMDB, the
report drawn from the running service and from the store it wrote, figures by hand.

The week (tests/api/test_performance_and_risk.py): S1 holds 10 AAPL bought at 100 (fee 1), S2
one MSFT at 100; the closes make S1's days 99, -50, 30, -80, 120 and S2's 1, 2, -1, 2, -1, so
the account's are 100, -48, 29, -78, 119 (total 122) and its curve 100, 52, 81, 3, 122.
"""

from __future__ import annotations

import asyncio
import io
import math
import os
import re
import socket
import statistics
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import grpc
import pytest

from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from reports.__main__ import main
from tests.api.protocol import acks, pb_fill
from tests.api.test_performance_and_risk import S1_DAYS, S2_DAYS, close, journal
from tests.conftest import start_test_server

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT_DAYS = [a + b for a, b in zip([S1_DAYS[0] - 1, *S1_DAYS[1:]], S2_DAYS, strict=True)]
PICTURES = ("equity", "daily", "attribution", "exposure")


def run_program(*arguments: str) -> subprocess.CompletedProcess[str]:
    """`python -m reports` as its own process: once, for the service's report."""
    environment = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'protos'}"}
    return subprocess.run(
        [sys.executable, "-m", "reports", *arguments],
        capture_output=True, text=True, env=environment, timeout=120, check=False,
    )  # fmt: skip


def run_report(*arguments: str) -> subprocess.CompletedProcess[str]:
    """The command's `main` in this process: as a program, its imports (pandas, ArcticDB,
    matplotlib) cost about 2.5 s a run, and the arguments' tests alone were ten runs."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(arguments))
        except SystemExit as stop:  # argparse's errors
            code = int(stop.code or 0)
    return subprocess.CompletedProcess(list(arguments), code, out.getvalue(), err.getvalue())


async def record_in_store(server):
    """What the day closer does after journaling a close: the account's latest close to the
    `pnl` library (the closes here are journaled directly, as the API tests do)."""
    service = server.running.service
    days = service.ledger.pnl.latest_rows("A1")
    written = await asyncio.get_running_loop().run_in_executor(
        service.writes.views_executor, server.running.store.record_pnl, days, False
    )
    assert written == ["A1"]


def figures(page: str) -> dict[str, str]:
    return dict(re.findall(r'<td class="n" id="([^"]+)">([^<]*)</td>', page))


AFTER_THE_WEEK = ("--from-date", "2026-02-01")
RANGE = ("--from-date", "2026-01-07", "--to-date", "2026-01-08")


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """(service report folder, store report folder, store URI, service runs): the service's
    reports while it runs (also of two days, and of an unknown account), the store's after it
    stopped (every close written)."""
    folder = tmp_path_factory.mktemp("report")
    store = f"lmdb://{folder / 'lmdb'}"
    server = start_test_server(store=store)
    try:
        with grpc.insecure_channel(server.address) as channel:
            acks(
                pb_grpc.PortfolioManagerStub(channel),
                pb_fill("BUY", 10, 100, strategy="S1", venue="ARCA", commission=1),
                pb_fill("BUY", 1, 100, strategy="S2", instrument="MSFT", venue="ISLAND"),
            )
        for day in range(5):
            journal(server, close(day))
            server.call(record_in_store(server))
        service = ("--service", server.address)
        done = run_program("--account", "A1", *service, "--out", str(folder / "service"))
        assert done.returncode == 0, done.stderr
        runs = {
            "range": run_report(
                "--account", "A1", *service, "--out", str(folder / "range"), *RANGE
            ),
            "unknown": run_report("--account", "A9", *service, "--out", str(folder / "unknown")),
            "empty": run_report(
                "--account", "A1", *service, "--out", str(folder / "empty"), *AFTER_THE_WEEK
            ),
        }
    finally:
        server.stop()
    done = run_report("--account", "A1", "--store", store, "--out", str(folder / "store"))
    assert done.returncode == 0, done.stderr
    return folder / "service", folder / "store", store, runs


@pytest.mark.parametrize("source", [0, 1], ids=["service", "store"])
def test_the_report_writes_the_page_and_its_pictures(reports, source):
    folder = reports[source]
    page = (folder / "A1.html").read_text()
    for name in PICTURES:
        picture = folder / f"A1_{name}.png"
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'src="A1_{name}.png"' in page


@pytest.mark.parametrize("source", [0, 1], ids=["service", "store"])
def test_the_page_holds_the_figures_by_hand(reports, source):
    found = figures((reports[source] / "A1.html").read_text())
    assert (found["risk-days"], found["risk-total"]) == ("5", "122")
    # 5 days: k = ceil(0.05 x 5) = ceil(0.01 x 5) = 1, the -78 day.
    assert (found["risk-var95"], found["risk-es95"]) == ("78", "78")
    assert (found["risk-var99"], found["risk-es99"]) == ("78", "78")
    # The curve 100, 52, 81, 3, 122: down 97 from the first close to the fourth, back on the fifth.
    assert found["risk-max_drawdown"] == "97"
    assert (found["risk-drawdown_peak"], found["risk-drawdown_trough"]) == (
        "2026-01-05",
        "2026-01-08",
    )
    assert found["risk-drawdown_recovered"] == "2026-01-09"
    values = [float(v) for v in ACCOUNT_DAYS]
    volatility = statistics.stdev(values)
    assert found["risk-volatility"] == f"{volatility:.4f}"
    assert found["risk-sharpe"] == f"{statistics.fmean(values) / volatility * math.sqrt(252):.4f}"
    downside = math.sqrt((48**2 + 78**2) / 5)
    assert found["risk-sortino"] == f"{statistics.fmean(values) / downside * math.sqrt(252):.4f}"
    # S1: 99 - 50 + 30 - 80 + 120 = 119; S2: 3; shares of 122.
    assert (found["strategy-S1"], found["share-S1"]) == ("119", "97.5")
    assert (found["strategy-S2"], found["share-S2"]) == ("3", "2.5")


def test_exposure_now_from_the_service_at_the_close_from_the_store(reports):
    service = figures((reports[0] / "A1.html").read_text())
    # Now, at the book's price (the last fill's, 100): 10 AAPL and 1 MSFT.
    assert service["exposure0-UNSPECIFIED-gross"] == "1100"  # by asset class
    assert service["exposure1-USD-long"] == "1100"
    store = figures((reports[1] / "A1.html").read_text())
    # At the last close: 10 x 112 + 1 x 103.
    assert (store["exposure0-AAPL-net"], store["exposure0-MSFT-net"]) == ("1120", "103")
    assert (store["exposure1-USD-long"], store["exposure1-USD-short"]) == ("1223", "0")


def test_both_sources_give_the_same_table(reports):
    service, store = (figures((folder / "A1.html").read_text()) for folder in reports[:2])

    def tables(found):
        return {key: value for key, value in found.items() if not key.startswith("exposure")}

    assert tables(service) == tables(store)
    assert len(tables(service)) == 17  # 13 risk rows, 2 strategies x (P&L, share)


@pytest.mark.parametrize("source", ["service", "store"])
def test_a_date_range_narrows_every_figure(reports, tmp_path, source):
    if source == "service":  # GetRiskMetrics cannot end before the latest close: VaR by rule
        assert reports[3]["range"].returncode == 0, reports[3]["range"].stderr
        page = (reports[0].parent / "range" / "A1.html").read_text()
        assert "which these days do not reach" in page
    else:
        done = run_report("--account", "A1", "--store", reports[2], "--out", str(tmp_path), *RANGE)
        assert done.returncode == 0, done.stderr
        page = (tmp_path / "A1.html").read_text()
    found = figures(page)
    # 29 and -78: the curve 29, -49 falls 78 from the first day's close.
    assert (found["risk-days"], found["risk-total"], found["risk-max_drawdown"]) == (
        "2", "-49", "78",
    )  # fmt: skip
    assert (found["risk-var95"], found["risk-es99"]) == ("78", "78")
    assert found["risk-drawdown_recovered"] == "not yet"
    assert (found["strategy-S1"], found["strategy-S2"]) == ("-50", "1")
    assert (found["share-S1"], found["share-S2"]) == ("102", "-2")  # of -49


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--out", "x"], "--account"),
        (["--account", "A1"], "--out"),
        (["--account", "A1", "--out", "x", "--from-date", "2026-13-01"], "not a date"),
        (
            [
                "--account",
                "A1",
                "--out",
                "x",
                "--from-date",
                "2026-01-09",
                "--to-date",
                "2026-01-05",
            ],
            "is after --to-date",
        ),
        (["--account", "../A1", "--out", "x", "--store", "lmdb://x"], "cannot name a file"),
        (["--account", "A1", "--out", "x", "--service", "nowhere"], "not HOST:PORT"),
        (["--account", "A1", "--out", "x", "--service", "h:1", "--store", "s"], "not allowed"),
        (["--account", "A1", "--out", "x", "--store", "lmdb:///no/such/store"], "no store at"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(tmp_path, arguments, message):
    done = run_report(*(str(tmp_path / a) if a == "x" else a for a in arguments))
    assert done.returncode == 2
    assert message in done.stderr
    assert not (tmp_path / "x").exists()  # nothing written


def test_an_unknown_account_exits_2(reports, tmp_path):
    done = run_report("--account", "A9", "--store", reports[2], "--out", str(tmp_path))
    assert done.returncode == 2
    assert "no P&L history for account 'A9'" in done.stderr
    unknown = reports[3]["unknown"]
    assert unknown.returncode == 2
    assert "--account" in unknown.stderr and "A9" in unknown.stderr


def test_a_service_not_there_exits_1(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = run_report("--account", "A1", "--service", f"127.0.0.1:{port}", "--out", str(tmp_path))
    assert done.returncode == 1
    assert "UNAVAILABLE" in done.stderr


@pytest.mark.parametrize("source", ["service", "store"])
def test_dates_without_a_close_make_an_empty_report(reports, tmp_path, source):
    if source == "service":
        assert reports[3]["empty"].returncode == 0, reports[3]["empty"].stderr
        folder = reports[0].parent / "empty"
    else:
        store = ("--store", reports[2])
        done = run_report("--account", "A1", *store, "--out", str(tmp_path), *AFTER_THE_WEEK)
        assert done.returncode == 0, done.stderr
        folder = tmp_path
    found = figures((folder / "A1.html").read_text())
    assert (found["risk-days"], found["risk-total"], found["risk-var95"]) == ("0", "0", "")
    assert (found["risk-volatility"], found["risk-max_drawdown"]) == ("", "0")
    assert not any(key.startswith("strategy-") for key in found)
    assert all((folder / f"A1_{name}.png").stat().st_size > 0 for name in PICTURES)
