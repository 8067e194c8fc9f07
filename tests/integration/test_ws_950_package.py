"""The Debian package in this machine's own apache2, the way an administrator uses it:
`make deb` (dpkg-buildpackage, then lintian: errors and warnings fail), install both
packages, `a2enmod websocket`, `a2enconf websocket-demo` (the echo, chat and ticker
endpoints), `apache2ctl configtest`; then the system's apache2 is started from its own
/etc/apache2 - only ports.conf swapped for a free loopback port (the config is read
through a copy of apache2.conf given with -f, logs and pid file in a temporary directory)
- and the demo page and echo answer; the template plugin is built outside the tree from
the installed -dev files (pkg-config) and loaded; /server-status?auto shows the sessions.
Finally the packages are purged, and /etc/apache2, apache2's state, its module and
include directories must be exactly as before (every file, link and mode).

The demo page also runs in Chromium there (tests/browser/echo.test.mjs).
test_make_install_destdir checks `make install DESTDIR=...` and `make uninstall`.

The package test needs root, as CI runs it; it fails (never skips) otherwise.  The
system's apache2 service is never started; the instance started here is stopped in any
case.  Packages are installed and purged with apt-get, which waits for the dpkg lock.
"""

import hashlib
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from httpd import REPO, crash_lines, free_port
from rawws import OP_TEXT, RawWS, http_request
from test_ws_900_browser import CHROMIUM, SCRIPT, _require_tools

PKG = "libapache2-mod-websocket"
PKGS = (PKG, PKG + "-dev")
APACHE2 = "/usr/sbin/apache2"
# Everything the packages, a2enmod/a2enconf and the test may touch.
WATCHED = ("/etc/apache2", "/var/lib/apache2", "/usr/lib/apache2/modules",
           "/usr/include/apache2", "/usr/share/pkgconfig", "/usr/share/mod_websocket",
           f"/usr/share/doc/{PKG}", f"/usr/share/doc/{PKG}-dev")
APT = ["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", "--no-install-recommends"]
TEMPLATE = f"/usr/share/doc/{PKG}-dev/examples/plugin-template"


def run(cmd, timeout=300, **kw):
    """Run, return stdout+stderr; fail with both on a non-zero exit."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")
    env.update(kw.pop("env", {}))
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=timeout, env=env, **kw)
    assert p.returncode == 0, f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout[-6000:]}"
    return p.stdout


def installed(pkg):
    p = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}", pkg],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return p.returncode == 0 and p.stdout not in ("", "not-installed")


def snapshot():
    """{path: what it is} for everything under WATCHED: link targets, file hashes and
    modes, directory modes."""
    out = {}
    for top in WATCHED:
        for root, dirs, files in os.walk(top):
            out[root] = ("dir", os.stat(root).st_mode)
            for name in dirs + files:
                p = os.path.join(root, name)
                st = os.lstat(p)
                if os.path.islink(p):
                    out[p] = ("link", os.readlink(p))
                elif name in files:
                    with open(p, "rb") as f:
                        out[p] = ("file", st.st_mode, hashlib.sha256(f.read()).hexdigest())
    return out


class SystemApache:
    """The system's apache2 binary and /etc/apache2, on a free loopback port."""

    host = "127.0.0.1"

    def __init__(self, tmp, extra):
        self.dir = tmp
        self.port = free_port()
        for d in ("run", "lock", "log"):
            os.makedirs(os.path.join(tmp, d), exist_ok=True)
        with open("/etc/apache2/apache2.conf") as f:
            text = f.read()
        assert text.count("\nInclude ports.conf\n") == 1, "apache2.conf has changed shape"
        text = text.replace("\nInclude ports.conf\n", f"\nListen 127.0.0.1:{self.port}\n")
        self.conf = os.path.join(tmp, "apache2.conf")
        with open(self.conf, "w") as f:
            f.write(text + extra)
        # what /etc/apache2/envvars sets, pointed at the temporary directory
        self.env = {"APACHE_RUN_USER": "www-data", "APACHE_RUN_GROUP": "www-data",
                    "APACHE_RUN_DIR": f"{tmp}/run", "APACHE_PID_FILE": f"{tmp}/run/apache2.pid",
                    "APACHE_LOCK_DIR": f"{tmp}/lock", "APACHE_LOG_DIR": f"{tmp}/log",
                    "LANG": "C"}
        self.error_log = f"{tmp}/log/error.log"
        self.proc = None

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def cmd(self, *args):
        return [APACHE2, "-d", "/etc/apache2", "-f", self.conf, *args]

    def start(self):
        run(self.cmd("-t"), env=self.env)
        self.proc = subprocess.Popen(self.cmd("-DFOREGROUND"), env=dict(os.environ, **self.env),
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while True:          # started once it answers on the port (with a deadline)
            assert self.proc.poll() is None, f"apache2 exited:\n{self.log()}"
            try:
                if http_request(self, "ws", b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                b"Connection: close\r\n\r\n", timeout=2).status:
                    return
            except (OSError, AssertionError):
                assert time.monotonic() < deadline, f"apache2 did not answer:\n{self.log()}"
                time.sleep(0.05)  # not listening yet

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
                raise AssertionError("apache2 did not stop on SIGTERM")

    def log(self):
        try:
            with open(self.error_log, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    # what rawws.RawWS and http_request ask of a server
    def port_for(self, transport):
        return self.port

    def ssl_for(self, transport):
        return None


def echo_once(srv, path, text, want):
    with RawWS.open(srv, "ws", path) as ws:
        ws.send_text(text)
        assert ws.recv_message() == (OP_TEXT, want.encode())
        ws.send_close(1000)
        assert ws.expect_close(reply=False)[0] == 1000


def get(srv, path):
    return http_request(srv, "ws", f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        "Connection: close\r\n\r\n".encode(), timeout=5)


@pytest.fixture
def clean_system():
    """The state before; after the test, the packages purged and that state again."""
    assert os.geteuid() == 0, "this test installs a package: run it as root (CI does)"
    for p in PKGS:
        assert not installed(p), (f"{p} is installed already; the test needs a machine "
                                  f"without it: apt-get purge {' '.join(PKGS)}")
    before = snapshot()
    yield
    if any(installed(p) for p in PKGS):
        run(APT + ["purge", *PKGS])
    # a2enmod/a2enconf and the purge's a2dismod -p keep their bookkeeping in
    # /var/lib/apache2/{module,conf}/*_by_{admin,maint}/: directories they made, now
    # empty, go again
    for p in sorted(set(snapshot()) - set(before), reverse=True):
        if p.startswith("/var/lib/apache2/") and os.path.isdir(p) and not os.listdir(p):
            os.rmdir(p)
    after = snapshot()
    changed = {p: (before.get(p), after.get(p)) for p in set(before) | set(after)
               if before.get(p) != after.get(p)}
    assert not changed, f"apache2 is not as it was: {changed}"


def test_package_in_system_apache2(clean_system, tmp_path):
    os.chmod(tmp_path, 0o755)
    out = run(["make", "deb"], cwd=REPO, timeout=600)
    assert "lintian" in out
    version = run(["dpkg-parsechangelog", "-S", "Version"], cwd=REPO).strip()
    arch = run(["dpkg", "--print-architecture"]).strip()
    debs = [os.path.join(REPO, "build", "deb", f"{p}_{version}_{arch}.deb") for p in PKGS]
    run(APT + ["install", *debs])
    assert all(installed(p) for p in PKGS)
    # nothing is enabled by installing
    assert not os.path.exists("/etc/apache2/mods-enabled/websocket.load")

    assert "Enabling module websocket" in run(["a2enmod", "websocket"])
    assert "Enabling conf websocket-demo" in run(["a2enconf", "websocket-demo"])
    assert "Syntax OK" in run(["apache2ctl", "configtest"])

    # the template plugin, built outside the tree from the installed files
    assert run(["pkg-config", "--cflags", "mod_websocket"]).split() == ["-I/usr/include/apache2"]
    plugindir = run(["pkg-config", "--variable=plugindir", "mod_websocket"]).strip()
    assert os.path.isfile(os.path.join(plugindir, "echo.so"))
    tpl = tmp_path / "plugin"
    shutil.copytree(TEMPLATE, tpl)
    run(["make", "CFLAGS=-O2 -Wall -Wextra -Werror"], cwd=tpl)
    assert (tpl / "template.so").is_file()

    srv = SystemApache(str(tmp_path), f"""
<Location /template>
    WebSocketHandler {tpl}/template.so
    WebSocketPluginConfig prefix "tpl: "
</Location>
""")
    try:
        srv.start()
        page = get(srv, "/websocket-demo/")
        assert page.status == 200 and b"echo.js" in page.body, page
        assert get(srv, "/websocket-demo/echo.js").status == 200
        echo_once(srv, "/websocket-demo/echo", "through the system apache2",
                  "through the system apache2")
        echo_once(srv, "/template", "hello", "tpl: hello")
        # the demo page itself, in Chromium: it finds its endpoint beside it
        browser = subprocess.run(
            [_require_tools(), SCRIPT, srv.url("/websocket-demo/")], cwd=REPO,
            env=dict(os.environ, CHROMIUM=CHROMIUM), stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=240)
        report = f"{browser.stdout}\n{browser.stderr}"
        assert browser.returncode == 0, report
        assert f"location ws://127.0.0.1:{srv.port}/websocket-demo/echo" in report, report
        assert browser.stdout.rstrip().endswith("passed, 0 failed"), report
        st = get(srv, "/server-status?auto")
        assert st.status == 200, st
        lines = dict(line.split(": ", 1) for line in st.body.decode().splitlines()
                     if ": " in line)
        assert int(lines["WebSocketSessionsOpened"]) >= 3, lines
    finally:
        srv.stop()
    assert not crash_lines(srv.log()), srv.log()

    run(APT + ["purge", *PKGS])
    assert not any(installed(p) for p in PKGS)


def test_make_install_destdir(tmp_path):
    """make install honours DESTDIR (httpd's directories from apxs, the rest under
    PREFIX, the snippets generated with those paths); make uninstall takes it all back."""
    stage = str(tmp_path / "stage")
    run(["make", "install", f"DESTDIR={stage}", "PREFIX=/opt/ws"], cwd=REPO)
    files = sorted(os.path.relpath(os.path.join(r, f), stage)
                   for r, _, fs in os.walk(stage) for f in fs)
    doc = "opt/ws/share/doc/mod_websocket"
    assert files == sorted([
        "etc/apache2/conf-available/websocket-demo.conf",
        "etc/apache2/mods-available/websocket.conf",
        "etc/apache2/mods-available/websocket.load",
        "usr/include/apache2/mod_websocket.h",
        "usr/lib/apache2/modules/mod_websocket.so",
        *[f"usr/lib/apache2/modules/websocket/{p}.so" for p in ("chat", "echo", "ticker")],
        "opt/ws/share/pkgconfig/mod_websocket.pc",
        *[f"opt/ws/share/mod_websocket/demo/{f}" for f in sorted(os.listdir(
            os.path.join(REPO, "htdocs")))],
        *[f"{doc}/{f}" for f in ("README.md", "plugins.md", "security.md", "packaging.md")],
        *[f"{doc}/examples/{f}" for f in ("websocket.load", "websocket.conf",
                                          "websocket-demo.conf")],
        f"{doc}/examples/plugin-template/Makefile",
        f"{doc}/examples/plugin-template/template.c"]), files

    def read(path):
        with open(os.path.join(stage, path)) as f:
            return f.read()

    assert ("LoadModule websocket_module /usr/lib/apache2/modules/mod_websocket.so"
            in read("etc/apache2/mods-available/websocket.load"))
    assert ("Alias /websocket-demo /opt/ws/share/mod_websocket/demo"
            in read("etc/apache2/conf-available/websocket-demo.conf"))
    pc = read("opt/ws/share/pkgconfig/mod_websocket.pc")
    assert "plugindir=/usr/lib/apache2/modules/websocket\n" in pc
    assert "Cflags: -I${includedir}\n" in pc and "includedir=/usr/include/apache2\n" in pc
    # every @PLACEHOLDER@ of the templates substituted
    assert not re.search(r"@[A-Z_]+@", pc + read("etc/apache2/mods-available/websocket.conf"))

    run(["make", "uninstall", f"DESTDIR={stage}", "PREFIX=/opt/ws"], cwd=REPO)
    assert [f for _, _, fs in os.walk(stage) for f in fs] == []
