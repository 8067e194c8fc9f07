"""Server life cycle with open WebSocket sessions: stop, graceful restart, plugin threads
that outlive their connection, a full outbound queue."""

import asyncio
import signal
import time

import pytest
import websockets

from conftest import mpm_params
from rawws import OP_BINARY, OP_TEXT, RawWS
from support import kernel_buffer_max, limit_rcvbuf, report, scaled
from wsutil import connect, expect_closed, recv, recv_json, run

LOCATIONS = [
    ("/echo", "echo"),
    ("/probe", "probe"),
    {"path": "/smallq", "plugin": "probe", "max_queue": 65536},
]
SMALLQ = 65536


@pytest.mark.parametrize("mpm", mpm_params())
def test_stop_with_open_sessions(httpd_factory, mpm):
    """SIGTERM with idle sessions and one mid-flood: httpd stops promptly, no child
    crashes or has to be SIGKILLed, and every client sees its connection end."""
    srv = httpd_factory(mpm=mpm, tls=True, locations=LOCATIONS)
    conns = [RawWS.open(srv, t, "/echo") for t in ("ws", "wss", "ws", "wss")]
    flooding = RawWS.open(srv, "ws", "/probe")
    flooding.recv_message()
    flooding.send_text("flood:100000000:64")
    assert flooding.recv_message()[0] == OP_BINARY
    for c in conns:
        c.send_text("hi")
        assert c.recv_message() == (OP_TEXT, b"hi")
    t0 = time.monotonic()
    srv.stop()                          # asserts: no crash, no SIGKILL, no leftover child
    assert time.monotonic() - t0 < scaled(10), "httpd took too long to stop"
    for c in conns:
        c.expect_tcp_close(timeout=5)   # a close frame (1001) first is fine
        c.close()
    flooding.close()


@pytest.mark.parametrize("mpm", mpm_params())
def test_graceful_restart_closes_sessions_1001(httpd_factory, mpm):
    """A graceful restart (SIGUSR1) retires the old children: their sessions are closed
    with 1001 (going away) instead of lingering, and new sessions work."""
    srv = httpd_factory(mpm=mpm, tls=True, locations=LOCATIONS)

    async def go():
        old = [await connect(srv, t, "/echo").__aenter__() for t in ("ws", "wss")]
        for ws in old:
            await ws.send("before")
            assert await recv(ws) == "before"
        srv.mark_log()
        srv.proc.send_signal(signal.SIGUSR1)
        await asyncio.to_thread(srv.wait_for_log, r"resuming normal operations", 15)
        codes = await asyncio.gather(*(expect_closed(ws, timeout=15) for ws in old))
        assert [c for c, _ in codes] == [1001, 1001], codes
        for t in ("ws", "wss"):
            async with connect(srv, t, "/echo") as ws:
                await ws.send("after")
                assert await recv(ws) == "after"

    run(go(), timeout=40)
    assert srv.alive()


@pytest.fixture(scope="module")
def server(httpd_factory):
    return httpd_factory(mpm="event", tls=True, locations=LOCATIONS)


def test_flood_client_vanishes(server, transport):
    """The client drops the TCP connection mid-flood: the plugin thread's handle sends
    fail cleanly, nothing crashes, the server keeps serving."""
    for _ in range(5):
        c = RawWS.open(server, transport, "/probe")
        c.recv_message()
        c.send_text("flood:100000000:256")
        for _ in range(100):
            assert c.recv_message()[0] == OP_BINARY
        c.sock.close()
    with RawWS.open(server, transport, "/echo") as c:
        c.send_text("still serving")
        assert c.recv_message() == (OP_TEXT, b"still serving")
    server.assert_no_crash()


def test_flood_client_closes_normally(server, transport):
    async def go():
        # max_queue=None: the library must keep reading (and dropping) messages while
        # it waits for the server's close frame, which comes after what was queued.
        # 20000 x 128 bytes fit in the default 16 MiB queue: no 1008 for a slow reader.
        async with connect(server, transport, "/probe", max_queue=None) as ws:
            await recv_json(ws)
            await ws.send("flood:20000:128")
            for _ in range(1000):
                assert isinstance(await recv(ws), bytes)
            await asyncio.wait_for(ws.close(1000), 15)
            assert ws.close_code == 1000

    run(go())
    server.assert_no_crash()


def test_full_queue_closes_1008(server, transport):
    """WebSocketMaxQueue 64 KiB: the plugin thread produces far faster than this client
    reads (it reads nothing until the server has ended the session), the queue fills,
    and the server closes with 1008 after the messages already queued, which arrive
    complete and in order: no more of them than the queue and the two kernel socket
    buffers hold (the default 16 MiB queue would let through 16,384 more)."""
    server.mark_log()
    c = RawWS.open(server, transport, "/smallq", timeout=30)
    rcvbuf = limit_rcvbuf(c.sock)
    c.recv_message()
    c.send_text("flood:10000000:1024")
    server.wait_for_log(r"WS00040: session end: plugin=probe .* close=1008 "
                        r"closed_by=server", timeout=scaled(30))
    bound = (SMALLQ + kernel_buffer_max(rcvbuf)) // 1024 + 1
    seq = 0
    while True:
        f = c.recv_frame(timeout=30)
        if f.opcode == 0x8:
            assert f.close_code() == 1008, f
            break
        assert f.opcode == OP_BINARY and len(f.payload) == 1024, f
        assert int.from_bytes(f.payload[:8], "big") == seq
        assert f.payload[8:] == bytes([seq & 0xFF]) * 1016
        seq += 1
        assert seq <= bound, f"more than {bound} messages before 1008: the " \
            f"{SMALLQ}-byte queue limit is not enforced"
    report(f"600 full-queue {server.mpm} {transport}", delivered_before_1008=seq,
           bound=bound)
    assert seq > 0
    c.close()


@pytest.fixture(scope="module")
def rt_server(httpd_factory):
    """mod_reqtimeout with 2 s limits: they govern reading the HTTP request, and must not
    apply to the WebSocket session after the upgrade."""
    return httpd_factory(mpm="event", tls=True, locations=LOCATIONS,
                         extra_global="RequestReadTimeout header=2 body=2\n")


def test_request_timeouts_do_not_apply_after_upgrade(rt_server):
    srv = rt_server

    async def idle(transport):
        async with connect(srv, transport, "/echo", ping_interval=None) as ws:
            await ws.send("one")
            assert await recv(ws) == "one"
            await asyncio.sleep(4)    # the idle period under test (> the 2 s limits)
            await ws.send("two")
            assert await recv(ws) == "two"

    def slow_frame(transport):
        from rawws import build_frame
        with RawWS.open(srv, transport, "/echo") as c:
            frame = build_frame(OP_TEXT, b"slow frame")
            c.send_raw(frame[:5])
            time.sleep(4)             # a frame stalled mid-way (> the 2 s limits)
            c.send_raw(frame[5:])
            assert c.recv_message() == (OP_TEXT, b"slow frame")

    async def go():
        await asyncio.gather(idle("ws"), idle("wss"),
                             asyncio.to_thread(slow_frame, "ws"),
                             asyncio.to_thread(slow_frame, "wss"))

    run(go(), timeout=30)


def test_refused_then_accepted_same_server(server, transport):
    async def go():
        with pytest.raises(websockets.exceptions.InvalidStatusCode):
            async with connect(server, transport, "/probe?refuse=503"):
                pass
        async with connect(server, transport, "/probe") as ws:
            assert (await recv_json(ws))["uri"] == "/probe"

    run(go())
