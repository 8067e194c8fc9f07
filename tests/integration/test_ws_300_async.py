"""Drivers on every MPM: a first frame pipelined with the handshake, which driver serves a
session (server-status and the session-end log line), and plugin pushes (flood through
a handle, channel publish) reaching a connection that sits parked and silent.

On the event MPM the async driver serves /echo and /probe (the connection goes back to the
MPM between inputs); `WebSocketDriver blocking` forces a thread per connection; worker and
prefork always run the blocking driver.  /probe-park sets `WebSocketAsyncDelay 0`: the
connection parks as soon as its input is handled, so every push finds it parked.
"""

import asyncio
import struct
import time

import pytest

from rawws import (OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, RawWS, accept_for,
                   build_frame, close_payload, new_key)
import support
from support import mpm_server, scaled, wait_session_ends
from wsutil import connect, recv, recv_json, run

BLOCKING = "WebSocketDriver blocking\n"
LOCATIONS = [
    ("/echo", "echo"),
    {"path": "/echo-blocking", "plugin": "echo", "extra": BLOCKING},
    ("/probe", "probe"),
    {"path": "/probe-park", "plugin": "probe", "extra": "WebSocketAsyncDelay 0\n"},
    {"path": "/probe-blocking", "plugin": "probe", "extra": BLOCKING},
]


server = mpm_server(LOCATIONS, loglevel="warn websocket:info")


def expected_driver(server, path):
    if server.mpm == "event" and not path.endswith("-blocking"):
        return "async"
    return "blocking"


# ---- helpers ------------------------------------------------------------------------

def handshake_bytes(server, transport, path, key):
    return (f"GET {path} HTTP/1.1\r\n"
            f"Host: {server.host}:{server.port_for(transport)}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


def open_pipelined(server, transport, path, first_bytes):
    """Connect and send the handshake and `first_bytes` in ONE sendall; check the 101."""
    ws = RawWS.connect(server, transport)
    key = new_key()
    ws.send_raw(handshake_bytes(server, transport, path, key) + first_bytes)
    resp = ws.read_response()
    assert resp.status == 101, resp
    assert resp.header("Sec-WebSocket-Accept") == accept_for(key), resp
    return ws


def wait_status(server, want, timeout=5.0):
    """Poll /server-status?auto until every key of `want` has that integer value."""
    return support.wait_status(
        server, lambda st: {k: int(st.get(k, -1)) for k in want} == want, want, timeout)


def local_port(ws):
    return ws.sock.getsockname()[1]


# ---- 1. a first frame in the same write as the handshake ----------------------------

@pytest.mark.parametrize("path", ["/echo", "/echo-blocking"])
def test_pipelined_first_frame(server, transport, path):
    """Handshake + one masked text frame in one TCP write: the echo comes back (the frame
    sits in the input filters' buffer, where the MPM's poll cannot see it)."""
    with open_pipelined(server, transport, path,
                        build_frame(OP_TEXT, b"pipelined hello")) as ws:
        assert ws.recv_message(timeout=5) == (OP_TEXT, b"pipelined hello")
        # and the session goes on normally
        ws.send_text("second")
        assert ws.recv_message(timeout=5) == (OP_TEXT, b"second")
        ws.send_close(1000)
        assert ws.expect_close(timeout=5)[0] == 1000


@pytest.mark.parametrize("path", ["/echo", "/echo-blocking"])
def test_pipelined_frames_and_ping(server, transport, path):
    """Handshake + text, binary, ping, fragmented text, text in one write: every answer
    arrives (data in order, the pong with the ping's payload)."""
    first = (build_frame(OP_TEXT, b"one")
             + build_frame(OP_BINARY, bytes(range(200)))
             + build_frame(OP_PING, b"are you there")
             + build_frame(OP_TEXT, b"fra", fin=False)
             + build_frame(0x0, b"gmen", fin=False)
             + build_frame(0x0, b"ted", fin=True)
             + build_frame(OP_TEXT, b"last"))
    with open_pipelined(server, transport, path, first) as ws:
        data, pongs = [], []
        deadline = time.monotonic() + 5
        while len(data) < 4 or not pongs:
            f = ws.recv_frame(timeout=max(0.01, deadline - time.monotonic()))
            assert not f.masked and f.fin, f
            if f.opcode == OP_PONG:
                pongs.append(f.payload)
            else:
                assert f.opcode in (OP_TEXT, OP_BINARY), f
                data.append((f.opcode, f.payload))
        assert pongs == [b"are you there"]
        assert data == [(OP_TEXT, b"one"), (OP_BINARY, bytes(range(200))),
                        (OP_TEXT, b"fragmented"), (OP_TEXT, b"last")]


@pytest.mark.parametrize("path", ["/echo", "/echo-blocking"])
def test_pipelined_frames_and_close(server, transport, path):
    """Handshake, two frames and a close in one write, then nothing more: both echoes,
    then the close answered, then TCP closed - all from input that arrived at once."""
    first = (build_frame(OP_TEXT, b"a") + build_frame(OP_TEXT, b"b")
             + build_frame(OP_CLOSE, close_payload(1000, "bye")))
    with open_pipelined(server, transport, path, first) as ws:
        assert ws.recv_message(timeout=5) == (OP_TEXT, b"a")
        assert ws.recv_message(timeout=5) == (OP_TEXT, b"b")
        f = ws.recv_control(OP_CLOSE, timeout=5)
        assert f.close_code() == 1000
        ws.expect_tcp_close(timeout=5)


# ---- 2. which driver serves a session --------------------------------------------------

@pytest.mark.parametrize("path", ["/echo", "/echo-blocking"])
def test_driver_choice(server, transport, path):
    """server-status counts the open sessions under the expected driver, and each
    session-end line names it."""
    driver = expected_driver(server, path)
    n = 3
    wait_status(server, {"WebSocketSessionsAsync": 0, "WebSocketSessionsBlocking": 0})
    server.mark_log()
    conns = [RawWS.open(server, transport, path) for _ in range(n)]
    try:
        for i, ws in enumerate(conns):
            ws.send_text(f"m{i}")
            assert ws.recv_message(timeout=5) == (OP_TEXT, f"m{i}".encode())
        want = {"WebSocketSessionsAsync": n if driver == "async" else 0,
                "WebSocketSessionsBlocking": n if driver == "blocking" else 0}
        wait_status(server, want)
        ports = [local_port(ws) for ws in conns]
        for ws in conns:
            ws.send_close(1000)
            assert ws.expect_close(timeout=5)[0] == 1000
    finally:
        for ws in conns:
            ws.close()
    ends = wait_session_ends(server, ports)
    for port, line in ends.items():
        assert f"plugin=echo driver={driver} " in line, line
        assert "close=1000 closed_by=client" in line, line
    wait_status(server, {"WebSocketSessionsAsync": 0, "WebSocketSessionsBlocking": 0})


# ---- 4. pushes to a silent (parked) connection -------------------------------------------

def check_flood(ws, n, size, timeout=10):
    for seq in range(n):
        op, data = ws.recv_message(timeout=timeout)
        assert op == OP_BINARY, (seq, data[:40])
        assert len(data) == size
        assert struct.unpack("!Q", data[:8])[0] == seq
        assert data[8:] == bytes([seq & 0xFF]) * (size - 8)
    assert ws.recv_message(timeout=timeout) == (OP_TEXT, f"flood-done:{n}".encode())


@pytest.mark.parametrize("path", ["/probe", "/probe-park", "/probe-blocking"])
def test_flood_to_silent_connection(server, transport, path):
    """flood:50:64 from a plugin thread, the client sends nothing more: all 50 messages
    and flood-done arrive, in order and intact; twice, so the second flood reaches a
    connection that has been idle (parked) since."""
    with RawWS.open(server, transport, path) as ws:
        ws.recv_message(timeout=5)          # the opening JSON
        for _ in range(2):
            ws.send_text("flood:50:64")
            check_flood(ws, 50, 64)
        ws.send_close(1000)
        assert ws.expect_close(timeout=5)[0] == 1000


@pytest.mark.parametrize("path", ["/probe", "/probe-park", "/probe-blocking"])
def test_publish_reaches_parked_subscriber(server, transport, path):
    """Subscribers that stay silent after subscribing get every publication from another
    connection within 1 s (on event: a zero-delay MPM callback wakes the parked
    connection; on the others: the wake-up descriptor)."""
    channel = f"park-{server.mpm}-{transport}-{path.strip('/')}"
    nsubs = 5

    async def go():
        subs = []
        try:
            for _ in range(nsubs):
                ws = await connect(server, transport, path, ping_interval=None).__aenter__()
                subs.append(ws)
                await recv_json(ws)
                await ws.send(f"sub:{channel}")
                assert await recv(ws) == f"subscribed:{channel}:0"
            async with connect(server, transport, "/probe", ping_interval=None) as pub:
                await recv_json(pub)
                for i in range(5):
                    # each subscriber is silent: they park after their last input
                    t0 = time.monotonic()
                    await pub.send(f"pub:{channel}:news {i}")
                    got = await asyncio.gather(*(recv(ws, timeout=scaled(1.0))
                                                 for ws in subs))
                    assert got == [f"news {i}"] * nsubs
                    assert time.monotonic() - t0 < scaled(1.0)
        finally:
            await asyncio.gather(*(ws.close() for ws in subs), return_exceptions=True)

    run(go(), timeout=30)
