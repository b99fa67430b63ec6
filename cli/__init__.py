"""Command-line conventions the service and the relay share: every flag defaults to an
environment variable (`--ib-port` reads PORTFOLIO_IB_PORT for the service, `--tws-port`
RELAY_TWS_PORT for the relay). Its own package because the relay, a client of the service,
imports nothing from `server`; it imports none of the project's packages."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable


def env_options(
    parser: argparse.ArgumentParser, prefix: str
) -> Callable[[str, type | object, object, str], None]:
    """Adds flags that each default to an environment variable: `--ib-port` reads
    PREFIX_IB_PORT."""

    def option(flag: str, kind: type | object, default: object, help_: str) -> None:
        env = prefix + flag.removeprefix("--").replace("-", "_").upper()
        parser.add_argument(
            flag,
            type=kind,  # type: ignore[arg-type]
            default=os.environ.get(env, default),
            help=f"{help_} (env {env}, default %(default)s)",
        )

    return option
