"""scripts/report: one account's P&L report as an HTML page and PNG files, from a running
service (--service HOST:PORT) or from the analysts' store (--store URI).

Exit codes: 0 written; 2 a bad argument (named, with why: a malformed date, an unknown account,
no store there); 1 the source failed (service unreachable, store error).
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc

from reports import figures, page, service, store
from reports.model import Report

DEFAULT_SERVICE = "127.0.0.1:50051"


def _date(text: str) -> str:
    try:
        return datetime.date.fromisoformat(text).isoformat() if text else ""
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _account(text: str) -> str:
    # It names the output files: nothing that would leave --out.
    if not text or text in {".", ".."} or any(c in text for c in "/\\\0"):
        raise argparse.ArgumentTypeError(f"{text!r} cannot name a file (no '/', '\\', '.', '..')")
    return text


def _address(text: str) -> str:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return text


def parser() -> argparse.ArgumentParser:
    found = argparse.ArgumentParser(
        prog="scripts/report",
        description="Writes OUT/<account>.html and OUT/<account>_{equity,daily,attribution,"
        "exposure}.png: the equity curve with its maximum drawdown, daily P&L, attribution per "
        "strategy, exposure, and the risk figures.",
    )
    found.add_argument("--account", required=True, type=_account, help="the account's id")
    source = found.add_mutually_exclusive_group()
    source.add_argument(
        "--service", type=_address, help=f"a running service, HOST:PORT (default {DEFAULT_SERVICE})"
    )
    source.add_argument("--store", help="the analysts' store, e.g. lmdb://data")
    found.add_argument("--out", required=True, type=Path, help="the folder to write into")
    found.add_argument("--from-date", type=_date, default="", help="first trading date, YYYY-MM-DD")
    found.add_argument("--to-date", type=_date, default="", help="last trading date, YYYY-MM-DD")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    problem = _check(arguments)
    if problem:
        parser().error(problem)  # exits 2
    try:
        report = _load(arguments)
    except (service.NotFoundError, store.NotFoundError) as error:
        print(f"scripts/report: error: {error}", file=sys.stderr)
        return 2
    except grpc.RpcError as error:
        print(
            f"scripts/report: the service at {arguments.service or DEFAULT_SERVICE} failed: "
            f"{error.code().name}: {error.details()}",
            file=sys.stderr,
        )
        return 1
    out: Path = arguments.out
    out.mkdir(parents=True, exist_ok=True)
    pictures = figures.draw(report, out)
    written = out / f"{report.account_id}.html"
    page.write(report, pictures, written)
    print(written)
    return 0


def _check(arguments: argparse.Namespace) -> str:
    if arguments.from_date and arguments.to_date and arguments.from_date > arguments.to_date:
        return f"--from-date {arguments.from_date} is after --to-date {arguments.to_date}"
    if arguments.out.exists() and not arguments.out.is_dir():
        return f"--out {arguments.out} is a file, not a folder"
    return ""


def _load(arguments: argparse.Namespace) -> Report:
    if arguments.store:
        return store.from_store(
            arguments.store, arguments.account, arguments.from_date, arguments.to_date
        )
    return service.from_service(
        arguments.service or DEFAULT_SERVICE,
        arguments.account,
        arguments.from_date,
        arguments.to_date,
    )


if __name__ == "__main__":
    sys.exit(main())
