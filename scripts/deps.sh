#!/usr/bin/env bash
# Install what mod_websocket needs to build, demo and test, on Debian 12 (run as root).
# Idempotent and fast when everything is there: dpkg-query first, then a single
# `apt-get update` + `apt-get install` of only the missing packages.
# Works non-interactively (CI=true, no stdin).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PACKAGES=(
    build-essential apache2 apache2-dev apache2-utils libapr1-dev libaprutil1-dev
    zlib1g-dev libhiredis-dev libssl-dev openssl
    python3-pytest python3-pytest-timeout python3-websockets python3-h2 python3-wsproto
    python3-aiohttp python3-tornado python3-websocket
    nodejs npm node-ws
    redis-server chromium curl valgrind clang
    debhelper dpkg-dev lintian pkg-config     # make deb (dh_apache2 is in apache2-dev)
)

# A package counts as present when dpkg has it installed, or (for nodejs/npm) when the
# command is already there from another source: some images ship NodeSource's nodejs,
# which bundles npm and conflicts with Debian's npm package.
have_cmd_for() {
    case "$1" in
        nodejs) command -v node >/dev/null 2>&1 ;;
        npm) command -v npm >/dev/null 2>&1 ;;
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

if [ "${#missing[@]}" -gt 0 ]; then
    echo "deps.sh: installing: ${missing[*]}"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q </dev/null
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" </dev/null
    # Installing apache2 starts its service on port 80 on some images; the tests run
    # their own httpd on free ports, so the system one does not matter. Stop it if
    # it was started here, so it does not hold resources (ignore failures: no systemd).
    if printf '%s\n' "${missing[@]}" | grep -qx apache2; then
        (service apache2 stop || true) >/dev/null 2>&1 </dev/null
    fi
else
    echo "deps.sh: all Debian packages present"
fi

# ---- npm packages (tests/browser) ----------------------------------------------------
# playwright-core for the browser tests (npm ci from the lock file; never a browser
# download: the tests drive Debian's /usr/bin/chromium)
bash tests/browser/install.sh

exit 0
