#!/usr/bin/python3
"""h2hold - hold N WebSockets on HTTP/2 streams (RFC 8441) over C h2 connections, and
measure what they cost the server (threads, memory) and how a configuration refuses more.

    bench/h2hold.py [--sessions 1000] [--connections 10] [--tls] [--hold 10]

Starts its own httpd (event MPM, one child, mod_http2 with H2WebSockets on) with
H2MaxWorkers = sessions + 10% and WebSocketH2MaxSessions = sessions, and for each h2
connection first loads pages until mod_http2 lets it run `sessions / connections` streams
at once (a new connection gets 6; the limit doubles as streams complete).  Then it opens
the WebSockets, checks an echo on every one, holds them, and reports:
  the child's threads and RSS before and with the sessions open (per session);
  the time to open them; an echo round over all of them;
  one more WebSocket on a fresh connection: answered 503 by the module (the cap);
  every session closing cleanly (1000) afterwards.
The client is tests/integration/h2ws.py (python3-h2 + python3-wsproto).
"""
import argparse
import concurrent.futures
import os
import resource
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

from h2ws import H2Client, HandshakeError  # noqa: E402
from httpd import start_httpd  # noqa: E402


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def children(ppid):
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if proc_status(int(d)).get("PPid") == str(ppid):
                    pids.append(int(d))
            except (FileNotFoundError, ProcessLookupError):
                pass
    return pids


def server_figures(srv):
    threads = rss = fds = 0
    for pid in children(srv.proc.pid):
        st = proc_status(pid)
        threads += int(st["Threads"])
        rss += int(st["VmRSS"].split()[0])
        fds += len(os.listdir(f"/proc/{pid}/fd"))
    return threads, rss, fds


def warm_up(cli, want, deadline):
    """Load pages until `want` streams of this connection run at once (mod_http2 doubles
    a connection's limit as its streams complete: 6, 12, 24, 48, 96, ...)."""
    n = 0
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        while n < 8 * want and time.monotonic() < deadline:
            for status, _, _ in pool.map(lambda _: cli.get("/"), range(2 * want)):
                assert status == 200
            n += 2 * want
    return n


def open_all(cli, count, timeout):
    streams = [cli.open_stream(cli.connect_headers("/echo")) for _ in range(count)]
    from h2ws import WebSocket
    wss = []
    for st in streams:
        st.wait_response(timeout)
        if st.status != 200:
            raise HandshakeError(st.status, st.headers)
        wss.append(WebSocket(st))
    return wss


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--connections", type=int, default=10)
    ap.add_argument("--tls", action="store_true", help="h2 over TLS (default h2c)")
    ap.add_argument("--hold", type=float, default=10.0, help="seconds to hold them open")
    ap.add_argument("--workers", type=int, default=None,
                    help="H2MaxWorkers (default sessions + 10%%)")
    ap.add_argument("--cap", type=int, default=None,
                    help="WebSocketH2MaxSessions (default sessions; above --workers shows "
                         "what mod_http2 does when every worker is held)")
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    per_conn = a.sessions // a.connections
    workers = a.workers or a.sessions + a.sessions // 10
    cap = a.cap or a.sessions
    h2conf = (f"H2MinWorkers {min(25, workers)}\nH2MaxWorkers {workers}\n"
              f"H2MaxSessionStreams {per_conn + 28}\nWebSocketH2MaxSessions {cap}\n")
    d = a.dir or tempfile.mkdtemp(prefix="h2hold-")
    srv = start_httpd(d, mpm="event", tls=a.tls, h2=h2conf, locations=[("/echo", "echo")],
                      loglevel="warn websocket:warn",
                      mpm_settings={"StartServers": 1, "ServerLimit": 1, "ThreadsPerChild": 25,
                                    "MaxRequestWorkers": 25, "MinSpareThreads": 1,
                                    "MaxSpareThreads": 25})
    ctx = srv.ssl_context() if a.tls else None
    port = srv.tls_port if a.tls else srv.port
    clis = []
    try:
        print(f"h2hold: {a.sessions} WebSockets over {a.connections} {'h2' if a.tls else 'h2c'} "
              f"connections; H2MaxWorkers {workers}, WebSocketH2MaxSessions {cap}; "
              f"server {d}", flush=True)
        threads_s, rss_s, _ = server_figures(srv)
        t0 = time.monotonic()
        clis = [H2Client("127.0.0.1", port, ssl_context=ctx, timeout=60) for _ in range(a.connections)]
        with concurrent.futures.ThreadPoolExecutor(a.connections) as pool:
            gets = sum(pool.map(lambda c: warm_up(c, per_conn, time.monotonic() + 60), clis))
        print(f"warm-up: {gets} GETs over {a.connections} connections in "
              f"{time.monotonic() - t0:.1f} s", flush=True)
        threads0, rss0, fds0 = server_figures(srv)
        t1 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(a.connections) as pool:
            groups = list(pool.map(lambda c: open_all(c, per_conn, 60), clis))
        wss = [ws for g in groups for ws in g]
        t_open = time.monotonic() - t1
        t2 = time.monotonic()
        for i, ws in enumerate(wss):
            ws.send_text(f"m{i}")
        for i, ws in enumerate(wss):
            assert ws.recv_message(timeout=60) == f"m{i}", i
        t_echo = time.monotonic() - t2
        threads1, rss1, fds1 = server_figures(srv)
        print(f"open: {len(wss)} WebSockets in {t_open:.2f} s; one echo on each: {t_echo:.2f} s",
              flush=True)
        print(f"server child at start: threads {threads_s}, RSS {rss_s / 1024:.1f} MiB; "
              f"with the sessions: +{(threads1 - threads_s) / len(wss):.2f} threads and "
              f"+{(rss1 - rss_s) / len(wss):.1f} KiB per session", flush=True)
        print(f"server child: threads {threads0} -> {threads1} "
              f"(+{(threads1 - threads0) / len(wss):.2f} per session), "
              f"RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB "
              f"(+{(rss1 - rss0) / len(wss):.1f} KiB per session), "
              f"fds {fds0} -> {fds1} (+{(fds1 - fds0) / len(wss):.2f} per session)", flush=True)
        extra = H2Client("127.0.0.1", port, ssl_context=ctx, timeout=30)
        clis.append(extra)
        try:
            extra.websocket("/echo", timeout=10)
            print("one more: accepted")
        except HandshakeError as e:
            print(f"one more: {e.status} Retry-After {e.headers.get('retry-after')} "
                  f"(WebSocketH2MaxSessions)", flush=True)
        except TimeoutError:
            print("one more: no answer in 10 s (mod_http2 queued the stream: no free worker)")
        other = H2Client("127.0.0.1", port, ssl_context=ctx, timeout=30)
        clis.append(other)
        try:
            print(f"GET / on another new h2 connection meanwhile: {other.get('/', timeout=10)[0]}",
                  flush=True)
        except TimeoutError:
            print("GET / on another new h2 connection meanwhile: no answer in 10 s", flush=True)
        deadline = time.monotonic() + a.hold
        while time.monotonic() < deadline:
            time.sleep(min(1.0, deadline - time.monotonic()))   # holding, by design
        t3 = time.monotonic()
        for ws in wss:
            ws.close(1000)
        codes = {}
        for ws in wss:
            ev = ws.recv(timeout=60)
            codes[ev[:2]] = codes.get(ev[:2], 0) + 1
        print(f"close: {codes} in {time.monotonic() - t3:.2f} s", flush=True)
    finally:
        for c in clis:
            c.close()
        srv.stop()


if __name__ == "__main__":
    main()
