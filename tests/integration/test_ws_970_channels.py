"""Channels over plain HTTP (docs/channels.md): publish with POST, subscribe by
WebSocket, EventSource and long-poll on one URL, history and resume, the lost-gap
signal, DELETE, refusals.  The event MPM (subscribers are sessions of the event loop);
one test on worker shows the blocking driver.

"Nothing else arrives" is checked with a fence: a later message whose id is the next
one the subscriber gets."""

import itertools
import signal
import socket
import threading
import time

import pytest

from channels import SSE, WSSub, info, poll, publish, request, wait_subscribers

HISTORY = 5
LOCATIONS = [
    {"path": "/pub", "plugin": None, "extra": "WebSocketChannelPublisher on\n"
                                              "Require ip 127.0.0.1\n"},
    {"path": "/small", "plugin": None, "extra": "WebSocketChannelPublisher on\n"
                                                "WebSocketMaxMessageSize 1000\n"},
    {"path": "/sub", "plugin": None, "extra": "WebSocketChannelSubscriber on\n"
                                              "WebSocketChannelPollTimeout 1\n"},
    {"path": "/suball", "plugin": None, "extra": "WebSocketChannelSubscriber on\n"
                                                 "WebSocketChannelFirstMessage all\n"},
    {"path": "/sublast2", "plugin": None, "extra": "WebSocketChannelSubscriber on\n"
                                                   "WebSocketChannelFirstMessage 2\n"},
    {"path": "/ka", "plugin": None, "extra": "WebSocketChannelSubscriber on\n"
                                             "WebSocketPingInterval 1\n"},
    {"path": "/smallq", "plugin": None, "extra": "WebSocketChannelSubscriber on\n"
                                                 "WebSocketMaxQueue 16384\n"},
    {"path": "/two", "plugin": None, "extra": "WebSocketChannelSubscriber on\n"
                                              "WebSocketChannelMaxSubscribers 2\n"},
]
# Small server socket buffers: a reader that does not read fills its queue soon.
GLOBAL = f"WebSocketChannelHistory {HISTORY}\nSendBufferSize 16384\n"
_ids = itertools.count()


def channel(name):
    return f"{name}{next(_ids)}x{time.monotonic_ns() % 1000000}"


@pytest.fixture(scope="module")
def server(httpd_factory):
    return httpd_factory(mpm="event", tls=False, locations=LOCATIONS, extra_global=GLOBAL)


def in_thread(fn, *args):
    """Run fn in a thread; the returned function joins it and gives its result."""
    out = {}

    def run():
        try:
            out["v"] = fn(*args)
        except BaseException as e:   # re-raised in the caller
            out["e"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()

    def result(timeout=30):
        t.join(timeout)
        assert not t.is_alive(), "thread did not finish"
        if "e" in out:
            raise out["e"]
        return out["v"]
    return result


MESSAGES = ["first headline", "two\r\nlines\rand\nmore", "caf\u00e9 \u2603"]


def test_publish_reaches_every_transport(server):
    """One publish sequence reaches a WebSocket, an EventSource and a long-poll
    subscriber with the same ids, in the same order; multi-line data is split into one
    data: line per line (CR, LF, CRLF); a binary message travels base64."""
    ch = channel("news")
    ws = WSSub(server, f"/sub/{ch}")
    sse = SSE(server, f"/sub/{ch}")
    assert sse.status == 200 and sse.headers["content-type"].startswith("text/event-stream")
    waiting = in_thread(poll, server, f"/sub/{ch}")
    wait_subscribers(server, f"/pub/{ch}", 3)
    ids = [publish(server, f"/pub/{ch}", m)["id"] for m in MESSAGES]
    bin_id = publish(server, f"/pub/{ch}", b"\x00\xff", "application/octet-stream")["id"]
    assert [tuple(map(int, i.split("-"))) for i in ids] == sorted(
        tuple(map(int, i.split("-"))) for i in ids)
    got = [ws.message() for _ in MESSAGES]
    assert [(m["id"], m["channel"], m["data"]) for m in got] == \
        [(i, ch, m) for i, m in zip(ids, MESSAGES)]
    assert ws.message() == {"id": bin_id, "channel": ch, "data": "AP8=", "binary": True}
    events = [sse.event() for _ in MESSAGES]
    assert sse.retry == 2000
    assert [e["id"] for e in events] == ids
    assert events[1]["data"] == "two\nlines\nand\nmore"
    assert [e["data"] for e in (events[0], events[2])] == [MESSAGES[0], MESSAGES[2]]
    assert "event" not in events[0]
    assert sse.event() == {"id": bin_id, "event": "binary", "data": "AP8="}
    status, hdrs, doc = waiting()
    assert status == 200 and hdrs["cache-control"] == "no-store"
    got = doc["messages"]
    while len(got) < len(MESSAGES):
        status, _, more = poll(server, f"/sub/{ch}", doc["last_id"])
        assert status == 200 and not more["lost"]
        got, doc = got + more["messages"], more
    assert [(m["id"], m["data"]) for m in got[:3]] == list(zip(ids, MESSAGES))
    ws.close()
    sse.close()


def test_resume_and_lost_gap(server):
    """Resume by Last-Event-ID (header) or last_event_id (query) gets exactly what came
    after; a point history no longer reaches, or of another epoch, is announced as lost
    before what is stored."""
    ch = channel("resume")
    ids = [publish(server, f"/pub/{ch}", f"m{i}")["id"] for i in range(3)]
    sse = SSE(server, f"/sub/{ch}", last_id=ids[0])
    assert [sse.event()["data"] for _ in range(2)] == ["m1", "m2"]
    status, _, doc = poll(server, f"/sub/{ch}", ids[0], header=True)
    assert status == 200 and [m["data"] for m in doc["messages"]] == ["m1", "m2"]
    assert doc["last_id"] == ids[2] and doc["lost"] is False
    ws = WSSub(server, f"/sub/{ch}?last_event_id={ids[1]}")
    assert ws.message()["id"] == ids[2]
    # Overflow: HISTORY more messages push out everything after ids[0].
    more = [publish(server, f"/pub/{ch}", f"n{i}")["id"] for i in range(HISTORY)]
    assert [sse.event()["id"] for _ in more] == more
    assert [ws.message()["id"] for _ in more] == more
    status, _, doc = poll(server, f"/sub/{ch}", ids[0])
    assert doc["lost"] is True and [m["id"] for m in doc["messages"]] == more
    late = SSE(server, f"/sub/{ch}", last_id=ids[0])
    assert late.event() == {"event": "lost", "data": ids[0]}
    assert [late.event()["id"] for _ in more] == more
    ws2 = WSSub(server, f"/sub/{ch}?last_event_id=1-1")     # another epoch
    assert ws2.message() == {"lost": True, "id": "1-1"}
    assert [ws2.message()["id"] for _ in more] == more
    for c in (sse, ws, late, ws2):
        c.close()


def test_first_message_policies(server):
    """Without a resume point: newest only (default: nothing stored, the poll waits
    and times out with 204 and X-Last-Event-ID), all stored, or the last N."""
    ch = channel("first")
    ids = [publish(server, f"/pub/{ch}", f"m{i}")["id"] for i in range(3)]
    status, hdrs, _ = poll(server, f"/sub/{ch}")
    assert status == 204 and hdrs["x-last-event-id"] == ids[2]
    _, _, doc = poll(server, f"/suball/{ch}")
    assert [m["id"] for m in doc["messages"]] == ids
    _, _, doc = poll(server, f"/sublast2/{ch}")
    assert [m["id"] for m in doc["messages"]] == ids[1:]
    # 204's id resumes without a gap
    fence = publish(server, f"/pub/{ch}", "after")["id"]
    _, _, doc = poll(server, f"/sub/{ch}", hdrs["x-last-event-id"])
    assert [m["id"] for m in doc["messages"]] == [fence]


def test_several_channels_and_keepalive(server):
    """/sub/a,b: SSE events name their channel; comments keep the stream alive."""
    a, b = channel("a"), channel("b")
    sse = SSE(server, f"/ka/{a},{b}")
    wait_subscribers(server, f"/pub/{b}", 1)
    ia = publish(server, f"/pub/{a}", "to a")["id"]
    ib = publish(server, f"/pub/{b}", "to b")["id"]
    assert sse.event() == {"id": ia, "event": a, "data": "to a"}
    assert sse.event() == {"id": ib, "event": b, "data": "to b"}
    assert sse.comment() == []
    sse.close()


def test_delete_ends_subscribers(server):
    """DELETE: WebSocket close 1000 "channel deleted", the SSE stream ends, a waiting
    long-poll answers 410; the channel is then unknown (404: no history, no
    subscriber)."""
    ch = channel("del")
    publish(server, f"/pub/{ch}", "x")
    ws = WSSub(server, f"/sub/{ch}")
    sse = SSE(server, f"/sub/{ch}")
    waiting = in_thread(poll, server, f"/sub/{ch}?x=1")
    wait_subscribers(server, f"/pub/{ch}", 3)
    status, _, body = request(server, "DELETE", f"/pub/{ch}")
    assert status == 200, body
    assert ws.expect_close() == (1000, "channel deleted")
    sse.expect_end()
    assert waiting()[0] == 410
    ws.close()
    sse.close()
    # Unknown once its last subscriber session is over (they end asynchronously).
    deadline = time.monotonic() + 10
    while info(server, f"/pub/{ch}")[0] != 404:
        assert time.monotonic() < deadline, info(server, f"/pub/{ch}")
        time.sleep(0.02)      # polling server state for an event, with a deadline
    assert request(server, "DELETE", f"/pub/{ch}")[0] == 404


def test_bad_input(server):
    ch = channel("bad")
    assert info(server, f"/pub/{ch}")[0] == 404                       # unknown
    assert request(server, "GET", f"/sub/{ch}?last_event_id=12")[0] == 400
    assert request(server, "GET", f"/sub/{ch}", headers={
        "Last-Event-ID": "1-x", "Accept": "text/event-stream"})[0] == 400
    assert request(server, "POST", "/pub/a%01b", b"x")[0] == 400      # bad name
    assert request(server, "POST", f"/pub/{ch}", b"\xff\xfe",
                   {"Content-Type": "text/plain"})[0] == 400          # not UTF-8
    assert request(server, "POST", f"/small/{ch}", b"x" * 1001)[0] == 413
    assert request(server, "POST", f"/small/{ch}", b"x" * 1000)[0] == 200
    status, hdrs, _ = request(server, "PATCH", f"/pub/{ch}", b"x")
    assert status == 405 and "POST" in hdrs["allow"] and "DELETE" in hdrs["allow"]
    assert request(server, "POST", f"/sub/{ch}", b"x")[0] == 405
    # WebSocketChannelMaxSubscribers 2: the third is refused (503), by any transport
    first, second = SSE(server, f"/two/{ch}"), WSSub(server, f"/two/{ch}")
    wait_subscribers(server, f"/pub/{ch}", 2)
    assert request(server, "GET", f"/two/{ch}")[0] == 503
    assert SSE(server, f"/two/{ch}").status == 503
    first.close()
    second.close()


def test_new_epoch_after_restart(httpd_factory):
    """A graceful restart ends the subscribers (SSE stream ends, a waiting long-poll
    answers 204) and starts a new counter (new epoch): a resume point from before it is
    announced as lost."""
    srv = httpd_factory(mpm="event", tls=False, locations=LOCATIONS, extra_global=GLOBAL)
    old = publish(srv, "/pub/epoch", "before")["id"]
    sse = SSE(srv, "/sub/epoch")
    waiting = in_thread(poll, srv, "/suball/idle")      # nothing stored: waits 25 s
    wait_subscribers(srv, "/pub/epoch", 1)
    wait_subscribers(srv, "/pub/idle", 1)
    t0 = time.monotonic()
    srv.mark_log()
    srv.proc.send_signal(signal.SIGUSR1)
    srv.wait_for_log(r"resuming normal operations", 15)
    sse.expect_end()                      # the old generation's subscribers end
    assert waiting()[0] == 204 and time.monotonic() - t0 < 20
    new = publish(srv, "/pub/epoch", "after")["id"]
    assert new.split("-")[0] != old.split("-")[0] and new.endswith("-1")
    _, _, doc = poll(srv, "/sub/epoch", old)
    assert doc["lost"] is True and [m["id"] for m in doc["messages"]] == [new]


def test_blocking_driver_on_worker(httpd_factory):
    """worker: the same subscribers run on the handler thread (chunked SSE)."""
    srv = httpd_factory(mpm="worker", tls=False, locations=LOCATIONS, extra_global=GLOBAL)
    sse = SSE(srv, "/sub/w")
    assert sse.chunked
    waiting = in_thread(poll, srv, "/sub/w")
    wait_subscribers(srv, "/pub/w", 2)
    first = publish(srv, "/pub/w", "one\ntwo")["id"]
    assert sse.event() == {"id": first, "data": "one\ntwo"}
    status, _, doc = waiting()
    assert status == 200 and doc["messages"][0]["id"] == first
    request(srv, "DELETE", "/pub/w")
    sse.expect_end()


def test_http2_subscribers(httpd_factory):
    """HTTP/2 (h2c): an EventSource stream and a long-poll on streams of one connection
    (the blocking driver, with the request's filters: DATA frames)."""
    from h2ws import H2Client
    srv = httpd_factory(mpm="event", tls=False, locations=LOCATIONS, extra_global=GLOBAL,
                        h2=True)
    cli = H2Client(srv.host, srv.port_for("http"))
    try:
        sse = cli.open_stream([(":method", "GET"), (":scheme", "http"), (":path", "/sub/h2"),
                               (":authority", cli.authority),
                               ("accept", "text/event-stream")], end_stream=True)
        assert sse.wait_response() == 200
        assert sse.headers.get("content-type", "").startswith("text/event-stream")
        waiting = in_thread(cli.get, "/sub/h2")
        wait_subscribers(srv, "/pub/h2", 2)
        first = publish(srv, "/pub/h2", "over h2\nsecond line")["id"]
        text = b""
        while b"second line\n\n" not in text:
            text += sse.recv()
        assert text.decode().endswith(f"id: {first}\ndata: over h2\ndata: second line\n\n")
        status, hdrs, body = waiting()
        assert status == 200 and first.encode() in body
    finally:
        cli.close()


def test_slow_sse_reader_closed(server):
    """An EventSource reader that never reads is closed once WebSocketMaxQueue is
    queued for it (its subscription goes); a reader of the same channel that reads
    gets every message."""
    ch = channel("slow")
    slow = SSE(server, f"/smallq/{ch}")
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    good = SSE(server, f"/sub/{ch}")
    wait_subscribers(server, f"/pub/{ch}", 2)
    pad = "x" * 4000
    sent = []
    for i in range(3000):
        sent.append(publish(server, f"/pub/{ch}", f"{i}{pad}")["id"])
        assert good.event()["id"] == sent[-1]
        if i % 50 == 49 and info(server, f"/pub/{ch}")[1]["subscribers"] == 1:
            break
    else:
        raise AssertionError(f"the slow reader was never closed: {info(server, f'/pub/{ch}')}")
    slow.close()
    good.close()
