"""The chat and ticker pages in headless Chromium against a real httpd, over http and
https: tests/browser/chat.test.mjs has two pages chat with each other through
htdocs/chat.html; tests/browser/ticker.test.mjs watches htdocs/ticker.html fill and update.
Screenshots go to build/artifacts/.

Needs Debian's chromium and tests/browser/node_modules (scripts/deps.sh runs
tests/browser/install.sh); a missing piece fails the test with the command that fixes it.
"""

import os
import subprocess

import pytest

import genconf
from test_ws_900_browser import ARTIFACTS, BROWSER_DIR, CHROMIUM, REPO, _require_tools

# The demo's: the ticker's channel is also served at /sub/ticker (EventSource, long-poll).
LOCATIONS = [
    ("/chat", "chat"),
    # A fast board, so the page sees several updates quickly.
    genconf.with_ticker_ns({"path": "/ticker", "plugin": "ticker",
                            "settings": [("interval_ms", "250")]}),
] + genconf.channel_locations(ticker=True)


@pytest.fixture(scope="module")
def server(httpd_factory):
    return httpd_factory(mpm="event", tls=True, locations=LOCATIONS)


# ticker-eventsource, ticker-longpoll: the ticker page with ?transport=, fed from
# /sub/ticker by htdocs/channel.js instead of the plugin's own WebSocket (over http only,
# to keep the suite short).
@pytest.mark.parametrize("page,scheme", [
    (page, scheme) for page in ("chat", "ticker") for scheme in ("http", "https")
] + [("ticker-eventsource", "http"), ("ticker-longpoll", "http")])
def test_page_in_chromium(server, page, scheme):
    node = _require_tools()
    page, _, via = page.partition("-")
    script = os.path.join(BROWSER_DIR, f"{page}.test.mjs")
    os.makedirs(ARTIFACTS, exist_ok=True)
    shot = os.path.join(ARTIFACTS, f"browser-{page}{'-' + via if via else ''}-{scheme}.png")
    for p in (shot, shot.replace(".png", "-2.png")):
        if os.path.exists(p):
            os.unlink(p)
    url = server.url(scheme, f"/{page}.html" + (f"?transport={via}" if via else ""))
    env = dict(os.environ, CHROMIUM=CHROMIUM)
    try:
        p = subprocess.run([node, script, url, shot], cwd=REPO, env=env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           encoding="utf-8", errors="replace", timeout=180)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{page}.test.mjs did not finish in {e.timeout}s\n{e.stdout or ''}\n{e.stderr or ''}")
    report = f"$ node {script} {url} {shot}\n{p.stdout}\n{p.stderr}"
    print(report)
    assert p.returncode == 0, f"browser {page} test failed (exit {p.returncode}):\n{report}"
    assert p.stdout.rstrip().splitlines()[-1].endswith("passed, 0 failed"), report
    if page == "chat":
        assert "bob got alice's message" in p.stdout and "alice got bob's reply" in p.stdout, report
    else:
        assert "prices moved" in p.stdout and "colours:" in p.stdout, report
    shots = [shot] + ([shot.replace(".png", "-2.png")] if page == "chat" else [])
    for s in shots:
        with open(s, "rb") as f:
            head = f.read(8)
        assert head == b"\x89PNG\r\n\x1a\n" and os.path.getsize(s) > 10000, \
            f"no usable screenshot at {s}"
