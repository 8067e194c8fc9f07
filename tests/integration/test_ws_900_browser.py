"""The echo page (htdocs/index.html) in headless Chromium against a real httpd, over http
and https: tests/browser/echo.test.mjs drives the page's own controls (connect with
permessage-deflate negotiated, text, 1 MiB compressible text and 4 MiB binary echo
checked byte for byte, disconnect with 1000/1005) and takes a screenshot into
build/artifacts/.

Needs Debian's chromium and tests/browser/node_modules (scripts/deps.sh runs
tests/browser/install.sh); a missing piece fails the test with the command that fixes it.
"""

import os
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BROWSER_DIR = os.path.join(REPO, "tests", "browser")
SCRIPT = os.path.join(BROWSER_DIR, "echo.test.mjs")
ARTIFACTS = os.path.join(REPO, "build", "artifacts")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def _require_tools():
    node = shutil.which("node")
    if not node:
        pytest.fail("node is not installed: run `make deps` (scripts/deps.sh)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run `make deps` (apt-get install chromium)")
    if not os.path.exists(os.path.join(BROWSER_DIR, "node_modules", "playwright-core",
                                       "package.json")):
        pytest.fail("playwright-core is not installed: run `bash tests/browser/install.sh`")
    return node


@pytest.fixture(scope="module")
def server(httpd_factory):
    return httpd_factory(mpm="event", tls=True, locations=[("/echo", "echo")])


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_echo_page_in_chromium(server, scheme):
    node = _require_tools()
    os.makedirs(ARTIFACTS, exist_ok=True)
    shot = os.path.join(ARTIFACTS, f"browser-echo-{scheme}.png")
    if os.path.exists(shot):
        os.unlink(shot)
    url = server.url(scheme, "/")
    env = dict(os.environ, CHROMIUM=CHROMIUM)
    server.mark_log()
    try:
        p = subprocess.run([node, SCRIPT, url, shot], cwd=REPO, env=env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           encoding="utf-8", errors="replace", timeout=240)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"echo.test.mjs did not finish in {e.timeout}s\n{e.stdout or ''}\n{e.stderr or ''}")
    report = f"$ node {SCRIPT} {url} {shot}\n{p.stdout}\n{p.stderr}"
    print(report)
    assert p.returncode == 0, f"browser echo test failed (exit {p.returncode}):\n{report}"
    # The run's own closing line, and the steps that matter, must be there.
    assert "4194304 bytes binary, matches" in p.stdout, report
    # permessage-deflate: Chromium offers it, the server accepts it (the default), and
    # the 1 MiB text went compressed both ways: the first session's 6 messages (short
    # text, 80000 characters, 1 MiB text, 10 bytes, 4 MiB random, empty) took well under
    # 4 MiB + 1 MiB on the wire in each direction.
    assert 'extensions "permessage-deflate' in p.stdout, report
    assert "1 MiB text message (" in p.stdout, report
    m = server.wait_for_log(r"WS00040: session end: plugin=echo \S+ \S+ "
                            r"in=6msg/(\d+)B out=6msg/(\d+)B")
    wire_in, wire_out = int(m.group(1)), int(m.group(2))
    assert 4 * 2**20 < wire_in < 4 * 2**20 + 256 * 1024, m.group(0)
    assert 4 * 2**20 < wire_out < 4 * 2**20 + 256 * 1024, m.group(0)
    assert "DISCONNECTED (code 10" in p.stdout, report
    assert p.stdout.rstrip().splitlines()[-1].endswith("passed, 0 failed"), report
    with open(shot, "rb") as f:
        head = f.read(8)
    assert head == b"\x89PNG\r\n\x1a\n" and os.path.getsize(shot) > 10000, \
        f"no usable screenshot at {shot}"
