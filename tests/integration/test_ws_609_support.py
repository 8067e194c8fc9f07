"""Self-test of the shared helpers in support.py against a real server: the children
and their memory, server-status, session-end lines, the raw async client, the canary."""

import time

from support import (AsyncRaw, Canary, PeakMemory, children, count_session_ends, report,
                     rss_kb, session_ends, status, wait_sessions)
from wsutil import run


def test_helpers_measure_the_server(httpd_factory):
    srv = httpd_factory(mpm="event", tls=False, locations=[("/echo", "echo")])
    kids = children(srv)
    assert len(kids) == 2, kids            # genconf's event settings: 2 children
    rss = rss_kb(srv)
    assert 1000 < rss < 10_000_000, rss
    peak = PeakMemory(srv)
    srv.mark_log()
    canary = Canary(srv)
    canary.start()
    wait_sessions(srv, 1)
    assert int(status(srv)["WebSocketSessionsAsync"]) == 1
    time.sleep(0.5)   # the canary runs for a moment (its round trips are the test)
    count, slowest = canary.finish()
    wait_sessions(srv, 0)
    assert count >= 3
    # the peak covers the present RSS (give or take the pages the kernel has not yet
    # folded into either counter)
    now = rss_kb(srv)
    assert peak.peak_kb() >= 0.9 * now > 0, (peak.peak_kb(), now)
    srv.wait_for_log(r"WS00040")
    ends = session_ends(srv.log_since_mark())
    assert len(ends) == 1 and ends[0]["in_msgs"] == count and ends[0]["close"] == 1000, ends
    assert count_session_ends(srv.log_since_mark(), plugin="echo", closed_by="client") == 1

    async def raw():
        c = await AsyncRaw.open(srv, "ws", "/echo")
        await c.echo("raw async")
        c.close()
    run(raw())
    report("helpers", children=len(kids), rss_kb=rss, canary_echoes=count,
           canary_slowest_s=f"{slowest:.3f}")
