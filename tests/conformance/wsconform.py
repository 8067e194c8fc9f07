#!/usr/bin/python3
"""wsconform - an RFC 6455 conformance client for a WebSocket *echo* endpoint.

    wsconform.py URL [--json out.json] [--insecure] [--cases PATTERNS] [--jobs N]
                     [--timeout S] [--list] [--verbose]

URL is ws://host:port/path or wss://...; the endpoint must echo every text and binary
message back unchanged.  The cases are grouped and numbered in the manner of
Autobahn|Testsuite's fuzzing client, but written from the RFC alone:

   1.x  framing: text and binary at every payload length class, chopped writes
   2.x  ping and pong
   3.x  reserved bits
   4.x  reserved opcodes
   5.x  fragmentation
   6.x  UTF-8 handling
   7.x  the closing handshake and close codes
   9.x  light performance (large messages, many pipelined messages)
  10.x  properties of everything the server sends (masking, RSV bits, lengths)

Each case runs on its own connection and ends as
   OK          the behaviour the RFC asks for;
   NON-STRICT  a variation the RFC allows but that is not the expected one (e.g. the
               connection failed by dropping TCP instead of with a close frame, a close
               reply with 1000 instead of the echoed code, a UTF-8 error found only at
               the end of a message instead of as soon as it was received);
   FAILED      a violation, or no answer within the timeout.
Every frame the server sends, in every case, is checked: never masked, RSV bits clear
(no extension is offered), no reserved opcode, control frames unfragmented and at most
125 bytes, minimal length encoding, valid UTF-8 in text messages and close reasons.

The output is one line per case and a closing line "N passed, N failed" (passed counts
OK and NON-STRICT; the NON-STRICT count is given on the line above).  Exit status 0 when
no case FAILED, 1 otherwise, 2 on a usage error.  Standard library only.
"""
import argparse
import base64
import collections
import fnmatch
import hashlib
import json
import os
import re
import socket
import ssl
import struct
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
OPNAMES = {CONT: "CONT", TEXT: "TEXT", BINARY: "BINARY", CLOSE: "CLOSE", PING: "PING", PONG: "PONG"}
OK, NONSTRICT, FAILED = "OK", "NON-STRICT", "FAILED"
RANK = {OK: 0, NONSTRICT: 1, FAILED: 2}


class CaseFailed(Exception):
    pass


class Timeout(Exception):
    pass


# ---------------------------------------------------------------------------------------
# frames

def xor_mask(data, key):
    n = len(data)
    if not n:
        return b""
    m = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(m, "big")).to_bytes(n, "big")


def frame(opcode, payload=b"", fin=True, rsv=0, mask=True):
    """One frame as the client sends it (masked unless mask=False)."""
    payload = bytes(payload)
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        hdr = bytes([b0, mbit | n])
    elif n < 65536:
        hdr = bytes([b0, mbit | 126]) + struct.pack("!H", n)
    else:
        hdr = bytes([b0, mbit | 127]) + struct.pack("!Q", n)
    if not mask:
        return hdr + payload
    key = os.urandom(4)
    return hdr + key + xor_mask(payload, key)


def close_frame(code=None, reason=b"", **kw):
    payload = b"" if code is None else struct.pack("!H", code) + reason
    return frame(CLOSE, payload, **kw)


def fragments(opcode, payload, n):
    """payload as a message of n frames (n >= 1), cut at equal byte offsets."""
    cuts = [len(payload) * i // n for i in range(n + 1)]
    out = []
    for i in range(n):
        out.append(frame(opcode if i == 0 else CONT, payload[cuts[i]:cuts[i + 1]], fin=(i == n - 1)))
    return out


def preview(b, n=24):
    b = bytes(b)
    s = b[:n].hex(" ")
    return s + (" …" if len(b) > n else "")


def describe(kind, payload):
    if kind in ("text", "binary", "pong", "ping"):
        if kind == "text":
            try:
                t = payload.decode("utf-8")
                shown = repr(t[:40]) + ("…" if len(t) > 40 else "")
            except UnicodeDecodeError:
                shown = preview(payload)
        else:
            shown = preview(payload)
        return "%s (%d bytes: %s)" % (kind, len(payload), shown)
    if kind == "close":
        code, reason = payload
        return "close (code %s, reason %r)" % ("none" if code is None else code, reason)
    return kind


def valid_close_code(code):
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011) or 3000 <= code <= 4999


def server_close_code_ok(code):
    # what the server may send: the client-sendable ones plus IANA's 1012-1014
    return valid_close_code(code) or code in (1012, 1013, 1014)


# ---------------------------------------------------------------------------------------
# one connection

class Target:
    def __init__(self, url, insecure=False, timeout=5.0, origin=None, cafile=None):
        u = urlsplit(url)
        if u.scheme not in ("ws", "wss") or not u.hostname:
            raise ValueError("URL must be ws://host[:port]/path or wss://...")
        self.url = url
        self.secure = u.scheme == "wss"
        self.host = u.hostname
        self.port = u.port or (443 if self.secure else 80)
        self.resource = (u.path or "/") + ("?" + u.query if u.query else "")
        hostpart = "[%s]" % self.host if ":" in self.host else self.host
        default = 443 if self.secure else 80
        self.host_header = hostpart if self.port == default else "%s:%d" % (hostpart, self.port)
        self.timeout = timeout
        self.origin = origin
        self.ctx = None
        if self.secure:
            self.ctx = ssl.create_default_context(cafile=cafile)
            if insecure:
                self.ctx.check_hostname = False
                self.ctx.verify_mode = ssl.CERT_NONE


class Frame:
    __slots__ = ("fin", "rsv", "opcode", "payload")

    def __init__(self, fin, rsv, opcode, payload):
        self.fin, self.rsv, self.opcode, self.payload = fin, rsv, opcode, payload


class Conn:
    def __init__(self, target, outcome):
        self.t = target
        self.out = outcome
        self.sock = None
        self.buf = bytearray()
        self.eof = False
        self.reset = False
        self.write_error = None
        self.frag_op = None
        self.frag = []
        self.got_close = False
        self.frames_seen = 0
        self.trace = collections.deque(maxlen=40)

    # -- setup
    def open(self):
        t = self.t
        deadline = time.monotonic() + t.timeout
        try:
            s = socket.create_connection((t.host, t.port), timeout=t.timeout)
        except OSError as e:
            self.out.fail("cannot connect to %s:%d: %s" % (t.host, t.port, e))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if t.secure:
            try:
                s = t.ctx.wrap_socket(s, server_hostname=t.host)
            except (OSError, ssl.SSLError) as e:
                s.close()
                self.out.fail("TLS handshake failed: %s" % e)
        self.sock = s
        key = base64.b64encode(os.urandom(16))
        req = ("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
               % (t.resource, t.host_header, key.decode()))
        if t.origin:
            req += "Origin: %s\r\n" % t.origin
        req += "User-Agent: wsconform\r\n\r\n"
        self.trace.append("-> GET %s (upgrade)" % t.resource)
        if not self.write(req.encode()):
            self.out.fail("sending the upgrade request failed: %s" % self.write_error)
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > 65536:
                self.out.fail("upgrade response header larger than 64 KiB")
            if self.eof:
                self.out.fail("connection closed during the opening handshake: %r" % bytes(self.buf[:200]))
            try:
                d = self._recv(deadline)
            except Timeout:
                self.out.fail("no upgrade response within %.1f s" % t.timeout)
            self.buf += d
        end = self.buf.index(b"\r\n\r\n") + 4
        head = bytes(self.buf[:end]).decode("iso-8859-1")
        del self.buf[:end]
        lines = head.split("\r\n")
        m = re.match(r"HTTP/1\.1 (\d{3})", lines[0])
        if not m or m.group(1) != "101":
            self.out.fail("upgrade refused: %s" % lines[0])
        hdrs = {}
        for ln in lines[1:]:
            if ":" in ln:
                k, v = ln.split(":", 1)
                k = k.strip().lower()
                hdrs[k] = (hdrs[k] + ", " if k in hdrs else "") + v.strip()
        want = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
        if hdrs.get("sec-websocket-accept") != want:
            self.out.fail("bad Sec-WebSocket-Accept %r (want %r)" % (hdrs.get("sec-websocket-accept"), want))
        if hdrs.get("upgrade", "").lower() != "websocket":
            self.out.fail("bad Upgrade header %r" % hdrs.get("upgrade"))
        if "upgrade" not in [x.strip().lower() for x in hdrs.get("connection", "").split(",")]:
            self.out.fail("bad Connection header %r" % hdrs.get("connection"))
        if "sec-websocket-extensions" in hdrs:
            self.out.fail("server accepted an extension that was not offered: %r" % hdrs["sec-websocket-extensions"])
        if "sec-websocket-protocol" in hdrs:
            self.out.fail("server chose a subprotocol that was not offered: %r" % hdrs["sec-websocket-protocol"])
        self.trace.append("<- 101")
        return self

    def close_socket(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    # -- raw I/O
    def write(self, data, chop=None):
        """Send bytes, or a list of frames each in its own write; chop=N cuts every write
        into N-byte writes.  Returns False (and remembers why) when the peer is gone."""
        parts = data if isinstance(data, list) else [data]
        if self.write_error:
            return False
        try:
            self.sock.settimeout(self.t.timeout)
            for p in parts:
                if chop:
                    for i in range(0, len(p), chop):
                        self.sock.sendall(p[i:i + chop])
                else:
                    self.sock.sendall(p)
        except (OSError, ssl.SSLError) as e:
            self.write_error = "%s: %s" % (type(e).__name__, e)
            self.trace.append("-> write failed: %s" % self.write_error)
            return False
        return True

    def send(self, *frames_, chop=None, framewise=False):
        """Trace and send frames: all in one write, or framewise, or chopped."""
        for f in frames_:
            self.trace.append("-> " + self._describe_raw(f))
        if framewise:
            return self.write(list(frames_), chop=chop)
        return self.write(b"".join(frames_), chop=chop)

    @staticmethod
    def _describe_raw(f):
        b0, b1 = f[0], f[1]
        n = b1 & 127
        return "%s fin=%d rsv=%d len=%s%s" % (OPNAMES.get(b0 & 15, "op%d" % (b0 & 15)), b0 >> 7,
                                            (b0 >> 4) & 7, n if n < 126 else ">125",
                                            "" if b1 & 0x80 else " UNMASKED")

    def _recv(self, deadline):
        rem = deadline - time.monotonic()
        if rem <= 0:
            raise Timeout()
        self.sock.settimeout(rem)
        try:
            d = self.sock.recv(1 << 18)
        except (socket.timeout, TimeoutError):
            raise Timeout()
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            self.reset = True
            d = b""
        except ssl.SSLError as e:     # unexpected EOF, alert after the peer closed
            self.reset = not isinstance(e, ssl.SSLZeroReturnError)
            d = b""
        except OSError:
            self.reset = True
            d = b""
        if not d:
            self.eof = True
        return d

    def _parse(self):
        b = self.buf
        if len(b) < 2:
            return None
        b0, b1 = b[0], b[1]
        fin, rsv, op, masked, n = b0 >> 7, (b0 >> 4) & 7, b0 & 15, b1 >> 7, b1 & 127
        pos = 2
        minimal = True
        if n == 126:
            if len(b) < 4:
                return None
            n = struct.unpack_from("!H", b, 2)[0]
            minimal = n >= 126
            pos = 4
        elif n == 127:
            if len(b) < 10:
                return None
            n = struct.unpack_from("!Q", b, 2)[0]
            if n >> 63:
                self.out.fail("server frame with the most significant bit of the 64-bit length set")
            minimal = n >= 65536
            pos = 10
        if n > (1 << 30):
            self.out.fail("server frame of %d bytes" % n)
        key = None
        if masked:
            if len(b) < pos + 4:
                return None
            key = bytes(b[pos:pos + 4])
            pos += 4
        if len(b) < pos + n:
            return None
        payload = bytes(b[pos:pos + n])
        del b[:pos + n]
        if key:
            payload = xor_mask(payload, key)
        self.frames_seen += 1
        self.trace.append("<- %s fin=%d rsv=%d len=%d" % (OPNAMES.get(op, "op%d" % op), fin, rsv, n))
        # properties of every server frame (10.x)
        if masked:
            self.out.fail("server sent a masked frame (RFC 6455 5.1: a server MUST NOT mask)")
        if rsv:
            self.out.fail("server sent a frame with RSV bits %d%d%d set although no extension was "
                          "negotiated" % (rsv >> 2, (rsv >> 1) & 1, rsv & 1))
        if op not in OPNAMES:
            self.out.fail("server sent a frame with reserved opcode %d" % op)
        if op >= 8 and (not fin or n > 125):
            self.out.fail("server sent a fragmented or oversized (%d bytes) control frame" % n)
        if not minimal:
            self.out.fail("server used a non-minimal length encoding for a %d-byte payload" % n)
        return Frame(fin, rsv, op, payload)

    def read_frame(self, deadline):
        while True:
            f = self._parse()
            if f is not None:
                return f
            if self.eof:
                if self.buf:
                    self.trace.append("<- EOF inside a frame (%d bytes left)" % len(self.buf))
                return None
            d = self._recv(deadline)
            if d:
                self.buf += d

    def next_event(self, deadline):
        """('text'|'binary'|'pong', payload) | ('close', (code, reason)) | ('eof', None).
        Pings from the server are answered and skipped.  Raises Timeout."""
        while True:
            f = self.read_frame(deadline)
            if f is None:
                self.trace.append("<- EOF" + (" (reset)" if self.reset else ""))
                return ("eof", None)
            if self.got_close:
                self.out.fail("server sent a %s frame after its close frame" % OPNAMES[f.opcode])
            op = f.opcode
            if op == PING:
                self.send(frame(PONG, f.payload))
                continue
            if op == PONG:
                return ("pong", f.payload)
            if op == CLOSE:
                self.got_close = True
                p = f.payload
                if len(p) == 1:
                    self.out.fail("server close frame with a 1-byte payload")
                if not p:
                    return ("close", (None, ""))
                code = struct.unpack("!H", p[:2])[0]
                if not server_close_code_ok(code):
                    self.out.fail("server sent the invalid close code %d" % code)
                try:
                    reason = p[2:].decode("utf-8")
                except UnicodeDecodeError:
                    self.out.fail("server close reason is not UTF-8: %s" % preview(p[2:]))
                self.trace[-1] += " code=%d" % code
                return ("close", (code, reason))
            if op == CONT:
                if self.frag_op is None:
                    self.out.fail("server sent a continuation frame with no message to continue")
                self.frag.append(f.payload)
                if not f.fin:
                    continue
                op, data = self.frag_op, b"".join(self.frag)
                self.frag_op, self.frag = None, []
            else:
                if self.frag_op is not None:
                    self.out.fail("server started a new message inside a fragmented one")
                if not f.fin:
                    self.frag_op, self.frag = op, [f.payload]
                    continue
                data = f.payload
            if op == TEXT:
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError as e:
                    self.out.fail("server sent a text message that is not UTF-8 (%s)" % e.reason)
                return ("text", data)
            return ("binary", data)

    def deadline(self, timeout=None):
        return time.monotonic() + (timeout if timeout is not None else self.t.timeout)

    # -- expectations
    def expect(self, *items, timeout=None):
        """Receive exactly these answers: ('text'|'binary'|'pong', payload).  Messages must
        come in the order given and pongs in the order given; how the two interleave is
        not fixed by the RFC (a pong may overtake the echo of an earlier message)."""
        dl = self.deadline(timeout)
        msgs = [i for i in items if i[0] != "pong"]
        pongs = [i for i in items if i[0] == "pong"]
        mi = pi = 0
        while mi < len(msgs) or pi < len(pongs):
            want = msgs[mi] if mi < len(msgs) else pongs[pi]
            try:
                ev = self.next_event(dl)
            except Timeout:
                self.out.fail("timed out waiting for %s (%d of %d expected answers received)"
                              % (describe(*want), mi + pi, len(items)))
            if ev[0] == "pong":
                if pi >= len(pongs):
                    self.out.fail("unexpected %s" % describe(*ev))
                want, pi = pongs[pi], pi + 1
            elif ev[0] in ("text", "binary"):
                if mi >= len(msgs):
                    self.out.fail("unexpected %s" % describe(*ev))
                want, mi = msgs[mi], mi + 1
            if ev[0] != want[0] or ev[1] != want[1]:
                msg = "expected %s, got %s" % (describe(*want), describe(*ev))
                if ev[0] == want[0] and len(ev[1]) == len(want[1]):
                    at = next(j for j in range(len(want[1])) if ev[1][j] != want[1][j])
                    msg += ", first difference at byte %d" % at
                if len(items) > 1:
                    msg += " (answer %d of %d)" % (mi + pi, len(items))
                self.out.fail(msg)

    def expect_eof(self, timeout=None):
        """After the closing handshake the server MUST close the TCP connection."""
        dl = self.deadline(timeout)
        try:
            ev = self.next_event(dl)
        except Timeout:
            self.out.fail("server did not close the TCP connection within %.1f s after the closing "
                          "handshake (RFC 6455 5.5.1, 7.1.1)" % (timeout or self.t.timeout))
        if ev[0] != "eof":
            self.out.fail("expected the server to close TCP, got %s" % describe(*ev))

    def close_normal(self, code=1000, reason=b"", raw=None, chop=None):
        """Start the closing handshake; expect the close reply and then TCP closed."""
        self.send(raw if raw is not None else close_frame(code, reason), chop=chop)
        dl = self.deadline()
        try:
            ev = self.next_event(dl)
        except Timeout:
            self.out.fail("no close frame in reply to ours within %.1f s" % self.t.timeout)
        if ev[0] == "eof":
            self.out.fail("server closed TCP without answering our close frame (RFC 6455 5.5.1)")
        if ev[0] != "close":
            self.out.fail("expected a close frame in reply, got %s" % describe(*ev))
        rcode = ev[1][0]
        if code is None:
            if rcode not in (None, 1000):
                self.out.fail("close without status code answered with code %d" % rcode)
        elif rcode == code:
            pass
        elif rcode is None:
            self.out.nonstrict("close %d answered by a close frame without status code" % code)
        elif rcode == 1000:
            self.out.nonstrict("close %d answered with 1000, not echoed" % code)
        else:
            self.out.fail("close %d answered with code %d" % (code, rcode))
        self.expect_eof()

    def await_failure(self, codes=(1002,), before=(), timeout=None, soft_codes=(), fast=False):
        """After sending something the server must reject: expect the answers `before` (the
        echoes of what came first; missing ones are NON-STRICT), then a close frame with a
        code in `codes` (one in soft_codes is NON-STRICT; a TCP drop without close frame is
        NON-STRICT), then TCP closed.  Anything else answered (an echo of the bad data, a
        pong to the probe ping sent after it) FAILS.  With fast=True a timeout returns None
        instead of failing (the caller sends more and calls again)."""
        dl = self.deadline(timeout)
        got = []
        while True:
            try:
                ev = self.next_event(dl)
            except Timeout:
                if fast:
                    self._check_before(got, before, final=False)
                    return None
                self.out.fail("the server did not fail the connection within %.1f s (want close %s)"
                              % (timeout or self.t.timeout, "/".join(map(str, codes))))
            if ev[0] in ("close", "eof"):
                break
            got.append(ev)
            self._check_before(got, before, final=False)
        self._check_before(got, before, final=True)
        if ev[0] == "eof":
            self.out.nonstrict("connection dropped without a close frame (want close %s)"
                               % "/".join(map(str, codes)))
            return "eof"
        code = ev[1][0]
        if code in codes:
            pass
        elif code in soft_codes:
            self.out.nonstrict("closed with %s, expected %s" % (code, "/".join(map(str, codes))))
        else:
            self.out.fail("closed with code %s, expected %s" % ("none" if code is None else code,
                                                                 "/".join(map(str, codes))))
        self.send(close_frame(code if code is not None and valid_close_code(code) else 1000))
        self.expect_eof()
        return "close"

    def _check_before(self, got, before, final):
        for i, ev in enumerate(got):
            if i >= len(before) or (ev[0], ev[1]) != tuple(before[i]):
                what = describe(*ev)
                if i < len(before):
                    self.out.fail("expected %s, got %s" % (describe(*before[i]), what))
                self.out.fail("server answered %s after the data it must reject" % what)
        if final and len(got) < len(before):
            self.out.nonstrict("the connection failed before %d earlier valid message(s) were echoed"
                               % (len(before) - len(got)))


class Outcome:
    def __init__(self):
        self.status = OK
        self.notes = []

    def nonstrict(self, msg):
        if RANK[self.status] < RANK[NONSTRICT]:
            self.status = NONSTRICT
        self.notes.append(msg)

    def fail(self, msg):
        self.status = FAILED
        self.notes.append(msg)
        raise CaseFailed(msg)


class Tester:
    """What a case function gets: connect() opens a connection bound to this case."""

    def __init__(self, target, fast_wait):
        self.target = target
        self.out = Outcome()
        self.conns = []
        self.fast_wait = fast_wait
        self.info = []

    def connect(self):
        c = Conn(self.target, self.out)
        self.conns.append(c)
        return c.open()


# ---------------------------------------------------------------------------------------
# the cases

CASES = []


def add(cid, desc, fn):
    CASES.append((cid, desc, fn))


def echo_case(t, frames_, answers, framewise=False, chop=None, timeout=None):
    c = t.connect()
    c.send(*frames_, framewise=framewise, chop=chop)
    c.expect(*answers, timeout=timeout)
    c.close_normal()


def echo_message(t, op, payload, chop=None, nfrag=1, timeout=None):
    kind = "text" if op == TEXT else "binary"
    frames_ = fragments(op, payload, nfrag)
    echo_case(t, frames_, [(kind, payload)], chop=chop, timeout=timeout)


def fail_case(t, frames_, codes=(1002,), before=(), framewise=False, chop=None, probe=True,
              soft_codes=()):
    c = t.connect()
    if probe:
        frames_ = list(frames_) + [frame(PING, b"probe: must not be answered")]
    c.send(*frames_, framewise=framewise, chop=chop)
    c.await_failure(codes, before, soft_codes=soft_codes)


def fail_fast_case(t, first, rest, codes=(1007,)):
    """Send `first` (ends with a fragment/chunk the server can already tell is invalid),
    wait briefly for the failure; if none came, send `rest` and expect it then (NON-STRICT)."""
    c = t.connect()
    if isinstance(first, list):
        c.send(*first)
    else:
        c.write(first)
    r = c.await_failure(codes, timeout=t.fast_wait, fast=True)
    if r is not None:
        return
    if isinstance(rest, list):
        c.send(*rest)
    else:
        c.write(rest)
    c.await_failure(codes)
    c.out.nonstrict("invalid UTF-8 detected only after the message was complete, "
                    "not as soon as it arrived (fail fast)")


def text(s):
    return s.encode("utf-8")


KOSME = text("κόσμε")


def pattern(n):
    return (bytes(range(256)) * (n // 256 + 1))[:n]


def utf8_pattern(n):
    unit = text("mod_websocket ✓ κόσμε 😀 € ")
    s = (unit * (n // len(unit) + 1))[:n]
    while True:                          # cut back to a whole character
        try:
            s.decode("utf-8")
            return s
        except UnicodeDecodeError:
            s = s[:-1]


# 1.x framing ---------------------------------------------------------------------------
LENS = [0, 125, 126, 127, 128, 65535, 65536]
for _i, _n in enumerate(LENS, 1):
    add("1.1.%d" % _i, "text message, %d-byte payload" % _n,
        lambda t, n=_n: echo_message(t, TEXT, b"*" * n))
    add("1.2.%d" % _i, "binary message, %d-byte payload" % _n,
        lambda t, n=_n: echo_message(t, BINARY, pattern(n)))
add("1.1.8", "text message, 65536 bytes, written in 997-byte chops",
    lambda t: echo_message(t, TEXT, b"*" * 65536, chop=997))
add("1.2.8", "binary message, 65536 bytes, written in 997-byte chops",
    lambda t: echo_message(t, BINARY, pattern(65536), chop=997))
add("1.1.9", "text message, 300 bytes (16-bit length), written one byte at a time",
    lambda t: echo_message(t, TEXT, utf8_pattern(300), chop=1))
add("1.2.9", "binary message, 200 bytes, written one byte at a time",
    lambda t: echo_message(t, BINARY, pattern(200), chop=1))
add("1.3.1", "three messages (text, binary, text) in one write",
    lambda t: echo_case(t, [frame(TEXT, b"one"), frame(BINARY, b"\x00two\xff"), frame(TEXT, KOSME)],
                        [("text", b"one"), ("binary", b"\x00two\xff"), ("text", KOSME)]))

# 2.x ping / pong -----------------------------------------------------------------------
add("2.1", "ping without payload", lambda t: echo_case(t, [frame(PING)], [("pong", b"")]))
add("2.2", "ping with a small text payload",
    lambda t: echo_case(t, [frame(PING, b"Hello, world!")], [("pong", b"Hello, world!")]))
add("2.3", "ping with a small binary payload",
    lambda t: echo_case(t, [frame(PING, b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff")],
                        [("pong", b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff")]))
add("2.4", "ping with a 125-byte payload",
    lambda t: echo_case(t, [frame(PING, b"\xfe" * 125)], [("pong", b"\xfe" * 125)]))
add("2.5", "ping with a 126-byte payload (control frame too long) -> 1002",
    lambda t: fail_case(t, [frame(PING, b"\xfe" * 126)]))
add("2.6", "ping with a 125-byte payload, written one byte at a time",
    lambda t: echo_case(t, [frame(PING, pattern(125))], [("pong", pattern(125))], chop=1))


def unsolicited_pong(t, payload):
    c = t.connect()
    # The text that follows must be the first thing that comes back: a pong must not be
    # answered at all.
    c.send(frame(PONG, payload), frame(TEXT, b"after the pong"))
    c.expect(("text", b"after the pong"))
    c.close_normal()


add("2.7", "unsolicited pong without payload is ignored", lambda t: unsolicited_pong(t, b""))
add("2.8", "unsolicited pong with payload is ignored",
    lambda t: unsolicited_pong(t, b"unsolicited pong payload"))
add("2.9", "unsolicited pong, then ping: only the ping is answered",
    lambda t: echo_case(t, [frame(PONG, b"unsolicited"), frame(PING, b"ping payload")],
                        [("pong", b"ping payload")]))


def ten_pings(t, framewise, chop=None):
    c = t.connect()
    payloads = [b"payload-%d" % i for i in range(10)]
    c.send(*[frame(PING, p) for p in payloads], framewise=framewise, chop=chop)
    got = []
    dl = c.deadline()
    while not got or got[-1] != payloads[-1]:
        try:
            ev = c.next_event(dl)
        except Timeout:
            c.out.fail("timed out after %d pongs; the last ping was not answered" % len(got))
        if ev[0] != "pong":
            c.out.fail("expected pongs, got %s" % describe(*ev))
        got.append(ev[1])
    if got != payloads:
        it = iter(payloads)
        if all(p in it for p in got):     # an ordered subset that ends with the last ping
            c.out.nonstrict("%d pongs for 10 pings (the RFC allows answering only the latest)"
                            % len(got))
        else:
            c.out.fail("pongs out of order or with wrong payloads: %r" % got)
    c.close_normal()


add("2.10", "10 pings in one write: 10 pongs in order", lambda t: ten_pings(t, False))
add("2.11", "10 pings, written one byte at a time: 10 pongs in order",
    lambda t: ten_pings(t, False, chop=1))

# 3.x reserved bits ---------------------------------------------------------------------
HELLO = b"Hello, world!"
add("3.1", "text with RSV1 set (no extension negotiated) -> 1002",
    lambda t: fail_case(t, [frame(TEXT, HELLO, rsv=4)]))
add("3.2", "text with RSV2 set -> 1002", lambda t: fail_case(t, [frame(TEXT, HELLO, rsv=2)]))
add("3.3", "text with RSV3 set -> 1002", lambda t: fail_case(t, [frame(TEXT, HELLO, rsv=1)]))
add("3.4", "valid text, then text with RSV2, then ping, in one write: echo, then 1002",
    lambda t: fail_case(t, [frame(TEXT, HELLO), frame(TEXT, HELLO, rsv=2)], before=[("text", HELLO)]))
add("3.5", "valid text, then text with RSV2, then ping, frame by frame: echo, then 1002",
    lambda t: fail_case(t, [frame(TEXT, HELLO), frame(TEXT, HELLO, rsv=2)], before=[("text", HELLO)],
                        framewise=True))
add("3.6", "valid text, then text with RSV3, then ping, byte by byte: echo, then 1002",
    lambda t: fail_case(t, [frame(TEXT, HELLO), frame(TEXT, HELLO, rsv=1)], before=[("text", HELLO)],
                        chop=1))
add("3.7", "binary with RSV1 and RSV2 set -> 1002",
    lambda t: fail_case(t, [frame(BINARY, pattern(8), rsv=6)]))
add("3.8", "ping with all RSV bits set -> 1002",
    lambda t: fail_case(t, [frame(PING, HELLO, rsv=7)], probe=False))
add("3.9", "close with RSV1 and RSV3 set -> 1002",
    lambda t: fail_case(t, [close_frame(1000, rsv=5)], probe=False))

# 4.x reserved opcodes ------------------------------------------------------------------
for _i, _op in enumerate([3, 4, 5, 6, 7], 1):
    add("4.1.%d" % _i, "reserved non-control opcode %d -> 1002" % _op,
        lambda t, op=_op: fail_case(t, [frame(op, b"" if op == 3 else b"reserved opcode")]))
add("4.1.6", "valid text, reserved opcode 5, ping, in one write: echo, then 1002",
    lambda t: fail_case(t, [frame(TEXT, HELLO), frame(5, HELLO)], before=[("text", HELLO)]))
add("4.1.7", "valid text, reserved opcode 6, ping, frame by frame: echo, then 1002",
    lambda t: fail_case(t, [frame(TEXT, HELLO), frame(6, HELLO)], before=[("text", HELLO)],
                        framewise=True))
for _i, _op in enumerate([0xB, 0xC, 0xD, 0xE, 0xF], 1):
    add("4.2.%d" % _i, "reserved control opcode %d -> 1002" % _op,
        lambda t, op=_op: fail_case(t, [frame(op, b"" if op == 0xB else b"reserved opcode")]))
add("4.2.6", "valid text, reserved opcode 13, ping, in one write: echo, then 1002",
    lambda t: fail_case(t, [frame(TEXT, HELLO), frame(0xD, HELLO)], before=[("text", HELLO)]))
add("4.2.7", "valid text, reserved opcode 14, ping, byte by byte: echo, then 1002",
    lambda t: fail_case(t, [frame(TEXT, HELLO), frame(0xE, HELLO)], before=[("text", HELLO)],
                        chop=1))

# 5.x fragmentation ---------------------------------------------------------------------
add("5.1", "ping fragmented into 2 frames -> 1002",
    lambda t: fail_case(t, [frame(PING, b"frag1", fin=False), frame(CONT, b"frag2")]))
add("5.2", "pong fragmented into 2 frames -> 1002",
    lambda t: fail_case(t, [frame(PONG, b"frag1", fin=False), frame(CONT, b"frag2")]))
_F2 = [frame(TEXT, b"fragment1", fin=False), frame(CONT, b"fragment2")]
add("5.3", "text in 2 fragments, one write",
    lambda t: echo_case(t, _F2, [("text", b"fragment1fragment2")]))
add("5.4", "text in 2 fragments, frame by frame",
    lambda t: echo_case(t, _F2, [("text", b"fragment1fragment2")], framewise=True))
add("5.5", "text in 2 fragments, byte by byte",
    lambda t: echo_case(t, _F2, [("text", b"fragment1fragment2")], chop=1))
_F2P = [frame(TEXT, b"fragment1", fin=False), frame(PING, b"pongme!"), frame(CONT, b"fragment2")]
add("5.6", "text in 2 fragments with a ping between, one write: pong, then echo",
    lambda t: echo_case(t, _F2P, [("pong", b"pongme!"), ("text", b"fragment1fragment2")]))
add("5.7", "text in 2 fragments with a ping between, frame by frame",
    lambda t: echo_case(t, _F2P, [("pong", b"pongme!"), ("text", b"fragment1fragment2")],
                        framewise=True))
add("5.8", "text in 2 fragments with a ping between, byte by byte",
    lambda t: echo_case(t, _F2P, [("pong", b"pongme!"), ("text", b"fragment1fragment2")], chop=1))
add("5.9", "continuation (FIN set) with nothing to continue, then text -> 1002",
    lambda t: fail_case(t, [frame(CONT, b"non-continuation payload"), frame(TEXT, HELLO)]))
add("5.10", "continuation (FIN set) with nothing to continue, frame by frame -> 1002",
    lambda t: fail_case(t, [frame(CONT, b"non-continuation payload"), frame(TEXT, HELLO)],
                        framewise=True))
add("5.11", "continuation (FIN set) with nothing to continue, byte by byte -> 1002",
    lambda t: fail_case(t, [frame(CONT, b"non-continuation payload"), frame(TEXT, HELLO)], chop=1))
add("5.12", "continuation (FIN clear) with nothing to continue, then text -> 1002",
    lambda t: fail_case(t, [frame(CONT, b"non-continuation payload", fin=False), frame(TEXT, HELLO)]))
add("5.13", "continuation (FIN clear) with nothing to continue, frame by frame -> 1002",
    lambda t: fail_case(t, [frame(CONT, b"non-continuation payload", fin=False), frame(TEXT, HELLO)],
                        framewise=True))
add("5.14", "complete fragmented text, then a stray continuation: echo, then 1002",
    lambda t: fail_case(t, _F2 + [frame(CONT, b"stray", fin=False), frame(TEXT, HELLO)],
                        before=[("text", b"fragment1fragment2")]))
add("5.15", "unfinished fragmented text, then a new text message (text inside text) -> 1002",
    lambda t: fail_case(t, [frame(TEXT, b"fragment1", fin=False), frame(TEXT, b"new message")]))
add("5.16", "unfinished fragmented binary, then a new binary message -> 1002",
    lambda t: fail_case(t, [frame(BINARY, b"fragment1", fin=False), frame(BINARY, b"new message")]))
add("5.17", "unfinished fragmented text, then a binary message -> 1002",
    lambda t: fail_case(t, [frame(TEXT, b"fragment1", fin=False), frame(BINARY, b"new message")]))
add("5.18", "close fragmented into 2 frames -> 1002",
    lambda t: fail_case(t, [frame(CLOSE, struct.pack("!H", 1000), fin=False), frame(CONT, b"x")],
                        probe=False))


def fragments_with_pings(t, pong_instead=False):
    """A text message in 5 fragments, controls in between; the rest is sent only once the
    server answered the ping after the first part, so the server sees the message arrive
    in separate reads with pauses in between (Autobahn 5.19/5.20, without sleeps)."""
    c = t.connect()
    parts = [b"fragment%d" % i for i in range(1, 6)]
    ctl = (lambda p: frame(PONG, p)) if pong_instead else (lambda p: frame(PING, p))
    c.send(frame(TEXT, parts[0], fin=False), frame(CONT, parts[1], fin=False), ctl(b"pongme 1!"),
           frame(PING, b"sync 1"))
    if not pong_instead:
        c.expect(("pong", b"pongme 1!"))
    c.expect(("pong", b"sync 1"))
    c.send(frame(CONT, parts[2], fin=False), frame(CONT, parts[3], fin=False), ctl(b"pongme 2!"),
           frame(PING, b"sync 2"))
    if not pong_instead:
        c.expect(("pong", b"pongme 2!"))
    c.expect(("pong", b"sync 2"))
    c.send(frame(CONT, parts[4]))
    c.expect(("text", b"".join(parts)))
    c.close_normal()


add("5.19", "text in 5 fragments in 3 bursts with pings between, pauses until pongs",
    lambda t: fragments_with_pings(t))
add("5.20", "text in 5 fragments in 3 bursts with unsolicited pongs between",
    lambda t: fragments_with_pings(t, pong_instead=True))
for _i, _n in enumerate([1, 2, 3, 10, 100, 1000], 1):
    add("5.21.%d" % _i, "text of 3000 bytes in %d fragment(s), cut inside characters" % _n,
        lambda t, n=_n: echo_message(t, TEXT, utf8_pattern(3000), nfrag=n))
    add("5.22.%d" % _i, "binary of 3000 bytes in %d fragment(s)" % _n,
        lambda t, n=_n: echo_message(t, BINARY, pattern(3000), nfrag=n))
add("5.23.1", "text with zero-length fragments around a non-empty one",
    lambda t: echo_case(t, [frame(TEXT, b"", fin=False), frame(CONT, b"", fin=False),
                            frame(CONT, b"data", fin=False), frame(CONT, b"")], [("text", b"data")]))
add("5.23.2", "text made only of zero-length fragments",
    lambda t: echo_case(t, [frame(TEXT, b"", fin=False), frame(CONT, b"", fin=False), frame(CONT, b"")],
                        [("text", b"")]))
add("5.23.3", "binary with zero-length fragments around a non-empty one",
    lambda t: echo_case(t, [frame(BINARY, b"", fin=False), frame(CONT, b"\x00\x01", fin=False),
                            frame(CONT, b"")], [("binary", b"\x00\x01")]))
add("5.23.4", "binary made only of zero-length fragments",
    lambda t: echo_case(t, [frame(BINARY, b"", fin=False), frame(CONT, b"")], [("binary", b"")]))

# 6.x UTF-8 -----------------------------------------------------------------------------
VALID_UTF8 = [
    ("Greek κόσμε", KOSME),
    ("Hello-µ@ßöäüàá-UTF-8!!", text("Hello-µ@ßöäüàá-UTF-8!!")),
    ("U+0000", b"\x00"),
    ("first 2-byte sequence U+0080", b"\xc2\x80"),
    ("first 3-byte sequence U+0800", b"\xe0\xa0\x80"),
    ("first 4-byte sequence U+10000", b"\xf0\x90\x80\x80"),
    ("last 1-byte sequence U+007F", b"\x7f"),
    ("last 2-byte sequence U+07FF", b"\xdf\xbf"),
    ("last 3-byte sequence U+FFFF", b"\xef\xbf\xbf"),
    ("last code point U+10FFFF", b"\xf4\x8f\xbf\xbf"),
    ("U+D7FF, just below the surrogates", b"\xed\x9f\xbf"),
    ("U+E000, just above the surrogates", b"\xee\x80\x80"),
    ("U+FFFD replacement character", b"\xef\xbf\xbd"),
    ("noncharacters U+FFFE U+FDD0 U+1FFFF", b"\xef\xbf\xbe\xef\xb7\x90\xf0\x9f\xbf\xbf"),
    ("mixed widths: a µ € 😀", text("a µ € 😀")),
]
for _i, (_d, _b) in enumerate(VALID_UTF8, 1):
    add("6.1.%d" % _i, "valid UTF-8 echoed byte-exact: %s" % _d,
        lambda t, b=_b: echo_message(t, TEXT, b))
_HELLO_U = text("Hello-µ@ßöäüàá-UTF-8!!")
add("6.2.1", "valid UTF-8 text in one fragment per byte (%d fragments)" % len(_HELLO_U),
    lambda t: echo_message(t, TEXT, _HELLO_U, nfrag=len(_HELLO_U)))
add("6.2.2", "κόσμε in one fragment per byte",
    lambda t: echo_message(t, TEXT, KOSME, nfrag=len(KOSME)))
add("6.2.3", "4-byte characters in one fragment per byte",
    lambda t: echo_message(t, TEXT, text("😀🚀𝄞"), nfrag=len(text("😀🚀𝄞"))))
add("6.2.4", "valid UTF-8 text written one byte at a time",
    lambda t: echo_message(t, TEXT, _HELLO_U, chop=1))

INVALID_UTF8 = [
    ("lone continuation byte 0x80", b"\x80"),
    ("lone continuation byte 0xbf", b"\xbf"),
    ("continuation bytes 80 bf 80 bf", b"\x80\xbf\x80\xbf"),
    ("2-byte start followed by a space", b"\xc0 "),
    ("3-byte start followed by a space", b"\xe0 "),
    ("4-byte start followed by a space", b"\xf0 "),
    ("2-byte start followed by ASCII inside text", b"abc\xc2A"),
    ("overlong '/' in 2 bytes", b"\xc0\xaf"),
    ("overlong '/' in 3 bytes", b"\xe0\x80\xaf"),
    ("overlong '/' in 4 bytes", b"\xf0\x80\x80\xaf"),
    ("largest overlong 2-byte c1 bf", b"\xc1\xbf"),
    ("largest overlong 3-byte e0 9f bf", b"\xe0\x9f\xbf"),
    ("largest overlong 4-byte f0 8f bf bf", b"\xf0\x8f\xbf\xbf"),
    ("overlong NUL c0 80", b"\xc0\x80"),
    ("surrogate U+D800", b"\xed\xa0\x80"),
    ("surrogate U+DB7F", b"\xed\xad\xbf"),
    ("surrogate U+DBFF", b"\xed\xaf\xbf"),
    ("surrogate U+DC00", b"\xed\xb0\x80"),
    ("surrogate U+DFFF", b"\xed\xbf\xbf"),
    ("surrogate pair U+D800 U+DC00 (CESU-8)", b"\xed\xa0\x80\xed\xb0\x80"),
    ("U+110000, above the last code point", b"\xf4\x90\x80\x80"),
    ("f7 bf bf bf (U+1FFFFF)", b"\xf7\xbf\xbf\xbf"),
    ("5-byte sequence", b"\xf8\x88\x80\x80\x80"),
    ("6-byte sequence", b"\xfc\x84\x80\x80\x80\x80"),
    ("byte 0xfe", b"\xfe"),
    ("byte 0xff", b"\xff"),
    ("bytes fe fe ff ff", b"\xfe\xfe\xff\xff"),
    ("truncated 2-byte sequence at the end", KOSME + b"\xce"),
    ("truncated 3-byte sequence at the end", KOSME + b"\xe0\xa0"),
    ("truncated 4-byte sequence at the end", KOSME + b"\xf0\x90\x80"),
    ("truncated U+10FFFF at the end", KOSME + b"\xf4\x8f\xbf"),
    ("surrogate in the middle of valid text", KOSME + b"\xed\xa0\x80edited"),
]
for _i, (_d, _b) in enumerate(INVALID_UTF8, 1):
    add("6.3.%d" % _i, "invalid UTF-8 -> 1007: %s" % _d,
        lambda t, b=_b: fail_case(t, [frame(TEXT, b)], codes=(1007,)))

# fail fast: the first part already holds bytes that no valid text can continue
add("6.4.1", "fail fast: first fragment ends with U+110000, then final fragment -> 1007",
    lambda t: fail_fast_case(t, [frame(TEXT, KOSME + b"\xf4\x90\x80\x80", fin=False)],
                             [frame(CONT, b"edited")]))
add("6.4.2", "fail fast: invalid second byte arrives in fragment 2 of 3 -> 1007",
    lambda t: fail_fast_case(t, [frame(TEXT, KOSME + b"\xf4", fin=False), frame(CONT, b"\x90", fin=False)],
                             [frame(CONT, b"\x80\x80edited")]))
add("6.4.3", "fail fast: first fragment holds a surrogate -> 1007",
    lambda t: fail_fast_case(t, [frame(TEXT, KOSME + b"\xed\xa0\x80", fin=False)],
                             [frame(CONT, b"edited")]))
add("6.4.4", "fail fast: first fragment ends with the never-valid byte 0xc0 -> 1007",
    lambda t: fail_fast_case(t, [frame(TEXT, KOSME + b"\xc0", fin=False)], [frame(CONT, b"\xafedited")]))


def fail_fast_in_frame(t):
    """One unfragmented frame whose payload arrives in two writes; the first write has the
    invalid bytes.  A server that validates as it reads fails before the frame is whole."""
    payload = KOSME + b"\xf4\x90\x80\x80" + b"*" * 200
    f = frame(TEXT, payload)
    cut = len(f) - 200
    fail_fast_case(t, f[:cut], f[cut:])


add("6.4.5", "fail fast: invalid bytes in the first half of a frame written in two parts -> 1007",
    fail_fast_in_frame)
add("6.5.1", "surrogate split across two fragments -> 1007",
    lambda t: fail_case(t, [frame(TEXT, KOSME + b"\xed", fin=False), frame(CONT, b"\xa0\x80x")],
                        codes=(1007,)))
add("6.5.2", "sequence truncated at the end of a fragmented message (empty last fragment) -> 1007",
    lambda t: fail_case(t, [frame(TEXT, b"abc\xe2\x82", fin=False), frame(CONT, b"")], codes=(1007,)))
add("6.5.3", "4-byte sequence broken across fragments -> 1007",
    lambda t: fail_case(t, [frame(TEXT, b"abc\xf0\x9f", fin=False), frame(CONT, b"A")], codes=(1007,)))
add("6.5.4", "valid: euro sign split across two fragments is echoed",
    lambda t: echo_case(t, [frame(TEXT, b"abc\xe2\x82", fin=False), frame(CONT, b"\xac")],
                        [("text", text("abc€"))]))

# 7.x closing handshake -----------------------------------------------------------------


def close_then(t, extra, what):
    c = t.connect()
    c.send(close_frame(1000), *extra)
    dl = c.deadline()
    try:
        ev = c.next_event(dl)
    except Timeout:
        c.out.fail("no close reply within %.1f s" % t.target.timeout)
    if ev[0] != "close":
        c.out.fail("expected only a close reply (%s must be ignored), got %s" % (what, describe(*ev)))
    if ev[1][0] not in (1000, None):
        c.out.fail("close 1000 answered with %s" % ev[1][0])
    elif ev[1][0] is None:
        c.out.nonstrict("close 1000 answered by a close frame without status code")
    c.expect_eof()


def plain_close(t, code=1000, reason=b"", chop=None):
    c = t.connect()
    c.close_normal(code, reason, chop=chop)


def echo_then_close(t):
    c = t.connect()
    c.send(frame(TEXT, HELLO))
    c.expect(("text", HELLO))
    c.close_normal()


add("7.1.1", "close without payload: close reply, then TCP closed", lambda t: plain_close(t, None))
add("7.1.2", "close 1000, then text and ping in the same write: both ignored",
    lambda t: close_then(t, [frame(TEXT, HELLO), frame(PING, b"after close")], "data after close"))
add("7.1.3", "close 1000 sent twice: one reply", lambda t: close_then(t, [close_frame(1000)], "a second close"))
add("7.1.4", "echo a message, then close 1000", echo_then_close)
add("7.1.5", "close 1000 written one byte at a time", lambda t: plain_close(t, 1000, chop=1))
add("7.3.1", "close with a 1-byte payload -> 1002",
    lambda t: fail_case(t, [frame(CLOSE, b"\x03")], probe=False))
add("7.3.2", "close 1000 with a 123-byte reason (125-byte payload)",
    lambda t: plain_close(t, 1000, b"r" * 123))
add("7.3.3", "close 1000 with a 124-byte reason (126-byte control frame) -> 1002",
    lambda t: fail_case(t, [close_frame(1000, b"r" * 124)], probe=False))
add("7.3.4", "close 1000 with a short valid reason",
    lambda t: plain_close(t, 1000, text("Hello World! κόσμε")))
add("7.5.1", "close 1000 with a reason that is not UTF-8 -> 1007",
    lambda t: fail_case(t, [close_frame(1000, KOSME + b"\xed\xa0\x80edited")], codes=(1007,),
                        soft_codes=(1002,), probe=False))
VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999]
for _i, _c in enumerate(VALID_CODES, 1):
    add("7.7.%d" % _i, "close with valid code %d: echoed" % _c, lambda t, code=_c: plain_close(t, code))
INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]
for _i, _c in enumerate(INVALID_CODES, 1):
    add("7.9.%d" % _i, "close with invalid code %d -> 1002" % _c,
        lambda t, code=_c: fail_case(t, [close_frame(code)], probe=False))


def server_closes_tcp(t):
    """After the closing handshake the server, not the client, closes TCP: we keep our
    socket fully open and must see the server's FIN (or reset) in time."""
    c = t.connect()
    c.send(frame(TEXT, HELLO))
    c.expect(("text", HELLO))
    t0 = time.monotonic()
    c.close_normal()
    t.info.append("TCP closed by the server %.0f ms after our close frame" % ((time.monotonic() - t0) * 1000))
    if c.reset:
        c.out.nonstrict("the server reset the TCP connection instead of closing it")


add("7.13.1", "after the closing handshake the server closes the TCP connection first",
    server_closes_tcp)

# 9.x light performance -----------------------------------------------------------------
MIB = 1 << 20


def perf(t, frames_, answers, what):
    t0 = time.monotonic()
    echo_case(t, frames_, answers, timeout=t.target.timeout * 6)
    t.info.append("%s in %.0f ms" % (what, (time.monotonic() - t0) * 1000))


add("9.1.1", "1 MiB text message",
    lambda t: perf(t, [frame(TEXT, utf8_pattern(MIB))], [("text", utf8_pattern(MIB))], "1 MiB text"))
add("9.1.2", "1 MiB text message in 16 fragments of 64 KiB",
    lambda t: perf(t, fragments(TEXT, utf8_pattern(MIB), 16), [("text", utf8_pattern(MIB))],
                   "1 MiB text in 16 fragments"))


def _bin_perf(n, nfrag):
    return fragments(BINARY, pattern(n), nfrag)


def _bin_answer(n):
    return ([("binary", pattern(n))], "%d KiB binary" % (n // 1024))


add("9.2.1", "1 MiB binary message",
    lambda t: perf(t, _bin_perf(MIB, 1), *_bin_answer(MIB)))
add("9.2.2", "1 MiB binary message in 16 fragments of 64 KiB",
    lambda t: perf(t, _bin_perf(MIB, 16), *_bin_answer(MIB)))
add("9.2.3", "4 MiB binary message",
    lambda t: perf(t, _bin_perf(4 * MIB, 1), *_bin_answer(4 * MIB)))


def pipelined(t, op, n, size):
    kind = "text" if op == TEXT else "binary"
    msgs = [(b"%08d:" % i + (b"x" * size))[:max(size, 9)] for i in range(n)]
    perf(t, [frame(op, m) for m in msgs], [(kind, m) for m in msgs],
         "%d %s messages of %d bytes" % (n, kind, max(size, 9)))


add("9.7.1", "1000 text messages of 16 bytes, pipelined in one write",
    lambda t: pipelined(t, TEXT, 1000, 16))
add("9.7.2", "1000 text messages of 1 KiB, pipelined in one write",
    lambda t: pipelined(t, TEXT, 1000, 1024))
add("9.8.1", "1000 binary messages of 16 bytes, pipelined in one write",
    lambda t: pipelined(t, BINARY, 1000, 16))

# 10.x what the server sends ------------------------------------------------------------


def mixed_traffic(t, check):
    c = t.connect()
    big = pattern(70000)
    msgs = [frame(TEXT, b"short"), frame(BINARY, big), frame(PING, b"ping"),
            frame(TEXT, utf8_pattern(200)), frame(TEXT, b""), frame(BINARY, pattern(126))]
    c.send(*msgs)
    c.expect(("text", b"short"), ("binary", big), ("pong", b"ping"), ("text", utf8_pattern(200)),
             ("text", b""), ("binary", pattern(126)))
    c.close_normal()
    t.info.append("%d server frames checked: %s" % (c.frames_seen, check))


add("10.1.1", "server frames are never masked",
    lambda t: mixed_traffic(t, "none masked"))
add("10.2.1", "server frames never have RSV bits set (no extension negotiated)",
    lambda t: mixed_traffic(t, "no RSV bits"))
add("10.3.1", "server frames use minimal length encoding; control frames unfragmented, <= 125 bytes",
    lambda t: mixed_traffic(t, "lengths minimal, control frames small"))
add("10.4.1", "unmasked text frame from the client -> 1002",
    lambda t: fail_case(t, [frame(TEXT, HELLO, mask=False)]))
add("10.4.2", "unmasked ping from the client -> 1002",
    lambda t: fail_case(t, [frame(PING, HELLO, mask=False)]))
add("10.4.3", "valid text, then an unmasked binary frame: echo, then 1002",
    lambda t: fail_case(t, [frame(TEXT, HELLO), frame(BINARY, b"\x01\x02", mask=False)],
                        before=[("text", HELLO)]))


# ---------------------------------------------------------------------------------------
# running

def case_key(cid):
    return tuple(int(x) for x in cid.split("."))


def run_case(target, case, fast_wait):
    cid, desc, fn = case
    t = Tester(target, fast_wait)
    t0 = time.monotonic()
    trace = []
    try:
        fn(t)
    except CaseFailed:
        pass
    except Exception as e:  # a bug here, or something the helpers did not expect
        t.out.status = FAILED
        t.out.notes.append("client error: %s: %s" % (type(e).__name__, e))
    finally:
        for c in t.conns:
            trace.extend(c.trace)
            c.close_socket()
    return {
        "id": cid,
        "description": desc,
        "status": t.out.status,
        "notes": t.out.notes,
        "info": t.info,
        "duration_ms": round((time.monotonic() - t0) * 1000, 1),
        "trace": list(trace) if t.out.status != OK else [],
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description="RFC 6455 conformance client for a WebSocket echo endpoint.")
    ap.add_argument("url", nargs="?", help="ws://host:port/path or wss://host:port/path of an echo endpoint")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE")
    ap.add_argument("--insecure", action="store_true", help="wss: accept any server certificate")
    ap.add_argument("--cafile", help="wss: CA bundle to verify the server certificate with")
    ap.add_argument("--origin", help="send this Origin header")
    ap.add_argument("--cases", default="*",
                    help="comma-separated case ids or glob patterns, e.g. '1.*,7.7.1' (default: all)")
    ap.add_argument("--exclude", default="", help="comma-separated case ids or patterns to skip")
    ap.add_argument("--jobs", type=int, default=8, help="cases run at the same time (default 8)")
    ap.add_argument("--timeout", type=float, default=4.0,
                    help="seconds to wait for each expected answer (default 4)")
    ap.add_argument("--fail-fast-wait", type=float, default=1.0,
                    help="6.4.x: seconds to wait for the failure before sending the rest (default 1)")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("-v", "--verbose", action="store_true", help="details for every case, traces for failures")
    a = ap.parse_args(argv)
    for stream in (sys.stdout, sys.stderr):       # descriptions hold non-ASCII text
        try:
            stream.reconfigure(errors="backslashreplace")
        except AttributeError:
            pass

    def chosen(cid):
        inc = any(fnmatch.fnmatch(cid, p.strip()) or cid == p.strip() for p in a.cases.split(",") if p.strip())
        exc = any(fnmatch.fnmatch(cid, p.strip()) for p in a.exclude.split(",") if p.strip())
        return inc and not exc

    cases = sorted((c for c in CASES if chosen(c[0])), key=lambda c: case_key(c[0]))
    if a.list:
        for cid, desc, _ in cases:
            print("%-8s %s" % (cid, desc))
        return 0
    if not a.url:
        ap.error("URL is required")
    if not cases:
        ap.error("no case matches --cases %r" % a.cases)
    try:
        target = Target(a.url, insecure=a.insecure, timeout=a.timeout, origin=a.origin, cafile=a.cafile)
    except ValueError as e:
        ap.error(str(e))

    print("wsconform: %d cases against %s, %d at a time" % (len(cases), a.url, a.jobs), flush=True)
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        results = list(pool.map(lambda c: run_case(target, c, a.fail_fast_wait), cases))
    elapsed = time.monotonic() - t0

    counts = collections.Counter(r["status"] for r in results)
    for r in results:
        print("%-8s %-10s %s (%.0f ms)" % (r["id"], r["status"], r["description"], r["duration_ms"]))
        if r["status"] != OK or a.verbose:
            for n in r["notes"]:
                print("           - %s" % n)
        if a.verbose:
            for n in r["info"]:
                print("           . %s" % n)
            if r["status"] != OK:
                for ln in r["trace"][-16:]:
                    print("             %s" % ln)
    failed = [r["id"] for r in results if r["status"] == FAILED]
    nonstrict = [r["id"] for r in results if r["status"] == NONSTRICT]
    print("OK %d, NON-STRICT %d%s, FAILED %d%s, in %.1f s"
          % (counts[OK], counts[NONSTRICT], " (" + " ".join(nonstrict) + ")" if nonstrict else "",
             counts[FAILED], " (" + " ".join(failed) + ")" if failed else "", elapsed))
    print("%d passed, %d failed" % (counts[OK] + counts[NONSTRICT], counts[FAILED]), flush=True)
    if a.json:
        doc = {
            "tool": "wsconform",
            "url": a.url,
            "duration_s": round(elapsed, 2),
            "summary": {"total": len(results), "passed": counts[OK] + counts[NONSTRICT], "ok": counts[OK],
                        "non_strict": counts[NONSTRICT], "failed": counts[FAILED]},
            "cases": results,
        }
        d = os.path.dirname(os.path.abspath(a.json))
        os.makedirs(d, exist_ok=True)
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, ensure_ascii=False)
    return 1 if counts[FAILED] else 0


if __name__ == "__main__":
    sys.exit(main())
