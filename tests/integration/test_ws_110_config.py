"""Directives: where they are allowed, and configurations that must be refused."""

import os

import pytest

from httpd import PLUGINS, configtest, free_port  # (puts scripts/ on sys.path)
import genconf  # noqa: E402
from rawws import OP_BINARY, OP_TEXT, RawWS, upgrade_request

ECHO = os.path.join(PLUGINS, "echo.so")


def write_conf(tmp_path, locations=(), extra_global="", extra_vhost="", tls=False):
    cfg = genconf.make_config(tmp_path, free_port(), free_port() if tls else None, "event",
                              locations=list(locations), extra_global=extra_global,
                              extra_vhost=extra_vhost)
    return cfg.conf


# ---- accepted configurations -------------------------------------------------------------

def test_all_directives_in_location(tmp_path):
    conf = write_conf(tmp_path, [{
        "path": "/x", "plugin": "probe", "settings": [("protocols", "a,b")],
        "max_message_size": 1024, "max_queue": 1 << 20,
        "allowed_origins": ["https://a.example", "http://b.example:8080"]}])
    rc, out = configtest(conf)
    assert rc == 0, out


def test_directives_in_server_vhost_directory(tmp_path):
    docroot = tmp_path / "docroot"
    (docroot / "d").mkdir(parents=True)
    directives = (f'WebSocketMaxMessageSize 4096\nWebSocketMaxQueue 65536\n'
                  f'WebSocketAllowedOrigins *\n')
    conf = write_conf(
        tmp_path,
        extra_global=directives + f'<Directory "{docroot}/d">\n'
        f'    WebSocketHandler "{ECHO}"\n    WebSocketMaxMessageSize 100\n</Directory>\n',
        extra_vhost=directives + f'WebSocketHandler "{ECHO}"\n')
    rc, out = configtest(conf)
    assert rc == 0, out


def test_relative_and_absolute_paths(tmp_path):
    conf = write_conf(tmp_path, [("/rel", "build/plugins/echo.so"), ("/abs", ECHO),
                                 {"path": "/sym", "plugin": "echo",
                                  "init": "websocket_plugin_init"}])
    rc, out = configtest(conf)
    assert rc == 0, out


# ---- refused configurations --------------------------------------------------------------

def test_missing_so(tmp_path):
    missing = str(tmp_path / "no-such-plugin.so")
    conf = write_conf(tmp_path, [("/x", missing)])
    rc, out = configtest(conf)
    assert rc != 0, out
    assert "no-such-plugin.so" in out, out


def test_missing_relative_so(tmp_path):
    conf = write_conf(tmp_path, [("/x", "build/plugins/nope-nope.so")])
    rc, out = configtest(conf)
    assert rc != 0, out
    assert "nope-nope.so" in out, out


def test_not_a_shared_object(tmp_path):
    bogus = tmp_path / "bogus.so"
    bogus.write_text("this is not an ELF file\n")
    conf = write_conf(tmp_path, [("/x", str(bogus))])
    rc, out = configtest(conf)
    assert rc != 0, out
    assert "bogus.so" in out, out


def test_missing_init_symbol(tmp_path):
    conf = write_conf(tmp_path, [{"path": "/x", "plugin": "echo",
                                  "init": "no_such_init_function"}])
    rc, out = configtest(conf)
    assert rc != 0, out
    assert "no_such_init_function" in out, out
    assert "echo.so" in out, out


def test_bad_abi(tmp_path):
    conf = write_conf(tmp_path, [("/x", "badabi")])
    rc, out = configtest(conf)
    assert rc != 0, out
    assert "badabi.so" in out, out
    low = out.lower()
    assert "abi" in low or "version" in low or "magic" in low, out


def test_plugin_init_error_refuses_config(tmp_path):
    """The probe plugin's init refuses an unknown setting: the configuration fails."""
    conf = write_conf(tmp_path, [{"path": "/x", "plugin": "probe",
                                  "settings": [("no-such-setting", "1")]}])
    rc, out = configtest(conf)
    assert rc != 0, out
    assert "no-such-setting" in out, out


@pytest.mark.parametrize("value", ["abc", "-1", "12abc", ""])
def test_bad_max_message_size(tmp_path, value):
    conf = write_conf(tmp_path, [{"path": "/x", "plugin": "echo",
                                  "extra": f'WebSocketMaxMessageSize "{value}"'}])
    rc, out = configtest(conf)
    assert rc != 0, out
    assert "WebSocketMaxMessageSize" in out, out


@pytest.mark.parametrize("value", ["abc", "-5"])
def test_bad_max_queue(tmp_path, value):
    conf = write_conf(tmp_path, [{"path": "/x", "plugin": "echo",
                                  "extra": f'WebSocketMaxQueue "{value}"'}])
    rc, out = configtest(conf)
    assert rc != 0, out
    assert "WebSocketMaxQueue" in out, out


# ---- .htaccess ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def htaccess_server(httpd_factory, tmp_path_factory):
    docroot = tmp_path_factory.mktemp("htdocs")
    (docroot / "ht").mkdir()
    (docroot / "ht" / "index.html").write_text("hi\n")
    (docroot / "ht" / ".htaccess").write_text(f'WebSocketHandler "{ECHO}"\n')
    (docroot / "plain").mkdir()
    (docroot / "plain" / "index.html").write_text("plain\n")
    (docroot / "plain" / ".htaccess").write_text("# nothing\n")
    extra = (f'<Directory "{docroot}/ht">\n    AllowOverride All\n</Directory>\n'
             f'<Directory "{docroot}/plain">\n    AllowOverride All\n</Directory>\n')
    return httpd_factory(mpm="event", tls=False, docroot=str(docroot), extra_global=extra,
                         locations=[("/echo", "echo")])


def test_htaccess_handler_refused(htaccess_server):
    srv = htaccess_server
    srv.mark_log()
    resp, _ = upgrade_request(srv, "ws", "/ht/")
    assert resp.status == 500, resp
    srv.wait_for_log(r"WebSocketHandler")
    # the same directory with an harmless .htaccess works, and so does the real location
    resp, _ = upgrade_request(srv, "ws", "/plain/")
    assert resp.status != 500, resp
    with RawWS.open(srv, "ws", "/echo") as ws:
        ws.send_text("ok")
        assert ws.recv_message() == (OP_TEXT, b"ok")


# ---- directives at each level take effect (and merge down) ------------------------------

@pytest.fixture(scope="module")
def scoped_server(httpd_factory, tmp_path_factory):
    docroot = tmp_path_factory.mktemp("scoped-htdocs")
    (docroot / "wsdir").mkdir()
    extra_global = ("WebSocketAllowedOrigins https://global.example\n"
                    f'<Directory "{docroot}/wsdir">\n    WebSocketHandler "{ECHO}"\n'
                    "</Directory>\n")
    locations = [("/echo", "echo"),
                 {"path": "/echo-big", "plugin": "echo", "max_message_size": 100000,
                  "allowed_origins": ["https://local.example"]}]
    return httpd_factory(mpm="event", tls=True, docroot=str(docroot),
                         extra_global=extra_global,
                         extra_vhost="WebSocketMaxMessageSize 1000\n", locations=locations)


def test_directory_handler(scoped_server, transport):
    with RawWS.open(scoped_server, transport, "/wsdir/anything") as ws:
        ws.send_text("from a <Directory>")
        assert ws.recv_message() == (OP_TEXT, b"from a <Directory>")


def test_vhost_max_message_size_inherited(scoped_server, transport):
    with RawWS.open(scoped_server, transport, "/echo") as ws:
        ws.send_binary(b"x" * 1000)
        assert ws.recv_message() == (OP_BINARY, b"x" * 1000)
        ws.send_binary(b"x" * 1001)
        code, _ = ws.expect_close()
        assert code == 1009


def test_location_overrides_vhost(scoped_server, transport):
    with RawWS.open(scoped_server, transport, "/echo-big") as ws:
        ws.send_binary(b"y" * 5000)
        assert ws.recv_message() == (OP_BINARY, b"y" * 5000)


def test_server_level_origins_inherited(scoped_server, transport):
    resp, _ = upgrade_request(scoped_server, transport, "/echo",
                              headers={"Origin": "https://global.example"})
    assert resp.status == 101, resp
    resp, _ = upgrade_request(scoped_server, transport, "/echo",
                              headers={"Origin": "https://other.example"})
    assert resp.status == 403, resp


def test_location_origins(scoped_server, transport):
    resp, _ = upgrade_request(scoped_server, transport, "/echo-big",
                              headers={"Origin": "https://local.example"})
    assert resp.status == 101, resp
