"""Who may call the service: the principals of the auth file (`--auth-file`), and the transport
the service listens with (TLS, mutual TLS, or plaintext on loopback).

The auth file (JSON, or TOML when its name ends in `.toml`) lists principals:

    {"principals": [
      {"name": "relay-1", "role": "relay", "accounts": ["U1", "U2"],
       "token_sha256": "<sha256 hex of the bearer token>"},
      {"name": "risk", "role": "reader", "accounts": "*", "certificate_cn": "risk.desk"}
    ]}

A token is stored only as its SHA-256 (hex), so the file does not hold a credential. A principal
is found by its bearer token or by the subject CN of its verified client certificate (mTLS).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROLES = ("relay", "reader", "marks", "operator")
ALL_ACCOUNTS = "*"


class AuthConfigError(RuntimeError):
    """The auth file or the transport settings cannot be used; the message says which and why.
    A RuntimeError, so the start stops with it as with an address that cannot be bound."""


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str
    # None: every account ("*").
    accounts: frozenset[str] | None
    token_sha256: str = ""
    certificate_cn: str = ""

    def may_use(self, account_id: str) -> bool:
        return self.accounts is None or account_id in self.accounts

    def describe_accounts(self) -> str:
        if self.accounts is None:
            return ALL_ACCOUNTS
        return ", ".join(sorted(self.accounts)) or "none"


@dataclass(frozen=True, slots=True)
class Principals:
    by_token: dict[str, Principal]  # sha256 hex -> principal
    by_cn: dict[str, Principal]

    def with_token(self, token: str) -> Principal | None:
        return self.by_token.get(token_hash(token))

    def with_certificate(self, common_name: str) -> Principal | None:
        return self.by_cn.get(common_name)


def token_hash(token: str) -> str:
    """What the auth file stores of a bearer token (`sha256sum` of the token's text)."""
    return hashlib.sha256(token.encode()).hexdigest()


def load_principals(path: str) -> Principals:
    """The principals `path` holds; AuthConfigError naming the file, the principal and why."""
    try:
        raw = Path(path).read_bytes()
        data: Any = tomllib.loads(raw.decode()) if path.endswith(".toml") else json.loads(raw)
    except (OSError, ValueError) as error:
        raise AuthConfigError(f"auth file {path}: cannot be read: {error}") from None
    entries = data.get("principals") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise AuthConfigError(f"auth file {path}: needs a non-empty list 'principals'")
    by_token: dict[str, Principal] = {}
    by_cn: dict[str, Principal] = {}
    names: set[str] = set()
    for index, entry in enumerate(entries):
        principal = _principal(path, index, entry)
        if principal.name in names:
            raise AuthConfigError(f"auth file {path}: principal {principal.name!r} twice")
        names.add(principal.name)
        if principal.token_sha256:
            if principal.token_sha256 in by_token:
                raise AuthConfigError(
                    f"auth file {path}: principal {principal.name!r}: token_sha256 is also "
                    f"{by_token[principal.token_sha256].name!r}'s"
                )
            by_token[principal.token_sha256] = principal
        if principal.certificate_cn:
            if principal.certificate_cn in by_cn:
                raise AuthConfigError(
                    f"auth file {path}: principal {principal.name!r}: certificate_cn is also "
                    f"{by_cn[principal.certificate_cn].name!r}'s"
                )
            by_cn[principal.certificate_cn] = principal
    return Principals(by_token, by_cn)


def _principal(path: str, index: int, entry: object) -> Principal:
    where = f"auth file {path}: principals[{index}]"
    if not isinstance(entry, dict):
        raise AuthConfigError(f"{where}: must be a table of name, role, accounts, credentials")
    unknown = set(entry) - {"name", "role", "accounts", "token_sha256", "certificate_cn"}
    if unknown:
        raise AuthConfigError(f"{where}: unknown keys {sorted(unknown)}")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise AuthConfigError(f"{where}: name must be a non-empty string")
    where = f"auth file {path}: principal {name!r}"
    role = entry.get("role")
    if role not in ROLES:
        raise AuthConfigError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
    accounts = entry.get("accounts", [])
    if accounts == ALL_ACCOUNTS:
        allowed: frozenset[str] | None = None
    elif isinstance(accounts, list) and all(isinstance(a, str) and a for a in accounts):
        allowed = frozenset(accounts)
    else:
        raise AuthConfigError(f'{where}: accounts must be a list of account ids or "*"')
    token = entry.get("token_sha256", "")
    if not isinstance(token, str) or (
        token and (len(token) != 64 or any(c not in "0123456789abcdef" for c in token.lower()))
    ):
        raise AuthConfigError(f"{where}: token_sha256 must be 64 hex digits (sha256 of the token)")
    common_name = entry.get("certificate_cn", "")
    if not isinstance(common_name, str):
        raise AuthConfigError(f"{where}: certificate_cn must be a string")
    if not token and not common_name:
        raise AuthConfigError(f"{where}: needs token_sha256 or certificate_cn (or both)")
    return Principal(name, role, allowed, token.lower(), common_name)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Transport:
    """How the service listens: TLS when `certificate` is set, with client certificates
    required when `client_ca` is; principals when an auth file is given (else: no checks)."""

    certificate: bytes = b""
    private_key: bytes = b""
    client_ca: bytes = b""
    principals: Principals | None = None
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def transport_of(
    *,
    host: str,
    tls_cert: str,
    tls_key: str,
    tls_client_ca: str,
    insecure: bool,
    auth_file: str,
) -> Transport:
    """The transport the settings ask for; AuthConfigError when they are unsafe or unreadable:
    plaintext on an address other than loopback without `insecure`, or no auth file there."""
    if bool(tls_cert) != bool(tls_key):
        raise AuthConfigError("--tls-cert and --tls-key go together: give both or neither")
    if tls_client_ca and not tls_cert:
        raise AuthConfigError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
    loopback = is_loopback(host)
    warnings: list[str] = []
    notes: list[str] = []
    if not tls_cert and not loopback:
        if not insecure:
            raise AuthConfigError(
                f"listening on {host} without TLS sends fills and tokens in clear: give "
                "--tls-cert and --tls-key, or --insecure to accept that"
            )
        warnings.append(f"listening on {host} WITHOUT TLS (--insecure): traffic is in clear")
    if not auth_file:
        if not loopback:
            raise AuthConfigError(
                f"listening on {host} without --auth-file would let anyone book, define "
                "accounts and push marks: give --auth-file (principals and roles)"
            )
        notes.append("no --auth-file: every caller may call every RPC (loopback only)")
    principals = load_principals(auth_file) if auth_file else None
    if principals is not None and principals.by_cn and not tls_client_ca:
        warnings.append(
            "principals with certificate_cn are never matched without --tls-client-ca (mTLS)"
        )
    return Transport(
        _read(tls_cert, "--tls-cert"),
        _read(tls_key, "--tls-key"),
        _read(tls_client_ca, "--tls-client-ca"),
        principals,
        tuple(warnings),
        tuple(notes),
    )


def _read(path: str, flag: str) -> bytes:
    if not path:
        return b""
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise AuthConfigError(f"{flag} {path}: cannot be read: {error}") from None
