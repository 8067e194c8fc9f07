"""Fixtures shared by the integration tests.

WS_TEST_MPMS (default "event,worker,prefork") picks the MPMs of the per-MPM matrix.

    httpd_factory   module scope: start_httpd(...) in a fresh directory; every server it
                    started is stopped at the end of the module, and its error log
                    checked for crashes and for [websocket:error] (or worse) lines that
                    the test did not expect: a module lists the ones it provokes in
                    ALLOWED_ERRORS (regexes), a test adds to srv.allowed_errors, or
                    httpd_factory(allowed_errors=[...]).
    mpm_params()    the MPM list, for `params=` of a module's own server fixture
                    (support.mpm_server(LOCATIONS) makes the whole fixture).

Unhandled exceptions in helper threads are errors (not warnings) in every test.
"""

import os
import re
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from httpd import start_httpd  # noqa: E402
import support  # noqa: E402

# The helpers' old home (a helper library named like a test): imports of it still work.
sys.modules.setdefault("test_ws_609_abuse_helpers", support)

# mod_websocket's lines at error level or worse (LogLevel ... websocket:debug).
WS_ERROR_LINE = re.compile(r"\[websocket:(error|crit|alert|emerg)\]")


def unexpected_error_lines(text, allowed):
    rx = [re.compile(a) for a in allowed]
    return [line for line in text.splitlines()
            if WS_ERROR_LINE.search(line) and not any(r.search(line) for r in rx)]

ALL_MPMS = ("event", "worker", "prefork")


def mpm_params():
    mpms = [m.strip() for m in os.environ.get("WS_TEST_MPMS", ",".join(ALL_MPMS)).split(",")
            if m.strip()]
    for m in mpms:
        if m not in ALL_MPMS:
            raise ValueError(f"WS_TEST_MPMS: unknown MPM {m!r}")
    return mpms


@pytest.fixture(scope="module")
def httpd_factory(tmp_path_factory, request):
    servers = []
    name = request.module.__name__.rsplit(".", 1)[-1]

    module_allowed = list(getattr(request.module, "ALLOWED_ERRORS", ()))

    def start(allowed_errors=(), **kw):
        d = tmp_path_factory.mktemp(f"{name}-{kw.get('mpm', 'event')}")
        srv = start_httpd(d, **kw)
        srv.allowed_errors = module_allowed + list(allowed_errors)
        servers.append(srv)
        return srv

    yield start
    errors = []
    for srv in servers:
        try:
            srv.stop()
        except AssertionError as e:
            errors.append(f"{srv.conf}: {e}")
        bad = unexpected_error_lines(srv.error_log_text(), srv.allowed_errors)
        if bad:
            errors.append(f"{srv.conf}: unexpected error lines in the error log:\n"
                          + "\n".join(bad[:20]))
    assert not errors, "\n".join(errors)


@pytest.fixture(params=["ws", "wss"])
def transport(request):
    """ws or wss, for tests that run over both."""
    return request.param


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long soak tests (make check runs them too)")
    config.addinivalue_line("filterwarnings",
                            "error::pytest.PytestUnhandledThreadExceptionWarning")
