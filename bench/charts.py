"""SVG charts for the benchmark report (matplotlib, Agg backend: no display needed).

draw(results, targets, outdir) writes into outdir and returns [(title, file name)]:
  throughput.svg   one panel per workload, every server side by side (median of the runs)
  latency.svg      p50 and p99 per server for the echo and connection-rate workloads
  idle.svg         idle connections: KiB per connection and threads, with the targets
  pages.svg        pages under load: page loads and WebSocket cycles, p50/p99/max
The SVGs carry no date and a fixed hash salt, so a report regenerated from the same JSON
gives the same files.
"""

import math
import os
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402,F401  (matplotlib.ticker.FuncFormatter)

plt.rcParams.update({"svg.hashsalt": "mod_websocket-bench", "font.size": 9,
                     "svg.fonttype": "none"})
SVG_META = {"Date": None}
PALETTE = ["#1f77b4", "#6baed6", "#2ca02c", "#98df8a", "#7f7f7f", "#ff7f0e", "#9467bd",
           "#d62728", "#8c564b", "#e377c2", "#bcbd22", "#17becf"]
KIB_PER_KB = 1000 / 1024


def _title(ax, text):
    ax.set_title(textwrap.fill(text, 100), fontsize=9, loc="left")


def _colors(targets):
    return {t[0]: PALETTE[i % len(PALETTE)] for i, t in enumerate(targets)}


def _save(fig, outdir, name):
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, name), format="svg", metadata=SVG_META)
    plt.close(fig)
    return name


def _bars(ax, labels, values, colors, unit):
    """Horizontal bars, first label on top, each bar with its value."""
    y = list(range(len(labels)))[::-1]
    ax.barh(y, [v or 0 for v in values], color=colors)
    ax.set_yticks(y, labels)
    top = max([v for v in values if v] or [1])
    for yi, v in zip(y, values):
        text = "failed / n/a" if not v else (f"{v:,.1f}" if v < 100 else f"{v:,.0f}")
        ax.text((v or 0) + top * 0.01, yi, text, va="center", fontsize=8)
    ax.set_xlim(0, top * 1.22)
    ax.set_xlabel(unit)


def _log_axis(ax, values):
    """A log axis from the decade below the smallest value, with plain numbers."""
    vals = [v for v in values if v and v > 0] or [1]
    ax.set_xscale("log")
    ax.set_xlim(10 ** math.floor(math.log10(min(vals) * 0.9)), max(vals) * 4)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))


def _throughput_panels(results, targets):
    """[(title, unit, [(label, value, target key)])]: one panel per workload; the wss
    connection rate with TLS resumption joins the connection-rate panel."""
    wls = results["workloads"]
    panels = []
    for key, w in wls.items():
        if w["better"] != "higher" or key == "connect-resume":
            continue
        bars = [(t[1], w["targets"][t[0]].get("median"), t[0]) for t in targets
                if t[0] in w["targets"]]
        if key == "connect" and "connect-resume" in wls:
            res = wls["connect-resume"]["targets"]
            bars += [(t[1] + " (TLS resumption)", res[t[0]].get("median"), t[0])
                     for t in targets if t[0] in res]
        panels.append((w["title"], w["unit"], bars))
    return panels


def throughput(results, targets, outdir):
    panels = _throughput_panels(results, targets)
    if not panels:
        return None
    col = _colors(targets)
    sizes = [len(b) + 1.5 for _, _, b in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 0.3 * sum(sizes) + 0.5),
                             gridspec_kw={"height_ratios": sizes}, squeeze=False)
    for ax, (title, unit, bars) in zip(axes[:, 0], panels):
        _bars(ax, [b[0] for b in bars], [b[1] for b in bars], [col[b[2]] for b in bars],
              unit + " (higher is better)")
        _title(ax, title)
    return _save(fig, outdir, "throughput.svg")


def latency(results, targets, outdir):
    wls = [(k, w) for k, w in results["workloads"].items()
           if any(((e.get("extra") or {}).get("p50") is not None)
                  for e in w["targets"].values())]
    if not wls:
        return None
    def with_pcts(w):
        return [t for t in targets if ((w["targets"].get(t[0]) or {}).get("extra") or {})
                .get("p50") is not None]
    sizes = [len(with_pcts(w)) + 1.5 for _, w in wls]
    fig, axes = plt.subplots(len(wls), 1, figsize=(8, 0.4 * sum(sizes) + 0.5),
                             gridspec_kw={"height_ratios": sizes}, squeeze=False)
    for ax, (key, w) in zip(axes[:, 0], wls):
        tg = with_pcts(w)
        ex = [w["targets"][t[0]]["extra"] for t in tg]
        y = list(range(len(tg)))[::-1]
        for pct, dy, color in (("p50", 0.2, "#6baed6"), ("p99", -0.2, "#08519c")):
            vals = [e[pct] / 1000 for e in ex]
            ax.barh([v + dy for v in y], vals, height=0.4, color=color, label=pct)
            for yi, v in zip(y, vals):
                ax.text(v * 1.05, yi + dy, f"{v:,.2f}", va="center", fontsize=7)
        ax.set_yticks(y, [t[1] for t in tg])
        _log_axis(ax, [e[p] / 1000 for e in ex for p in ("p50", "p99")])
        ax.set_xlabel("ms (log scale, lower is better)")
        what = {"connect": " (whole cycle)", "broadcast": " (delivery delay)"}.get(key, "")
        _title(ax, w["title"] + what)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    return _save(fig, outdir, "latency.svg")


def idle(results, targets, outdir):
    w = results["workloads"].get("idle")
    if not w:
        return None
    tg = [t for t in targets if (w["targets"].get(t[0]) or {}).get("extra")]
    if not tg:
        return None
    col = _colors(targets)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 1.2 + 0.45 * len(tg)))
    labels = [t[1] + f" ({w['targets'][t[0]]['extra']['conns']:,} conns)" for t in tg]
    _bars(a1, labels, [w["targets"][t[0]].get("median") for t in tg],
          [col[t[0]] for t in tg], "KiB per connection (lower is better)")
    a1.axvline(12 * KIB_PER_KB, color="#d62728", ls="--", lw=1)
    a1.set_title("memory per idle connection (target <= 12 KB)", fontsize=9, loc="left")
    _bars(a2, labels, [w["targets"][t[0]]["extra"].get("threads") for t in tg],
          [col[t[0]] for t in tg], "threads, all processes (lower is better)")
    a2.axvline(50, color="#d62728", ls="--", lw=1)
    a2.set_yticks([])
    a2.set_title("threads (target <= 50)", fontsize=9, loc="left")
    return _save(fig, outdir, "idle.svg")


def pages(results, outdir):
    p = results.get("pages")
    if not p or not (p["page"]["n"] or p["ws"]["n"]):
        return None
    fig, ax = plt.subplots(figsize=(8, 2.6))
    names = ["page load of /", "connect + handshake + echo"]
    stats = [p["page"], p["ws"]]
    for i, (pct, color) in enumerate((("p50", "#6baed6"), ("p99", "#08519c"),
                                      ("max", "#7f7f7f"))):
        y = [1 - k + (0.27 * (1 - i)) for k in range(2)]
        vals = [s[pct] or 0 for s in stats]
        ax.barh(y, vals, height=0.25, color=color, label=pct)
        for yi, v in zip(y, vals):
            ax.text(max(v, 0.01) * 1.05, yi, f"{v:,.1f}", va="center", fontsize=7)
    ax.axvline(50, color="#d62728", ls="--", lw=1, label="target p99 50 ms")
    ax.set_yticks([1, 0], names)
    _log_axis(ax, [s[p] for s in stats for p in ("p50", "p99", "max")] + [50])
    ax.set_xlabel("ms (log scale, lower is better)")
    ax.set_title(f"pages under load: {p['conns']:,} WebSocket clients echoing 32 B "
                 "as fast as they can", fontsize=9, loc="left")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    return _save(fig, outdir, "pages.svg")


def draw(results, targets, outdir):
    os.makedirs(outdir, exist_ok=True)
    out = []
    for title, fn in (("Throughput per workload", lambda: throughput(results, targets, outdir)),
                      ("Latency percentiles", lambda: latency(results, targets, outdir)),
                      ("Idle connections", lambda: idle(results, targets, outdir)),
                      ("Pages under load", lambda: pages(results, outdir))):
        name = fn()
        if name:
            out.append((title, name))
    return out
