#!/usr/bin/env bash
# Runs each cargo-fuzz target of the API gateway (the routes-file parser, the
# zero-config path resolver, the client's HTTP/1.1 answer decoder and the
# gateway's own HTTP/1.1 head parser) for a bounded time: FUZZ_SECONDS each
# (default 20).
# Installs cargo-fuzz when missing.
set -euo pipefail
cd "$(dirname "$0")/../crates/micro-cli/fuzz"
seconds="${FUZZ_SECONDS:-20}"

# libFuzzer's instrumentation takes unstable compiler flags: a nightly toolchain if
# there is one, else the machine's stable one with RUSTC_BOOTSTRAP=1 (FUZZ_TOOLCHAIN
# chooses: nightly or stable).
toolchain="${FUZZ_TOOLCHAIN:-}"
if [ -z "$toolchain" ]; then
  if cargo +nightly --version >/dev/null 2>&1; then toolchain=nightly; else toolchain=stable; fi
fi
if [ "$toolchain" = nightly ]; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> Installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for target in routes_parse resolve_path http1_answer h1_head; do
  echo "==> fuzzing $target for ${seconds}s"
  # A crash or an assertion failure stops the run with the input saved under
  # artifacts/$target/; rerun it with `cargo +nightly fuzz run $target <file>`
  # (or RUSTC_BOOTSTRAP=1 cargo fuzz run ... on stable).
  if ! "${fuzz[@]}" run "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 \
      -print_final_stats=1 >"$log" 2>&1; then
    tail -60 "$log" >&2
    echo "fuzz: $target failed (the input is under crates/micro-cli/fuzz/artifacts/$target/)" >&2
    exit 1
  fi
  grep -E "^(Done|stat::number_of_executed_units)" "$log" || true
done
