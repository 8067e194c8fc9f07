"""Start and stop a real httpd for the tests.

    from httpd import start_httpd
    srv = start_httpd(tmp_path, mpm="event", tls=True, locations=[("/echo", "echo")])
    srv.ws_url("/echo"), srv.wss_url("/echo"), srv.http_url("/"), srv.ssl_context()
    srv.stop()      # SIGTERM, wait, and assert the error log shows no crashed child

The config is made by scripts/genconf.py (see there for the locations format).  Ports are
picked free and the start is retried on a bind race; start-up is awaited by an HTTP
request answered on the port (with a deadline), never by sleeping.
"""

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "scripts"))

import genconf  # noqa: E402

HTTPD = genconf.HTTPD
BUILD = os.path.join(REPO, "build")
PLUGINS = os.path.join(BUILD, "plugins")

# WS_TEST_CORES=1: children dump core into the server's directory (CoreDumpDirectory),
# and a crash report includes gdb backtraces of those cores.
CORES = os.environ.get("WS_TEST_CORES", "") not in ("", "0")

START_DEADLINE = 20.0
STOP_DEADLINE = 30.0

# Lines in the error log that mean a child died or misbehaved badly.
CRASH_PATTERNS = [
    re.compile(r"exit signal", re.I),                  # AH00052: child pid N exit signal X
    re.compile(r"Segmentation fault", re.I),
    re.compile(r"AddressSanitizer|LeakSanitizer|ThreadSanitizer|UndefinedBehaviorSanitizer"),
    re.compile(r"runtime error:"),                     # UBSan
    re.compile(r"still did not exit, sending a SIGKILL"),
    re.compile(r"could not make child process \d+ exit"),
    re.compile(r"\bassertion\b.*\bfailed\b", re.I),
    re.compile(r"double free|corrupted (size|double-linked)|stack smashing", re.I),
]

_CERT_DIR = None


def shared_cert_dir():
    """One self-signed cert per test process (genconf makes it once, readable by all)."""
    global _CERT_DIR
    if _CERT_DIR is None:
        _CERT_DIR = tempfile.mkdtemp(prefix="ws-cert-")
        os.chmod(_CERT_DIR, 0o755)
        genconf.make_cert(_CERT_DIR)
    return _CERT_DIR


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def crash_lines(text):
    return [line for line in text.splitlines() if any(p.search(line) for p in CRASH_PATTERNS)]


def client_ssl_context(cafile):
    """A client context that trusts exactly the generated self-signed certificate."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    ctx.check_hostname = True
    return ctx


class StartError(RuntimeError):
    pass


class Server:
    def __init__(self, cfg, proc, stdout_path, stderr_path):
        self.cfg = cfg
        self.proc = proc
        self.dir = cfg.dir
        self.conf = cfg.conf
        self.port = cfg.port
        self.tls_port = cfg.tls_port
        self.mpm = cfg.mpm
        self.cert = cfg.cert
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path
        self.host = "127.0.0.1"
        self._log_mark = 0
        self.stopped = False

    # ---- URLs ---------------------------------------------------------------------------
    @property
    def tls(self):
        return self.tls_port is not None

    def ws_url(self, path="/"):
        return f"ws://{self.host}:{self.port}{path}"

    def wss_url(self, path="/"):
        self._need_tls()
        return f"wss://{self.host}:{self.tls_port}{path}"

    def http_url(self, path="/"):
        return f"http://{self.host}:{self.port}{path}"

    def https_url(self, path="/"):
        self._need_tls()
        return f"https://{self.host}:{self.tls_port}{path}"

    def url(self, transport, path="/"):
        """transport: 'ws' or 'wss' (or 'http'/'https')."""
        return {"ws": self.ws_url, "wss": self.wss_url,
                "http": self.http_url, "https": self.https_url}[transport](path)

    def port_for(self, transport):
        return self.tls_port if transport in ("wss", "https") else self.port

    def origin(self, transport):
        """The same-origin Origin value for a transport."""
        scheme = "https" if transport in ("wss", "https") else "http"
        return f"{scheme}://{self.host}:{self.port_for(transport)}"

    def _need_tls(self):
        if self.tls_port is None:
            raise RuntimeError("this server was started without TLS")

    def ssl_context(self):
        self._need_tls()
        return client_ssl_context(self.cert)

    def ssl_for(self, transport):
        """ssl context for a transport, or None for plain."""
        return self.ssl_context() if transport in ("wss", "https") else None

    # ---- logs ---------------------------------------------------------------------------
    def error_log_text(self):
        try:
            with open(self.cfg.error_log, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def access_log_text(self):
        try:
            with open(self.cfg.access_log, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def mark_log(self):
        """Remember the current end of the error log (see log_since_mark / wait_for_log)."""
        self._log_mark = len(self.error_log_text())
        return self._log_mark

    def log_since_mark(self):
        return self.error_log_text()[self._log_mark:]

    def wait_for_log(self, pattern, timeout=10.0, since_mark=True):
        """Poll the error log until `pattern` (regex) matches; return the match or raise."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_since_mark() if since_mark else self.error_log_text()
            m = rx.search(text)
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"error log has no match for {pattern!r} after {timeout}s:\n"
                    + text[-4000:])
            time.sleep(0.05)  # polling the log file for an event, with a deadline

    def wait_for_access_log(self, pattern, timeout=10.0):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.access_log_text())
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"access log has no match for {pattern!r}")
            time.sleep(0.05)

    def crash_lines(self):
        return crash_lines(self.error_log_text())

    def core_files(self):
        return sorted(os.path.join(self.dir, f) for f in os.listdir(self.dir)
                      if f == "core" or f.startswith("core."))

    def backtraces(self, limit=200):
        out = []
        for core in self.core_files():
            p = subprocess.run(["gdb", "-batch", "-ex", "thread apply all bt", HTTPD, core],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=120)
            lines = [ln for ln in p.stdout.splitlines() if ln.startswith(("#", "Thread"))]
            out.append(f"--- {core}\n" + "\n".join(lines[:limit]))
        return "\n".join(out)

    def assert_no_crash(self):
        bad = self.crash_lines()
        if bad and CORES:
            bad.append(self.backtraces() or "(no core file found)")
        assert not bad, "httpd error log shows crashes:\n" + "\n".join(bad)

    # ---- life cycle ---------------------------------------------------------------------
    def alive(self):
        return self.proc.poll() is None

    def stop(self, check=True):
        """SIGTERM the parent, wait for it, then assert no child crashed (if check)."""
        if self.stopped:
            return
        self.stopped = True
        if self.proc.poll() is None:
            idle_conn = self._quiesce()
            # An event server with no session left gets graceful-stop (SIGWINCH; it
            # has nothing to wait for).  SIGTERM takes event's ungraceful path, where
            # close_worker_sockets() intermittently read a freed socket after heavy
            # load (see _quiesce): reported, not yet understood.  Servers with open
            # sessions still get SIGTERM, which is what those tests are about.
            graceful = self.mpm == "event" and self._sessions_open == 0
            self.proc.send_signal(signal.SIGWINCH if graceful else signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                _kill_group(self.proc)
                self.proc.wait(timeout=10)
                if check:
                    raise AssertionError(
                        f"httpd did not stop within {STOP_DEADLINE}s of SIGTERM\n"
                        + self.error_log_text()[-4000:])
            if idle_conn is not None:
                idle_conn.close()
        leftover = _group_alive(self.proc)
        _kill_group(self.proc)  # a child left behind by a broken parent
        if check:
            assert not leftover, "httpd children still running after the parent exited"
            self.assert_no_crash()

    def _quiesce(self, timeout=5.0):
        """Before SIGTERM, wait (bounded, best effort) until no worker is inside a
        connection, and return a keep-alive connection to close only after the stop.

        httpd 2.4's event MPM reads worker_sockets[] in close_worker_sockets() on
        SIGTERM while a worker that is just closing a connection may already have
        freed that socket's pool: a race in httpd that crashed children in about 1 of
        5 stress runs (apr_os_sock_get in the main thread), whenever connections were
        still closing at SIGTERM (the clients' last ones, or this status check's own).
        So the check stays on one keep-alive connection, idle in the MPM when the
        signal comes, and no connection is closing then."""
        self._sessions_open = None
        if self.mpm != "event":
            return None
        deadline = time.monotonic() + timeout
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=1)
        except OSError:
            return None
        try:
            s.settimeout(1)
            while time.monotonic() < deadline and self.proc.poll() is None:
                s.sendall(b"GET /server-status?auto HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                data = b""
                while not _response_complete(data):
                    chunk = s.recv(65536)
                    if not chunk:
                        return None
                    data += chunk
                if not data.startswith(b"HTTP/1.1 200"):
                    break                               # no mod_status here
                sessions = re.findall(rb"WebSocketSessions(?:Async|Blocking): (\d+)", data)
                self._sessions_open = sum(int(n) for n in sessions) if sessions else None
                busy = re.search(rb"BusyWorkers: (\d+)", data)
                closing = re.search(rb"ConnsAsyncClosing: (\d+)", data)
                if (busy and int(busy.group(1)) <= 1
                        and (not closing or int(closing.group(1)) == 0)):
                    break
                time.sleep(0.05)  # polling server-status for a state, with a deadline
        except OSError:
            pass
        return s

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop(check=exc[0] is None)


def _response_complete(data):
    """All of one HTTP response is in data (chunked or with Content-Length)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    m = re.search(rb"Content-Length: (\d+)", head, re.I)
    if m:
        return len(body) >= int(m.group(1))
    return body.endswith(b"0\r\n\r\n")


def _allow_cores():
    import resource
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def _group_alive(proc):
    try:
        os.killpg(proc.pid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def configtest(conf):
    """Run `apache2 -t -f conf`; return (returncode, combined output)."""
    p = subprocess.run([HTTPD, "-t", "-f", conf], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    return p.returncode, p.stdout.decode(errors="replace")


def start_httpd(tmp_path_or_dir, mpm="event", tls=True, locations=None, extra_global="",
                extra_vhost="", **genconf_kw):
    """Generate a config in the directory, start httpd and return a running Server.

    Extra keyword arguments go to genconf.make_config (loglevel, mpm_settings,
    load_websocket, docroot, timeout, ...).
    """
    directory = str(tmp_path_or_dir)
    os.makedirs(directory, exist_ok=True)
    genconf.ensure_www_access(directory)
    if tls:
        genconf_kw.setdefault("cert_dir", shared_cert_dir())
    if CORES:
        extra_global = f'CoreDumpDirectory "{directory}"\n' + extra_global
        os.chmod(directory, 0o777)   # children (www-data) write their cores here
    last_err = None
    for attempt in range(5):
        port = free_port()
        tls_port = free_port() if tls else None
        if tls_port == port:
            continue
        cfg = genconf.make_config(directory, port, tls_port, mpm, tls=tls,
                                  locations=locations, extra_global=extra_global,
                                  extra_vhost=extra_vhost, **genconf_kw)
        for p in (cfg.error_log, cfg.access_log):
            if os.path.exists(p):
                os.unlink(p)
        stdout_path = os.path.join(directory, "stdout.txt")
        stderr_path = os.path.join(directory, "stderr.txt")
        with open(stdout_path, "wb") as so, open(stderr_path, "wb") as se:
            proc = subprocess.Popen([HTTPD, "-f", cfg.conf, "-DFOREGROUND"],
                                    stdin=subprocess.DEVNULL, stdout=so, stderr=se,
                                    start_new_session=True,
                                    preexec_fn=_allow_cores if CORES else None)
        srv = Server(cfg, proc, stdout_path, stderr_path)
        deadline = time.monotonic() + START_DEADLINE
        ok = _wait_started(srv, deadline)
        if ok:
            return srv
        # Failed: find out why.
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        _kill_group(proc)
        with open(stderr_path, errors="replace") as f:
            err = f.read()
        log = srv.error_log_text()
        last_err = f"stderr:\n{err}\nerror log:\n{log[-4000:]}"
        if re.search(r"Address already in use|could not bind", err + log):
            continue  # a port was taken between picking and binding: retry
        raise StartError(f"httpd ({mpm}, tls={tls}) did not start: {cfg.conf}\n{last_err}")
    raise StartError(f"httpd did not start after retries (ports busy)\n{last_err}")


def _wait_started(srv, deadline):
    # The parent binds before it forks children: a connection may be accepted into the
    # backlog before anyone serves it, so wait for a real HTTP answer on each port.
    if not _poll_ping(srv, srv.port, False, deadline):
        return False
    if srv.tls:
        return _poll_ping(srv, srv.tls_port, True, deadline)
    return True


def _poll_ping(srv, port, tls, deadline):
    ctx = client_ssl_context(srv.cert) if tls else None
    while time.monotonic() < deadline:
        if srv.proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as raw:
                s = ctx.wrap_socket(raw, server_hostname="127.0.0.1") if tls else raw
                s.settimeout(max(0.1, min(5.0, deadline - time.monotonic())))
                s.sendall(b"HEAD /server-status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Connection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1."):
                    return True
        except (OSError, ssl.SSLError):
            # refused: the parent has not bound yet; wait a little before trying again
            time.sleep(0.02)
    return False


def have_plugin(name):
    return os.path.exists(os.path.join(PLUGINS, name + ".so"))


def module_built():
    return os.path.exists(os.path.join(BUILD, "mod_websocket.so"))
