"""Configuration safety: no mod_websocket directive in .htaccess, not even where
AllowOverrideList names it; and conf/websocket.conf passes `apache2 -t` with every example
in it uncommented."""

import os
import re
import urllib.request

import pytest

import genconf
from httpd import configtest

REPO = genconf.REPO


# Every directive of the module, with a valid argument.
DIRECTIVES = [
    ("WebSocketHandler", "build/plugins/echo.so"),
    ("WebSocketPluginConfig", "key value"),
    ("WebSocketMaxMessageSize", "100"),
    ("WebSocketMaxQueue", "4096"),
    ("WebSocketAllowedOrigins", "*"),
    ("WebSocketBackplane", "off"),
    ("WebSocketCompression", "off"),
    ("WebSocketCompressionThreshold", "10"),
    ("WebSocketCompressionWindowBits", "9"),
    ("WebSocketCompressionMemLevel", "2"),
    ("WebSocketCompressionLevel", "2"),
    ("WebSocketCompressionContextTakeover", "on"),
    ("WebSocketDriver", "blocking"),
    ("WebSocketPingInterval", "5s"),
    ("WebSocketAsyncDelay", "0"),
    ("WebSocketChannelNamespace", "x"),
    ("WebSocketCheckHost", "off"),
]


@pytest.fixture(scope="module")
def server(httpd_factory, tmp_path_factory):
    docroot = tmp_path_factory.mktemp("htdocs")
    for name, arg in DIRECTIVES:
        os.makedirs(docroot / name)
        (docroot / name / "index.html").write_text("hello\n")
        (docroot / name / ".htaccess").write_text(f"{name} {arg}\n")
    os.makedirs(docroot / "plain")
    (docroot / "plain" / "index.html").write_text("plain\n")
    extra = (f'<Directory "{docroot}">\n    AllowOverrideList '
             + " ".join(name for name, _ in DIRECTIVES) + "\n</Directory>\n")
    return httpd_factory(mpm="event", tls=False, docroot=str(docroot), extra_global=extra)


def get(server, path):
    try:
        with urllib.request.urlopen(server.url("http", path), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.parametrize("directive", [name for name, _ in DIRECTIVES])
def test_directive_refused_in_htaccess(server, directive):
    """httpd reads .htaccess per request: the directive is an error there (500), and
    the log names it; a WebSocketHandler in .htaccess never loads its .so."""
    server.mark_log()
    assert get(server, f"/{directive}/") == 500
    server.wait_for_log(re.escape(directive) + r".*htaccess")
    assert get(server, "/plain/") == 200


def uncommented_websocket_conf(path):
    """conf/websocket.conf.in (mods-available/websocket.conf once installed) with every
    example block and WebSocket* directive line uncommented and the plugin paths pointed
    at build/."""
    out, in_block = [], False
    with open(os.path.join(REPO, "conf", "websocket.conf.in")) as f:
        for line in f:
            if re.match(r"^\s*#<\w", line):
                in_block = True
            if in_block or re.match(r"^\s*#WebSocket\w+ ", line):
                line = line.replace("#", "", 1)
            if re.match(r"^\s*</\w", line):
                in_block = False
            out.append(line)
    text = "".join(out)
    text = text.replace("@PLUGINDIR@", os.path.join(REPO, "build", "plugins"))
    assert "@PLUGINDIR@" not in text
    with open(path, "w") as f:
        f.write(text)
    return text


def test_websocket_conf_examples_pass_configtest(tmp_path):
    conf = tmp_path / "websocket.conf"
    text = uncommented_websocket_conf(conf)
    assert "chat.so" in text and "#<Location" not in text      # examples uncommented
    cfg = genconf.make_config(str(tmp_path), 1, None, "event",
                              locations=[], extra_global=f'Include "{conf}"\n')
    rc, out = configtest(cfg.conf)
    assert rc == 0, out
