"""Soak: 1,000,000 echoed messages on 4 long-lived connections; memory stays flat.

Each connection (a quarter of them over TLS where the MPM is cheap to drive) sends
250,000 numbered binary messages of 16-80 bytes, keeping up to WINDOW of them in
flight; its thread checks the echoed byte stream exactly (every frame header and
payload, in order).  The sum of the children's RSS is sampled after the first 10,000
messages echoed and every 100,000 after; at the end it must be within a small margin
of the first sample: nothing grows with the number of messages on a connection.

Before that, 200,000 messages go over 4 other connections (then closed): on the
event MPM each burst of input may be served by any of the 50 worker threads, and RSS
grows while each thread's malloc arena reaches its working size (22 -> 31 MiB over
the first 600,000 messages here, flat after); that is per thread, not per message,
so it is done before the measurement starts.

Marked `slow` (about 15 s per MPM here, at ~100,000 messages/s); `make check` runs it.  Select it
alone with `-m slow`, or leave it out with `-m "not slow"`.
"""

import os
import selectors
import ssl
import struct
import threading
import time

import pytest

from conftest import mpm_params
from rawws import OP_BINARY, RawWS, mask_bytes
from support import SANITIZED, MARGIN_KB, report, rss_kb, wait_sessions

TOTAL = 1_000_000
WARMUP = 200_000                # first, on other connections (see below)
CONNECTIONS = 4
WINDOW = 2000                   # messages in flight per connection
BATCH = 500                     # messages per write
FIRST_SAMPLE = 10_000
SAMPLE_EVERY = 100_000
DEADLINE = 600

pytestmark = pytest.mark.slow


def make_batch(conn, start, n):
    """(bytes to send: masked client frames, bytes expected back: server frames)."""
    out, back = [], []
    key = os.urandom(4)
    for seq in range(start, start + n):
        size = 16 + (seq * 7 + conn) % 65
        payload = struct.pack("!IQ", conn, seq) + bytes([seq & 0xFF]) * (size - 12)
        head = bytes([0x80 | OP_BINARY, size])
        out.append(bytes([0x80 | OP_BINARY, 0x80 | size]) + key + mask_bytes(payload, key))
        back.append(head + payload)
    return b"".join(out), b"".join(back)


class Conn:
    """One connection driven by one thread: it writes batches while the window allows
    and reads whatever comes, through non-blocking I/O.  (One thread, not a sender
    and a receiver: an SSL object must not be used by two threads at once; doing so
    once made Python's ssl report a spurious EOF.)"""

    def __init__(self, srv, transport, idx, per_conn, progress):
        self.c = RawWS.open(srv, transport, "/echo", timeout=60)
        self.idx, self.per_conn, self.progress = idx, per_conn, progress
        self.error = None
        self.echoed = 0

    def run(self):
        try:
            self._pump()
        except Exception as e:
            self.error = RuntimeError(f"conn {self.idx}: {e!r}")

    def _pump(self):
        sock = self.c.sock
        sock.setblocking(False)
        sel = selectors.DefaultSelector()
        sel.register(sock, selectors.EVENT_READ)
        expected = []               # (bytes expected back, messages) per batch sent
        out = b""                   # unsent part of the current batch
        got = bytearray(self.c.buf)
        sent = done = 0
        last_input = time.monotonic()
        while done < self.per_conn:
            if not out and sent < self.per_conn and len(expected) < WINDOW // BATCH:
                n = min(BATCH, self.per_conn - sent)
                out, back = make_batch(self.idx, sent, n)
                expected.append((back, n))
                sent += n
            if out:
                try:
                    k = sock.send(out[:65536])
                    out = out[k:]
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                    pass
            readable = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
            if not readable:
                events = selectors.EVENT_READ | (selectors.EVENT_WRITE if out else 0)
                sel.modify(sock, events)
                readable = any(ev & selectors.EVENT_READ for _, ev in sel.select(1.0))
            if readable:
                try:
                    data = sock.recv(65536)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    data = None
                if data == b"":
                    raise AssertionError(f"EOF after {done} messages")
                if data:
                    got += data
                    last_input = time.monotonic()
            elif time.monotonic() - last_input > 60:
                raise TimeoutError(f"no echo for 60 s after {done} messages")
            while expected and len(got) >= len(expected[0][0]):
                back, n = expected.pop(0)
                if got[:len(back)] != back:
                    i = next(k for k in range(len(back)) if got[k] != back[k])
                    raise AssertionError(f"echo differs at byte {i} of the batch after "
                                         f"{done} messages")
                del got[:len(back)]
                done += n
                self.echoed = done
                self.progress(n)
        sel.close()
        sock.setblocking(True)
        self.c.buf = got


@pytest.mark.parametrize("mpm", mpm_params())
def test_million_echoes_memory_flat(httpd_factory, mpm):
    srv = httpd_factory(mpm=mpm, tls=True, locations=[("/echo", "echo")], loglevel="warn")
    samples = []
    total = [0]
    lock = threading.Lock()
    marks = iter([FIRST_SAMPLE] + list(range(SAMPLE_EVERY, TOTAL + 1, SAMPLE_EVERY)))
    next_mark = [next(marks)]

    def progress(n):
        with lock:
            total[0] += n
            while next_mark[0] is not None and total[0] >= next_mark[0]:
                samples.append((total[0], rss_kb(srv)))
                next_mark[0] = next(marks, None)

    def run_load(total, progress):
        per_conn = total // CONNECTIONS
        conns = [Conn(srv, "wss" if i == 0 else "ws", i, per_conn, progress)
                 for i in range(CONNECTIONS)]
        t0 = time.monotonic()
        threads = []
        for c in conns:
            threads.append(threading.Thread(target=c.run, daemon=True))
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(1, DEADLINE - (time.monotonic() - t0)))
        elapsed = time.monotonic() - t0
        errors = [c.error for c in conns if c.error]
        stuck = [t for t in threads if t.is_alive()]
        for c in conns:
            if not errors and not stuck:
                c.c.send_close(1000)
                assert c.c.expect_close()[0] == 1000
            c.c.close()
        assert not errors, errors
        assert not stuck, f"{len(stuck)} client threads still running after {DEADLINE}s"
        wait_sessions(srv, 0)
        return elapsed

    run_load(WARMUP, lambda n: None)
    rss_warm = rss_kb(srv)
    elapsed = run_load(TOTAL, progress)
    assert total[0] == TOTAL

    first = samples[0][1]
    end = samples[-1][1]
    report(f"670 soak {mpm}", messages=total[0], connections=CONNECTIONS,
           rss_after_warmup_kb=rss_warm,
           seconds=f"{elapsed:.1f}", msgs_per_s=int(total[0] / elapsed),
           rss_after_10k_kb=first, rss_end_kb=end, rss_delta_kb=end - first,
           rss_samples_kb=[kb for _, kb in samples])
    assert SANITIZED or end <= first + MARGIN_KB, (
        f"RSS grew from {first} KiB (after {samples[0][0]} messages) to {end} KiB "
        f"(after {samples[-1][0]}): {samples}")
    srv.assert_no_crash()
