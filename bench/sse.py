#!/usr/bin/python3
"""Channels over plain HTTP against nginx + nchan (issue 13's benchmark).

  bench/sse.py bench [--quick] [--runs N]    measure, then write the "Channels" section of
                                              docs/BENCHMARKS.md and docs/bench/channels.svg
  bench/sse.py report [--quick]               rewrite them from build/bench/sse.json

Workloads (build/bench/sseload, pinned to the client CPU; every server pinned to the
server CPU, all its processes and threads):
  sse10k   10,000 EventSource subscribers on one channel, one HTTP POST publish every
           100 ms: deliveries/s against expected, delivery delay p50/p99/max, server
           threads and memory per subscriber;
  publish  8 keep-alive publishers POSTing back to back to a channel with 10 EventSource
           subscribers: publishes/s, POST round trip, every message delivered.
Servers: mod_websocket (event MPM, one child, one event loop: as `make bench`'s async
server) with `WebSocketChannelPublisher`/`WebSocketChannelSubscriber` locations, and
nginx with Debian's nchan module (one worker process), each keeping 100 messages per
channel.  Runs are interleaved server by server.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run  # noqa: E402  (servers, pinning, machine info: bench/run.py)
import sections  # noqa: E402

SSELOAD = os.path.join(run.BIN, "sseload")
RESULTS = os.path.join(run.BIN, "sse.json")
RESULTS_QUICK = os.path.join(run.BIN, "sse-quick.json")
TARGET_P99_MS = 100.0
HISTORY = 100
SERVERS = [("mws", "mod_websocket"), ("nchan", "nginx + nchan")]


def workloads(quick):
    return [
        {"key": "sse10k", "title": f"{2000 if quick else 10000:,} EventSource subscribers, "
         "one POST publish every 100 ms",
         "args": ["-c", "2000" if quick else "10000", "-i", "100", "-d", "4" if quick else "10",
                  "-w", "2", "--open-timeout", "180"]},
        {"key": "publish", "title": "publishes over HTTP POST (8 keep-alive publishers back "
         "to back, 10 EventSource subscribers)",
         "args": ["-c", "10", "-P", "8", "-i", "0", "-d", "3" if quick else "5", "-w", "1",
                  "-g", "30"]},
    ]


# ---- servers ----------------------------------------------------------------------------

def start_mws():
    locs = [{"path": "/pub", "extra": "WebSocketChannelPublisher on\nRequire ip 127.0.0.1\n"},
            {"path": "/sub", "extra": "WebSocketChannelSubscriber on\n"}]
    glob = (run.ASYNC_GLOBAL + "MaxKeepAliveRequests 0\n"
            f"WebSocketChannelHistory {HISTORY}\n")
    srv = run._httpd("mws-sse", False, run.ASYNC_MPM, glob, locs)
    return run.Server("mod_websocket", srv.proc.pid, srv.stop,
                      raw=f"http://127.0.0.1:{srv.port}")


NGINX_CONF = """load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 20000;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 16000; use epoll; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    nchan_shared_memory_size 128m;
    server {{
        listen 127.0.0.1:{port};
        location ~ ^/pub/(\\w+)$ {{
            nchan_publisher;
            nchan_channel_id $1;
            nchan_message_buffer_length {history};
            allow 127.0.0.1;
            deny all;
        }}
        location ~ ^/sub/(\\w+)$ {{
            nchan_subscriber;
            nchan_channel_id $1;
        }}
    }}
}}
"""


def start_nchan():
    d = os.path.join(run.BIN, "srv-nchan")
    os.makedirs(d, exist_ok=True)
    port = run.free_port()
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(d=d, port=port, history=HISTORY))
    pid, stop = run.start_process("nchan", ["/usr/sbin/nginx", "-p", d, "-c", conf,
                                            "-e", os.path.join(d, "error.log")], port)
    run.pin(pid, run.SERVER_CPU)
    return run.Server("nginx + nchan", pid, stop, raw=f"http://127.0.0.1:{port}")


STARTERS = {"mws": start_mws, "nchan": start_nchan}


# ---- measuring ----------------------------------------------------------------------------

def run_sseload(wl, srv, channel):
    out = os.path.join(run.BIN, f"sseload-{wl['key']}.json")
    if os.path.exists(out):
        os.unlink(out)
    argv = (["taskset", "-c", run.CLIENT_CPU, SSELOAD, f"{srv.raw}/sub/{channel}",
             f"{srv.raw}/pub/{channel}"] + wl["args"] + ["--pid", str(srv.pid), "--json", out,
                                                         "-q"])
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=600)
        rc, text = p.returncode, p.stdout
    except subprocess.TimeoutExpired:
        rc, text = -1, "sseload timed out"
    try:
        with open(out) as f:
            res = json.load(f)
    except (OSError, ValueError):
        res = None
    return rc, res, text


def bench(args):
    runs = args.runs or (1 if args.quick else 3)
    results = {"machine": run.machine_info(), "runs": runs, "quick": args.quick,
               "workloads": {}}
    results["machine"]["nginx"] = subprocess.run(
        "nginx -v 2>&1; dpkg-query -W -f='nchan ${Version}' libnginx-mod-nchan", shell=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout.strip()
    servers = {}
    t0 = time.monotonic()
    try:
        for key, _ in SERVERS:
            run.log(f"sse.py: starting {key}")
            servers[key] = STARTERS[key]()
        time.sleep(1)
        for wl in workloads(args.quick):
            wres = results["workloads"].setdefault(
                wl["key"], {"title": wl["title"], "servers": {k: [] for k, _ in SERVERS}})
            for i in range(runs):
                for key, _ in SERVERS:
                    srv = servers[key]
                    if not srv.alive():
                        wres["servers"][key].append({"rc": -2, "error": "server not running"})
                        continue
                    # a fresh channel per run: no history or subscribers left from the last
                    rc, res, text = run_sseload(wl, srv, f"{wl['key']}{i}")
                    err = None if rc == 0 else ((res or {}).get("first_error") or
                                                text.strip()[-300:])
                    wres["servers"][key].append({"rc": rc, "result": res, "error": err})
                    run.log(f"  {wl['key']:<8} run {i + 1}/{runs} {key:<6} " +
                            (f"delay p99 {res['delay_ms']['p99']:.1f} ms, "
                             f"{res['deliveries_per_s']:,.0f} deliveries/s, "
                             f"{res['publishes_per_s']:,.0f} publishes/s" if res else "-") +
                            (f"  rc={rc} {err}" if rc else ""))
    finally:
        for s in servers.values():
            s.stop()
    results["elapsed_s"] = time.monotonic() - t0
    with open(RESULTS_QUICK if args.quick else RESULTS, "w") as f:
        json.dump(results, f, indent=1)
    write(results)
    return 0


# ---- the report -----------------------------------------------------------------------------

def measured(r):
    """A run whose figures stand: every subscriber opened and stayed, every POST was
    answered 2xx.  Messages that did not arrive are shown (delivered / expected), not
    hidden: such a run still counts, with its loss."""
    res = r.get("result")
    return bool(res) and res["subscribed"] == res["subscribers"] and not res["closed"] \
        and not res["subscribe_errors"] and not res["publish_failed"]


def med(runs, get):
    vals = [get(r["result"]) for r in runs if measured(r)]
    return statistics.median(vals) if vals else None


def cells(runs):
    """The medians of the successful runs of one server on one workload."""
    ok = [r for r in runs if measured(r)]
    if not ok:
        return None
    g = {
        "deliveries_per_s": lambda r: r["deliveries_per_s"],
        "publishes_per_s": lambda r: r["publishes_per_s"],
        "p50": lambda r: r["delay_ms"]["p50"], "p99": lambda r: r["delay_ms"]["p99"],
        "max": lambda r: r["delay_ms"]["max"],
        "rtt50": lambda r: r["publish_rtt_ms"]["p50"],
        "rtt99": lambda r: r["publish_rtt_ms"]["p99"],
        "per_sub_kb": lambda r: r["server"]["per_sub_kb"],
        "threads": lambda r: r["server"]["threads"], "procs": lambda r: r["server"]["procs"],
        "subs": lambda r: r["subscribed"],
    }
    c = {k: med(runs, f) for k, f in g.items()}
    # memory: the first run's, on a fresh process (nginx keeps what its first 10,000
    # subscribers took, so later runs open theirs at no cost), at the end of the run
    # (right after opening, mod_websocket's newest sessions still keep the upgrade
    # request's memory for their first second); what the server still holds once they
    # have left is the next run's starting point
    first = ok[0]["result"]
    c["per_sub_kb"] = ((first["server"]["rss_end_kb"] - first["server"]["rss_base_kb"])
                       / max(1, first["subscribed"]))
    c["rss_start_kb"] = first["server"]["rss_base_kb"]
    c["rss_left_kb"] = ok[1]["result"]["server"]["rss_base_kb"] if len(ok) > 1 else None
    c["ok_runs"] = len(ok)
    c["delivered"] = sum(r["result"]["delivered"] for r in ok)
    c["expected"] = sum(r["result"]["expected"] for r in ok)
    return c


def failures(runs):
    return [r.get("error") or f"rc {r.get('rc')}" for r in runs if not measured(r)]


def failed_row(label, runs, empty_cells):
    return f"| {label} | failed: {'; '.join(failures(runs))[:200]} |" + " |" * empty_cells


def fmt(v, nd=1):
    return "—" if v is None else f"{v:,.{nd}f}"


def section(results):
    wls = results["workloads"]
    L = [sections.SECTION_BEGIN, "## Channels over plain HTTP: EventSource subscribers and POST "
         "publishes (issue 13)", "",
         "Generated by `bench/sse.py` (part of `make bench`; `make bench-sse` alone); raw runs "
         "in `build/bench/sse.json`. mod_websocket: event MPM, one child, one event loop "
         "(`WebSocketLoopThreads 1`), `WebSocketChannelPublisher` and "
         "`WebSocketChannelSubscriber` locations; nginx + nchan (Debian's "
         f"`libnginx-mod-nchan`): one worker process; both keep {HISTORY} messages per "
         "channel and write an access log line per request. Each server pinned to one "
         "CPU, the load generator `build/bench/sseload` (one epoll thread for the "
         "subscribers, one thread per publisher) to the other. "
         f"{results['runs']} interleaved runs, medians. A run counts if every subscriber "
         "opened and stayed and every POST was answered 2xx; a message that did not reach "
         "a subscriber shows as delivered < expected (with one publisher the subscribers "
         "also check order and gaps).", ""]
    sse = wls.get("sse10k")
    if sse:
        L += [f"### {sse['title']}", "",
              "Delay: from the publisher's clock just before the POST to the subscriber's "
              "after it parsed the event (same machine, same clock).", "",
              "Memory per subscriber: the server's RSS (all its processes) at the end of "
              "the run, the subscribers still open, less before they opened, over their "
              "number, in each server's first run (a fresh process). Memory once they "
              "left: the RSS at the start of the second run, against the fresh "
              "process's.", "",
              "| server | subscribers | deliveries/s (delivered / expected) | delay p50 | "
              "p99 | max | POST round trip p50 / p99 | server threads | memory per "
              "subscriber | memory once they left |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for key, label in SERVERS:
            c = cells(sse["servers"].get(key, []))
            if not c:
                L.append(failed_row(label, sse["servers"].get(key, []), 8))
                continue
            L.append(f"| {label} | {c['subs']:,.0f} | {fmt(c['deliveries_per_s'], 0)} "
                     f"({c['delivered']:,} / {c['expected']:,}) | {fmt(c['p50'])} ms | "
                     f"{fmt(c['p99'])} ms | {fmt(c['max'])} ms | {fmt(c['rtt50'], 2)} / "
                     f"{fmt(c['rtt99'], 2)} ms | {c['threads']:.0f} in {c['procs']:.0f} "
                     f"processes | {fmt(c['per_sub_kb'])} KiB | "
                     f"{fmt(c['rss_left_kb'] and c['rss_left_kb'] / 1024)} MB (fresh: "
                     f"{c['rss_start_kb'] / 1024:,.1f} MB) |")
        L.append("")
    pub = wls.get("publish")
    if pub:
        L += [f"### {pub['title']}", "",
              "| server | publishes/s | POST round trip p50 / p99 | deliveries/s (delivered / "
              "expected) | delay p50 / p99 |", "|---|---:|---:|---:|---:|"]
        for key, label in SERVERS:
            c = cells(pub["servers"].get(key, []))
            if not c:
                L.append(failed_row(label, pub["servers"].get(key, []), 3))
                continue
            L.append(f"| {label} | {fmt(c['publishes_per_s'], 0)} | {fmt(c['rtt50'], 2)} / "
                     f"{fmt(c['rtt99'], 2)} ms | {fmt(c['deliveries_per_s'], 0)} "
                     f"({c['delivered']:,} / {c['expected']:,}) | "
                     f"{fmt(c['p50'])} / {fmt(c['p99'])} ms |")
        L.append("")
    L += targets(wls), ""
    L += [f"![channels](bench/{CHART})", ""]
    notes = os.path.join(HERE, "sse-notes.md")
    if os.path.exists(notes):
        with open(notes) as f:
            L += f.read().rstrip("\n").split("\n") + [""]
    nginx = results["machine"].get("nginx", "")
    L += [f"nginx and nchan: {nginx.replace(chr(10), '; ')}. Run time "
          f"{results['elapsed_s'] / 60:.1f} min, {results['machine'].get('date')}.", "",
          sections.SECTION_END]
    return L


def targets(wls):
    """Issue 13's one stated target, and the ratios to nchan."""
    sse = wls.get("sse10k") or {"servers": {}}
    me, peer = cells(sse["servers"].get("mws", [])), cells(sse["servers"].get("nchan", []))
    pub = wls.get("publish") or {"servers": {}}
    pme, ppeer = cells(pub["servers"].get("mws", [])), cells(pub["servers"].get("nchan", []))
    rows = ["| target | measured | pass? |", "|---|---|:---:|"]
    if me:
        theirs = f" (nchan {peer['p99']:,.1f} ms)" if peer else ""
        rows.append(f"| {me['subs']:,.0f} EventSource subscribers, a publish every 100 ms: "
                    f"delay p99 < {TARGET_P99_MS:.0f} ms | p99 {me['p99']:,.1f} ms{theirs} | "
                    f"{'pass' if me['p99'] < TARGET_P99_MS else '**miss**'} |")
    if me and peer:
        rows.append(f"| (no target) memory per subscriber against nchan | "
                    f"{me['per_sub_kb']:,.1f} KiB against {peer['per_sub_kb']:,.1f} KiB | — |")
    if pme and ppeer:
        rows.append(f"| (no target) publishes/s over POST against nchan | "
                    f"{pme['publishes_per_s'] / ppeer['publishes_per_s']:.2f}x "
                    f"({pme['publishes_per_s']:,.0f}/s against {ppeer['publishes_per_s']:,.0f}/s)"
                    " | — |")
    return "\n".join(["Targets:", ""] + rows)


CHART = "channels.svg"


def chart(results, outdir):
    import charts  # matplotlib; bench/charts.py sets the backend and the style
    plt = charts.plt
    wls = results["workloads"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    colors = [charts.PALETTE[0], charts.PALETTE[5]]
    sse = wls.get("sse10k") or {"servers": {}}
    labels, p50, p99 = [], [], []
    for key, label in SERVERS:
        c = cells(sse["servers"].get(key, [])) or {}
        labels.append(label)
        p50.append(c.get("p50"))
        p99.append(c.get("p99"))
    y = list(range(len(labels)))[::-1]
    axes[0].barh([v + 0.2 for v in y], [v or 0 for v in p50], 0.4, color=colors, alpha=0.55,
                 label="p50")
    axes[0].barh([v - 0.2 for v in y], [v or 0 for v in p99], 0.4, color=colors, label="p99")
    for yi, a, b in zip(y, p50, p99):
        axes[0].text((a or 0), yi + 0.2, f" p50 {fmt(a)}", va="center", fontsize=8)
        axes[0].text((b or 0), yi - 0.2, f" p99 {fmt(b)}", va="center", fontsize=8)
    axes[0].axvline(TARGET_P99_MS, color="#d62728", linestyle="--", linewidth=1)
    axes[0].set_yticks(y, labels)
    axes[0].set_xlim(0, max([v for v in p99 + [TARGET_P99_MS] if v]) * 1.3)
    axes[0].set_xlabel("delivery delay, ms (dashed: the 100 ms target)")
    charts._title(axes[0], sse.get("title", "EventSource fan-out"))
    pub = wls.get("publish") or {"servers": {}}
    vals = [(cells(pub["servers"].get(k, [])) or {}).get("publishes_per_s") for k, _ in SERVERS]
    charts._bars(axes[1], labels, vals, colors, "publishes/s")
    charts._title(axes[1], "HTTP POST publishes/s (8 publishers)")
    return charts._save(fig, outdir, CHART)


def write(results):
    out = os.path.join(run.BIN, "sse-quick.md") if results["quick"] else \
        os.path.join(run.REPO, "docs", "BENCHMARKS.md")
    outdir = os.path.join(run.BIN, "quick-charts") if results["quick"] else \
        os.path.join(run.REPO, "docs", "bench")
    os.makedirs(outdir, exist_ok=True)
    chart(results, outdir)
    sections.splice_section(out, section(results))
    run.log(f"sse.py: wrote {out}")


def report(args):
    with open(RESULTS_QUICK if args.quick else RESULTS) as f:
        write(json.load(f))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench")
    b.add_argument("--quick", action="store_true")
    b.add_argument("--runs", type=int, default=0)
    r = sub.add_parser("report")
    r.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    os.makedirs(run.BIN, exist_ok=True)
    if not os.path.exists(SSELOAD):
        sys.exit("sse.py: build/bench/sseload missing: run `make bench-tools`")
    return {"bench": bench, "report": report}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
