"""Channels over plain HTTP across servers: two httpd share a real redis-server
(WebSocketBackplane redis://); a POST on server A reaches EventSource and WebSocket
subscribers on server B with the ids Redis gave (one counter for both servers), and
the history (kept in Redis streams) serves a subscriber that resumes on B, or on a
server started after the messages were published."""

import pytest

from channels import SSE, WSSub, info, poll, publish, wait_subscribers
from test_ws_810_redis import CHILDREN, Redis, wait_for_count

LOCATIONS = [
    {"path": "/pub", "plugin": None, "extra": "WebSocketChannelPublisher on\n"},
    {"path": "/sub", "plugin": None, "extra": "WebSocketChannelSubscriber on\n"},
]


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    r = Redis(str(tmp_path_factory.mktemp("redis"))).start()
    yield r
    r.kill()


def start_server(redis, httpd_factory):
    conf = f"WebSocketBackplane redis://127.0.0.1:{redis.port}/chan\n"
    srv = httpd_factory(mpm="event", tls=False, locations=LOCATIONS, extra_global=conf)
    for what in ("subscriber", "publisher"):
        wait_for_count(srv, rf"WS00051: redis backplane {what} connection to "
                            rf"127\.0\.0\.1:{redis.port} \(re\)established", CHILDREN)
    return srv


@pytest.fixture(scope="module")
def servers(redis, httpd_factory):
    return [start_server(redis, httpd_factory) for _ in range(2)]


def test_post_on_a_reaches_b_with_history(servers):
    a, b = servers
    sse = SSE(b, "/sub/xnews")
    ws = WSSub(b, "/sub/xnews")
    wait_subscribers(b, "/pub/xnews", 2)
    ids = [publish(a, "/pub/xnews", f"headline {i}\nfrom A")["id"] for i in range(3)]
    seqs = [int(i.split("-")[1]) for i in ids]
    assert seqs == sorted(seqs) and len({i.split("-")[0] for i in ids}) == 1
    assert [sse.event() for _ in ids] == [
        {"id": i, "data": f"headline {n}\nfrom A"} for n, i in enumerate(ids)]
    assert [ws.message()["id"] for _ in ids] == ids
    # B publishes too: the same counter (Redis's), after A's.
    other = publish(b, "/pub/xnews", "from B")["id"]
    assert other.split("-")[0] == ids[0].split("-")[0]
    assert int(other.split("-")[1]) > seqs[-1]
    assert sse.event()["id"] == other
    # B's history: a subscriber resuming on B gets what A published.
    status, _, doc = poll(b, "/sub/xnews", ids[0])
    assert status == 200 and not doc["lost"]
    assert [m["id"] for m in doc["messages"]] == ids[1:] + [other]
    late = SSE(b, "/sub/xnews", last_id=ids[1])
    assert [late.event()["id"] for _ in range(2)] == [ids[2], other]
    status, doc = info(b, "/pub/xnews")
    assert status == 200 and doc["messages"] == 4 and doc["last_id"] == other
    for c in (sse, ws, late):
        c.close()


def test_late_server_resumes_from_redis_history(servers, redis, httpd_factory):
    """Server C starts after the messages were published (its children never received
    them): a subscriber resuming there gets them from the stream in Redis."""
    a, _ = servers
    ids = [publish(a, "/pub/late", f"old {i}")["id"] for i in range(3)]
    c = start_server(redis, httpd_factory)
    status, _, doc = poll(c, "/sub/late", ids[0])
    assert status == 200 and doc["lost"] is False
    assert [(m["id"], m["data"]) for m in doc["messages"]] == [(ids[1], "old 1"),
                                                               (ids[2], "old 2")]
    sse = SSE(c, "/sub/late", last_id=ids[0])
    assert [sse.event()["id"] for _ in range(2)] == ids[1:]
    ws = WSSub(c, f"/sub/late?last_event_id={ids[1]}")
    assert ws.message()["id"] == ids[2]
    fresh = publish(a, "/pub/late", "new")["id"]          # and live after the catch-up
    assert sse.event()["id"] == fresh and ws.message()["id"] == fresh
    _, _, doc = poll(c, "/sub/late", "1-1")                # another epoch: lost, all
    assert doc["lost"] is True and [m["id"] for m in doc["messages"]] == ids + [fresh]
    sse.close()
    ws.close()
