"""Redis as an untrusted input: whatever is PUBLISHed on the backplane's channels is
checked like a client frame before any client sees it (text or binary only, text
UTF-8, size within the ring's limit, channel name rules); bad messages are dropped and
counted in /server-status.  And the password in the URL is used: Redis with requirepass,
`redis://:PASSWORD@` and `rediss://USER:PASSWORD@...?cacert=FILE` (Redis 6 ACL form,
over TLS to redis-server's tls-port with a self-signed certificate)."""

import asyncio
import contextlib
import re
import subprocess
import urllib.request

import pytest

import genconf
from httpd import configtest, free_port
from test_ws_800_pubsub import channel, open_probe
from test_ws_810_redis import CHILDREN, Redis, wait_for_count
from wsutil import run

PASSWORD = "s3cret pass"            # a space: percent-encoded in the URL
PREFIX = "hx"
REDIS_CLI = "/usr/bin/redis-cli"

# test_wrong_password provokes these on purpose (every child, each retry)
ALLOWED_ERRORS = [r"WS00054: redis backplane: AUTH at \S+ failed: WRONGPASS",
                  r"WS00052: redis backplane (publisher|subscriber) connection to \S+ lost"]


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("redis"))
    cert, key = genconf.make_cert(d)
    tls_port = free_port()
    r = Redis(d, ["--requirepass", PASSWORD, "--tls-port", str(tls_port),
                  "--tls-cert-file", cert, "--tls-key-file", key,
                  "--tls-auth-clients", "no"]).start()
    r.tls_port, r.cert = tls_port, cert
    genconf.ensure_www_access(d)       # the children (www-data) read the CA file
    yield r
    r.kill()


def backplane(redis, userinfo, tls=False, cafile=None):
    if tls:
        return (f"WebSocketBackplane rediss://{userinfo}@127.0.0.1:{redis.tls_port}/{PREFIX}"
                f"?cacert={cafile or redis.cert}\n")
    return f"WebSocketBackplane redis://{userinfo}@127.0.0.1:{redis.port}/{PREFIX}\n"


@pytest.fixture(scope="module")
def servers(redis, httpd_factory):
    """Two servers, one per URL form of the password; the second over TLS."""
    srvs = [httpd_factory(mpm="event", tls=False, locations=[("/probe", "probe")],
                          extra_global=backplane(redis, userinfo, tls))
            for userinfo, tls in ((":s3cret%20pass", False),
                                  ("default:s3cret%20pass", True))]
    for srv, port in zip(srvs, (redis.port, redis.tls_port)):
        for what in ("subscriber", "publisher"):
            wait_for_count(srv, rf"WS00051: redis backplane {what} connection to "
                                rf"127\.0\.0\.1:{port} \(re\)established", CHILDREN)
    return srvs


def cli_publish(redis, ch, payload):
    """PUBLISH from outside, as anyone who can reach the Redis could (payload: bytes)."""
    p = subprocess.run([REDIS_CLI, "-p", str(redis.port), "--no-auth-warning",
                        "-a", PASSWORD, "-x", "PUBLISH", ch], input=payload,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    assert p.returncode == 0 and re.match(rb"^\d+\s*$", p.stdout), p.stdout


def status_counter(srv, name):
    with urllib.request.urlopen(srv.url("http", "/server-status?auto"), timeout=10) as r:
        text = r.read().decode()
    m = re.search(rf"^{name}: (\d+)$", text, re.M)
    assert m, text
    return int(m.group(1))


HOSTILE = [
    b"\x01\xff\xfe invalid UTF-8",
    b"\x01aa\xc3",                      # cut inside a character
    b"\x09" + b"p" * 300,                # a 300-byte ping
    b"\x0a",                             # pong
    b"\x03reserved opcode",
    b"\x08\x03\xe8bye",                  # close
    b"\x00continuation",
    b"",                                 # no opcode byte at all
    b"\x02" + b"x" * (4 * 1024 * 1024),  # larger than the ring's limit
]


def test_hostile_messages_dropped_and_counted(servers, redis):
    a, b = servers

    async def go():
        async with contextlib.AsyncExitStack() as stack:
            pa, pb = await open_probe(stack, a, "ws"), await open_probe(stack, b, "ws")
            ch = channel("hostile")
            for p in (pa, pb):
                await p.sub(ch)
            for payload in HOSTILE:
                cli_publish(redis, f"{PREFIX}:{ch}", payload)
            # a bad channel name (control character) with a valid message
            cli_publish(redis, f"{PREFIX}:{ch}\nx", b"\x01sneaky")
            cli_publish(redis, f"{PREFIX}:{ch}\x1f", b"\x01sneaky")
            cli_publish(redis, f"{PREFIX}:{ch}", b"\x01fence \xc3\xa9")
            # the first thing each client gets is the fence (a bad frame would have
            # come first, or failed the connection)
            await asyncio.gather(pa.expect("fence é"), pb.expect("fence é"))
            # every child of the server counts what its subscriber dropped (nothing
            # else drops on this server)
            dropped = status_counter(a, "WebSocketBackplaneRedisDropped")
            assert dropped >= len(HOSTILE) + 2, dropped
            a.assert_no_crash()

    run(go(), timeout=60)


def test_auth_and_tls_cross_servers(servers):
    """Both servers authenticated (or nothing would cross), one of them over TLS: a
    message crosses each way."""
    a, b = servers

    async def go():
        async with contextlib.AsyncExitStack() as stack:
            pa, pb = await open_probe(stack, a, "ws"), await open_probe(stack, b, "ws")
            ch = channel("auth")
            for p in (pa, pb):
                await p.sub(ch)
            await pa.pub(ch, "from a")
            await asyncio.gather(pa.expect("from a"), pb.expect("from a"))
            await pb.pub(ch, "from b")
            await asyncio.gather(pa.expect("from b"), pb.expect("from b"))

    run(go())


def test_wrong_password_logged(redis, httpd_factory):
    srv = httpd_factory(mpm="event", tls=False, locations=[("/probe", "probe")],
                        extra_global=backplane(redis, ":wrong"))
    wait_for_count(srv, rf"WS00054: redis backplane: AUTH at 127\.0\.0\.1:{redis.port} "
                        r"failed", 1)


def test_rediss_untrusted_certificate_refused(redis, httpd_factory, tmp_path):
    """A certificate not signed by the configured CA: no connection (logged why)."""
    other_cert, _ = genconf.make_cert(str(tmp_path))
    genconf.ensure_www_access(str(tmp_path))
    srv = httpd_factory(mpm="event", tls=False, locations=[("/probe", "probe")],
                        extra_global=backplane(redis, ":s3cret%20pass", True, other_cert))
    wait_for_count(srv, r"WS00056: redis backplane: rediss://127\.0\.0\.1:\d+: TLS "
                        r"handshake failed: self.signed certificate", 1)
    assert "WS00051" not in srv.error_log_text()


def test_bad_redis_urls_fail_to_start(tmp_path):
    for url, why in [("redis://user@127.0.0.1", "needs a password"),
                     ("redis://127.0.0.1/x?cacert=/x", "only URL parameter"),
                     ("rediss://%zz:pw@127.0.0.1", "percent-encoding")]:
        cfg = genconf.make_config(str(tmp_path), free_port(), None, "event",
                                  extra_global=f"WebSocketBackplane {url}\n")
        rc, out = configtest(cfg.conf)
        assert rc == 0, out           # -t does not run post_config, where URLs are parsed
        p = subprocess.run(["/usr/sbin/apache2", "-f", cfg.conf, "-k", "start",
                            "-DFOREGROUND"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        out = p.stdout.decode(errors="replace")
        with open(cfg.error_log, errors="replace") as f:
            out += f.read()
        assert p.returncode != 0 and why in out, (url, out)
