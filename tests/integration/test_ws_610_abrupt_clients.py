"""1,000 clients that vanish at random points of a connection's life, ws and wss.

Each client picks (seeded, so a failure reproduces) one point at which to drop the TCP
connection, with a FIN (close) or a RST (SO_LINGER 0), and stops there:
  tcp        right after connect                  tls-hello  inside the TLS ClientHello
  req-line   inside the request line              headers    inside the headers
  request    the whole request, never reading     upgraded   right after the 101
  frame-hdr  inside a frame header                payload    inside a frame's payload
  fragment   after a non-final fragment           close-part inside a close frame
  close-sent a whole close frame, gone before the reply
  echo-read  a 256 KiB message, gone while its echo is being written back
Meanwhile a canary session echoes every 50 ms.  Afterwards: httpd and every child are
still up, no crash, the canary never failed, every upgraded session ended (as many
WS00040 session-end lines as WS00036 upgrades), /server-status is back to the canary
alone, and the children's RSS is back within a small margin of its level before the
abuse (measured after two warm-up rounds of the same abuse).
"""

import asyncio
import random
import re
import socket
import ssl
import struct

import pytest

from conftest import mpm_params
from rawws import OP_BINARY, OP_CLOSE, OP_TEXT, build_frame, close_payload, new_key
from support import Canary, assert_memory_back, report, settled_rss_kb, wait_sessions
from wsutil import run

CLIENTS = 1000
# Two rounds of the same abuse first: RSS grows over the first rounds while glibc's
# per-thread arenas and httpd's pools reach their working size (17 -> 44 -> 48 MiB on
# event), then stays flat within about 1 MiB per round.
WARMUP_ROUNDS = 2
CONCURRENCY = 100
TLS_SHARE = 4                    # every 4th client uses wss
POINTS = ["tcp", "req-line", "headers", "request", "upgraded", "frame-hdr", "payload",
          "fragment", "close-part", "close-sent", "echo-read"]
TLS_ONLY_POINTS = ["tls-hello"]

MPM_SETTINGS = {
    "event": {},
    "worker": {},
    # a fixed set of 20 processes (none spawned or reaped mid-test), so that the sum
    # of their RSS compares before and after
    "prefork": {"StartServers": 20, "MinSpareServers": 1, "MaxSpareServers": 20,
                "ServerLimit": 20, "MaxRequestWorkers": 20},
}


def request_bytes(srv, transport):
    return (f"GET /echo HTTP/1.1\r\nHost: {srv.host}:{srv.port_for(transport)}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {new_key()}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


def client_hello(srv):
    """The first flight of a real TLS handshake (ClientHello), from a memory BIO."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=srv.host)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def drop(writer, rst):
    sock = writer.get_extra_info("socket")
    if rst and sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        writer.transport.abort()
    else:
        writer.close()


async def one_client(srv, transport, point, rng, stats):
    tls = transport == "wss"
    rst = rng.random() < 0.5
    if point == "tls-hello":
        reader, writer = await asyncio.open_connection(srv.host, srv.tls_port)
        hello = client_hello(srv)
        writer.write(hello[:rng.randrange(1, len(hello))])
        await writer.drain()
        drop(writer, rst)
        stats[point] = stats.get(point, 0) + 1
        return
    reader, writer = await asyncio.open_connection(
        srv.host, srv.port_for(transport), ssl=srv.ssl_for(transport),
        server_hostname=srv.host if tls else None)
    try:
        req = request_bytes(srv, transport)
        if point == "tcp":
            pass
        elif point == "req-line":
            writer.write(req[:rng.randrange(1, req.index(b"\r\n"))])
        elif point == "headers":
            writer.write(req[:rng.randrange(req.index(b"\r\n") + 2, len(req) - 2)])
        elif point == "request":
            writer.write(req)
        else:
            writer.write(req)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
            assert head.startswith(b"HTTP/1.1 101 "), head[:200]
            stats["got_101"] = stats.get("got_101", 0) + 1
            if point == "frame-hdr":
                f = build_frame(OP_BINARY, b"x" * rng.choice([5, 300, 70000]))
                # header: 2 bytes, the extended length (0, 2 or 8), the 4-byte mask
                hlen = 6 if f[1] & 0x7F < 126 else 8 if f[1] & 0x7F == 126 else 14
                writer.write(f[:rng.randrange(1, hlen)])
            elif point == "payload":
                f = build_frame(OP_TEXT, b"p" * rng.choice([100, 1000, 70000]))
                writer.write(f[:rng.randrange(16, len(f) - 1)])
            elif point == "fragment":
                writer.write(build_frame(OP_TEXT, b"first part ", fin=False))
                if rng.random() < 0.5:
                    writer.write(build_frame(0x0, b"second part ", fin=False))
            elif point == "close-part":
                f = build_frame(OP_CLOSE, close_payload(1000, "bye"))
                writer.write(f[:rng.randrange(1, len(f))])
            elif point == "close-sent":
                writer.write(build_frame(OP_CLOSE, close_payload(1000, "bye")))
            elif point == "echo-read":
                writer.write(build_frame(OP_BINARY, bytes(256 * 1024)))
                await writer.drain()
                await asyncio.wait_for(reader.read(rng.choice([1, 1000, 65536])), 20)
        await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass            # the server may already have given up on this connection
    finally:
        drop(writer, rst)
    stats[point] = stats.get(point, 0) + 1


async def abuse(srv, n, seed):
    rng = random.Random(seed)
    sem = asyncio.Semaphore(CONCURRENCY)
    stats = {}
    plan = []
    for i in range(n):
        transport = "wss" if i % TLS_SHARE == 0 else "ws"
        points = POINTS + (TLS_ONLY_POINTS if transport == "wss" else [])
        plan.append((transport, rng.choice(points), random.Random(rng.random())))

    async def guarded(t, p, r):
        async with sem:
            await asyncio.wait_for(one_client(srv, t, p, r, stats), 30)

    await asyncio.gather(*(guarded(*x) for x in plan))
    return stats


def count(pattern, text):
    return len(re.findall(pattern, text))


@pytest.mark.parametrize("mpm", mpm_params())
def test_abrupt_disconnects(httpd_factory, mpm):
    srv = httpd_factory(mpm=mpm, tls=True, locations=[("/echo", "echo")],
                        mpm_settings=MPM_SETTINGS[mpm])
    for r in range(WARMUP_ROUNDS):
        run(abuse(srv, CLIENTS, seed=r), timeout=300)
    wait_sessions(srv, 0)
    before = settled_rss_kb(srv)

    srv.mark_log()
    canary = Canary(srv, "wss")
    canary.start()
    stats = run(abuse(srv, CLIENTS, seed=610), timeout=300)
    t_drain = wait_sessions(srv, 1)          # only the canary is left
    echoes, slowest = canary.finish()
    wait_sessions(srv, 0)
    after = settled_rss_kb(srv)

    log = srv.log_since_mark()
    upgrades = count(r"WS00036: upgraded", log)
    ends = count(r"WS00040: session end", log)
    report(f"610 abrupt {mpm}", clients=CLIENTS, upgraded=stats.get("got_101", 0),
           points={k: v for k, v in sorted(stats.items()) if k != "got_101"},
           sessions_ended=ends, drained_s=f"{t_drain:.2f}", canary_echoes=echoes,
           canary_slowest_s=f"{slowest:.3f}", rss_before_kb=before, rss_after_kb=after,
           rss_delta_kb=after - before)
    assert srv.alive()
    srv.assert_no_crash()
    # what the server logged agrees with what the clients did: every client that read
    # a 101 was upgraded, besides them at most those that sent a whole request and
    # never read (and the canary), and each upgraded session ended
    got_101 = stats.get("got_101", 0)
    assert got_101 > 0
    assert got_101 + 1 <= upgrades <= got_101 + stats.get("request", 0) + 1, (
        f"the server upgraded {upgrades} sessions; {got_101} clients read a 101, "
        f"{stats.get('request', 0)} sent a request without reading")
    assert upgrades == ends, f"{upgrades} sessions upgraded, {ends} ended"
    assert echoes > 0
    assert_memory_back(f"610 {mpm}", before, after)
