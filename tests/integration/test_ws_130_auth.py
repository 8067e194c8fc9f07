"""httpd access control applies to the upgrade request: Require + basic auth."""

import base64
import hashlib
import json
import re

import pytest

from rawws import OP_TEXT, RawWS, accept_for, new_key, upgrade_request
from wsutil import connect, recv_json, run

import websockets


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def server(httpd_factory, tmp_path_factory):
    d = tmp_path_factory.mktemp("auth")
    pwfile = d / "htpasswd"
    lines = []
    for user, pw in (("alice", "wonderland"), ("bob", "builder")):
        digest = base64.b64encode(hashlib.sha1(pw.encode()).digest()).decode()
        lines.append(f"{user}:{{SHA}}{digest}\n")
    pwfile.write_text("".join(lines))
    pwfile.chmod(0o644)
    d.chmod(0o755)
    auth = (f'AuthType Basic\nAuthName "ws test"\nAuthBasicProvider file\n'
            f'AuthUserFile "{pwfile}"\n')
    locations = [
        {"path": "/auth", "plugin": "probe", "extra": auth + "Require valid-user\n"},
        {"path": "/bob-only", "plugin": "probe", "extra": auth + "Require user bob\n"},
        {"path": "/denied", "plugin": "probe", "extra": "Require all denied\n"},
        {"path": "/local", "plugin": "probe", "extra": "Require ip 127.0.0.1\n"},
        {"path": "/not-local", "plugin": "probe", "extra": "Require ip 10.0.0.0/8\n"},
        {"path": "/open", "plugin": "probe"},
    ]
    return httpd_factory(mpm="event", tls=True, locations=locations)


def test_no_credentials_401(server, transport):
    resp, _ = upgrade_request(server, transport, "/auth")
    assert resp.status == 401, resp
    assert "basic" in resp.header("WWW-Authenticate", "").lower(), resp


@pytest.mark.parametrize("cred", [basic("alice", "wrong"), basic("nobody", "x"),
                                  "Basic !!!notbase64", "Bearer abc"])
def test_bad_credentials_401(server, transport, cred):
    resp, _ = upgrade_request(server, transport, "/auth", headers={"Authorization": cred})
    assert resp.status == 401, resp


def test_good_credentials_upgrade_and_user(server, transport):
    with RawWS.open(server, transport, "/auth",
                    headers={"Authorization": basic("alice", "wonderland")}) as ws:
        _, hello = ws.recv_message()
        info = json.loads(hello)
        assert info["user"] == "alice", info


def test_good_credentials_websockets_lib(server, transport):
    async def go():
        async with connect(server, transport, "/auth",
                           extra_headers={"Authorization": basic("bob", "builder")}) as ws:
            info = await recv_json(ws)
            assert info["user"] == "bob"
            await ws.send("after auth")
            assert await ws.recv() == "after auth"

    run(go())


def test_wrong_user_401(server, transport):
    resp, _ = upgrade_request(server, transport, "/bob-only",
                              headers={"Authorization": basic("alice", "wonderland")})
    # authenticated but not authorized: httpd's basic auth answers 401 (another login
    # may do), with a new challenge
    assert resp.status == 401, resp
    assert resp.header("WWW-Authenticate", "").startswith("Basic "), resp
    resp, _ = upgrade_request(server, transport, "/bob-only",
                              headers={"Authorization": basic("bob", "builder")})
    assert resp.status == 101, resp


def test_require_all_denied_403(server, transport):
    resp, _ = upgrade_request(server, transport, "/denied")
    assert resp.status == 403, resp


def test_require_ip_allows_local(server, transport):
    resp, _ = upgrade_request(server, transport, "/local")
    assert resp.status == 101, resp


def test_no_auth_user_is_null(server, transport):
    async def go():
        async with connect(server, transport, "/open") as ws:
            info = await recv_json(ws)
            assert info["user"] is None

    run(go())


def test_websockets_lib_sees_401(server, transport):
    async def go():
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as ei:
            async with connect(server, transport, "/auth"):
                pass
        assert ei.value.status_code == 401

    run(go())


def test_require_ip_refuses_other_addresses(server, transport):
    """Require ip with a network the client is not in: 403, and no session starts."""
    server.mark_log()
    resp, _ = upgrade_request(server, transport, "/not-local")
    assert resp.status == 403, resp
    resp, _ = upgrade_request(server, transport, "/local")      # the same, allowed
    assert resp.status == 101, resp
    server.wait_for_log(r"WS00040: session end: plugin=probe")
    assert len(re.findall(r"WS00040: session end", server.log_since_mark())) == 1


def test_upgrade_after_401_on_the_same_connection(server, transport):
    """A browser retries with credentials on the keep-alive connection that got the
    401: the upgrade on that reused connection succeeds."""
    with RawWS.connect(server, transport) as ws:
        hdrs = {"Host": f"{server.host}:{server.port_for(transport)}",
                "Upgrade": "websocket", "Connection": "Upgrade",
                "Sec-WebSocket-Key": new_key(), "Sec-WebSocket-Version": "13"}
        resp = ws.request("GET", "/auth", hdrs)
        assert resp.status == 401 and (resp.header("Connection") or "").lower() != "close"
        key = new_key()
        resp = ws.request("GET", "/auth", dict(hdrs, **{
            "Sec-WebSocket-Key": key, "Authorization": basic("alice", "wonderland")}))
        assert resp.status == 101, resp
        assert resp.header("Sec-WebSocket-Accept") == accept_for(key)
        assert json.loads(ws.recv_message()[1])["user"] == "alice"
        ws.send_text("on the reused connection")
        assert ws.recv_message() == (OP_TEXT, b"on the reused connection")
