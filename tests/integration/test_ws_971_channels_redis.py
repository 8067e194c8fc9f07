"""Channels over plain HTTP across servers: two httpd share a real redis-server
(WebSocketBackplane redis://); a POST on server A reaches EventSource and WebSocket
subscribers on server B with the ids Redis gave (one counter for both servers), and
B's history has it for a subscriber that resumes there."""

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


@pytest.fixture(scope="module")
def servers(redis, httpd_factory):
    conf = f"WebSocketBackplane redis://127.0.0.1:{redis.port}/chan\n"
    srvs = [httpd_factory(mpm="event", tls=False, locations=LOCATIONS, extra_global=conf)
            for _ in range(2)]
    for srv in srvs:
        for what in ("subscriber", "publisher"):
            wait_for_count(srv, rf"WS00051: redis backplane {what} connection to "
                                rf"127\.0\.0\.1:{redis.port} \(re\)established", CHILDREN)
    return srvs


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
