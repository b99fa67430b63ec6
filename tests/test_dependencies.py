"""The arrows between the top-level packages: the service does not use its own SDK, the relay is
a client of the service and nothing more, and the TWS link they share depends on neither.

A wrong import here still runs (everything is on one path), so only a test notices it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> the project's packages it must not import
FORBIDDEN = {
    "server": {"client", "relay", "reports"},
    "relay": {"server"},
    "tws": {"server", "client", "relay"},
    "cli": {"server", "client", "relay", "tws"},
    # The report reads the service through the protocol, or the store with arcticdb: a client.
    "reports": {"server", "relay", "tws", "cli"},
    # The operator CLI is a client too: the SDK, the protocol, and the store through arcticdb.
    "portfolio_cli": {"server", "relay", "tws", "reports"},
}


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_none_of_its_forbidden_packages(package: str) -> None:
    wrong = [
        f"{path.relative_to(ROOT)} imports {sorted(_imported_roots(path) & FORBIDDEN[package])}"
        for path in sorted((ROOT / package).rglob("*.py"))
        if _imported_roots(path) & FORBIDDEN[package]
    ]
    assert wrong == []
