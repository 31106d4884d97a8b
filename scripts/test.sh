#!/usr/bin/env bash
# Runs every test of micro. On a fresh machine it first installs what the tests
# need (Python packages for the interop tests; protoc comes vendored with
# micro-build), then lints, builds the workspace once, and runs the Rust suites
# (cargo-nextest, in parallel), the doc tests, the Python interop tests against
# real binaries, the cluster tests (several hosts under faults), and a short smoke
# run of the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# Disk: a clean run peaks at about 10 GB (the debug build, then the fuzz build).
# Say so up front rather than fail half an hour in with "No space left on device".
free_kb="$(df -Pk . | awk 'NR == 2 { print $4 }')"
printf 'Free disk: %s GB\n' "$((free_kb / 1024 / 1024))"
if [ "$free_kb" -lt $((12 * 1024 * 1024)) ]; then
  echo "warning: under 12 GB free; the build may run out of disk (cargo clean frees target/)" >&2
fi
# A full test run is not an edit-compile loop: incremental compilation would only
# add several GB of caches to target/debug. An exported CARGO_INCREMENTAL wins.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# System tools the tests use: curl and jq (the docs' examples, which the tests
# run), ip/unshare (mDNS tests run in network namespaces they create). Installed
# only when missing.
missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v jq >/dev/null 2>&1 || missing+=(jq)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  step "Installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

step "nats-server for the NATS broker tests (Debian's package)"
./scripts/nats-server.sh

step "etcd for the etcd registry, config and cluster tests (Debian's etcd-server)"
./scripts/etcd-server.sh

step "Python packages for the interop tests (.venv)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt

if ! command -v cargo-nextest >/dev/null 2>&1; then
  step "Installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

# Nothing the tests start may multicast on the machine's real interfaces: mDNS is
# off unless a test turns it on inside a network namespace it created.
export MICRO_MDNS_INTERFACES=none

step "Formatting and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p micro --all-targets --features etcd,vault -- -D warnings

step "Building the workspace"
cargo build --workspace --all-targets

step "Rust tests"
cargo nextest run --workspace --no-fail-fast
cargo test --workspace --doc

step "Interop tests (stock gRPC and HTTP clients against real binaries)"
# In a private network namespace with only loopback where the machine allows it:
# whatever the tests start can reach nothing but this machine's loopback.
if unshare --net true 2>/dev/null; then
  unshare --net sh -c 'ip link set lo up && exec .venv/bin/python -m pytest -q tests/interop'
else
  .venv/bin/python -m pytest -q tests/interop
fi

step "Cluster tests: etcd, NATS, micro api and greeters on several hosts, under faults"
# tests/cluster builds its hosts as network namespaces joined by a bridge (root;
# loopback addresses otherwise), runs a 3-member etcd cluster, nats-server with
# JetStream, micro api and greeter nodes, and kills, restarts and partitions them
# under load (about 75 s). Inside a private network namespace where the machine
# allows it, like the interop tests: its bridge then lives there too. It needs the
# debug `micro` and `greeter` built above; the summary table is printed at the end
# and written to target/cluster/summary.md.
if unshare --net true 2>/dev/null; then
  unshare --net sh -c 'ip link set lo up && exec .venv/bin/python -m pytest -q -rxX tests/cluster'
else
  .venv/bin/python -m pytest -q -rxX tests/cluster
fi

step "Fuzzing the gateway's routes-file parser and path resolver (bounded)"
FUZZ_SECONDS=20 ./scripts/fuzz.sh

step "Client libraries: Python and TypeScript against real binaries"
# TypeScript first: its npm install is what the Python suite's cross-language test
# (a Python subscriber receiving what the TypeScript client publishes) runs.
./clients/typescript/test.sh
./clients/python/test.sh -q

step "Benchmark smoke run (correctness of the bench harness, not a measurement)"
# The binaries of the workspace build above. `cargo run -p <bench>` would resolve
# features for that one package and build micro and its dependencies once more.
bin="${CARGO_TARGET_DIR:-target}/debug"
"$bin/bench-rpc" --smoke
"$bin/bench-registry" --smoke
"$bin/bench-broker" --smoke
"$bin/bench-wrappers" --smoke
"$bin/bench-proxy" --smoke
# Hosts and a 3-member etcd cluster from tests/cluster/harness.py (python3).
"$bin/bench-registry-etcd" --smoke
# The gateway bench drives the real binaries (micro, greeter, next to it in
# target/debug) with wrk, against Debian's nginx.
bench/gateway/install.sh
"$bin/bench-gateway" --smoke

step "All tests passed"
