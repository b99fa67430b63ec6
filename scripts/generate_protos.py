"""Generate the Python and TypeScript code from protos/ (the one way to do it).

    python scripts/generate_protos.py          # rewrite protos/**/*_pb2*.py(i) and the TS code
    python scripts/generate_protos.py --check  # fail if the committed code differs

The generated modules live next to their .proto files, so `protos/` is the import root of the
`portfolio.v1` package. grpcio-tools and mypy-protobuf are pinned in pyproject.toml, which makes
the output reproducible byte for byte.

The TypeScript client's code (client/typescript/src/gen/) comes from `buf generate` with
buf.gen.yaml and the protoc-gen-es plugin pinned in client/typescript/package-lock.json
(installed with `npm ci` here when node_modules is missing or older than the lock file).
third_party/googleapis/ (google/rpc, copied from googleapis) is generated for TypeScript only:
Python has it from googleapis-common-protos.
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
TYPESCRIPT = ROOT / "client" / "typescript"
TS_GENERATED = Path("client", "typescript", "src", "gen")


def proto_files() -> list[Path]:
    return sorted(PROTOS.rglob("*.proto"))


def generated_files(root: Path) -> set[Path]:
    return {
        path.relative_to(root)
        for path in root.rglob("*")
        if path.is_file() and path.name.endswith(GENERATED_SUFFIXES)
    }


def generate(out: Path) -> None:
    well_known = resources.files("grpc_tools") / "_proto"
    plugin_dir = Path(sys.executable).parent
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={PROTOS}",
        f"--proto_path={well_known}",
        f"--plugin=protoc-gen-mypy={plugin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={plugin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *(str(path.relative_to(PROTOS)) for path in proto_files()),
    ]
    subprocess.run(command, check=True, cwd=PROTOS)


def ensure_node_modules() -> None:
    """`npm ci` in client/typescript unless node_modules was installed from this very lock."""
    digest = hashlib.sha256((TYPESCRIPT / "package-lock.json").read_bytes()).hexdigest()
    stamp = TYPESCRIPT / "node_modules" / ".installed-from-lock"
    if stamp.is_file() and stamp.read_text() == digest:
        return
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=TYPESCRIPT, check=True)
    stamp.write_text(digest)


def generate_typescript(out: Path | None = None) -> None:
    """`buf generate` into client/typescript/src/gen, or under `out` (for the check)."""
    ensure_node_modules()
    buf = Path(sys.executable).parent / "buf"
    subprocess.run([buf, "generate", *(["-o", str(out)] if out else [])], check=True, cwd=ROOT)


def typescript_drift() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        generate_typescript(Path(tmp))
        fresh, committed = Path(tmp) / TS_GENERATED, ROOT / TS_GENERATED
        comparison = filecmp.dircmp(fresh, committed)
        return _differences(comparison, TS_GENERATED)


def _differences(comparison: filecmp.dircmp[str], where: Path) -> list[str]:
    # dircmp compares files by size and mtime first: compare contents for the same names.
    _, mismatch, errors = filecmp.cmpfiles(
        comparison.left, comparison.right, comparison.common_files, shallow=False
    )
    drift = [str(where / name) for name in [*comparison.left_only, *comparison.right_only]]
    drift += [str(where / name) for name in [*mismatch, *errors]]
    for name, sub in comparison.subdirs.items():
        drift += _differences(sub, where / name)
    return drift


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        expected, committed = generated_files(fresh), generated_files(PROTOS)
        drift = sorted(str(p) for p in expected ^ committed)
        drift += sorted(
            str(p)
            for p in expected & committed
            if not filecmp.cmp(fresh / p, PROTOS / p, shallow=False)
        )
    drift += typescript_drift()
    if drift:
        print("generated protobuf code is out of date; run scripts/generate_protos.py:")
        for path in drift:
            print(f"  {path}")
        return 1
    print("generated protobuf code (Python and TypeScript) matches protos/")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    if parser.parse_args().check:
        return check()
    for stale in generated_files(PROTOS):
        (PROTOS / stale).unlink()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        for path in generated_files(Path(tmp)):
            (PROTOS / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(tmp) / path, PROTOS / path)
    generate_typescript()
    print(
        "generated", ", ".join(sorted(str(p) for p in generated_files(PROTOS))), "and", TS_GENERATED
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
