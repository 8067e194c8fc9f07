"""pytest plugin for `make check-asan` (fuzz/check-asan.sh loads it with -p).

It points the integration suite at another build directory and gives every httpd
(`apache2`) process the suite starts an extra environment, both from variables:

    WS_BUILD=/abs/path/build/asan     module and plugins to test (default: build/)
    WS_HTTPD_ENV='{"LD_PRELOAD": "...", "ASAN_OPTIONS": "..."}'   (JSON object)

If tests/integration/httpd.py reads these variables itself (it then has HTTPD_ENV),
this plugin does nothing.  Otherwise it patches, before any test module is imported:
  - httpd.BUILD / httpd.PLUGINS and genconf.make_config's default build directory;
  - subprocess.Popen, so that any command whose program is httpd's binary (the server
    itself, `apache2 -t`, `apache2 -k graceful`) gets WS_HTTPD_ENV added to its
    environment; every other program (clients, openssl, node) runs as before.
Relative plugin paths written into a test's configuration (`build/plugins/echo.so`)
still name the default build: those locations run uninstrumented plugins.
"""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

import httpd  # noqa: E402  (puts scripts/ on sys.path)
import genconf  # noqa: E402

BUILD = os.environ.get("WS_BUILD")
HTTPD_ENV = json.loads(os.environ.get("WS_HTTPD_ENV") or "{}")


def _is_httpd(args):
    if isinstance(args, (list, tuple)) and args:
        prog = str(args[0])
    elif isinstance(args, str):
        prog = args.split()[0] if args.split() else ""
    else:
        return False
    return os.path.realpath(prog) == os.path.realpath(httpd.HTTPD)


class _Popen(subprocess.Popen):
    def __init__(self, args, *a, **kw):
        if HTTPD_ENV and _is_httpd(args):
            env = dict(kw.get("env") or os.environ)
            env.update(HTTPD_ENV)
            kw["env"] = env
        super().__init__(args, *a, **kw)


def _install():
    if hasattr(httpd, "HTTPD_ENV"):
        return                      # httpd.py handles WS_BUILD / WS_HTTPD_ENV itself
    if BUILD:
        build = os.path.abspath(BUILD)
        httpd.BUILD = build
        httpd.PLUGINS = os.path.join(build, "plugins")
        make_config = genconf.make_config

        def make_config_in_build(*a, **kw):
            if kw.get("build") is None:
                kw["build"] = build
            return make_config(*a, **kw)

        genconf.make_config = make_config_in_build
    if HTTPD_ENV:
        subprocess.Popen = _Popen


_install()
