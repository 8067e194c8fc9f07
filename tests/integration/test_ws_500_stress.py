"""Stress: 100 connections to the probe, each receiving a 20000-message flood from a
plugin thread while echoing 200 messages of its own; event MPM, ws and wss.

The client is Node's `ws` (node/stress.js): one process, all connections, fast enough to
keep the server busy.  Every flood message must arrive in order and intact, every echo
too, and the error log must show no crash."""

import pytest

from wsutil import run_node

CONNECTIONS = 100
FLOOD = 20000
SIZE = 64
ECHOES = 200
DEADLINE_S = 120


@pytest.fixture(scope="module")
def server(httpd_factory):
    return httpd_factory(mpm="event", tls=True, locations=[("/probe", "probe")],
                         loglevel="warn")


def test_flood_and_echo(server, transport, capsys):
    cfg = dict(url=server.url(transport, "/probe"),
               ca=server.cert if transport == "wss" else None,
               connections=CONNECTIONS, flood=FLOOD, size=SIZE, echoes=ECHOES,
               deadline_ms=DEADLINE_S * 1000)
    r = run_node("stress.js", cfg, timeout=DEADLINE_S + 30)
    with capsys.disabled():
        print(f"\n[stress {transport}] {r['connections']} connections: "
              f"{r['flood_msgs']} flood + {r['echo_msgs']} echo messages received, "
              f"{r['bytes'] / 1e6:.1f} MB in {r['seconds']:.1f} s")
    assert r["ok"], r["errors"][:10]
    assert r["flood_msgs"] == CONNECTIONS * FLOOD
    assert r["echo_msgs"] == CONNECTIONS * ECHOES
    server.assert_no_crash()
    assert server.alive()
