"""The Redis backplane: two httpd servers share channels through a real redis-server
(`WebSocketBackplane redis://127.0.0.1:PORT/testprefix`), survive losing it, and resume
when it is back.

The test starts its own redis-server (Debian's redis-server package) on a free loopback
port, without persistence, and awaits it by PING.  Each server runs the event MPM with 2
children; every child keeps its own publisher and subscriber connection to Redis and logs
their state (WS00051 established, WS00052 lost).
"""

import asyncio
import contextlib
import itertools
import os
import re
import socket
import subprocess
import time

import pytest

from httpd import free_port
from support import scaled
from test_ws_800_pubsub import channel, probes_in_two_children
from wsutil import run

# test_redis_lost_then_back stops Redis under the servers: each child's publisher and
# subscriber connection reports the loss at error level.
ALLOWED_ERRORS = [r"WS00052: redis backplane (publisher|subscriber) connection to "
                  r"\S+ lost"]

REDIS_SERVER = "/usr/bin/redis-server"
CHILDREN = 2                       # genconf's event MPM: StartServers 2 / ServerLimit 2
PREFIX = "testprefix"


class Redis:
    def __init__(self, directory, args=()):
        self.dir = directory
        self.port = None
        self.proc = None
        self.args = list(args)           # more redis-server options (--requirepass)

    def start(self, port=None):
        """Start redis-server (on `port`, or a free one); return once it answers PING."""
        if not os.access(REDIS_SERVER, os.X_OK):
            pytest.fail(f"{REDIS_SERVER} is missing: apt-get install redis-server")
        for _ in range(5):
            self.port = port or free_port()
            log = open(os.path.join(self.dir, f"redis-{self.port}.log"), "ab")
            self.proc = subprocess.Popen(
                [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", self.dir] + self.args,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
            log.close()
            if self._await_ping():
                return self
            self.kill()
            if port:                  # the same port again: it must come back on it
                break
        raise AssertionError(f"redis-server did not start (port {self.port}):\n"
                             + self.log_text()[-2000:])

    def _await_ping(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                        return True
            except OSError:
                time.sleep(0.02)      # not listening yet: try again shortly
        return False

    def log_text(self):
        with open(os.path.join(self.dir, f"redis-{self.port}.log"), errors="replace") as f:
            return f.read()

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    r = Redis(str(tmp_path_factory.mktemp("redis"))).start()
    yield r
    r.kill()


@pytest.fixture(scope="module")
def servers(redis, httpd_factory):
    conf = f"WebSocketBackplane redis://127.0.0.1:{redis.port}/{PREFIX}\n"
    srvs = [httpd_factory(mpm="event", tls=False, locations=[("/probe", "probe")],
                          extra_global=conf) for _ in range(2)]
    for srv in srvs:
        for what in ("subscriber", "publisher"):
            wait_for_count(srv, rf"WS00051: redis backplane {what} connection to "
                                rf"127\.0\.0\.1:{redis.port} \(re\)established", CHILDREN)
    return srvs


def wait_for_count(srv, pattern, n, timeout=20.0, since_mark=False):
    """Poll the error log (with a deadline) until `pattern` matches n times."""
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        text = srv.log_since_mark() if since_mark else srv.error_log_text()
        if len(rx.findall(text)) >= n:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{srv.cfg.error_log}: fewer than {n} lines match "
                                 f"{pattern!r} after {timeout}s:\n{text[-4000:]}")
        time.sleep(0.05)      # polling the log file for an event, with a deadline


async def open_both(stack, a, b):
    """Probe connections in both children of each server."""
    pa = await probes_in_two_children(stack, a, "ws")
    pb = await probes_in_two_children(stack, b, "ws")
    return [ps[0] for ps in pa.values()], [ps[0] for ps in pb.values()]


async def until_crosses(publisher, remote, within=30):
    """Publish from `publisher`, on a channel only `remote` (on the other server) listens
    to, until one message crosses (bounded): a child finds its publisher connection dead
    only when it next uses it, and subscriber connections come back with a backoff."""
    ch = channel(f"try-{publisher.pid}")
    await remote.sub(ch)
    deadline = time.monotonic() + scaled(within)
    for i in itertools.count():
        await publisher.pub(ch, f"try {i}")
        try:
            got = await asyncio.wait_for(remote.ws.recv(), 0.5)
            break
        except asyncio.TimeoutError:
            assert time.monotonic() < deadline, \
                f"pid {publisher.pid}: nothing crossed to the other server " \
                f"in {scaled(within)} s after Redis came back ({i + 1} tries)"
    assert got.startswith("try "), got
    await remote.unsub(ch)


def test_cross_server_delivery(servers):
    """Published on one server, received by every subscriber on both, both ways; and
    1,000 messages from one publisher arrive in order on the other server."""
    a, b = servers

    async def go():
        async with contextlib.AsyncExitStack() as stack:
            on_a, on_b = await open_both(stack, a, b)
            ch = channel("redis")
            for p in on_a + on_b:
                await p.sub(ch)
            for publisher in (on_b[0], on_a[1]):
                text = f"hello from {publisher.pid}"
                await publisher.pub(ch, text)
                await asyncio.gather(*(p.expect(text) for p in on_a + on_b))

            async def publish():
                for i in range(1000):
                    await on_a[0].pub(ch, f"n{i}")

            async def collect(p):
                for i in range(1000):
                    await p.expect(f"n{i}")

            await asyncio.gather(publish(), *(collect(p) for p in on_b + on_a))

    run(go(), timeout=60)


def test_redis_lost_then_back(servers, redis):
    """Redis dies: each server logs it and keeps delivering within itself.  Redis comes
    back on the same port: the servers log the reconnection and cross-server delivery
    resumes within a bounded time."""
    a, b = servers
    port = redis.port
    for srv in servers:
        srv.mark_log()
    redis.kill()
    for srv in servers:
        wait_for_count(srv, rf"WS00052: redis backplane subscriber connection to "
                            rf"127\.0\.0\.1:{port} lost", CHILDREN, since_mark=True)

    async def local_only():
        async with contextlib.AsyncExitStack() as stack:
            on_a, on_b = await open_both(stack, a, b)
            ch = channel("down")
            for p in on_a + on_b:
                await p.sub(ch)
            # Each server still delivers to all of its own children.
            await on_a[0].pub(ch, "on A")
            await asyncio.gather(*(p.expect("on A") for p in on_a))
            await on_b[1].pub(ch, "on B")
            await asyncio.gather(*(p.expect("on B") for p in on_b))

    run(local_only())

    for srv in servers:
        srv.mark_log()
    redis.start(port)

    async def resumed():
        async with contextlib.AsyncExitStack() as stack:
            on_a, on_b = await open_both(stack, a, b)
            # Each child finds its publisher connection dead only when it next uses it,
            # and the subscriber connections come back with a backoff: so publish from
            # each child, on a channel only a subscriber on the other server listens
            # to, until one message crosses (bounded).
            for publisher, remote in [(p, on_b[0]) for p in on_a] + [(p, on_a[0]) for p in on_b]:
                await until_crosses(publisher, remote)
            # Now every message reaches every subscriber of both servers.
            ch = channel("back")
            for p in on_a + on_b:
                await p.sub(ch)
            for publisher in on_a + on_b:
                text = f"back from {publisher.pid}"
                await publisher.pub(ch, text)
                await asyncio.gather(*(p.expect(text) for p in on_a + on_b))

    run(resumed(), timeout=60)
    for srv in servers:
        for what in ("subscriber", "publisher"):
            wait_for_count(srv, rf"WS00051: redis backplane {what} connection to "
                                rf"127\.0\.0\.1:{port} \(re\)established", CHILDREN,
                           since_mark=True)
        srv.assert_no_crash()
        assert srv.alive()


def test_redis_down_at_startup(httpd_factory, tmp_path_factory):
    """httpd starts while nothing listens on the Redis port: it starts, serves, and
    delivers to all of its own children; when Redis comes up there, each child connects
    (WS00051) and messages cross to and from a second server."""
    redis = Redis(str(tmp_path_factory.mktemp("redis-late")))
    port = free_port()
    conf = f"WebSocketBackplane redis://127.0.0.1:{port}/{PREFIX}late\n"
    a = httpd_factory(mpm="event", tls=False, locations=[("/probe", "probe")],
                      extra_global=conf)
    assert not re.search(r"WS00051: redis backplane", a.error_log_text())

    async def local_only():
        async with contextlib.AsyncExitStack() as stack:
            on_a = [ps[0] for ps in (await probes_in_two_children(stack, a, "ws")).values()]
            ch = channel("startup")
            for p in on_a:
                await p.sub(ch)
            await on_a[1].pub(ch, "Redis is down")
            await asyncio.gather(*(p.expect("Redis is down") for p in on_a))

    run(local_only())
    redis.start(port)
    try:
        wait_for_count(a, rf"WS00051: redis backplane subscriber connection to "
                          rf"127\.0\.0\.1:{port} \(re\)established", CHILDREN,
                       timeout=scaled(30))
        b = httpd_factory(mpm="event", tls=False, locations=[("/probe", "probe")],
                          extra_global=conf)

        async def crossing():
            async with contextlib.AsyncExitStack() as stack:
                on_a, on_b = await open_both(stack, a, b)
                for publisher, remote in [(on_b[0], on_a[0]), (on_a[1], on_b[1])]:
                    await until_crosses(publisher, remote)

        run(crossing(), timeout=scaled(90))
    finally:
        redis.kill()
