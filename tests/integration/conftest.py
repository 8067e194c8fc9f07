"""Fixtures shared by the integration tests.

WS_TEST_MPMS (default "event,worker,prefork") picks the MPMs of the per-MPM matrix.

    httpd_factory   module scope: start_httpd(...) in a fresh directory; every server it
                    started is stopped (and its error log checked for crashes) at the end
                    of the module.
    mpm_params()    the MPM list, for `params=` of a module's own server fixture.
"""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from httpd import start_httpd  # noqa: E402

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

    def start(**kw):
        d = tmp_path_factory.mktemp(f"{name}-{kw.get('mpm', 'event')}")
        srv = start_httpd(d, **kw)
        servers.append(srv)
        return srv

    yield start
    errors = []
    for srv in servers:
        try:
            srv.stop()
        except AssertionError as e:
            errors.append(f"{srv.conf}: {e}")
    assert not errors, "\n".join(errors)


@pytest.fixture(params=["ws", "wss"])
def transport(request):
    """ws or wss, for tests that run over both."""
    return request.param


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long soak tests (make check runs them too)")
