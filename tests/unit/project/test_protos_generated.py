"""The committed protobuf code is exactly what protos/generate.sh produces from the .proto."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
GENERATED = (
    "tripline_pb2.py",
    "tripline_pb2.pyi",
    "tripline_pb2_grpc.py",
    "tripline_pb2_grpc.pyi",
)


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.mark.skipif(
    not (_have("grpc_tools") and _have("mypy_protobuf")),
    reason="needs the dev extras (pip install -e '.[dev]'): grpcio-tools, mypy-protobuf",
)
@pytest.mark.skipif(shutil.which("bash") is None, reason="generate.sh is a bash script")
def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    # generate.sh runs `python` and protoc finds protoc-gen-mypy_grpc on PATH: both must be
    # this interpreter's environment, whatever shell started the test run.
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])}
    result = subprocess.run(
        ["bash", str(ROOT / "protos" / "generate.sh"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = tmp_path / "protos" / "src" / "tripline" / "v1"
    assert sorted(p.name for p in out.iterdir()) == sorted(GENERATED)
    stale = [
        name
        for name in GENERATED
        if (out / name).read_bytes()
        != (ROOT / "protos" / "src" / "tripline" / "v1" / name).read_bytes()
    ]
    assert not stale, (
        f"committed generated code differs from protos/src/tripline/v1/tripline.proto: {stale}; "
        "run protos/generate.sh and commit the result"
    )
