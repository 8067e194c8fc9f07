#!/usr/bin/env bash
# Install what the benchmarks need on Debian 12 (run as root), on top of scripts/deps.sh.
# Idempotent: asks dpkg first and runs apt-get only for the packages that are missing.
set -euo pipefail

PACKAGES=(
    build-essential apache2 apache2-dev libssl-dev libwebsockets-dev pkg-config
    node-ws python3-websockets linux-perf valgrind util-linux procps python3-matplotlib
    nginx libnginx-mod-nchan
)

have_cmd_for() {
    case "$1" in
        nodejs) command -v node >/dev/null 2>&1 ;;
        linux-perf) command -v perf >/dev/null 2>&1 ;;
        *) return 1 ;;
    esac
}

missing=()
for p in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    if [ "$status" != "installed" ] && ! have_cmd_for "$p"; then
        missing+=("$p")
    fi
done
# node-ws needs a node binary; nodejs may come from another source (see scripts/deps.sh).
if ! command -v node >/dev/null 2>&1; then
    missing+=(nodejs)
fi

if [ "${#missing[@]}" -gt 0 ]; then
    echo "bench/deps.sh: installing: ${missing[*]}"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q </dev/null
    # nginx (the nchan peer, bench/sse.py) must not start as a service on port 80: the
    # benchmarks start their own, on loopback.  policy-rc.d 101 tells the package so.
    policy=""
    if printf '%s\n' "${missing[@]}" | grep -qx nginx && [ ! -e /usr/sbin/policy-rc.d ]; then
        policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
        $SUDO chmod 755 "$policy"
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" </dev/null
    if [ -n "$policy" ]; then
        $SUDO rm -f "$policy"
    fi
    if printf '%s\n' "${missing[@]}" | grep -qx apache2; then
        (service apache2 stop || true) >/dev/null 2>&1 </dev/null
    fi
else
    echo "bench/deps.sh: all benchmark packages present"
fi
exit 0
