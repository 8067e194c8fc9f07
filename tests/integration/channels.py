"""Clients of channels over plain HTTP (docs/channels.md) for the tests: publish and
inspect with http.client, an EventSource stream read from a raw socket (parsed here, not
by a library: the framing is what is under test), long-poll, and a WebSocket subscriber
on rawws.RawWS."""

import http.client
import json
import socket
import time

from rawws import OP_CLOSE, OP_TEXT, RawWS


def request(srv, method, path, body=None, headers=None, timeout=10):
    """(status, headers dict with lower-case names, body bytes)."""
    conn = http.client.HTTPConnection(srv.host, srv.port_for("http"), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def publish(srv, path, data, ctype="text/plain"):
    """POST data; return the answer's JSON (asserting 200)."""
    body = data.encode() if isinstance(data, str) else data
    status, hdrs, out = request(srv, "POST", path, body, {"Content-Type": ctype})
    assert status == 200, (status, out)
    assert hdrs["content-type"] == "application/json"
    return json.loads(out)


def info(srv, path):
    status, _, out = request(srv, "GET", path)
    return status, (json.loads(out) if status == 200 else None)


def wait_subscribers(srv, path, n, timeout=10.0):
    """Poll the publisher's GET (with a deadline) until the channel has n subscribers."""
    deadline = time.monotonic() + timeout
    while True:
        status, doc = info(srv, path)
        if status == 200 and doc["subscribers"] >= n:
            return doc
        assert time.monotonic() < deadline, f"{path}: fewer than {n} subscribers: {doc}"
        time.sleep(0.02)      # polling server state for an event, with a deadline


def poll(srv, path, last_id=None, header=False, timeout=30):
    """One long-poll: (status, headers, JSON or None)."""
    hdrs = {}
    if last_id and header:
        hdrs["Last-Event-ID"] = last_id
    elif last_id:
        path += ("&" if "?" in path else "?") + "last_event_id=" + last_id
    status, h, body = request(srv, "GET", path, headers=hdrs, timeout=timeout)
    return status, h, (json.loads(body) if status == 200 else None)


class SSE:
    """An EventSource subscriber on a raw socket: the head is checked, chunked transfer
    coding (the blocking driver's stream goes through the request's filters) undone."""

    def __init__(self, srv, path, last_id=None, timeout=10):
        self.sock = socket.create_connection((srv.host, srv.port_for("http")), timeout)
        extra = f"Last-Event-ID: {last_id}\r\n" if last_id else ""
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {srv.host}\r\nAccept: "
                          f"text/event-stream\r\n{extra}\r\n".encode())
        self.buf = b""
        self.raw = b""
        head = self._until(b"\r\n\r\n", raw=True)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.lower(): v.strip() for k, v in
                        (ln.split(":", 1) for ln in lines[1:] if ln)}
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        self.comments = 0
        self.retry = None

    def _recv(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("stream ended")
        return data

    def _until(self, sep, raw=False):
        """Bytes up to and including sep: of the socket (raw) or of the decoded body."""
        while True:
            src = self.raw if raw else self.buf
            i = src.find(sep)
            if i >= 0:
                out = src[:i + len(sep)]
                if raw:
                    self.raw = src[i + len(sep):]
                else:
                    self.buf = src[i + len(sep):]
                return out
            if raw:
                self.raw += self._recv()
            else:
                self._feed()

    def _feed(self):
        if not self.chunked:
            self.buf += self.raw if self.raw else self._recv()
            self.raw = b""
            return
        size_line = self._until(b"\r\n", raw=True)
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            raise EOFError("stream ended (last chunk)")
        while len(self.raw) < size + 2:
            self.raw += self._recv()
        self.buf += self.raw[:size]
        self.raw = self.raw[size + 2:]

    def event(self):
        """The next event as a dict (id, event, data), skipping comments and retry."""
        ev, data = {}, []
        while True:
            line = self._until(b"\n")[:-1].decode()
            if line == "":
                if data or ev:
                    ev["data"] = "\n".join(data)
                    return ev
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                data.append(value)
            elif field == "retry":
                self.retry = int(value)
            else:
                ev[field] = value

    def comment(self):
        """Wait for the next keep-alive comment (events before it are returned)."""
        seen = []
        start = self.comments
        while self.comments == start:
            line = self._until(b"\n")[:-1].decode()
            if line.startswith(":"):
                self.comments += 1
            elif line:
                seen.append(line)
        return seen

    def expect_end(self):
        """The server ends the stream (EOF, or the last chunk)."""
        try:
            while True:
                self._feed()
        except EOFError:
            return

    def close(self):
        self.sock.close()


class WSSub:
    """A WebSocket subscriber: every message a JSON text frame."""

    def __init__(self, srv, path):
        self.ws = RawWS.open(srv, "ws", path)

    def message(self, timeout=10):
        opcode, payload = self.ws.recv_message(timeout)
        assert opcode == OP_TEXT
        return json.loads(payload)

    def expect_close(self, timeout=10):
        f = self.ws.recv_control(OP_CLOSE, timeout)
        return f.close_code(), f.payload[2:].decode()

    def close(self):
        self.ws.close()
