"""Shared helpers of the integration tests (not a test module).

Time
    TIME_FACTOR              WS_TEST_TIME_FACTOR (default 1): every timing bound and
                             deadline of the suite is multiplied by it (a slow or
                             sanitized machine sets e.g. 3)
    scaled(seconds)          seconds * TIME_FACTOR
Server fixture
    mpm_server(locations, tls=True, mpms=None, **kw)
                             a module-scoped `server` fixture, parametrized over the
                             MPMs of WS_TEST_MPMS (or `mpms`), started by httpd_factory:
                                 server = mpm_server(LOCATIONS)
Server status (mod_status ?auto, mod_websocket's own lines)
    status(srv)              the /server-status?auto fields as a dict of strings
    open_sessions(srv)       open WebSocket sessions (async + blocking)
    wait_sessions(srv, n)    until /server-status shows n open sessions (deadline)
    wait_status(srv, check, what)   until check(status dict) is true (deadline)
Session-end lines (WS00040)
    session_ends(text)       every "session end" line of a log text, parsed into dicts
                             (client_port, plugin, driver, in_msgs, out_msgs, close,
                             closed_by)
    count_session_ends(text, **want)   how many of them match all of `want`
    session_end_lines(text, ports) / wait_session_ends(srv, ports)
                             {client port: the rest of its line}, for given ports
Processes and memory (from /proc)
    children(srv)            pids of the server's running children
    rss_kb(srv)              sum of VmRSS of those children (KiB); proc_status_kb(pid,
                             field) one field of /proc/PID/status (KiB)
    settled_rss_kb(srv)      rss_kb once it stops moving (freed memory is returned lazily)
    PeakMemory(srv)          reset the children's VmHWM (clear_refs 5), later .peak_kb():
                             the sum of their VmHWM, the real peak of the section
    kernel_buffer_max(rcvbuf)  bytes two TCP socket buffers may hold (tcp_wmem max +
                             the client's receive buffer); limit_rcvbuf(sock) fixes that
    still_running(pids)      those of the pids that still run (zombies excluded)
    wait_gone(pids, timeout) assert all of them exit within the (scaled) timeout
A raw asyncio client
    AsyncRaw.open(srv, transport, path)   handshake on an asyncio stream (101 and the
                             accept key asserted); .send(op, payload), .recv_frame()
                             -> (b0, payload), .echo(text), .close()
Abuse tests
    Canary(srv, transport)   a thread that keeps an echo session busy during an abuse
    report(name, **figures)  print the figures a test measured
    within_margin / assert_memory_back   RSS comparisons with a margin of
                             max(MARGIN_KB, MARGIN_FRACTION)

Memory is compared as the sum of the children's RSS before and after an abuse, each
time after a warm-up that lets glibc create its per-thread arenas and httpd its pools
(those are kept, not leaked).
"""

import asyncio
import os
import re
import socket
import struct
import threading
import time

import pytest

from rawws import OP_TEXT, RawWS, accept_for, build_frame, http_request, new_key

TIME_FACTOR = float(os.environ.get("WS_TEST_TIME_FACTOR", "") or 1.0)


def scaled(seconds):
    """A timing bound or deadline of the suite, scaled by WS_TEST_TIME_FACTOR."""
    return seconds * TIME_FACTOR


def mpm_params():
    from conftest import mpm_params as params
    return params()


def mpm_server(locations, tls=True, mpms=None, **kw):
    """A module-scoped `server` fixture over the MPMs (WS_TEST_MPMS, or `mpms`):
    `server = mpm_server(LOCATIONS, loglevel=...)` in a test module."""
    @pytest.fixture(scope="module", params=list(mpms) if mpms else mpm_params())
    def server(request, httpd_factory):
        return httpd_factory(mpm=request.param, tls=tls, locations=locations, **kw)
    return server

MARGIN_KB = 8 * 1024
MARGIN_FRACTION = 0.10

# Under `make check-asan` httpd's children run with the ASan runtime, whose quarantine
# and shadow memory make RSS meaningless for these comparisons: the figures are still
# printed, but memory assertions pass (the sanitizers check memory there).
SANITIZED = "libasan" in os.environ.get("WS_HTTPD_ENV", "")


def _stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
    except OSError:
        return None
    fields = st[st.rindex(")") + 2:].split()
    return fields[0], int(fields[1])


def children(srv):
    """Running (non-zombie) children of the server's parent process."""
    kids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(name)
            if st and st[1] == srv.proc.pid and st[0] != "Z":
                kids.append(int(name))
    return sorted(kids)


def still_running(pids):
    """Those of the pids that still run (a zombie has exited)."""
    return {pid for pid in pids if (st := _stat(pid)) and st[0] != "Z"}


def wait_gone(pids, timeout, what="old children", reaped=False):
    """Assert every one of the pids has exited (reaped=True: and been reaped by its
    parent, no zombie left) within scaled(timeout) seconds."""
    def left_now():
        return {p for p in pids if _stat(p)} if reaped else still_running(pids)
    deadline = time.monotonic() + scaled(timeout)
    while (left := left_now()) and time.monotonic() < deadline:
        time.sleep(0.02)  # polling /proc for the processes' exit, with a deadline
    assert not left, (f"{what} {sorted(left)} still "
                      f"{'in /proc' if reaped else 'running'} {scaled(timeout)} s later")


def proc_status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _rss_of(pid, field="VmRSS"):
    return proc_status_kb(pid, field)


def kernel_buffer_max(rcvbuf=None):
    """The most a TCP connection's two kernel buffers can hold (bytes): the sender's
    tcp_wmem maximum and the receiver's SO_RCVBUF (or its tcp_rmem maximum): what may
    be in flight beyond a server's queue."""
    def top(name):
        with open(f"/proc/sys/net/ipv4/{name}") as f:
            return int(f.read().split()[2])
    return top("tcp_wmem") + (rcvbuf if rcvbuf is not None else top("tcp_rmem"))


def limit_rcvbuf(sock, size=65536):
    """Fix a client socket's receive buffer (no autotuning); returns what the kernel
    set (it doubles the value for its bookkeeping)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


class PeakMemory:
    """The peak of the children's memory over a section: their VmHWM is reset
    (/proc/PID/clear_refs 5, which needs root) and summed at the end.  An upper bound
    of the real peak, never missed between samples."""

    def __init__(self, srv, pids=None):
        self.pids = list(children(srv) if pids is None else pids)
        assert self.pids, "no httpd children"
        for pid in self.pids:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")

    def peak_kb(self):
        # the kernel folds per-thread RSS counters into VmHWM lazily: it may lag the
        # current VmRSS by a few pages, so the peak is at least the present RSS
        return sum(max(proc_status_kb(pid, "VmHWM"), proc_status_kb(pid, "VmRSS"))
                   for pid in self.pids)


def rss_kb(srv, pids=None, field="VmRSS"):
    """Sum of VmRSS of the server's children, or of the given pids (those still alive:
    where an MPM adds children under load, compare the same processes).  With
    field="RssAnon", their private memory only: not the pages of shared libraries,
    of which a process's first TLS connection faults in about 3 MiB (libcrypto,
    libssl); where chance decides which processes serve TLS, only this compares."""
    return sum(_rss_of(pid, field) for pid in (children(srv) if pids is None else pids))


def settled_rss_kb(srv, timeout=5.0, interval=0.25, pids=None, field="VmRSS"):
    """RSS once two samples `interval` apart agree within 64 KiB (or at the deadline):
    sessions that just ended may still be freeing their pools."""
    deadline = time.monotonic() + timeout
    last = rss_kb(srv, pids, field)
    while time.monotonic() < deadline:
        time.sleep(interval)  # sampling memory until it is stable, with a deadline
        now = rss_kb(srv, pids, field)
        if abs(now - last) <= 64:
            return now
        last = now
    return last


def tls_in_every_child(srv, n):
    """Hold n wss sessions on /echo at once, echo on each, close them.  Under prefork
    with n children each child serves one, so every child has run TLS before RSS is
    measured: a process's first TLS connection faults in about 3 MiB of libcrypto and
    libssl code, which counts in its RSS but is neither a leak nor the server's to
    give back."""
    conns = [RawWS.open(srv, "wss", "/echo", timeout=30) for _ in range(n)]
    for k, c in enumerate(conns):
        echo_and_close(c, f"warm {k}")


def echo_and_close(c, text):
    """One echo on an open RawWS session, then a clean close (1000 both ways)."""
    c.send_text(text)
    assert c.recv_message() == (OP_TEXT, text.encode())
    c.send_close(1000)
    assert c.expect_close()[0] == 1000
    c.close()


def within_margin(before_kb, after_kb):
    return SANITIZED or after_kb <= before_kb + max(MARGIN_KB, before_kb * MARGIN_FRACTION)


def assert_memory_back(name, before_kb, after_kb):
    if SANITIZED:
        return
    limit = before_kb + max(MARGIN_KB, int(before_kb * MARGIN_FRACTION))
    assert after_kb <= limit, (
        f"{name}: server RSS {after_kb} KiB after the abuse, {before_kb} KiB before "
        f"(+{after_kb - before_kb} KiB; the margin allows up to {limit} KiB)")


def status(srv, timeout=15.0):
    """The fields of /server-status?auto (strings)."""
    resp = http_request(srv, "ws", b"GET /server-status?auto HTTP/1.1\r\n"
                        b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n", timeout=timeout)
    assert resp.status == 200, resp
    return dict(line.split(": ", 1) for line in resp.body.decode().splitlines()
                if ": " in line)


def wait_status(srv, check, what, timeout=5.0):
    """Poll /server-status?auto until check(fields) is true; return the fields."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        st = status(srv)
        if check(st):
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"server-status never showed {what}: " + ", ".join(
                f"{k}={st.get(k)}" for k in ("BusyWorkers", "IdleWorkers",
                                             "WebSocketSessionsAsync",
                                             "WebSocketSessionsBlocking")))
        time.sleep(0.05)  # polling server-status for a state, with a deadline


SESSION_END = re.compile(
    r"\[client 127\.0\.0\.1:(?P<client_port>\d+)\] WS00040: session end: "
    r"plugin=(?P<plugin>\S+) driver=(?P<driver>\S+) duration=(?P<duration>[\d.]+)s "
    r"in=(?P<in_msgs>\d+)msg/(?P<in_bytes>\d+)B out=(?P<out_msgs>\d+)msg/"
    r"(?P<out_bytes>\d+)B close=(?P<close>\d+) closed_by=(?P<closed_by>\S+)")
_INT_FIELDS = ("client_port", "in_msgs", "in_bytes", "out_msgs", "out_bytes", "close")


def session_ends(text):
    """Every WS00040 session-end line of a log text, as dicts (numbers as int)."""
    out = []
    for m in SESSION_END.finditer(text):
        d = m.groupdict()
        for k in _INT_FIELDS:
            d[k] = int(d[k])
        out.append(d)
    return out


def session_end_lines(text, ports):
    """{client port: the rest of its WS00040 line} for the given client ports."""
    out = {}
    for line in text.splitlines():
        m = re.search(r"\[client 127\.0\.0\.1:(\d+)\] WS00040: session end: (.*)", line)
        if m and int(m.group(1)) in ports:
            out[int(m.group(1))] = m.group(2)
    return out


def wait_session_ends(srv, ports, timeout=10.0):
    """Poll the error log since the mark until every port has its session-end line."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        found = session_end_lines(srv.log_since_mark(), ports)
        if len(found) == len(ports):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"session-end lines for {sorted(set(ports) - set(found))} "
                                 f"missing:\n{srv.log_since_mark()[-3000:]}")
        time.sleep(0.05)  # polling the error log, with a deadline


def count_session_ends(text, **want):
    """How many session-end lines match every field of `want` (e.g. close=1008)."""
    return sum(all(e[k] == v for k, v in want.items()) for e in session_ends(text))


def open_sessions(srv):
    st = status(srv)
    return int(st["WebSocketSessionsAsync"]) + int(st["WebSocketSessionsBlocking"])


def wait_sessions(srv, n, timeout=15.0):
    """Until /server-status shows exactly n open sessions; returns the time it took."""
    t0 = time.monotonic()
    timeout = scaled(timeout)
    while (got := open_sessions(srv)) != n:
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"server-status shows {got} open sessions after "
                                 f"{timeout}s, expected {n}")
        time.sleep(0.1)  # polling server-status, with a deadline
    return time.monotonic() - t0


def report(name, **figures):
    text = ", ".join(f"{k}={v}" for k, v in figures.items())
    print(f"\n[{name}] {text}")


class Canary(threading.Thread):
    """An echo session that must not notice the abuse: every `period` seconds it sends
    a numbered text message and checks the echo (with a per-message deadline)."""

    def __init__(self, srv, transport="ws", path="/echo", period=0.05, timeout=10.0):
        super().__init__(daemon=True)
        self.srv, self.transport, self.path = srv, transport, path
        self.period, self.timeout = period, scaled(timeout)
        self.count = 0
        self.slowest = 0.0
        self.error = None
        self._stop_ev = threading.Event()
        self.ws = RawWS.open(srv, transport, path, timeout=timeout)

    def run(self):
        try:
            while not self._stop_ev.is_set():
                msg = f"canary {self.count}".encode()
                t0 = time.monotonic()
                self.ws.send_text(msg)
                got = self.ws.recv_message(timeout=self.timeout)
                assert got == (OP_TEXT, msg), f"canary got {got!r:.80}, sent {msg!r}"
                self.slowest = max(self.slowest, time.monotonic() - t0)
                self.count += 1
                self._stop_ev.wait(self.period)
        except Exception as e:      # reported by finish()
            self.error = e

    def finish(self):
        """Stop, close the session normally, and assert nothing went wrong."""
        self._stop_ev.set()
        self.join(self.timeout + 5)
        assert not self.is_alive(), "canary stuck"
        assert self.error is None, f"canary failed after {self.count} echoes: {self.error!r}"
        self.ws.send_close(1000)
        code, _ = self.ws.expect_close()
        assert code == 1000
        self.ws.close()
        return self.count, self.slowest




class AsyncRaw:
    """A WebSocket client on an asyncio stream, for many concurrent raw sessions."""

    def __init__(self, reader, writer, response):
        self.reader, self.writer, self.response = reader, writer, response

    @classmethod
    async def open(cls, srv, transport="ws", path="/echo", headers=None, timeout=20.0):
        """Connect and handshake; assert the 101 and its accept key.  Cancelled (by a
        timeout) it closes its socket: no half-open client is left behind."""
        ssl_ctx = srv.ssl_for(transport)
        reader, writer = await asyncio.open_connection(
            srv.host, srv.port_for(transport), ssl=ssl_ctx,
            server_hostname=srv.host if ssl_ctx else None)
        try:
            key = new_key()
            extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
            writer.write((f"GET {path} HTTP/1.1\r\nHost: {srv.host}:"
                          f"{srv.port_for(transport)}\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                          f"Sec-WebSocket-Version: 13\r\n{extra}\r\n").encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), scaled(timeout))
            assert head.startswith(b"HTTP/1.1 101 "), head
            assert accept_for(key).encode() in head, head
            return cls(reader, writer, head)
        except BaseException:
            writer.close()
            raise

    def send(self, opcode, payload=b"", **kw):
        self.writer.write(build_frame(opcode, payload, **kw))

    async def recv_frame(self):
        """(first byte, payload) of the next frame (server frames are not masked)."""
        b0, b1 = await self.reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return b0, await self.reader.readexactly(n)

    async def echo(self, payload, timeout=10.0):
        """Send a text message, assert its echo arrives (one final text frame)."""
        if isinstance(payload, str):
            payload = payload.encode()
        self.send(OP_TEXT, payload)
        b0, got = await asyncio.wait_for(self.recv_frame(), scaled(timeout))
        assert (b0, got) == (0x80 | OP_TEXT, payload), (b0, got[:80])

    def close(self):
        self.writer.close()
