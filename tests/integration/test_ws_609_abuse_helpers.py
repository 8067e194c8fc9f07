"""Helpers of the abuse and fault tests (test_ws_61x..67x), and their self-test.

    children(srv)            pids of the server's running children
    rss_kb(srv)              sum of VmRSS of those children (KiB), from /proc
    settled_rss_kb(srv)      rss_kb once it stops moving (freed memory is returned lazily)
    open_sessions(srv)       open WebSocket sessions from /server-status?auto
    wait_sessions(srv, n)    until /server-status shows n open sessions (deadline)
    Canary(srv, transport)   a thread that keeps an echo session busy (one message every
                             `period` s, each echo checked) during an abuse, and reports
                             how many round trips it made and the slowest one
    report(name, **figures)  print the figures a test measured (shown with -s, and in
                             pytest's captured output of a failure)

Memory is compared as the sum of the children's RSS before and after an abuse, each
time after a warm-up that lets glibc create its per-thread arenas and httpd its pools
(those are kept, not leaked), with a margin of max(MARGIN_KB, MARGIN_FRACTION).
"""

import os
import threading
import time

from rawws import OP_TEXT, RawWS, http_request

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


def _rss_of(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kb(srv, pids=None):
    """Sum of VmRSS of the server's children, or of the given pids (those still alive:
    where an MPM adds children under load, compare the same processes)."""
    return sum(_rss_of(pid) for pid in (children(srv) if pids is None else pids))


def settled_rss_kb(srv, timeout=5.0, interval=0.25, pids=None):
    """RSS once two samples `interval` apart agree within 64 KiB (or at the deadline):
    sessions that just ended may still be freeing their pools."""
    deadline = time.monotonic() + timeout
    last = rss_kb(srv, pids)
    while time.monotonic() < deadline:
        time.sleep(interval)  # sampling memory until it is stable, with a deadline
        now = rss_kb(srv, pids)
        if abs(now - last) <= 64:
            return now
        last = now
    return last


def within_margin(before_kb, after_kb):
    return SANITIZED or after_kb <= before_kb + max(MARGIN_KB, before_kb * MARGIN_FRACTION)


def assert_memory_back(name, before_kb, after_kb):
    if SANITIZED:
        return
    limit = before_kb + max(MARGIN_KB, int(before_kb * MARGIN_FRACTION))
    assert after_kb <= limit, (
        f"{name}: server RSS {after_kb} KiB after the abuse, {before_kb} KiB before "
        f"(+{after_kb - before_kb} KiB; the margin allows up to {limit} KiB)")


def status(srv):
    resp = http_request(srv, "ws", b"GET /server-status?auto HTTP/1.1\r\n"
                        b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n", timeout=15)
    assert resp.status == 200, resp
    return dict(line.split(": ", 1) for line in resp.body.decode().splitlines()
                if ": " in line)


def open_sessions(srv):
    st = status(srv)
    return int(st["WebSocketSessionsAsync"]) + int(st["WebSocketSessionsBlocking"])


def wait_sessions(srv, n, timeout=15.0):
    """Until /server-status shows exactly n open sessions; returns the time it took."""
    t0 = time.monotonic()
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
        self.period, self.timeout = period, timeout
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


# ---- self-test ----------------------------------------------------------------------

def test_helpers_measure_the_server(httpd_factory):
    srv = httpd_factory(mpm="event", tls=False, locations=[("/echo", "echo")])
    kids = children(srv)
    assert len(kids) == 2, kids            # genconf's event settings: 2 children
    rss = rss_kb(srv)
    assert 1000 < rss < 10_000_000, rss
    canary = Canary(srv)
    canary.start()
    wait_sessions(srv, 1)
    time.sleep(0.5)   # the canary runs for a moment (its round trips are the test)
    count, slowest = canary.finish()
    wait_sessions(srv, 0)
    assert count >= 3
    report("helpers", children=len(kids), rss_kb=rss, canary_echoes=count,
           canary_slowest_s=f"{slowest:.3f}")
