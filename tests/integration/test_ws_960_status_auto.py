"""/server-status?auto carries mod_websocket's counters as `Key: value` lines (what
collectd, Prometheus' apache exporter and Zabbix read): every key is there from the start,
and echo traffic, closes with known codes and a queue overflow move exactly the counters
they should.  One MPM: the counters are the same code under every driver (test_ws_300
checks the per-driver session counts on each MPM).
"""

import time

import pytest

from rawws import OP_TEXT, RawWS, http_request
from test_ws_810_redis import Redis

CODES = range(1000, 1016)
KEYS = (["WebSocketSessionsAsync", "WebSocketSessionsBlocking", "WebSocketSessionsOpened",
         "WebSocketMessagesIn", "WebSocketMessagesOut", "WebSocketBytesIn",
         "WebSocketBytesOut"] + [f"WebSocketCloses{c}" for c in CODES]
        + ["WebSocketClosesOther", "WebSocketQueueDrops", "WebSocketChildren",
           "WebSocketBackplaneOverruns", "WebSocketBackplaneRedisUp",
           # the backplane's own section: ring skips, Redis input (ws_bp_status)
           "WebSocketBackplaneRingOverruns", "WebSocketBackplaneRingLostBytes",
           "WebSocketBackplaneRingInvalid", "WebSocketBackplaneRingTorn",
           "WebSocketBackplaneRedisIn", "WebSocketBackplaneRedisDropped"])

# test_redis_backplane_state kills redis-server on purpose
ALLOWED_ERRORS = [r"WS00052: redis backplane (publisher|subscriber) connection to \S+ lost"]

LOCATIONS = [("/echo", "echo"),
             {"path": "/probe", "plugin": "probe", "max_queue": 65536}]


@pytest.fixture(scope="module")
def server(httpd_factory):
    return httpd_factory(mpm="event", tls=False, locations=LOCATIONS)


def status(server):
    """The mod_websocket lines of /server-status?auto: {key: int} (WebSocketBackplane
    as text)."""
    resp = http_request(server, "ws", b"GET /server-status?auto HTTP/1.1\r\n"
                        b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n", timeout=5)
    assert resp.status == 200, resp
    out = {}
    for line in resp.body.decode().splitlines():
        key, sep, value = line.partition(": ")
        if sep and key.startswith("WebSocket"):
            out[key] = value if key == "WebSocketBackplane" else int(value)
    return out


TRAFFIC = ("WebSocketMessagesIn", "WebSocketMessagesOut", "WebSocketBytesIn",
           "WebSocketBytesOut")


def wait_delta(server, before, want, ignore=(), timeout=10.0):
    """Poll until every key of `want` moved by that much from `before` and no session is
    open; then assert that no other counter (but those in `ignore`) moved."""
    deadline = time.monotonic() + timeout
    while True:
        st = status(server)
        got = {k: st[k] - before[k] for k in want}
        if got == want and st["WebSocketSessionsAsync"] == st["WebSocketSessionsBlocking"] == 0:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"server-status: want deltas {want}, got {got}")
        time.sleep(0.05)  # polling server-status for a state, with a deadline
    moved = {k: st[k] - before[k] for k in KEYS
             if k not in ignore and (k in want or st[k] != before[k])}
    assert moved == want, f"only {sorted(want)} should have moved: {moved}"


def wait_value(server, key, value, timeout=20.0):
    deadline = time.monotonic() + timeout
    while (got := status(server)[key]) != value:
        assert time.monotonic() < deadline, f"{key}: want {value}, still {got}"
        time.sleep(0.05)  # polling server-status for a state, with a deadline


def test_every_key_is_there(server):
    st = status(server)
    assert sorted(k for k in st if k != "WebSocketBackplane") == sorted(KEYS)
    assert st["WebSocketBackplane"] == "embedded"
    assert st["WebSocketChildren"] == 2
    assert st["WebSocketBackplaneRedisUp"] == 0


def test_echo_traffic_and_client_close(server):
    """3 echoed 10-byte texts, then the client closes with 1000: 3 messages each way,
    the exact wire bytes (masked client frames: 2+4+10, the close 2+4+2; server frames
    2+10, its close reply 2+2), one close counted under 1000."""
    before = status(server)
    with RawWS.open(server, "ws", "/echo") as ws:
        for i in range(3):
            ws.send_text(f"message {i:02d}")
            assert ws.recv_message() == (OP_TEXT, f"message {i:02d}".encode())
        ws.send_close(1000)
        ws.expect_close(reply=False)
    wait_delta(server, before, {
        "WebSocketSessionsOpened": 1, "WebSocketMessagesIn": 3, "WebSocketMessagesOut": 3,
        "WebSocketBytesIn": 3 * 16 + 8, "WebSocketBytesOut": 3 * 12 + 4,
        "WebSocketCloses1000": 1})


def test_server_close_code_and_abrupt_drop(server):
    """The plugin closes with 1013 (counted under 1013, the command counted in); a
    client that vanishes without a close is counted under 1006; a private code under
    Other."""
    before = status(server)
    with RawWS.open(server, "ws", "/probe") as ws:
        ws.recv_message()                   # probe's hello
        ws.send_text("close:1013:later")
        assert ws.expect_close()[0] == 1013
    with RawWS.open(server, "ws", "/echo") as ws:
        ws.send_text("x")
        assert ws.recv_message() == (OP_TEXT, b"x")
    with RawWS.open(server, "ws", "/echo") as ws:
        ws.send_close(4321)
        assert ws.expect_close(reply=False)[0] == 4321
    wait_delta(server, before, {
        "WebSocketSessionsOpened": 3, "WebSocketCloses1013": 1, "WebSocketCloses1006": 1,
        "WebSocketClosesOther": 1}, ignore=TRAFFIC)


def test_queue_overflow_counts_a_drop(server):
    """A client that reads nothing while the plugin floods it (WebSocketMaxQueue 64 KiB):
    the first refused send counts one queue drop, and the session ends with 1008."""
    before = status(server)
    ws = RawWS.open(server, "ws", "/probe")
    try:
        ws.recv_message()
        ws.send_text("flood:4000:8192")     # 32 MiB: more than any socket buffer
        wait_value(server, "WebSocketQueueDrops", before["WebSocketQueueDrops"] + 1)
    finally:
        ws.close()
    # how much went out before the queue filled depends on the socket buffers
    wait_delta(server, before, {"WebSocketSessionsOpened": 1, "WebSocketQueueDrops": 1,
                                "WebSocketCloses1008": 1}, ignore=TRAFFIC)


def test_redis_backplane_state(httpd_factory, tmp_path_factory):
    """With a Redis backplane: the mode, and how many children have both Redis
    connections up (all of them; none once redis-server is gone)."""
    redis = Redis(str(tmp_path_factory.mktemp("redis"))).start()
    try:
        srv = httpd_factory(mpm="event", tls=False, locations=[("/echo", "echo")],
                            extra_global=f"WebSocketBackplane redis://127.0.0.1:{redis.port}"
                                         "/statustest\n")
        assert status(srv)["WebSocketBackplane"] == "redis"
        wait_value(srv, "WebSocketBackplaneRedisUp", 2)
        redis.kill()
        wait_value(srv, "WebSocketBackplaneRedisUp", 0)
    finally:
        redis.kill()
