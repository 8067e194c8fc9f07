#!/usr/bin/env bash
# Run httpd with mod_websocket in the foreground (what `make demo` runs).
#   scripts/demo.sh [PORT]     http/ws on PORT (default 8080), https/wss on PORT+1;
#                              HTTP/2 too: h2 on PORT+1, h2c on PORT, WebSockets over both
# The config, logs and a self-signed ECDSA P-256 certificate (made on first run, then kept)
# live in build/demo/.  TLS session resumption is on (session cache and tickets).
# The live news feed: POST /pub/news publishes (from 127.0.0.1 only), /sub/news
# subscribes (WebSocket, EventSource or long-poll), /news.html shows it, and
# scripts/newsfeed.py, started here in the background, publishes a headline every few
# seconds (log: build/demo/newsfeed.log).  Ctrl-C stops httpd and the feed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
PORT=${1:-8080}
TLS_PORT=$((PORT + 1))
DEMO="$ROOT/build/demo"
PY=/usr/bin/python3

if [ ! -f build/mod_websocket.so ] || [ ! -f build/plugins/echo.so ]; then
    echo "demo.sh: build/mod_websocket.so or build/plugins/echo.so missing: run 'make' first" >&2
    exit 1
fi

locations=(--location /echo=echo)
for p in chat ticker; do
    if [ -f "build/plugins/$p.so" ]; then
        locations+=(--location "/$p=$p")
    fi
done

mkdir -p "$DEMO"
CONF=$("$PY" scripts/genconf.py --dir "$DEMO" --port "$PORT" --tls-port "$TLS_PORT" \
    --mpm event --scale --h2 --channels "${locations[@]}")

# One descriptor per connection in httpd's children: raise the soft limit to the hard one
# (10,000 connections need more than the usual 1,024).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

"$PY" - "$PORT" "$TLS_PORT" <<'PYEOF'
import socket, sys
for p in sys.argv[1:]:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", int(p)))
        except OSError as e:
            sys.exit(f"demo.sh: port {p} is not free ({e.strerror}); try: make demo PORT=N")
PYEOF

/usr/sbin/apache2 -t -f "$CONF"

cat <<MSG

mod_websocket demo (event MPM), config $CONF
  http://127.0.0.1:$PORT/          ws://127.0.0.1:$PORT/echo
  https://127.0.0.1:$TLS_PORT/         wss://127.0.0.1:$TLS_PORT/echo
  HTTP/2 with WebSockets over h2 streams (RFC 8441, H2WebSockets on): h2 on $TLS_PORT,
  h2c (prior knowledge and Upgrade) on $PORT
MSG
for p in chat ticker; do
    if [ -f "build/plugins/$p.so" ]; then
        echo "  ws://127.0.0.1:$PORT/$p    wss://127.0.0.1:$TLS_PORT/$p"
    fi
done
cat <<MSG
  Channels over plain HTTP (docs/channels.md):
    curl -d 'headline' http://127.0.0.1:$PORT/pub/news      (from 127.0.0.1 only)
    http://127.0.0.1:$PORT/sub/news   WebSocket, EventSource or long-poll; /sub/ticker too
  Live news: http://127.0.0.1:$PORT/news.html, fed every few seconds by
    scripts/newsfeed.py (log: $DEMO/newsfeed.log)
  (self-signed certificate: $DEMO/server.crt)
  error log: $DEMO/error.log
Ctrl-C to stop.

MSG

# httpd and the sample feed run as children of this shell; whatever ends the shell
# (Ctrl-C, a signal, httpd's exit) ends both.
httpd_pid=
feed_pid=
stop() {
    [ -z "$feed_pid" ] || kill "$feed_pid" 2>/dev/null || true
    [ -z "$httpd_pid" ] || kill -TERM "$httpd_pid" 2>/dev/null || true
}
trap stop EXIT
trap stop INT TERM HUP
/usr/sbin/apache2 -f "$CONF" -DFOREGROUND &
httpd_pid=$!
"$PY" scripts/newsfeed.py --url "http://127.0.0.1:$PORT/pub/news" >"$DEMO/newsfeed.log" 2>&1 &
feed_pid=$!
status=0
wait "$httpd_pid" || status=$?
while kill -0 "$httpd_pid" 2>/dev/null; do   # a signal interrupted wait: httpd is stopping
    wait "$httpd_pid" || status=$?
done
httpd_pid=
exit "$status"
