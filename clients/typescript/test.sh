#!/usr/bin/env bash
# Installs the TypeScript client's dependencies (from package-lock.json), builds
# the tests and runs them against real `micro server` and `greeter` binaries,
# which must be built already (cargo build -p micro-cli -p greeter).
# Runnable from any directory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
npm ci --no-audit --no-fund
# dist/ is committed (so `npm install ./clients/typescript` needs no build); the
# tests check it is what src/ builds to.
npm test
