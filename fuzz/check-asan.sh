#!/usr/bin/env bash
# The integration suite against a module and plugins built with ASan + UBSan.
#
#   make check-asan [PYTEST_ARGS='-k echo']     (builds build/asan first)
#   bash fuzz/check-asan.sh BUILD_DIR [pytest args...]
#
# httpd itself is not instrumented, so it gets gcc's shared sanitizer runtimes through
# LD_PRELOAD (ASan must be the first library loaded).  Every report goes to a file in
# a fresh directory (log_path; httpd's children run as www-data, so it is
# world-writable) and stops the process (halt_on_error, abort_on_error: the error log
# then shows "exit signal", which the suite's crash check catches too).  Leak checking
# is off: httpd keeps its pools until exit and children exit without freeing them.
# The run fails if pytest fails or if any sanitizer report was written.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

build=$(realpath "${1:?usage: check-asan.sh BUILD_DIR [pytest args]}")
shift
for f in "$build/mod_websocket.so" "$build/plugins/echo.so" "$build/plugins/probe.so"; do
    [ -f "$f" ] || { echo "check-asan: $f is missing (make check-asan builds it)" >&2; exit 2; }
done

asan=$(gcc -print-file-name=libasan.so)
ubsan=$(gcc -print-file-name=libubsan.so)
logdir=$(mktemp -d /tmp/ws-asan.XXXXXX)
chmod 1777 "$logdir"

export WS_BUILD=$build
WS_HTTPD_ENV=$(/usr/bin/python3 - "$asan" "$ubsan" "$logdir" <<'EOF'
import json, sys
asan, ubsan, logdir = sys.argv[1:4]
common = f"log_path={logdir}/report:halt_on_error=1:print_stacktrace=1"
print(json.dumps({
    "LD_PRELOAD": f"{asan} {ubsan}",
    "ASAN_OPTIONS": common + ":abort_on_error=1:detect_leaks=0:use_sigaltstack=0",
    "UBSAN_OPTIONS": common + ":abort_on_error=1",
}))
EOF
)
export WS_HTTPD_ENV

echo "check-asan: module and plugins from $build"
echo "check-asan: sanitizer reports (if any) go to $logdir"
# the whole suite unless a test path is given
paths=(tests/integration)
for a in "$@"; do
    case $a in tests/*) paths=() ;; esac
done
PYTHONPATH=fuzz${PYTHONPATH:+:$PYTHONPATH} /usr/bin/python3 -m pytest -q -p no:cacheprovider \
    -p asan_plugin "${paths[@]}" "$@"
rc=$?

reports=$(find "$logdir" -type f -name 'report*' | sort)
if [ -n "$reports" ]; then
    echo "check-asan: FAILED: sanitizer reports:" >&2
    for r in $reports; do
        echo "=== $r" >&2
        head -60 "$r" >&2
    done
    exit 1
fi
if [ "$rc" != 0 ]; then
    echo "check-asan: FAILED: pytest exit status $rc (no sanitizer report written)" >&2
    exit "$rc"
fi
echo "check-asan: OK (no sanitizer report)"
rm -rf "$logdir"
