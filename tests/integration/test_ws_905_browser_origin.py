"""A cross-origin page refused in the browser: headless Chromium on a page of
http://127.0.0.1:PORT opens WebSockets to the same origin (opens), to ws://localhost:PORT
(another origin, default same-origin policy: the handshake gets 403, the browser sees
error and 1006), and to a location with `WebSocketAllowedOrigins *` on that other host
name (opens).  tests/browser/origin.test.mjs does the browser part."""

import os
import subprocess

from test_ws_900_browser import BROWSER_DIR, CHROMIUM, REPO, _require_tools

SCRIPT = os.path.join(BROWSER_DIR, "origin.test.mjs")
LOCATIONS = [("/echo", "echo"),
             {"path": "/echo-any", "plugin": "echo", "allowed_origins": "*"}]


def test_cross_origin_refused_in_chromium(httpd_factory):
    node = _require_tools()
    srv = httpd_factory(mpm="event", tls=False, locations=LOCATIONS)
    page = srv.http_url("/")
    same = srv.ws_url("/echo")
    cross = f"ws://localhost:{srv.port}/echo"
    allowed = f"ws://localhost:{srv.port}/echo-any"
    p = subprocess.run([node, SCRIPT, page, same, cross, allowed], cwd=REPO,
                       env=dict(os.environ, CHROMIUM=CHROMIUM), stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=120)
    report = f"{p.stdout}\n{p.stderr}"
    print(report)
    assert p.returncode == 0, report
    assert p.stdout.rstrip().splitlines()[-1] == "4 passed, 0 failed", report
    # the server refused exactly the cross-origin handshake, with 403
    srv.wait_for_access_log(r'"GET /echo HTTP/1.1" 403 ')
    log = srv.access_log_text()
    assert log.count('"GET /echo HTTP/1.1" 403 ') == 1, log
    assert log.count('"GET /echo HTTP/1.1" 101 ') == 1, log
    assert log.count('"GET /echo-any HTTP/1.1" 101 ') == 1, log
