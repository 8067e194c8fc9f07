#!/usr/bin/python3
"""The client side of fuzz/valgrind-httpd.sh: echo and fault scenarios, one connection
at a time (the server under valgrind is a single prefork process, httpd -X).

    valgrind_client.py PORT TLS_PORT CAFILE [ROUNDS]

Every scenario checks what it gets back; the script exits non-zero on the first wrong
answer.  It uses the integration suite's raw client (tests/integration/rawws.py).
"""

import os
import socket
import ssl
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "integration"))

from rawws import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT,  # noqa: E402
                   RawWS, build_frame, close_payload, upgrade_request)


class Srv:
    """What rawws needs of a server."""

    def __init__(self, port, tls_port, cafile):
        self.host, self.port, self.tls_port, self.cafile = "127.0.0.1", port, tls_port, cafile

    def port_for(self, transport):
        return self.tls_port if transport == "wss" else self.port

    def ssl_for(self, transport):
        if transport != "wss":
            return None
        ctx = ssl.create_default_context(cafile=self.cafile)
        return ctx


def echo_sizes(srv, t):
    with RawWS.open(srv, t, "/echo", timeout=60) as c:
        for n in (0, 1, 125, 126, 65535, 65536, 300000):
            data = bytes(i & 0xFF for i in range(n))
            c.send_binary(data)
            assert c.recv_message(timeout=60) == (OP_BINARY, data), n
        text = "h\u00e9llo \u20ac \U0001F600".encode()
        c.send_text(text)
        assert c.recv_message() == (OP_TEXT, text)
        # fragmented, with a ping in the middle
        c.send_frame(OP_TEXT, b"frag", fin=False)
        c.send_frame(OP_PING, b"mid")
        c.send_frame(OP_CONT, b"mented")
        f = c.recv_frame()
        assert f.opcode == OP_PONG and f.payload == b"mid", f
        assert c.recv_message() == (OP_TEXT, b"fragmented")
        c.send_close(1000, "bye")
        assert c.expect_close()[0] == 1000


def protocol_errors(srv, t):
    cases = [
        (build_frame(OP_TEXT, b"x", mask=False), 1002),                  # unmasked
        (build_frame(OP_TEXT, b"\xed\xa0\x80"), 1007),                   # surrogate
        (bytes([0x82, 0xFF]) + struct.pack("!Q", 1 << 63) + b"\0" * 4, 1002),
        (build_frame(OP_BINARY, b"", fin=False) + build_frame(OP_TEXT, b"y"), 1002),
        (build_frame(OP_CLOSE, b"\x03"), 1002),
    ]
    for raw, code in cases:
        with RawWS.open(srv, t, "/echo") as c:
            c.send_raw(raw)
            assert c.expect_close()[0] == code, code
    with RawWS.open(srv, t, "/small") as c:                            # 1009
        c.send_binary(b"z" * 2000)
        assert c.expect_close()[0] == 1009


def probe(srv, t):
    with RawWS.open(srv, t, "/probe", timeout=30) as c:
        c.recv_message()
        c.send_text("flood:2000:100")
        for seq in range(2000):
            op, data = c.recv_message()
            assert op == OP_BINARY and int.from_bytes(data[:8], "big") == seq
        assert c.recv_message() == (OP_TEXT, b"flood-done:2000")
        c.send_text("close:4000:probe bye")
        assert c.expect_close() == (4000, b"probe bye")
    with RawWS.open(srv, t, "/probe") as c:
        c.recv_message()
        c.send_text("fail")
        assert c.expect_close()[0] == 1011


def slow_reader(srv, t):
    """A flood into a 64 KiB queue that is not read for a while: close 1008."""
    with RawWS.open(srv, t, "/smallq", timeout=30) as c:
        c.recv_message()
        c.send_text("flood:100000000:1024")
        time.sleep(1.0)   # not reading: the queue overflows meanwhile
        n = 0
        while True:
            f = c.recv_frame(timeout=30)
            if f.opcode == OP_CLOSE:
                assert f.close_code() == 1008, f
                break
            n += 1
        assert n > 0


def abrupt(srv, t):
    # mid-payload, then gone
    c = RawWS.open(srv, t, "/echo")
    c.send_raw(build_frame(OP_BINARY, b"a" * 5000)[:1000])
    c.close()
    # mid-flood, then reset
    c = RawWS.open(srv, t, "/probe")
    c.recv_message()
    c.send_text("flood:1000000:256")
    c.recv_message()
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    # a close frame, gone before the reply
    c = RawWS.open(srv, t, "/echo")
    c.send_raw(build_frame(OP_CLOSE, close_payload(1000)))
    c.close()


def refusals(srv, t):
    resp, _ = upgrade_request(srv, t, "/echo", headers={"Sec-WebSocket-Version": "8"})
    assert resp.status == 426, resp
    resp, _ = upgrade_request(srv, t, "/echo", headers={"Sec-WebSocket-Key": "short"})
    assert resp.status == 400, resp
    resp, _ = upgrade_request(srv, t, "/echo", headers={"Origin": "https://evil.example"})
    assert resp.status == 403, resp


def main():
    port, tls_port, cafile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    srv = Srv(port, tls_port, cafile)
    t0 = time.monotonic()
    for r in range(rounds):
        for t in ("ws", "wss"):
            for scenario in (echo_sizes, protocol_errors, probe, slow_reader, abrupt,
                             refusals):
                scenario(srv, t)
        print(f"round {r + 1}/{rounds} done ({time.monotonic() - t0:.1f}s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
