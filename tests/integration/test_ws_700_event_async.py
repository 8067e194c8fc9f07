"""Event MPM: idle WebSocket sessions do not each hold a worker thread.

The server has 2 children x 25 threads = 50 workers.  150 sessions open at once, all
stay open, and every one still echoes: a driver that parked a thread per session would
stall after 50."""

import asyncio

import pytest

from wsutil import connect, recv, run

SESSIONS = 150


@pytest.fixture(scope="module")
def server(httpd_factory):
    return httpd_factory(mpm="event", tls=True, locations=[("/echo", "echo")],
                         loglevel="warn",
                         mpm_settings={"AsyncRequestWorkerFactor": 4})


@pytest.mark.parametrize("transport", ["ws", "wss"])
def test_more_sessions_than_threads(server, transport):
    async def go():
        conns = []
        try:
            for i in range(SESSIONS):
                ws = await connect(server, transport, "/echo", ping_interval=None,
                                   compression=None).__aenter__()
                conns.append(ws)
                await ws.send(f"hello {i}")
                assert await recv(ws) == f"hello {i}"
            # all open at once: each still answers
            for i, ws in enumerate(conns):
                await ws.send(f"again {i}")
            for i, ws in enumerate(conns):
                assert await recv(ws) == f"again {i}"
        finally:
            await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)

    run(go(), timeout=60)
