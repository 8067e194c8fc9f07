"""Channels across child processes (the embedded backplane), with the probe plugin's
sub:/unsub:/pub:/publocal: commands, on every MPM, ws and wss.

Each MPM runs 2 child processes (genconf's defaults: event and worker ServerLimit 2 /
StartServers 2; prefork one process per connection).  A test first opens probe
connections until it holds connections in two different children (the "pid" of the
probe's opening JSON), so every delivery checked here crosses a process boundary.

The ticker plugin (a thread in every child publishing with WS_PUBLISH_LOCAL, prices a
function of the tick) is checked here too: message format, same prices in every child and
on another server, its thread across a graceful restart, settings refused by apache2 -t.

"Nothing arrives" is never checked by waiting: after the step under test the publisher
publishes a fence message on a channel the subscriber also listens to.  Messages from
one publisher arrive in publish order, so a subscriber whose next message is the fence
did not get the message under test.
"""

import asyncio
import contextlib
import itertools
import json
import signal
import socket
import time

import pytest

import genconf
from httpd import configtest
from rawws import OP_CLOSE, OP_PING, OP_TEXT, Closed, RawWS, accept_for, new_key
from support import children, mpm_server, wait_gone
from wsutil import connect, expect_closed, recv, recv_json, run

SMALL_QUEUE = 16384
TICKER = {"path": "/ticker", "plugin": "ticker", "settings": [("interval_ms", "100")]}
LOCATIONS = [
    ("/probe", "probe"),
    # The slow subscriber's location: a small outbound queue.
    {"path": "/smallq", "plugin": "probe", "max_queue": SMALL_QUEUE},
    # The ticker plugin: a thread in every child publishing with WS_PUBLISH_LOCAL.
    TICKER,
    {"path": "/ticker2", "plugin": "ticker",
     "settings": [("symbols", "AAA,B.B,c-c"), ("interval_ms", "50"), ("channel", "t2")]},
]
# Small socket buffers on the server side bound what the kernel holds for a client that
# does not read, so that the slow-subscriber test overflows the queue with little data.
EXTRA = "SendBufferSize 16384\n"

MAX_DISCOVERY = 64          # connections opened at most to find two children
_ids = itertools.count()


server = mpm_server(LOCATIONS, extra_global=EXTRA)


def channel(name):
    """A channel name of its own for each test run (servers are shared by a module)."""
    return f"{name}-{next(_ids)}-{time.monotonic_ns() % 1000000}"


class Probe:
    """An open probe connection and the child process serving it."""

    def __init__(self, ws, pid):
        self.ws, self.pid = ws, pid

    async def sub(self, ch):
        await self.ws.send(f"sub:{ch}")
        assert await recv(self.ws) == f"subscribed:{ch}:0"

    async def unsub(self, ch):
        await self.ws.send(f"unsub:{ch}")
        assert await recv(self.ws) == f"unsubscribed:{ch}:0"

    async def pub(self, ch, text, local=False):
        await self.ws.send(f"{'publocal' if local else 'pub'}:{ch}:{text}")

    async def expect(self, text, timeout=10):
        got = await recv(self.ws, timeout)
        assert got == text, f"pid {self.pid}: expected {text!r}, got {got!r}"


async def open_probe(stack, server, transport, path="/probe"):
    ws = await stack.enter_async_context(connect(server, transport, path))
    info = await recv_json(ws)
    return Probe(ws, info["pid"])


async def probes_in_two_children(stack, server, transport, per_child=1):
    """Open probe connections (a few at a time, bounded) until at least two children
    each serve `per_child` of them (prefork: one connection per child, so per_child
    is 1 there).  Returns {pid: [Probe, ...]} for exactly two pids; the others stay
    open until the test ends (closing them early would only add noise)."""
    if server.mpm == "prefork":
        per_child = 1
    by_pid = {}
    opened = 0
    while opened < MAX_DISCOVERY:
        batch = await asyncio.gather(*(open_probe(stack, server, transport)
                                       for _ in range(4)))
        opened += len(batch)
        for p in batch:
            by_pid.setdefault(p.pid, []).append(p)
        full = [pid for pid, ps in by_pid.items() if len(ps) >= per_child]
        if len(full) >= 2:
            return {pid: by_pid[pid][:per_child] for pid in full[:2]}
    raise AssertionError(f"{opened} connections all went to children "
                         f"{sorted(by_pid)}: cannot test cross-process delivery")


def test_cross_process_delivery(server, transport):
    """Every subscriber in every child gets what any child publishes."""
    async def go():
        async with contextlib.AsyncExitStack() as stack:
            children = await probes_in_two_children(stack, server, transport, per_child=2)
            subs = [p for ps in children.values() for p in ps]
            ch = channel("cross")
            for p in subs:
                await p.sub(ch)
            for publisher in (children[pid][0] for pid in children):
                text = f"hello from {publisher.pid}"
                await publisher.pub(ch, text)
                await asyncio.gather(*(p.expect(text) for p in subs))

    run(go())


def test_publish_order_1000(server, transport):
    """1,000 numbered messages from one connection: every subscriber (the publisher,
    one in its child, one in the other child) gets all of them, in order."""
    async def go():
        async with contextlib.AsyncExitStack() as stack:
            children = await probes_in_two_children(stack, server, transport, per_child=2)
            (a1, *rest_a), (b1, *rest_b) = children.values()
            subs = [a1, b1, *rest_a, *rest_b]
            ch = channel("order")
            for p in subs:
                await p.sub(ch)

            async def publish():
                for i in range(1000):
                    await a1.pub(ch, f"n{i}")

            async def collect(p):
                got = [await recv(p.ws) for _ in range(1000)]
                want = [f"n{i}" for i in range(1000)]
                assert got == want, f"pid {p.pid}: first difference at " \
                    f"{next(i for i, (x, y) in enumerate(zip(got, want)) if x != y)}"

            await asyncio.gather(publish(), *(collect(p) for p in subs))

    run(go(), timeout=60)


def test_unsubscribe_stops_delivery(server, transport):
    async def go():
        async with contextlib.AsyncExitStack() as stack:
            children = await probes_in_two_children(stack, server, transport)
            a, b = (ps[0] for ps in children.values())
            ch, fence = channel("unsub"), channel("fence")
            for p in (a, b):
                await p.sub(ch)
                await p.sub(fence)
            await a.pub(ch, "one")
            await asyncio.gather(a.expect("one"), b.expect("one"))

            await b.unsub(ch)
            await a.pub(ch, "two")
            await a.pub(fence, "fence")
            await a.expect("two")
            await a.expect("fence")
            await b.expect("fence")          # and not "two" before it

            # Subscribing again resumes delivery (in the other direction, too).
            await b.sub(ch)
            await b.pub(ch, "three")
            await asyncio.gather(a.expect("three"), b.expect("three"))

    run(go())


def test_publish_local_stays_in_child(server, transport):
    """WS_PUBLISH_LOCAL reaches the publishing child's subscribers only."""
    async def go():
        async with contextlib.AsyncExitStack() as stack:
            children = await probes_in_two_children(stack, server, transport, per_child=2)
            here, there = children.values()
            ch = channel("local")
            for p in here + there:
                await p.sub(ch)
            await here[0].pub(ch, "local", local=True)
            await asyncio.gather(*(p.expect("local") for p in here))
            await here[0].pub(ch, "everywhere")
            for p in there:
                await p.expect("everywhere")     # "local" never came before it
            for p in here:
                await p.expect("everywhere")

    run(go())


def open_slow(server, transport, path):
    """A raw connection with a tiny receive buffer that the test will not read for a
    while: what the server sends piles up in its queue."""
    ws = RawWS.connect(server, transport, timeout=30)
    sock = ws.sock
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = new_key()
    resp = ws.request("GET", path, {
        "Host": f"{server.host}:{server.port_for(transport)}", "Upgrade": "websocket",
        "Connection": "Upgrade", "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13"})
    assert resp.status == 101 and resp.header("Sec-WebSocket-Accept") == accept_for(key), resp
    info = json.loads(ws.recv_message()[1])
    return ws, info["pid"]


def test_slow_subscriber_closed_1008_others_unaffected(server, transport):
    """A subscriber that never reads, on a location with a 16 KiB queue, is closed with
    1008 after what was queued for it; subscribers in both children still get all 3,000
    messages in order."""
    count = 3000
    # 4 KB messages, 12 MB in all: more than the kernel's socket buffers can absorb
    # (loopback autotunes the server's send buffer up to 4 MB), so the queue must fill.
    pad = "x" * 4000
    ch = channel("slow")
    slow, slow_pid = open_slow(server, transport, "/smallq")
    try:
        slow.send_text(f"sub:{ch}")
        assert slow.recv_message() == (OP_TEXT, f"subscribed:{ch}:0".encode())

        async def go():
            async with contextlib.AsyncExitStack() as stack:
                children = await probes_in_two_children(stack, server, transport)
                subs = [ps[0] for ps in children.values()]
                for p in subs:
                    await p.sub(ch)

                async def publish():
                    for i in range(count):
                        await subs[0].pub(ch, f"{i:05d}{pad}")

                async def collect(p):
                    for i in range(count):
                        await p.expect(f"{i:05d}{pad}", timeout=20)

                await asyncio.gather(publish(), *(collect(p) for p in subs))

        run(go(), timeout=120)

        # Now read the slow one: a prefix of the sequence, complete and in order, then
        # the 1008 close.
        seq = 0
        while True:
            try:
                f = slow.recv_frame(timeout=20)
            except Closed as e:
                raise AssertionError(
                    f"the slow subscriber's TCP connection ended ({e}) after {seq} "
                    "messages without a close frame: what was queued for it, and the "
                    "1008 close, were dropped") from None
            if f.opcode == OP_CLOSE:
                assert f.close_code() == 1008, f
                break
            if f.opcode == OP_PING:
                continue                # the server pings a client this silent
            assert f.opcode == OP_TEXT and f.payload == f"{seq:05d}{pad}".encode(), \
                (seq, f)
            seq += 1
        assert 0 < seq < count, f"slow subscriber got {seq} of {count} messages"
    finally:
        slow.close()
    server.assert_no_crash()


# ---- the ticker plugin --------------------------------------------------------------

DEFAULT_SYMBOLS = ["EURUSD", "GBPUSD", "USDJPY", "AAPL", "MSFT", "GOOG", "BTCUSD", "GOLD"]


async def ticks(ws, n):
    """The next n ticker messages: (raw text, parsed, receive time in microseconds)."""
    out = []
    for _ in range(n):
        raw = await recv(ws)
        out.append((raw, json.loads(raw), time.time_ns() // 1000))
    return out


def check_quote_message(raw, msg, now_us, symbols, interval_ms):
    assert raw.startswith('{"ts":'), raw[:40]                # ts comes first, by contract
    assert list(msg)[:1] == ["ts"] and {"tick", "interval_ms", "quotes"} <= set(msg), raw
    ts = msg["ts"]
    assert isinstance(ts, int) and 0 <= now_us - ts < 5_000_000, (ts, now_us)   # microseconds
    assert msg["interval_ms"] == interval_ms
    # The tick is the interval the send time falls in (the sender may run a bit late).
    assert 0 <= ts // 1000 // interval_ms - msg["tick"] <= 2, (ts, msg["tick"])
    assert [q["symbol"] for q in msg["quotes"]] == symbols, raw
    for q in msg["quotes"]:
        assert set(q) == {"symbol", "price", "change", "pct", "decimals", "bid", "ask"}, q
        assert q["price"] > 0 and isinstance(q["decimals"], int), q
        assert 0 < q["bid"] < q["price"] < q["ask"], q       # half a spread either side
        assert abs((q["price"] - q["bid"]) - (q["ask"] - q["price"])) <= 1.5 * 10 ** -q["decimals"], q
        open_ = q["price"] - q["change"]
        assert abs(q["pct"] - q["change"] / open_ * 100) < 0.02, q


def test_ticker_snapshot_then_updates(server, transport):
    """A snapshot at once, then one message per interval with the next ticks."""
    async def go():
        async with connect(server, transport, "/ticker") as ws:
            got = await ticks(ws, 6)
            for raw, msg, now in got:
                check_quote_message(raw, msg, now, DEFAULT_SYMBOLS, 100)
            tick_list = [m["tick"] for _, m, _ in got]
            assert tick_list[1:] == list(range(tick_list[1], tick_list[1] + 5)), tick_list
            assert tick_list[0] in (tick_list[1], tick_list[1] - 1), tick_list   # snapshot
        async with connect(server, transport, "/ticker2") as ws:
            for raw, msg, now in await ticks(ws, 3):
                check_quote_message(raw, msg, now, ["AAA", "B.B", "c-c"], 50)

    run(go())


def test_ticker_same_prices_everywhere(server, httpd_factory):
    """Prices are a function of (symbol, tick): connections served by different children,
    and another server with the same settings, show the same quotes for the same tick,
    with no coordination between them."""
    other = httpd_factory(mpm=server.mpm, tls=False, locations=[TICKER])

    async def go():
        async with contextlib.AsyncExitStack() as stack:
            conns = [await stack.enter_async_context(connect(s, "ws", "/ticker"))
                     for s in [server] * 6 + [other] * 2]
            # Connections opened at different times (prefork forks children for them)
            # have different backlogs: compare ticks after the last one opened.
            snapshots = [json.loads(await recv(ws)) for ws in conns]
            first = max(m["tick"] for m in snapshots) + 2
            by_tick = {}
            for ws in conns:
                while True:
                    msg = json.loads(await recv(ws))
                    if msg["tick"] >= first:
                        by_tick.setdefault(msg["tick"], []).append(json.dumps(msg["quotes"]))
                    if msg["tick"] >= first + 3:
                        break
            assert any(len(v) == len(conns) for v in by_tick.values()), \
                {k: len(v) for k, v in by_tick.items()}
            for tick, quotes in by_tick.items():
                assert len(set(quotes)) == 1, f"tick {tick}: different prices {quotes}"

    run(go())


@pytest.mark.parametrize("settings,message", [
    ([("interval_ms", "5")], "interval_ms: 10-3600000"),
    ([("interval_ms", "fast")], "interval_ms: 10-3600000"),
    ([("symbols", "AAPL,AAPL")], "'AAPL' is listed twice"),
    ([("symbols", "AAPL,,MSFT")], "symbols:"),
    ([("symbols", "BAD SYMBOL")], "symbols:"),
    ([("symbols", ",")], "symbols:"),
    ([("channel", "c" * 201)], "channel:"),
    ([("speed", "1")], "unknown setting 'speed'"),
])
def test_ticker_bad_settings_fail_configtest(tmp_path, settings, message):
    cfg = genconf.make_config(str(tmp_path), 1, None, "event", locations=[
        {"path": "/ticker", "plugin": "ticker", "settings": settings}])
    rc, out = configtest(cfg.conf)
    assert rc != 0 and message in out, out


def test_ticker_thread_follows_child_life(server, httpd_factory):
    """The ticker thread starts in child_init and is joined in child_exit: a graceful
    restart retires the old children (their subscribers closed with 1001) and the new
    ones tick; stopping is prompt and no child crashes."""
    srv = httpd_factory(mpm=server.mpm, tls=False, locations=[TICKER])

    async def go():
        old = [await connect(srv, "ws", "/ticker").__aenter__() for _ in range(3)]
        for ws in old:
            await ticks(ws, 2)
        old_children = set(children(srv))
        srv.mark_log()
        srv.proc.send_signal(signal.SIGUSR1)
        await asyncio.to_thread(srv.wait_for_log, r"resuming normal operations", 15)
        codes = await asyncio.gather(*(expect_closed(ws, timeout=15) for ws in old))
        assert [c for c, _ in codes] == [1001] * 3, codes
        # an old child may still accept a connection until it exits (seen on worker:
        # the new session was closed with 1001 at once)
        await asyncio.to_thread(wait_gone, old_children, 15)
        async with connect(srv, "ws", "/ticker") as ws:
            got = await ticks(ws, 3)
            assert got[2][1]["tick"] > got[1][1]["tick"]

    run(go(), timeout=60)
    t0 = time.monotonic()
    srv.stop()                   # asserts: no crash, no SIGKILL, no child left behind
    assert time.monotonic() - t0 < 10, "httpd took too long to stop"
