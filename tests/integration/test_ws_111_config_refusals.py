"""Values `apache2 -t` must refuse, directive by directive: each configuration differs
from a valid one by a single line, and the refusal names the directive (or the value)."""

import pytest

from httpd import configtest, free_port
import genconf  # noqa: E402  (httpd puts scripts/ on sys.path)


def conf_with(tmp_path, location_extra="", extra_global=""):
    cfg = genconf.make_config(tmp_path, free_port(), None, "event",
                              locations=[{"path": "/x", "plugin": "echo",
                                          "extra": location_extra}],
                              extra_global=extra_global)
    return cfg.conf


def test_the_valid_base_is_accepted(tmp_path):
    """The precondition of every refusal below: the same configuration with valid
    values of each directive passes."""
    conf = conf_with(tmp_path, location_extra=(
        "WebSocketAllowedOrigins https://a.example http://b.example:8080 null\n"
        "WebSocketCompression on\nWebSocketCompressionThreshold 0\n"
        "WebSocketCompressionWindowBits 8\nWebSocketCompressionMemLevel 9\n"
        "WebSocketCompressionLevel 0\nWebSocketDriver blocking\n"
        "WebSocketPingInterval 0\n"),
        extra_global="WebSocketBackplane redis://127.0.0.1:1/prefix\n")
    rc, out = configtest(conf)
    assert rc == 0, out


@pytest.mark.parametrize("line, names", [
    ("WebSocketAllowedOrigins a.example", "WebSocketAllowedOrigins"),
    ("WebSocketAllowedOrigins https://a.example/path", "WebSocketAllowedOrigins"),
    ("WebSocketAllowedOrigins https://a.example?q=1", "WebSocketAllowedOrigins"),
    ("WebSocketAllowedOrigins https://user@a.example", "WebSocketAllowedOrigins"),
    ("WebSocketCompression maybe", "WebSocketCompression"),
    ("WebSocketCompressionThreshold -1", "WebSocketCompressionThreshold"),
    ("WebSocketCompressionThreshold 64k", "WebSocketCompressionThreshold"),
    ("WebSocketCompressionWindowBits 7", "WebSocketCompressionWindowBits"),
    ("WebSocketCompressionWindowBits 16", "WebSocketCompressionWindowBits"),
    ("WebSocketCompressionMemLevel 0", "WebSocketCompressionMemLevel"),
    ("WebSocketCompressionMemLevel 10", "WebSocketCompressionMemLevel"),
    ("WebSocketCompressionLevel -1", "WebSocketCompressionLevel"),
    ("WebSocketCompressionLevel 10", "WebSocketCompressionLevel"),
    ("WebSocketDriver async", "WebSocketDriver"),
    ("WebSocketDriver", "WebSocketDriver"),
    ("WebSocketPingInterval abc", "WebSocketPingInterval"),
    ("WebSocketPingInterval -5", "WebSocketPingInterval"),
    # global only: not in a <Location>
    ("WebSocketBackplane off", "WebSocketBackplane"),
])
def test_location_value_refused(tmp_path, line, names):
    rc, out = configtest(conf_with(tmp_path, location_extra=line + "\n"))
    assert rc != 0, out
    assert names in out, out


@pytest.mark.parametrize("value", ["memcached://127.0.0.1", "redis:/127.0.0.1", "on", ""])
def test_backplane_value_refused(tmp_path, value):
    rc, out = configtest(conf_with(tmp_path,
                                   extra_global=f'WebSocketBackplane "{value}"\n'))
    assert rc != 0, out
    assert "WebSocketBackplane" in out, out
