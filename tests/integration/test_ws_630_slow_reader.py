"""Clients that never read while the server pushes: bounded memory, close 1008.

`WebSocketMaxQueue 65536` on /smallq.  Many clients (event: 50; worker, prefork: 20)
ask the probe plugin for an endless flood (`flood:100000000:1024`, sent by a plugin
thread through a handle) and then do not read.  Each connection's outbound queue
fills, the plugin's send fails with WS_EFULL, and the server ends the session with
1008 (WS00040 ... close=1008 closed_by=server) without waiting for the client.  The
children's RSS meanwhile grows by a bounded amount per stalled session (the queue,
buffers, the flood thread: at most 512 KiB each, though each was sent an endless
flood; what the kernel buffers is not in RSS).  Half of the stalled clients
then read what they were sent: complete messages in sequence, then the close frame
1008; the other half never read at all and just go away.  Meanwhile a canary echoes
and another probe client reads a normal flood (20,000 x 128 B) completely and in
order.  Afterwards RSS is back, no session is left open, nothing crashed.
"""

import threading
import time

import pytest

from conftest import mpm_params
from rawws import OP_BINARY, OP_CLOSE, OP_TEXT, RawWS
from support import (Canary, PeakMemory, assert_memory_back, count_session_ends,
                     kernel_buffer_max, limit_rcvbuf, report, rss_kb, scaled,
                     settled_rss_kb, tls_in_every_child, wait_sessions, within_margin)

MAX_QUEUE = 65536
SIZE = 1024
STALLED = {"event": 50, "worker": 20, "prefork": 20}
NORMAL_FLOOD = 20000
LOCATIONS = [
    ("/echo", "echo"),
    ("/probe", "probe"),
    {"path": "/smallq", "plugin": "probe", "max_queue": MAX_QUEUE},
]
END_1008 = {"plugin": "probe", "close": 1008, "closed_by": "server"}
# What one stalled session may cost at its peak: its queue, what httpd and mod_ssl hold
# for a socket that does not drain, the plugin's flood thread, pools.  The point is that
# it is a constant: each client was sent an endless flood (100 GB).
PER_SESSION_KB = 512
WARMUP_ROUNDS = 2
PREFORK_CHILDREN = 30
MPM_SETTINGS = {
    "event": {},
    "worker": {},
    # a fixed set of processes (none spawned or reaped mid-test), so that the sum of
    # their RSS compares before and after
    "prefork": {"StartServers": PREFORK_CHILDREN, "MinSpareServers": 1,
                "MaxSpareServers": PREFORK_CHILDREN, "ServerLimit": PREFORK_CHILDREN,
                "MaxRequestWorkers": PREFORK_CHILDREN},
}


def open_stalled(srv, n):
    conns = []
    for i in range(n):
        c = RawWS.open(srv, "wss" if i % 4 == 0 else "ws", "/smallq", timeout=30)
        c.rcvbuf = limit_rcvbuf(c.sock)
        assert c.recv_message()[0] == OP_TEXT       # the probe's hello
        c.send_text("flood:100000000:%d" % SIZE)
        conns.append(c)
    return conns


def read_until_close(c):
    """Read a stalled client's backlog: messages in sequence, then close 1008.
    Returns the number of messages."""
    seq = 0
    while True:
        f = c.recv_frame(timeout=30)
        if f.opcode == OP_CLOSE:
            assert f.close_code() == 1008, f
            return seq
        assert f.opcode == OP_BINARY and f.fin and len(f.payload) == SIZE, f
        assert int.from_bytes(f.payload[:8], "big") == seq, (seq, f)
        assert f.payload[8:] == bytes([seq & 0xFF]) * (SIZE - 8)
        seq += 1


class NormalReader(threading.Thread):
    def __init__(self, srv):
        super().__init__(daemon=True)
        self.srv, self.got, self.error = srv, 0, None

    def run(self):
        try:
            with RawWS.open(self.srv, "ws", "/probe", timeout=60) as c:
                c.recv_message()
                c.send_text(f"flood:{NORMAL_FLOOD}:128")
                for seq in range(NORMAL_FLOOD):
                    op, data = c.recv_message()
                    assert op == OP_BINARY and int.from_bytes(data[:8], "big") == seq
                    self.got += 1
                assert c.recv_message() == (OP_TEXT, b"flood-done:%d" % NORMAL_FLOOD)
                c.send_close(1000)
                assert c.expect_close()[0] == 1000
        except Exception as e:
            self.error = e


@pytest.mark.parametrize("mpm", mpm_params())
def test_never_reading_clients(httpd_factory, mpm):
    srv = httpd_factory(mpm=mpm, tls=True, locations=LOCATIONS,
                        mpm_settings=MPM_SETTINGS[mpm])
    n = STALLED[mpm]

    # warm-up: TLS in every prefork child (which child serves a stalled wss session is
    # chance), then the same number of stalled sessions to their end (RSS grows over
    # the first rounds while malloc arenas and pools reach their working size, then is
    # flat)
    tls_in_every_child(srv, PREFORK_CHILDREN)
    for _ in range(WARMUP_ROUNDS):
        srv.mark_log()
        conns = open_stalled(srv, n)
        deadline = time.monotonic() + scaled(30)
        while count_session_ends(srv.log_since_mark(), **END_1008) < n:
            assert time.monotonic() < deadline, "warm-up: no 1008 in time"
            time.sleep(0.1)  # polling the error log, with a deadline
        for c in conns[: n // 2]:
            read_until_close(c)
        for c in conns:
            c.close()
        wait_sessions(srv, 0)
    before = settled_rss_kb(srv)

    canary = Canary(srv, "ws")
    canary.start()
    normal = NormalReader(srv)
    normal.start()
    srv.mark_log()
    t0 = time.monotonic()
    mem = PeakMemory(srv)
    conns = open_stalled(srv, n)
    peak = before
    deadline = time.monotonic() + scaled(30)
    while count_session_ends(srv.log_since_mark(), **END_1008) < n:
        assert time.monotonic() < deadline, (
            f"only {count_session_ends(srv.log_since_mark(), **END_1008)} of {n} stalled "
            f"sessions ended with 1008 in 30 s:\n{srv.log_since_mark()[-3000:]}")
        peak = max(peak, rss_kb(srv))
        time.sleep(0.1)  # polling the error log (and sampling RSS), with a deadline
    t_1008 = time.monotonic() - t0
    for _ in range(10):
        peak = max(peak, rss_kb(srv))
        time.sleep(0.1)  # a second of RSS samples after the overflow

    peak = max(peak, mem.peak_kb())
    delivered = [read_until_close(c) for c in conns[: n // 2]]
    bound = (MAX_QUEUE + kernel_buffer_max(conns[0].rcvbuf)) // SIZE + 1
    for c in conns:
        c.close()
    normal.join(60)
    assert not normal.is_alive(), "the normal reader is stuck"
    echoes, slowest = canary.finish()
    wait_sessions(srv, 0)
    after = settled_rss_kb(srv)

    per_session = (peak - before) // n
    report(f"630 slow-reader {mpm}", stalled=n, max_queue=MAX_QUEUE,
           all_1008_within_s=f"{t_1008:.2f}",
           messages_before_1008=f"min {min(delivered)} max {max(delivered)}", bound=bound,
           normal_flood_received=normal.got, canary_echoes=echoes,
           canary_slowest_s=f"{slowest:.3f}", rss_before_kb=before, rss_peak_kb=peak,
           rss_peak_per_stalled_session_kb=per_session, rss_after_kb=after,
           rss_delta_kb=after - before)
    assert normal.error is None, f"normal reader: {normal.error!r}"
    assert normal.got == NORMAL_FLOOD
    # each backlog is what fit in the queue (plus what the kernel had taken): with the
    # default 16 MiB queue it would be 16,384 messages more
    assert all(0 < d <= bound for d in delivered), (bound, delivered)
    assert within_margin(before + n * PER_SESSION_KB, peak), (
        f"RSS peaked at {peak} KiB from {before} KiB: {per_session} KiB per stalled "
        f"session")
    assert srv.alive()
    srv.assert_no_crash()
    assert_memory_back(f"630 {mpm}", before, after)
