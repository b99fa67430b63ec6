"""The credentials the relay and the marks feed show the service: TLS trusting the service's CA,
a client certificate for mutual TLS, a bearer token; none of them is a plaintext channel (a
service on loopback with no auth configured). The SDK builds the channel from them
(client/channel.py), as it does for every other client.

Files are named by flags (each with its environment variable, as every flag of the relay); the
token itself comes only from a file or an environment variable, never a flag (a command line is
visible to every user of the machine: `ps`), and is never logged: `describe` names where each
credential came from, not what it is.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from client.channel import channel_credentials

__all__ = ["ServiceCredentials", "add_credential_options", "credentials_from"]

FLAGS = ("ca_cert", "client_cert", "client_key", "token_file")


@dataclass(frozen=True, slots=True)
class ServiceCredentials:
    ca_cert: str = ""  # the service's CA certificate (PEM): TLS
    client_cert: str = ""  # this client's certificate chain (PEM): mutual TLS
    client_key: str = ""  # its private key (PEM)
    token_file: str = ""  # a file holding the bearer token
    token_variable: str = ""  # or the environment variable it came from
    token: str = field(default="", repr=False)  # the token (from either): never printed

    def client_options(self) -> dict[str, Any]:
        """The SDK clients' keyword arguments (AsyncPortfolioClient, PortfolioClient)."""
        return {
            "root_certificates": _read(self.ca_cert),
            "private_key": _read(self.client_key),
            "certificate_chain": _read(self.client_cert),
            "token": self.token or None,
        }

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """For a channel of the relay's own (None: plaintext)."""
        return channel_credentials(**self.client_options())

    def describe(self) -> str:
        """What the channel carries, for the start's log line (never the token)."""
        parts = [f"TLS (CA {self.ca_cert})" if self.ca_cert else "plaintext"]
        if self.client_cert:
            parts.append(f"client certificate {self.client_cert}")
        if self.token:
            where = self.token_file or f"${self.token_variable}"
            parts.append(f"bearer token from {where}")
        return ", ".join(parts)


def _read(path: str) -> bytes | None:
    return Path(path).read_bytes() if path else None


def add_credential_options(
    option: Callable[[str, type | object, object, str], None], token_variable: str
) -> None:
    """The credential flags, each defaulting to its environment variable (`option` as
    cli.env_options makes it); the token itself only in `token_variable`."""
    option("--ca-cert", str, "", "the service's CA certificate (PEM): TLS")
    option("--client-cert", str, "",
           "this client's certificate chain (PEM), for mutual TLS (with --client-key)")  # fmt: skip
    option("--client-key", str, "", "this client's private key (PEM), for mutual TLS")
    token_help = f"a file holding the bearer token (or the token itself in {token_variable})"
    option("--token-file", str, "", token_help)


def credentials_from(
    arguments: argparse.Namespace, parser: argparse.ArgumentParser, token_variable: str
) -> ServiceCredentials:
    """Takes the credential flags out of `arguments` (usage errors exit 2, naming the flag):
    each file must be readable at start, not at the first call to the service."""
    given = {name: str(vars(arguments).pop(name)) for name in FLAGS}
    if bool(given["client_cert"]) != bool(given["client_key"]):
        parser.error("--client-cert and --client-key go together (mutual TLS)")
    if given["client_cert"] and not given["ca_cert"]:
        parser.error("--client-cert needs --ca-cert (mutual TLS is TLS)")
    for name, path in given.items():
        if path and not os.access(path, os.R_OK):
            parser.error(f"--{name.replace('_', '-')} {path}: cannot be read")
    if given["token_file"]:
        token = Path(given["token_file"]).read_text().strip()
        if not token:
            parser.error(f"--token-file {given['token_file']}: is empty")
        return ServiceCredentials(**given, token=token)
    token = os.environ.get(token_variable, "").strip()
    return ServiceCredentials(**given, token_variable=token_variable if token else "", token=token)
