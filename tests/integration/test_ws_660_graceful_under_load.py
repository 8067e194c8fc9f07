"""Graceful restart in the middle of an echo load.

Sessions (event: 100; worker, prefork: 40; a quarter over TLS) each keep WINDOW
numbered text messages in flight to /echo and check every echo.  One second into the
load, `apache2 -k graceful`.  Then:
  - every echo a client received is intact and in order (a message the server
    acknowledged by echoing it was not damaged or reordered by the restart);
  - every session ends with a close frame 1001 from the server (none with a bare TCP
    close or another code), after which the client answers and the server closes TCP;
  - no child crashed, httpd is up, and new sessions are served by the new generation.
The figures: messages echoed before the restart took each session, messages in flight
(sent, never echoed: the close frame came first, which RFC 6455 allows), timing.
"""

import asyncio
import re
import struct
import subprocess
import time

import pytest

from conftest import mpm_params
from httpd import HTTPD, crash_lines
from rawws import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, build_frame, close_payload
from support import AsyncRaw, children, report, scaled, wait_gone, wait_sessions
from wsutil import run

SESSIONS = {"event": 100, "worker": 40, "prefork": 40}
WINDOW = 8
LOAD_BEFORE_RESTART = 1.0
MPM_SETTINGS = {
    "event": {"StartServers": 2, "ServerLimit": 4, "ThreadsPerChild": 25,
              "MaxRequestWorkers": 50},
    "worker": {"StartServers": 2, "ServerLimit": 6, "ThreadsPerChild": 25,
               "MaxRequestWorkers": 75, "MinSpareThreads": 25, "MaxSpareThreads": 75},
    "prefork": {"StartServers": 50, "MinSpareServers": 5, "MaxSpareServers": 60,
                "ServerLimit": 120, "MaxRequestWorkers": 60},
}


class Session:
    def __init__(self, raw, idx):
        self.raw, self.idx = raw, idx
        self.reader, self.writer = raw.reader, raw.writer
        self.sent = 0
        self.echoed = 0
        self.close_code = None
        self.close_reason = ""
        self.error = None

    @classmethod
    async def open(cls, srv, transport, idx):
        raw = await AsyncRaw.open(srv, transport, "/echo")
        return cls(raw, idx)

    def message(self, seq):
        return f"session {self.idx} message {seq} ".encode() + b"x" * (seq % 200)

    async def recv_frame(self):
        return await self.raw.recv_frame()

    async def load(self, stop_sending):
        """Keep WINDOW messages in flight until the server's close frame."""
        try:
            while self.sent < WINDOW:
                self.writer.write(build_frame(OP_TEXT, self.message(self.sent)))
                self.sent += 1
            while True:
                b0, payload = await asyncio.wait_for(self.recv_frame(), 30)
                op = b0 & 0x0F
                if op == OP_PING:
                    self.writer.write(build_frame(OP_PONG, payload))
                    continue
                if op == OP_CLOSE:
                    if len(payload) >= 2:
                        self.close_code = struct.unpack("!H", payload[:2])[0]
                        self.close_reason = payload[2:].decode()
                    self.writer.write(build_frame(OP_CLOSE, close_payload(self.close_code)))
                    break
                assert b0 == 0x80 | OP_TEXT, f"frame {b0:#x}"
                want = self.message(self.echoed)
                assert payload == want, (f"session {self.idx}: echo {self.echoed} is "
                                         f"{payload[:60]!r}, sent {want[:60]!r}")
                self.echoed += 1
                if not stop_sending.is_set():
                    self.writer.write(build_frame(OP_TEXT, self.message(self.sent)))
                    self.sent += 1
            # the server closes TCP after our close reply
            while await asyncio.wait_for(self.reader.read(65536), 10):
                pass
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            self.error = f"connection ended without a close frame: {e!r}"
        except Exception as e:
            self.error = repr(e)
        finally:
            self.writer.close()


@pytest.mark.parametrize("mpm", mpm_params())
def test_graceful_restart_under_echo_load(httpd_factory, mpm):
    srv = httpd_factory(mpm=mpm, tls=True, locations=[("/echo", "echo")],
                        loglevel="notice websocket:info", mpm_settings=MPM_SETTINGS[mpm])
    n = SESSIONS[mpm]
    old = set(children(srv))

    async def go():
        sem = asyncio.Semaphore(50)

        async def opener(i):
            async with sem:
                return await Session.open(srv, "wss" if i % 4 == 0 else "ws", i)

        sessions = await asyncio.gather(*(opener(i) for i in range(n)))
        srv.mark_log()
        stop_sending = asyncio.Event()
        loads = [asyncio.ensure_future(s.load(stop_sending)) for s in sessions]
        await asyncio.sleep(LOAD_BEFORE_RESTART)    # the load runs before the restart
        # the precondition: the restart comes during the load, not before it
        echoed_before = [s.echoed for s in sessions]
        assert min(echoed_before) >= WINDOW, (
            f"before the restart only {min(echoed_before)} echoes on a session (of "
            f"{sum(echoed_before)}): the load had not started")
        assert not any(f.done() for f in loads), "a session ended before the restart"
        t_sig = time.monotonic()
        p = await asyncio.to_thread(
            subprocess.run, [HTTPD, "-f", srv.conf, "-k", "graceful"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            timeout=30)
        assert p.returncode == 0, p.stdout
        done, pending = await asyncio.wait(loads, timeout=scaled(30))
        t_end = time.monotonic() - t_sig
        stop_sending.set()
        for f in pending:
            f.cancel()
        assert not pending, f"{len(pending)} sessions still running 30 s after the restart"
        return sessions, echoed_before, t_end

    sessions, echoed_before, t_end = run(go(), timeout=scaled(120))
    errors = [(s.idx, s.error) for s in sessions if s.error]
    codes = {}
    for s in sessions:
        codes[s.close_code] = codes.get(s.close_code, 0) + 1
    echoed = sum(s.echoed for s in sessions)
    in_flight = sum(s.sent - s.echoed for s in sessions)
    srv.wait_for_log(r"resuming normal operations", timeout=15)
    report(f"660 graceful {mpm}", sessions=n, echoed_before_signal=sum(echoed_before),
           min_echoed_before_signal_per_session=min(echoed_before),
           echoed_total=echoed, unacknowledged_in_flight=in_flight, close_codes=codes,
           all_closed_within_s=f"{t_end:.2f}", errors=len(errors))
    assert not errors, errors[:10]
    assert codes == {1001: n}, codes
    assert all(s.close_reason == "server shutting down" for s in sessions)
    assert srv.alive()
    bad = crash_lines(srv.log_since_mark())
    assert not bad, "\n".join(bad[:10])
    ends = len(re.findall(r"WS00040: session end: plugin=echo .* close=1001 "
                          r"closed_by=server", srv.log_since_mark()))
    assert ends == n, f"{ends} session-end lines with 1001 for {n} sessions"

    # the new generation serves
    async def after():
        s = await Session.open(srv, "ws", 9999)
        s.writer.write(build_frame(OP_TEXT, s.message(0)))
        b0, payload = await asyncio.wait_for(s.recv_frame(), 10)
        assert payload == s.message(0)
        s.writer.close()

    run(after(), timeout=30)
    wait_sessions(srv, 0)
    wait_gone(old, 15, "old children")
