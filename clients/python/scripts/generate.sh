#!/usr/bin/env bash
# Regenerates the gRPC stubs of micro's proxy API (proto/micro/v1) into the
# package, with grpcio-tools. Usage: scripts/generate.sh [OUT_DIR]
# (default src/micro/_proto). PYTHON names the interpreter that has grpcio-tools
# (default: the client's .venv, else python3).
#
# protoc writes `from micro.v1 import x_pb2`, which would resolve inside this very
# package (it is named `micro` too); the imports are rewritten to relative ones so
# the stubs work wherever the package is installed.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${1:-$here/src/micro/_proto}"
python="${PYTHON:-}"
if [ -z "$python" ]; then
  if [ -x "$here/.venv/bin/python" ]; then python="$here/.venv/bin/python"; else python=python3; fi
fi

well_known="$("$python" -c 'import grpc_tools, os; print(os.path.join(grpc_tools.__path__[0], "_proto"))')"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

(cd "$repo/proto" && "$python" -m grpc_tools.protoc -I. -I"$well_known" \
  --python_out="$work" --pyi_out="$work" --grpc_python_out="$work" \
  micro/v1/broker.proto micro/v1/client.proto micro/v1/config.proto micro/v1/registry.proto)

mkdir -p "$out"
rm -f "$out"/*_pb2.py "$out"/*_pb2.pyi "$out"/*_pb2_grpc.py
for f in "$work"/micro/v1/*.py "$work"/micro/v1/*.pyi; do
  sed -e 's/^from micro\.v1 import /from . import /' "$f" > "$out/$(basename "$f")"
done
cat > "$out/__init__.py" <<'PY'
"""Generated gRPC stubs of micro's proxy API (proto/micro/v1); do not edit.

Regenerate with clients/python/scripts/generate.sh.
"""
PY
