"""Graceful restart and graceful stop with many open sessions, on every MPM, ws and wss.

`apache2 -f CONF -k graceful` (or `-k graceful-stop`) with N sessions open (event: 1,000,
async; worker and prefork: 200, one thread / process each), a quarter of them over TLS:
  - every session receives close 1001 "server shutting down" promptly,
  - the plugin's close callback ran for each (one WS00040 session-end line with
    close=1001 closed_by=server per session),
  - the old children are gone within 2 s (their pids, read from /proc, no longer run),
  - graceful: new sessions work, served by new children; graceful-stop: httpd exits.
"""

import asyncio
import struct
import subprocess
import time

import pytest

from conftest import mpm_params
from httpd import HTTPD, crash_lines
from rawws import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, build_frame, close_payload
from support import (AsyncRaw, children, count_session_ends, scaled, still_running,
                     wait_gone, wait_sessions)
from wsutil import connect, recv, recv_json, run

SESSIONS = {"event": 1000, "worker": 200, "prefork": 200}
TLS_SHARE = 4                       # every 4th session is wss
CLOSE_DEADLINE = 3.0                # all 1001 frames within this of the signal
CHILDREN_GONE = 2.0                 # old children exited within this of the signal

MPM_SETTINGS = {
    # 1,000 parked connections over 2 children: 25 + 25 * 50 per child; ServerLimit 4
    # leaves scoreboard room for the new generation while the old one finishes
    "event": {"StartServers": 2, "ServerLimit": 4, "ThreadsPerChild": 25,
              "MaxRequestWorkers": 50, "AsyncRequestWorkerFactor": 50},
    # a thread per session: 5 x 50 threads
    "worker": {"StartServers": 5, "ServerLimit": 10, "ThreadsPerChild": 50,
               "MaxRequestWorkers": 250, "MinSpareThreads": 50, "MaxSpareThreads": 250},
    # a process per session, all started up front
    "prefork": {"StartServers": 210, "MinSpareServers": 5, "MaxSpareServers": 250,
                "ServerLimit": 260, "MaxRequestWorkers": 250},
}
LOCATIONS = [("/echo", "echo"), ("/probe", "probe")]


def signal_server(server, how):
    """apache2 -f CONF -k graceful|graceful-stop (signals the pid in the PidFile)."""
    p = subprocess.run([HTTPD, "-f", server.conf, "-k", how], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    assert p.returncode == 0, f"apache2 -k {how}: {p.stdout.decode(errors='replace')}"


# ---- a light asyncio WebSocket client (1,000 of them) ---------------------------------

class Session:
    def __init__(self, reader, writer, transport):
        self.reader, self.writer, self.transport = reader, writer, transport
        self.port = writer.get_extra_info("sockname")[1]

    @classmethod
    async def open(cls, server, transport, path="/echo"):
        raw = await AsyncRaw.open(server, transport, path)
        return cls(raw.reader, raw.writer, transport)

    async def recv_frame(self):
        b0, b1 = await self.reader.readexactly(2)
        assert not b1 & 0x80, "masked server frame"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return b0 & 0x0F, await self.reader.readexactly(n)

    async def echo(self, text):
        self.writer.write(build_frame(OP_TEXT, text.encode()))
        await self.writer.drain()
        assert await self.recv_frame() == (OP_TEXT, text.encode())

    async def wait_close(self):
        """Wait for the server's close frame; answer it; wait for the TCP close.
        Returns (code or None, reason, arrival time, time of the TCP close)."""
        code, reason, t_frame = None, "", None
        try:
            while True:
                op, payload = await self.recv_frame()
                if op == OP_PING:
                    self.writer.write(build_frame(OP_PONG, payload))
                elif op == OP_CLOSE:
                    t_frame = time.monotonic()
                    if len(payload) >= 2:
                        code = struct.unpack("!H", payload[:2])[0]
                        reason = payload[2:].decode()
                    self.writer.write(build_frame(OP_CLOSE, close_payload(code)))
                    break
            while await self.reader.read(4096):
                pass
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        t_eof = time.monotonic()
        self.writer.close()
        return code, reason, t_frame, t_eof


async def open_sessions(server, n):
    sem = asyncio.Semaphore(100)        # below the listen backlog

    async def one(i):
        async with sem:
            s = await Session.open(server, "wss" if i % TLS_SHARE == 0 else "ws")
            await s.echo(f"hello {i}")
            return s

    return await asyncio.gather(*(one(i) for i in range(n)))


def count_1001_ends(server):
    return count_session_ends(server.log_since_mark(), plugin="echo", close=1001,
                              closed_by="server")


def wait_1001_ends(server, n, timeout=10.0):
    deadline = time.monotonic() + scaled(timeout)
    while (got := count_1001_ends(server)) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"{got} of {n} session-end lines with close=1001 "
                                 f"closed_by=server:\n{server.log_since_mark()[-3000:]}")
        time.sleep(0.05)  # polling the error log, with a deadline
    return got


# ---- the tests ------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["graceful", "graceful-stop"])
@pytest.mark.parametrize("mpm", mpm_params())
def test_graceful_closes_every_session(httpd_factory, mpm, how):
    n = SESSIONS[mpm]
    srv = httpd_factory(mpm=mpm, tls=True, locations=LOCATIONS,
                        loglevel="notice websocket:info", mpm_settings=MPM_SETTINGS[mpm])

    async def go():
        t0 = time.monotonic()
        sessions = await open_sessions(srv, n)
        t_open = time.monotonic() - t0
        await asyncio.to_thread(wait_sessions, srv, n)
        old = set(children(srv))
        assert old
        srv.mark_log()
        waiters = [asyncio.ensure_future(s.wait_close()) for s in sessions]
        await asyncio.sleep(0)          # let every waiter start reading
        t_sig = time.monotonic()
        await asyncio.to_thread(signal_server, srv, how)
        done, pending = await asyncio.wait(waiters, timeout=scaled(15))
        for f in pending:
            f.cancel()
        results = [f.result() for f in waiters if f in done]
        assert not pending, f"{len(pending)} of {n} sessions not closed within 15 s"
        bad = [(s.port, s.transport, r[:2]) for s, r in zip(sessions, results)
               if r[:2] != (1001, "server shutting down")]
        assert not bad, f"{len(bad)} of {n} sessions closed otherwise: {bad[:10]}"
        latest = max(r[2] for r in results) - t_sig
        latest_eof = max(r[3] for r in results) - t_sig
        assert latest <= scaled(CLOSE_DEADLINE), (
            f"the last 1001 came {latest:.2f}s after the signal (TCP closes by "
            f"{latest_eof:.2f}s)")

        # the old generation is gone
        deadline = t_sig + scaled(CHILDREN_GONE)
        while (left := still_running(old)) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)   # polling /proc, with a deadline
        assert not left, (f"{len(left)} of {len(old)} old children still running "
                          f"{time.monotonic() - t_sig:.2f}s after -k {how}")
        t_gone = time.monotonic() - t_sig
        print(f"\n{mpm} {how}: {n} sessions opened in {t_open:.2f}s; last 1001 at "
              f"{latest:.2f}s, last TCP close at {latest_eof:.2f}s, old children gone "
              f"by {t_gone:.2f}s")
        return old

    old = run(go(), timeout=90)
    assert wait_1001_ends(srv, n) == n

    if how == "graceful":
        srv.wait_for_log(r"resuming normal operations", timeout=15)

        async def after():
            for transport in ("ws", "wss"):
                async with connect(srv, transport, "/probe", ping_interval=None) as ws:
                    info = await recv_json(ws)
                    assert info["pid"] not in old, "served by an old child"
                    await ws.send("after restart")
                    assert await recv(ws) == "after restart"
                s = await Session.open(srv, transport)
                await s.echo("after restart")
                s.writer.close()

        run(after(), timeout=30)
        assert srv.alive()
        # the parent has reaped (and logged) every old child
        wait_gone(old, 5, "old children (unreaped)", reaped=True)
    else:
        try:
            srv.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            raise AssertionError("httpd still running 10 s after -k graceful-stop") from None
        assert not still_running(old)
    bad = crash_lines(srv.log_since_mark())
    assert not bad, f"children crashed during -k {how}:\n" + "\n".join(bad[:10])
