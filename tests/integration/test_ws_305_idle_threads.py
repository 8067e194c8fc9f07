"""Event MPM: an idle WebSocket connection holds no thread; a blocking one does.

The server has 2 children x 10 threads = 20 workers in all (AsyncRequestWorkerFactor 20
lets each child take 10 + 10 * 20 connections).  200 idle async sessions all stay open,
none of them holds a worker (server-status BusyWorkers), every one still echoes, and a
plain GET / is answered at once.  The same server with `WebSocketDriver blocking` cannot
serve more sessions than it has threads: 20 sessions are served (handshake and echo),
and while they are open neither a 21st session nor a plain GET / is (within 2 s)."""

import asyncio
import socket
import time

import pytest

from rawws import OP_TEXT, build_frame, http_request
from support import AsyncRaw, scaled, wait_status
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


async def raw_open(server, transport, path):
    """A WebSocket handshake on an asyncio stream; (reader, writer) after the 101."""
    raw = await AsyncRaw.open(server, transport, path)
    return raw.reader, raw.writer


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
            took = await asyncio.to_thread(get_root, server, scaled(2.0))
            assert took is not None and took < scaled(1.0), f"GET / took {took}"
            # all of them, at once, still echo
            await asyncio.gather(*(ws.send(f"again {i}") for i, ws in enumerate(conns)))
            got = await asyncio.gather(*(recv(ws, timeout=10) for ws in conns))
            assert got == [f"again {i}" for i in range(SESSIONS)]
            took = await asyncio.to_thread(get_root, server, scaled(2.0))
            assert took is not None and took < scaled(1.0), f"GET / took {took}"
        finally:
            await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)

    run(go(), timeout=60)
    wait_status(server, lambda st: int(st["WebSocketSessionsAsync"]) == 0,
                "all async sessions closed")


def test_blocking_sessions_exhaust_threads(server):
    """The contrast: with a thread per session, THREADS sessions take every thread."""
    async def go():
        opened = []
        done = []

        async def one(i):
            conn = await raw_open(server, "ws", "/echo-blocking")
            opened.append(conn)
            assert await raw_echo(conn, f"b{i}".encode())
            done.append(i)

        async def extra():
            conn = await raw_open(server, "ws", "/echo-blocking")
            opened.append(conn)
            return await raw_echo(conn, b"extra")

        try:
            # the precondition: every thread holds a served session (server-status
            # itself cannot be served now)
            try:
                await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(THREADS))),
                                       scaled(20))
            except asyncio.TimeoutError:
                raise AssertionError(f"only {len(done)} of {THREADS} blocking sessions "
                                     f"were served within {scaled(20)} s") from None
            # then nothing else is served: neither one more session nor a GET
            try:
                served = await asyncio.wait_for(extra(), 2.0)
            except (asyncio.TimeoutError, OSError, asyncio.IncompleteReadError):
                served = False
            assert not served, f"a session beyond the {THREADS} threads was served"
            took = await asyncio.to_thread(get_root, server, 2.0)
            assert took is None, f"GET / answered in {took}s with all threads held"
        finally:
            for _, writer in opened:
                writer.close()

    run(go(), timeout=scaled(20) + 30)
    # once the blocking sessions are gone the server serves again
    assert get_root(server, 15.0) is not None
    wait_status(server, lambda st: int(st["WebSocketSessionsBlocking"]) == 0,
                "all blocking sessions closed", timeout=15)
