"""Generate the Python protobuf/gRPC code from protos/ (the one way to do it).

    python scripts/generate_protos.py          # rewrite protos/**/*_pb2*.py(i)
    python scripts/generate_protos.py --check  # fail if the committed code differs

The generated modules live next to their .proto files, so `protos/` is the import root of the
`portfolio.v1` package. grpcio-tools and mypy-protobuf are pinned in pyproject.toml, which makes
the output reproducible byte for byte.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


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
    if drift:
        print("generated protobuf code is out of date; run scripts/generate_protos.py:")
        for path in drift:
            print(f"  {path}")
        return 1
    print("generated protobuf code matches protos/")
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
    print("generated", ", ".join(sorted(str(p) for p in generated_files(PROTOS))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
