#!/usr/bin/env bash
# Runs each cargo-fuzz target of the API gateway (the routes-file parser and the
# zero-config path resolver) for a bounded time: FUZZ_SECONDS each (default 20).
# Needs a nightly toolchain (libFuzzer's instrumentation); installs cargo-fuzz.
set -euo pipefail
cd "$(dirname "$0")/../crates/micro-cli/fuzz"
seconds="${FUZZ_SECONDS:-20}"

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz needs a nightly toolchain: rustup toolchain install nightly" >&2
  exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "==> Installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for target in routes_parse resolve_path; do
  echo "==> fuzzing $target for ${seconds}s"
  # A crash or an assertion failure stops the run with the input saved under
  # artifacts/$target/; rerun it with `cargo +nightly fuzz run $target <file>`.
  if ! cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 \
      -print_final_stats=1 >"$log" 2>&1; then
    tail -60 "$log" >&2
    echo "fuzz: $target failed (the input is under crates/micro-cli/fuzz/artifacts/$target/)" >&2
    exit 1
  fi
  grep -E "^(Done|stat::number_of_executed_units)" "$log" || true
done
