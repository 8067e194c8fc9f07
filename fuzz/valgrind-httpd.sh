#!/usr/bin/env bash
# One httpd process under valgrind (memcheck), driven through echo and fault scenarios.
#
#   bash fuzz/valgrind-httpd.sh [ROUNDS] [MPM]   (make valgrind-httpd; needs `make all`)
#
# httpd runs in single-process mode (-X: no children, the one process serves every
# connection, so valgrind sees all of the module's work: plugin threads, TLS) from
# build/, with the prefork MPM by default (the blocking driver, one connection at a
# time); MPM=event runs the event loops instead.  fuzz/valgrind_client.py runs
# every scenario over ws and wss ROUNDS times (default 2): echo of every length class,
# fragments and pings, protocol errors (1002, 1007, 1009), the probe plugin (flood,
# close, fail -> 1011), a never-reading client (1008), abrupt disconnects, refused
# handshakes.  Then SIGTERM, and valgrind's report:
#   - any memory error (invalid read/write, use of uninitialised values) fails;
#   - any "definitely lost" block fails (possibly/still reachable blocks are httpd's
#     pools and OpenSSL's caches at exit and are not counted).
# The full report is kept in the printed directory.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds=${1:-2}
mpm=${2:-prefork}
repo=$(pwd)
for f in build/mod_websocket.so build/plugins/echo.so build/plugins/probe.so; do
    [ -f "$f" ] || { echo "valgrind-httpd: $f missing: run make all" >&2; exit 2; }
done
command -v valgrind >/dev/null || { echo "valgrind-httpd: apt-get install valgrind" >&2; exit 2; }

dir=$(mktemp -d /tmp/ws-valgrind.XXXXXX)
chmod 755 "$dir"
read -r port tls_port cafile < <(/usr/bin/python3 - "$dir" "$repo" "$mpm" <<'EOF'
import socket, sys
sys.path.insert(0, sys.argv[2] + "/scripts")
import genconf

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

port, tls_port = free_port(), free_port()
cfg = genconf.make_config(sys.argv[1], port, tls_port, sys.argv[3], tls=True,
                          loglevel="warn websocket:info",
                          locations=[("/echo", "echo"), ("/probe", "probe"),
                                     {"path": "/small", "plugin": "echo",
                                      "max_message_size": 1024},
                                     {"path": "/smallq", "plugin": "probe",
                                      "max_queue": 65536}])
print(port, tls_port, cfg.cert)
EOF
)

echo "valgrind-httpd: $mpm, $dir (ports $port, $tls_port)"
valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite \
    --errors-for-leak-kinds=definite --error-exitcode=99 --num-callers=40 \
    --track-origins=yes --log-file="$dir/valgrind.log" \
    /usr/sbin/apache2 -X -f "$dir/httpd.conf" >"$dir/stdout.txt" 2>&1 &
vpid=$!

cleanup() {
    kill -KILL "$vpid" 2>/dev/null || true
}
trap cleanup EXIT

# valgrind starts httpd slowly: wait for an HTTP answer (with a deadline)
for _ in $(seq 1 300); do
    if curl -s -o /dev/null "http://127.0.0.1:$port/server-status"; then
        break
    fi
    kill -0 "$vpid" 2>/dev/null || { cat "$dir/valgrind.log" >&2; exit 1; }
    sleep 0.2
done

t0=$(date +%s)
client_rc=0
/usr/bin/python3 fuzz/valgrind_client.py "$port" "$tls_port" "$cafile" "$rounds" || client_rc=$?

kill -TERM "$vpid"
vrc=0
wait "$vpid" || vrc=$?
trap - EXIT
t1=$(date +%s)

errors=$(grep -oE 'ERROR SUMMARY: [0-9]+ errors' "$dir/valgrind.log" | tail -1)
lost=$(grep -E 'definitely lost:' "$dir/valgrind.log" | tail -1 | sed 's/^==[0-9]*== *//')
echo "valgrind-httpd: client exit $client_rc, valgrind exit $vrc, $((t1 - t0)) s"
echo "valgrind-httpd: $errors; ${lost:-definitely lost: 0 bytes}"
grep -E 'WS00040' "$dir/error.log" | wc -l | xargs echo "valgrind-httpd: sessions served:"
if [ "$vrc" != 0 ] || [ "$client_rc" != 0 ]; then
    echo "valgrind-httpd: FAILED; report: $dir/valgrind.log" >&2
    grep -E -A25 'Invalid|uninitialised|definitely lost in' "$dir/valgrind.log" | head -150 >&2 || true
    exit 1
fi
echo "valgrind-httpd: OK"
