"""Paths where the client or the server's life cycle misbehaves, each with the one answer
the module gives:

  - the server's close is never answered: TCP is closed at the close-wait deadline (5 s
    after the close frame), not before and not never;
  - an upgrade on a keep-alive connection that has just served a plain GET;
  - a client that keeps sending data but never answers a ping stays open (any frame
    counts as alive); once it falls silent it gets 1001 "ping timeout";
  - a plugin thread closes the connection through its handle (idle, and during a flood
    from another plugin thread); two plugin threads send to one connection at once;
  - a graceful restart during an endless plugin flood; `apache2 -k restart` with open
    sessions.
"""

import subprocess
import threading
import time

import pytest

from conftest import mpm_params
from httpd import HTTPD, crash_lines
from rawws import (OP_BINARY, OP_CLOSE, OP_PING, OP_TEXT, Closed, RawWS, accept_for,
                   expect_code, new_key)
from support import children, count_session_ends, mpm_server, scaled, wait_gone

CLOSE_WAIT = 5.0                    # WS_CLOSE_WAIT in src/mod_websocket.c
INTERVAL = 1.0
# An endless flood a Python reader keeps up with (about 10,000 messages a second):
# unpaced, the plugin thread fills any queue and the session ends with 1008 first.
PACE_US = 100
LOCATIONS = [("/echo", "echo"), ("/probe", "probe"),
             {"path": "/echo-ping", "plugin": "echo",
              "extra": f"WebSocketPingInterval {INTERVAL:g}\n"}]

server = mpm_server(LOCATIONS, mpms=["event"], loglevel="warn websocket:info")


def probe(srv, transport, timeout=10):
    c = RawWS.open(srv, transport, "/probe", timeout=timeout)
    assert c.recv_message()[0] == OP_TEXT       # the probe's hello
    return c


def apachectl(srv, how):
    p = subprocess.run([HTTPD, "-f", srv.conf, "-k", how], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    assert p.returncode == 0, f"apache2 -k {how}: {p.stdout.decode(errors='replace')}"


# ---- the close handshake ----------------------------------------------------------

def test_close_never_answered(server, transport):
    server.mark_log()
    with probe(server, transport, timeout=30) as c:
        c.send_text("close:4000:no reply expected")
        f = c.recv_frame()
        t0 = time.monotonic()
        assert f.opcode == OP_CLOSE and f.close_code() == 4000, f
        assert f.close_reason() == "no reply expected"
        # no reply: the server waits for one until its deadline, then closes TCP
        c.expect_tcp_close(timeout=scaled(CLOSE_WAIT + 5))
        waited = time.monotonic() - t0
    assert waited >= CLOSE_WAIT - 1.0, f"TCP closed {waited:.2f} s after the close frame"
    server.wait_for_log(r"WS00040: session end: plugin=probe .* close=4000 "
                        r"closed_by=server")


# ---- keep-alive reuse ---------------------------------------------------------------

def test_upgrade_after_get_on_the_same_connection(server, transport):
    with RawWS.connect(server, transport) as ws:
        host = f"{server.host}:{server.port_for(transport)}"
        resp = ws.request("GET", "/", {"Host": host})
        assert resp.status == 200 and (resp.header("Connection") or "").lower() != "close"
        key = new_key()
        resp = ws.request("GET", "/echo", {
            "Host": host, "Upgrade": "websocket", "Connection": "Upgrade",
            "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13"})
        assert resp.status == 101, resp
        assert resp.header("Sec-WebSocket-Accept") == accept_for(key)
        ws.send_text("after a GET")
        assert ws.recv_message() == (OP_TEXT, b"after a GET")
        ws.send_close(1000)
        assert expect_code(ws, 1000) == b""


# ---- pings never answered ---------------------------------------------------------

def test_data_but_no_pongs_keeps_the_session(server, transport):
    """For 4 intervals the client sends a message every 0.3 interval and never answers
    a ping: the session stays open and echoes everything.  Then it only reads: a ping,
    then close 1001 "ping timeout" an interval later."""
    with RawWS.open(server, transport, "/echo-ping", timeout=30) as c:
        sent = 0
        t_end = time.monotonic() + 4 * INTERVAL
        while time.monotonic() < t_end:
            msg = f"alive {sent}".encode()
            c.send_text(msg)
            sent += 1
            while True:                 # the echo (a ping may come first: ignored)
                f = c.recv_frame()
                assert f.opcode != OP_CLOSE, f"closed while sending data: {f!r}"
                if f.opcode == OP_TEXT:
                    assert f.payload == msg
                    break
            time.sleep(0.3 * INTERVAL)  # the client's pace is what is under test
        t_quiet = time.monotonic()
        f = c.recv_frame(timeout=scaled(3 * INTERVAL))
        assert f.opcode == OP_PING, f
        f = c.recv_frame(timeout=scaled(3 * INTERVAL))
        assert (f.opcode, f.close_code(), f.close_reason()) == (OP_CLOSE, 1001,
                                                                "ping timeout"), f
        assert time.monotonic() - t_quiet >= 1.5 * INTERVAL
    assert sent >= 10


# ---- plugin threads and handles ---------------------------------------------------

def test_handle_close_from_a_plugin_thread(server, transport):
    server.mark_log()
    with probe(server, transport) as c:
        c.send_text("thread-close:4001:closed by a thread")
        assert expect_code(c, 4001) == b"closed by a thread"
    server.wait_for_log(r"WS00040: session end: plugin=probe .* close=4001 "
                        r"closed_by=server")


def test_handle_close_during_a_flood_from_another_thread(server, transport):
    """One plugin thread floods (endless, paced so that the reader keeps up), another
    closes: the messages that came are whole and in order, then close 4002; the flood
    thread's sends fail and it ends."""
    with probe(server, transport, timeout=30) as c:
        c.send_text(f"flood:100000000:256:{PACE_US}")
        assert c.recv_frame().opcode == OP_BINARY
        c.send_text("thread-close:4002:enough")
        seq = 1
        while True:
            f = c.recv_frame()
            if f.opcode == OP_CLOSE:
                break
            assert f.opcode == OP_BINARY and len(f.payload) == 256, f
            assert int.from_bytes(f.payload[:8], "big") == seq
            seq += 1
        assert (f.close_code(), f.close_reason()) == (4002, "enough"), f
        c.send_frame(OP_CLOSE, f.payload[:2])
        c.expect_tcp_close()


def test_two_threads_send_to_one_connection(server, transport):
    """Two plugin threads, each with its own handle, flood one connection at once: every
    message arrives whole, each thread's messages in their order (the stream is a merge
    of two sequences 0..N-1), and both end with flood-done."""
    n = 20000
    with probe(server, transport, timeout=30) as c:
        c.send_text(f"flood:{n}:64")
        c.send_text(f"flood:{n}:64")
        counts = [0] * n
        done = 0
        while done < 2:
            op, data = c.recv_message()
            if op == OP_TEXT:
                assert data == b"flood-done:%d" % n, data
                done += 1
                continue
            seq = int.from_bytes(data[:8], "big")
            assert len(data) == 64 and data[8:] == bytes([seq & 0xFF]) * 56, data
            assert counts[seq] < 2 and (seq == 0 or counts[seq] < counts[seq - 1]), \
                f"message {seq} out of order (seen {counts[seq]}, {counts[seq - 1]})"
            counts[seq] += 1
        assert counts == [2] * n
        c.send_close(1000)
        assert expect_code(c, 1000) == b""


# ---- restarts with sessions open ----------------------------------------------------

class Reader(threading.Thread):
    """Reads a flood to its close frame; keeps the number of messages and the close."""

    def __init__(self, conn):
        super().__init__(daemon=True)
        self.c, self.got, self.close, self.error = conn, 0, None, None

    def run(self):
        try:
            while True:
                f = self.c.recv_frame(timeout=30)
                if f.opcode == OP_CLOSE:
                    self.close = (f.close_code(), f.close_reason())
                    self.c.send_frame(OP_CLOSE, f.payload[:2])
                    self.c.expect_tcp_close()
                    return
                assert f.opcode == OP_BINARY, f
                assert int.from_bytes(f.payload[:8], "big") == self.got
                self.got += 1
        except (AssertionError, OSError, Closed, TimeoutError) as e:
            self.error = e


@pytest.mark.parametrize("mpm", mpm_params())
def test_graceful_restart_during_endless_flood(httpd_factory, mpm):
    srv = httpd_factory(mpm=mpm, tls=True, locations=LOCATIONS)
    old = set(children(srv))
    readers = [Reader(probe(srv, t, timeout=30)) for t in ("ws", "wss")]
    for r in readers:
        r.c.send_text(f"flood:100000000:1024:{PACE_US}")
        r.start()
    deadline = time.monotonic() + scaled(10)
    while min(r.got for r in readers) < 500:    # the precondition: both are flooding
        assert time.monotonic() < deadline and all(r.is_alive() for r in readers)
        time.sleep(0.01)  # polling the readers' progress, with a deadline
    srv.mark_log()
    apachectl(srv, "graceful")
    for r in readers:
        r.join(scaled(20))
        assert not r.is_alive(), "a flooded session was not closed by the restart"
        assert r.error is None, repr(r.error)
        assert r.close == (1001, "server shutting down"), r.close
    srv.wait_for_log(r"resuming normal operations", timeout=scaled(15))
    wait_gone(old, 15)
    assert count_session_ends(srv.log_since_mark(), plugin="probe", close=1001,
                              closed_by="server") == 2
    with probe(srv, "ws") as c:
        c.send_text("after the restart")
        assert c.recv_message() == (OP_TEXT, b"after the restart")
    assert not crash_lines(srv.log_since_mark())


def test_k_restart_with_open_sessions(httpd_factory):
    """`apache2 -k restart` (SIGHUP): the children are stopped at once, every session
    ends (the TCP connection is closed: measured, without a close frame), the server
    comes back with a new generation, and new sessions work."""
    srv = httpd_factory(mpm="event", tls=True, locations=LOCATIONS)
    old = set(children(srv))
    idle = [RawWS.open(srv, t, "/echo") for t in ("ws", "wss")]
    for c in idle:
        c.send_text("before")
        assert c.recv_message() == (OP_TEXT, b"before")
    flood = Reader(probe(srv, "ws", timeout=30))
    flood.c.send_text(f"flood:100000000:1024:{PACE_US}")
    flood.start()
    srv.mark_log()
    apachectl(srv, "restart")
    for c in idle:
        c.expect_tcp_close(timeout=scaled(15))
        c.close()
    flood.join(scaled(20))
    assert not flood.is_alive()
    # the children are stopped at once (as by SIGTERM): a close frame 1001 if the
    # session got to send one, else the bare TCP close; nothing else
    assert (isinstance(flood.error, Closed) and flood.close is None) or (
        flood.error is None and flood.close == (1001, "server shutting down")), (
        flood.error, flood.close)
    assert flood.got > 0
    srv.wait_for_log(r"resuming normal operations", timeout=scaled(15))
    wait_gone(old, 15)
    for t in ("ws", "wss"):
        with RawWS.open(srv, t, "/echo") as c:
            c.send_text("after")
            assert c.recv_message() == (OP_TEXT, b"after")
    assert srv.alive()
    assert not crash_lines(srv.log_since_mark())
