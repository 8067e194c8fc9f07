"""A raw WebSocket client, for malformed input.

    ws = RawWS.open(server, "ws", "/echo")          # handshake, asserts 101 + accept
    ws.send_frame(OP_TEXT, b"hi", rsv=0x4)          # any bits you like
    code, reason = ws.expect_close()                # reads to the close, answers it,
                                                    # and asserts the TCP close
    resp = http_request(server, "ws", b"GET / HTTP/1.0\\r\\n\\r\\n")   # raw HTTP

Every read has a deadline (socket timeouts): a test never hangs.
"""

import base64
import hashlib
import os
import select
import socket
import ssl
import struct
import threading
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

DEFAULT_TIMEOUT = 10.0


def accept_for(key):
    if isinstance(key, str):
        key = key.encode()
    return base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()


def new_key():
    return base64.b64encode(os.urandom(16)).decode()


def mask_bytes(data, key):
    if not data:
        return b""
    n = len(data)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def build_frame(opcode, payload=b"", fin=True, rsv=0, mask=True, mask_key=None,
                length=None):
    """Bytes of one frame.  rsv: 3-bit value (0x4 = RSV1, 0x2 = RSV2, 0x1 = RSV3).
    length: the payload length to declare (default len(payload)); the payload bytes
    are sent as given whatever it says."""
    if isinstance(payload, str):
        payload = payload.encode()
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)
    n = len(payload) if length is None else length
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if mask:
        key = mask_key if mask_key is not None else os.urandom(4)
        return head + key + mask_bytes(payload, key)
    return head + payload


def close_payload(code=None, reason=b""):
    if code is None:
        return b""
    if isinstance(reason, str):
        reason = reason.encode()
    return struct.pack("!H", code) + reason


class Frame:
    __slots__ = ("fin", "rsv", "opcode", "masked", "payload", "len_field")

    def __init__(self, fin, rsv, opcode, masked, payload, len_field=None):
        self.fin, self.rsv, self.opcode, self.masked, self.payload = (
            fin, rsv, opcode, masked, payload)
        self.len_field = len_field   # 7, 16 or 64: how the length was encoded

    def minimal_length(self):
        n = len(self.payload)
        return self.len_field == (7 if n < 126 else 16 if n < 65536 else 64)

    def close_code(self):
        assert self.opcode == OP_CLOSE
        if len(self.payload) >= 2:
            return struct.unpack("!H", self.payload[:2])[0]
        return None

    def close_reason(self):
        return self.payload[2:].decode("utf-8")

    def __repr__(self):
        p = self.payload if len(self.payload) <= 40 else self.payload[:40] + b"..."
        return (f"Frame(fin={self.fin}, rsv={self.rsv}, op={self.opcode:#x}, "
                f"masked={self.masked}, len={len(self.payload)}, {p!r})")


class Closed(Exception):
    """The TCP connection ended (EOF or reset)."""


class Response:
    def __init__(self, status, reason, headers, body=b""):
        self.status = status
        self.reason = reason
        self.headers = headers      # list of (name, value) in order
        self.body = body

    def header(self, name, default=None):
        """The value of a header (several joined with ', '), case-insensitive name."""
        vals = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(vals) if vals else default

    def has_header(self, name):
        return any(k.lower() == name.lower() for k, _ in self.headers)

    def __repr__(self):
        return f"Response({self.status} {self.reason}, {self.headers})"


class RawWS:
    def __init__(self, host, port, ssl_ctx=None, timeout=DEFAULT_TIMEOUT):
        self.host, self.port, self.timeout = host, port, timeout
        raw = socket.create_connection((host, port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_ctx is not None:
            self.sock = ssl_ctx.wrap_socket(raw, server_hostname=host)
        else:
            self.sock = raw
        self.sock.settimeout(timeout)
        self.tls = ssl_ctx is not None
        self._tls_lock = threading.Lock()
        self.buf = bytearray()
        self.eof = False

    # ---- constructors -------------------------------------------------------------------
    @classmethod
    def connect(cls, server, transport="ws", timeout=DEFAULT_TIMEOUT):
        return cls(server.host, server.port_for(transport), server.ssl_for(transport),
                   timeout)

    @classmethod
    def open(cls, server, transport="ws", path="/echo", headers=None,
             timeout=DEFAULT_TIMEOUT):
        """Connect and complete a valid handshake; assert the 101 and its accept key."""
        ws = cls.connect(server, transport, timeout)
        key = new_key()
        hdrs = {"Host": f"{server.host}:{server.port_for(transport)}",
                "Upgrade": "websocket", "Connection": "Upgrade",
                "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13"}
        hdrs.update(headers or {})
        resp = ws.request("GET", path, hdrs)
        assert resp.status == 101, f"handshake to {path} failed: {resp!r} {resp.body!r}"
        assert resp.header("Sec-WebSocket-Accept") == accept_for(key), resp
        ws.response = resp
        return ws

    # ---- low level I/O ------------------------------------------------------------------
    def _tls_io(self, fn, arg, deadline):
        """One SSL read or write, non-blocking under a lock, waiting outside it: a sender
        thread and a reader thread may share a connection, but an SSL object must not
        be used by two threads at once."""
        while True:
            with self._tls_lock:
                if self.sock.gettimeout() != 0:
                    self.sock.settimeout(0)
                try:
                    return fn(arg)
                except ssl.SSLWantReadError:
                    r, w = [self.sock], []
                except ssl.SSLWantWriteError:
                    r, w = [], [self.sock]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout("timed out")
            select.select(r, w, [], remaining)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no data from the server before the deadline")
        try:
            if self.tls:
                data = self._tls_io(self.sock.recv, 65536, deadline)
            else:
                self.sock.settimeout(remaining)
                data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no data from the server before the deadline") from None
        except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError,
                ssl.SSLZeroReturnError) as e:
            self.eof = True
            raise Closed(repr(e)) from None
        if not data:
            self.eof = True
            raise Closed("EOF")
        self.buf += data

    def _read_exact(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def send_raw(self, data):
        if not self.tls:
            self.sock.settimeout(self.timeout)
            self.sock.sendall(data)
            return
        view = memoryview(data)
        while view:
            n = self._tls_io(self.sock.send, view[:65536], time.monotonic() + self.timeout)
            view = view[n:]

    def send_frame(self, opcode, payload=b"", **kw):
        self.send_raw(build_frame(opcode, payload, **kw))

    def send_text(self, text):
        self.send_frame(OP_TEXT, text.encode() if isinstance(text, str) else text)

    def send_binary(self, data):
        self.send_frame(OP_BINARY, data)

    def send_close(self, code=None, reason=b""):
        self.send_frame(OP_CLOSE, close_payload(code, reason))

    # ---- HTTP ---------------------------------------------------------------------------
    def request(self, method, path, headers, version="HTTP/1.1", body=b""):
        lines = [f"{method} {path} {version}"]
        for k, v in (headers.items() if isinstance(headers, dict) else headers):
            lines.append(f"{k}: {v}")
        self.send_raw(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        return self.read_response(head=(method == "HEAD"))

    def read_response(self, head=False, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        end = self.buf.index(b"\r\n\r\n")
        block = bytes(self.buf[:end]).decode("latin-1")
        del self.buf[:end + 4]
        lines = block.split("\r\n")
        parts = lines[0].split(" ", 2)
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers = []
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.append((k.strip(), v.strip()))
        resp = Response(status, reason, headers)
        if status == 101 or head or status in (204, 304) or 100 <= status < 200:
            return resp
        te = (resp.header("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            body = bytearray()
            while True:
                while b"\r\n" not in self.buf:
                    self._fill(deadline)
                i = self.buf.index(b"\r\n")
                size = int(bytes(self.buf[:i]).split(b";")[0], 16)
                del self.buf[:i + 2]
                if size == 0:
                    while b"\r\n" not in self.buf:  # (no trailers expected)
                        self._fill(deadline)
                    del self.buf[:self.buf.index(b"\r\n") + 2]
                    break
                body += self._read_exact(size, deadline)
                self._read_exact(2, deadline)
            resp.body = bytes(body)
        elif resp.header("Content-Length") is not None:
            resp.body = self._read_exact(int(resp.header("Content-Length")), deadline)
        else:
            try:
                while True:
                    self._fill(deadline)
            except Closed:
                pass
            resp.body = bytes(self.buf)
            self.buf.clear()
        return resp

    # ---- frames -------------------------------------------------------------------------
    def recv_frame(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        b0, b1 = self._read_exact(2, deadline)
        n = b1 & 0x7F
        len_field = 7
        if n == 126:
            n = struct.unpack("!H", self._read_exact(2, deadline))[0]
            len_field = 16
        elif n == 127:
            n = struct.unpack("!Q", self._read_exact(8, deadline))[0]
            len_field = 64
        masked = bool(b1 & 0x80)
        key = self._read_exact(4, deadline) if masked else None
        payload = self._read_exact(n, deadline)
        if masked:
            payload = mask_bytes(payload, key)
        return Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF, masked, payload, len_field)

    def recv_message(self, timeout=None, answer_pings=True):
        """The next data message as (opcode, bytes): fragments are joined, pings are
        answered, pongs skipped.  A close frame raises AssertionError (with its code)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        opcode, parts = None, []
        while True:
            f = self.recv_frame(max(0.001, deadline - time.monotonic()))
            assert not f.masked, f"server frame is masked: {f!r}"
            assert f.rsv == 0, f"server frame has RSV bits: {f!r}"
            assert f.minimal_length(), f"length not minimally encoded: {f!r}"
            if f.opcode == OP_PING:
                if answer_pings:
                    self.send_frame(OP_PONG, f.payload)
                continue
            if f.opcode == OP_PONG:
                continue
            if f.opcode == OP_CLOSE:
                raise AssertionError(f"expected a message, got close {f.close_code()} "
                                     f"{f.payload[2:]!r}")
            if opcode is None:
                assert f.opcode in (OP_TEXT, OP_BINARY), f"unexpected frame {f!r}"
                opcode = f.opcode
            else:
                assert f.opcode == OP_CONT, f"expected a continuation, got {f!r}"
            parts.append(f.payload)
            if f.fin:
                return opcode, b"".join(parts)

    def recv_control(self, opcode, timeout=None):
        """Skip data frames until a control frame of `opcode`; return it."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            f = self.recv_frame(max(0.001, deadline - time.monotonic()))
            if f.opcode == opcode:
                return f
            if f.opcode == OP_CLOSE:
                raise AssertionError(f"expected opcode {opcode:#x}, got close "
                                     f"{f.close_code()} {f.payload[2:]!r}")

    def expect_close(self, timeout=None, reply=True, skip_data=True):
        """Read until the server's close frame; return (code, reason_bytes).  Then answer
        it with the same payload (unless reply=False) and assert the server closes TCP.
        Data frames before the close are skipped if skip_data, else they fail."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                f = self.recv_frame(max(0.001, deadline - time.monotonic()))
            except Closed:
                raise AssertionError("TCP closed without a close frame") from None
            if f.opcode == OP_CLOSE:
                break
            if f.opcode in (OP_PING, OP_PONG):
                continue
            assert skip_data, f"expected a close frame, got {f!r}"
        assert not f.masked, f"server close frame is masked: {f!r}"
        code = f.close_code()
        reason = f.payload[2:]
        if reply:
            try:
                self.send_frame(OP_CLOSE, f.payload[:2])
            except OSError:
                pass  # the server may already have closed TCP: that is allowed
        self.expect_tcp_close(max(0.5, deadline - time.monotonic()))
        return code, reason

    def expect_tcp_close(self, timeout=None):
        """Assert the server closes the TCP connection (EOF or reset) in time; any data
        frames still arriving are discarded."""
        deadline = time.monotonic() + (timeout or self.timeout)
        self.buf.clear()
        while True:
            try:
                self._fill(deadline)
            except Closed:
                return
            except TimeoutError:
                raise AssertionError("the server did not close the TCP connection") from None
            self.buf.clear()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def expect_code(conn, code, timeout=None):
    """The server fails the connection with close `code` and nothing else: no data frame
    may come before the close frame (the offending message, or anything after it, must
    not be delivered or echoed; pings and pongs are allowed), and a TCP close without a
    close frame fails.  Then the close is answered and the TCP close asserted.  Any data
    the test expects before the failure must be read before calling this.  Returns the
    close reason (bytes)."""
    got, reason = conn.expect_close(timeout=timeout, skip_data=False)
    assert got == code, f"expected close {code}, got {got} {reason!r}"
    return reason


def http_request(server, transport, raw, timeout=DEFAULT_TIMEOUT):
    """Send raw request bytes on a new connection; return the parsed Response."""
    ws = RawWS.connect(server, transport, timeout)
    try:
        ws.send_raw(raw)
        return ws.read_response(head=raw.startswith(b"HEAD "))
    finally:
        ws.close()


def upgrade_request(server, transport, path="/echo", headers=None, drop=(), method="GET",
                    version="HTTP/1.1", timeout=DEFAULT_TIMEOUT):
    """Send a WebSocket upgrade request (valid unless headers override/drop parts) and
    return (Response, key).  headers: dict of replacements; drop: names to omit."""
    key = new_key()
    hdrs = {"Host": f"{server.host}:{server.port_for(transport)}",
            "Upgrade": "websocket", "Connection": "Upgrade",
            "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13"}
    for k, v in (headers or {}).items():
        hdrs[k] = v
    for k in drop:
        hdrs.pop(k, None)
    ws = RawWS.connect(server, transport, timeout)
    try:
        lines = [f"{method} {path} {version}"] + [f"{k}: {v}" for k, v in hdrs.items()]
        ws.send_raw(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        resp = ws.read_response(head=(method == "HEAD"))
    finally:
        ws.close()
    return resp, hdrs.get("Sec-WebSocket-Key", key)
