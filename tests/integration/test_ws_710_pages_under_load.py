"""Event MPM like `make demo`: pages and new sessions are served while WebSocket clients
are busy.

300 sessions echo 32 B text messages as fast as they can (one in flight each, checked)
on a server with the demo's settings (genconf.SCALE_EVENT: 2 children x 25 workers).
While they do, 10 plain page loads of `/` on new connections must each return 200 with
the whole of htdocs/index.html, and a new WebSocket session must complete its handshake
and echo; the busy sessions must have kept echoing meanwhile.  No timing is asserted
here: how long the pages take under load is a figure of `make bench` ("pages under
load", docs/BENCHMARKS.md).
"""

import asyncio
import os

import pytest

import genconf
from rawws import OP_CLOSE, close_payload
from support import AsyncRaw, scaled
from wsutil import run

BUSY = 300
PAGES = 10
PAYLOAD = b"0123456789abcdef0123456789abcdef"          # 32 B
INDEX = os.path.join(genconf.REPO, "htdocs", "index.html")


@pytest.fixture(scope="module")
def server(httpd_factory):
    return httpd_factory(mpm="event", tls=False, locations=[("/echo", "echo")],
                         loglevel="warn", mpm_settings=genconf.SCALE_EVENT)


async def page_load(srv):
    """GET / on a new connection; (status line, body)."""
    reader, writer = await asyncio.open_connection(srv.host, srv.port)
    try:
        writer.write(f"GET / HTTP/1.1\r\nHost: {srv.host}:{srv.port}\r\n"
                     "Connection: close\r\n\r\n".encode())
        data = await reader.read()                  # until the server closes
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0], body


class Busy:
    """BUSY sessions, each echoing PAYLOAD in a loop until stop()."""

    def __init__(self, clients):
        self.clients = clients
        self.echoes = 0
        self.warm = asyncio.Event()                 # every session has echoed 3 times
        self._stop = False
        self.tasks = [asyncio.create_task(self._pump(c)) for c in clients]

    async def _pump(self, c):
        while not self._stop:
            await c.echo(PAYLOAD, timeout=60)
            self.echoes += 1
            if self.echoes >= 3 * len(self.clients):
                self.warm.set()

    async def stop(self):
        """Let each session finish its echo in flight, then close it normally."""
        self._stop = True
        await asyncio.gather(*self.tasks)
        for c in self.clients:
            c.send(OP_CLOSE, close_payload(1000))
        for c in self.clients:
            b0, _ = await asyncio.wait_for(c.recv_frame(), scaled(30))
            assert b0 & 0x0F == OP_CLOSE
            c.close()


def test_pages_and_handshakes_while_busy(server):
    with open(INDEX, "rb") as f:
        index = f.read()

    async def go():
        clients = []
        for start in range(0, BUSY, 50):            # open in batches of 50
            clients += await asyncio.gather(*(AsyncRaw.open(server, "ws", "/echo")
                                              for _ in range(start, min(BUSY, start + 50))))
        busy = Busy(clients)
        await asyncio.wait_for(busy.warm.wait(), scaled(60))
        before = busy.echoes
        for i in range(PAGES):
            status, body = await asyncio.wait_for(page_load(server), scaled(60))
            assert status.startswith(b"HTTP/1.1 200 "), f"page load {i}: {status!r}"
            assert body == index, f"page load {i}: {len(body)} bytes, not index.html"
        fresh = await asyncio.wait_for(AsyncRaw.open(server, "ws", "/echo"), scaled(60))
        await fresh.echo("a new session under load", timeout=60)
        assert busy.echoes > before, "the busy sessions stopped echoing"
        during = busy.echoes - before
        fresh.send(OP_CLOSE, close_payload(1000))
        b0, _ = await asyncio.wait_for(fresh.recv_frame(), scaled(30))
        assert b0 & 0x0F == OP_CLOSE
        fresh.close()
        await busy.stop()
        print(f"\n[pages under load] {BUSY} busy sessions echoed {during} messages during "
              f"the {PAGES} page loads and the new session")

    run(go(), timeout=scaled(120))

