"""permessage-deflate (RFC 7692) against a real httpd.

  - Python `websockets` (10.4) with every kind of offer, against the default location
    and one with `WebSocketCompressionContextTakeover on`: the 101's
    Sec-WebSocket-Extensions parameters are checked exactly, and text and binary
    messages of every size class (up to 16 MiB - 1 KiB), compressible and random, come
    back intact; the frames the server sends are compressed (RSV1) exactly when a
    message reaches WebSocketCompressionThreshold (64).
  - WebSocketCompressionWindowBits 8/9: the response limits both directions, and the
    server's own compressed frames never reach back past the agreed window (checked by
    inflating with a window of exactly that size, a few bytes at a time).
  - Node's `ws` (node/deflate.js), default and explicit perMessageDeflate options.
  - Negotiation edge cases over raw handshakes: malformed, duplicate, unknown parameters
    decline that offer (still a 101, without the extension); a bad first offer falls
    through to the second; `WebSocketCompression off`; RSV1 without negotiation, on a
    continuation or on a control frame -> 1002.
  - Bounded inflation: a 1 GiB deflate bomb (about 1 MB on the wire) gets 1009 while
    the server's memory (VmHWM/VmRSS of its children) grows by no more than
    BOMB_RSS_BOUND; the limit is exact at the byte; invalid compressed data and
    compressed text that inflates to invalid UTF-8 -> 1007.
  - A shorter run on prefork for the blocking driver.

Everything runs on the event MPM over ws and wss unless noted.
"""

import os
import random
import struct
import threading
import zlib

import pytest
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from rawws import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_TEXT, RawWS, accept_for,
                   close_payload, expect_code, new_key)
from support import SANITIZED, children, proc_status_kb
from wsutil import connect, recv, run, run_node

KiB = 1024
MiB = 1024 * 1024
DEFAULT_MAX = 16 * MiB
SMALL = 65536
THRESHOLD = 64
TAIL = b"\x00\x00\xff\xff"

# The sizes of test 1: around the threshold, every frame length class, and the largest
# message that fits the default WebSocketMaxMessageSize with room to spare.
SIZES = [0, 1, 63, 64, KiB, 64 * KiB, MiB]
BIG = 16 * MiB - KiB

LOCATIONS = [
    ("/echo", "echo"),
    {"path": "/ct", "plugin": "echo", "extra": "WebSocketCompressionContextTakeover on\n"},
    {"path": "/off", "plugin": "echo", "extra": "WebSocketCompression off\n"},
    {"path": "/wb9", "plugin": "echo", "extra": "WebSocketCompressionWindowBits 9\n"},
    {"path": "/wb8", "plugin": "echo",
     "extra": "WebSocketCompressionWindowBits 8\nWebSocketCompressionContextTakeover on\n"},
    {"path": "/small", "plugin": "echo", "max_message_size": SMALL},
]

# What each location answers with: (window bits, context takeover allowed).  "default"
# (WebSocketCompressionContextTakeover not set): allowed with a client window of at most
# 12 bits, so only for clients that offer client_max_window_bits.
POLICY = {"/echo": (15, "default"), "/ct": (15, True), "/wb9": (9, "default"),
          "/wb8": (8, True), "/small": (15, "default")}
DEFAULT_CLIENT_WINDOW = 12


@pytest.fixture(scope="module")
def server(httpd_factory):
    return httpd_factory(mpm="event", tls=True, locations=LOCATIONS)


@pytest.fixture(scope="module")
def prefork(httpd_factory):
    # 6 children: the bomb test holds two connections (canary and bomb) and prefork must
    # not fork more children in the middle of a memory measurement (with 4, in a full
    # make check-asan run, prefork once forked a fifth).
    return httpd_factory(mpm="prefork", tls=False, locations=LOCATIONS,
                         mpm_settings={"StartServers": 6, "MinSpareServers": 1,
                                       "MaxSpareServers": 150})


# ---- content ----------------------------------------------------------------------------

WORDS = ("the quick brown fox jumps over lazy dog mod_websocket permessage deflate "
         "Übergrößenträger naïve café 2024 € ✓ 🚀 日本語 {\"id\": 42, \"ok\": true}").split()


def _utf8_random(n):
    """n bytes of valid UTF-8 that deflate cannot do much with: random 2-byte
    characters (U+0080..U+07FF: lead bytes C2..DF, any continuation byte), one ASCII
    byte to pad an odd n."""
    r = os.urandom(n & ~1)
    out = bytearray(n)
    out[0:n & ~1:2] = r[0::2].translate(_LEAD)
    out[1:n & ~1:2] = r[1::2].translate(_CONT)
    if n & 1:
        out[-1] = 0x41
    return bytes(out)


_LEAD = bytes(0xC2 + (i % 30) for i in range(256))
_CONT = bytes(0x80 + (i & 0x3F) for i in range(256))


def _compressible_block():
    rnd = random.Random(7692)
    words = []
    size = 0
    while size < 4000:
        w = rnd.choice(WORDS)
        words.append(w)
        size += len(w.encode()) + 1
    return (" ".join(words) + "\n").encode()


_BLOCK = _compressible_block()


def payload(kind, content, n):
    """Exactly n bytes (text: valid UTF-8) of compressible or random content."""
    if content == "random":
        data = os.urandom(n) if kind == "binary" else _utf8_random(n)
    else:
        data = _BLOCK * (n // len(_BLOCK))
        rest = _BLOCK[:n - len(data)]
        if kind == "text":      # cut on a character boundary, pad with ASCII
            rest = rest.decode("utf-8", "ignore").encode()
            rest += b"x" * (n - len(data) - len(rest))
        data += rest
    assert len(data) == n
    return data.decode() if kind == "text" else data


def messages(sizes):
    return [(kind, content, n) for n in sizes for kind in ("text", "binary")
            for content in ("compressible", "random")]


# ---- Sec-WebSocket-Extensions -----------------------------------------------------------

def parse_extensions(value):
    """'permessage-deflate; a; b=9' -> ('permessage-deflate', {'a': None, 'b': '9'}).
    Asserts exactly one extension and no duplicate parameter."""
    assert value is not None, "no Sec-WebSocket-Extensions in the 101"
    assert "," not in value, f"more than one extension accepted: {value!r}"
    name, *params = [p.strip() for p in value.split(";")]
    out = {}
    for p in params:
        k, eq, v = p.partition("=")
        k = k.strip().lower()
        assert k not in out, f"duplicate parameter {k} in {value!r}"
        out[k] = v.strip().strip('"') if eq else None
    return name.lower(), out


def expected_params(location, server_nct=False, client_nct=False, server_bits=None,
                    client_bits=None):
    """The response the README promises for an offer.  client_bits: None (not offered),
    True (offered without a value) or 8..15."""
    wbits, takeover = POLICY[location]
    cwbits = wbits
    if takeover == "default":
        takeover, cwbits = True, min(wbits, DEFAULT_CLIENT_WINDOW)
    p = {"server_no_context_takeover": None}         # always
    if client_nct or not takeover or (client_bits is None and cwbits < 15):
        # asked unless ContextTakeover on; also when the client's window cannot be
        # limited to ours
        p["client_no_context_takeover"] = None
    if server_bits is not None:
        p["server_max_window_bits"] = str(min(server_bits, wbits))
    elif wbits < 15:
        p["server_max_window_bits"] = str(wbits)
    if client_bits is not None:
        p["client_max_window_bits"] = str(cwbits if client_bits is True
                                          else min(client_bits, cwbits))
    return p


# ---- Python websockets ------------------------------------------------------------------

# name -> ClientPerMessageDeflateFactory keyword arguments.  websockets offers a bare
# client_max_window_bits unless told otherwise (client_max_window_bits=None).
OFFERS = {
    "default": {},
    "client_nct": {"client_no_context_takeover": True},
    "server_nct": {"server_no_context_takeover": True},
    "no_cmwb": {"client_max_window_bits": None},
    "cmwb9": {"client_max_window_bits": 9},
    "cmwb12": {"client_max_window_bits": 12},
    "cmwb15": {"client_max_window_bits": 15},
    "smwb9": {"server_max_window_bits": 9},
    "smwb12": {"server_max_window_bits": 12},
}


def offer_expectation(location, kw):
    cb = kw.get("client_max_window_bits", True)
    return expected_params(location, server_nct=kw.get("server_no_context_takeover", False),
                           client_nct=kw.get("client_no_context_takeover", False),
                           server_bits=kw.get("server_max_window_bits"), client_bits=cb)


def py_connect(server, transport, path, offer=None, **kw):
    """websockets.connect with one permessage-deflate offer (None: its default one).
    Compression level 1 on our side: the level changes nothing on the wire that matters
    here, and level 6 on 16 MiB of random data costs a second per message."""
    kw.setdefault("ping_interval", None)
    if offer is not None:
        kw["extensions"] = [ClientPerMessageDeflateFactory(
            compress_settings={"level": 1, "memLevel": 5}, **offer)]
        kw["compression"] = None
    return connect(server, transport, path, **kw)


def watch_frames(ws):
    """Record (opcode, rsv1, wire length) of every data frame the server sends, by
    wrapping the negotiated extension's decode()."""
    seen = []
    exts = [e for e in ws.extensions if e.name == "permessage-deflate"]
    assert exts, f"permessage-deflate not active: {ws.extensions}"
    ext = exts[0]
    inner = ext.decode

    def decode(frame, *, max_size=None):
        if frame.opcode in (1, 2, 0):
            seen.append((frame.opcode, frame.rsv1, len(frame.data)))
        return inner(frame, max_size=max_size)

    ext.decode = decode
    return seen


async def roundtrip_all(ws, msgs, seen, server_bits=15):
    for kind, content, n in msgs:
        data = payload(kind, content, n)
        before = len(seen)
        await ws.send(data)
        got = await recv(ws, timeout=60)
        assert type(got) is type(data), f"{kind} {content} {n}: type {type(got)}"
        assert got == data, f"{kind} {content} {n}: echo differs ({len(got)} back)"
        frames = seen[before:]
        assert frames and frames[0][0] == (1 if kind == "text" else 2), frames
        # RSV1 exactly when the message reaches the threshold
        assert frames[0][1] == (n >= THRESHOLD), \
            f"{kind} {content} {n}: RSV1={frames[0][1]}, threshold {THRESHOLD}"
        assert all(not f[1] for f in frames[1:]), f"RSV1 on a continuation: {frames}"
        if content == "compressible" and n >= KiB:
            wire = sum(f[2] for f in frames)
            # the vocabulary block compresses ~3x with small windows, far more with
            # windows that reach back to its previous copy (4 KB); 8 bits: run-length
            # matches only (see ws_deflate.c), so just "smaller"
            factor = (1 if server_bits == 8 else
                      4 if n >= 64 * KiB and server_bits >= 12 else 2)
            assert wire * factor < n, \
                f"{kind} {n} compressible: {wire} bytes on the wire"


def py_roundtrip(server, transport, path, offer, sizes, big=()):
    exp = offer_expectation(path, offer)

    async def go():
        async with py_connect(server, transport, path, offer) as ws:
            name, params = parse_extensions(
                ws.response_headers.get("Sec-WebSocket-Extensions"))
            assert name == "permessage-deflate"
            assert params == exp, f"offer {offer}: got {params}, expected {exp}"
            seen = watch_frames(ws)
            await roundtrip_all(ws, messages(sizes) + list(big), seen,
                                int(params.get("server_max_window_bits", 15)))
            await ws.close()
            assert ws.close_code == 1000
    run(go(), timeout=180)


@pytest.mark.parametrize("path", ["/echo", "/ct"])
@pytest.mark.parametrize("offer", list(OFFERS))
def test_python_offers(server, transport, path, offer):
    """Every offer against both context-takeover settings: every size up to 1 MiB in
    all four kinds, and 16 MiB - 1 KiB compressible text and binary; random text and
    binary of 16 MiB - 1 KiB too (deflate makes them a little larger than the message,
    stored blocks, in both directions) over ws, and over wss for the default offer
    (2 s each: all of them would double this module's time)."""
    big = [("text", "compressible", BIG), ("binary", "compressible", BIG)]
    if transport == "ws" or offer == "default":
        big += [("text", "random", BIG), ("binary", "random", BIG)]
    py_roundtrip(server, transport, path, OFFERS[offer], SIZES, big)


def test_python_default_offer_library_defaults(server, transport):
    """websockets' own default (compression="deflate", memLevel 5, level 6)."""
    async def go():
        async with connect(server, transport, "/echo", ping_interval=None) as ws:
            _, params = parse_extensions(ws.response_headers.get("Sec-WebSocket-Extensions"))
            assert params == expected_params("/echo", client_bits=True), params
            seen = watch_frames(ws)
            await roundtrip_all(ws, messages([0, 63, 64, 64 * KiB]), seen)
    run(go())


@pytest.mark.parametrize("path,offer", [
    ("/wb9", {}), ("/wb9", {"client_max_window_bits": 12}),
    ("/wb9", {"server_max_window_bits": 12}), ("/wb9", {"client_max_window_bits": None}),
    # not client_max_window_bits with /wb8: the answer would be 8, and zlib (so
    # websockets) cannot deflate with a 256-byte window (see the report)
    ("/wb8", {"client_max_window_bits": None}),
    ("/wb8", {"server_max_window_bits": 10, "client_max_window_bits": None}),
])
def test_python_window_bits_directive(server, transport, path, offer):
    """WebSocketCompressionWindowBits limits both directions; the client (websockets)
    inflates with the window from the response, so a server deflating with a larger one
    would fail its inflate."""
    py_roundtrip(server, transport, path, offer, [0, 63, 64, KiB, 64 * KiB, MiB])


def test_context_takeover_client_keeps_window(server, transport):
    """With ContextTakeover on and no client_no_context_takeover, websockets keeps its
    window: the same 16 KiB random message sent again compresses to almost nothing,
    and the server must inflate it from the window it kept."""
    async def go():
        async with py_connect(server, transport, "/ct", {}) as ws:
            _, params = parse_extensions(ws.response_headers.get("Sec-WebSocket-Extensions"))
            assert "client_no_context_takeover" not in params, params
            data = os.urandom(16 * KiB)
            for _ in range(5):
                await ws.send(data)
                assert await recv(ws) == data
    run(go())


# ---- Raw client: compressed frames by hand ----------------------------------------------

def deflate(data, bits=15, level=6, strategy=zlib.Z_DEFAULT_STRATEGY, stream=None):
    """One message's payload per RFC 7692 7.2.1 (sync flush, tail removed)."""
    c = stream or zlib.compressobj(level, zlib.DEFLATED, -bits, 8, strategy)
    z = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert z.endswith(TAIL)
    return z[:-4]


def inflate_strict(data, bits, step=64):
    """Inflate with a window of exactly 2**bits bytes, at most `step` bytes of output
    per inflate call: zlib then rejects ("invalid distance too far back") any
    reference further back than the window plus one step."""
    d = zlib.decompressobj(-bits)
    out = bytearray()
    buf = data + TAIL
    while True:
        chunk = d.decompress(buf, step)
        out += chunk
        buf = d.unconsumed_tail
        if not buf and not chunk:
            break
    return bytes(out)


def raw_open(server, transport, path, offer, timeout=30):
    """A raw connection offering `offer` (a header value, None: no header, or a list of
    header lines); returns (ws, response)."""
    ws = RawWS.connect(server, transport, timeout)
    key = new_key()
    hdrs = [("Host", f"{server.host}:{server.port_for(transport)}"),
            ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]
    if isinstance(offer, str):
        hdrs.append(("Sec-WebSocket-Extensions", offer))
    elif offer:
        hdrs += [("Sec-WebSocket-Extensions", v) for v in offer]
    resp = ws.request("GET", path, hdrs)
    assert resp.status == 101, f"{offer!r}: {resp!r}"
    assert resp.header("Sec-WebSocket-Accept") == accept_for(key)
    return ws, resp


def recv_compressed(ws, timeout=30):
    """The next data message as (opcode, rsv1, payload as sent on the wire)."""
    first = None
    parts = []
    while True:
        f = ws.recv_frame(timeout)
        assert not f.masked
        if f.opcode == OP_CLOSE:
            raise AssertionError(f"close {f.close_code()} {f.payload[2:]!r}")
        if f.opcode in (OP_PING, 0xA):
            continue
        if first is None:
            assert f.opcode in (OP_TEXT, OP_BINARY), f
            assert f.rsv in (0, 4), f
            first = f
        else:
            assert f.opcode == OP_CONT and f.rsv == 0, f
        parts.append(f.payload)
        if f.fin:
            return first.opcode, first.rsv == 4, b"".join(parts)


def assert_compressed_echo(ws, bits=15, client_bits=15, data=None):
    """A compressed message (deflated with client_bits) comes back compressed, within
    the server window `bits`."""
    data = data if data is not None else _BLOCK * 4
    ws.send_frame(OP_BINARY, deflate(data, client_bits), rsv=0x4)
    op, rsv1, wire = recv_compressed(ws)
    assert op == OP_BINARY and rsv1, "the echo of a compressed message was not compressed"
    assert inflate_strict(wire, bits) == data


def assert_plain_echo(ws, negotiated=False, bits=15):
    """An uncompressed message echoes; compressed back only if negotiated."""
    data = b"plain " * 20
    ws.send_frame(OP_TEXT, data)
    op, rsv1, wire = recv_compressed(ws)
    assert (op, rsv1) == (OP_TEXT, negotiated)
    assert (inflate_strict(wire, bits) if rsv1 else wire) == data


@pytest.mark.parametrize("path,offer,server_bits", [
    ("/echo", "permessage-deflate; server_max_window_bits=9", 9),
    ("/echo", "permessage-deflate; server_max_window_bits=10", 10),
    ("/wb9", "permessage-deflate", 9),
    ("/wb8", "permessage-deflate", 8),
    ("/wb8", "permessage-deflate; server_max_window_bits=15", 8),
])
def test_server_window_respected(server, transport, path, offer, server_bits):
    """The server's compressed frames stay within the agreed window: inflated with a
    window of exactly that size, a few bytes at a time.  The content repeats at
    distances 4 KB (too far for these windows), 300 and 100 bytes."""
    ws, resp = raw_open(server, transport, path, offer)
    with ws:
        _, params = parse_extensions(resp.header("Sec-WebSocket-Extensions"))
        assert params.get("server_max_window_bits") == str(server_bits), params
        rnd = os.urandom(300)
        data = (_BLOCK + rnd * 3 + os.urandom(100) * 4 + b"z" * 500) * 8
        for _ in range(2):
            ws.send_frame(OP_BINARY, deflate(data), rsv=0x4)   # client: 15 bits, no ctx
            op, rsv1, wire = recv_compressed(ws)
            # 8 bits: run-length matches only (see ws_deflate.c)
            assert rsv1 and len(wire) < len(data) * (0.9 if server_bits == 8 else 0.5), \
                (rsv1, len(wire))
            assert inflate_strict(wire, server_bits, step=16) == data
        # the parameter really limits: the same message deflated with 15 bits uses
        # references this check rejects (so the check above can fail)
        with pytest.raises(zlib.error):
            inflate_strict(deflate(data, 15), server_bits, step=16)


def test_threshold_and_fragmented_input(server, transport):
    """63 bytes come back uncompressed, 64 compressed; a compressed message split into
    fragments (RSV1 on the first only) and an uncompressed one both echo."""
    ws, _ = raw_open(server, transport, "/echo", "permessage-deflate")
    with ws:
        for n in (0, 63, 64, 65):
            data = b"a" * n
            ws.send_frame(OP_TEXT, deflate(data), rsv=0x4)
            op, rsv1, wire = recv_compressed(ws)
            assert rsv1 == (n >= THRESHOLD), (n, rsv1)
            assert (inflate_strict(wire, 15) if rsv1 else wire) == data
        data = ("fragmentiert ✓ " * 5000).encode()
        z = deflate(data)
        cuts = [0, 1, 2, len(z) // 3, len(z) - 1, len(z)]
        for i in range(len(cuts) - 1):
            ws.send_frame(OP_TEXT if i == 0 else OP_CONT, z[cuts[i]:cuts[i + 1]],
                          fin=(i == len(cuts) - 2), rsv=0x4 if i == 0 else 0)
        op, rsv1, wire = recv_compressed(ws)
        assert op == OP_TEXT and rsv1 and inflate_strict(wire, 15) == data
        # an uncompressed message on a compressing connection is fine
        assert_plain_echo(ws, True)
        # an empty compressed message: 0x00 (an empty stored block), or no bytes at all
        for empty in (b"\x00", b""):
            ws.send_frame(OP_BINARY, empty, rsv=0x4)
            assert recv_compressed(ws) == (OP_BINARY, False, b"")
        ws.send_close(1000)
        assert expect_code(ws, 1000) == b""


def test_client_context_takeover_by_hand(server, transport):
    """/ct keeps the client's window: messages 2 and 3 refer back into message 1."""
    ws, resp = raw_open(server, transport, "/ct", "permessage-deflate; client_max_window_bits")
    with ws:
        _, params = parse_extensions(resp.header("Sec-WebSocket-Extensions"))
        assert params == expected_params("/ct", client_bits=True), params
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        data = os.urandom(8 * KiB)
        sizes = []
        for _ in range(3):
            z = deflate(data, stream=c)
            sizes.append(len(z))
            ws.send_frame(OP_BINARY, z, rsv=0x4)
            op, rsv1, wire = recv_compressed(ws)
            assert inflate_strict(wire, 15) == data
        assert sizes[1] < 100 and sizes[2] < 100, sizes


def test_client_ignoring_no_context_takeover_fails(server, transport):
    """/echo asked for client_no_context_takeover: a client that keeps its window anyway
    sends references the server cannot resolve -> 1007 (never wrong data)."""
    ws, resp = raw_open(server, transport, "/echo", "permessage-deflate")
    with ws:
        _, params = parse_extensions(resp.header("Sec-WebSocket-Extensions"))
        assert "client_no_context_takeover" in params
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        data = os.urandom(8 * KiB)
        ws.send_frame(OP_BINARY, deflate(data, stream=c), rsv=0x4)
        assert recv_compressed(ws)[0] == OP_BINARY
        ws.send_frame(OP_BINARY, deflate(data, stream=c), rsv=0x4)
        expect_code(ws, 1007)


# ---- negotiation edge cases -------------------------------------------------------------

DECLINED = [
    "permessage-deflate; foo",
    "permessage-deflate; foo=1",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
    "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
    "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
    "permessage-deflate; server_no_context_takeover=1",
    "permessage-deflate; client_no_context_takeover=\"x\"",
    "permessage-deflate; server_max_window_bits",
    "permessage-deflate; server_max_window_bits=7",
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits=010",
    "permessage-deflate; client_max_window_bits=0",
    "permessage-deflate; client_max_window_bits=abc",
    "permessage-deflate; client_max_window_bits=1000000000000000000009",
    "permessage-deflate; client_max_window_bits=\"1 0\"",
    "permessage-deflate; client_max_window_bits=\"",
    "permessage-deflate; client_max_window_bits=\"10",
    "permessage-deflate; client_max_window_bits=",
    "permessage-deflate; =10",
    "permessage-deflate;",
    "permessage-deflate;; server_no_context_takeover",
    "permessage-deflate server_no_context_takeover",
    "permessage-deflate; x-webkit; client_max_window_bits",
    "x-webkit-deflate-frame",
    "deflate-frame; no_context_takeover",
    "permessage-deflatex",
    "permessage_deflate",
    "\"permessage-deflate\"",
    "; permessage-deflate",
    "foo; bar=\"permessage-deflate, permessage-deflate\"",
]


@pytest.mark.parametrize("offer", DECLINED)
def test_offer_declined(server, offer):
    """RFC 7692 5/7: an offer with an unknown, duplicate or invalid parameter (or that
    is not permessage-deflate) is declined: a 101 without the extension, and RSV1 is
    then a protocol error."""
    ws, resp = raw_open(server, "ws", "/echo", offer)
    with ws:
        assert not resp.has_header("Sec-WebSocket-Extensions"), resp
        assert_plain_echo(ws)
        ws.send_frame(OP_BINARY, deflate(b"x" * 100), rsv=0x4)
        expect_code(ws, 1002)


ACCEPTED = [
    # (offer header line(s), the accepted parameters, for /echo)
    ("permessage-deflate", expected_params("/echo")),
    ("PerMessage-Deflate; Client_Max_Window_Bits=10; SERVER_NO_CONTEXT_TAKEOVER",
     expected_params("/echo", server_nct=True, client_bits=10)),
    ("permessage-deflate ;client_max_window_bits = \"12\" ; server_max_window_bits=\"11\"",
     expected_params("/echo", server_bits=11, client_bits=12)),
    ("permessage-deflate; client_max_window_bits=\"1\\0\"",   # quoted-pair
     expected_params("/echo", client_bits=10)),
    ("foo, permessage-deflate; client_max_window_bits=9",
     expected_params("/echo", client_bits=9)),
    (", ,permessage-deflate,", expected_params("/echo")),
    # the first offer is bad: the second one is taken, with its own parameters
    ("permessage-deflate; server_max_window_bits=20, "
     "permessage-deflate; client_max_window_bits=11",
     expected_params("/echo", client_bits=11)),
    ("permessage-deflate; foo; client_max_window_bits=9, "
     "permessage-deflate; server_max_window_bits=12",
     expected_params("/echo", server_bits=12)),
    # a comma inside a quoted-string does not end the element
    ("permessage-deflate; client_max_window_bits=\"9, permessage-deflate\", "
     "permessage-deflate",
     expected_params("/echo")),
    # the first acceptable offer wins, not the best one
    ("permessage-deflate; server_max_window_bits=10, permessage-deflate",
     expected_params("/echo", server_bits=10)),
    # several header lines are one list (RFC 7230 3.2.2)
    (["permessage-deflate; bogus", "permessage-deflate; server_max_window_bits=13"],
     expected_params("/echo", server_bits=13)),
    (["x-webkit-deflate-frame", "permessage-deflate; client_no_context_takeover"],
     expected_params("/echo", client_nct=True)),
]


@pytest.mark.parametrize("offer,params", ACCEPTED, ids=range(len(ACCEPTED)))
def test_offer_accepted(server, offer, params):
    ws, resp = raw_open(server, "ws", "/echo", offer)
    with ws:
        name, got = parse_extensions(resp.header("Sec-WebSocket-Extensions"))
        assert name == "permessage-deflate" and got == params, (offer, got)
        bits = int(got.get("server_max_window_bits", 15))
        assert_compressed_echo(ws, bits, int(got.get("client_max_window_bits", 15)))
        assert_plain_echo(ws, True, bits)


def test_compression_off(server, transport):
    """WebSocketCompression off: offers are ignored and RSV1 is a protocol error."""
    ws, resp = raw_open(server, transport, "/off",
                        ["permessage-deflate; client_max_window_bits", "permessage-deflate"])
    with ws:
        assert not resp.has_header("Sec-WebSocket-Extensions"), resp
        data = _BLOCK * 2
        ws.send_frame(OP_TEXT, data)
        assert recv_compressed(ws) == (OP_TEXT, False, data)   # sent back uncompressed
        ws.send_frame(OP_TEXT, deflate(b"y" * 100), rsv=0x4)
        expect_code(ws, 1002)

    async def go():
        async with connect(server, transport, "/off", ping_interval=None) as ws:
            assert ws.response_headers.get("Sec-WebSocket-Extensions") is None
            assert ws.extensions == []
            await ws.send(_BLOCK.decode())
            assert await recv(ws) == _BLOCK.decode()
    run(go())


@pytest.mark.parametrize("path,offer", [("/echo", None), ("/off", "permessage-deflate")])
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
def test_rsv1_without_negotiation(server, transport, path, offer, opcode):
    ws, resp = raw_open(server, transport, path, offer)
    with ws:
        assert not resp.has_header("Sec-WebSocket-Extensions")
        ws.send_frame(opcode, deflate(b"hello " * 20), rsv=0x4)
        expect_code(ws, 1002)


@pytest.mark.parametrize("case", [
    "rsv1_on_continuation", "rsv1_on_ping", "rsv1_on_close", "rsv1_on_pong",
    "rsv2_negotiated", "rsv3_negotiated", "rsv1_on_continuation_of_compressed",
])
def test_rsv_misuse_negotiated(server, transport, case):
    """RFC 7692 6.1: RSV1 only on the first frame of a data message; RSV2/RSV3 stay
    reserved.  Otherwise 1002."""
    ws, _ = raw_open(server, transport, "/echo", "permessage-deflate")
    with ws:
        z = deflate(b"abc" * 100)
        if case == "rsv1_on_continuation":
            ws.send_frame(OP_TEXT, b"abc", fin=False)
            ws.send_frame(OP_CONT, deflate(b"def"), rsv=0x4)
        elif case == "rsv1_on_continuation_of_compressed":
            ws.send_frame(OP_TEXT, z[:5], fin=False, rsv=0x4)
            ws.send_frame(OP_CONT, z[5:], rsv=0x4)
        elif case == "rsv1_on_ping":
            ws.send_frame(OP_PING, b"p", rsv=0x4)
        elif case == "rsv1_on_pong":
            ws.send_frame(0xA, b"p", rsv=0x4)
        elif case == "rsv1_on_close":
            ws.send_frame(OP_CLOSE, close_payload(1000), rsv=0x4)
        elif case == "rsv2_negotiated":
            ws.send_frame(OP_BINARY, z, rsv=0x4 | 0x2)
        else:
            ws.send_frame(OP_BINARY, z, rsv=0x1)
        expect_code(ws, 1002)


# ---- bounded inflation, invalid data ----------------------------------------------------

BOMB_SIZE = 1 << 30
# Server memory allowed above the baseline, at the peak and after the connection:
# WebSocketMaxMessageSize (16 MiB) of inflate output, plus the ~1 MB compressed
# message the parser reassembles, plus ~7 MiB for malloc rounding, arenas and the
# TLS/bucket buffers of one connection.  An unbounded inflater would need 1 GiB.
BOMB_RSS_BOUND = 24 * MiB


@pytest.fixture(scope="module")
def bomb():
    """A message that inflates to 1 GiB of zeros: raw deflate, sync flush, tail removed.
    Z_RLE: the same ~1030:1 ratio as level 9, in a fifth of the time."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_RLE)
    chunk = bytes(8 * MiB)
    out = bytearray()
    for _ in range(BOMB_SIZE // len(chunk)):
        out += c.compress(chunk)
    out += c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    z = bytes(out[:-4])
    assert len(z) < 1100 * 1000, len(z)
    # it really inflates past the limit (check the first 17 MiB only)
    assert len(zlib.decompressobj(-15).decompress(z, DEFAULT_MAX + MiB)) == DEFAULT_MAX + MiB
    return z


class Memory:
    """RSS of a server's children (sum of VmRSS) and its peak during a section: the sum
    of their VmHWM after resetting it through /proc/PID/clear_refs (root only; an upper
    bound of the real peak), and the largest VmRSS sum seen by a thread sampling every
    millisecond meanwhile (anyone)."""

    def __init__(self, srv):
        self.srv = srv
        self.pids = children(srv)
        assert self.pids, "no httpd children"
        self.sampled = 0
        self._stop = None

    def check_same_children(self):
        now = children(self.srv)
        assert now == self.pids, f"httpd children changed: {self.pids} -> {now}"

    def rss(self):
        return sum(proc_status_kb(p, "VmRSS") for p in self.pids) * KiB

    def start_peak(self):
        self.hwm_ok = True
        for p in self.pids:
            try:
                with open(f"/proc/{p}/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                self.hwm_ok = False
        self.sampled = self.rss()
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(0.001):   # a measurement, not synchronization
                self.sampled = max(self.sampled, self.rss())
        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def stop_peak(self):
        self._stop.set()
        self._thread.join()
        hwm = sum(proc_status_kb(p, "VmHWM") for p in self.pids) * KiB if self.hwm_ok else 0
        return max(hwm, self.sampled)


def canary_echo(ws, tag):
    data = f"canary {tag} ".encode() * 10
    ws.send_frame(OP_TEXT, data)
    op, rsv1, wire = recv_compressed(ws)
    assert op == OP_TEXT and (inflate_strict(wire, 15) if rsv1 else wire) == data


def run_bomb(srv, transport, bomb_payload, opcode=OP_BINARY, first=None):
    """Send the bomb on a negotiated connection while a canary connection stays open;
    expect 1009, the memory bound, and both the canary and a new connection echoing.
    first: the baseline of the first bomb on this server (only printed: what glibc keeps
    in each worker thread's arena after a large message adds up, see the report)."""
    mem = Memory(srv)
    canary, _ = raw_open(srv, transport, "/echo", "permessage-deflate")
    with canary:
        canary_echo(canary, "before")
        base = mem.rss()
        mem.start_peak()
        try:
            ws, resp = raw_open(srv, transport, "/echo", "permessage-deflate")
            with ws:
                assert resp.has_header("Sec-WebSocket-Extensions")
                ws.send_frame(opcode, bomb_payload, rsv=0x4)
                reason = expect_code(ws, 1009, timeout=60)
        finally:
            peak = mem.stop_peak()
        canary_echo(canary, "after")
        after = mem.rss()
        mem.check_same_children()
    fresh, _ = raw_open(srv, transport, "/echo", "permessage-deflate")
    with fresh:
        canary_echo(fresh, "new connection")
    first = base if first is None else first
    print(f"\nbomb ({srv.mpm}, {transport}, {'text' if opcode == OP_TEXT else 'binary'}, "
          f"{len(bomb_payload)} bytes -> 1 GiB): baseline {base / MiB:.1f} MiB, "
          f"peak {peak / MiB:.1f} MiB (+{(peak - base) / MiB:.1f}), after close "
          f"{after / MiB:.1f} MiB (+{(after - base) / MiB:.1f}; "
          f"+{(after - first) / MiB:.1f} over the first baseline); "
          f"bound +{BOMB_RSS_BOUND / MiB:.0f} MiB; close reason {reason!r}")
    assert SANITIZED or peak - base <= BOMB_RSS_BOUND, \
        f"peak {(peak - base) / MiB:.1f} MiB above the baseline"
    assert SANITIZED or after - base <= BOMB_RSS_BOUND, \
        f"{(after - base) / MiB:.1f} MiB above the baseline after the bomb"
    return base


@pytest.fixture(scope="module")
def bomb_server(httpd_factory):
    """A server of its own: the other tests' 16 MiB messages leave hundreds of MiB
    allocated-but-free in the children, which would hide what a bomb costs."""
    return httpd_factory(mpm="event", tls=True, locations=[("/echo", "echo")])


def test_deflate_bomb(bomb_server, bomb):
    """ws, wss, and as text (zeros are valid UTF-8) on one fresh server."""
    first = run_bomb(bomb_server, "ws", bomb)
    run_bomb(bomb_server, "wss", bomb, first=first)
    run_bomb(bomb_server, "ws", bomb, OP_TEXT, first=first)


def test_limit_is_exact(server, transport):
    """/small (WebSocketMaxMessageSize 65536): inflating to exactly the limit is fine,
    one byte more is 1009; the wire size does not matter (a few hundred bytes here)."""
    ws, _ = raw_open(server, transport, "/small", "permessage-deflate")
    with ws:
        for opcode in (OP_TEXT, OP_BINARY):
            data = b"L" * SMALL
            ws.send_frame(opcode, deflate(data), rsv=0x4)
            op, rsv1, wire = recv_compressed(ws)
            assert op == opcode and inflate_strict(wire, 15) == data
        ws.send_frame(OP_BINARY, deflate(b"L" * (SMALL + 1)), rsv=0x4)
        expect_code(ws, 1009)


def stored_block(data, final=False):
    """One stored DEFLATE block (RFC 1951 3.2.4), byte-aligned."""
    n = len(data)
    return bytes([1 if final else 0]) + struct.pack("<HH", n, n ^ 0xFFFF) + data


@pytest.mark.parametrize("path,offer", [
    ("/echo", "permessage-deflate"),                       # client_no_context_takeover
    ("/ct", "permessage-deflate; client_max_window_bits"),  # the window carries over
])
def test_stored_blocks(server, transport, path, offer):
    """Messages made of stored blocks, as encoders emit for data they cannot compress:
    a non-final stored block without zlib's empty block after it (the payload ends at a
    block boundary), several of them, a final one, and one of 60000 random bytes; each
    is echoed, and with context takeover a later message can still refer back."""
    ws, _ = raw_open(server, transport, path, offer)
    with ws:
        rnd = os.urandom(60000)
        cases = [(stored_block(b"Hello"), b"Hello"),
                 (stored_block(b"ab") + stored_block(b"cd") + stored_block(b""), b"abcd"),
                 (stored_block(b"final", final=True), b"final"),
                 (stored_block(rnd), rnd),
                 (deflate(b"mixed " * 100) + TAIL + stored_block(b" and stored"),
                  b"mixed " * 100 + b" and stored")]
        for wire, data in cases:
            for opcode in ((OP_BINARY,) if data is rnd else (OP_TEXT, OP_BINARY)):
                ws.send_frame(opcode, wire, rsv=0x4)
                op, rsv1, back = recv_compressed(ws)
                assert op == opcode and (inflate_strict(back, 15) if rsv1 else back) == data
        if path == "/ct":
            # the last message ended with " and stored": refer back into it
            c = zlib.compressobj(6, zlib.DEFLATED, -15, zdict=b"mixed  and stored")
            z = deflate(b"and stored", stream=c)
            assert len(z) < 8, z                        # a back reference
            ws.send_frame(OP_BINARY, z, rsv=0x4)
            assert recv_compressed(ws) == (OP_BINARY, False, b"and stored")
        ws.send_close(1000)
        expect_code(ws, 1000)


def _invalid(case):
    if case == "stops_inside_block":
        z = deflate(os.urandom(3000) + bytes(3000))
        return z[:len(z) // 2]
    if case == "distance_too_far":
        # valid DEFLATE, but deflated against a preset dictionary the server lacks:
        # its matches point before the start of the message
        c = zlib.compressobj(6, zlib.DEFLATED, -15, zdict=b"dictionary words " * 50)
        return deflate(b"dictionary words " * 20, stream=c)
    return INVALID[case]


INVALID = {
    "reserved_block_type": b"\xff\xff\xff\xff",
    "bad_stored_length": b"\x00\x05\x00\x00\x00abc",     # LEN != ~NLEN
    "distance_too_far": None,                            # refers to a dictionary
    "stops_inside_block": None,
    "garbage": bytes(range(256)) * 4,
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_compressed_data(server, transport, case):
    data = _invalid(case)
    ws, _ = raw_open(server, transport, "/echo", "permessage-deflate")
    with ws:
        assert_compressed_echo(ws)
        ws.send_frame(OP_BINARY, data, rsv=0x4)
        expect_code(ws, 1007)


@pytest.mark.parametrize("case", ["at_start", "after_100k", "truncated_at_end",
                                  "surrogate", "overlong", "fragmented"])
def test_compressed_text_invalid_utf8(server, transport, case):
    good = ("gültig ✓ " * 10000).encode()
    bad = {"at_start": b"\xc3\x28" + good,
           "after_100k": good[:100000] + b"\xff" + good,
           "truncated_at_end": good + b"\xe2\x82",
           "surrogate": good[:5000] + b"\xed\xa0\x80" + good[:5000],
           "overlong": b"\xc0\xaf" + b"abc" * 50,
           "fragmented": b"x" * 1000 + b"\xf0\x9f\x98" + b"y"}[case]
    ws, _ = raw_open(server, transport, "/echo", "permessage-deflate")
    with ws:
        # the same bytes as binary are fine
        ws.send_frame(OP_BINARY, deflate(bad), rsv=0x4)
        op, rsv1, wire = recv_compressed(ws)
        assert inflate_strict(wire, 15) == bad
        z = deflate(bad)
        if case == "fragmented":
            ws.send_frame(OP_TEXT, z[:3], fin=False, rsv=0x4)
            ws.send_frame(OP_CONT, z[3:])
        else:
            ws.send_frame(OP_TEXT, z, rsv=0x4)
        expect_code(ws, 1007)


def test_bad_compressed_data_does_not_hurt_others(server, transport):
    """Many failing connections in a row (1007, 1009, 1002) and a healthy one open
    through all of them: each failure is only its connection's."""
    keep, _ = raw_open(server, transport, "/echo", "permessage-deflate")
    with keep:
        for i in range(10):
            ws, _ = raw_open(server, transport, "/small", "permessage-deflate")
            with ws:
                kind = i % 3
                if kind == 0:
                    ws.send_frame(OP_BINARY, b"\xff" * 50, rsv=0x4)
                elif kind == 1:
                    ws.send_frame(OP_BINARY, deflate(bytes(SMALL * 4)), rsv=0x4)
                else:
                    ws.send_frame(OP_PING, b"", rsv=0x4)
                expect_code(ws, (1007, 1009, 1002)[kind])
            canary_echo(keep, str(i))


# ---- Node ws ----------------------------------------------------------------------------

NODE_MSGS = [{"type": t, "content": c, "size": n}
             for n in (0, 63, 64, 1000, 65536, MiB, BIG)
             for t, c in (("text", "compressible"), ("binary", "random"))] + \
            [{"type": "binary", "content": "compressible", "size": BIG},
             {"type": "text", "content": "random", "size": MiB}]


@pytest.mark.parametrize("variant", ["default", "explicit"])
def test_node_ws(server, transport, variant):
    if variant == "default":
        pmd = True
        exp = expected_params("/echo", client_bits=True)
    else:
        pmd = {"clientNoContextTakeover": True, "serverNoContextTakeover": True,
               "serverMaxWindowBits": 10, "clientMaxWindowBits": 10, "threshold": 0}
        exp = expected_params("/echo", server_nct=True, client_nct=True, server_bits=10,
                              client_bits=10)
    cfg = {"url": server.url(transport, "/echo"),
           "ca": server.cert if transport == "wss" else None,
           "perMessageDeflate": pmd, "messages": NODE_MSGS, "deadline_ms": 100000}
    r = run_node("deflate.js", cfg, timeout=120)
    assert r["ok"], r
    name, params = parse_extensions(r["extensions"])
    assert name == "permessage-deflate" and params == exp, r["extensions"]
    assert r["negotiated"] == "permessage-deflate", r
    assert r["echoed"] == len(NODE_MSGS) and r["code"] == 1000, r


# ---- prefork: the blocking driver -------------------------------------------------------

def test_prefork_blocking_driver(prefork, bomb):
    """The same codec under the blocking driver: the bomb's memory bound (first, on
    fresh children), negotiation, round trips of every size (Python websockets),
    1002/1007/1009."""
    run_bomb(prefork, "ws", bomb)
    py_roundtrip(prefork, "ws", "/echo", OFFERS["default"], SIZES,
                 [("text", "compressible", BIG), ("binary", "random", BIG)])
    py_roundtrip(prefork, "ws", "/ct", OFFERS["cmwb9"], [0, 64, 64 * KiB])
    ws, _ = raw_open(prefork, "ws", "/echo", "permessage-deflate; server_max_window_bits=9")
    with ws:
        assert_compressed_echo(ws, 9)
        ws.send_frame(OP_BINARY, INVALID["reserved_block_type"], rsv=0x4)
        expect_code(ws, 1007)
    ws, _ = raw_open(prefork, "ws", "/echo", "permessage-deflate")
    with ws:
        ws.send_frame(OP_TEXT, deflate(b"\xc3\x28 bad"), rsv=0x4)
        expect_code(ws, 1007)
    ws, _ = raw_open(prefork, "ws", "/off", "permessage-deflate")
    with ws:
        ws.send_frame(OP_TEXT, deflate(b"x" * 100), rsv=0x4)
        expect_code(ws, 1002)
    log = prefork.error_log_text()
    assert "driver=blocking" in log and "driver=async" not in log, log[-2000:]
