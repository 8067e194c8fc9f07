"""The probe plugin: what on_open sees, subprotocols, refusals, server close, errors."""

import json

import pytest
import websockets

from rawws import OP_BINARY, OP_TEXT, RawWS, new_key, upgrade_request
from wsutil import connect, expect_closed, recv, recv_json, run

LOCATIONS = [
    ("/probe", "probe"),
    {"path": "/proto", "plugin": "probe", "settings": [("protocols", "a,b,c")]},
]


@pytest.fixture(scope="module")
def server(httpd_factory):
    return httpd_factory(mpm="event", tls=True, locations=LOCATIONS)


def test_request_info(server, transport):
    async def go():
        async with connect(server, transport, "/probe/sub/path?x=1&y=two",
                           origin=server.origin(transport),
                           extra_headers={"X-Test": "hello probe"}) as ws:
            info = await recv_json(ws)
            expected = {
                "uri": "/probe/sub/path", "query": "x=1&y=two", "user": None,
                "remote_ip": "127.0.0.1", "origin": server.origin(transport),
                "secure": transport == "wss", "protocol": None, "x_test": "hello probe",
            }
            assert set(expected) <= set(info), info    # (more keys are fine)
            assert {k: info[k] for k in expected} == expected

    run(go())


def test_request_info_defaults(server, transport):
    async def go():
        async with connect(server, transport, "/probe") as ws:
            info = await recv_json(ws)
            assert info["uri"] == "/probe"
            assert info["query"] is None
            assert info["origin"] is None
            assert info["x_test"] is None
            assert info["protocol"] is None
            assert info["secure"] is (transport == "wss")

    run(go())


@pytest.mark.parametrize("offered,chosen", [
    (["x", "b", "a"], "b"),
    (["a"], "a"),
    (["c", "a"], "c"),
    (["x", "y"], None),
    (None, None),
])
def test_subprotocol(server, transport, offered, chosen):
    async def go():
        async with connect(server, transport, "/proto", subprotocols=offered) as ws:
            assert ws.subprotocol == chosen
            info = await recv_json(ws)
            assert info["protocol"] == chosen

    run(go())


@pytest.mark.parametrize("offer,chosen", [
    ("x, b, a", "b"),
    ("x,c", "c"),
    ("y", None),
])
def test_subprotocol_header_raw(server, transport, offer, chosen):
    resp, _ = upgrade_request(server, transport, "/proto",
                              headers={"Sec-WebSocket-Protocol": offer})
    assert resp.status == 101, resp
    assert resp.header("Sec-WebSocket-Protocol") == chosen, resp


def test_subprotocol_several_headers(server, transport):
    with RawWS.connect(server, transport) as ws:
        resp = ws.request("GET", "/proto", [
            ("Host", f"127.0.0.1:{server.port_for(transport)}"), ("Upgrade", "websocket"),
            ("Connection", "Upgrade"), ("Sec-WebSocket-Key", new_key()),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Protocol", "x"), ("Sec-WebSocket-Protocol", "c, a")])
    assert resp.status == 101, resp
    assert resp.header("Sec-WebSocket-Protocol") == "c", resp


def test_no_protocols_setting_picks_none(server, transport):
    resp, _ = upgrade_request(server, transport, "/probe",
                              headers={"Sec-WebSocket-Protocol": "a, b"})
    assert resp.status == 101, resp
    assert not resp.has_header("Sec-WebSocket-Protocol"), resp


@pytest.mark.parametrize("code", [400, 403, 404, 429, 503])
def test_on_open_refuses(server, transport, code):
    resp, _ = upgrade_request(server, transport, f"/probe?refuse={code}")
    assert resp.status == code, resp
    assert not resp.has_header("Sec-WebSocket-Accept"), resp


def test_on_open_refuses_websockets_lib(server, transport):
    async def go():
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as ei:
            async with connect(server, transport, "/probe?a=b&refuse=403"):
                pass
        assert ei.value.status_code == 403

    run(go())


@pytest.mark.parametrize("code,reason", [(1000, "bye"), (4000, "custom reason"),
                                         (3001, ""), (1008, "policy"),
                                         (4999, "é" * 50)])
def test_server_close_code_reason(server, transport, code, reason):
    async def go():
        async with connect(server, transport, "/probe") as ws:
            await recv_json(ws)
            await ws.send(f"close:{code}:{reason}")
            got = await expect_closed(ws)
            assert got == (code, reason)

    run(go())


def test_server_close_raw(server, transport):
    with RawWS.open(server, transport, "/probe") as ws:
        ws.recv_message()
        ws.send_text("close:4123:raw reason")
        code, reason = ws.expect_close()
        assert (code, reason) == (4123, b"raw reason")


@pytest.mark.parametrize("cmd", ["hclose", "close"])
def test_long_multibyte_close_reason_cut_at_character(server, cmd):
    """A 200-byte reason ("aa" + 99 two-byte characters), from a plugin thread
    (handle_close) or the I/O thread (close): cut to 122 bytes, not inside a character
    at 123 (through handle_close it used to end in a lone 0xc3)."""
    reason = "aa" + "\u00e9" * 99
    with RawWS.open(server, "ws", "/probe") as ws:
        ws.recv_message()
        ws.send_text(f"{cmd}:4000:{reason}")
        code, got = ws.expect_close()
        assert code == 4000
        assert got == reason.encode()[:122], got       # "aa" + 60 whole characters
        got.decode("utf-8")


def test_on_message_error_1011(server, transport):
    async def go():
        async with connect(server, transport, "/probe") as ws:
            await recv_json(ws)
            await ws.send("fail")
            code, _ = await expect_closed(ws)
            assert code == 1011

    run(go())


def test_on_message_error_1011_raw(server, transport):
    with RawWS.open(server, transport, "/probe") as ws:
        ws.recv_message()
        ws.send_text("fail")
        code, _ = ws.expect_close()
        assert code == 1011


def test_echo_types(server, transport):
    with RawWS.open(server, transport, "/probe") as ws:
        op, hello = ws.recv_message()
        assert op == OP_TEXT and json.loads(hello)["uri"] == "/probe"
        ws.send_text("some text")
        assert ws.recv_message() == (OP_TEXT, b"some text")
        ws.send_binary(b"fail")          # a command only as text
        assert ws.recv_message() == (OP_BINARY, b"fail")
        ws.send_binary(b"close:1000:x")
        assert ws.recv_message() == (OP_BINARY, b"close:1000:x")


def test_small_flood(server, transport):
    async def go():
        async with connect(server, transport, "/probe") as ws:
            await recv_json(ws)
            await ws.send("flood:1000:100")
            for seq in range(1000):
                m = await recv(ws)
                assert isinstance(m, bytes) and len(m) == 100
                assert int.from_bytes(m[:8], "big") == seq
                assert m[8:] == bytes([seq & 0xFF]) * 92
            assert await recv(ws) == "flood-done:1000"

    run(go())
