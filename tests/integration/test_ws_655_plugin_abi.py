"""The plugin ABI across versions, and the API added to ABI v1.

  - A plugin built against the header of commit f00f916 (tests/integration/plugins/:
    that header, and oldabi.c) loads in today's host and echoes, closes with its own
    code and reason, and sees a host api table larger than its own: structs grow at
    the end only.  The badabi plugin (a future ABI version) is still refused.
  - buffered_amount / handle_buffered_amount: 0 when nothing is queued; right after a
    send it counts what is not written yet; 0 again once the client has read it all.
  - publish of more than WS_PUBLISH_MAX returns WS_ETOOBIG (-5), not WS_ENOMEM; at
    the limit it succeeds.  send of more than WebSocketMaxQueue returns WS_ETOOBIG and
    the connection stays open (it was WS_EFULL and a 1008 close).

Event MPM; the ABI does not depend on the MPM.
"""

import os
import subprocess

import pytest

from httpd import PLUGINS, configtest, free_port  # (puts scripts/ on sys.path)
import genconf  # noqa: E402
from rawws import OP_BINARY, OP_TEXT, RawWS

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "plugins")
WS_PUBLISH_MAX = 4 * 1024 * 1024 - 64       # include/mod_websocket.h
WS_ETOOBIG = -5
SMALL_QUEUE = 65536


@pytest.fixture(scope="module")
def oldabi_so(tmp_path_factory):
    """oldabi.c compiled against the f00f916 header only (no include/ on the path)."""
    out = str(tmp_path_factory.mktemp("oldabi") / "oldabi.so")
    cmd = ["cc", "-std=c99", "-O2", "-fPIC", "-shared", "-Wall", "-Wextra", "-Werror",
           "-I", FIXTURES, "-o", out, os.path.join(FIXTURES, "oldabi.c")]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, f"{' '.join(cmd)}\n{p.stderr}"
    return out


@pytest.fixture(scope="module")
def server(httpd_factory, oldabi_so):
    return httpd_factory(mpm="event", tls=True,
                         locations=[("/old", oldabi_so), ("/probe", "probe"),
                                    {"path": "/smallq", "plugin": "probe",
                                     "max_queue": SMALL_QUEUE}])


def test_old_plugin_loads_and_echoes(server, transport):
    with RawWS.open(server, transport, "/old") as ws:
        ws.send_text("abi")
        op, data = ws.recv_message()
        host_size, own_size, version = (int(x) for x in data.decode().split(":")[1:])
        assert version == 1
        assert host_size > own_size, "the host's api table did not grow at the end"
        for op_, msg in [(OP_TEXT, b"hello old plugin"), (OP_BINARY, bytes(range(256))),
                         (OP_TEXT, b"raw:" + b"z" * 70000), (OP_TEXT, b"")]:
            ws.send_frame(op_, msg)
            assert ws.recv_message() == (op_, msg)
        ws.send_text("close")
        code, reason = ws.expect_close()
        assert (code, reason) == (4001, b"old plugin")


def test_badabi_still_refused(tmp_path):
    cfg = genconf.make_config(tmp_path, free_port(), None, "event",
                              locations=[("/x", "badabi")])
    rc, out = configtest(cfg.conf)
    assert rc != 0 and "badabi.so" in out, out


def probe_cmd(ws, cmd):
    ws.send_text(cmd)
    while True:
        op, data = ws.recv_message()
        if op == OP_TEXT and data.split(b":")[0] in (b"buffered", b"pubsize"):
            return data.decode().split(":")[1:]


def test_buffered_amount(server, transport):
    with RawWS.open(server, transport, "/probe") as ws:
        ws.recv_message()                           # the probe's hello
        assert probe_cmd(ws, "buffered") == ["0", "0", "0"]
        size = 4 * 1024 * 1024
        ws.send_text(f"send:{size}")
        op, data = ws.recv_message()
        assert (op, len(data)) == (OP_BINARY, size)
        # the answer comes after the data: both counts were taken right after the send
        conn, handle, rv = (int(x) for x in ws_last_answer(ws))
        assert rv == 0
        assert size <= conn < size + 16, conn       # the frame, not written yet
        assert handle <= conn, (handle, conn)       # the handle's count lags the loop's
        # everything was read: nothing is queued any more
        assert probe_cmd(ws, "buffered") == ["0", "0", "0"]


def ws_last_answer(ws):
    op, data = ws.recv_message()
    assert op == OP_TEXT and data.startswith(b"buffered:"), data[:80]
    return data.decode().split(":")[1:]


def test_publish_too_big(server, transport):
    channel_len = len("pubsize")
    with RawWS.open(server, transport, "/probe", timeout=30) as ws:
        ws.recv_message()
        assert probe_cmd(ws, f"pubsize:{WS_PUBLISH_MAX - channel_len}")[1] == "0"
        assert probe_cmd(ws, f"pubsize:{WS_PUBLISH_MAX - channel_len + 1}")[1] == \
            str(WS_ETOOBIG)
        ws.send_text("still open")
        assert ws.recv_message() == (OP_TEXT, b"still open")


def test_send_too_big(server, transport):
    with RawWS.open(server, transport, "/smallq") as ws:
        ws.recv_message()
        ws.send_text(f"send:{SMALL_QUEUE + 1}")
        assert ws_last_answer(ws)[2] == str(WS_ETOOBIG)
        ws.send_text("still open")
        assert ws.recv_message() == (OP_TEXT, b"still open")
