"""The live news page (htdocs/news.html with htdocs/channel.js) in headless Chromium
against a real httpd serving the news channel without a plugin: /pub/news publishes
(POST), /sub/news subscribes (WebSocket, EventSource or long-poll on the same URL).

tests/browser/news.test.mjs opens three pages forced to websocket, eventsource and
longpoll, publishes headlines with POST and checks that all three show the same ones in
the same order; then it cuts every connection of the pages (a TCP proxy between Chromium
and httpd resets them and refuses new ones, like a network drop), publishes more, lets
connections through again and checks that every page reconnects, resumes by id and shows
each headline exactly once.  Then the client's own choice ('auto'): WebSocket, or
EventSource behind a proxy that refuses Upgrade, or long-polling behind one that refuses
event streams too; and the lost signal, for a page resuming from an id of another epoch.
Over http and over https with HTTP/2 (there without the auto fallback: the proxy cannot
see requests inside TLS).  Screenshots: build/artifacts/browser-news-SCHEME-*.png (one per
page).

Needs Debian's chromium and tests/browser/node_modules (scripts/deps.sh runs
tests/browser/install.sh); a missing piece fails the test with the command that fixes it.
"""

import os
import re
import subprocess

import pytest

from test_ws_900_browser import ARTIFACTS, BROWSER_DIR, CHROMIUM, REPO, _require_tools

SCRIPT = os.path.join(BROWSER_DIR, "news.test.mjs")
TRANSPORTS = ("websocket", "eventsource", "longpoll")
N, M = 5, 4          # headlines before the cut, and while the pages are cut off

# The demo's two locations (scripts/demo.sh), with the default first-message policy
# (newest only): a page that did not resume by id would miss what was published while
# it was cut off.
LOCATIONS = [
    {"path": "/pub/news", "plugin": None,
     "extra": "WebSocketChannelPublisher on\nRequire ip 127.0.0.1\n"},
    {"path": "/sub/news", "plugin": None, "extra": "WebSocketChannelSubscriber on\n"},
]


@pytest.fixture
def server(httpd_factory):
    # One per test: the test counts what the channel stores.
    return httpd_factory(mpm="event", tls=True, h2=True, locations=LOCATIONS)


# https: the pages over TLS with HTTP/2 (Chromium multiplexes the three transports'
# requests on one h2 connection; its WebSocket uses RFC 8441), through the same proxy.
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_news_pages_in_chromium(server, scheme):
    node = _require_tools()
    os.makedirs(ARTIFACTS, exist_ok=True)
    prefix = os.path.join(ARTIFACTS, f"browser-news-{scheme}")
    auto = TRANSPORTS if scheme == "http" else ("websocket",)
    shots = ([f"{prefix}-{t}.png" for t in TRANSPORTS] + [f"{prefix}-auto-{t}.png" for t in auto]
             + [f"{prefix}-lost-{t}.png" for t in TRANSPORTS])
    for s in shots:
        if os.path.exists(s):
            os.unlink(s)
    cmd = [node, SCRIPT, server.url(scheme, ""), server.http_url(""), prefix, str(N), str(M)]
    env = dict(os.environ, CHROMIUM=CHROMIUM)
    try:
        p = subprocess.run(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, encoding="utf-8",
                           errors="replace", timeout=120)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"news.test.mjs did not finish in {e.timeout}s\n{e.stdout or ''}\n{e.stderr or ''}")
    report = f"$ {' '.join(cmd)}\n{p.stdout}\n{p.stderr}"
    print(report)
    assert p.returncode == 0, f"browser news test failed (exit {p.returncode}):\n{report}"
    assert p.stdout.rstrip().splitlines()[-1] == "10 passed, 0 failed", report
    assert f"{N} headlines (" in p.stdout and "in the same order" in p.stdout, report
    assert f"show the {N + M} headlines once each" in p.stdout, report
    if scheme == "http":
        assert "long-poll where event streams are refused too" in p.stdout, report
    else:
        # Every transport went over HTTP/2: EventSource and long-poll as h2 GETs, the
        # WebSocket as an extended CONNECT (RFC 8441; mod_http2 logs it as a GET
        # answered 101).  A reconnect may open an HTTP/1.1 WebSocket: Chromium uses
        # RFC 8441 only on an h2 connection that it has already.
        log = server.access_log_text()
        for pattern in (r'"GET /sub/news\?last_event_id=\S+ HTTP/2\.0" 200',
                        r'"GET /sub/news HTTP/2\.0" 101'):
            assert re.search(pattern, log), f"no {pattern} in the access log:\n{log[-3000:]}"

    assert f"shows the {N + M + 2} stored headlines" in p.stdout, report
    for s in shots:
        with open(s, "rb") as f:
            head = f.read(8)
        assert head == b"\x89PNG\r\n\x1a\n" and os.path.getsize(s) > 10000, \
            f"no usable screenshot at {s}"
