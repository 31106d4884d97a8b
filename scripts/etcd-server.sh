#!/usr/bin/env bash
# Installs Debian's etcd (package etcd-server), used by the etcd config tests and the
# docs' config examples, which start their own etcd on loopback ports, when missing.
set -euo pipefail
if command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ]; then
  exit 0
fi
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server
