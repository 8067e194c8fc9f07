"""Origin checks: same-origin by default, WebSocketAllowedOrigins list or *."""

import pytest

from rawws import OP_TEXT, RawWS, upgrade_request
from wsutil import connect, recv, run

LOCATIONS = [
    ("/echo", "echo"),
    {"path": "/good", "plugin": "echo", "allowed_origins": ["https://good.example"]},
    {"path": "/two", "plugin": "echo",
     "allowed_origins": ["https://good.example", "http://other.example:8080"]},
    {"path": "/any", "plugin": "echo", "allowed_origins": "*"},
    {"path": "/relaxed", "plugin": "echo", "extra": "WebSocketCheckHost off"},
]


@pytest.fixture(scope="module")
def server(httpd_factory):
    return httpd_factory(mpm="event", tls=True, locations=LOCATIONS,
                         extra_vhost="ServerAlias chat.example *.wild.example")


def status(server, transport, path, origin):
    headers = {} if origin is None else {"Origin": origin}
    resp, _ = upgrade_request(server, transport, path, headers=headers)
    return resp.status


def test_no_origin_allowed(server, transport):
    assert status(server, transport, "/echo", None) == 101


def test_same_origin_allowed(server, transport):
    assert status(server, transport, "/echo", server.origin(transport)) == 101


def test_same_origin_websockets_lib(server, transport):
    async def go():
        async with connect(server, transport, "/echo", origin=server.origin(transport)) as ws:
            await ws.send("same origin")
            assert await recv(ws) == "same origin"

    run(go())


def test_same_origin_localhost_name_differs(server, transport):
    """Host is 127.0.0.1:PORT; an Origin of localhost:PORT is another origin."""
    port = server.port_for(transport)
    scheme = "https" if transport == "wss" else "http"
    assert status(server, transport, "/echo", f"{scheme}://localhost:{port}") == 403


def test_origin_scheme_must_match_transport(server, transport):
    """Same origin means scheme too: http pairs with ws, https with wss."""
    port = server.port_for(transport)
    wrong = "http" if transport == "wss" else "https"
    assert status(server, transport, "/echo", f"{wrong}://127.0.0.1:{port}") == 403


@pytest.mark.parametrize("origin", [
    "http://evil.example",
    "https://evil.example",
    "null",
    "http://127.0.0.1",                 # no port: not the same origin as 127.0.0.1:PORT
    "http://127.0.0.1:1",
    "garbage",
])
def test_cross_origin_refused_403(server, transport, origin):
    server.mark_log()
    assert status(server, transport, "/echo", origin) == 403
    server.wait_for_log(r"(?i)origin")


def test_other_port_refused(server, transport):
    other = server.tls_port if transport == "ws" else server.port
    scheme = "https" if transport == "wss" else "http"
    assert status(server, transport, "/echo", f"{scheme}://127.0.0.1:{other}") == 403


@pytest.mark.parametrize("origin,expected", [
    ("https://good.example", 101),
    (None, 101),
    ("http://good.example", 403),
    ("https://good.example:8443", 403),
    ("https://evil.example", 403),
    ("https://notgood.example", 403),
])
def test_allowed_list(server, transport, origin, expected):
    assert status(server, transport, "/good", origin) == expected


@pytest.mark.parametrize("origin,expected", [
    ("https://good.example", 101),
    ("http://other.example:8080", 101),
    ("http://other.example", 403),
])
def test_allowed_list_several(server, transport, origin, expected):
    assert status(server, transport, "/two", origin) == expected


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://x.y:1", None])
def test_star_allows_all(server, transport, origin):
    assert status(server, transport, "/any", origin) == 101


def test_allowed_origin_then_echo(server, transport):
    with RawWS.open(server, transport, "/good",
                    headers={"Origin": "https://good.example"}) as ws:
        ws.send_text("from good")
        assert ws.recv_message() == (OP_TEXT, b"from good")


def host_status(server, transport, path, host):
    """An upgrade whose Host and Origin both name `host` (as a page of that origin
    sends it): same origin by the headers alone."""
    port = server.port_for(transport)
    scheme = "https" if transport == "wss" else "http"
    headers = {"Host": f"{host}:{port}", "Origin": f"{scheme}://{host}:{port}"}
    resp, _ = upgrade_request(server, transport, path, headers=headers)
    return resp.status


@pytest.mark.parametrize("path", ["/echo", "/good"])
def test_dns_rebinding_refused(server, transport, path):
    """attacker.example resolving to this server: Host and Origin agree, but the Host is
    not a name of this virtual host (WebSocketCheckHost on by default)."""
    server.mark_log()
    assert host_status(server, transport, path, "attacker.example") == 403
    server.wait_for_log(r"WS00037: Host 'attacker.example' is not a name")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "chat.example", "CHAT.example",
                                  "a.wild.example"])
def test_own_names_allowed(server, transport, host):
    """ServerName, ServerAlias (and wildcards), the address connected to, and localhost
    over loopback."""
    assert host_status(server, transport, "/echo", host) == 101


def test_check_host_off_allows_rebinding(server, transport):
    assert host_status(server, transport, "/relaxed", "attacker.example") == 101
    # the origin must still equal the Host
    port = server.port_for(transport)
    resp, _ = upgrade_request(server, transport, "/relaxed", headers={
        "Host": f"attacker.example:{port}", "Origin": "http://evil.example"})
    assert resp.status == 403
