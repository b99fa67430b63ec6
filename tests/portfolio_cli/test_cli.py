"""scripts/portfolio against a real service on 127.0.0.1 (and the LMDB store it wrote): each
command as a table and as --json, the exit codes scripts test, and exports read back.

The book: S1 bought 10 AAPL at 100.25 (fee 1), S2 one MSFT at 100; order 8 (10 AAPL) is
working; two closes (tests/api/test_performance_and_risk.py's marks) make the P&L history. A
paper account P1 then sold 3 AAPL at 50.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import grpc
import pandas as pd
import pytest
from grpc_health.v1 import health_pb2

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from portfolio_cli.__main__ import main
from portfolio_cli.commands import HEALTH_NAMES
from tests.api.protocol import acks, pb_fill, pb_status
from tests.api.test_performance_and_risk import close, journal
from tests.api.test_roles import token_of, write_auth_file
from tests.api.test_tls import issue, pem
from tests.conftest import start_test_server

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
ROOT = Path(__file__).resolve().parents[2]
BOOK = (
    pb_fill("BUY", 10, "100.25", strategy="S1", commission=1, fill_id="f1", order_id="7"),
    pb_fill("BUY", 1, 100, strategy="S2", instrument="MSFT", fill_id="f2"),
    pb_status(
        "u1", order_id="8", order_ref="", instrument_id="AAPL", strategy_id="S1",
        side=pb.SIDE_BUY, filled_quantity="0", remaining_quantity="10",
    ),
)  # fmt: skip


def book(server) -> None:
    with grpc.insecure_channel(server.address) as channel:
        answers = acks(pb_grpc.PortfolioManagerStub(channel), *BOOK)
    assert [a.result for a in answers] == [pb.EVENT_RESULT_ACCEPTED] * len(BOOK)


@pytest.fixture(scope="module")
def service():
    server = start_test_server()
    try:
        book(server)
        for day in range(2):
            journal(server, close(day))
        with grpc.insecure_channel(server.address) as channel:  # a paper account beside A1
            stub = pb_grpc.PortfolioManagerStub(channel)
            paper = pb.Account(account_id="P1", kind=pb.ACCOUNT_KIND_PAPER, base_currency="USD")
            stub.DefineAccount(pb.DefineAccountRequest(account=paper), timeout=10)
            acks(stub, pb_fill("SELL", 3, 50, account="P1", strategy="S1", fill_id="p1"))
        yield server
    finally:
        server.stop()


@pytest.fixture
def cli(service, capsys):
    """Runs a command in this process: (exit code, stdout, stderr)."""

    def run(*arguments: str) -> tuple[int, str, str]:
        try:
            code = main([*arguments, "--service", service.address])
        except SystemExit as stop:  # argparse
            code = int(stop.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def as_json(cli, *arguments: str):
    code, out, err = cli(*arguments, "--json")
    assert code == 0, err
    return json.loads(out)


def rows(text: str) -> list[list[str]]:
    """A table's body (after the header and its rule, up to a blank line), split into cells."""
    body = text.split("\n\n", 1)[0]
    return [line.split() for line in body.splitlines()[2:]]


def test_positions(cli):
    code, out, _ = cli("positions")
    assert code == 0
    assert out.splitlines()[0].split()[:6] == [
        "account", "strategy", "instrument", "level", "quantity", "avg_cost",
    ]  # fmt: skip
    assert [r[:6] for r in rows(out)] == [
        ["A1", "S1", "AAPL", "STRATEGY", "10", "100.25"],
        ["A1", "S2", "MSFT", "STRATEGY", "1", "100"],
        ["P1", "S1", "AAPL", "STRATEGY", "-3", "50"],
    ]
    found = as_json(cli, "positions", "--account", "A1", "--level", "account")
    assert [(p["instrument_id"], p["level"], p["quantity"], p["avg_cost"]) for p in found] == [
        ("AAPL", "ACCOUNT", "10", "100.25"),
        ("MSFT", "ACCOUNT", "1", "100"),
    ]
    assert found[0]["fees"] == "1"  # Decimal amounts as strings, never floats


def test_summary(cli):
    code, out, _ = cli("summary", "--account", "A1")
    assert code == 0
    table = {" ".join(r[:2]): r[2:] for r in rows(out) if len(r) > 2}
    # AAPL's close marks and MSFT's: the latest close's marks value the book.
    assert table["account A1"][2] == "1"  # fees
    assert set(table) >= {"account A1", "strategy S1", "strategy S2", "currency USD"}
    found = as_json(cli, "summary", "--account", "A1")
    assert found["account_id"] == "A1"
    assert [s["strategy_id"] for s in found["strategies"]] == ["S1", "S2"]
    assert found["account_totals"]["fees"] == "1"
    assert found["account_totals"]["net_pnl"] == table["account A1"][3]


def test_summary_across_accounts_keeps_paper_and_live_apart(cli):
    code, out, _ = cli("summary")
    assert code == 0
    table = {" ".join(r[:3]): r[3:] for r in rows(out)}
    assert table["PAPER account (all)"][2] == "0"  # fees
    assert table["LIVE account (all)"][2] == "1"
    assert "PAPER strategy S1" in table and "LIVE strategy S2" in table
    found = as_json(cli, "summary")
    assert found["account_totals"] is None  # never paper and live added together
    assert [k["account_kind"] for k in found["by_account_kind"]] == ["PAPER", "LIVE"]


def test_orders_open_and_one_with_its_history(cli):
    code, out, _ = cli("orders", "--account", "A1")
    assert code == 0
    assert [r[:6] for r in rows(out)] == [["A1", "id:8", "S1", "AAPL", "BUY", "SUBMITTED"]]
    (order,) = as_json(cli, "orders", "--account", "A1")
    assert (order["order_id"], order["remaining_quantity"], order["is_open"]) == ("8", "10", True)
    code, out, _ = cli("orders", "--account", "A1", "--order-id", "8")
    assert code == 0
    assert "sequence  status" in out
    one = as_json(cli, "orders", "--account", "A1", "--order-id", "8")
    assert [(t["sequence"], t["update"]["status"]) for t in one["history"]] == [(3, "SUBMITTED")]


def test_balances(cli):
    code, out, _ = cli("balances", "--account", "A1")
    assert code == 0
    # 10 x 100.25 + fee 1 + 100 paid out.
    assert rows(out) == [["USD", "-1103.5", "0", "-1103.5"]]
    found = as_json(cli, "balances", "--account", "A1")
    assert [(b["currency"], b["cash"], b["available"]) for b in found["balances"]] == [
        ("USD", "-1103.5", "-1103.5")
    ]


def test_pnl(cli):
    code, out, _ = cli("pnl", "--account", "A1")
    assert code == 0
    assert [r[0] for r in rows(out)] == ["2026-01-05", "2026-01-06"]
    found = as_json(cli, "pnl", "--account", "A1", "--from-date", "2026-01-06")
    assert [d["trading_date"] for d in found["days"]] == ["2026-01-06"]
    day = found["days"][0]
    assert Decimal(day["net_pnl_base"]) == Decimal(rows(out)[1][6])
    assert isinstance(day["net_pnl_base"], str)


def test_reconcile_without_a_broker_exits_1_with_the_code(cli):
    code, out, err = cli("reconcile", "--account", "A1")
    assert (code, out) == (1, "")
    assert "UNAVAILABLE" in err
    assert "broker" in err


def test_reconciliations_none_yet(cli):
    code, out, _ = cli("reconciliations", "--account", "A1")
    assert (code, rows(out)) == (0, [])
    assert as_json(cli, "reconciliations", "--account", "A1") == []


def test_subscribe_replays_and_stops_after_count(cli):
    code, out, _ = cli("subscribe", "--from-sequence", "1", "--count", "3")
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[:3] for line in lines] == [
        ["1", "POSITION_OPENED", "f1"],
        ["1", "POSITION_OPENED", "f1"],
        ["2", "POSITION_OPENED", "f2"],
    ]
    code, out, _ = cli("subscribe", "--from-sequence", "3", "--count", "1", "--json")
    assert code == 0
    (line,) = out.splitlines()  # one JSON object per line
    update = json.loads(line)
    assert (update["sequence"], update["kind"], update["event_id"]) == (3, "ORDER_STATUS", "u1")
    assert update["order_status"]["remaining_quantity"] == "10"


def test_subscribe_tails_until_ctrl_c(service):
    environment = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'protos'}"}
    tail = subprocess.Popen(
        [sys.executable, "-m", "portfolio_cli", "subscribe", "--service", service.address,
         "--from-sequence", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment, cwd=ROOT,
    )  # fmt: skip
    try:
        assert tail.stdout is not None
        assert tail.stdout.readline().split()[:3] == ["1", "POSITION_OPENED", "f1"]
        tail.send_signal(signal.SIGINT)
        _, err = tail.communicate(timeout=30)
    finally:
        tail.kill()
    assert tail.returncode == 0, err
    assert "Traceback" not in err


def test_health_serving_exits_0_and_an_unknown_name_exits_3(cli):
    code, out, _ = cli("health")
    assert code == 0
    statuses = dict(r for r in rows(out))
    assert statuses["(overall)"] == "SERVING"
    assert statuses["journal"] == "SERVING"
    assert "broker" not in statuses  # no broker configured: not asked unless named
    found = as_json(cli, "health")
    assert found[""] == found["portfolio.v1.PortfolioManager"] == "SERVING"
    code, out, _ = cli("health", "--name", "broker", "--json")
    assert (code, json.loads(out)) == (3, {"broker": "UNKNOWN"})


def test_a_name_not_serving_exits_3(service, cli):
    """As when a live account's reconciliation finds a discrepancy (set here directly)."""
    health = service.running.health
    service.call(health.set("reconciliation", NOT_SERVING))
    try:
        code, out, _ = cli("health")
        assert code == 3
        assert dict(rows(out))["reconciliation"] == "NOT_SERVING"
        code, _, _ = cli("health", "--name", "")
        assert code == 0  # readiness alone
    finally:
        service.call(health.set("reconciliation", SERVING))
    assert cli("health")[0] == 0


@pytest.mark.parametrize(
    ("command", "account"),
    [("balances", "NOPE"), ("pnl", "NOPE"), ("orders", "A1")],
)
def test_what_the_service_refuses_exits_1_with_its_code(cli, command, account):
    extra = ["--order-id", "999"] if command == "orders" else []
    code, out, err = cli(command, "--account", account, *extra)
    assert (code, out) == (1, "")
    assert "NOT_FOUND" in err


def test_an_unreachable_service_exits_1(capsys):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    code = main(["positions", "--service", f"127.0.0.1:{port}", "--timeout", "2"])
    assert code == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_the_service_comes_from_the_environment(service, capsys, monkeypatch):
    monkeypatch.setenv("PORTFOLIO_SERVICE", service.address)
    assert main(["health", "--name", ""]) == 0
    assert "SERVING" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["positions", "--service", "nowhere"], "not HOST:PORT"),
        (["positions", "--timeout", "0"], "seconds"),
        (["balances"], "--account"),
        (["orders", "--order-id", "8"], "need --account"),
        (["pnl", "--account", "A1", "--from-date", "2026-13-01"], "not a date"),
        (
            ["pnl", "--account", "A1", "--from-date", "2026-01-06", "--to-date", "2026-01-05"],
            "is after --to-date",
        ),
        (["subscribe", "--count", "-1"], "whole number"),
        (["export", "positions", "--out", "x.txt"], ".csv or .parquet"),
        (["export", "fills", "--out", "x.csv", "--account", "A1"], "needs --store"),
        (["export", "fills", "--out", "x.csv", "--store", "lmdb://x"], "needs --account"),
        (["export", "pnl", "--out", "x.csv"], "needs --account"),
        (
            [
                "export",
                "pnl",
                "--out",
                "x.csv",
                "--store",
                "s",
                "--account",
                "A1",
                "--to-date",
                "2026-01-05",
            ],
            "whole symbol",
        ),
        (["nonsense"], "invalid choice"),
    ],
)
def test_bad_usage_exits_2_naming_the_problem(capsys, arguments, message):
    with pytest.raises(SystemExit) as stop:
        main(arguments)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_positions_reads_back_exact(cli, tmp_path, suffix):
    path = tmp_path / f"positions{suffix}"
    code, out, err = cli("export", "positions", "--account", "A1", "--out", str(path))
    assert code == 0, err
    assert out.strip() == f"2 rows -> {path}"
    frame = read(path)
    assert list(zip(frame["instrument_id"], frame["quantity"], frame["avg_cost"], strict=True)) == [
        ("AAPL", "10", "100.25"),
        ("MSFT", "1", "100"),
    ]
    assert list(frame["fees"]) == ["1", "0"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_pnl_matches_the_service(cli, tmp_path, suffix):
    path = tmp_path / f"pnl{suffix}"
    code, _, err = cli("export", "pnl", "--account", "A1", "--out", str(path), "--json")
    assert code == 0, err
    frame = read(path)
    history = as_json(cli, "pnl", "--account", "A1")
    expected = [
        (day["trading_date"], c["currency"], c["net_pnl"], day["net_pnl_base"])
        for day in history["days"]
        for c in day["by_currency"]
    ]
    found = zip(
        frame["trading_date"], frame["currency"], frame["net_pnl"], frame["net_pnl_base"],
        strict=True,
    )  # fmt: skip
    assert list(found) == expected
    assert len(expected) == 2


def read(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    return pd.read_parquet(path)


@pytest.fixture(scope="module")
def written_store(tmp_path_factory):
    """An LMDB store the service wrote the book into, then closed."""
    uri = f"lmdb://{tmp_path_factory.mktemp('store') / 'lmdb'}"
    server = start_test_server(store=uri)
    try:
        book(server)
    finally:
        server.stop()
    return uri


def script(*arguments: str) -> subprocess.CompletedProcess[str]:
    """`python -m portfolio_cli`, as scripts/portfolio runs it (without its venv bootstrap)."""
    environment = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'protos'}"}
    return subprocess.run(
        [sys.executable, "-m", "portfolio_cli", *arguments],
        capture_output=True, text=True, env=environment, timeout=120, check=False, cwd=ROOT,
    )  # fmt: skip


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_fills_from_the_store_round_trips(written_store, tmp_path, suffix):
    path = tmp_path / f"fills{suffix}"
    done = script(
        "export", "fills", "--store", written_store, "--account", "A1", "--out", str(path)
    )
    assert done.returncode == 0, done.stderr
    frame = read(path)
    assert list(frame["fill_id"]) == ["f1", "f2"]
    assert [Decimal(p) for p in frame["price_exact"]] == [Decimal("100.25"), Decimal(100)]
    assert list(frame["quantity"]) == ["10", "1"]
    assert "timestamp" in frame.columns


def test_export_positions_from_the_store(written_store, tmp_path):
    """The `portfolio` library: the account-level book beside each strategy's rows."""
    path = tmp_path / "book.csv"
    done = script("export", "positions", "--store", written_store, "--account", "A1", "--out",
                  str(path))  # fmt: skip
    assert done.returncode == 0, done.stderr
    frame = read(path)
    found = sorted(zip(frame["level"], frame["strategy_id"], frame["instrument_id"],
                       frame["quantity"], frame["avg_cost_exact"], strict=True))  # fmt: skip
    assert found == [
        ("ACCOUNT", "", "AAPL", "10", "100.25"),
        ("ACCOUNT", "", "MSFT", "1", "100"),
        ("STRATEGY", "S1", "AAPL", "10", "100.25"),
        ("STRATEGY", "S2", "MSFT", "1", "100"),
    ]


def test_export_fills_of_an_unknown_account_or_store_exits_1(written_store, tmp_path):
    out = str(tmp_path / "f.csv")
    done = script("export", "fills", "--store", written_store, "--account", "A9", "--out", out)
    assert done.returncode == 1
    assert "no fills for account 'A9'" in done.stderr
    missing = f"lmdb://{tmp_path / 'nothing'}"
    done = script("export", "fills", "--store", missing, "--account", "A1", "--out", out)
    assert done.returncode == 1
    assert "no store at" in done.stderr
    assert not (tmp_path / "nothing").exists()  # not created by looking


# -- names and credentials --------------------------------------------------------------------


def test_the_cli_asks_every_health_name_the_service_sets():
    from server import app
    from server.application import thresholds

    names = {
        value
        for module in (app, thresholds)
        for key, value in vars(module).items()
        if key.endswith("_HEALTH") and isinstance(value, str)
    }
    assert names
    assert names | {"", app.SERVICE_NAME} == set(HEALTH_NAMES)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A service that knows its callers by bearer token (tests/api/test_roles.py's)."""
    auth_file = write_auth_file(tmp_path_factory.mktemp("auth") / "principals.json")
    server = start_test_server(auth_file=str(auth_file))
    try:
        yield server
    finally:
        server.stop()


def test_a_token_from_the_environment_or_a_file(guarded, capsys, monkeypatch, tmp_path):
    service = ("--service", guarded.address)
    monkeypatch.delenv("PORTFOLIO_TOKEN", raising=False)
    assert main(["positions", "--account", "A1", *service]) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    monkeypatch.setenv("PORTFOLIO_TOKEN", token_of("reader"))
    assert main(["positions", "--account", "A1", *service]) == 0
    assert main(["balances", "--account", "A9", *service]) == 1  # reader of A1 only
    assert "PERMISSION_DENIED" in capsys.readouterr().err
    monkeypatch.delenv("PORTFOLIO_TOKEN")
    token = tmp_path / "token"
    token.write_text(token_of("risk") + "\n")
    assert main(["summary", "--token-file", str(token), *service]) == 0
    capsys.readouterr()


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A CA, the service's certificate and a client's (tests/api/test_tls.py's), as files."""
    folder = tmp_path_factory.mktemp("pki")
    ca = issue("test CA")
    files = {
        "ca.pem": pem(ca).certificate,
        "server.pem": (server := pem(issue("localhost", ca))).certificate,
        "server.key": server.key,
        "client.pem": (client := pem(issue("risk.desk", ca))).certificate,
        "client.key": client.key,
    }
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return folder


@pytest.fixture(scope="module")
def mutual_tls(certificates):
    server = start_test_server(
        tls_cert=str(certificates / "server.pem"), tls_key=str(certificates / "server.key"),
        tls_client_ca=str(certificates / "ca.pem"),
    )  # fmt: skip
    try:
        yield server
    finally:
        server.stop()


def test_mutual_tls_with_the_client_certificate(mutual_tls, certificates, capsys, monkeypatch):
    monkeypatch.delenv("PORTFOLIO_TOKEN", raising=False)
    service = ["--service", mutual_tls.address, "--timeout", "5"]
    ca = ["--ca-cert", str(certificates / "ca.pem")]
    mine = ["--client-cert", str(certificates / "client.pem")]
    mine += ["--client-key", str(certificates / "client.key")]
    assert main(["health", *service, *ca, *mine]) == 0
    assert main(["summary", *service, *ca, *mine]) == 0
    assert main(["balances", "--account", "A1", *service, *ca, *mine]) == 1  # through TLS
    assert "NOT_FOUND" in capsys.readouterr().err
    assert main(["health", *service, *ca]) == 1  # no client certificate: no handshake
    assert main(["health", *service]) == 1  # plaintext to a TLS service
    assert "UNAVAILABLE" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--client-cert", "c.pem"], "go together"),
        (["--ca-cert", "/no/such/ca.pem"], "cannot read a credential file"),
    ],
)
def test_bad_credentials_exit_2(capsys, arguments, message):
    with pytest.raises(SystemExit) as stop:
        main(["health", *arguments])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
