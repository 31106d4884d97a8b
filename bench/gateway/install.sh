#!/bin/sh
# Installs what bench-gateway drives besides micro: wrk (the load) and nginx (the
# reverse proxy it is compared with), from Debian's archive, when they are missing.
# Needs root (or sudo). Nothing is started: the bench runs its own nginx as an
# unprivileged foreground process, and the package's system service is kept from
# starting at install time (policy-rc.d), so no nginx is left listening on port 80.
set -eu

missing=""
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
# Debian's nginx binary lives in /usr/sbin, often not on a user's PATH.
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$missing nginx"
if [ -z "$missing" ]; then
    echo "bench/gateway: wrk and nginx are installed"
    exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi

# Keep invoke-rc.d from starting the nginx service on install (101: "action not
# allowed"). An existing policy (Docker images ship one) is left as it is.
policy=/usr/sbin/policy-rc.d
made_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
    made_policy=1
fi
cleanup() {
    if [ -n "$made_policy" ]; then
        $sudo rm -f "$policy"
    fi
}
trap cleanup EXIT

echo "bench/gateway: installing$missing"
$sudo apt-get update -qq
# shellcheck disable=SC2086 # one word per package
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing
