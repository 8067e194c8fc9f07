"""Issue 11's targets ("Must show"), each stated as the measured ratio next to its target,
with pass or miss, from one `make bench` run (results.json)."""

import pages

ME = "mws-async-ws"
CONNECT_WSS_BEFORE = 777.0        # wss connections/s before issue 11 (docs/BENCHMARKS.md)
KB_PER_CONN = 12.0                # 10,000 idle connections: KB (1,000 bytes) each
THREADS = 50                      # ... all httpd processes together


def _entry(results, wkey, tkey):
    return (results["workloads"].get(wkey) or {}).get("targets", {}).get(tkey) or {}


def _median(results, wkey, tkey):
    return _entry(results, wkey, tkey).get("median")


def _p99(results, wkey, tkey):
    return (_entry(results, wkey, tkey).get("extra") or {}).get("p99")


def _ratio(a, b):
    return a / b if a and b else None


def rows(results):
    """[(target, measured text, True/False/None/"info")]; None: not measured in this
    run; "info": a figure without a target."""
    out = []

    def add(name, val, ok, text):
        out.append((name, text if val is not None else "not measured",
                    None if val is None else bool(ok)))

    def ratio_row(label, wkey, a, b, need, short, peer_name):
        r = _ratio(_median(results, wkey, a), _median(results, wkey, b))
        add(label, r, r is not None and r >= need,
            f"{short}: {r:.2f}x {peer_name} (target {need:g}x)" if r else "")

    pg = results.get("pages")
    for key, name in (("page", "page loads of `/`"), ("ws", "new connect+handshake+echo")):
        s = (pg or {}).get(key) or {}
        p99 = s.get("p99")
        add(f"pages under load ({(pg or {}).get('conns') or 1000:,} busy clients): {name} "
            "p99 < 50 ms", p99, p99 is not None and p99 < pages.TARGET_MS and
            not pg.get("failures"),
            f"p99 {p99:,.1f} ms, max {s.get('max') or 0:,.1f} ms over {s.get('n')} samples"
            f"{'; ' + str(pg.get('failures')) + ' failed' if pg and pg.get('failures') else ''}"
            f" (target < 50 ms)" if p99 is not None else "")
    ratio_row("32 B echo, 100 conns: >= 1.5x Node ws", "echo32x100", ME, "node", 1.5,
              "32 B/100", "Node")
    ratio_row("32 B echo, 100 conns: >= 0.8x libwebsockets", "echo32x100", ME, "lws", 0.8,
              "32 B/100", "libwebsockets")
    me99, lws99 = _p99(results, "echo32x100", ME), _p99(results, "echo32x100", "lws")
    r = _ratio(me99, lws99)
    add("32 B echo, 100 conns: p99 <= 2x libwebsockets'", r, r is not None and r <= 2.0,
        f"32 B/100 p99 {me99 / 1000:,.2f} ms = {r:.2f}x libwebsockets' "
        f"{lws99 / 1000:,.2f} ms (target <= 2x)" if r else "")
    ratio_row("32 B echo, 1,000 conns: >= 1.5x Node ws", "echo32x1000", ME, "node", 1.5,
              "32 B/1000", "Node")
    ratio_row("64 KiB echo: >= 0.7x raw TCP echo (MB/s)", "echo64kx10", ME, "raw", 0.7,
              "64 KiB", "raw TCP")
    ratio_row("64 KiB echo: >= 3x Node ws (MB/s)", "echo64kx10", ME, "node", 3.0,
              "64 KiB", "Node")
    for wkey, short in (("echo32x100", "32 B/100"), ("echo32x1000", "32 B/1000"),
                        ("echo64kx10", "64 KiB"), ("echo1m", "1 MiB")):
        ratio_row(f"wss >= 0.6x ws ({short})", wkey, "mws-async-wss", ME, 0.6,
                  f"{short} wss", "ws")
    ratio_row("connection rate: >= 1.5x Node ws", "connect", ME, "node", 1.5,
              "connect", "Node")
    need = 3 * CONNECT_WSS_BEFORE
    for wkey, how in (("connect-resume", "TLS session resumption"),
                      ("connect", "full TLS handshakes")):
        v = _median(results, wkey, "mws-async-wss")
        add(f"wss connection rate >= 3x {CONNECT_WSS_BEFORE:.0f}/s ({how})", v,
            v is not None and v >= need,
            f"{v:,.0f}/s = {v / CONNECT_WSS_BEFORE:.2f}x {CONNECT_WSS_BEFORE:.0f}/s "
            f"(target 3x = {need:,.0f}/s)" if v else "")
    for wkey, short, before in (("echo32x100", "32 B/100", 0.30), ("echo64kx10", "64 KiB", 0.37)):
        r = _ratio(_median(results, wkey, ME), _median(results, wkey, "epoll"))
        if r:
            out.append((f"(no target) {short} against the minimal epoll WebSocket echo",
                        f"{short}: {r:.2f}x minimal epoll (issue 11 measured {before:.2f}x "
                        "before)", "info"))
    idle = _entry(results, "idle", ME)
    kib = idle.get("median")
    kb = kib * 1.024 if kib is not None else None
    conns = (idle.get("extra") or {}).get("conns")
    what = f"{conns:,} " if conns else ""
    add(f"{what}idle connections (ws): <= {KB_PER_CONN:g} KB per connection", kb,
        kb is not None and kb <= KB_PER_CONN,
        f"{kb:.1f} KB ({kib:.1f} KiB) per connection (target <= {KB_PER_CONN:g} KB)"
        if kb is not None else "")
    th = (idle.get("extra") or {}).get("threads")
    add(f"{what}idle connections (ws): <= {THREADS} threads in all httpd "
        "processes", th, th is not None and th <= THREADS,
        f"{th:.0f} threads, {(idle.get('extra') or {}).get('procs', 0):.0f} processes "
        f"(target <= {THREADS})" if th is not None else "")
    return out


def report_lines(results):
    L = ["## Targets (issue 11)", "",
         "Every figure from this run; the ratios are mod_websocket's async driver over ws "
         "(unless the row says wss) against the peer named.", "",
         "| target | measured | pass? |", "|---|---|:---:|"]
    for name, text, ok in rows(results):
        verdict = {None: "—", "info": "—", True: "pass", False: "**miss**"}[ok]
        L.append(f"| {name} | {text} | {verdict} |")
    L.append("")
    L.append(f"The wss connection rate is shown both ways: with TLS session resumption (what "
             "a returning client gets, and what issue 11 point 5 keeps on) and with a full "
             f"handshake every time (how the {CONNECT_WSS_BEFORE:.0f}/s before issue 11 was "
             "measured, then with an RSA 2048 certificate; now ECDSA P-256).")
    L.append("")
    return L
