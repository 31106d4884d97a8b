#!/usr/bin/env bash
# Installs Debian's nats-server (used by the NATS broker tests and bench/broker,
# which start their own server on a loopback port) when it is missing.
set -euo pipefail
if command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ]; then
  exit 0
fi
apt-get update -qq && apt-get install -y -qq nats-server
