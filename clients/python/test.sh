#!/usr/bin/env bash
# Tests of the Python client: makes clients/python/.venv (once), installs the
# package from this folder (as `pip install ./clients/python` does) with its test
# dependencies, and runs pytest against the real `micro` and `greeter` binaries,
# which must be built already (`cargo build -p micro-cli -p greeter`; found in
# $CARGO_TARGET_DIR/debug or <repo>/target/debug). Extra arguments go to pytest.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

# Nothing the tests start may multicast: mDNS stays off.
export MICRO_MDNS_INTERFACES=none

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check ".[test]"

# In a private network namespace with only loopback where the machine allows it
# (as the repository's interop tests): what the tests start reaches nothing else.
if command -v ip >/dev/null 2>&1 && unshare --net true 2>/dev/null; then
  exec unshare --net sh -c 'ip link set lo up && exec "$0" -m pytest -q "$@"' .venv/bin/python "$@"
fi
exec .venv/bin/python -m pytest -q "$@"
