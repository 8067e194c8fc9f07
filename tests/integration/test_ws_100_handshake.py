"""The opening handshake (RFC 6455 4.2) and basic echo, on every MPM, over ws and wss."""

import asyncio
import base64

import pytest

from rawws import (OP_BINARY, OP_TEXT, RawWS, accept_for, build_frame, http_request,
                   new_key, upgrade_request)
from support import mpm_server
from wsutil import connect, recv, run

LOCATIONS = [
    ("/echo", "echo"),
    # ServerRoot-relative plugin path (ServerRoot is the repository)
    ("/echo-rel", "build/plugins/echo.so"),
    {"path": "/echo-filtered", "plugin": "echo",
     "extra": "SetOutputFilter DEFLATE\nHeader always set X-Foo bar\n"},
]


server = mpm_server(LOCATIONS)


def assert_good_101(resp, key):
    assert resp.status == 101, resp
    assert resp.header("Upgrade", "").lower() == "websocket", resp
    assert "upgrade" in [t.strip().lower() for t in resp.header("Connection", "").split(",")]
    assert resp.header("Sec-WebSocket-Accept") == accept_for(key), resp
    assert not resp.has_header("Transfer-Encoding"), resp
    assert not resp.has_header("Content-Encoding"), resp
    assert not resp.has_header("Content-Length") or resp.header("Content-Length") == "0"


# ---- successful upgrades ---------------------------------------------------------------

def test_upgrade_101(server, transport):
    resp, key = upgrade_request(server, transport, "/echo")
    assert_good_101(resp, key)
    assert resp.header("Connection", "").lower() == "upgrade"


@pytest.mark.parametrize("upgrade,connection", [
    ("websocket", "keep-alive, Upgrade"),          # Firefox
    ("WebSocket", "upgrade"),
    ("WEBSOCKET", "UPGRADE"),
    ("websocket", "Upgrade,keep-alive"),
    ("foo/1, websocket", "Upgrade"),
    ("websocket", "close ,  upgrade"),
])
def test_upgrade_token_lists(server, transport, upgrade, connection):
    resp, key = upgrade_request(server, transport, "/echo",
                                headers={"Upgrade": upgrade, "Connection": connection})
    assert_good_101(resp, key)


def test_header_names_case_insensitive(server, transport):
    key = new_key()
    with RawWS.connect(server, transport) as ws:
        resp = ws.request("GET", "/echo", [
            ("host", f"127.0.0.1:{server.port_for(transport)}"),
            ("UPGRADE", "websocket"), ("connection", "Upgrade"),
            ("sec-websocket-key", key), ("SEC-WEBSOCKET-VERSION", "13")])
    assert_good_101(resp, key)


def test_101_not_mangled_by_filters(server, transport):
    """SetOutputFilter DEFLATE + Header always set on the location: the 101 has no
    Content-Encoding / Transfer-Encoding and the frames after it are not compressed."""
    with RawWS.open(server, transport, "/echo-filtered",
                    headers={"Accept-Encoding": "gzip, deflate"}) as ws:
        assert not ws.response.has_header("Content-Encoding"), ws.response
        assert not ws.response.has_header("Transfer-Encoding"), ws.response
        assert ws.response.header("Upgrade", "").lower() == "websocket"
        ws.send_text("hello filtered " * 20)
        assert ws.recv_message() == (OP_TEXT, ("hello filtered " * 20).encode())
        ws.send_close(1000)
        code, _ = ws.expect_close()
        assert code == 1000


def test_relative_plugin_path(server, transport):
    with RawWS.open(server, transport, "/echo-rel") as ws:
        ws.send_binary(b"\x00\x01rel")
        assert ws.recv_message() == (OP_BINARY, b"\x00\x01rel")


def test_frame_in_same_segment_as_handshake(server, transport):
    """A frame sent together with the request must not sit unseen in a buffer."""
    key = new_key()
    req = (f"GET /echo HTTP/1.1\r\nHost: 127.0.0.1:{server.port_for(transport)}\r\n"
           f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
           f"Sec-WebSocket-Version: 13\r\n\r\n").encode()
    with RawWS.connect(server, transport) as ws:
        ws.send_raw(req + build_frame(OP_TEXT, b"early bird"))
        resp = ws.read_response()
        assert_good_101(resp, key)
        assert ws.recv_message(timeout=5) == (OP_TEXT, b"early bird")


# ---- refusals ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD"])
def test_method_not_get_405(server, transport, method):
    resp, _ = upgrade_request(server, transport, "/echo", method=method)
    assert resp.status == 405, resp


def test_http10_400(server, transport):
    resp, _ = upgrade_request(server, transport, "/echo", version="HTTP/1.0")
    assert resp.status == 400, resp


@pytest.mark.parametrize("headers,drop", [
    ({}, ("Upgrade", "Connection", "Sec-WebSocket-Key", "Sec-WebSocket-Version")),
    ({}, ("Upgrade",)),
    ({"Upgrade": "foo"}, ()),
    ({"Upgrade": "h2c", "Connection": "Upgrade"}, ()),
])
def test_no_websocket_upgrade_426(server, transport, headers, drop):
    resp, _ = upgrade_request(server, transport, "/echo", headers=headers, drop=drop)
    assert resp.status == 426, resp
    assert resp.header("Upgrade", "").lower() == "websocket", resp


def test_plain_get_426_curl_like(server, transport):
    port = server.port_for(transport)
    resp = http_request(server, transport,
                        f"GET /echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                        f"Connection: close\r\n\r\n".encode())
    assert resp.status == 426, resp
    assert resp.header("Upgrade", "").lower() == "websocket", resp


@pytest.mark.parametrize("connection", [None, "keep-alive", "close", "upgraded", "Upgrad"])
def test_connection_without_upgrade_400(server, transport, connection):
    if connection is None:
        resp, _ = upgrade_request(server, transport, "/echo", drop=("Connection",))
    else:
        resp, _ = upgrade_request(server, transport, "/echo",
                                  headers={"Connection": connection})
    assert resp.status == 400, resp


@pytest.mark.parametrize("key", [
    None,                                              # missing
    "",                                                # empty
    "not base64 at all!",
    base64.b64encode(b"x" * 15).decode(),              # 15 bytes
    base64.b64encode(b"x" * 17).decode(),              # 17 bytes
    base64.b64encode(b"x" * 32).decode(),
    "AAAAAAAAAAAAAAAAAAAAAA",                          # 16 bytes but no padding
    "AAAAAAAAAAAAAAAAAAAA*A==",                        # bad character
])
def test_bad_key_400(server, transport, key):
    if key is None:
        resp, _ = upgrade_request(server, transport, "/echo", drop=("Sec-WebSocket-Key",))
    else:
        resp, _ = upgrade_request(server, transport, "/echo",
                                  headers={"Sec-WebSocket-Key": key})
    assert resp.status == 400, resp


@pytest.mark.parametrize("version", ["8", "12", "14", "13, 8", "abc", ""])
def test_bad_version_426(server, transport, version):
    resp, _ = upgrade_request(server, transport, "/echo",
                              headers={"Sec-WebSocket-Version": version})
    assert resp.status == 426, resp
    assert resp.header("Sec-WebSocket-Version") == "13", resp


def test_missing_version_refused(server, transport):
    # RFC 6455 4.2.1 (a required header is missing: 400) and 4.4 (426 + the version)
    # both fit; the module answers a missing version like a wrong one: 426 naming 13.
    resp, _ = upgrade_request(server, transport, "/echo", drop=("Sec-WebSocket-Version",))
    assert resp.status == 426, resp
    assert resp.header("Sec-WebSocket-Version") == "13", resp


def test_non_websocket_paths_unaffected(server, transport):
    port = server.port_for(transport)
    resp = http_request(server, transport,
                        f"GET /server-status?auto HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                        f"Connection: close\r\n\r\n".encode())
    assert resp.status == 200, resp
    assert b"ServerUptime" in resp.body or b"Total Accesses" in resp.body


# ---- echo basics over the websockets library -------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 300_000])
def test_echo_text_and_binary(server, transport, size):
    text = ("é" * (size // 2 + 1))[: size // 2] + "x" * (size - 2 * (size // 2))
    data = bytes(i % 251 for i in range(size))

    async def go():
        async with connect(server, transport, "/echo") as ws:
            await ws.send(text)
            got = await recv(ws)
            assert isinstance(got, str) and got == text
            await ws.send(data)
            got = await recv(ws)
            assert isinstance(got, bytes) and got == data
            await ws.close(1000)
            assert ws.close_code == 1000

    run(go())


def test_echo_many_in_order(server, transport):
    async def go():
        async with connect(server, transport, "/echo") as ws:
            msgs = [f"message {i}" if i % 2 else f"m{i}".encode() * (i % 50)
                    for i in range(500)]
            for m in msgs:
                await ws.send(m)
            for m in msgs:
                assert await recv(ws) == m

    run(go())


def test_concurrent_connections(server, transport):
    async def one(i):
        async with connect(server, transport, "/echo") as ws:
            for j in range(20):
                await ws.send(f"{i}:{j}")
                assert await recv(ws) == f"{i}:{j}"

    async def go():
        await asyncio.gather(*(one(i) for i in range(10)))

    run(go(), timeout=60)


def test_websockets_lib_rejects_nothing(server, transport):
    """The websockets library's own checks of the 101 (accept, headers) pass, with its
    default permessage-deflate offer (the module may take it or ignore it)."""
    async def go():
        async with connect(server, transport, "/echo", compression="deflate") as ws:
            await ws.send("compressible " * 1000)
            assert await recv(ws) == "compressible " * 1000

    run(go())
