#!/usr/bin/env bash
# Generates the TypeScript messages and grpc-js service definitions of the proxy's
# API (proto/micro/v1 and grpc.health.v1) with protoc and ts-proto.
#
#   scripts/generate.sh [OUT_DIR]     (default: src/gen)
#
# Needs protoc (installed with apt-get when missing and allowed) and ts-proto
# (a devDependency: `npm ci` first). Runnable from any directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
proto_root="$(cd "$here/../../proto" && pwd)"
out="${1:-$here/src/gen}"

# The well-known types (google/protobuf/struct.proto) ship beside protoc.
find_well_known() {
  local dir
  for dir in /usr/include /usr/local/include "$(dirname "$(command -v protoc 2>/dev/null || echo /)")/../include"; do
    if [ -f "$dir/google/protobuf/struct.proto" ]; then
      echo "$dir"
      return
    fi
  done
  true
}

if ! command -v protoc >/dev/null 2>&1 || [ -z "$(find_well_known)" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "generate.sh: installing protoc (protobuf-compiler, libprotobuf-dev) with apt-get" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler libprotobuf-dev >&2
  else
    echo "generate.sh: protoc or google/protobuf/struct.proto is missing: install protobuf-compiler and libprotobuf-dev (Debian/Ubuntu) or protoc from your package manager" >&2
    exit 1
  fi
fi
well_known="$(find_well_known)"
if [ -z "$well_known" ]; then
  echo "generate.sh: google/protobuf/struct.proto not found (Debian: apt-get install libprotobuf-dev)" >&2
  exit 1
fi

plugin="$here/node_modules/.bin/protoc-gen-ts_proto"
if [ ! -x "$plugin" ]; then
  echo "generate.sh: $plugin is missing: run \`npm ci\` in $here first" >&2
  exit 1
fi

rm -rf "$out"
mkdir -p "$out"
protoc \
  --plugin="protoc-gen-ts_proto=$plugin" \
  --ts_proto_out="$out" \
  --ts_proto_opt=outputServices=grpc-js,env=node,esModuleInterop=true,importSuffix=.js,useExactTypes=false \
  -I "$proto_root" -I "$well_known" \
  "$proto_root"/micro/v1/*.proto \
  "$proto_root"/grpc/health/v1/health.proto

# The header names the protoc version, which differs between machines and says
# nothing about the code: drop it so the committed files compare equal anywhere.
find "$out" -name '*.ts' -exec sed -i '/^\/\/   protoc  /d' {} +
