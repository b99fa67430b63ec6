"""The contract kept: `buf breaking` (scripts/lint) against the released image fails a change
that renumbers, retypes or removes a field, and passes the protos as they are.

Each case edits a copy of the workspace in a temporary folder (never the repository's
protos), then runs buf as scripts/lint does, against the image scripts/lint names."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUF = ROOT / ".venv" / "bin" / "buf"
PROTO = Path("protos/portfolio/v1/portfolio.proto")

pytestmark = pytest.mark.skipif(not BUF.exists(), reason="buf is installed by scripts/test")


def released_image() -> Path:
    """The image scripts/lint checks against: one home for its name."""
    found = re.search(r"buf\" breaking --against (\S+)", (ROOT / "scripts/lint").read_text())
    assert found, "scripts/lint runs no buf breaking"
    return ROOT / found.group(1)


def workspace(tmp_path: Path) -> Path:
    """A copy of buf.yaml (and buf.lock) with every module it names."""
    copy = tmp_path / "workspace"
    copy.mkdir()
    config = (ROOT / "buf.yaml").read_text()
    for name in ("buf.yaml", "buf.lock"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, copy / name)
    for module in re.findall(r"^\s*-\s*path:\s*(\S+)", config, flags=re.MULTILINE):
        shutil.copytree(ROOT / module, copy / module, ignore=shutil.ignore_patterns("*.py*"))
    return copy


def breaking(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BUF), "breaking", "--against", str(released_image())],
        cwd=folder, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def edit(folder: Path, old: str, new: str) -> None:
    path = folder / PROTO
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


def test_the_released_image_is_committed_and_the_protos_as_they_are_pass(tmp_path):
    assert released_image().is_file()
    result = breaking(workspace(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        pytest.param(
            "string quantity = 6;", "string quantity = 60;",
            'Previously present field "6" with name "quantity" on message "Fill" was deleted',
            id="renumbered",
        ),
        pytest.param(
            "string quantity = 6;", "double quantity = 6;",
            'Field "6" with name "quantity" on message "Fill" changed type from "string" to '
            '"double"',
            id="retyped",
        ),
        pytest.param(
            "string quantity = 6;", "",
            'Previously present field "6" with name "quantity" on message "Fill" was deleted',
            id="removed",
        ),
    ],
)  # fmt: skip
def test_a_change_that_breaks_callers_fails(tmp_path, old, new, says):
    folder = workspace(tmp_path)
    edit(folder, old, new)
    result = breaking(folder)
    assert result.returncode != 0
    assert says in result.stdout, result.stdout + result.stderr


def test_an_addition_passes(tmp_path):
    """A new field in a free number is what every release so far has done."""
    folder = workspace(tmp_path)
    edit(folder, "string quantity = 6;", "string quantity = 6;\n  string added_for_test = 900;")
    result = breaking(folder)
    assert result.returncode == 0, result.stdout + result.stderr
