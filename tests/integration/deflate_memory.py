#!/usr/bin/python3
"""Server memory per idle permessage-deflate connection, and echo throughput with and
without compression (a measurement for docs/BENCHMARKS.md, not a test).

    /usr/bin/python3 tests/integration/deflate_memory.py [-n 2000] [--seconds 5]

For each configuration, a fresh httpd (event MPM, 2 children x 25 threads,
AsyncRequestWorkerFactor 400, MaxMemFree 1) serves /echo; N connections are opened with
Python websockets' default offer (permessage-deflate; client_max_window_bits), each
echoes one JSON-like message (so every stream that outlives a message exists; 1 KiB,
and in a second run 64 KiB, which fills a 15-bit window), and then all sit idle.

The server's memory is the sum of VmRSS of its children: before the first connection,
once the first N/4 connections have had their echo, and once all N have.  The growth
over the last 3N/4, divided by 3N/4, is the cost of one more idle connection
(everything: socket, pools, session, and the compression state this script is about);
the first quarter also pays one-off costs (each worker thread's first request, and
with compression its cached deflate stream, ~270 KB at 15 bits), shown as "fixed".

Then 10 connections echo 1 KiB JSON-like text as fast as they can (8 messages in flight
each) for --seconds, once without and once with compression; the client is Python, so
the figures are a lower bound and mostly say how much compression costs relative to none.
"""

import argparse
import asyncio
import json
import os
import random
import resource
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import websockets  # noqa: E402

from httpd import start_httpd  # noqa: E402

MPM_SETTINGS = {"ServerLimit": 2, "StartServers": 2, "ThreadsPerChild": 25,
                "ThreadLimit": 25, "MaxRequestWorkers": 50, "MinSpareThreads": 25,
                "MaxSpareThreads": 50, "AsyncRequestWorkerFactor": 400}

CONFIGS = [
    ("off", "WebSocketCompression off"),
    ("on (default)", ""),
    ("on, ContextTakeover off", "WebSocketCompressionContextTakeover off"),
    ("on, ContextTakeover on", "WebSocketCompressionContextTakeover on"),
    ("on, WindowBits 9", "WebSocketCompressionWindowBits 9"),
    ("on, ContextTakeover on, WindowBits 9",
     "WebSocketCompressionContextTakeover on\nWebSocketCompressionWindowBits 9"),
]


def json_messages(count=64, size=1024, seed=1):
    """JSON-like text of exactly `size` bytes (size >= 200), different each time."""
    rnd = random.Random(seed)
    out = []
    for i in range(count):
        obj = {"type": "update", "seq": i, "user": f"user{rnd.randrange(10000)}",
               "channel": rnd.choice(["news", "sport", "weather", "markets"]),
               "ts": 1700000000 + rnd.randrange(10 ** 6), "items": [], "note": ""}
        length = len(json.dumps(obj, separators=(",", ":")))
        while True:
            item = {"id": rnd.randrange(10 ** 6), "price": round(rnd.random() * 100, 2),
                    "qty": rnd.randrange(100), "ok": rnd.random() < 0.5}
            n = len(json.dumps(item, separators=(",", ":"))) + 1
            if length + n > size - 20:
                break
            obj["items"].append(item)
            length += n
        deficit = size - len(json.dumps(obj, separators=(",", ":")))
        obj["note"] = "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz ")
                              for _ in range(max(0, deficit)))
        s = json.dumps(obj, separators=(",", ":"))
        assert len(s) == size, (len(s), size)
        out.append(s)
    return out


def children(ppid):
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == ppid:
                        pids.append(int(d))
            except OSError:
                pass
    return pids


def rss(srv):
    total = 0
    for pid in children(srv.proc.pid):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def start(workdir, name, directives):
    d = os.path.join(workdir, name.replace(" ", "").replace(",", "-").replace("(", "")
                     .replace(")", ""))
    loc = {"path": "/echo", "plugin": "echo", "extra": directives + "\n" if directives else ""}
    return start_httpd(d, mpm="event", tls=False, locations=[loc],
                       mpm_settings=MPM_SETTINGS, extra_global="MaxMemFree 1",
                       loglevel="warn")


async def open_idle(srv, first, n, msgs):
    """Connections first..n-1 (default compression offer), one echo each."""
    sem = asyncio.Semaphore(100)
    conns = [None] * (n - first)

    async def one(i):
        async with sem:
            ws = await websockets.connect(srv.ws_url("/echo"), ping_interval=None,
                                          open_timeout=30, close_timeout=5, max_size=None)
            m = msgs[i % len(msgs)]
            await ws.send(m)
            got = await asyncio.wait_for(ws.recv(), 30)
            assert got == m, "echo differs"
            conns[i - first] = ws
    await asyncio.gather(*(one(i) for i in range(first, n)))
    return conns


async def close_all(conns):
    sem = asyncio.Semaphore(200)

    async def one(ws):
        async with sem:
            await ws.close()
    await asyncio.gather(*(one(ws) for ws in conns if ws is not None))


def measure_idle(workdir, name, directives, n, msgs):
    """(RSS before, after n/4, after n, the extension answer)"""
    srv = start(workdir, name, directives)
    try:
        before = rss(srv)

        async def run():
            conns = await open_idle(srv, 0, n // 4, msgs)
            half = rss(srv)
            conns += await open_idle(srv, n // 4, n, msgs)
            after = rss(srv)
            ext = conns[0].response_headers.get("Sec-WebSocket-Extensions")
            await close_all(conns)
            return half, after, ext
        half, after, ext = asyncio.run(asyncio.wait_for(run(), 600))
    finally:
        srv.stop()
    return before, half, after, ext


async def echo_rate(srv, compression, msgs, seconds, conns=10, window=8):
    count = 0
    stop_at = None

    async def one(k):
        nonlocal count
        async with websockets.connect(srv.ws_url("/echo"), compression=compression,
                                      ping_interval=None, max_size=None) as ws:
            sent = 0
            inflight = []
            while time.monotonic() < stop_at or inflight:
                while len(inflight) < window and time.monotonic() < stop_at:
                    m = msgs[(k * 7 + sent) % len(msgs)]
                    await ws.send(m)
                    inflight.append(m)
                    sent += 1
                got = await asyncio.wait_for(ws.recv(), 30)
                assert got == inflight.pop(0), "echo differs or out of order"
                count += 1
    stop_at = time.monotonic() + seconds
    t0 = time.monotonic()
    await asyncio.gather(*(one(k) for k in range(conns)))
    return count / (time.monotonic() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=2000, help="idle connections (default 2000)")
    ap.add_argument("--seconds", type=float, default=5.0,
                    help="duration of each throughput run (default 5)")
    ap.add_argument("--sizes", default="1024,65536",
                    help="size of the one message each connection echoes before idling "
                         "(comma-separated; 64 KiB fills a 15-bit window)")
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.n * 2 + 1000          # our sockets, and httpd (started by us) inherits it
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
    workdir = tempfile.mkdtemp(prefix="ws-deflate-memory-")
    sizes = [int(x) for x in args.sizes.split(",")]
    msgs = {size: json_messages(size=size) for size in set(sizes + [1024])}

    results = {}        # (config, size) -> (before, after, per, fixed)
    exts = {}
    for name, directives in CONFIGS:
        for size in sizes:
            before, half, after, ext = measure_idle(workdir, f"{name}-{size}", directives,
                                                    args.n, msgs[size])
            per = (after - half) / (args.n - args.n // 4)
            fixed = half - before - per * (args.n // 4)
            results[name, size] = (before, after, per, fixed)
            exts[name] = ext
            print(f"{name}, {size} B echo: {before / 2**20:.1f} -> {half / 2**20:.1f} -> "
                  f"{after / 2**20:.1f} MiB, {per / 1024:.1f} KiB per connection",
                  file=sys.stderr)

    print(f"\nServer memory per idle connection: {args.n} connections, event MPM "
          f"(2 x 25 threads, AsyncRequestWorkerFactor 400, MaxMemFree 1), Python "
          f"websockets' default offer; each connection echoed one JSON-like message of "
          f"the given size, then sat idle.  Per connection: RSS growth over the last 3N/4 "
          f"connections / (3N/4); fixed: one-off costs in the first N/4.\n")
    head = " | ".join(f"after {size // 1024} KiB echo | vs off | fixed" for size in sizes)
    print(f"| configuration | {head} |")
    print("|---|" + "---:|---:|---:|" * len(sizes))
    for name, _ in CONFIGS:
        cells = []
        for size in sizes:
            _, _, per, fixed = results[name, size]
            off = results[CONFIGS[0][0], size][2]
            cells.append(f"{per / 1024:.1f} KiB | {(per - off) / 1024:+.1f} KiB | "
                         f"{fixed / 2**20:.1f} MiB")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    for name, _ in CONFIGS:
        print(f"- {name}: `{exts[name] or '(no extension)'}`")

    if args.skip_throughput:
        return 0
    srv = start(workdir, "throughput", "")
    try:
        plain = asyncio.run(echo_rate(srv, None, msgs[1024], args.seconds))
        deflate = asyncio.run(echo_rate(srv, "deflate", msgs[1024], args.seconds))
    finally:
        srv.stop()
    print(f"\nEcho throughput, 1 KiB JSON-like text, 10 connections x 8 in flight, "
          f"{args.seconds:g} s each, Python websockets client on the same machine "
          f"({os.cpu_count()} CPUs; the client is the bottleneck):\n")
    print("| compression | echoes/s |")
    print("|---|---:|")
    print(f"| off (not offered) | {plain:,.0f} |")
    print(f"| permessage-deflate | {deflate:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
