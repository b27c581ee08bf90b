#!/usr/bin/env bash
# Generate the Python gRPC stubs from protos/ into the shared library.
#   scripts/gen-protos.sh [OUT_DIR]   (default: libs/common/src/wirekube_common/protos)
# The generated files are committed; libs/common/tests/test_protos_fresh.py
# regenerates into a temporary directory and fails if they are stale.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/libs/common/src/wirekube_common/protos}"
PY="${PYTHON:-python3}"
if [ -z "${PYTHON:-}" ] && command -v uv >/dev/null 2>&1; then
  PY="uv run --project $ROOT python"
fi
mkdir -p "$OUT"
mapfile -t PROTOS < <(cd "$ROOT/protos" && find . -name '*.proto' | sed 's|^\./||' | sort)
(cd "$ROOT/protos" && $PY -m grpc_tools.protoc -I. \
  --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT" "${PROTOS[@]}")
# Generated modules import each other as top-level "wirekube.*"; make them
# package-relative so they live inside wirekube_common.protos.
find "$OUT" -name '*_pb2*.py' -print0 | xargs -0 sed -i -E \
  's/^from wirekube\.([a-z0-9_.]+) import ([a-z0-9_]+_pb2)/from wirekube_common.protos.wirekube.\1 import \2/'
# Every directory becomes a package.
find "$OUT" -type d -exec sh -c 'test -f "$1/__init__.py" || : > "$1/__init__.py"' _ {} \;
