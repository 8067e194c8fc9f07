"""Framing (RFC 6455 5 and 7) with a raw client: valid traffic and every kind of
malformed input, over ws and wss, on every MPM.  A failed connection must end with the
one close code the module answers and nothing else: no echo of the offending message
(rawws.expect_code fails on any data frame before the close frame)."""

import os
import struct

import pytest

from rawws import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawWS,
                   build_frame, close_payload, expect_code)
from support import mpm_server

SMALL = 65536
DEFAULT_MAX = 16 * 1024 * 1024

LOCATIONS = [
    ("/echo", "echo"),
    {"path": "/small", "plugin": "echo", "max_message_size": SMALL},
]


server = mpm_server(LOCATIONS)


@pytest.fixture
def ws(server, transport):
    with RawWS.open(server, transport, "/echo") as conn:
        yield conn


@pytest.fixture
def small(server, transport):
    with RawWS.open(server, transport, "/small") as conn:
        yield conn


def assert_still_echoes(conn):
    conn.send_text("still alive")
    assert conn.recv_message() == (OP_TEXT, b"still alive")


# ---- valid traffic ---------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 1 << 20])
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
def test_echo_length_classes(ws, size, opcode):
    if opcode == OP_TEXT:
        data = (b"abcdefghij" * (size // 10 + 1))[:size]
    else:
        data = os.urandom(size)
    ws.send_frame(opcode, data)
    assert ws.recv_message(timeout=20) == (opcode, data)


def test_fragmented_message(ws):
    ws.send_frame(OP_TEXT, b"frag", fin=False)
    ws.send_frame(OP_CONT, b"men", fin=False)
    ws.send_frame(OP_CONT, b"ted", fin=True)
    assert ws.recv_message() == (OP_TEXT, b"fragmented")


def test_many_fragments_binary(ws):
    parts = [os.urandom(1000) for _ in range(100)]
    ws.send_frame(OP_BINARY, parts[0], fin=False)
    for p in parts[1:-1]:
        ws.send_frame(OP_CONT, p, fin=False)
    ws.send_frame(OP_CONT, parts[-1], fin=True)
    assert ws.recv_message() == (OP_BINARY, b"".join(parts))


def test_empty_fragments(ws):
    ws.send_frame(OP_TEXT, b"", fin=False)
    ws.send_frame(OP_CONT, b"", fin=False)
    ws.send_frame(OP_CONT, b"", fin=True)
    assert ws.recv_message() == (OP_TEXT, b"")


def test_utf8_split_across_fragments_valid(ws):
    text = "€𝄞é".encode()           # 3 + 4 + 2 bytes, split in the middle of each
    ws.send_frame(OP_TEXT, text[:1], fin=False)
    ws.send_frame(OP_CONT, text[1:5], fin=False)
    ws.send_frame(OP_CONT, text[5:8], fin=False)
    ws.send_frame(OP_CONT, text[8:], fin=True)
    assert ws.recv_message() == (OP_TEXT, text)


def test_binary_need_not_be_utf8(ws):
    ws.send_frame(OP_BINARY, b"\xff\xfe\xc0\xaf\xed\xa0\x80")
    assert ws.recv_message() == (OP_BINARY, b"\xff\xfe\xc0\xaf\xed\xa0\x80")


@pytest.mark.parametrize("payload", [b"", b"x", b"ping payload", bytes(range(125))])
def test_ping_pong_same_payload(ws, payload):
    ws.send_frame(OP_PING, payload)
    f = ws.recv_control(OP_PONG)
    assert f.payload == payload and f.fin and not f.masked


def test_ping_inside_fragmented_message(ws):
    ws.send_frame(OP_TEXT, b"Hello, ", fin=False)
    ws.send_frame(OP_PING, b"in between")
    ws.send_frame(OP_CONT, b"World!", fin=True)
    frames = [ws.recv_frame(), ws.recv_frame()]
    pongs = [f for f in frames if f.opcode == OP_PONG]
    texts = [f for f in frames if f.opcode == OP_TEXT]
    assert len(pongs) == 1 and pongs[0].payload == b"in between", frames
    assert len(texts) == 1 and texts[0].fin and texts[0].payload == b"Hello, World!", frames


def test_unsolicited_pong_ignored(ws):
    ws.send_frame(OP_PONG, b"nobody asked")
    assert_still_echoes(ws)


def test_pipelined_frames(ws):
    msgs = [f"pipelined {i}".encode() for i in range(1000)]
    ws.send_raw(b"".join(build_frame(OP_TEXT, m) for m in msgs))
    for m in msgs:
        assert ws.recv_message() == (OP_TEXT, m)


def test_frame_byte_by_byte(ws):
    frame = build_frame(OP_TEXT, b"slowly, one byte at a time" * 6)   # 16-bit length
    for i in range(len(frame)):
        ws.send_raw(frame[i:i + 1])
    assert ws.recv_message() == (OP_TEXT, b"slowly, one byte at a time" * 6)


def test_mask_key_zero(ws):
    ws.send_frame(OP_TEXT, b"zero mask", mask_key=b"\0\0\0\0")
    assert ws.recv_message() == (OP_TEXT, b"zero mask")


# ---- the closing handshake -------------------------------------------------------------

@pytest.mark.parametrize("code", [1000, 1001, 3000, 4999])
def test_valid_close_echoed(ws, code):
    """The answering close carries the client's code and reason (as browsers, Node ws
    and Python websockets servers do)."""
    ws.send_close(code, b"see you")
    assert expect_code(ws, code) == b"see you"


def test_close_without_code(ws):
    """No code received (1005): the reply is a close frame without a body too (RFC 6455
    7.4.1: 1005 must not be sent), not 1000."""
    ws.send_frame(OP_CLOSE, b"")
    f = ws.recv_frame()
    assert f.opcode == OP_CLOSE and f.payload == b"", f
    ws.send_frame(OP_CLOSE, b"")
    ws.expect_tcp_close()


def test_close_then_tcp_close(ws):
    ws.send_text("before close")
    assert ws.recv_message() == (OP_TEXT, b"before close")
    ws.send_close(1000)
    f = ws.recv_frame()
    assert f.opcode == OP_CLOSE and f.close_code() == 1000
    ws.expect_tcp_close(timeout=10)


@pytest.mark.parametrize("reason", [b"r" * 123, "\u00e9".encode() * 61 + b"r",
                                    "bye \u20ac \U0001f600".encode()],
                         ids=["ascii_123", "utf8_123", "emoji"])
def test_close_with_max_reason(ws, reason):
    """Reasons up to the 123-byte maximum, multi-byte UTF-8 too, come back unchanged."""
    ws.send_close(4000, reason)
    assert expect_code(ws, 4000) == reason


# ---- protocol errors: 1002 -------------------------------------------------------------

def test_unmasked_frame_1002(ws):
    ws.send_frame(OP_TEXT, b"not masked", mask=False)
    expect_code(ws, 1002)


@pytest.mark.parametrize("rsv", [0x4, 0x2, 0x1, 0x7])
def test_rsv_bits_1002(ws, rsv):
    ws.send_frame(OP_TEXT, b"rsv", rsv=rsv)
    expect_code(ws, 1002)


@pytest.mark.parametrize("rsv", [0x4, 0x2, 0x1])
def test_rsv_bits_on_control_1002(ws, rsv):
    ws.send_frame(OP_PING, b"rsv", rsv=rsv)
    expect_code(ws, 1002)


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcode_1002(ws, opcode):
    ws.send_frame(opcode, b"reserved")
    expect_code(ws, 1002)


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE])
def test_control_frame_too_long_1002(ws, opcode):
    payload = struct.pack("!H", 1000) + b"x" * 124 if opcode == OP_CLOSE else b"x" * 126
    ws.send_frame(opcode, payload)
    expect_code(ws, 1002)


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE])
def test_fragmented_control_1002(ws, opcode):
    payload = close_payload(1000) if opcode == OP_CLOSE else b"frag"
    ws.send_frame(opcode, payload, fin=False)
    expect_code(ws, 1002)


@pytest.mark.parametrize("fin", [True, False])
def test_continuation_without_start_1002(ws, fin):
    ws.send_frame(OP_CONT, b"orphan", fin=fin)
    expect_code(ws, 1002)


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
def test_new_message_inside_fragmented_1002(ws, opcode):
    ws.send_frame(OP_TEXT, b"first ", fin=False)
    ws.send_frame(opcode, b"second", fin=True)
    expect_code(ws, 1002)


def test_continuation_after_complete_message_1002(ws):
    ws.send_frame(OP_TEXT, b"done", fin=True)
    assert ws.recv_message() == (OP_TEXT, b"done")
    ws.send_frame(OP_CONT, b"more", fin=True)
    expect_code(ws, 1002)


def test_close_one_byte_payload_1002(ws):
    ws.send_frame(OP_CLOSE, b"\x03")
    expect_code(ws, 1002)


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 2999, 5000, 65535])
def test_close_invalid_code_1002(ws, code):
    ws.send_close(code, b"bad code")
    expect_code(ws, 1002)


def test_length_with_msb_set_1002(ws):
    """A 64-bit length with the most significant bit set: protocol error at once, without
    waiting for 2^63 bytes."""
    ws.send_raw(bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 1 << 63) + b"\x01\x02\x03\x04")
    expect_code(ws, 1002, timeout=5)


def test_length_all_ones_1002(ws):
    ws.send_raw(bytes([0x81, 0x80 | 127]) + b"\xff" * 8 + b"\x01\x02\x03\x04")
    expect_code(ws, 1002, timeout=5)


# ---- invalid UTF-8: 1007 ---------------------------------------------------------------

@pytest.mark.parametrize("payload", [
    b"\xff",
    b"hello \xc0\xaf world",        # overlong '/'
    b"\xe0\x80\xaf",                # overlong 3-byte
    b"\xed\xa0\x80",                # UTF-16 surrogate
    b"\xf4\x90\x80\x80",            # > U+10FFFF
    b"\xf8\x88\x80\x80\x80",        # 5-byte form
    b"ok\x80",                      # lone continuation
    b"truncated \xe2\x82",          # sequence cut at the end of the message
])
def test_invalid_utf8_text_1007(ws, payload):
    ws.send_frame(OP_TEXT, payload)
    expect_code(ws, 1007)


def test_invalid_utf8_in_final_fragment_1007(ws):
    ws.send_frame(OP_TEXT, b"valid start ", fin=False)
    ws.send_frame(OP_CONT, b"then \xff", fin=True)
    expect_code(ws, 1007)


def test_truncated_utf8_across_end_of_fragments_1007(ws):
    ws.send_frame(OP_TEXT, b"abc\xe2", fin=False)
    ws.send_frame(OP_CONT, b"\x82", fin=True)          # message ends inside '€'
    expect_code(ws, 1007)


def test_invalid_utf8_fails_fast(ws):
    """Invalid in the first fragment: the server closes before the message is complete
    (the final fragment is never sent)."""
    ws.send_frame(OP_TEXT, b"hello \xff", fin=False)
    expect_code(ws, 1007, timeout=5)


def test_invalid_utf8_fails_fast_split_sequence(ws):
    ws.send_frame(OP_TEXT, b"hello \xe2", fin=False)
    ws.send_frame(OP_CONT, b"\x28", fin=False)          # 0xE2 0x28: not a continuation
    expect_code(ws, 1007, timeout=5)


def test_close_reason_bad_utf8_1007(ws):
    ws.send_close(1000, b"bad \xff reason")
    expect_code(ws, 1007)


# ---- message size: 1009 ----------------------------------------------------------------

@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
def test_message_at_limit_ok(small, opcode):
    data = b"a" * SMALL
    small.send_frame(opcode, data)
    assert small.recv_message() == (opcode, data)


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
def test_message_over_limit_1009(small, opcode):
    small.send_frame(opcode, b"a" * (SMALL + 1))
    expect_code(small, 1009)


def test_fragments_over_limit_1009(small):
    small.send_frame(OP_BINARY, b"x" * 30000, fin=False)
    small.send_frame(OP_CONT, b"x" * 30000, fin=False)
    small.send_frame(OP_CONT, b"x" * 30000, fin=True)
    expect_code(small, 1009)


def test_fragments_at_limit_ok(small):
    parts = [b"y" * 16384] * 4
    small.send_frame(OP_TEXT, parts[0], fin=False)
    for p in parts[1:-1]:
        small.send_frame(OP_CONT, p, fin=False)
    small.send_frame(OP_CONT, parts[-1], fin=True)
    assert small.recv_message() == (OP_TEXT, b"".join(parts))


def test_over_limit_fails_fast_on_header(small):
    """The frame header already says too much: 1009 without waiting for the payload."""
    small.send_raw(bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 1 << 30) + b"\0\0\0\0"
                   + b"x" * 100)
    expect_code(small, 1009, timeout=5)


def test_default_limit_fails_fast(ws):
    """WebSocketMaxMessageSize defaults to 16 MiB."""
    ws.send_raw(bytes([0x82, 0x80 | 127]) + struct.pack("!Q", DEFAULT_MAX + 1)
                + b"\0\0\0\0" + b"x" * 100)
    expect_code(ws, 1009, timeout=5)


def test_default_limit_exact_ok(ws):
    data = os.urandom(DEFAULT_MAX)
    ws.send_frame(OP_BINARY, data)
    assert ws.recv_message(timeout=60) == (OP_BINARY, data)
