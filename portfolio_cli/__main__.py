"""scripts/portfolio: the operator's view of a running portfolio manager.

Exit codes, for scripts: 0 done; 1 the service (or the store) said no or failed, with the gRPC
code and its message on stderr; 2 bad usage; 3 `health` found a name not serving.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from client import PortfolioError
from portfolio_cli import commands
from portfolio_cli.commands import Output, Target
from portfolio_cli.tables import to_json, to_json_line

DEFAULT_SERVICE = "127.0.0.1:50051"
OK, FAILED, USAGE, NOT_SERVING = 0, 1, 2, 3
PROG = "scripts/portfolio"
#: The SDK's credentials, from files. The token itself only from the environment or a file,
#: never a flag: a command line is visible to every user of the machine (`ps`).
CREDENTIAL_FILES = {
    "--ca-cert": "the service's CA certificate (PEM): TLS",
    "--client-cert": "this client's certificate chain (PEM), for mutual TLS (with --client-key)",
    "--client-key": "this client's private key (PEM), for mutual TLS",
    "--token-file": "a file holding the bearer token (or env PORTFOLIO_TOKEN)",
}


def _address(text: str) -> str:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return text


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds in (0, 3600]")
    return value


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return int(text)


def _file(text: str) -> Path:
    path = Path(text)
    if path.suffix not in (".csv", ".parquet"):
        raise argparse.ArgumentTypeError(
            f"{text!r}: the extension picks the format, .csv or .parquet"
        )
    return path


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--service", type=_address, default=os.environ.get("PORTFOLIO_SERVICE", DEFAULT_SERVICE),
        help="the service, HOST:PORT (env PORTFOLIO_SERVICE, default %(default)s)",
    )  # fmt: skip
    common.add_argument(
        "--timeout", type=_seconds, default=10.0, help="seconds per call (default %(default)s)"
    )
    common.add_argument("--json", action="store_true", help="JSON for scripts (amounts as text)")
    for flag, help_ in CREDENTIAL_FILES.items():
        env = "PORTFOLIO_" + flag.removeprefix("--").replace("-", "_").upper()
        common.add_argument(
            flag, type=Path, default=os.environ.get(env), metavar="FILE",
            help=f"{help_} (env {env})",
        )  # fmt: skip

    top = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0] if __doc__ else ""
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help_, description=help_)

    found = command("positions", "position rows (every page)")
    found.add_argument("--account", default="")
    found.add_argument("--strategy", default="")
    found.add_argument("--instrument", default="")
    found.add_argument("--level", choices=["strategy", "account", "residual"], default="strategy")
    found.add_argument("--include-flat", action="store_true")

    found = command("summary", "account totals, each strategy's share, per currency")
    found.add_argument("--account", default="", help="empty: every account")

    found = command("orders", "an account's open orders, or one order with its history")
    found.add_argument("--account", default="", help="empty: every account")
    found.add_argument("--strategy", default="", help="needs --account")
    found.add_argument("--order-id", default="", help="one order (needs --account)")

    found = command("balances", "an account's cash per currency and reservations")
    found.add_argument("--account", required=True)

    found = command("pnl", "the daily P&L recorded at each close")
    found.add_argument("--account", required=True)
    found.add_argument("--strategy", default="")
    found.add_argument("--from-date", type=commands.parse_date)
    found.add_argument("--to-date", type=commands.parse_date)

    found = command("reconcile", "reconciles a live account against the broker now")
    found.add_argument("--account", required=True)

    found = command("reconciliations", "an account's reconciliation runs, newest first")
    found.add_argument("--account", required=True)
    found.add_argument("--limit", type=_count, default=20, help="runs (default %(default)s)")

    found = command("subscribe", "a live tail, one line per update, until Ctrl-C or --count")
    found.add_argument("--account", default="")
    found.add_argument("--strategy", default="")
    found.add_argument("--instrument", default="")
    found.add_argument("--from-sequence", type=_count, default=0, help="replay from it first")
    found.add_argument("--count", type=_count, default=0, help="stop after N updates (0: never)")
    found.add_argument("--no-reconnect", action="store_true", help="stop when the stream breaks")

    found = command("health", "grpc.health.v1 status of each service name (exit 3 if any is not)")
    found.add_argument("--name", action="append", help="only this name ('' overall; repeatable)")

    found = command(
        "export", "positions or P&L from the service; fills, positions or P&L from --store"
    )
    found.add_argument("what", choices=["fills", "positions", "pnl"])
    found.add_argument("--out", required=True, type=_file, help="FILE.csv or FILE.parquet")
    found.add_argument("--account", default="")
    found.add_argument("--strategy", default="")
    found.add_argument("--store", help="read the store, e.g. lmdb:///path/to/data, not the service")
    found.add_argument("--from-date", type=commands.parse_date)
    found.add_argument("--to-date", type=commands.parse_date)
    return top


def _check(arguments: argparse.Namespace) -> str:
    """What argparse cannot say alone: options that need each other."""
    name = arguments.command
    if bool(arguments.client_cert) != bool(arguments.client_key):
        return "--client-cert and --client-key go together (mutual TLS)"
    if name == "orders" and (arguments.order_id or arguments.strategy) and not arguments.account:
        return "orders: --order-id and --strategy need --account"
    dates = (arguments.from_date, arguments.to_date) if name in ("pnl", "export") else ()
    if all(dates) and dates and dates[0] > dates[1]:
        return f"--from-date {arguments.from_date} is after --to-date {arguments.to_date}"
    if name == "export":
        if arguments.what == "fills" and not arguments.store:
            return "export fills: needs --store (the service has no call listing fills)"
        if (arguments.store or arguments.what == "pnl") and not arguments.account:
            return f"export {arguments.what}: needs --account"
        if arguments.store and (arguments.strategy or arguments.from_date or arguments.to_date):
            return "export --store: the account's whole symbol (no --strategy or dates)"
    return ""


def _target(arguments: argparse.Namespace) -> Target:
    def read(path: Path | None) -> bytes | None:
        return path.read_bytes() if path else None

    token_file = read(arguments.token_file)
    token = token_file.decode().strip() if token_file else os.environ.get("PORTFOLIO_TOKEN")
    return Target(
        address=arguments.service, timeout=arguments.timeout,
        root_certificates=read(arguments.ca_cert), private_key=read(arguments.client_key),
        certificate_chain=read(arguments.client_cert), token=token or None,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    top = parser()
    arguments = top.parse_args(argv)  # exits 2 on bad usage
    problem = _check(arguments)
    if problem:
        top.error(problem)
    try:
        target = _target(arguments)
    except (OSError, UnicodeDecodeError) as error:
        top.error(f"cannot read a credential file: {error}")
    try:
        return _run(target, arguments)
    except PortfolioError as error:
        print(f"{PROG}: {arguments.service}: {error}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        return OK


def _run(target: Target, arguments: argparse.Namespace) -> int:
    if arguments.command == "subscribe":
        line = to_json_line if arguments.json else commands.update_line
        for update in commands.subscribe(target, arguments):
            print(line(update), flush=True)
        return OK
    if arguments.command == "export":
        from portfolio_cli import export  # pandas: only this command pays for importing it

        try:
            path, rows = export.export(target, arguments)
        except export.ExportError as error:
            print(f"{PROG}: {error}", file=sys.stderr)
            return FAILED
        print(
            to_json({"file": str(path), "rows": rows})
            if arguments.json
            else f"{rows} rows -> {path}"
        )
        return OK
    run: Callable[[Target, argparse.Namespace], Output] = getattr(commands, arguments.command)
    output = run(target, arguments)
    print(to_json(output.data) if arguments.json else output.text)
    return OK if output.healthy else NOT_SERVING


if __name__ == "__main__":
    code = main()
    # Leaves without the interpreter's teardown, its output flushed: ArcticDB's LMDB back end
    # can crash while a process shuts down (a store export once exited -11 after writing its
    # file and saying so), and nothing is left to do.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
