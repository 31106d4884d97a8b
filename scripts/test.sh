#!/usr/bin/env bash
# Runs every test of micro. On a fresh machine it first installs what the tests
# need (Python packages for the interop tests; protoc comes vendored with
# micro-build), then lints, builds the workspace once, and runs the Rust suites
# (cargo-nextest, in parallel), the doc tests, the Python interop tests against
# real binaries, and a short smoke run of the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "Python packages for the interop tests (.venv)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt

if ! command -v cargo-nextest >/dev/null 2>&1; then
  step "Installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

step "Formatting and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings

step "Building the workspace"
cargo build --workspace --all-targets

step "Rust tests"
cargo nextest run --workspace --no-fail-fast
cargo test --workspace --doc

step "Interop tests (stock gRPC and HTTP clients against real binaries)"
.venv/bin/python -m pytest -q tests/interop

step "Benchmark smoke run (correctness of the bench harness, not a measurement)"
cargo run --quiet -p bench-rpc -- --smoke

step "All tests passed"
