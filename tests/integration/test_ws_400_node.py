"""Interoperability with Node's `ws` library (Debian's node-ws), over ws and wss."""

import pytest

from wsutil import run_node

LOCATIONS = [
    ("/echo", "echo"),
    ("/probe", "probe"),
    {"path": "/proto", "plugin": "probe", "settings": [("protocols", "chat.v2,chat.v1")]},
]


@pytest.fixture(scope="module")
def server(httpd_factory):
    return httpd_factory(mpm="event", tls=True, locations=LOCATIONS)


def node(server, transport, scenario, path, **kw):
    cfg = dict(scenario=scenario, url=server.url(transport, path),
               ca=server.cert if transport == "wss" else None, **kw)
    return run_node("client.js", cfg)


@pytest.mark.parametrize("kind", ["text", "binary"])
def test_echo_sizes(server, transport, kind):
    sizes = [0, 1, 125, 126, 1000, 65535, 65536, 100_000, 1 << 20]
    r = node(server, transport, "echo", "/echo",
             messages=[{"type": kind, "size": n} for n in sizes])
    assert r["ok"], r
    assert r["echoed"] == len(sizes) and r["code"] == 1000, r


def test_echo_mixed(server, transport):
    msgs = [{"type": "text" if i % 3 else "binary", "size": (i * 977) % 5000}
            for i in range(200)]
    r = node(server, transport, "echo", "/echo", messages=msgs)
    assert r["ok"], r
    assert r["echoed"] == 200, r


@pytest.mark.parametrize("offered,chosen", [
    (["chat.v1", "chat.v2"], "chat.v1"),       # the client's order wins
    (["other", "chat.v2"], "chat.v2"),
])
def test_subprotocol(server, transport, offered, chosen):
    r = node(server, transport, "subprotocol", "/proto", protocols=offered)
    assert r["ok"], r
    assert r["protocol"] == chosen, r
    assert r["hello"]["protocol"] == chosen, r
    assert r["hello"]["secure"] is (transport == "wss"), r


def test_subprotocol_none_supported(server, transport):
    """The server picks none: ws (8.x) then fails the connection itself, because it
    offered some; its message says the server sent none."""
    r = node(server, transport, "subprotocol", "/proto", protocols=["other"])
    assert r["error"] == "Server sent no subprotocol", r


def test_no_subprotocol_offered(server, transport):
    r = node(server, transport, "subprotocol", "/proto", protocols=[])
    assert r["ok"], r
    assert r["protocol"] == "" and r["hello"]["protocol"] is None, r


@pytest.mark.parametrize("code,reason", [(4001, "bye"), (1000, ""), (3999, "x" * 100)])
def test_server_close_code(server, transport, code, reason):
    r = node(server, transport, "server-close", "/probe", command=f"close:{code}:{reason}")
    assert r["ok"], r
    assert (r["code"], r["reason"]) == (code, reason), r


def test_server_error_1011(server, transport):
    r = node(server, transport, "server-close", "/probe", command="fail")
    assert r["ok"], r
    assert r["code"] == 1011, r


@pytest.mark.parametrize("code", [1000, 4002])
def test_client_close_code_echoed(server, transport, code):
    r = node(server, transport, "client-close", "/echo", code=code, reason="client bye")
    assert r["ok"], r
    assert r["code"] == code, r


def test_refused(server, transport):
    r = node(server, transport, "refused", "/probe?refuse=403")
    assert r["ok"], r
    assert r["status"] == 403, r


def test_cross_origin_refused(server, transport):
    r = node(server, transport, "refused", "/echo", origin="https://evil.example")
    assert r["ok"], r
    assert r["status"] == 403, r
