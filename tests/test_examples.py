"""The documentation cannot drift: every code example in README.md and docs/ is a file of
examples/ that runs here against a real service on a fresh LMDB store, each marked block
equals its file, each marked output is what the file prints, no Python is left unmarked, and
every internal link resolves.

In the pages, an example is
    <!-- example: examples/NAME.py -->  a ```python fenced block  <!-- /example -->
and what it prints
    <!-- output: KEY -->  a ``` fenced block  <!-- /output -->
where KEY is one of RUNS below. `python -m tests.test_examples` rewrites the marked blocks from
the files (the outputs stay as written: check them by hand, then here).
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.service_process import ENV, ROOT, start_service

PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("**/*.md"))]
MARKED = re.compile(
    r"<!-- (?P<what>example|output): (?P<key>[^>]+?) -->\n"
    r"```(?P<lang>\w*)\n(?P<body>.*?)```\n<!-- /(?P=what) -->",
    re.DOTALL,
)
FENCE = re.compile(r"^```(\w*)\n.*?^```$", re.DOTALL | re.MULTILINE)
LINK = re.compile(r"\]\(([^)\s]+)\)")

# Output keys, in the order they run: the pandas reads first on the fresh store (while the
# service runs), the service's examples, then the pandas reads once the service stopped (a
# stop writes every analysts' view, so their figures are final).
FRESH_READS = "examples/pandas_reads.py on a fresh store"
SERVICE_EXAMPLES = ("examples/five_minutes.py", "examples/protocol_session.py")
READS = "examples/pandas_reads.py"
RUNS = (FRESH_READS, *SERVICE_EXAMPLES, READS)
# Examples in other languages, shown in the pages and run by their own tests.
RUN_ELSEWHERE = {"client/typescript/examples/quickstart.ts": "ts"}  # tests/sdk/test_typescript.py


def marked(what: str) -> list[tuple[Path, str, str, str]]:
    """(page, key, language, body) of each marked block."""
    return [
        (page, found["key"], found["lang"], found["body"])
        for page in PAGES
        for found in MARKED.finditer(page.read_text())
        if found["what"] == what
    ]


def run(example: str, service: str, store: str) -> str:
    """Runs an example as a reader would, FutureWarnings as errors; returns what it printed."""
    result = subprocess.run(
        [sys.executable, "-W", "error::FutureWarning", example],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**ENV, "PORTFOLIO_SERVICE": service, "PORTFOLIO_STORE": store},
    )  # fmt: skip
    assert result.returncode == 0, f"{example} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def printed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What each run of RUNS printed, on one service and one fresh store."""
    store = f"lmdb://{tmp_path_factory.mktemp('examples')}/store"
    process, address = start_service("--store", store, "--position-history-seconds", "0")
    assert process.stderr is not None
    # The service's log goes nowhere, but is read, so that it can never fill the pipe.
    threading.Thread(target=process.stderr.read, daemon=True).start()
    outputs = {}
    try:
        outputs[FRESH_READS] = run("examples/pandas_reads.py", address, store)
        for example in SERVICE_EXAMPLES:
            outputs[example] = run(example, address, store)
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0
    outputs[READS] = run("examples/pandas_reads.py", address, store)
    return outputs


def test_every_example_is_marked_in_a_page_and_every_marked_block_equals_its_file():
    examples = marked("example")
    assert {key for _, key, _, _ in examples} == {
        str(path.relative_to(ROOT)) for path in (ROOT / "examples").glob("*.py")
    } | set(RUN_ELSEWHERE)
    for page, key, lang, body in examples:
        assert lang == RUN_ELSEWHERE.get(key, "python"), f"{page.name}: {key}"
        assert body == (ROOT / key).read_text(), f"{page.name}: the block of {key} differs"


def test_no_python_block_is_left_unmarked():
    """Code blocks not run here are shell, configuration or output, never Python."""
    for page in PAGES:
        text = MARKED.sub("", page.read_text())
        languages = [found.group(1) for found in FENCE.finditer(text)]
        assert not {"python", "py", "pycon"} & set(languages), page.name


def test_every_marked_output_is_one_of_the_runs():
    assert {key for _, key, _, _ in marked("output")} <= set(RUNS)


@pytest.mark.parametrize("key", RUNS)
def test_an_example_prints_what_its_page_says(printed, key):
    pages = [(page, body) for page, found, _, body in marked("output") if found == key]
    if key == FRESH_READS:  # on an empty store it must run (once NoSuchVersionException)
        assert printed[key] == "no fills in U123 yet\n"
    for page, body in pages:
        assert printed[key] == body, f"{page.name}: what {key} prints differs"


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, blanks to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(found) for found in re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_internal_link_resolves(page):
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not ours to check
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists() or (anchor and file.suffix == ".md" and anchor not in anchors(file)):
            broken.append(target)
    assert broken == []


def sync() -> None:
    """Rewrites each marked example block from its file."""
    for page in PAGES:
        text = page.read_text()

        def from_file(found: re.Match[str]) -> str:
            if found["what"] != "example":
                return found.group(0)
            body = (ROOT / found["key"]).read_text()
            lang = RUN_ELSEWHERE.get(found["key"], "python")
            return f"<!-- example: {found['key']} -->\n```{lang}\n{body}```\n<!-- /example -->"

        page.write_text(MARKED.sub(from_file, text))


if __name__ == "__main__":
    sync()
