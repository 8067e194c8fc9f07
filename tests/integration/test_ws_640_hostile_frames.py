"""Hostile frame streams: huge declared lengths, endless fragmented messages, ping floods.

  - a frame header declaring 2^63 bytes (the top bit, forbidden by RFC 6455 5.2): 1002
    at once, before any payload; 2^63 - 1 bytes (legal but far over the limit): 1009
    at once, nothing buffered;
  - an endless fragmented message on a location with WebSocketMaxMessageSize 65536:
    1009 as soon as the fragments pass 64 KiB; endless *empty* fragments (legal: the
    message never grows) cost nothing and the message still completes;
  - 50,000 pings sent while the client does not read for 2 s, three times: the
    server answers every one, in order (RFC 6455 5.5.3 would let it skip pongs for
    pings it has not answered yet; this module answers each, and 50,000 pongs are
    500 KB, far below its queue limit), memory stays bounded (a few MiB, not
    growing from round to round; peaks from VmHWM), and the connection echoes after.
A canary echoes throughout; RSS is compared with its level before each case.
"""

import struct
import threading
import time

import pytest

from rawws import (OP_BINARY, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawWS, build_frame)
from support import (mpm_server, SANITIZED, Canary, PeakMemory, assert_memory_back, report,
                     settled_rss_kb, wait_sessions, within_margin)

LIMIT = 65536
LOCATIONS = [("/echo", "echo"),
             {"path": "/small", "plugin": "echo", "max_message_size": LIMIT}]
PINGS = 50000
# One connection's pongs waiting to be written, httpd's and mod_ssl's buffers: ~8 MiB
# measured (event, worker, prefork; ws and wss); the point is that it is a constant.
PING_FLOOD_BOUND_KB = 24 * 1024


srv = mpm_server(LOCATIONS)


@pytest.fixture
def canary(srv):
    wait_sessions(srv, 0)
    c = Canary(srv, "ws")
    c.start()
    yield c
    c.finish()


def test_length_2_63(srv, transport, canary):
    with RawWS.open(srv, transport, "/echo") as c:
        c.send_raw(bytes([0x82, 0xFF]) + struct.pack("!Q", 1 << 63) + b"\1\2\3\4")
        code, _ = c.expect_close()
    with RawWS.open(srv, transport, "/echo") as c:
        c.send_raw(bytes([0x82, 0xFF]) + struct.pack("!Q", (1 << 63) - 1) + b"\1\2\3\4")
        code2, _ = c.expect_close()
    report(f"640 length {srv.mpm} {transport}", close_2_63=code, close_2_63_minus_1=code2)
    assert code == 1002
    assert code2 == 1009
    srv.assert_no_crash()


def test_endless_fragmented_message(srv, transport, canary):
    before = settled_rss_kb(srv)
    with RawWS.open(srv, transport, "/small", timeout=20) as c:
        c.send_frame(OP_BINARY, b"f" * 1000, fin=False)
        sent = 1000
        code = None
        # keep sending until the server closes; it must do so past 64 KiB
        try:
            while sent < 10 * LIMIT:
                c.send_frame(OP_CONT, b"f" * 1000, fin=False)
                sent += 1000
        except OSError:
            pass                     # the server closed while we were still sending
        code, reason = c.expect_close()
    after = settled_rss_kb(srv)
    report(f"640 endless-fragments {srv.mpm} {transport}", limit=LIMIT, bytes_sent=sent,
           close=code, reason=reason.decode(), rss_before_kb=before, rss_after_kb=after)
    assert code == 1009
    assert_memory_back("640 fragments", before, after)


def test_endless_empty_fragments(srv, transport, canary):
    """200,000 empty continuation frames: legal, the message stays empty, memory flat."""
    n = 200_000
    before = settled_rss_kb(srv)
    mem = PeakMemory(srv)
    with RawWS.open(srv, transport, "/small", timeout=60) as c:
        empty = build_frame(OP_CONT, b"", fin=False, mask_key=b"\0\0\0\0")
        c.send_frame(OP_TEXT, b"", fin=False)
        batch = empty * 1000
        for _ in range(n // 1000):
            c.send_raw(batch)
        c.send_frame(OP_CONT, b"done")
        assert c.recv_message(timeout=60) == (OP_TEXT, b"done")
        peak = mem.peak_kb()
    after = settled_rss_kb(srv)
    report(f"640 empty-fragments {srv.mpm} {transport}", fragments=n, rss_before_kb=before,
           rss_peak_kb=peak, rss_after_kb=after)
    assert within_margin(before, peak)
    assert_memory_back("640 empty fragments", before, after)


def ping_flood(srv, c, base):
    """PINGS pings (payload: an 8-byte sequence number from base) sent by a thread
    while this one does not read for 2 s, then a text message; read everything.
    Returns (pongs, last pong's number - base, peak RSS, seconds)."""
    frames = [build_frame(OP_PING, struct.pack("!Q", base + i)) for i in range(PINGS)]
    sender_error = []

    def send_all():
        try:
            for i in range(0, PINGS, 500):
                c.send_raw(b"".join(frames[i:i + 500]))
            c.send_frame(OP_TEXT, b"after the pings")
        except Exception as e:
            sender_error.append(e)

    sender = threading.Thread(target=send_all, daemon=True)
    mem = PeakMemory(srv)
    t0 = time.monotonic()
    sender.start()
    time.sleep(2.0)     # the period under test: the client does not read
    pongs, last = 0, base - 1
    while True:
        f = c.recv_frame(timeout=60)
        if f.opcode == OP_PONG:
            seq = struct.unpack("!Q", f.payload)[0]
            assert seq == last + 1, f"pong {seq} after pong {last}: one is missing"
            last, pongs = seq, pongs + 1
            continue
        assert (f.opcode, f.payload) == (OP_TEXT, b"after the pings"), f
        break
    sender.join(30)
    assert not sender_error, sender_error
    return pongs, last - base, mem.peak_kb(), time.monotonic() - t0


def test_ping_flood(srv, transport, canary):
    """Three rounds of 50,000 pings on one connection that does not read for 2 s each.
    RSS grows by a few MiB while pongs wait in httpd's (and mod_ssl's) buffers; the
    growth is bounded (PING_FLOOD_BOUND_KB), and a later round does not grow it
    further: memory is not proportional to the pings."""
    start = settled_rss_kb(srv)
    c = RawWS.open(srv, transport, "/echo", timeout=60)
    rounds = [ping_flood(srv, c, r * PINGS) for r in range(3)]
    c.send_text("still echoing")
    assert c.recv_message() == (OP_TEXT, b"still echoing")
    c.send_close(1000)
    assert c.expect_close()[0] == 1000
    c.close()
    after = settled_rss_kb(srv)
    peaks = [r[2] for r in rounds]
    report(f"640 ping-flood {srv.mpm} {transport}", pings=3 * PINGS,
           pongs=sum(r[0] for r in rounds), rss_start_kb=start, round_peaks_kb=peaks,
           seconds=[f"{r[3]:.1f}" for r in rounds], rss_after_kb=after)
    assert all(r[1] == PINGS - 1 for r in rounds), "the last ping was not answered"
    assert [r[0] for r in rounds] == [PINGS] * 3, "not every ping was answered"
    assert SANITIZED or max(peaks) <= start + PING_FLOOD_BOUND_KB, (
        f"a ping flood took RSS from {start} to {max(peaks)} KiB")
    assert within_margin(max(peaks[:-1]), peaks[-1]), f"RSS still growing: {peaks}"
    srv.assert_no_crash()
