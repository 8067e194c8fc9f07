#!/usr/bin/python3
"""Generate a complete, self-contained httpd 2.4 configuration for mod_websocket.

Used as a library by the tests (``from genconf import make_config``) and as a command by
``scripts/demo.sh``.  Everything the server writes (pid file, logs, runtime dir, mutexes,
the SSL session cache) goes into the given directory; ServerRoot is the repository, so a
relative ``WebSocketHandler build/plugins/x.so`` resolves against it.

httpd's children run as www-data: the directory is made 0755, the files in it 0644, and
any directory on the way to the repository, the config dir and the document root that
www-data could not traverse gets o+x (a clone under a 0700 directory would otherwise only
give 403s).

Locations: a list whose items are either a (path, plugin) tuple or a dict:

    {"path": "/probe",                 # required
     "plugin": "probe",                # a name -> <build>/plugins/probe.so (absolute),
                                       # or a path ("x/y.so", absolute or ServerRoot-relative)
     "init": None,                     # optional INIT_SYMBOL for WebSocketHandler
     "settings": [("protocols", "a,b,c")],   # WebSocketPluginConfig lines
     "max_message_size": 65536,        # WebSocketMaxMessageSize
     "max_queue": None,                # WebSocketMaxQueue
     "allowed_origins": ["https://good.example"] or "*",
     "extra": "Require valid-user\n"}  # any text inside the <Location>

A dict with "plugin": None emits no WebSocketHandler (only "extra").
"""

import argparse
import dataclasses
import os
import stat
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES_DIR = "/usr/lib/apache2/modules"
HTTPD = "/usr/sbin/apache2"

DEFAULT_LOGLEVEL = "warn websocket:debug"
DEFAULT_LOCATIONS = [("/echo", "echo")]
MPMS = ("event", "worker", "prefork")

# Small, fixed process/thread counts.  MaxSpare* equal the maximum, so the parent never
# reaps an idle child in the middle of a test (a gracefully stopping child closes its
# WebSocket sessions with 1001).
MPM_DEFAULTS = {
    "event": {
        "StartServers": 2,
        "ServerLimit": 2,
        "ThreadsPerChild": 25,
        "ThreadLimit": 64,
        "MaxRequestWorkers": 50,
        "MinSpareThreads": 25,
        "MaxSpareThreads": 50,
        "MaxConnectionsPerChild": 0,
    },
    "worker": {
        "StartServers": 2,
        "ServerLimit": 2,
        "ThreadsPerChild": 25,
        "ThreadLimit": 64,
        "MaxRequestWorkers": 50,
        "MinSpareThreads": 25,
        "MaxSpareThreads": 50,
        "MaxConnectionsPerChild": 0,
    },
    "prefork": {
        "StartServers": 2,
        "MinSpareServers": 1,
        "MaxSpareServers": 150,
        "ServerLimit": 150,
        "MaxRequestWorkers": 150,
        "MaxConnectionsPerChild": 0,
    },
}

# The demo's preset for 10,000 concurrent connections on the event MPM (README, "Tuning
# for 10,000 connections"): 2 children x 16 threads (workers only run handshakes and
# pages: sessions live on the event loops), each child accepting about 16 + 16 * 400
# connections (suspended sessions count).  No MaxMemFree: each session gives its
# connection's free memory back once it is quiet (12 KiB per idle connection either way),
# and a small MaxMemFree would cost httpd's own requests (handshakes, POSTs, pages) a
# mapping per memory node (POSTs 11,000/s against 33,000/s, bench/sse.py).
SCALE_EVENT = {
    "StartServers": 2,
    "ServerLimit": 2,
    "ThreadsPerChild": 16,
    "ThreadLimit": 16,
    "MaxRequestWorkers": 32,
    "MinSpareThreads": 16,
    "MaxSpareThreads": 32,
    "AsyncRequestWorkerFactor": 400,
    "MaxConnectionsPerChild": 0,
}

# HTTP/2: h2 on the TLS port, h2c (prior knowledge and Upgrade) on the plain one, and
# WebSockets over both (RFC 8441: extended CONNECT, httpd 2.4.58+).
H2_LINES = "Protocols h2 h2c http/1.1\nH2WebSockets on\n"

BASE_MODULES = [
    "authz_core", "authz_host", "authz_user", "authn_core", "authn_file", "auth_basic",
    "mime", "dir", "alias", "headers", "deflate", "filter", "reqtimeout", "ssl",
    "socache_shmcb", "setenvif", "status",
]


@dataclasses.dataclass
class Config:
    dir: str
    conf: str
    error_log: str
    access_log: str
    pid_file: str
    port: int
    tls_port: int | None
    mpm: str
    cert: str | None
    key: str | None


def _quote(value):
    """Quote one httpd directive argument."""
    s = str(value)
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _make_traversable(path):
    """Give o+x (traverse only) to `path` and each of its ancestors that lacks it."""
    path = os.path.abspath(path)
    parts = []
    while True:
        parts.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for p in reversed(parts):
        try:
            st = os.stat(p)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode) and not st.st_mode & stat.S_IXOTH:
            os.chmod(p, st.st_mode | stat.S_IXOTH)
            if not p.startswith(tempfile.gettempdir() + os.sep):
                print(f"genconf: chmod o+x {p} (httpd children run as www-data)",
                      file=sys.stderr)


def _make_tree_readable(top):
    """o+r on files and o+rx on directories below `top` that lack it."""
    if not os.path.isdir(top):
        return
    for root, dirs, files in os.walk(top):
        for d in dirs:
            p = os.path.join(root, d)
            m = os.stat(p).st_mode
            if (m & 0o005) != 0o005:
                os.chmod(p, m | 0o005)
        for f in files:
            p = os.path.join(root, f)
            try:
                m = os.stat(p).st_mode
            except FileNotFoundError:
                continue
            if not m & stat.S_IROTH:
                os.chmod(p, m | stat.S_IROTH)


def ensure_www_access(*paths):
    """Make each path reachable (and its tree readable) for httpd's www-data children."""
    for p in paths:
        if p and os.path.exists(p):
            _make_traversable(p)
            _make_tree_readable(p)


def _is_p256_key(key):
    """True if `key` is an ECDSA P-256 private key (a cert made by an older genconf was
    RSA 2048: it is replaced)."""
    p = subprocess.run(["openssl", "pkey", "-in", key, "-noout", "-text"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True)
    return p.returncode == 0 and "prime256v1" in p.stdout


def make_cert(directory):
    """Create a self-signed ECDSA P-256 cert for 127.0.0.1/localhost in `directory`
    unless one is already there (P-256: a full TLS handshake costs the server far less
    than with RSA 2048).  Returns (cert_path, key_path)."""
    cert = os.path.join(directory, "server.crt")
    key = os.path.join(directory, "server.key")
    if os.path.exists(cert) and os.path.exists(key) and _is_p256_key(key):
        return cert, key
    os.makedirs(directory, exist_ok=True)
    tmp_cert, tmp_key = cert + ".tmp", key + ".tmp"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-days", "3650",
         "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", tmp_key, "-out", tmp_cert],
        check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    for p in (tmp_cert, tmp_key):
        os.chmod(p, 0o644)
    os.replace(tmp_key, key)
    os.replace(tmp_cert, cert)
    return cert, key


def _plugin_path(plugin, build):
    if "/" in plugin or plugin.endswith(".so"):
        return plugin
    return os.path.join(build, "plugins", plugin + ".so")


def _normalize_location(loc):
    if isinstance(loc, (tuple, list)):
        loc = {"path": loc[0], "plugin": loc[1]}
        if len(loc) > 2:
            loc["init"] = loc[2]
    return dict(loc)


def location_block(loc, build=None):
    """The <Location> text of one location (see the module docstring)."""
    build = build or os.path.join(REPO, "build")
    loc = _normalize_location(loc)
    lines = [f"<Location {_quote(loc['path'])}>"]
    plugin = loc.get("plugin")
    if plugin:
        handler = f"    WebSocketHandler {_quote(_plugin_path(plugin, build))}"
        if loc.get("init"):
            handler += f" {_quote(loc['init'])}"
        lines.append(handler)
    for key, value in loc.get("settings") or []:
        lines.append(f"    WebSocketPluginConfig {_quote(key)} {_quote(value)}")
    if loc.get("max_message_size") is not None:
        lines.append(f"    WebSocketMaxMessageSize {int(loc['max_message_size'])}")
    if loc.get("max_queue") is not None:
        lines.append(f"    WebSocketMaxQueue {int(loc['max_queue'])}")
    origins = loc.get("allowed_origins")
    if origins is not None:
        if isinstance(origins, str):
            origins = [origins]
        lines.append("    WebSocketAllowedOrigins " + " ".join(origins))
    extra = loc.get("extra") or ""
    for line in extra.strip("\n").splitlines():
        lines.append("    " + line)
    lines.append("</Location>")
    return "\n".join(lines) + "\n"


# The channel namespace the ticker plugin publishes in when channels are on (the demo's
# /sub/ticker subscribes to the ticker's channel there).
TICKER_NAMESPACE = "demo-ticker"


def channel_locations(ticker=True):
    """The demo's channels over plain HTTP (docs/channels.md): POST /pub/NAME publishes
    (from 127.0.0.1 only), /sub/NAME subscribes (WebSocket, EventSource or long-poll;
    a new subscriber gets the last 10 stored messages), and /sub/ticker is the ticker
    plugin's channel (its location must use TICKER_NAMESPACE: see with_ticker_ns)."""
    locs = [
        {"path": "/pub", "plugin": None,
         "extra": "WebSocketChannelPublisher on\nRequire ip 127.0.0.1\n"},
        {"path": "/sub", "plugin": None,
         "extra": "WebSocketChannelSubscriber on\nWebSocketChannelFirstMessage 10\n"},
    ]
    if ticker:
        locs.append({"path": "/sub/ticker", "plugin": None,
                     "extra": "WebSocketChannelSubscriber ticker\n"
                              f"WebSocketChannelNamespace {TICKER_NAMESPACE}\n"
                              "WebSocketChannelFirstMessage 1\n"})
    return locs


def with_ticker_ns(loc):
    """A ticker location publishing in TICKER_NAMESPACE (for /sub/ticker)."""
    loc = _normalize_location(loc)
    if loc.get("plugin") == "ticker":
        loc["extra"] = (loc.get("extra") or "") + \
            f"WebSocketChannelNamespace {TICKER_NAMESPACE}\n"
    return loc


def make_config(directory, port, tls_port=None, mpm="event", *, tls=None,
                locations=None, extra_global="", extra_vhost="",
                loglevel=DEFAULT_LOGLEVEL, load_websocket=True,
                mpm_settings=None, build=None, docroot=None, cert_dir=None,
                user="www-data", group="www-data", timeout=None, h2=False):
    """Write `directory`/httpd.conf (and what it needs) and return a Config.

    tls: serve TLS on tls_port (default: tls_port is not None).  The certificate is
    made in cert_dir (default `directory`) on first use and reused after.
    locations: list of locations (default [("/echo", "echo")]); [] for none.
    extra_global: text appended at server level (after the locations);
    extra_vhost: text inside each <VirtualHost> (plain and TLS).
    load_websocket: False omits `LoadModule websocket_module` (and the locations).
    h2: load mod_http2 and serve h2 (TLS), h2c (plain: prior knowledge and Upgrade) and
    http/1.1, with `H2WebSockets on` (RFC 8441); True, or a string of extra H2 lines.
    """
    if mpm not in MPMS:
        raise ValueError(f"unknown mpm {mpm!r}, expected one of {MPMS}")
    if tls is None:
        tls = tls_port is not None
    if tls and tls_port is None:
        raise ValueError("tls=True needs a tls_port")
    build = os.path.abspath(build or os.path.join(REPO, "build"))
    docroot = os.path.abspath(docroot or os.path.join(REPO, "htdocs"))
    directory = os.path.abspath(directory)
    rundir = os.path.join(directory, "run")
    os.makedirs(rundir, exist_ok=True)
    os.chmod(directory, (os.stat(directory).st_mode & 0o7777) | 0o755)
    os.chmod(rundir, 0o755)
    if locations is None:
        locations = DEFAULT_LOCATIONS

    cert = key = None
    if tls:
        cert, key = make_cert(cert_dir or directory)

    settings = dict(MPM_DEFAULTS[mpm])
    settings.update(mpm_settings or {})

    conf = os.path.join(directory, "httpd.conf")
    error_log = os.path.join(directory, "error.log")
    access_log = os.path.join(directory, "access.log")
    pid_file = os.path.join(directory, "httpd.pid")

    out = []
    w = out.append
    w("# Generated by scripts/genconf.py - do not edit.\n")
    w(f"ServerRoot {_quote(REPO)}\n")
    w("ServerName 127.0.0.1\n")
    w(f"PidFile {_quote(pid_file)}\n")
    w(f"DefaultRuntimeDir {_quote(rundir)}\n")
    w(f"Mutex file:{rundir} default\n")
    w(f"ErrorLog {_quote(error_log)}\n")
    if not load_websocket:
        # A per-module level for a module that is not loaded is a syntax error.
        loglevel = " ".join(t for t in loglevel.split() if not t.startswith("websocket:"))
    w(f"LogLevel {loglevel or 'warn'}\n")
    w('LogFormat "%h %l %u %t \\"%r\\" %>s %b %D" common\n')
    w(f"CustomLog {_quote(access_log)} common\n")
    w(f"User {user}\nGroup {group}\n")
    if timeout is not None:
        w(f"Timeout {int(timeout)}\n")
    w("KeepAlive On\n")
    # graceful-stop (how the tests stop event servers) must not wait forever
    w("GracefulShutdownTimeout 10\n")
    w(f"Listen 127.0.0.1:{port}\n")
    if tls:
        w(f"Listen 127.0.0.1:{tls_port}\n")
    w("\n")
    w(f"LoadModule mpm_{mpm}_module {MODULES_DIR}/mod_mpm_{mpm}.so\n")
    for m in BASE_MODULES:
        w(f"LoadModule {m}_module {MODULES_DIR}/mod_{m}.so\n")
    if h2:
        w(f"LoadModule http2_module {MODULES_DIR}/mod_http2.so\n")
    if load_websocket:
        w(f"LoadModule websocket_module {_quote(os.path.join(build, 'mod_websocket.so'))}\n")
    w("\n")
    w(f"<IfModule mpm_{mpm}_module>\n")
    for k, v in settings.items():
        w(f"    {k} {v}\n")
    w("</IfModule>\n\n")
    w("TypesConfig /etc/mime.types\n")
    w("AddDefaultCharset utf-8\n")
    w("DirectoryIndex index.html\n")
    w(f"DocumentRoot {_quote(docroot)}\n")
    w("<Directory />\n    Options None\n    AllowOverride None\n    Require all denied\n"
      "</Directory>\n")
    w(f"<Directory {_quote(docroot)}>\n    Options None\n    AllowOverride None\n"
      "    Require all granted\n</Directory>\n")
    w('<Location "/server-status">\n    SetHandler server-status\n'
      "    Require ip 127.0.0.1\n</Location>\n")
    if h2:
        w(H2_LINES)
        if isinstance(h2, str):
            w(h2.rstrip("\n") + "\n")
    if tls:
        # TLS session resumption: a session cache (TLS 1.2 session ids) and session
        # tickets (TLS 1.3 and 1.2; mod_ssl's default, stated here so nobody loses it).
        w(f"SSLSessionCache shmcb:{rundir}/ssl_scache(512000)\n")
        w("SSLSessionCacheTimeout 300\nSSLSessionTickets on\n")
    w("\n")
    if load_websocket:
        for loc in locations:
            w(location_block(loc, build))
        w("\n")
    if extra_global:
        w(extra_global.rstrip("\n") + "\n\n")
    w(f"<VirtualHost 127.0.0.1:{port}>\n    ServerName 127.0.0.1\n")
    if extra_vhost:
        w(extra_vhost.rstrip("\n") + "\n")
    w("</VirtualHost>\n")
    if tls:
        w(f"<VirtualHost 127.0.0.1:{tls_port}>\n    ServerName 127.0.0.1\n"
          f"    SSLEngine on\n    SSLCertificateFile {_quote(cert)}\n"
          f"    SSLCertificateKeyFile {_quote(key)}\n")
        if extra_vhost:
            w(extra_vhost.rstrip("\n") + "\n")
        w("</VirtualHost>\n")

    with open(conf, "w") as f:
        f.write("".join(out))
    os.chmod(conf, 0o644)
    ensure_www_access(directory, docroot, build if os.path.isdir(build) else None)
    return Config(dir=directory, conf=conf, error_log=error_log, access_log=access_log,
                  pid_file=pid_file, port=port, tls_port=tls_port if tls else None,
                  mpm=mpm, cert=cert, key=key)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", required=True, help="directory for httpd.conf, logs, cert")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tls-port", type=int, default=None,
                    help="also serve TLS on this port (self-signed cert, made once)")
    ap.add_argument("--mpm", default="event", choices=MPMS)
    ap.add_argument("--location", action="append", default=None, metavar="PATH=PLUGIN",
                    help="a WebSocket location; PLUGIN is a name under build/plugins or "
                         "a .so path (repeatable; default /echo=echo)")
    ap.add_argument("--no-websocket", action="store_true",
                    help="omit LoadModule websocket_module and all locations")
    ap.add_argument("--loglevel", default=DEFAULT_LOGLEVEL)
    ap.add_argument("--extra-global", default="")
    ap.add_argument("--extra-vhost", default="")
    ap.add_argument("--build", default=None, help="build dir (default REPO/build)")
    ap.add_argument("--docroot", default=None, help="document root (default REPO/htdocs)")
    ap.add_argument("--h2", action="store_true",
                    help="serve h2 (TLS) and h2c (plain) with H2WebSockets on (mod_http2)")
    ap.add_argument("--scale", action="store_true",
                    help="event MPM settings for 10,000 connections (the demo's)")
    ap.add_argument("--channels", action="store_true",
                    help="the demo's channel locations: /pub (POST from 127.0.0.1), /sub, "
                         "/sub/ticker (see channel_locations)")
    args = ap.parse_args(argv)

    locations = None
    if args.location is not None:
        locations = []
        for item in args.location:
            path, sep, plugin = item.partition("=")
            if not sep or not path.startswith("/") or not plugin:
                ap.error(f"--location wants PATH=PLUGIN, got {item!r}")
            locations.append((path, plugin))
    if args.channels:
        locations = [with_ticker_ns(loc) for loc in (locations or [("/echo", "echo")])]
        has_ticker = any(loc.get("plugin") == "ticker" for loc in locations)
        locations += channel_locations(ticker=has_ticker)
    cfg = make_config(args.dir, args.port, args.tls_port, args.mpm,
                      locations=locations, extra_global=args.extra_global,
                      extra_vhost=args.extra_vhost, loglevel=args.loglevel,
                      load_websocket=not args.no_websocket, build=args.build,
                      docroot=args.docroot, h2=args.h2,
                      mpm_settings=SCALE_EVENT if args.scale and args.mpm == "event" else None)
    print(cfg.conf)
    return 0


if __name__ == "__main__":
    sys.exit(main())
