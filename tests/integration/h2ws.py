"""h2ws - WebSockets over HTTP/2 (RFC 8441) for the tests, on python3-h2 + python3-wsproto.

    from h2ws import H2Client
    cli = H2Client("127.0.0.1", port, ssl_context=ctx)        # h2 over TLS (ALPN)
    cli = H2Client("127.0.0.1", port)                          # h2c, prior knowledge
    cli = H2Client("127.0.0.1", port, mode="upgrade")          # h2c via Upgrade: h2c
    cli.connect_protocol          # the server's SETTINGS_ENABLE_CONNECT_PROTOCOL
    st, hdrs, body = cli.get("/")                               # an ordinary request
    ws = cli.websocket("/echo", origin=..., deflate=True)       # extended CONNECT -> 200
    ws.send_text("hi"); ws.recv()  -> ("text", "hi")
    ws.close(1000); ws.recv() -> ("close", 1000, ""); ws.recv() -> ("eof",)
    ws.stream.reset()             # RST_STREAM (CANCEL) on that stream only
    cli.close()

One I/O thread per connection owns the socket (TLS through a memory BIO, so no SSL call
is ever made from two threads); other threads only queue bytes and wake it.  Received
DATA is acknowledged at once (the tests buffer without bound); sending honours the
server's flow-control windows.  A refused extended CONNECT raises HandshakeError with
the status and headers.  `raw_stream()` gives the stream as a byte pipe (what
wsconform's h2 transport uses).
"""

import os
import selectors
import socket
import ssl
import threading
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import wsproto.connection
import wsproto.events
import wsproto.extensions
import wsproto.frame_protocol
import wsproto.utilities

WS_TIMEOUT = 10.0


class HandshakeError(Exception):
    def __init__(self, status, headers, body=b""):
        super().__init__(f"extended CONNECT answered {status}")
        self.status = status
        self.headers = headers
        self.body = body


class StreamReset(ConnectionResetError):
    pass


class Stream:
    """One h2 stream: response headers, a byte buffer of its DATA, its end or reset."""

    def __init__(self, client, sid):
        self.client = client
        self.sid = sid
        self.status = None
        self.headers = {}
        self.buf = bytearray()
        self.ended = False          # the server's END_STREAM
        self.reset_code = None      # RST_STREAM from the server (or ours)
        self.on_data = None         # callback(bytes) from the I/O thread, or buffer
        self.hold = False           # acknowledge DATA only as recv() takes it
        self.cond = threading.Condition(client.lock)

    # -- called by the I/O thread with the lock held
    def _deliver(self, data):
        if self.on_data:
            self.on_data(data)
        else:
            self.buf += data
        self.cond.notify_all()

    def wait_response(self, timeout=WS_TIMEOUT):
        with self.cond:
            if not self.cond.wait_for(lambda: self.status is not None or self.reset_code is not None
                                      or self.ended or self.client.dead, timeout):
                raise TimeoutError(f"stream {self.sid}: no response in {timeout}s")
        return self.status

    def send(self, data, end_stream=False, timeout=WS_TIMEOUT):
        self.client._send_data(self.sid, bytes(data), end_stream, timeout)

    def end(self):
        self.client._send_data(self.sid, b"", True, WS_TIMEOUT)

    def reset(self, code=h2.errors.ErrorCodes.CANCEL):
        self.client._reset(self.sid, code)

    def recv(self, n=1 << 20, timeout=WS_TIMEOUT):
        """Bytes of the stream; b"" at its end; StreamReset when reset; TimeoutError."""
        with self.cond:
            if not self.cond.wait_for(lambda: self.buf or self.ended or self.reset_code is not None
                                      or self.client.dead, timeout):
                raise TimeoutError()
            if self.buf:
                d = bytes(self.buf[:n])
                del self.buf[:n]
                if self.hold and not self.client.dead and self.reset_code is None:
                    try:
                        self.client.conn.acknowledge_received_data(len(d), self.sid)
                        self.client._flush_locked()
                    except h2.exceptions.StreamClosedError:
                        pass
                return d
            if self.ended:          # END_STREAM, maybe followed by RST_STREAM(NO_ERROR)
                return b""
            if self.reset_code is not None:
                raise StreamReset(f"stream {self.sid} reset ({self.reset_code})")
            if self.client.dead and not self.ended:
                raise ConnectionResetError("h2 connection closed")
            return b""


class _Connection(h2.connection.H2Connection):
    """python-h2 closes the connection at any GOAWAY and then refuses every frame; a
    graceful one (NO_ERROR, covering our streams: a server going away) lets the open
    streams run to their end (RFC 9113 6.8), which is what a graceful restart does."""

    def _receive_goaway_frame(self, frame):
        frames, events = super()._receive_goaway_frame(frame)
        if frame.error_code == 0 and frame.last_stream_id >= self.highest_outbound_stream_id:
            self.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        return frames, events


class H2Client:
    def __init__(self, host, port, ssl_context=None, mode=None, timeout=WS_TIMEOUT,
                 server_hostname=None, validate=True, authority=None, hold_upgrade=True):
        self.host, self.port = host, port
        self.tls = ssl_context is not None
        self.mode = mode or ("tls" if self.tls else "prior")
        self.authority = authority or f"{host}:{port}"
        self.timeout = timeout
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.streams = {}
        self.dead = False
        self.terminated = None      # ConnectionTerminated event
        self.settings_seen = False
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                        validate_outbound_headers=validate,
                                        normalize_outbound_headers=validate)
        self.conn = _Connection(config=cfg)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sslobj = None
        self.rawout = bytearray()
        if self.tls:
            ssl_context.set_alpn_protocols(["h2"])
            self._tls_handshake(ssl_context, server_hostname or host)
        upgrade_stream = None
        if self.mode == "upgrade":
            upgrade_stream = self._h2c_upgrade(hold_upgrade)
        else:
            self.conn.initiate_connection()
            self.conn.increment_flow_control_window(1 << 30)
            self.rawout += self._encrypt(self.conn.data_to_send())
        self.sock.setblocking(False)
        self.rpipe, self.wpipe = os.pipe()
        os.set_blocking(self.wpipe, False)
        self.thread = threading.Thread(target=self._run, name="h2ws-io", daemon=True)
        self.thread.start()
        with self.changed:
            if not self.changed.wait_for(lambda: self.settings_seen or self.dead, timeout):
                raise TimeoutError("no SETTINGS from the server")
        if self.dead and not self.settings_seen:
            raise ConnectionError("h2 connection failed before SETTINGS")
        # Over h2c Upgrade, the response to the upgraded request comes on stream 1
        # (read_response(upgrade_response)).
        self.upgrade_response = upgrade_stream

    # ---- setup --------------------------------------------------------------------------
    def _tls_handshake(self, ctx, hostname):
        self.inbio, self.outbio = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.sslobj = ctx.wrap_bio(self.inbio, self.outbio, server_hostname=hostname)
        while True:
            try:
                self.sslobj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.sock.sendall(self.outbio.read())
                d = self.sock.recv(65536)
                if not d:
                    raise ConnectionError("TLS handshake: connection closed")
                self.inbio.write(d)
        self.sock.sendall(self.outbio.read())
        if self.sslobj.selected_alpn_protocol() != "h2":
            raise ConnectionError(f"ALPN chose {self.sslobj.selected_alpn_protocol()!r}, not h2")

    def _h2c_upgrade(self, hold):
        """HTTP/1.1 GET / with Upgrade: h2c; the response to it arrives on stream 1."""
        # hold: a small initial stream window keeps the upgraded request's response
        # (stream 1) open until it is read (Stream.hold), so that the connection is not
        # idle before the client's first h2 request.  (On the event MPM that does not
        # help: httpd closes an h2c-upgraded connection the first time mod_http2 hands
        # it back to the MPM, docs/http2.md.)
        if hold:
            self.conn.local_settings = h2.settings.Settings(
                client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1024,
                                             h2.settings.SettingCodes.ENABLE_PUSH: 0})
        settings = self.conn.initiate_upgrade_connection()
        req = (f"GET / HTTP/1.1\r\nHost: {self.authority}\r\nConnection: Upgrade, HTTP2-Settings"
               f"\r\nUpgrade: h2c\r\nHTTP2-Settings: {settings.decode()}\r\n\r\n").encode()
        self.sock.sendall(req)
        head = b""
        while b"\r\n\r\n" not in head:
            d = self.sock.recv(1)       # byte by byte: what follows the 101 is h2
            if not d:
                raise ConnectionError("connection closed during the h2c upgrade")
            head += d
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"h2c upgrade refused: {head.splitlines()[0]!r}")
        self.conn.increment_flow_control_window(1 << 30)
        self.rawout += self.conn.data_to_send()
        st = Stream(self, 1)
        st.hold = hold
        self.streams[1] = st
        return st

    def _encrypt(self, data):
        if not self.sslobj:
            return data
        if data:
            self.sslobj.write(data)
        return self.outbio.read()

    # ---- the I/O thread -----------------------------------------------------------------
    def _wake(self):
        try:
            os.write(self.wpipe, b"x")
        except BlockingIOError:
            pass

    def _flush_locked(self):
        """Move h2's pending bytes to the raw output (lock held) and wake the I/O thread."""
        data = self.conn.data_to_send()
        if data:
            self.rawout += self._encrypt(data)
            self._wake()

    def _run(self):
        sel = selectors.DefaultSelector()
        sel.register(self.rpipe, selectors.EVENT_READ)
        sel.register(self.sock, selectors.EVENT_READ)
        want_write = False
        try:
            while True:
                with self.lock:
                    pending = bool(self.rawout)
                    if self.dead:
                        return
                if pending != want_write:
                    want_write = pending
                    sel.modify(self.sock, selectors.EVENT_READ
                               | (selectors.EVENT_WRITE if pending else 0))
                for key, ev in sel.select(1.0):
                    if key.fileobj == self.rpipe:
                        os.read(self.rpipe, 4096)
                        continue
                    if ev & selectors.EVENT_WRITE:
                        self._write_some()
                    if ev & selectors.EVENT_READ:
                        if not self._read_some():
                            return
        except OSError:
            pass
        finally:
            sel.close()
            with self.lock:
                self.dead = True
                for st in self.streams.values():
                    st.cond.notify_all()
                self.changed.notify_all()

    def _write_some(self):
        with self.lock:
            data = bytes(self.rawout[:1 << 20])
        try:
            n = self.sock.send(data)
        except BlockingIOError:
            return
        with self.lock:
            del self.rawout[:n]

    def _read_some(self):
        try:
            d = self.sock.recv(1 << 18)
        except BlockingIOError:
            return True
        except OSError:
            d = b""
        with self.lock:
            if not d:
                return False
            if self.sslobj:
                self.inbio.write(d)
                plain = bytearray()
                while True:
                    try:
                        chunk = self.sslobj.read(1 << 18)
                    except ssl.SSLWantReadError:
                        break
                    except ssl.SSLError:
                        return False
                    if not chunk:
                        break
                    plain += chunk
                d = bytes(plain)
            try:
                events = self.conn.receive_data(d) if d else []
            except h2.exceptions.ProtocolError:
                self._flush_locked()
                return False
            for e in events:
                self._on_event(e)
            self._flush_locked()
            self.changed.notify_all()
        return True

    def _on_event(self, e):
        st = self.streams.get(getattr(e, "stream_id", None) or -1)
        if isinstance(e, h2.events.RemoteSettingsChanged):
            self.settings_seen = True
        elif isinstance(e, h2.events.ResponseReceived) and st:
            hdrs = {}
            for k, v in e.headers:
                hdrs[k] = hdrs[k] + ", " + v if k in hdrs else v
            st.headers = hdrs
            st.status = int(hdrs.get(":status", "0"))
            st.cond.notify_all()
        elif isinstance(e, h2.events.DataReceived):
            if not (st and st.hold):
                self.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            if st:
                st._deliver(e.data)
        elif isinstance(e, h2.events.StreamEnded) and st:
            st.ended = True
            if st.on_data:
                st.on_data(None)
            st.cond.notify_all()
        elif isinstance(e, h2.events.StreamReset) and st:
            st.reset_code = e.error_code
            if st.on_data and not st.ended:
                st.on_data(None)
            st.cond.notify_all()
        elif isinstance(e, h2.events.ConnectionTerminated):
            self.terminated = e


    # ---- streams --------------------------------------------------------------------------
    @property
    def connect_protocol(self):
        return self.conn.remote_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL, 0)

    def open_stream(self, headers, end_stream=False):
        with self.lock:
            if self.dead:
                raise ConnectionError("h2 connection is closed")
            sid = self.conn.get_next_available_stream_id()
            st = Stream(self, sid)
            self.streams[sid] = st
            self.conn.send_headers(sid, headers, end_stream=end_stream)
            self._flush_locked()
        return st

    def _send_data(self, sid, data, end_stream, timeout):
        deadline = time.monotonic() + timeout
        with self.lock:
            view = memoryview(data)
            while True:
                if self.dead:
                    raise ConnectionResetError("h2 connection closed")
                st = self.streams[sid]
                if st.reset_code is not None:
                    raise StreamReset(f"stream {sid} reset ({st.reset_code})")
                n = min(len(view), self.conn.local_flow_control_window(sid),
                        self.conn.max_outbound_frame_size)
                if n > 0 or not len(view):
                    last = n == len(view)
                    self.conn.send_data(sid, bytes(view[:n]), end_stream=end_stream and last)
                    self._flush_locked()
                    view = view[n:]
                    if last:
                        return
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"stream {sid}: no flow-control window in {timeout}s")
                self.changed.wait(min(left, 1.0))

    def _reset(self, sid, code):
        with self.lock:
            st = self.streams[sid]
            if st.reset_code is None and not self.dead:
                try:
                    self.conn.reset_stream(sid, code)
                except h2.exceptions.StreamClosedError:
                    pass
                self._flush_locked()
            st.reset_code = st.reset_code if st.reset_code is not None else code
            st.cond.notify_all()

    def connect_headers(self, path, protocol="websocket", extra=()):
        return [(":method", "CONNECT"), (":protocol", protocol),
                (":scheme", "https" if self.tls else "http"), (":path", path),
                (":authority", self.authority), ("sec-websocket-version", "13")] + list(extra)

    def get(self, path, headers=(), timeout=WS_TIMEOUT):
        """An ordinary GET on its own stream: (status, headers, body)."""
        st = self.open_stream([(":method", "GET"), (":scheme", "https" if self.tls else "http"),
                               (":path", path), (":authority", self.authority)] + list(headers),
                              end_stream=True)
        return self.read_response(st, timeout)

    def read_response(self, st, timeout=WS_TIMEOUT):
        st.wait_response(timeout)
        body = bytearray()
        while True:
            d = st.recv(timeout=timeout)
            if not d:
                break
            body += d
        return st.status, st.headers, bytes(body)

    def raw_stream(self, path, extra=(), timeout=WS_TIMEOUT):
        """Extended CONNECT; the stream as a byte pipe once answered 200."""
        st = self.open_stream(self.connect_headers(path, extra=extra))
        st.wait_response(timeout)
        if st.status != 200:
            body = b""
            if st.status is not None:
                try:
                    body = self.read_response(st, timeout)[2]
                except (TimeoutError, ConnectionError):
                    pass
            raise HandshakeError(st.status, st.headers, body)
        return st

    def websocket(self, path, origin=None, deflate=False, protocols=(), headers=(),
                  timeout=WS_TIMEOUT):
        extra = list(headers)
        if origin:
            extra.append(("origin", origin))
        if protocols:
            extra.append(("sec-websocket-protocol", ", ".join(protocols)))
        pmd = None
        if deflate:
            pmd = wsproto.extensions.PerMessageDeflate(client_max_window_bits=15)
            extra.append(("sec-websocket-extensions", "permessage-deflate; client_max_window_bits"))
        st = self.raw_stream(path, extra, timeout)
        exts = []
        agreed = st.headers.get("sec-websocket-extensions")
        if pmd and agreed:
            pmd.finalize(agreed)
            exts = [pmd]
        return WebSocket(st, exts)

    def close(self):
        with self.lock:
            if not self.dead:
                try:
                    self.conn.close_connection()
                    self._flush_locked()
                except h2.exceptions.ProtocolError:
                    pass
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            with self.lock:
                if not self.rawout or self.dead:
                    break
            time.sleep(0.01)    # let the I/O thread write GOAWAY, with a deadline
        with self.lock:
            self.dead = True
        self._wake()
        self.thread.join(5)
        for fd in (self.rpipe, self.wpipe):
            os.close(fd)
        self.sock.close()


class WebSocket:
    """RFC 6455 frames on an h2 stream (wsproto).  recv() returns
    ("text", str) ("binary", bytes) ("ping", b) ("pong", b) ("close", code, reason)
    ("eof",) (the server ended the stream) or ("reset", code) (RST_STREAM)."""

    def __init__(self, stream, extensions=()):
        self.stream = stream
        self.extensions = list(extensions)
        self.ws = wsproto.connection.Connection(wsproto.connection.ConnectionType.CLIENT,
                                                extensions=self.extensions or None)
        self.events = []
        self.parts = []
        self.cond = stream.cond
        self.auto_pong = True
        with self.cond:
            pending = bytes(stream.buf)
            stream.buf.clear()
            stream.on_data = self._on_data
            if pending:
                self._on_data(pending)
            if stream.ended or stream.reset_code is not None:
                self._on_data(None)

    @property
    def deflate(self):
        return bool(self.extensions)

    def _on_data(self, data):           # lock held (I/O thread, or __init__)
        if data is None:
            if self.stream.reset_code is not None:
                self.events.append(("reset", self.stream.reset_code))
            else:
                self.events.append(("eof",))
            self.cond.notify_all()
            return
        if not data:                    # an empty DATA frame (END_STREAM)
            return
        try:
            self.ws.receive_data(data)
            for ev in self.ws.events():
                self._on_ws_event(ev)
        except wsproto.utilities.LocalProtocolError as e:
            self.events.append(("error", str(e)))
        self.cond.notify_all()

    def _on_ws_event(self, ev):
        E = wsproto.events
        if isinstance(ev, (E.TextMessage, E.BytesMessage)):
            self.parts.append(ev.data)
            if ev.message_finished:
                kind = "text" if isinstance(ev, E.TextMessage) else "binary"
                joined = ("" if kind == "text" else b"").join(self.parts)
                self.parts = []
                self.events.append((kind, joined))
        elif isinstance(ev, E.Ping):
            self.events.append(("ping", bytes(ev.payload)))
            if self.auto_pong:
                self._send_later(self.ws.send(ev.response()))
        elif isinstance(ev, E.Pong):
            self.events.append(("pong", bytes(ev.payload)))
        elif isinstance(ev, E.CloseConnection):
            self.events.append(("close", ev.code, ev.reason or ""))

    def _send_later(self, data):
        """From the I/O thread: queue DATA without waiting for flow control (small)."""
        c = self.stream.client
        if self.stream.reset_code is None and not self.stream.ended:
            try:
                c.conn.send_data(self.stream.sid, data)
            except h2.exceptions.ProtocolError:
                return
            c._flush_locked()

    def _send(self, event):
        with self.cond:
            data = self.ws.send(event)
        self.stream.send(data)

    def send_text(self, s):
        self._send(wsproto.events.TextMessage(data=s))

    def send_bytes(self, b):
        self._send(wsproto.events.BytesMessage(data=bytes(b)))

    def send(self, msg):
        if isinstance(msg, str):
            self.send_text(msg)
        else:
            self.send_bytes(msg)

    def ping(self, payload=b""):
        self._send(wsproto.events.Ping(payload=payload))

    def close(self, code=1000, reason=""):
        self._send(wsproto.events.CloseConnection(code=code, reason=reason))

    def recv(self, timeout=WS_TIMEOUT, skip_ping=True):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                while self.events:
                    ev = self.events.pop(0)
                    if skip_ping and ev[0] == "ping":
                        continue
                    return ev
                if self.stream.client.dead:
                    return ("reset", "connection closed")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no WebSocket event in %.1fs" % timeout)
                self.cond.wait(left)

    def recv_message(self, timeout=WS_TIMEOUT):
        """The next text or binary message (pongs skipped); anything else raises."""
        while True:
            ev = self.recv(timeout)
            if ev[0] in ("text", "binary"):
                return ev[1]
            if ev[0] == "pong":
                continue
            raise AssertionError(f"expected a message, got {ev!r}")

    def close_handshake(self, code=1000, reason="", timeout=WS_TIMEOUT):
        """Send close, return the server's close event, and see the stream end."""
        self.close(code, reason)
        got = None
        while True:
            ev = self.recv(timeout)
            if ev[0] == "close":
                got = ev
            elif ev[0] in ("eof", "reset"):
                return got, ev
