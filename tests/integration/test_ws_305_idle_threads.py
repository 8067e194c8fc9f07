"""Event MPM: an idle WebSocket connection holds no thread; a blocking one does.

The server has 2 children x 10 threads = 20 workers in all (AsyncRequestWorkerFactor 20
lets each child take 10 + 10 * 20 connections).  200 idle async sessions all stay open,
none of them holds a worker (server-status BusyWorkers), every one still echoes, and a
plain GET / is answered at once.  The same server with `WebSocketDriver blocking` cannot
serve more sessions than it has threads: of 40 attempts at most 20 complete their
handshake and echo within 2 s, and while they are open nothing else is served."""

import asyncio
import socket
import time

import pytest

from rawws import OP_TEXT, accept_for, build_frame, http_request, new_key
from wsutil import connect, recv, run

THREADS = 20
SESSIONS = 200
MPM_SETTINGS = {
    "StartServers": 2,
    "ServerLimit": 2,
    "ThreadsPerChild": 10,
    "ThreadLimit": 10,
    "MaxRequestWorkers": THREADS,
    "MinSpareThreads": 10,
    "MaxSpareThreads": THREADS,
    "AsyncRequestWorkerFactor": 20,
}
LOCATIONS = [
    ("/echo", "echo"),
    {"path": "/echo-blocking", "plugin": "echo", "extra": "WebSocketDriver blocking\n"},
]


@pytest.fixture(scope="module")
def server(httpd_factory):
    return httpd_factory(mpm="event", tls=True, locations=LOCATIONS, loglevel="warn",
                         mpm_settings=MPM_SETTINGS)


def server_status(server, timeout=5.0):
    resp = http_request(server, "ws", b"GET /server-status?auto HTTP/1.1\r\n"
                        b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n", timeout=timeout)
    assert resp.status == 200, resp
    out = {}
    for line in resp.body.decode().splitlines():
        k, sep, v = line.partition(": ")
        if sep:
            out[k] = v
    return out


def wait_status(server, check, what, timeout=5.0):
    """Poll /server-status?auto until check(status) is true."""
    deadline = time.monotonic() + timeout
    while True:
        st = server_status(server)
        if check(st):
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"server-status never showed {what}: "
                                 + ", ".join(f"{k}={st.get(k)}" for k in (
                                     "BusyWorkers", "IdleWorkers",
                                     "WebSocketSessionsAsync",
                                     "WebSocketSessionsBlocking")))
        time.sleep(0.05)  # polling server-status for a state, with a deadline


async def raw_open(server, transport, path):
    """A WebSocket handshake on an asyncio stream; (reader, writer) after the 101.
    Cancelled (by a timeout) it closes its socket: no half-open client is left behind."""
    ssl_ctx = server.ssl_for(transport)
    reader, writer = await asyncio.open_connection(
        server.host, server.port_for(transport), ssl=ssl_ctx,
        server_hostname=server.host if ssl_ctx else None)
    try:
        key = new_key()
        writer.write((f"GET {path} HTTP/1.1\r\nHost: {server.host}\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                      ).encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert accept_for(key).encode() in head, head
        return reader, writer
    except BaseException:
        writer.close()
        raise


async def raw_echo(conn, payload):
    """Send a short text frame, read the echo (one unmasked frame)."""
    reader, writer = conn
    writer.write(build_frame(OP_TEXT, payload))
    await writer.drain()
    b0, b1 = await reader.readexactly(2)
    assert b0 == 0x80 | OP_TEXT and b1 == len(payload), (b0, b1)
    return await reader.readexactly(b1) == payload


def get_root(server, timeout):
    """GET / on a new connection; the time it took, or None if no answer in `timeout`."""
    t0 = time.monotonic()
    try:
        resp = http_request(server, "ws", b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                            b"Connection: close\r\n\r\n", timeout=timeout)
    except (TimeoutError, socket.timeout):
        return None
    assert resp.status == 200, resp
    return time.monotonic() - t0


@pytest.mark.parametrize("transport", ["ws", "wss"])
def test_idle_async_sessions_hold_no_thread(server, transport):
    async def go():
        conns = []
        sem = asyncio.Semaphore(50)     # stay well below the listen backlog

        async def open_one(i):
            async with sem:
                ws = await connect(server, transport, "/echo", ping_interval=None,
                                   compression=None).__aenter__()
                conns.append(ws)
                await ws.send(f"hello {i}")
                assert await recv(ws) == f"hello {i}"

        try:
            await asyncio.gather(*(open_one(i) for i in range(SESSIONS)))
            assert len(conns) == SESSIONS
            # every session is open and async, and (idle) none holds a worker: only the
            # status request itself (and at most one straggler) is busy
            await asyncio.to_thread(
                wait_status, server,
                lambda st: int(st["WebSocketSessionsAsync"]) == SESSIONS
                and int(st["BusyWorkers"]) <= 2,
                f"{SESSIONS} async sessions with BusyWorkers <= 2")
            took = await asyncio.to_thread(get_root, server, 2.0)
            assert took is not None and took < 1.0, f"GET / took {took}"
            # all of them, at once, still echo
            await asyncio.gather(*(ws.send(f"again {i}") for i, ws in enumerate(conns)))
            got = await asyncio.gather(*(recv(ws, timeout=10) for ws in conns))
            assert got == [f"again {i}" for i in range(SESSIONS)]
            took = await asyncio.to_thread(get_root, server, 2.0)
            assert took is not None and took < 1.0, f"GET / took {took}"
        finally:
            await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)

    run(go(), timeout=60)
    wait_status(server, lambda st: int(st["WebSocketSessionsAsync"]) == 0,
                "all async sessions closed")


def test_blocking_sessions_exhaust_threads(server):
    """The contrast: with a thread per session, 40 attempts cannot all be served."""
    attempts = 2 * THREADS

    async def go():
        opened = []

        async def try_one(i):
            # handshake and one echo within 2 s, or it counts as not served
            async def one():
                conn = await raw_open(server, "ws", "/echo-blocking")
                opened.append(conn)
                return await raw_echo(conn, f"b{i}".encode())

            try:
                return await asyncio.wait_for(one(), 2.0)
            except (asyncio.TimeoutError, OSError, asyncio.IncompleteReadError):
                return False

        try:
            served = await asyncio.gather(*(try_one(i) for i in range(attempts)))
            n = sum(served)
            assert n <= THREADS, f"{n} blocking sessions served with {THREADS} threads"
            assert n >= THREADS // 2, f"only {n} blocking sessions served"
            # while the blocking sessions hold every thread, nothing else is served
            if n == THREADS:
                took = await asyncio.to_thread(get_root, server, 2.0)
                assert took is None, f"GET / answered in {took}s with all threads held"
            print(f"blocking: {n} of {attempts} served within 2 s")
            return n
        finally:
            for _, writer in opened:
                writer.close()

    run(go(), timeout=60)
    # once the blocking sessions are gone the server serves again
    assert get_root(server, 15.0) is not None
    wait_status(server, lambda st: int(st["WebSocketSessionsBlocking"]) == 0,
                "all blocking sessions closed", timeout=15)
