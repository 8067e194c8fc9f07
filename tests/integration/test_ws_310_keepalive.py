"""Keep-alive pings and the dead-client timeout (WebSocketPingInterval 1).

Per server (every MPM; on event also a `WebSocketDriver blocking` location), over ws and
wss at once:
  - a `websockets` client (answers pings itself, sends none) idles 4 s and still echoes;
  - a raw client that answers every ping receives one about every interval, is never
    closed, and still echoes after 4 s;
  - a raw client that reads but never answers receives a ping about one interval after
    the handshake, then a close 1001 "ping timeout" about one interval after that, and
    its session-end line says close=1001 closed_by=server.
"""

import asyncio
import time

from rawws import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, Closed, RawWS
from support import mpm_server, scaled, wait_session_ends
from wsutil import connect, recv, run

INTERVAL = 1.0
IDLE = 4.0
PING = f"WebSocketPingInterval {INTERVAL:g}\n"
LOCATIONS = [
    {"path": "/echo-ping", "plugin": "echo", "extra": PING},
    {"path": "/echo-ping-blocking", "plugin": "echo",
     "extra": PING + "WebSocketDriver blocking\n"},
]


server = mpm_server(LOCATIONS, loglevel="warn websocket:info")


def driver_for(server, path):
    return "async" if server.mpm == "event" and not path.endswith("-blocking") else "blocking"


def lib_client_idles(server, transport, path):
    """websockets answers the server's pings: idle IDLE s, still open, still echoes."""
    async def go():
        async with connect(server, transport, path, ping_interval=None) as ws:
            port = ws.local_address[1]
            await ws.send("before")
            assert await recv(ws) == "before"
            await asyncio.sleep(IDLE)      # the test's subject: a long idle period
            assert ws.open, f"closed while idle: {ws.close_code} {ws.close_reason}"
            await ws.send("after idle")
            assert await recv(ws) == "after idle"
            return port
    return go()


def raw_client_answers(server, transport, path):
    """Answers each ping at once: pings come about every interval, no close."""
    with RawWS.open(server, transport, path) as ws:
        port = ws.sock.getsockname()[1]
        t0 = time.monotonic()
        pings = []
        while time.monotonic() - t0 < IDLE:
            try:
                f = ws.recv_frame(timeout=max(0.01, IDLE - (time.monotonic() - t0)))
            except TimeoutError:
                break
            assert f.opcode != OP_CLOSE, f"closed: {f.close_code()} {f.payload[2:]!r}"
            assert f.opcode == OP_PING, f
            pings.append(time.monotonic() - t0)
            ws.send_frame(OP_PONG, f.payload)
        assert len(pings) >= IDLE / INTERVAL - 2, f"pings at {pings}"
        assert pings[0] >= INTERVAL * 0.8, f"first ping too early: {pings}"
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert all(g >= INTERVAL * 0.8 for g in gaps), f"pings too close: {pings}"
        ws.send_text("still here")
        assert ws.recv_message(timeout=5) == (OP_TEXT, b"still here")
        ws.send_close(1000)
        assert ws.expect_close(timeout=5)[0] == 1000
    return port


def raw_client_silent(server, transport, path):
    """Never sends after the handshake: ping(s), then close 1001 "ping timeout"."""
    with RawWS.open(server, transport, path) as ws:
        port = ws.sock.getsockname()[1]
        t0 = time.monotonic()
        pings = []
        while True:
            try:
                f = ws.recv_frame(timeout=max(0.01, 4 * INTERVAL - (time.monotonic() - t0)))
            except (TimeoutError, Closed) as e:
                raise AssertionError(f"no close after {time.monotonic() - t0:.2f}s "
                                     f"(pings at {pings}): {e!r}") from None
            if f.opcode == OP_PING:
                pings.append(time.monotonic() - t0)
                continue
            assert f.opcode == OP_CLOSE, f
            break
        t_close = time.monotonic() - t0
        assert (f.close_code(), f.close_reason()) == (1001, "ping timeout"), f
        assert pings, "closed without a ping first"
        assert INTERVAL * 0.8 <= pings[0] <= scaled(INTERVAL * 1.6), \
            f"first ping at {pings[0]:.2f}s"
        assert t_close - pings[0] >= INTERVAL * 0.8, (
            f"closed {t_close - pings[0]:.2f}s after the ping, before an interval")
        assert 2 * INTERVAL * 0.9 <= t_close <= scaled(3.5 * INTERVAL), \
            f"close at {t_close:.2f}s"
        # the dead-peer phase is over: complete the close handshake
        ws.send_frame(OP_CLOSE, f.payload[:2])
        ws.expect_tcp_close(timeout=5)
    return port


def _paths(server):
    # The forced-blocking location only differs from the default on event.
    return ["/echo-ping", "/echo-ping-blocking"] if server.mpm == "event" else ["/echo-ping"]


def test_ping_keepalive_and_dead_client(server):
    for path in _paths(server):
        _ping_keepalive_and_dead_client(server, path)


def _ping_keepalive_and_dead_client(server, path):
    server.mark_log()

    async def go():
        jobs = []
        for transport in ("ws", "wss"):
            jobs.append(lib_client_idles(server, transport, path))
            jobs.append(asyncio.to_thread(raw_client_answers, server, transport, path))
            jobs.append(asyncio.to_thread(raw_client_silent, server, transport, path))
        return await asyncio.gather(*jobs)

    ports = run(go(), timeout=30)
    lib_ports, answer_ports, silent_ports = ports[0::3], ports[1::3], ports[2::3]
    ends = wait_session_ends(server, ports)
    driver = driver_for(server, path)
    for port in ports:
        assert f" driver={driver} " in ends[port], ends[port]
    for port in silent_ports:
        assert "close=1001 closed_by=server" in ends[port], ends[port]
    for port in lib_ports + answer_ports:
        assert "close=1000 closed_by=client" in ends[port], ends[port]
