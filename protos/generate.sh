#!/usr/bin/env bash
# Regenerates the committed Python code for protos/. The code generators are
# pinned so the output is reproducible; tests/unit/project/test_protos_generated.py runs
# this into a temporary directory and fails when the result differs.
#   usage: protos/generate.sh [OUTPUT_ROOT]   (default: the repository root; code lands
#   in OUTPUT_ROOT/protos/src/tripline/v1)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root}
cd "$root"
python - <<'PY'
import importlib.metadata as md, sys
want = {"grpcio-tools": "1.85.1", "mypy-protobuf": "5.1.0"}
bad = {k: md.version(k) for k in want if md.version(k) != want[k]}
if bad:
    sys.exit(f"protos/generate.sh needs {want}, found {bad}: pip install -e '.[dev]'")
PY
mkdir -p "$out/protos/src/tripline/v1"
python -m grpc_tools.protoc -I protos/src \
  --python_out="$out/protos/src" --pyi_out="$out/protos/src" \
  --grpc_python_out="$out/protos/src" --mypy_grpc_out="$out/protos/src" \
  protos/src/tripline/v1/tripline.proto
