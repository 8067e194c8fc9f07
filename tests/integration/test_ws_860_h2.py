"""WebSockets over HTTP/2 (RFC 8441) through mod_http2 (`H2WebSockets on`), event and worker
MPM, with the h2ws client (python3-h2 + python3-wsproto):

  transports  h2 (TLS, ALPN), h2c with prior knowledge, h2c after `Upgrade: h2c`;
  handshake   SETTINGS_ENABLE_CONNECT_PROTOCOL, 200 to the extended CONNECT; malformed
              ones answered by mod_http2 (RST_STREAM PROTOCOL_ERROR, 501, 502) or by
              the module as on HTTP/1.1 (426 for a wrong version);
  traffic     echo of 0 B to 16 MiB text and binary, with and without permessage-deflate;
              pings both ways; server close; plugin sends from another thread;
  streams     10 WebSockets at once on one h2 connection; a stream reset by the client
              ends only its own session (1006 to the plugin, in the session-end line);
  policy      the origin check and Require as on HTTP/1.1; past WebSocketH2MaxSessions a
              503 (not a hang); a graceful restart closes every h2 WebSocket with 1001;
  conformance the wsconform cases over h2 streams (tests/conformance/wsconform_h2.py);
  browser     Chromium loads the echo page over h2 and its WebSocket uses RFC 8441.

mod_http2 runs at most 6 streams of a new h2 connection at once and raises that limit
as streams complete (h2_mplx.c); the tests that hold more open first load a few pages on
the connection, as a browser does before its page opens WebSockets (see docs/http2.md).
"""

import base64
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from conftest import mpm_params
from h2ws import H2Client, HandshakeError
from httpd import configtest, free_port  # (puts scripts/ on sys.path)
import genconf  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
WSCONFORM_H2 = os.path.join(REPO, "tests", "conformance", "wsconform_h2.py")
BROWSER_H2 = os.path.join(REPO, "tests", "browser", "h2.test.mjs")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

MPMS = [m for m in mpm_params() if m != "prefork"]
TRANSPORTS = ["h2", "h2c", "h2c-upgrade"]
SESSION_END = r"WS00040: session end: plugin={plugin} .*close={code} closed_by={by} proto={proto}"


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module", params=MPMS)
def server(request, httpd_factory, tmp_path_factory):
    d = tmp_path_factory.mktemp("h2auth")
    pw = base64.b64encode(hashlib.sha1(b"wonderland").digest()).decode()
    (d / "htpasswd").write_text(f"alice:{{SHA}}{pw}\n")
    (d / "htpasswd").chmod(0o644)
    d.chmod(0o755)
    auth = (f'AuthType Basic\nAuthName "h2"\nAuthBasicProvider file\n'
            f'AuthUserFile "{d / "htpasswd"}"\nRequire valid-user\n')
    locations = [
        ("/echo", "echo"),
        {"path": "/probe", "plugin": "probe", "settings": [("protocols", "a,b")]},
        {"path": "/pinged", "plugin": "echo", "extra": "WebSocketPingInterval 1\n"},
        {"path": "/partner", "plugin": "echo", "allowed_origins": ["https://partner.example"]},
        {"path": "/denied", "plugin": "echo", "extra": "Require all denied\n"},
        {"path": "/auth", "plugin": "probe", "extra": auth},
    ]
    return httpd_factory(mpm=request.param, tls=True, h2=True, locations=locations)


def client(server, transport, **kw):
    if transport == "h2":
        return H2Client(server.host, server.tls_port, ssl_context=server.ssl_context(), **kw)
    return H2Client(server.host, server.port,
                    mode="upgrade" if transport == "h2c-upgrade" else "prior", **kw)


def origin(server, transport):
    return server.origin("https" if transport == "h2" else "http")


def warm_up(cli, n=24):
    """Ordinary requests, so that mod_http2 lets more streams of this connection run at
    once (it starts at 6 and doubles as streams complete)."""
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for status, _, _ in pool.map(lambda _: cli.get("/"), range(n)):
            assert status == 200


# ---- handshake ---------------------------------------------------------------------------

@pytest.mark.parametrize("transport", TRANSPORTS)
def test_handshake_and_echo(server, transport):
    """The server offers extended CONNECT; /echo answers 200 without any HTTP/1.1 upgrade
    header, echoes, answers a ping, and completes the close handshake; the session-end
    line names the protocol."""
    server.mark_log()
    if transport == "h2c-upgrade" and server.mpm == "event":
        # httpd 2.4.71's event MPM closes an h2c-upgraded connection the first time
        # mod_http2 hands it back idle (GOAWAY, docs/http2.md): the upgrade itself works
        # and offers extended CONNECT, but nothing can rely on the connection after it.
        cli = client(server, transport, hold_upgrade=False)
        try:
            assert cli.connect_protocol == 1
            assert cli.read_response(cli.upgrade_response)[0] == 200
        finally:
            cli.close()
        return
    cli = client(server, transport)
    try:
        assert cli.connect_protocol == 1
        ws = cli.websocket("/echo", origin=origin(server, transport))
        if transport == "h2c-upgrade":
            assert cli.read_response(cli.upgrade_response)[0] == 200
        hdrs = ws.stream.headers
        assert hdrs[":status"] == "200", hdrs
        for h in ("upgrade", "connection", "sec-websocket-accept"):
            assert h not in hdrs, hdrs
        ws.send_text("hello h2")
        assert ws.recv() == ("text", "hello h2")
        ws.ping(b"p1")
        assert ws.recv(skip_ping=False) == ("pong", b"p1")
        closed, end = ws.close_handshake(1000, "bye")
        assert closed[:2] == ("close", 1000) and end == ("eof",), (closed, end)
        assert cli.get("/")[0] == 200, "the h2 connection outlives the WebSocket"
    finally:
        cli.close()
    proto = "h2" if transport == "h2" else "h2c"
    server.wait_for_log(SESSION_END.format(plugin="echo", code=1000, by="client", proto=proto))


def test_malformed_connect_answered_by_mod_http2(server):
    """Missing pseudo-headers are malformed requests: mod_http2 resets the stream with
    PROTOCOL_ERROR; an unknown :protocol is a plain CONNECT (501); a resource that is no
    WebSocket gives 502; a wrong Sec-WebSocket-Version gets the module's 426, as on
    HTTP/1.1.  None of it disturbs the connection."""
    cli = client(server, "h2c", validate=False)
    try:
        base = cli.connect_headers("/echo")
        for drop in (":scheme", ":path", ":authority"):
            st = cli.open_stream([h for h in base if h[0] != drop])
            st.wait_response()
            assert st.status is None and st.reset_code == 1, (drop, st.status, st.reset_code)
        st = cli.open_stream([(":method", "GET")] + base[1:])
        st.wait_response()
        assert st.reset_code == 1, ":protocol on a GET"
        cases = [(cli.connect_headers("/echo", protocol="chat"), 501),
                 (cli.connect_headers("/index.html"), 502),
                 (base[:-1] + [("sec-websocket-version", "8")], 426),
                 (base[:-1], 426)]
        for headers, want in cases:
            st = cli.open_stream(headers)
            status, hdrs, _ = cli.read_response(st)
            assert status == want, (headers, status, hdrs)
            if want == 426:
                assert hdrs.get("sec-websocket-version") == "13", hdrs
        ws = cli.websocket("/echo")
        ws.send_text("still fine")
        assert ws.recv() == ("text", "still fine")
    finally:
        cli.close()


def test_connect_already_ended(server):
    """An extended CONNECT with END_STREAM (the client will never send a frame): mod_http2
    gives such a stream no input pipe; the session ends at once (1006), the child lives
    and the connection carries on."""
    server.mark_log()
    cli = client(server, "h2c")
    try:
        st = cli.open_stream(cli.connect_headers("/echo"), end_stream=True)
        assert cli.read_response(st)[0] == 200
        server.wait_for_log(SESSION_END.format(plugin="echo", code=1006, by="network",
                                               proto="h2c"))
        ws = cli.websocket("/echo")
        ws.send_text("next")
        assert ws.recv() == ("text", "next")
    finally:
        cli.close()
    server.assert_no_crash()


# ---- traffic -----------------------------------------------------------------------------

SIZES = [0, 1, 125, 126, 65535, 65536, 1 << 20, 16 << 20]


def payloads(n):
    text = ("h2é✓😀" * (n // 6 + 1)).encode()[:n].decode("utf-8", "ignore")
    text += "x" * (n - len(text.encode()))
    return [text, os.urandom(n)]


@pytest.mark.parametrize("transport", ["h2", "h2c"])
@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
def test_echo_sizes(server, transport, deflate):
    """Text and binary messages of 0 B to 16 MiB (the default WebSocketMaxMessageSize)
    come back intact, with and without permessage-deflate."""
    cli = client(server, transport)
    try:
        ws = cli.websocket("/echo", deflate=deflate)
        assert ws.deflate == deflate, ws.stream.headers
        for n in SIZES:
            for msg in payloads(n):
                ws.send(msg)
                got = ws.recv_message(timeout=60)
                assert type(got) is type(msg) and got == msg, \
                    f"{type(msg).__name__} of {n} B not echoed intact"
        assert ws.close_handshake()[0][:2] == ("close", 1000)
    finally:
        cli.close()


def test_server_ping_and_close(server):
    """The server pings an idle h2 WebSocket (WebSocketPingInterval 1) and our pong keeps
    it open; a plugin-initiated close arrives with its code and reason, then the stream
    ends."""
    cli = client(server, "h2")
    try:
        ws = cli.websocket("/pinged")
        assert ws.recv(timeout=5, skip_ping=False)[0] == "ping"
        ws.send_text("after ping")
        assert ws.recv() == ("text", "after ping")
        probe = cli.websocket("/probe")
        assert json.loads(probe.recv_message())["secure"] in (1, True)
        probe.send_text("close:4001:done here")
        assert probe.recv() == ("close", 4001, "done here")
        probe.close(4001)
        assert probe.recv() == ("eof",)
    finally:
        cli.close()


@pytest.mark.parametrize("transport", ["h2", "h2c"])
def test_ten_streams_one_connection(server, transport):
    """10 WebSockets on one h2 connection at once, each echoing its own messages while a
    plugin thread floods one of them (sends through a handle: the blocking driver's wake
    fd)."""
    cli = client(server, transport)
    try:
        warm_up(cli)
        wss = [cli.websocket("/echo", deflate=i % 2 == 1) for i in range(9)]
        probe = cli.websocket("/probe")
        probe.recv_message()
        probe.send_text("flood:200:1000")
        for rnd in range(5):
            for i, ws in enumerate(wss):
                ws.send_text(f"stream {i} round {rnd}")
            for i, ws in enumerate(wss):
                assert ws.recv_message() == f"stream {i} round {rnd}"
        for seq in range(200):
            msg = probe.recv_message()
            assert isinstance(msg, bytes) and len(msg) == 1000
            assert int.from_bytes(msg[:8], "big") == seq
        assert probe.recv_message() == "flood-done:200"
        for ws in wss + [probe]:
            assert ws.close_handshake()[0][:2] == ("close", 1000)
    finally:
        cli.close()


def test_client_reset_ends_only_that_session(server):
    """RST_STREAM on one stream: its session ends with 1006 (the plugin's on_close and the
    session-end line), the other streams and the connection carry on."""
    cli = client(server, "h2")
    try:
        victim = cli.websocket("/probe")
        others = [cli.websocket("/probe") for _ in range(3)]
        for ws in [victim] + others:
            ws.recv_message()
        server.mark_log()
        victim.stream.reset()
        server.wait_for_log(SESSION_END.format(plugin="probe", code=1006, by="network",
                                               proto="h2"))
        for i, ws in enumerate(others):
            ws.send_text(f"alive {i}")
            assert ws.recv_message() == f"alive {i}"
        assert len(re.findall("session end", server.log_since_mark())) == 1
        assert cli.get("/")[0] == 200
        for ws in others:
            assert ws.close_handshake()[0][:2] == ("close", 1000)
    finally:
        cli.close()


def test_connection_dropped_ends_its_sessions(server):
    """The client drops the TCP connection under three h2 WebSockets: each session ends
    with 1006 (closed_by=network); a WebSocket on another connection is untouched."""
    other = client(server, "h2")
    cli = client(server, "h2")
    try:
        bystander = other.websocket("/echo")
        wss = [cli.websocket("/echo") for _ in range(3)]
        for ws in wss:
            ws.send_text("x")
            assert ws.recv_message() == "x"
        server.mark_log()
        cli.sock.shutdown(socket.SHUT_RDWR)
        three = r"(?:[\s\S]*?close=1006 closed_by=network proto=h2\n){3}"
        server.wait_for_log(three)
        bystander.send_text("unaffected")
        assert bystander.recv_message() == "unaffected"
    finally:
        cli.close()
        other.close()


# ---- policy --------------------------------------------------------------------------

@pytest.mark.parametrize("transport", ["h2", "h2c"])
def test_origin_check(server, transport):
    """Same origin, or the configured list; anything else is 403 as on HTTP/1.1."""
    cli = client(server, transport)
    try:
        cli.websocket("/echo", origin=origin(server, transport)).close(1000)
        for path, bad in (("/echo", "https://evil.example"),
                          ("/echo", origin(server, "h2c" if transport == "h2" else "h2")),
                          ("/partner", "https://evil.example")):
            with pytest.raises(HandshakeError) as e:
                cli.websocket(path, origin=bad)
            assert e.value.status == 403, (path, bad)
        cli.websocket("/partner", origin="https://partner.example").close(1000)
    finally:
        cli.close()


def test_require(server):
    """Require all denied is 403, valid-user is 401 without and 200 with credentials,
    and the plugin sees the user."""
    cli = client(server, "h2")
    try:
        for path, headers, want in (("/denied", (), 403), ("/auth", (), 401),
                                    ("/auth", [("authorization", basic("alice", "x"))], 401)):
            with pytest.raises(HandshakeError) as e:
                cli.websocket(path, headers=headers)
            assert e.value.status == want, path
            if want == 401:
                assert "basic" in e.value.headers.get("www-authenticate", "").lower()
        ws = cli.websocket("/auth", headers=[("authorization", basic("alice", "wonderland"))])
        assert json.loads(ws.recv_message())["user"] == "alice"
    finally:
        cli.close()


def test_h2_session_cap_refuses_503(httpd_factory):
    """Past WebSocketH2MaxSessions a child answers 503 with Retry-After (mod_http2 would
    otherwise queue the stream, unanswered, once every h2 worker is held); a slot freed
    is a slot usable."""
    srv = httpd_factory(mpm="event", tls=False, h2=True, locations=[("/echo", "echo")],
                        mpm_settings={"StartServers": 1, "ServerLimit": 1},
                        extra_global="WebSocketH2MaxSessions 2\n")
    cli = client(srv, "h2c")
    try:
        a, b = cli.websocket("/echo"), cli.websocket("/echo")
        srv.mark_log()
        with pytest.raises(HandshakeError) as e:
            cli.websocket("/echo")
        assert e.value.status == 503 and e.value.headers.get("retry-after") == "5"
        srv.wait_for_log(r"WS00080: handshake refused: 2 WebSockets on HTTP/2")
        a.close_handshake()
        c = cli.websocket("/echo")
        for ws in (b, c):
            ws.send_text("ok")
            assert ws.recv_message() == "ok"
            assert ws.close_handshake()[0][:2] == ("close", 1000)
    finally:
        cli.close()


def test_h2_session_cap_auto(httpd_factory):
    """The default cap is H2MaxWorkers less a quarter, read where users put it (here
    inside <IfModule http2_module>): H2MaxWorkers 8 -> 6 h2 WebSockets, the 7th gets 503
    (over two connections: mod_http2 runs 6 streams of a new one at once)."""
    srv = httpd_factory(mpm="event", tls=False, h2=True, locations=[("/echo", "echo")],
                        mpm_settings={"StartServers": 1, "ServerLimit": 1},
                        extra_global="<IfModule http2_module>\n    H2MinWorkers 2\n"
                                     "    H2MaxWorkers 8\n</IfModule>\n")
    clis = [client(srv, "h2c"), client(srv, "h2c")]
    try:
        wss = [clis[i % 2].websocket("/echo") for i in range(6)]
        with pytest.raises(HandshakeError) as e:
            clis[1].websocket("/echo")
        assert e.value.status == 503
        for ws in wss:
            assert ws.close_handshake()[0][:2] == ("close", 1000)
    finally:
        for cli in clis:
            cli.close()
    assert "WS00080: handshake refused: 6 WebSockets" in srv.error_log_text()


@pytest.mark.parametrize("value,ok", [("auto", True), ("1", True), ("500", True),
                                      ("0", False), ("-3", False), ("many", False)])
def test_h2_session_cap_directive(tmp_path, value, ok):
    """WebSocketH2MaxSessions takes a count of 1 or more or auto; apache2 -t refuses
    anything else, and the H2 lines of the demo are accepted by Debian's httpd."""
    cfg = genconf.make_config(tmp_path, free_port(), None, "event", h2=True,
                              extra_global=f"WebSocketH2MaxSessions {value}\n")
    rc, out = configtest(cfg.conf)
    assert (rc == 0) == ok, out
    if not ok:
        assert "WebSocketH2MaxSessions" in out, out


def test_wsconform_over_h2(server):
    """The echo conformance cases (tests/conformance/wsconform.py) with each WebSocket on
    an h2 stream: no case FAILED, over h2 and h2c."""
    for url, extra in ((server.wss_url("/echo"), ["--cafile", server.cert]),
                       (server.ws_url("/echo"), [])):
        p = subprocess.run([sys.executable, WSCONFORM_H2, url, "--timeout", "5"] + extra,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=300)
        summary = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
        bad = [ln for ln in p.stdout.splitlines() if re.match(r"\S+\s+FAILED ", ln)]
        assert p.returncode == 0 and not bad, f"{url}:\n" + "\n".join(bad) + p.stderr[-3000:]
        m = re.match(r"(\d+) passed, 0 failed", summary)
        assert m and int(m.group(1)) >= 150, summary


def test_chromium_uses_rfc8441(server):
    """Chromium loads the echo page over h2 and opens the page's wss WebSocket: it goes
    over a stream of that h2 connection (RFC 8441), which only the server's session-end
    line shows (proto=h2, not proto=http/1.1).  (Headless Chromium with
    --ignore-certificate-errors, tests/browser/lib.mjs.)"""
    node = shutil.which("node")
    assert node and os.access(CHROMIUM, os.X_OK), "node or chromium missing: make deps"
    server.mark_log()
    p = subprocess.run([node, BROWSER_H2, server.https_url("/")], cwd=REPO,
                       env=dict(os.environ, CHROMIUM=CHROMIUM), stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=120)
    report = f"{p.stdout}\n{p.stderr}"
    assert p.returncode == 0 and "page protocol: h2" in p.stdout, report
    line = server.wait_for_log(r"WS00040: session end: plugin=echo .*").group(0)
    print(line)
    assert "close=1000 closed_by=client proto=h2" in line, line


def test_graceful_restart_closes_h2_websockets_1001(server):
    """A graceful restart closes every h2 WebSocket of the old children with 1001 (the
    streams end; the h2 connections themselves are mod_http2's), and new ones work.
    (Last in the module: the server restarts.)"""
    clis = [client(server, t) for t in ("h2", "h2c")]
    try:
        for cli in clis:
            warm_up(cli, 12)
        wss = [cli.websocket("/echo") for cli in clis for _ in range(4)]
        for ws in wss:
            ws.send_text("before")
            assert ws.recv_message() == "before"
        server.mark_log()
        server.proc.send_signal(signal.SIGUSR1)
        for ws in wss:
            ev = ws.recv(timeout=20)
            assert ev[:2] == ("close", 1001), ev
        server.wait_for_log(r"resuming normal operations", 15)
    finally:
        for cli in clis:
            cli.close()
    cli = client(server, "h2")
    try:
        ws = cli.websocket("/echo")
        ws.send_text("after")
        assert ws.recv_message() == "after"
    finally:
        cli.close()
