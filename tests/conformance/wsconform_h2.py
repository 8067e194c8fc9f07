#!/usr/bin/python3
"""wsconform over HTTP/2: the same RFC 6455 cases, each on a WebSocket carried by an h2
stream (RFC 8441 extended CONNECT) instead of an upgraded HTTP/1.1 connection.

    wsconform_h2.py URL [wsconform options]

ws://host:port/path uses h2c with prior knowledge, wss://... h2 over TLS (ALPN).  Each
case opens its own h2 connection and one stream on it.  Over h2 the frames are the same
bytes, so the cases are unchanged; what differs is the transport under them:
  "the server closes TCP"      is the server ending its side of the stream (END_STREAM);
  "TCP reset"                  is an RST_STREAM of the stream (or the connection failing);
  closing our socket           resets the stream (CANCEL) and closes the h2 connection.
The opening handshake checks a 200 answer to the extended CONNECT with no extension or
subprotocol chosen.  Needs python3-h2 and python3-wsproto (tests/integration/h2ws.py).
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

import wsconform  # noqa: E402
import h2ws  # noqa: E402


class H2StreamSocket:
    """The part of a socket wsconform's Conn uses, on one h2 stream."""

    def __init__(self, client, stream):
        self.client, self.stream = client, stream
        self.timeout = client.timeout

    def settimeout(self, t):
        self.timeout = t

    def sendall(self, data):
        try:
            self.stream.send(data, timeout=self.timeout if self.timeout is not None else 3600)
        except TimeoutError:
            raise wsconform.socket.timeout("no flow-control window")

    def recv(self, n):
        return self.stream.recv(n, timeout=self.timeout if self.timeout is not None else 3600)

    def close(self):
        try:
            if self.stream.reset_code is None and not self.stream.ended:
                self.stream.reset()
        finally:
            self.client.close()


def h2_open(self):
    """Conn.open over h2: extended CONNECT on a new h2 connection."""
    t = self.t
    try:
        client = h2ws.H2Client(t.host, t.port, ssl_context=t.ctx, timeout=t.timeout,
                               authority=t.host_header)
    except (OSError, ConnectionError, TimeoutError) as e:
        self.out.fail("cannot open an h2 connection to %s:%d: %s" % (t.host, t.port, e))
    if not client.connect_protocol:
        client.close()
        self.out.fail("the server does not send SETTINGS_ENABLE_CONNECT_PROTOCOL")
    extra = [("user-agent", "wsconform-h2")]
    if t.origin:
        extra.append(("origin", t.origin))
    self.trace.append("-> CONNECT :protocol websocket %s (h2 stream)" % t.resource)
    try:
        stream = client.raw_stream(t.resource, extra, timeout=t.timeout)
    except h2ws.HandshakeError as e:
        client.close()
        self.out.fail("extended CONNECT refused: %s" % e.status)
    except (OSError, ConnectionError, TimeoutError) as e:
        client.close()
        self.out.fail("no answer to the extended CONNECT: %s" % e)
    hdrs = stream.headers
    if "sec-websocket-extensions" in hdrs:
        self.out.fail("server accepted an extension that was not offered: %r"
                      % hdrs["sec-websocket-extensions"])
    if "sec-websocket-protocol" in hdrs:
        self.out.fail("server chose a subprotocol that was not offered: %r"
                      % hdrs["sec-websocket-protocol"])
    self.sock = H2StreamSocket(client, stream)
    self.trace.append("<- 200 (stream %d)" % stream.sid)
    return self


wsconform.Conn.open = h2_open

if __name__ == "__main__":
    sys.exit(wsconform.main())
