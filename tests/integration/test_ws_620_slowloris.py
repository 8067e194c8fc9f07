"""Slow handshakes (slowloris) are cut off by mod_reqtimeout before any upgrade.

The server runs with `RequestReadTimeout header=2` (mod_reqtimeout is loaded by every
generated config).  Slow clients (a quarter over TLS) start an upgrade request and then
trickle one header byte every 0.5 s and never finish it; silent ones connect and send
nothing at all.  Within capacity (fewer than the worker threads) each connection is
closed about 2 s after it connected; beyond it (250 on event's 50 workers: httpd 2.4
reads a request on a worker thread, so a slow request holds one) they are closed in
waves.  Memory is compared over the children that existed before the attack (worker
and prefork start more under it).  `AcceptFilter http none`: with Linux's default (`data`, TCP_DEFER_ACCEPT) a
connection that sends nothing waits in the kernel about 30 s before httpd accepts it (it
costs httpd nothing meanwhile); here it is accepted at once, so that reqtimeout's bound
is what is measured for it too.  No connection is upgraded, a canary session keeps echoing throughout, httpd
and its children stay up, and the children's private memory (RssAnon) comes back to its
level before.
"""

import asyncio
import statistics
import time

import pytest

from conftest import mpm_params
from rawws import new_key
from support import (Canary, assert_memory_back, children, report, scaled,
                     settled_rss_kb, wait_sessions)
from wsutil import run

SLOW = 200
SILENT = 50
TLS_SHARE = 4
HEADER_TIMEOUT = 2
TRICKLE = 0.5                 # seconds between two header bytes
SLACK = scaled(10.0)          # a loaded machine (or an ASan build) is slower
CLOSE_DEADLINE = 30.0         # a client gives up waiting for the close after this
WORKERS = {"event": 50, "worker": 300, "prefork": 300}
MPM_SETTINGS = {
    "event": {},
    # enough threads / processes that the attack does not also starve the canary's
    # handshake (a thread or process per connection while it reads the request)
    "worker": {"StartServers": 2, "ServerLimit": 12, "ThreadsPerChild": 25,
               "MaxRequestWorkers": 300, "MinSpareThreads": 25, "MaxSpareThreads": 300},
    "prefork": {"StartServers": 30, "MinSpareServers": 1, "MaxSpareServers": 300,
                "ServerLimit": 300, "MaxRequestWorkers": 300},
}


async def slow_client(srv, transport, trickle):
    """Returns (seconds from connect to the server's close, response head or b'')."""
    tls = transport == "wss"
    t0 = time.monotonic()
    reader, writer = await asyncio.open_connection(
        srv.host, srv.port_for(transport), ssl=srv.ssl_for(transport),
        server_hostname=srv.host if tls else None)
    request = (f"GET /echo HTTP/1.1\r\nHost: {srv.host}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {new_key()}\r\n"
               "Sec-WebSocket-Version: 13\r\nX-Slow: " + "a" * 200).encode()

    async def trickle_bytes():
        if not trickle:
            return
        try:
            writer.write(request[:request.index(b"\r\n") + 2])
            for i in range(request.index(b"\r\n") + 2, len(request)):
                await asyncio.sleep(trickle)     # the slowness under test
                writer.write(request[i:i + 1])
                await writer.drain()
        except (ConnectionError, RuntimeError):
            pass                                  # the server closed: expected

    sender = asyncio.ensure_future(trickle_bytes())
    got = b""
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(4096), CLOSE_DEADLINE + 5)
            if not chunk:
                break
            got += chunk
    except (ConnectionError, OSError):
        pass
    elapsed = time.monotonic() - t0
    sender.cancel()
    writer.close()
    return elapsed, got


@pytest.fixture(scope="module", params=mpm_params())
def srv(request, httpd_factory):
    mpm = request.param
    return httpd_factory(mpm=mpm, tls=True, locations=[("/echo", "echo")],
                         extra_global=f"RequestReadTimeout header={HEADER_TIMEOUT}\n"
                                      # accept silent connections at once (see above)
                                      "AcceptFilter http none\nAcceptFilter https none\n",
                         mpm_settings=MPM_SETTINGS[mpm])


def attack_and_measure(srv, name, n_slow, n_silent, bound, median_bound=None):
    async def attack(n_slow, n_silent):
        jobs = [slow_client(srv, "wss" if i % TLS_SHARE == 0 else "ws", TRICKLE)
                for i in range(n_slow)]
        jobs += [slow_client(srv, "ws", 0) for _ in range(n_silent)]
        return await asyncio.gather(*jobs)

    # warm-up, twice: every thread that reads a request keeps up to MaxMemFree of
    # pool memory for the next one, so RSS settles once the threads have been used
    for _ in range(2):
        run(attack(n_slow, n_silent), timeout=bound + 30)
    # worker and prefork add children under this load: compare the same processes, and
    # their private memory (which of them serve a wss client is chance)
    pids = children(srv)
    before = settled_rss_kb(srv, pids=pids, field="RssAnon")
    srv.mark_log()
    canary = Canary(srv, "ws")
    canary.start()
    t0 = time.monotonic()
    results = run(attack(n_slow, n_silent), timeout=bound + 30)
    t_attack = time.monotonic() - t0
    echoes, slowest = canary.finish()
    wait_sessions(srv, 0)
    after = settled_rss_kb(srv, pids=pids, field="RssAnon")

    times = [t for t, _ in results]
    heads = [g.split(b"\r\n", 1)[0].decode(errors="replace") for _, g in results]
    upgrades = srv.log_since_mark().count("WS00036: upgraded")
    report(f"620 {name} {srv.mpm}", slow=n_slow, silent=n_silent,
           closed_after_s=f"min {min(times):.2f} median {statistics.median(times):.2f} "
                          f"max {max(times):.2f} (bound {bound:.0f})",
           answers=sorted(set(heads)), attack_s=f"{t_attack:.1f}", canary_echoes=echoes,
           canary_slowest_s=f"{slowest:.3f}", children=f"{len(pids)}->{len(children(srv))}",
           anon_before_kb=before, anon_after_kb=after, anon_delta_kb=after - before)
    assert max(times) <= bound, f"a slow client was held {max(times):.1f}s (bound {bound}s)"
    assert min(times) >= HEADER_TIMEOUT - 0.5, "closed before the limit?"
    if median_bound is not None:
        assert statistics.median(times) <= median_bound, statistics.median(times)
    assert not any(h.startswith("HTTP/1.1 101") for h in heads)
    assert upgrades == 1, f"{upgrades} upgrades (only the canary's expected)"
    assert srv.alive()
    srv.assert_no_crash()
    assert echoes > 0
    assert_memory_back(f"620 {name} {srv.mpm}", before, after)


def test_slowloris_within_capacity(srv):
    """Fewer slow clients than worker threads: each is closed about 2 s after it
    connected."""
    attack_and_measure(srv, "within-capacity", 35, 10, HEADER_TIMEOUT + SLACK,
                       median_bound=HEADER_TIMEOUT + 2)


def test_slowloris_beyond_capacity(srv):
    """More slow clients than worker threads (event: 50): a request being read holds a
    worker, so they are served in waves of at most 2 s each; every one is still closed,
    and parked WebSocket sessions wait at most one wave for a worker."""
    n = SLOW + SILENT
    waves = -(-n // WORKERS[srv.mpm])
    attack_and_measure(srv, "beyond-capacity", SLOW, SILENT,
                       waves * HEADER_TIMEOUT * 1.5 + SLACK)
