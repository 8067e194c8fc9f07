"""The chat plugin (plugins/chat.c): rooms, nicknames, join/leave notices, the JSON it
sends, input limits, settings.

"Nothing arrives" is shown with a fence, never a wait: rooms are channels, and the
backplane delivers in one global order, so once a message has come back to its own
sender, anything published after it reaches each subscriber after it.
"""

import contextlib
import json
import re
import time

import pytest

import genconf
from httpd import configtest
from rawws import upgrade_request
from support import mpm_server
from wsutil import connect, recv, run

LOCATIONS = [
    ("/chat", "chat"),
    {"path": "/hall", "plugin": "chat",
     "settings": [("default_room", "hall"), ("max_text", "10")]},
    # no refill to speak of: a burst of 3 and then nothing
    {"path": "/slow", "plugin": "chat", "settings": [("rate", "0.001"), ("burst", "3")]},
    {"path": "/big", "plugin": "chat", "settings": [("max_text", "1000000")]},
    # channel namespaces: separate by default, shared when configured
    ("/staff-chat", "chat"),
    ("/public-chat", "chat"),
    {"path": "/shared-a", "plugin": "chat", "extra": "WebSocketChannelNamespace team-chat"},
    {"path": "/shared-b", "plugin": "chat", "extra": "WebSocketChannelNamespace team-chat"},
]
KEYS = {"type", "from", "text", "ts"}
GUEST = re.compile(r"^guest-\d{4}$")


server = mpm_server(LOCATIONS)


class Chat:
    """A chat connection that parses (and checks the shape of) what it receives."""

    def __init__(self, ws):
        self.ws = ws
        self.name = None
        self.room = None

    async def next(self, timeout=10):
        raw = await recv(self.ws, timeout)
        assert isinstance(raw, str), raw
        msg = json.loads(raw)
        assert set(msg) == KEYS, raw
        assert isinstance(msg["ts"], int) and abs(msg["ts"] - time.time() * 1000) < 10000, raw
        msg["raw"] = raw
        return msg

    async def expect(self, type_, from_=None, text=None):
        msg = await self.next()
        want = {"type": type_}
        if from_ is not None:
            want["from"] = from_
        if text is not None:
            want["text"] = text
        assert {k: msg[k] for k in want} == want, msg["raw"]
        return msg

    async def say(self, text):
        await self.ws.send(text)


async def join(stack, server, transport, path):
    """Connect; read the welcome and our own join notice."""
    c = Chat(await stack.enter_async_context(connect(server, transport, path)))
    welcome = await c.next()
    assert welcome["type"] == "welcome", welcome
    c.name, c.room = welcome["from"], welcome["text"]
    # Another child delivers channel messages when its backplane reader gets to them:
    # the join or leave of someone who came or went just before us (an earlier test's
    # client in the same room) may still have been on its way to our child when we
    # subscribed, and arrive before our own join.
    while True:
        msg = await c.next()
        assert msg["type"] in ("join", "leave") and msg["text"] == c.room, msg["raw"]
        if msg["type"] == "join" and msg["from"] == c.name:
            return c
        assert msg["from"] != c.name, msg["raw"]


def test_join_notices_and_names(server, transport):
    async def go():
        async with contextlib.AsyncExitStack() as stack:
            a = await join(stack, server, transport, "/chat/r1")
            assert GUEST.match(a.name) and a.room == "r1", (a.name, a.room)
            b = await join(stack, server, transport, "/chat?room=r1&name=B%C3%B6b+%F0%9F%8E%B8")
            assert (b.name, b.room) == ("Böb 🎸", "r1")
            await a.expect("join", "Böb 🎸", "r1")
            lobby = await join(stack, server, transport, "/chat")
            assert lobby.room == "lobby" and GUEST.match(lobby.name)

    run(go())


def test_message_json_and_escaping(server, transport):
    async def go():
        async with contextlib.AsyncExitStack() as stack:
            a = await join(stack, server, transport, "/chat/esc")
            b = await join(stack, server, transport, "/chat/esc?name=bob")
            await a.expect("join", "bob")
            text = 'quote " backslash \\ newline \n tab \t bell \x07 nul \x00 </script> é ✓ 🚀'
            await b.say(text)
            for c in (a, b):
                msg = await c.expect("message", "bob", text)
                raw = msg["raw"]
                assert not re.search(r"[\x00-\x1f]", raw), raw     # all escaped
                assert '\\"' in raw and "\\\\" in raw and "\\n" in raw, raw
                assert "\\u0000" in raw and "\\u0007" in raw and "\\u0009" in raw, raw
                assert "é ✓ 🚀" in raw        # UTF-8 passes through as it is

    run(go())


def test_nick_change_and_bad_names(server, transport):
    async def go():
        async with contextlib.AsyncExitStack() as stack:
            a = await join(stack, server, transport, "/chat/nick")
            b = await join(stack, server, transport, "/chat/nick?name=bob")
            await a.expect("join", "bob")
            await a.say("name:   Alice  ")
            for c in (a, b):
                await c.expect("nick", a.name, "Alice")
            long_ok = "é" * 16                                 # 32 bytes
            await a.say(f"name: {long_ok}")
            for c in (a, b):
                await c.expect("nick", "Alice", long_ok)
            for bad, why in [("", "empty"), ("   ", "empty"), ("x" * 33, "32 bytes"),
                             ("é" * 16 + "x", "32 bytes"), ("a\tb", "control"),
                             ("a\x7fb", "control"), ("a\u0085b", "control")]:
                await a.say(f"name:{bad}")
                err = await a.expect("error")
                assert err["from"] is None and why in err["text"], (bad, err)
            await a.say("still me")
            for c in (a, b):
                await c.expect("message", long_ok, "still me")   # b saw none of the errors

    run(go())


def test_text_limit(server, transport):
    """max_text (default 1000 bytes): longer text is an error for the sender only."""
    async def go():
        async with contextlib.AsyncExitStack() as stack:
            a = await join(stack, server, transport, "/chat/limit")
            b = await join(stack, server, transport, "/chat/limit?name=b")
            await a.expect("join", "b")
            await a.say("x" * 1001)
            err = await a.expect("error")
            assert err["text"] == "a message has at most 1000 bytes", err
            await a.say("é" * 501)                                 # 1002 bytes
            await a.expect("error")
            await a.say("")
            await a.expect("error", text="empty message")
            await a.ws.send(b"binary")
            await a.expect("error", text="only text messages are understood")
            for text in ("x" * 1000, "é" * 500):
                await a.say(text)
                for c in (a, b):
                    await c.expect("message", a.name, text)

    run(go())


def test_room_isolation(server, transport):
    async def go():
        async with contextlib.AsyncExitStack() as stack:
            a = await join(stack, server, transport, "/chat/room-a")
            b = await join(stack, server, transport, "/chat/room-b")
            b2 = await join(stack, server, transport, "/chat/room-b?name=b2")
            await b.expect("join", "b2")
            await a.say("for room a only")
            await a.expect("message", a.name, "for room a only")   # published by now
            await b2.say("fence")
            await b.expect("message", "b2", "fence")          # and nothing from room a
            await b2.expect("message", "b2", "fence")
            await join(stack, server, transport, "/chat/room-a?name=a2")
            await a.expect("join", "a2")                       # nothing from room b

    run(go())


def test_leave_notice(server, transport):
    async def go():
        async with contextlib.AsyncExitStack() as stack:
            a = await join(stack, server, transport, "/chat/bye")
            async with connect(server, transport, "/chat/bye?name=leaver") as ws:
                b = Chat(ws)
                await b.expect("welcome", "leaver", "bye")
                await a.expect("join", "leaver", "bye")
            await a.expect("leave", "leaver", "bye")
            # Also when the TCP connection just drops (1006 on the server side).
            ws = await connect(server, transport, "/chat/bye?name=dropper")
            await a.expect("join", "dropper", "bye")
            ws.transport.abort()
            await a.expect("leave", "dropper", "bye")

    run(go())


def test_many_in_one_room(server, transport):
    """Ten people (spread over the server's two children) in one room: each one's
    messages reach everyone, in the order that person sent them."""
    async def go():
        async with contextlib.AsyncExitStack() as stack:
            people = [await join(stack, server, transport, f"/chat/crowd?name=p{i}")
                      for i in range(10)]
            for i, p in enumerate(people):               # the joins of those after us
                for j in range(i + 1, 10):
                    await p.expect("join", f"p{j}")
            for i, p in enumerate(people):
                for k in range(5):
                    await p.say(f"{i}:{k}")
            for p in people:
                seen = {i: 0 for i in range(10)}
                for _ in range(50):
                    m = await p.expect("message")
                    i, k = map(int, m["text"].split(":"))
                    assert m["from"] == f"p{i}" and k == seen[i], m
                    seen[i] += 1

    run(go(), timeout=40)


def test_settings_default_room_and_max_text(server, transport):
    async def go():
        async with contextlib.AsyncExitStack() as stack:
            a = await join(stack, server, transport, "/hall")
            assert a.room == "hall"
            await a.say("0123456789")
            await a.expect("message", a.name, "0123456789")
            await a.say("0123456789+")
            await a.expect("error", text="a message has at most 10 bytes")

    run(go())


def test_taken_name_refused(server):
    """No impersonation: a name in use in a room (any case) is refused, at connect time
    and by "name:"; it is free again once its owner has left."""
    async def go():
        async with contextlib.AsyncExitStack() as stack:
            alice = await join(stack, server, "ws", "/chat/uniq?name=alice")
            ws = await stack.enter_async_context(connect(server, "ws", "/chat/uniq?name=Alice"))
            imp = Chat(ws)
            err = await imp.expect("error")
            assert "taken" in err["text"], err
            welcome = await imp.expect("welcome")
            assert GUEST.match(welcome["from"]), welcome
            await imp.expect("join", welcome["from"])
            await alice.expect("join", welcome["from"])
            await imp.say("name: ALICE")
            assert "taken" in (await imp.expect("error"))["text"]
            # the same name in another room is someone else's business
            other = await join(stack, server, "ws", "/chat/uniq2?name=alice")
            assert other.name == "alice"
            await alice.say("fence")
            await alice.expect("message", "alice", "fence")     # no nick from imp
            await imp.expect("message", "alice", "fence")
        async with contextlib.AsyncExitStack() as stack:
            again = await join(stack, server, "ws", "/chat/uniq?name=alice")
            assert again.name == "alice"

    run(go())


@pytest.mark.parametrize("bad", ["\u202eevil", "a\u2066b", "a\u200fb", "a\u2028b",
                                 "a\u2029b", "a\u200bb", "bob\u00a0", "a\u3000b",
                                 "\ufeffbob", "a\u061cb"])
def test_invisible_and_bidi_names_refused(server, bad):
    async def go():
        async with contextlib.AsyncExitStack() as stack:
            a = await join(stack, server, "ws", "/chat/bidi")
            await a.say(f"name:{bad}")
            err = await a.expect("error")
            assert "bidi" in err["text"], err
            await a.say("fence")
            await a.expect("message", a.name, "fence")

    run(go())


def test_rate_limit(server):
    """rate/burst: past the burst, messages are refused with an error to the sender."""
    async def go():
        async with contextlib.AsyncExitStack() as stack:
            a = await join(stack, server, "ws", "/slow/r")
            for i in range(3):
                await a.say(f"m{i}")
                await a.expect("message", a.name, f"m{i}")
            await a.say("one too many")
            err = await a.expect("error")
            assert "too many" in err["text"], err

    run(go())


def test_failed_publish_reported(server):
    """A message the backplane cannot carry (its JSON is over the ring's 4 MiB) is
    reported to the sender instead of vanishing."""
    async def go():
        async with contextlib.AsyncExitStack() as stack:
            a = await join(stack, server, "ws", "/big/r")
            await a.say("\x01" * 1000000)           # 6 MB once JSON-escaped
            err = await a.expect("error")
            assert "could not be delivered" in err["text"], err
            await a.say("small")
            await a.expect("message", a.name, "small")

    run(go(), timeout=30)


def test_locations_do_not_share_rooms(server):
    """/staff-chat/lobby and /public-chat/lobby are different rooms (namespaces by
    location); /shared-a and /shared-b share by WebSocketChannelNamespace."""
    async def go():
        async with contextlib.AsyncExitStack() as stack:
            staff = await join(stack, server, "ws", "/staff-chat/lobby?name=boss")
            public = await join(stack, server, "ws", "/public-chat/lobby?name=boss")
            await staff.say("for staff only")
            await staff.expect("message", "boss", "for staff only")
            await public.say("fence")
            await public.expect("message", "boss", "fence")   # nothing from staff
            await staff.say("fence2")
            await staff.expect("message", "boss", "fence2")  # nothing from public
            a = await join(stack, server, "ws", "/shared-a/lobby?name=ann")
            b = await join(stack, server, "ws", "/shared-b/lobby?name=ben")
            await a.expect("join", "ben")
            await b.say("across locations")
            await a.expect("message", "ben", "across locations")

    run(go())


@pytest.mark.parametrize("path", [
    "/chat/bad.room", "/chat/" + "r" * 33, "/chat?room=", "/chat?room=a%20b",
    "/chat?room=" + "r" * 33, "/chat?name=", "/chat?name=" + "n" * 33, "/chat?name=a%00b",
    "/chat?name=%C3", "/chat?name=%zz", "/chat?name=a%0Ab",
])
def test_bad_room_or_name_refused(server, path):
    resp, _ = upgrade_request(server, "ws", path)
    assert resp.status == 400, resp


@pytest.mark.parametrize("key,value,message", [
    ("max_text", "0", "max_text: a number of bytes"),
    ("max_text", "12x", "max_text: a number of bytes"),
    ("default_room", "no spaces", "default_room:"),
    ("colour", "red", "unknown setting 'colour'"),
])
def test_bad_settings_fail_configtest(tmp_path, key, value, message):
    cfg = genconf.make_config(str(tmp_path), 1, None, "event", locations=[
        {"path": "/chat", "plugin": "chat", "settings": [(key, value)]}])
    rc, out = configtest(cfg.conf)
    assert rc != 0 and message in out, out
