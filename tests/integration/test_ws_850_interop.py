"""Interoperability: the same echo script with every common client library, over ws and
wss, with and without permessage-deflate.

The script: text, UTF-8 text, an empty message, 70 KB of text, 256 bytes of binary,
1 MiB of random binary, 1 MB of compressible text (each echo compared with what was
sent), a ping answered with the same payload, and a close with code 4000 and reason
"bye ✓" that the server answers with the same code and reason.

Clients: Python websockets, aiohttp, tornado, websocket-client (in this process),
Node's `ws` and Node's built-in WebSocket (node --experimental-websocket; subprocesses
running tests/integration/node/interop.mjs) and Chromium (one browser for its four
combinations, tests/browser/interop.test.mjs, the same script evaluated in a page).

"deflate": the client offers permessage-deflate and it must be negotiated; "plain":
nothing is negotiated.  Clients that always offer it (Chromium, Node's built-in) get
"plain" from a location with `WebSocketCompression off`; websocket-client has no
permessage-deflate, so it has no "deflate" combination.  What a client's API cannot do
is listed in CAPS (the WHATWG WebSocket has no ping; aiohttp does not expose the
received close reason) and checked as far as it can be.

A client bug gets pytest.mark.xfail(strict=True) with its reason (docs/clients.md):
tornado 6.2 drops extension parameters without a value, so against a location that
asks for client_no_context_takeover (`WebSocketCompressionContextTakeover off`) its
second compressed message fails; the default configuration lets it keep its context.

One httpd (event MPM) for the module.
"""

import asyncio
import json
import os
import random
import shutil
import subprocess

import aiohttp
import pytest
import tornado.httpclient
import tornado.websocket
import websocket as wsclient     # websocket-client (python3-websocket)
import websockets

from wsutil import NODE_DIR, run

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BROWSER_DIR = os.path.join(REPO, "tests", "browser")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

LOCATIONS = [
    ("/echo", "echo"),
    {"path": "/plain", "plugin": "echo", "extra": "WebSocketCompression off\n"},
    {"path": "/nct", "plugin": "echo",
     "extra": "WebSocketCompressionContextTakeover off\n"},
]

WORDS = "the quick brown fox jumps over the lazy dog; mod_websocket permessage-deflate café ✓ "
CLOSE = (4000, "bye ✓")
PING = b"ping-850"


def script_messages():
    rnd = random.Random(850)
    return [
        ("text", "hello"),
        ("utf8", "héllo wörld ✓ 🚀 日本語 ǅ"),
        ("empty", ""),
        ("70KB text", "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(70000))),
        ("binary", bytes(range(256))),
        ("1MiB binary", rnd.randbytes(1 << 20)),
        ("1MB compressible text", (WORDS * (1000000 // len(WORDS) + 1))[:1000000]),
    ]


MESSAGES = script_messages()


# ---- Python clients: one adapter each, one script for all -------------------------------

class PyWebsockets:
    async def open(self, url, ssl, deflate):
        self.ws = await websockets.connect(url, ssl=ssl, max_size=None, ping_interval=None,
                                           compression="deflate" if deflate else None,
                                           open_timeout=10, close_timeout=10)
        return self.ws.response_headers.get("Sec-WebSocket-Extensions", "")

    async def send(self, m):
        await self.ws.send(m)

    async def recv(self):
        return await self.ws.recv()

    async def ping(self, data):
        await (await self.ws.ping(data))
        return data                      # the waiter resolves on the matching pong

    async def close(self, code, reason):
        await self.ws.close(code, reason)
        return self.ws.close_code, self.ws.close_reason


class PyAiohttp:
    async def open(self, url, ssl, deflate):
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(url, ssl=ssl if ssl else None,
                                                compress=15 if deflate else 0,
                                                autoping=False, max_msg_size=0)
        return "permessage-deflate" if self.ws.compress else ""

    async def send(self, m):
        await (self.ws.send_bytes(m) if isinstance(m, bytes) else self.ws.send_str(m))

    async def recv(self):
        msg = await self.ws.receive()
        assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
        return msg.data

    async def ping(self, data):
        await self.ws.ping(data)
        msg = await self.ws.receive()
        assert msg.type == aiohttp.WSMsgType.PONG, msg
        return msg.data

    async def close(self, code, reason):
        try:
            await self.ws.close(code=code, message=reason.encode())
            return self.ws.close_code, None     # aiohttp keeps only the received code
        finally:
            await self.session.close()


class PyTornado:
    async def open(self, url, ssl, deflate):
        req = tornado.httpclient.HTTPRequest(url, ssl_options=ssl) if ssl else url
        self.ws = await tornado.websocket.websocket_connect(
            req, compression_options={} if deflate else None, max_message_size=1 << 26)
        return self.ws.headers.get("Sec-WebSocket-Extensions", "")

    async def send(self, m):
        await self.ws.write_message(m, binary=isinstance(m, bytes))

    async def recv(self):
        m = await self.ws.read_message()
        assert m is not None, f"closed: {self.ws.close_code} {self.ws.close_reason}"
        return m

    async def ping(self, data):
        pong = asyncio.get_running_loop().create_future()
        self.ws.on_pong = lambda d: pong.done() or pong.set_result(d)
        self.ws.ping(data)
        return await pong

    async def close(self, code, reason):
        self.ws.close(code, reason)
        while await self.ws.read_message() is not None:
            pass
        return self.ws.close_code, self.ws.close_reason


class PyWebsocketClient:
    """websocket-client is synchronous: each call runs in a worker thread."""

    async def open(self, url, ssl, deflate):
        assert not deflate, "websocket-client has no permessage-deflate"
        sslopt = {"context": ssl} if ssl else None
        # no Origin: websocket-client 1.2 sends http://HOST for wss too (not same origin)
        self.ws = await asyncio.to_thread(wsclient.create_connection, url, timeout=30,
                                          sslopt=sslopt, suppress_origin=True)
        return self.ws.getheaders().get("sec-websocket-extensions", "")

    async def send(self, m):
        await asyncio.to_thread(self.ws.send_binary if isinstance(m, bytes) else self.ws.send, m)

    async def recv(self):
        return await asyncio.to_thread(self.ws.recv)

    async def ping(self, data):
        await asyncio.to_thread(self.ws.ping, data)
        op, frame = await asyncio.to_thread(self.ws.recv_data_frame, True)
        assert op == wsclient.ABNF.OPCODE_PONG, op
        return frame.data

    async def close(self, code, reason):
        await asyncio.to_thread(self.ws.send_close, code, reason.encode())
        op, frame = await asyncio.to_thread(self.ws.recv_data_frame, True)
        assert op == wsclient.ABNF.OPCODE_CLOSE, op
        self.ws.shutdown()
        return int.from_bytes(frame.data[:2], "big"), frame.data[2:].decode()


async def echo_script(client, url, ssl, deflate):
    """Run the script; return the client-visible result like interop.mjs does."""
    r = {"steps": [], "ping": None}
    r["extensions"] = await client.open(url, ssl, deflate)
    for name, m in MESSAGES:
        await client.send(m)
        got = await asyncio.wait_for(client.recv(), 30)
        assert type(got) is type(m), f"{name}: {type(got).__name__} back"
        assert got == m, f"{name}: the echo differs ({len(got)} of {len(m)})"
        r["steps"].append(name)
    assert await asyncio.wait_for(client.ping(PING), 10) == PING
    r["steps"].append("ping")
    r["ping"] = "ok"
    r["close"] = await asyncio.wait_for(client.close(*CLOSE), 10)
    return r


PY_CLIENTS = {"websockets": PyWebsockets, "aiohttp": PyAiohttp, "tornado": PyTornado,
              "websocket-client": PyWebsocketClient}


# ---- Node and Chromium ------------------------------------------------------------------

def node_script(server, client, transport, path, deflate):
    cfg = {"client": client, "url": server.url(transport, path), "deflate": deflate,
           "ca": server.cert if transport == "wss" else None, "deadline_ms": 60000}
    cmd = ["node"] + (["--experimental-websocket", "--no-warnings"] if client == "builtin"
                      else []) + [os.path.join(NODE_DIR, "interop.mjs"), json.dumps(cfg)]
    env = dict(os.environ, NODE_EXTRA_CA_CERTS=server.cert)
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       env=env, timeout=90)
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    assert lines, f"{' '.join(cmd[:-1])}: no result (exit {p.returncode})\n{p.stderr[-2000:]}"
    return json.loads(lines[-1])


@pytest.fixture(scope="module")
def chromium_results(server):
    """All four Chromium combinations in one browser: {(transport, variant): result}."""
    node = shutil.which("node")
    assert node, "node is not installed: run `make deps`"
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: run `make deps`"
    assert os.path.exists(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")), \
        "playwright-core is not installed: run `bash tests/browser/install.sh`"
    combos = []
    for transport in ("ws", "wss"):
        scheme = "https" if transport == "wss" else "http"
        for variant, path in (("deflate", "/echo"), ("plain", "/plain")):
            combos.append({"name": f"{transport}-{variant}", "page": server.url(scheme, "/"),
                           "url": server.url(transport, path)})
    p = subprocess.run([node, os.path.join(BROWSER_DIR, "interop.test.mjs"), json.dumps(combos)],
                       cwd=REPO, env=dict(os.environ, CHROMIUM=CHROMIUM),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)
    results = {}
    for line in p.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            results[tuple(r["name"].split("-"))] = r
    assert len(results) == 4, f"interop.test.mjs (exit {p.returncode}):\n{p.stdout}\n{p.stderr}"
    return results


# ---- the matrix -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(httpd_factory):
    return httpd_factory(mpm="event", tls=True, locations=LOCATIONS)


# What a client's API cannot do (not bugs): the step is checked as far as it can be.
CAPS = {
    "node-builtin": {"ping": "the WHATWG WebSocket API has no ping()"},
    "chromium": {"ping": "the WHATWG WebSocket API has no ping()"},
    "aiohttp": {"close reason": "aiohttp keeps only the received close code"},
}

# Clients that always offer permessage-deflate: "plain" comes from /plain.
ALWAYS_OFFERS = {"node-builtin", "chromium"}

MATRIX = [(c, v) for c in ["websockets", "aiohttp", "tornado", "websocket-client", "node-ws",
                           "node-builtin", "chromium"]
          for v in ("deflate", "plain") if not (c == "websocket-client" and v == "deflate")]


def run_client(server, client, transport, variant, path=None):
    path = path or ("/plain" if variant == "plain" and client in ALWAYS_OFFERS else "/echo")
    deflate = variant == "deflate"
    if client in PY_CLIENTS:
        ssl = server.ssl_context() if transport == "wss" else None
        return run(echo_script(PY_CLIENTS[client](), server.url(transport, path), ssl,
                               deflate), timeout=60)
    r = node_script(server, "ws" if client == "node-ws" else "builtin", transport, path,
                    deflate)
    assert r["ok"], r
    r["close"] = (r["close"]["code"], r["close"]["reason"])
    return r


def check_result(client, variant, r):
    assert r["steps"][:len(MESSAGES)] == [name for name, _ in MESSAGES], r
    if "ping" in CAPS.get(client, {}):
        assert r["ping"] == "n/a", r
    else:
        assert r["ping"] == "ok", r
    code, reason = r["close"]
    assert code == CLOSE[0], r["close"]
    if "close reason" not in CAPS.get(client, {}):
        assert reason == CLOSE[1], r["close"]
    ext = r["extensions"] or ""
    if variant == "deflate":
        assert ext.startswith("permessage-deflate"), ext
    else:
        assert "permessage-deflate" not in ext, ext


@pytest.mark.parametrize("client,variant", MATRIX)
def test_interop(server, transport, client, variant, request):
    if client == "chromium":
        r = request.getfixturevalue("chromium_results")[(transport, variant)]
        assert r["ok"], r
        r["close"] = (r["close"]["code"], r["close"]["reason"])
    else:
        r = run_client(server, client, transport, variant)
    check_result(client, variant, r)


# ---- known client bugs ------------------------------------------------------------------

class KnownClientBug(Exception):
    """The failure a known client bug causes (and no other)."""


@pytest.mark.xfail(strict=True, raises=KnownClientBug, reason=(
    "tornado 6.2 drops extension parameters without a value (client_no_context_takeover), "
    "keeps its compression context and its second compressed message refers back into "
    "a window the server did not keep: 1007 (docs/clients.md)"))
def test_tornado_with_client_no_context_takeover(server, transport):
    try:
        r = run_client(server, "tornado", transport, "deflate", path="/nct")
    except AssertionError as e:
        if "closed: 1007 invalid compressed data" in str(e):
            raise KnownClientBug(str(e)) from e
        raise
    check_result("tornado", "deflate", r)


def test_tornado_quirk_is_the_parameter(server):
    """The xfail above fails for the documented reason: /nct answers tornado's offer with
    client_no_context_takeover, which tornado does not see."""
    async def go():
        ws = await tornado.websocket.websocket_connect(server.url("ws", "/nct"),
                                                       compression_options={})
        ext = ws.headers.get("Sec-WebSocket-Extensions", "")
        ws.close()
        return ext
    assert "client_no_context_takeover" in run(go())
