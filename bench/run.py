#!/usr/bin/python3
"""Benchmark runner for mod_websocket (issue #4).

    bench/run.py bench [--quick] [--runs N] [--out FILE] [--only-servers a,b] [--only-workloads x,y]
    bench/run.py report [--quick] [--json FILE] [--out FILE]
    bench/run.py hold10k [--port 8080] [--conns 10000] [--hold 60]
    bench/run.py profile [--out FILE]

`bench` starts every server on loopback at once (each pinned to CPU 0 with taskset),
then, workload by workload, runs build/bench/wsload (pinned to CPU 1) against each
server in turn, `runs` times, interleaved so that a noisy moment hits every server
alike, and takes the median.  Then "pages under load" (bench/pages.py) on a server
configured like `make demo`.  It writes a Markdown report (docs/BENCHMARKS.md, or
build/bench/quick.md for --quick) with SVG charts (bench/charts.py) in bench/ beside it
(docs/bench/*.svg), and the raw runs as JSON in build/bench/results.json
(results-quick.json).  `report` rewrites the report and the charts from that JSON.

`hold10k` holds 10,000 idle connections against a running `make demo` (ws on PORT,
wss on PORT+1) and checks the demo's promises.  `profile` runs perf (or callgrind) on
mod_websocket's echo path and writes build/bench/profile.txt.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BUILD = os.path.join(REPO, "build")
BIN = os.path.join(BUILD, "bench")
WSLOAD = os.path.join(BIN, "wsload")
sys.path.insert(0, os.path.join(REPO, "scripts"))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

import genconf  # noqa: E402
from httpd import start_httpd  # noqa: E402

import charts  # noqa: E402  (bench/, the script's own directory)
import pages  # noqa: E402
import targets as issue_targets  # noqa: E402
from sections import splice_section  # noqa: E402

NCPU = os.cpu_count() or 1
SERVER_CPU = "0"
CLIENT_CPU = "1" if NCPU > 1 else "0"

# Event MPM sized for the one core the servers get here: one child with one event loop
# (as libwebsockets has one service thread).  With the defaults (2 children x 2 loops)
# four busy loop threads take turns on the one core and the 32 B p99 is ~12 ms of
# scheduler time slices (docs/BENCHMARKS.md).  AsyncRequestWorkerFactor lets the one
# child hold 10,000 sessions (16 + 16 x 1000).
ASYNC_MPM = {"StartServers": 1, "ServerLimit": 1, "ThreadsPerChild": 16, "ThreadLimit": 16,
             "MaxRequestWorkers": 16, "MinSpareThreads": 1, "MaxSpareThreads": 16,
             "AsyncRequestWorkerFactor": int(os.environ.get("BENCH_ARWF", "1000")),
             "MaxConnectionsPerChild": 0}
ASYNC_GLOBAL = os.environ.get("BENCH_ASYNC_GLOBAL", "WebSocketLoopThreads 1\n")
# A thread per connection (blocking driver, mod_lua): 8 x 150 = 1,200 threads.
BLOCKING_MPM = {"StartServers": 8, "ServerLimit": 8, "ThreadsPerChild": 150,
                "ThreadLimit": 150, "MaxRequestWorkers": 1200, "MinSpareThreads": 25,
                "MaxSpareThreads": 1200, "MaxConnectionsPerChild": 0}
BLOCKING_MAX_CONNS = 1000


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, deadline=20.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def tree_pids(root):
    """root and its descendants (from /proc)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def pin(pid, cpus):
    for p in tree_pids(pid):
        subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(p)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# ---- servers ---------------------------------------------------------------------------

class Server:
    """A running server: name, pid (root of its process tree), urls."""

    def __init__(self, name, pid, stop, ws=None, wss=None, raw=None, paths=None):
        self.name, self.pid, self._stop = name, pid, stop
        self.ws, self.wss, self.raw = ws, wss, raw
        self.paths = paths or {}

    def alive(self):
        try:
            os.kill(self.pid, 0)
            return True
        except OSError:
            return False

    def stop(self):
        try:
            self._stop()
        except Exception as e:  # noqa: BLE001 - best effort at the end of a run
            log(f"run.py: stopping {self.name}: {e}")


def start_process(name, argv, port, env=None):
    out = open(os.path.join(BIN, f"{name}.log"), "wb")
    p = subprocess.Popen(["taskset", "-c", SERVER_CPU] + argv, stdin=subprocess.DEVNULL,
                         stdout=out, stderr=subprocess.STDOUT, env=env,
                         start_new_session=True)
    if not wait_port(port):
        p.kill()
        raise RuntimeError(f"{name} did not start: see {out.name}")

    def stop():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        out.close()
    return p.pid, stop


def start_raw():
    port = free_port()
    pid, stop = start_process("rawecho", [os.path.join(BIN, "rawecho"), str(port)], port)
    return Server("raw TCP", pid, stop, raw=f"tcp://127.0.0.1:{port}")


def start_epoll():
    port = free_port()
    pid, stop = start_process("epollws", [os.path.join(BIN, "epollws"), str(port)], port)
    return Server("minimal epoll WebSocket echo", pid, stop, ws=f"ws://127.0.0.1:{port}")


def start_node():
    port = free_port()
    env = dict(os.environ, NODE_PATH="/usr/share/nodejs")
    pid, stop = start_process("node-ws", ["node", os.path.join(HERE, "peers", "node_echo.js"),
                                          str(port)], port, env)
    return Server("Node ws", pid, stop, ws=f"ws://127.0.0.1:{port}")


def start_python():
    port = free_port()
    pid, stop = start_process("python-websockets",
                              ["/usr/bin/python3", os.path.join(HERE, "peers", "py_echo.py"),
                               str(port)], port)
    return Server("Python websockets", pid, stop, ws=f"ws://127.0.0.1:{port}")


def start_lws():
    port = free_port()
    pid, stop = start_process("lwsecho", [os.path.join(BIN, "lwsecho"), str(port)], port)
    return Server("libwebsockets", pid, stop, ws=f"ws://127.0.0.1:{port}")


def _httpd(name, tls, mpm_settings, extra_global, locations, load_websocket=True):
    d = os.path.join(BIN, "srv-" + name)
    shutil.rmtree(d, ignore_errors=True)
    srv = start_httpd(d, mpm="event", tls=tls, locations=locations,
                      extra_global=extra_global, loglevel="warn",
                      mpm_settings=mpm_settings, load_websocket=load_websocket)
    pin(srv.proc.pid, SERVER_CPU)
    return srv


def start_mws(blocking):
    extra = "WebSocketDriver blocking\n" if blocking else ""
    locs = [{"path": "/echo", "plugin": "echo", "extra": extra}]
    if not blocking and os.path.exists(os.path.join(BUILD, "plugins", "ticker.so")):
        locs.append({"path": "/ticker", "plugin": "ticker",
                     "settings": [("interval_ms", "100")]})
    srv = _httpd("mws-blocking" if blocking else "mws-async", True,
                 BLOCKING_MPM if blocking else ASYNC_MPM,
                 "" if blocking else ASYNC_GLOBAL, locs)
    return Server("mod_websocket " + ("blocking" if blocking else "async"), srv.proc.pid,
                  srv.stop, ws=f"ws://127.0.0.1:{srv.port}",
                  wss=f"wss://127.0.0.1:{srv.tls_port}")


def start_demo():
    """Configured like `make demo` (scripts/demo.sh): event MPM with genconf's SCALE_EVENT,
    HTTP/2, the demo's locations; ws only (pages under load)."""
    locs = [("/echo", "echo")] + [(f"/{p}", p) for p in ("chat", "ticker")
                                  if os.path.exists(os.path.join(BUILD, "plugins", f"{p}.so"))]
    d = os.path.join(BIN, "srv-demo")
    shutil.rmtree(d, ignore_errors=True)
    srv = start_httpd(d, mpm="event", tls=True, locations=locs, loglevel="warn", h2=True,
                      mpm_settings=genconf.SCALE_EVENT)
    pin(srv.proc.pid, SERVER_CPU)
    return Server("mod_websocket async (make demo config)", srv.proc.pid, srv.stop,
                  ws=f"ws://127.0.0.1:{srv.port}", wss=f"wss://127.0.0.1:{srv.tls_port}")


def start_lua():
    script = os.path.join(HERE, "peers", "lua_echo.lua")
    genconf.ensure_www_access(os.path.dirname(script))
    extra = (f"LoadModule lua_module {genconf.MODULES_DIR}/mod_lua.so\n"
             "LuaScope thread\n"
             f'LuaMapHandler "^/echo$" "{script}" handle\n'
             f'LuaMapHandler "^/echo-bin$" "{script}" handle_binary\n')
    srv = _httpd("mod_lua", False, BLOCKING_MPM, extra, [], load_websocket=False)
    return Server("mod_lua", srv.proc.pid, srv.stop, ws=f"ws://127.0.0.1:{srv.port}",
                  paths={"binary": "/echo-bin"})


# Targets: (key, column label, server key, transport)
TARGETS = [
    ("mws-async-ws", "mod_websocket async ws", "mws-async", "ws"),
    ("mws-async-wss", "mod_websocket async wss", "mws-async", "wss"),
    ("mws-blocking-ws", "mod_websocket blocking ws", "mws-blocking", "ws"),
    ("mws-blocking-wss", "mod_websocket blocking wss", "mws-blocking", "wss"),
    ("raw", "raw TCP echo", "raw", "raw"),
    ("epoll", "minimal epoll ws echo", "epoll", "ws"),
    ("node", "Node ws", "node", "ws"),
    ("python", "Python websockets", "python", "ws"),
    ("lws", "libwebsockets", "lws", "ws"),
    ("mod_lua", "mod_lua", "mod_lua", "ws"),
]
PEERS = ["raw", "epoll", "node", "python", "lws", "mod_lua"]
STARTERS = {"mws-async": lambda: start_mws(False), "mws-blocking": lambda: start_mws(True),
            "raw": start_raw, "epoll": start_epoll, "node": start_node,
            "python": start_python, "lws": start_lws, "mod_lua": start_lua,
            "demo": start_demo}
BLOCKING_SERVERS = {"mws-blocking", "mod_lua"}

# ---- workloads ------------------------------------------------------------------------

def workloads(quick):
    d, w = ("2", "0.5") if quick else ("3", "1")
    idle_conns = 2000 if quick else 10000
    hold = "3" if quick else "6"
    return [
        {"key": "echo32x100", "title": "32 B text echo, 100 connections", "mode": "echo",
         "args": ["-c", "100", "-s", "32", "-d", d, "-w", w, "--open-first"], "metric": "msgs_per_s",
         "unit": "msg/s", "better": "higher"},
        {"key": "echo32x1000", "title": "32 B text echo, 1,000 connections", "mode": "echo",
         "args": ["-c", "1000", "-s", "32", "-d", d, "-w", w, "-B", "128",
                  "--open-first"],
         "metric": "msgs_per_s", "unit": "msg/s", "better": "higher"},
        {"key": "echo64kx10", "title": "64 KiB binary echo, 10 connections", "mode": "echo",
         "args": ["-c", "10", "-s", "64k", "-b", "-d", d, "-w", w, "--open-first"], "metric": "mb_per_s",
         "unit": "MB/s", "better": "higher", "binary": True},
        {"key": "echo1m", "title": "1 MiB binary echo, 2 connections", "mode": "echo",
         "args": ["-c", "2", "-s", "1m", "-b", "-d", d, "-w", w, "--open-first"], "metric": "mb_per_s",
         "unit": "MB/s", "better": "higher", "binary": True},
        {"key": "connect", "title": "connection rate (connect, handshake, 32 B echo, close; "
         "32 concurrent; wss: full TLS handshakes)", "mode": "connect",
         "args": ["-c", "32", "-S", "16", "-d", d, "-w", w], "metric": "conns_per_s",
         "unit": "conn/s", "better": "higher"},
        {"key": "connect-resume", "title": "connection rate over wss with TLS session "
         "resumption (as connect; wsload --resume)", "mode": "connect",
         "args": ["-c", "32", "-S", "16", "-d", d, "-w", w, "--resume"],
         "metric": "conns_per_s", "unit": "conn/s", "better": "higher",
         "only": ["mws-async-wss", "mws-blocking-wss"]},
        {"key": "idle", "title": f"{idle_conns:,} idle connections: server memory per "
         "connection", "mode": "idle",
         "args": ["-c", str(idle_conns), "--hold", hold, "--ping", str(float(hold) / 2),
                  "-B", "256", "-S", "4", "--final-timeout", "20"],
         "blocking_conns": min(BLOCKING_MAX_CONNS, idle_conns),
         "metric": "per_conn_kb", "unit": "KiB/conn", "better": "lower"},
        {"key": "broadcast", "title": "broadcast fan-out to 10,000 subscribers (/ticker, "
         "one message per 100 ms)", "mode": "broadcast",
         "args": ["-c", "2000" if quick else "10000", "-d", d, "-w", "2", "-S", "4"],
         "metric": "deliveries_per_s", "unit": "msg/s", "better": "higher",
         "only": ["mws-async-ws"], "path": "/ticker"},
    ]


# Pages under load (bench/pages.py): busy clients, samples of each kind per round, the
# longest the load may run, per-sample timeout (s).
PAGES_FULL = {"conns": 1000, "samples": 20, "max_load_s": 300, "timeout": 30}
PAGES_QUICK = {"conns": 1000, "samples": 5, "max_load_s": 40, "timeout": 15}


def run_pages(srv, quick, runs):
    """Pages under load, `runs` rounds on the demo-like server; (combined, rounds)."""
    cfg = PAGES_QUICK if quick else PAGES_FULL
    with open(os.path.join(REPO, "htdocs", "index.html"), "rb") as f:
        body = f.read()
    port = int(srv.ws.rsplit(":", 1)[1])
    rounds = []
    for run in range(runs):
        if not srv.alive():
            log("run.py: pages under load: the demo server is not running")
            break
        r = pages.run(WSLOAD, CLIENT_CPU, port, srv.pid, body, cfg["conns"], cfg["samples"],
                      cfg["max_load_s"], cfg["timeout"],
                      os.path.join(BIN, f"pages-load-{run}.json"))
        rounds.append(r)
        pg, ws = pages.summary(r["page_ms"]), pages.summary(r["ws_ms"])
        log(f"  pages        run {run + 1}/{runs} page p50/p99/max "
            f"{pg['p50'] or 0:.1f}/{pg['p99'] or 0:.1f}/{pg['max'] or 0:.1f} ms, ws cycle "
            f"{ws['p50'] or 0:.1f}/{ws['p99'] or 0:.1f}/{ws['max'] or 0:.1f} ms, "
            f"{len(r['failures'])} failed, load rc={r['load_rc']}")
    return (pages.combine(rounds) if rounds else None), rounds


def target_url(srv, transport, wl):
    if transport == "raw":
        return srv.raw
    base = srv.wss if transport == "wss" else srv.ws
    path = wl.get("path", "/echo")
    if wl.get("binary") and "binary" in srv.paths:
        path = srv.paths["binary"]
    return base + path


def run_wsload(wl, url, srv, conns_override=None, quiet=True):
    out = tempfile.NamedTemporaryFile(prefix="wsload-", suffix=".json", dir=BIN, delete=False)
    out.close()
    args = list(wl["args"])
    if conns_override is not None:
        args[args.index("-c") + 1] = str(conns_override)
    argv = ["taskset", "-c", CLIENT_CPU, WSLOAD, wl["mode"], url] + args + \
        ["--pid", str(srv.pid), "--json", out.name] + (["-q"] if quiet else [])
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=240)
        text = p.stdout
        rc = p.returncode
    except subprocess.TimeoutExpired as e:
        text, rc = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) \
            else (e.stdout or ""), -1
    try:
        with open(out.name) as f:
            res = json.loads(f.read())
    except (OSError, ValueError):
        res = None
    os.unlink(out.name)
    return rc, res, text


def metric_of(wl, res):
    if res is None:
        return None
    if wl["metric"] == "per_conn_kb":
        return res["server"]["per_conn_kb"] if res["server"]["ok"] else None
    return res.get(wl["metric"])


def machine_info():
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, timeout=30).stdout.strip()
        except Exception:  # noqa: BLE001
            return "?"
    return {
        "nproc": sh("nproc"),
        "lscpu": sh("lscpu | head -n 16"),
        "kernel": platform.release(),
        "os": sh(". /etc/os-release && echo $PRETTY_NAME"),
        "httpd": sh("/usr/sbin/apache2 -v | head -n 1"),
        "node": sh("node --version"),
        "node-ws": sh("dpkg-query -W -f='${Version}' node-ws"),
        "python3-websockets": sh("dpkg-query -W -f='${Version}' python3-websockets"),
        "libwebsockets": sh("pkg-config --modversion libwebsockets"),
        "openssl": sh("openssl version"),
        "mem": sh("free -g | awk '/Mem:/ {print $2\" GiB\"}'"),
        "mod_websocket": sh(f"git -C {REPO} describe --always --dirty"),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def bench(args):
    quick = args.quick
    runs = args.runs or (1 if quick else 3)
    wls = workloads(quick)
    have_ticker = os.path.exists(os.path.join(BUILD, "plugins", "ticker.so"))
    targets = TARGETS
    if quick:
        targets = [t for t in TARGETS if t[0] in ("mws-async-ws", "mws-async-wss",
                                                  "mws-blocking-ws", "raw", "epoll", "node")]
        wls = [w for w in wls if w["key"] in ("echo32x100", "echo64kx10", "connect",
                                              "connect-resume", "idle")]
        for w in wls:
            if w["key"] == "idle":
                w["only"] = ["mws-async-ws"]
    if args.only_servers:
        keep = args.only_servers.split(",")
        targets = [t for t in targets if t[0] in keep or t[2] in keep]
    if args.only_workloads:
        keep = args.only_workloads.split(",")
        wls = [w for w in wls if w["key"] in keep]
    do_pages = ((not args.only_workloads or "pages" in args.only_workloads.split(",")) and
                (not args.only_servers or "demo" in args.only_servers.split(",")))
    needed = sorted({t[2] for t in targets} | ({"demo"} if do_pages else set()))
    servers = {}
    results = {"machine": machine_info(), "runs": runs, "quick": quick, "workloads": {},
               "have_ticker": have_ticker}
    t_start = time.monotonic()
    try:
        for key in needed:
            log(f"run.py: starting {key}")
            servers[key] = STARTERS[key]()
        time.sleep(1)
        for wl in wls:
            if wl["key"] == "broadcast" and not have_ticker:
                log("run.py: skipping broadcast: build/plugins/ticker.so is missing")
                continue
            wres = results["workloads"].setdefault(wl["key"], {"title": wl["title"],
                                                               "unit": wl["unit"],
                                                               "better": wl["better"],
                                                               "targets": {}})
            for run in range(runs):
                for tkey, label, skey, transport in targets:
                    if "only" in wl and tkey not in wl["only"]:
                        continue
                    srv = servers[skey]
                    conns = None
                    if skey in BLOCKING_SERVERS and "blocking_conns" in wl:
                        conns = wl["blocking_conns"]
                    entry = wres["targets"].setdefault(tkey, {"label": label, "runs": [],
                                                              "conns": conns})
                    if not srv.alive():
                        entry["runs"].append({"rc": -2, "value": None,
                                              "error": "server not running"})
                        continue
                    url = target_url(srv, transport, wl)
                    rc, res, text = run_wsload(wl, url, srv, conns)
                    val = metric_of(wl, res)
                    err = None
                    if rc != 0:
                        err = (res or {}).get("first_error") or text.strip()[-300:]
                        if wl["mode"] == "idle" and res:
                            err = (f"{res['survivors']}/{res['conns']} answered the final "
                                   f"ping; {err}")
                    entry["runs"].append({"rc": rc, "value": val, "error": err, "result": res})
                    shown = f"{val:.1f}" if isinstance(val, (int, float)) else "-"
                    log(f"  {wl['key']:<12} run {run + 1}/{runs} {tkey:<17} {shown:>12} "
                        f"{wl['unit']}" + (f"  rc={rc} {err}" if rc else ""))
        if do_pages:
            results["pages"], results["pages_rounds"] = run_pages(servers["demo"], quick, runs)
            results["pages_samples"] = (PAGES_QUICK if quick else PAGES_FULL)["samples"]
    finally:
        for s in servers.values():
            s.stop()
    results["elapsed_s"] = time.monotonic() - t_start
    for wres in results["workloads"].values():
        for entry in wres["targets"].values():
            vals = [r["value"] for r in entry["runs"] if r["value"] is not None and r["rc"] == 0]
            entry["median"] = statistics.median(vals) if vals else None
            entry["ok_runs"] = len(vals)
            okres = [r["result"] for r in entry["runs"] if r.get("result") and r["rc"] == 0]
            if okres:
                entry["extra"] = summarize_extra(okres)
    out = args.out or os.path.join(BIN, "quick.md") if quick else (
        args.out or os.path.join(REPO, "docs", "BENCHMARKS.md"))
    with open(os.path.join(BIN, "results-quick.json" if quick else "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    write_report(results, out, targets)
    log(f"run.py: wrote {out} ({results['elapsed_s']:.0f} s)")
    return 0


def summarize_extra(okres):
    """Medians of secondary figures (latency, threads) over the successful runs."""
    def med(get):
        vals = [v for v in (get(r) for r in okres) if v is not None]
        return statistics.median(vals) if vals else None
    r0 = okres[0]
    ex = {}
    if r0["mode"] == "echo":
        ex["p50"] = med(lambda r: r["lat_us"]["p50"])
        ex["p99"] = med(lambda r: r["lat_us"]["p99"])
        ex["msgs_per_s"] = med(lambda r: r["msgs_per_s"])
        ex["mb_per_s"] = med(lambda r: r["mb_per_s"])
    elif r0["mode"] == "connect":
        ex["p50"] = med(lambda r: r["cycle_us"]["p50"])
        ex["p99"] = med(lambda r: r["cycle_us"]["p99"])
    elif r0["mode"] == "idle":
        ex["threads"] = med(lambda r: r["server"]["threads"])
        ex["procs"] = med(lambda r: r["server"]["procs"])
        ex["growth_kb"] = med(lambda r: r["server"]["rss_growth_kb"])
        ex["conns"] = r0["conns"]
        ex["open_s"] = med(lambda r: r["open_s"])
    elif r0["mode"] == "broadcast":
        ex["p50"] = med(lambda r: r["delay_us"]["p50"])
        ex["p99"] = med(lambda r: r["delay_us"]["p99"])
        ex["per_sub"] = med(lambda r: r["per_subscriber_per_s"])
    return ex


def fmt(v, unit):
    if v is None:
        return "—"
    if unit in ("MB/s", "KiB/conn"):
        return f"{v:,.1f}"
    return f"{v:,.0f}"


def write_report(results, out, targets):
    m = results["machine"]
    wls = results["workloads"]
    L = []
    w = L.append
    quick = results["quick"]
    w("# Benchmarks" + (" (quick run)" if quick else ""))
    w("")
    w("Generated by `make bench` (`bench/run.py`); the hand-written analysis sections are "
      "kept in `bench/report-notes.md` and `bench/profile-notes.md` and copied in. Raw runs: "
      f"`build/bench/results{'-quick' if quick else ''}.json`; "
      f"`make bench-report{' QUICK=1' if quick else ''}` (`bench/run.py report`) rewrites "
      "this report and its charts from it without measuring again.")
    w("")
    L.extend(issue_targets.report_lines(results))
    w("## How it was measured")
    w("")
    w(f"- Every server runs on loopback, pinned to CPU {SERVER_CPU} (`taskset`, all its "
      f"processes and threads); the load generator `build/bench/wsload` (one epoll thread) "
      f"is pinned to CPU {CLIENT_CPU}. All servers are started once and the runs are "
      "interleaved (workload by workload, run 1 for every server, then run 2, ...), so a "
      "noisy moment on this shared machine hits every server alike.")
    w(f"- {results['runs']} runs per cell; the table shows the median. Echo runs measure "
      f"{'2' if quick else '3'} s after a warm-up; every echoed byte is compared with what "
      "was sent, and a run with any error does not count.")
    w("- `msg/s` counts echoed messages (one round trip each, one message in flight per "
      "connection); `MB/s` is echoed payload per second in one direction (10^6 bytes). "
      "The connection rate counts complete cycles: TCP connect, upgrade, one 32 B echo, "
      "closing handshake, TCP close. Over wss, `connect` makes a full TLS handshake every "
      "time; `connect-resume` resumes TLS sessions (`wsload --resume`: each client thread "
      "offers the newest session ticket it received; the server has a session cache and "
      "session tickets on, as `make demo`). The certificate is ECDSA P-256.")
    w("- Echo runs open every connection before the first message (`wsload --open-first`)."
      " Under a closed-loop load that keeps every worker busy, the event MPM's listener "
      "stops accepting (it accepts only while workers are idle), so connections still "
      "opening would wait in the listen queue while the first ones echo.")
    w("- Idle memory: server RSS (all processes of the server; the parent's does not grow "
      "with connections, so this is the children's growth) after the connections are "
      "open and have been pinged, minus RSS before, divided by the connections. Threads: "
      "the `Threads:` of every process in the server's process tree (parent and children, "
      "the entries of `/proc/PID/task`), added up. The "
      "blocking driver and mod_lua hold a thread per connection, so they are measured with "
      f"{BLOCKING_MAX_CONNS:,} connections on 8 x 150 threads.")
    w("- The raw TCP echo (`bench/rawecho.c`) gets the very same masked frames and writes "
      "them back: the limit for the same byte traffic with no WebSocket work at all.")
    w("- The minimal epoll WebSocket echo (`bench/epollws.c`: one thread, one epoll set, "
      "handshake, frame parsing, unmasking, no extensions or checks) is the yardstick for "
      "what a plain event loop costs per message.")
    w("- mod_lua: `r:wsread` does not return the opcode and `r:wswrite` writes text frames, "
      "so the binary workloads use a second handler (`/echo-bin`) that frames binary "
      "replies itself (`r:wswrite(frame, true)`).")
    w("- Servers: mod_websocket with the `echo` plugin on the event MPM "
      "(async: one child of 16 threads with one event loop, `WebSocketLoopThreads 1`, "
      "AsyncRequestWorkerFactor 1000, httpd's default MaxMemFree;"
      " blocking: `WebSocketDriver blocking`, 8 x 150 threads), LogLevel warn, access log on. "
      "Node `ws` (`bench/peers/node_echo.js`), Python `websockets` on asyncio "
      "(`bench/peers/py_echo.py`), libwebsockets (`bench/lwsecho.c`, one service thread), "
      "mod_lua (`bench/peers/lua_echo.lua`, same httpd, same MPM settings as blocking).")
    w("")
    w("## Results")
    w("")
    chart_dir = os.path.join(os.path.dirname(os.path.abspath(out)), "bench")
    for title, name in charts.draw(results, targets, chart_dir):
        w(f"![{title}](bench/{name})")
        w("")
    cols = [t for t in targets]
    w("| workload | unit | " + " | ".join(t[1] for t in cols) + " |")
    w("|---|---|" + "---:|" * len(cols))
    for key, wres in wls.items():
        row = [wres["title"], wres["unit"] + (" (lower is better)"
                                              if wres["better"] == "lower" else "")]
        for t in cols:
            e = wres["targets"].get(t[0])
            if e is None:
                row.append("n/a")
                continue
            cell = fmt(e["median"], wres["unit"])
            if e["median"] is None and e["runs"]:
                cell = "failed"
            if e.get("conns"):
                cell += f" ({e['conns']:,} conns)"
            row.append(cell)
        w("| " + " | ".join(row) + " |")
    if not results.get("have_ticker"):
        w("")
        w("Broadcast fan-out: **skipped**: `build/plugins/ticker.so` is missing (the "
          "/ticker endpoint is not built).")
    w("")
    # latency table
    w("### Latency (median of the runs' percentiles, microseconds)")
    w("")
    w("| workload | " + " | ".join(t[1] for t in cols) + " |")
    w("|---|" + "---:|" * len(cols))
    for key, wres in wls.items():
        if key in ("idle",):
            continue
        row = [wres["title"] + (" (cycle)" if key == "connect" else
                                " (delivery delay)" if key == "broadcast" else "")]
        for t in cols:
            e = wres["targets"].get(t[0])
            ex = (e or {}).get("extra") or {}
            if "p50" in ex and ex["p50"] is not None:
                row.append(f"{ex['p50']:,.0f} / {ex['p99']:,.0f}")
            else:
                row.append("—")
        w("| " + " | ".join(row) + " |")
    w("")
    w("Cells are p50 / p99.")
    w("")
    if "idle" in wls:
        w("### Idle connections: server processes and threads")
        w("")
        w("| server | connections | open time (s) | RSS growth (MiB) | KiB per connection | "
          "processes | threads |")
        w("|---|---:|---:|---:|---:|---:|---:|")
        for t in cols:
            e = wls["idle"]["targets"].get(t[0])
            if not e:
                continue
            ex = e.get("extra") or {}
            if not ex:
                errs = [r.get("error") for r in e["runs"] if r.get("error")]
                w(f"| {t[1]} | failed: {(errs[0] if errs else '?')[:120]} | | | | | |")
                continue
            w(f"| {t[1]} | {ex['conns']:,} | {ex['open_s']:.1f} | "
              f"{ex['growth_kb'] / 1024:,.1f} | {fmt(e['median'], 'KiB/conn')} | "
              f"{ex['procs']:.0f} | {ex['threads']:.0f} |")
        w("")
    if results.get("pages"):
        L.extend(pages.report_lines(results["pages"], results.get("pages_samples", 0)))
    # ratios
    w("## mod_websocket / peer")
    w("")
    w("mod_websocket here is the async driver over ws (the first column); a ratio above 1 "
      "means mod_websocket is faster (for memory: uses more).")
    w("")
    peer_cols = [t for t in cols if t[0] in PEERS]
    w("| workload | " + " | ".join(t[1] for t in peer_cols) + " |")
    w("|---|" + "---:|" * len(peer_cols))
    for key, wres in wls.items():
        me = (wres["targets"].get("mws-async-ws") or {}).get("median")
        row = [wres["title"]]
        for t in peer_cols:
            e = wres["targets"].get(t[0])
            pv = (e or {}).get("median")
            row.append(f"{me / pv:.2f}x" if me and pv else "—")
        w("| " + " | ".join(row) + " |")
    w("")
    w("Other mod_websocket variants against the async ws figures:")
    w("")
    mv = [t for t in cols if t[0].startswith("mws-") and t[0] != "mws-async-ws"]
    if mv:
        w("| workload | " + " | ".join(t[1] + " / async ws" for t in mv) + " |")
        w("|---|" + "---:|" * len(mv))
        for key, wres in wls.items():
            me = (wres["targets"].get("mws-async-ws") or {}).get("median")
            row = [wres["title"]]
            for t in mv:
                pv = ((wres["targets"].get(t[0])) or {}).get("median")
                row.append(f"{pv / me:.2f}x" if me and pv else "—")
            w("| " + " | ".join(row) + " |")
        w("")
    # targets
    w("## Earlier targets (issue 4)")
    w("")
    w("| target | measured | met? |")
    w("|---|---:|:---:|")

    def ratio(wkey, peer):
        wres = wls.get(wkey)
        if not wres:
            return None
        me = (wres["targets"].get("mws-async-ws") or {}).get("median")
        pv = (wres["targets"].get(peer) or {}).get("median")
        return me / pv if me and pv else None

    def row(name, val, ok, fmtv):
        w(f"| {name} | {fmtv if val is not None else 'not measured'} | "
          f"{'—' if val is None else ('yes' if ok else '**no**')} |")
    for wkey, peer, need, label in [
            ("echo32x100", "raw", 0.8, "32 B echo, 100 conns: >= 0.8x raw TCP"),
            ("echo32x100", "node", 1.5, "32 B echo, 100 conns: >= 1.5x Node ws"),
            ("echo32x100", "mod_lua", 2.0, "32 B echo, 100 conns: >= 2x mod_lua"),
            ("echo64kx10", "node", 3.0, "64 KiB echo: >= 3x Node ws (MB/s)"),
            ("echo64kx10", "raw", 0.7, "64 KiB echo: >= 0.7x raw TCP (MB/s)"),
            ("connect", "node", 2.0, "connection rate: >= 2x Node ws"),
            ("echo32x100", "mws-blocking-ws", 0.9,
             "async driver within 10% of blocking: 32 B echo, 100 conns"),
            ("echo32x1000", "mws-blocking-ws", 0.9,
             "async driver within 10% of blocking: 32 B echo, 1,000 conns"),
            ("echo64kx10", "mws-blocking-ws", 0.9,
             "async driver within 10% of blocking: 64 KiB echo"),
            ("echo1m", "mws-blocking-ws", 0.9,
             "async driver within 10% of blocking: 1 MiB echo")]:
        r = ratio(wkey, peer)
        row(label, r, r is not None and r >= need, f"{r:.2f}x" if r else "")
    idle = (wls.get("idle", {}).get("targets", {}).get("mws-async-ws") or {}).get("median")
    row("idle memory per connection <= 16 KB (async, ws)", idle,
        idle is not None and idle * 1024 <= 16000, f"{idle:.1f} KiB ({idle * 1.024:.1f} KB)"
        if idle else "")
    w("")
    for name in ("report-notes.md", "profile-notes.md"):
        p = os.path.join(HERE, name)
        if os.path.exists(p) and not quick:
            with open(p) as f:
                w(f.read().rstrip("\n"))
            w("")
    w("## Machine")
    w("")
    w("```")
    for k in ("date", "nproc", "mem", "kernel", "os", "httpd", "openssl", "node", "node-ws",
              "python3-websockets", "libwebsockets", "mod_websocket"):
        w(f"{k}: {m.get(k)}")
    w("")
    w(m.get("lscpu", ""))
    w("```")
    w("")
    w(f"Total run time: {results['elapsed_s'] / 60:.1f} min.")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    splice_section(out, L, replace=False)


# ---- hold10k ------------------------------------------------------------------------------

def hold10k(args):
    pidfile = os.path.join(BUILD, "demo", "httpd.pid")
    ok_all = True
    summary = {}
    for transport, port in (("ws", args.port), ("wss", args.port + 1)):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass
        except OSError:
            log(f"hold10k: nothing listens on 127.0.0.1:{port}: start `make demo "
                f"PORT={args.port}` first")
            return 2
        if not os.path.exists(pidfile):
            log(f"hold10k: {pidfile} missing: is the server `make demo`?")
            return 2
        url = f"{transport}://127.0.0.1:{port}/echo"
        out = os.path.join(BIN, f"hold10k-{transport}.json")
        argv = [WSLOAD, "idle", url, "-c", str(args.conns), "--hold", str(args.hold),
                "--ping", "10", "--probe", "10", "--final-timeout", "30", "-B", "256",
                "--pidfile", pidfile, "--json", out]
        log("hold10k: " + " ".join(argv))
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, text=True)
        with open(out) as f:
            res = json.load(f)
        srv = res["server"]
        probe_ms = res["probe"]["total_ms_max"]
        checks = [
            (f"{res['survivors']}/{args.conns} answered the final ping",
             res["survivors"] == args.conns),
            (f"probe clients: {res['probe']['ok']} ok, {res['probe']['failed']} failed, "
             f"connect+handshake+echo max {probe_ms:.1f} ms (< 100 ms)",
             res["probe"]["ok"] > 0 and res["probe"]["failed"] == 0 and probe_ms < 100),
            (f"server RSS growth {srv['rss_growth_kb'] / 1024:.1f} MiB: "
             f"{srv['per_conn_kb']:.1f} KiB per connection; {srv['procs']} processes "
             f"({srv['procs'] - 1} children), {srv['threads']} threads", True),
        ]
        log(f"hold10k {transport}:")
        for text, ok in checks:
            log(f"  [{'ok' if ok else 'FAIL'}] {text}")
            ok_all = ok_all and ok
        # issue 11's targets: reported, not part of PASS/FAIL
        kb = srv["per_conn_kb"] * 1.024
        for text, ok in ((f"{kb:.1f} KB per connection (target <= "
                          f"{issue_targets.KB_PER_CONN:g} KB"
                          f"{', set for ws' if transport == 'wss' else ''})",
                          kb <= issue_targets.KB_PER_CONN),
                         (f"{srv['threads']} threads in all {srv['procs']} httpd processes "
                          f"(target <= {issue_targets.THREADS})",
                          srv["threads"] <= issue_targets.THREADS)):
            log(f"  [target {'met' if ok else 'MISSED'}] {text}")
        summary[transport] = res
        if p.returncode != 0:
            ok_all = False
    with open(os.path.join(BIN, "hold10k.json"), "w") as f:
        json.dump(summary, f, indent=1)
    log("hold10k: " + ("PASS" if ok_all else "FAIL"))
    return 0 if ok_all else 1


# ---- profile --------------------------------------------------------------------------

def perf_works(event):
    try:
        p = subprocess.run(["perf", "stat", "-e", event, "true"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, timeout=30)
        return p.returncode == 0 and "not supported" not in p.stderr
    except (OSError, subprocess.TimeoutExpired):
        return False


PROFILE_LOADS = (("32 B text echo, 100 connections", ["-c", "100", "-s", "32"]),
                 ("64 KiB binary echo, 10 connections", ["-c", "10", "-s", "64k", "-b"]))


def _load(url, secs, extra):
    return subprocess.Popen(["taskset", "-c", CLIENT_CPU, WSLOAD, "echo", url, "-d", str(secs),
                             "-w", "1", "-q"] + extra, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _perf_profile(lines):
    """Sampling profile of the httpd children (wall-clock time incl. the kernel)."""
    srv = start_mws(False)
    try:
        time.sleep(1)
        kids = [p for p in tree_pids(srv.pid) if p != srv.pid]
        event = "cycles" if perf_works("cycles") else "cpu-clock"
        for name, extra in PROFILE_LOADS:
            load = _load(srv.ws + "/echo", 10, extra)
            time.sleep(2)
            data = os.path.join(BIN, "perf.data")
            subprocess.run(["perf", "record", "-q", "-e", event, "-g", "-F", "2000", "-o", data,
                            "-p", ",".join(map(str, kids)), "--", "sleep", "6"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio",
                                  "--sort", "dso,symbol", "-g", "none", "--percent-limit",
                                  "0.8"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 text=True).stdout
            dso = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio",
                                  "--sort", "dso", "-g", "none"], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True).stdout
            res = load.communicate()[0]
            keep = lambda t: "\n".join(x for x in t.splitlines() if x.strip() and
                                        not x.startswith("#"))
            lines.append(f"==== perf record -e {event} -g, httpd children, {name}\n{res}\n"
                         f"---- by object\n{keep(dso)}\n---- by symbol (self)\n{keep(rep)}\n")
    finally:
        srv.stop()


def _callgrind_profile(lines):
    """Instruction counts of one httpd process (-X) under callgrind."""
    d = os.path.join(BIN, "srv-callgrind")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    os.chmod(d, 0o777)
    port = free_port()
    cfg = genconf.make_config(d, port, None, "event", loglevel="warn",
                              mpm_settings=ASYNC_MPM, extra_global=ASYNC_GLOBAL,
                              locations=[("/echo", "echo")])
    for name, extra in PROFILE_LOADS:
        out = os.path.join(d, "callgrind.out")
        if os.path.exists(out):
            os.unlink(out)
        # valgrind opens the file as root, httpd's child writes it as www-data at exit:
        # create it writable first (open(O_CREAT) keeps an existing file's mode).
        with open(out, "w"):
            pass
        os.chmod(out, 0o666)
        p = subprocess.Popen(["taskset", "-c", SERVER_CPU, "valgrind", "--tool=callgrind",
                              f"--callgrind-out-file={out}", "/usr/sbin/apache2", "-X", "-f",
                              cfg.conf], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            if not wait_port(port, 90):
                lines.append("callgrind: httpd did not start")
                return
            time.sleep(2)
            load = _load(f"ws://127.0.0.1:{port}/echo", 10, extra)
            res = load.communicate()[0]
        finally:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        ann = subprocess.run(["callgrind_annotate", "--inclusive=no", out],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
        inc = subprocess.run(["callgrind_annotate", "--inclusive=yes", out],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
        top = lambda t, n: "\n".join(t.splitlines()[:n])
        lines.append(f"==== valgrind --tool=callgrind, apache2 -X, {name} (load under "
                     f"callgrind, so throughput is not meaningful)\n{res}\n---- self\n"
                     f"{top(ann, 45)}\n---- inclusive\n{top(inc, 60)}\n")


def profile(args):
    out = args.out or os.path.join(BIN, "profile.txt")
    lines = []
    if perf_works("instructions"):
        lines.append("perf: hardware counters available")
    else:
        lines.append("perf: `perf stat -e instructions true` reports <not supported> "
                     "(no hardware counters in this VM): callgrind for instruction counts, "
                     "and perf's cpu-clock sampling for where the wall-clock time goes")
        _callgrind_profile(lines)
    _perf_profile(lines)
    with open(out, "w") as f:
        f.write("\n".join(lines))
    log(f"run.py: wrote {out}")
    return 0


def report(args):
    """Rewrite the report and its charts from the saved JSON, without measuring (e.g.
    after editing the notes): build/bench/results.json -> docs/BENCHMARKS.md, or with
    --quick build/bench/results-quick.json -> build/bench/quick.md."""
    src = args.json or os.path.join(BIN, "results-quick.json" if args.quick else "results.json")
    with open(src) as f:
        results = json.load(f)
    present = set()
    for wres in results["workloads"].values():
        present.update(wres["targets"])
    targets = [t for t in TARGETS if t[0] in present]
    out = args.out or (os.path.join(BIN, "quick.md") if results.get("quick") else
                       os.path.join(REPO, "docs", "BENCHMARKS.md"))
    write_report(results, out, targets)
    log(f"run.py: wrote {out}")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench")
    b.add_argument("--quick", action="store_true")
    b.add_argument("--runs", type=int, default=0)
    b.add_argument("--out", default=None)
    b.add_argument("--only-servers", default="")
    b.add_argument("--only-workloads", default="")
    h = sub.add_parser("hold10k")
    h.add_argument("--port", type=int, default=8080)
    h.add_argument("--conns", type=int, default=10000)
    h.add_argument("--hold", type=float, default=60)
    p = sub.add_parser("profile")
    p.add_argument("--out", default=None)
    r = sub.add_parser("report")
    r.add_argument("--out", default=None)
    r.add_argument("--json", default=None, help="results file (default build/bench/"
                   "results.json, or results-quick.json with --quick)")
    r.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    os.makedirs(BIN, exist_ok=True)
    if not os.path.exists(WSLOAD):
        sys.exit("run.py: build/bench/wsload missing: run `make bench-tools`")
    return {"bench": bench, "hold10k": hold10k, "profile": profile,
            "report": report}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
