#!/usr/bin/python3
"""Broadcast delay of the ticker plugin: N subscribers on /ticker, each message's delivery
delay (receive time - the "ts" the server put in it, microseconds since the epoch),
p50/p90/p99/max over a measuring window.  Client and server must share a clock (the same
machine).

    tests/integration/ticker_delay.py ws://127.0.0.1:8080/ticker      # against `make demo`
    tests/integration/ticker_delay.py --start --interval-ms 100       # a private httpd
    options: --clients 1000 --duration 10 --warmup 2 --procs N --target-ms 50 --tls

--start runs its own httpd (event MPM, the demo's 10,000-connection settings) with
/ticker at --interval-ms, in a temporary directory, and stops it at the end.

The clients are a minimal WebSocket reader on asyncio protocols, spread over --procs
processes: the receive time is taken when the bytes come off the socket, and only the
"ts" prefix is parsed, so the client adds as little delay as it can.  Exit status 0 when
p99 is under --target-ms and no subscriber lost a message or its connection, else 1.
"""

import argparse
import asyncio
import base64
import multiprocessing
import os
import resource
import ssl
import statistics
import struct
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))


class Subscriber(asyncio.Protocol):
    """Handshake, then parse server frames (unmasked): text messages give a delay sample,
    pings get a pong, a close ends it."""

    def __init__(self, request, window, samples, state):
        self.request, self.window, self.samples, self.state = request, window, samples, state
        self.buf = b""
        self.upgraded = False
        self.transport = None
        self.last_tick = None
        self.count = 0                           # messages in the window
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data):
        now_us = time.time_ns() // 1000          # first: the arrival time
        buf = self.buf + data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.fail(buf[:end].decode("latin-1", "replace").splitlines()[0])
                return
            self.upgraded = True
            self.state["open"] += 1
            if not self.done.done():
                self.done.set_result(True)
            buf = buf[end + 4:]
        pos = 0
        while len(buf) - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n, off = b1 & 0x7F, pos + 2
            if n == 126:
                if len(buf) - off < 2:
                    break
                n, off = struct.unpack_from("!H", buf, off)[0], off + 2
            elif n == 127:
                if len(buf) - off < 8:
                    break
                n, off = struct.unpack_from("!Q", buf, off)[0], off + 8
            if len(buf) - off < n:
                break
            opcode = b0 & 0x0F
            if opcode == 0x1:
                self.message(buf, off, n, now_us)
            elif opcode == 0x9:                    # ping: pong with the same payload
                self.transport.write(frame(0xA, buf[off:off + n]))
            elif opcode == 0x8:
                code = struct.unpack_from("!H", buf, off)[0] if n >= 2 else 1005
                self.fail(f"closed by the server with {code}")
            pos = off + n
        self.buf = buf[pos:]

    def message(self, buf, off, n, now_us):
        # {"ts":1700000000123456,"tick":N,...}: the ts member comes first by design.
        if buf[off:off + 6] != b'{"ts":':
            self.fail("a message without a leading ts")
            return
        comma = buf.index(b",", off)
        ts = int(buf[off + 6:comma])
        tick_at = buf.find(b'"tick":', comma, off + n)
        tick = int(buf[tick_at + 7:buf.index(b",", tick_at)])
        if self.last_tick is not None and tick > self.last_tick + 1 and ts >= self.window[0]:
            self.state["gaps"] += tick - self.last_tick - 1    # a skipped tick
        self.last_tick = tick
        if self.window[0] <= ts < self.window[1]:
            self.samples.append((now_us - ts) / 1000.0)
            self.count += 1

    def fail(self, why):
        self.state["errors"].append(why)
        if not self.done.done():
            self.done.set_result(False)
        self.transport.close()

    def connection_lost(self, exc):
        if self.upgraded:
            self.state["open"] -= 1
        if not self.done.done():
            self.done.set_result(False)


def frame(opcode, payload):
    """A masked client frame (payloads here are < 126 bytes)."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body


async def run_clients(url, count, window, ctx, samples, state, conn):
    u = urllib.parse.urlsplit(url)
    port = u.port or (443 if u.scheme == "wss" else 80)
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    loop = asyncio.get_running_loop()
    protos = []
    for i in range(count):
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET {path} HTTP/1.1\r\nHost: {u.hostname}:{port}\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
        _, p = await loop.create_connection(
            lambda: Subscriber(request, window, samples, state), u.hostname, port,
            ssl=ctx, server_hostname=u.hostname if ctx else None)
        protos.append(p)
        if i % 50 == 49:   # let earlier handshakes finish: no burst of 1000 at once
            await asyncio.gather(*(q.done for q in protos[-50:]))
    ok = await asyncio.gather(*(p.done for p in protos))
    if not all(ok):
        state["errors"].append(f"{ok.count(False)} connections failed to open")
    # Everyone is connected: the parent now fixes the measuring window for all processes.
    conn.send("ready")
    state["ready_sent"] = True
    window[:] = await loop.run_in_executor(None, conn.recv)
    await asyncio.sleep(max(0.0, window[1] / 1e6 - time.time()) + 0.5)
    state["counts"] = [p.count for p in protos]
    for p in protos:
        if p.transport and not p.transport.is_closing():
            p.transport.write(frame(0x8, struct.pack("!H", 1000)))
            p.transport.close()


def worker(url, count, insecure, conn):
    from array import array
    samples = array("d")
    window = [float("inf"), float("inf")]      # nothing counts until the parent says
    state = {"open": 0, "errors": [], "gaps": 0, "counts": [], "ready_sent": False}
    ctx = None
    if url.startswith("wss:"):
        ctx = ssl.create_default_context()
        if insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    try:
        asyncio.run(run_clients(url, count, window, ctx, samples, state, conn))
    except Exception as e:     # report it to the parent rather than die silently
        state["errors"].append(repr(e))
        if not state["ready_sent"]:
            conn.send("ready")
    conn.send((samples.tobytes(), state["errors"], state["gaps"], state["counts"]))
    conn.close()


def pct(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def start_server(interval_ms, tls, extra):
    sys.path.insert(0, HERE)
    from httpd import genconf, start_httpd     # httpd puts scripts/ on the path
    d = tempfile.mkdtemp(prefix="ticker-delay-")
    srv = start_httpd(d, mpm="event", tls=tls, loglevel="warn websocket:notice",
                      mpm_settings=getattr(genconf, "SCALE_EVENT", None),
                      locations=[{"path": "/ticker", "plugin": "ticker",
                                  "settings": [("interval_ms", str(interval_ms))],
                                  "extra": extra}])
    return srv, srv.url("wss" if tls else "ws", "/ticker")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url", nargs="?", default="ws://127.0.0.1:8080/ticker")
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=10.0, help="measuring window (s)")
    ap.add_argument("--warmup", type=float, default=2.0,
                    help="seconds after every client is connected before measuring")
    ap.add_argument("--procs", type=int, default=min(4, os.cpu_count() or 1))
    ap.add_argument("--target-ms", type=float, default=50.0)
    ap.add_argument("--insecure", action="store_true", help="wss: do not verify the certificate")
    ap.add_argument("--start", action="store_true", help="start a private httpd")
    ap.add_argument("--interval-ms", type=int, default=100, help="with --start")
    ap.add_argument("--tls", action="store_true", help="with --start: measure over wss")
    ap.add_argument("--location-extra", default="", metavar="TEXT",
                    help="with --start: more lines in <Location /ticker> (directives to try)")
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.clients + 100
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))

    srv = None
    url = args.url
    if args.start:
        srv, url = start_server(args.interval_ms, args.tls,
                                args.location_extra.replace("\\n", "\n"))
        args.insecure = True
    try:
        ctx = multiprocessing.get_context("fork")
        jobs = []
        for i in range(args.procs):
            n = args.clients // args.procs + (i < args.clients % args.procs)
            here, there = ctx.Pipe()
            p = ctx.Process(target=worker, args=(url, n, args.insecure, there))
            p.start()
            jobs.append((p, here))
        for _, here in jobs:                   # every client connected (or failed)
            assert here.recv() == "ready"
        # One window in wall-clock time, after a warm-up, for every process.
        t0 = time.time() + args.warmup
        window = [int(t0 * 1e6), int((t0 + args.duration) * 1e6)]
        for _, here in jobs:
            here.send(window)
        from array import array
        samples, errors, gaps, counts = array("d"), [], 0, []
        for p, here in jobs:
            raw, errs, g, c = here.recv()
            samples.frombytes(raw)
            errors += errs
            gaps += g
            counts += c
            p.join()
    finally:
        if srv:
            srv.stop()

    s = sorted(samples)
    # Every subscriber should have had every tick of the window (those of the other
    # child may fall one tick differently at the window's edges).
    lo, hi = (min(counts), max(counts)) if counts else (0, 0)
    short = sum(1 for c in counts if c < hi - 1) + (args.clients - len(counts))
    print(f"ticker delay: {url}, {args.clients} subscribers, {args.procs} client processes, "
          f"{args.duration:.0f} s window")
    print(f"  messages {len(s)} (per subscriber {lo}..{hi}), subscribers short of "
          f"messages {short}, skipped ticks {gaps}, errors {len(errors)}")
    if s:
        print(f"  delay ms: min {s[0]:.2f}  p50 {pct(s, 50):.2f}  p90 {pct(s, 90):.2f}  "
              f"p99 {pct(s, 99):.2f}  p99.9 {pct(s, 99.9):.2f}  max {s[-1]:.2f}  "
              f"mean {statistics.fmean(s):.2f}")
    for e in sorted(set(errors))[:10]:
        print(f"  error: {e} (x{errors.count(e)})")
    good = bool(s) and pct(s, 99) < args.target_ms and not errors and not gaps and not short
    print(f"  p99 < {args.target_ms:g} ms and nothing lost: {'yes' if good else 'NO'}")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
