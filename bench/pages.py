"""Pages under load (issue 11): can an Apache that serves WebSocket traffic still serve
pages and accept new WebSocket sessions while that traffic is heavy?

On a server configured like `make demo` (event MPM, scripts/genconf.py's SCALE_EVENT,
HTTP/2 on, the demo's locations), `wsload echo` keeps N connections (1,000) echoing
32 B text messages as fast as they can (one in flight each); while it runs, this module
times, one after another, SAMPLES plain page loads of `/` (new TCP connection,
`GET / HTTP/1.1`, `Connection: close`, the whole body read and compared with
htdocs/index.html) and SAMPLES new WebSocket cycles (new TCP connection, upgrade, one
32 B echo checked; the time stops at the echo, the close handshake is not timed).
Page loads and cycles alternate.  Then the load is stopped (SIGTERM: wsload reports what
it measured so far).  A sample that fails or takes longer than the per-sample timeout
counts as a failure; samples stop when the load has ended (every figure here is taken
under load, or the report says how many were not).
"""

import base64
import hashlib
import json
import os
import signal
import socket
import subprocess
import time

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TARGET_MS = 50.0


def percentile(vals, p):
    """The p-th percentile (linear interpolation between the closest ranks)."""
    if not vals:
        return None
    v = sorted(vals)
    k = (len(v) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def _recv_until(sock, marker, buf=b""):
    while marker not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before {marker!r} ({len(buf)} bytes read)")
        buf += chunk
    return buf


def page_load(port, expected_body, path="/", timeout=30.0):
    """Milliseconds for one page load on a new connection; raises if it is wrong."""
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                  "Connection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    ms = (time.perf_counter() - t0) * 1000.0
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    if not status.startswith(b"HTTP/1.1 200 "):
        raise ValueError(f"page load: {status!r}")
    if body != expected_body:
        raise ValueError(f"page load: body of {len(body)} bytes differs from the file's "
                         f"{len(expected_body)}")
    return ms


def _masked_frame(opcode, payload):
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    else:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws_cycle(port, path="/echo", timeout=30.0):
    """Milliseconds for connect + handshake + one 32 B echo on a new connection."""
    payload = os.urandom(16).hex().encode()          # 32 B of text
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        buf = _recv_until(s, b"\r\n\r\n")
        head, _, rest = buf.partition(b"\r\n\r\n")
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest())
        if not head.startswith(b"HTTP/1.1 101 ") or accept not in head:
            status = head.split(b"\r\n", 1)[0]
            raise ValueError(f"handshake: {status!r}")
        s.sendall(_masked_frame(0x1, payload))
        while len(rest) < 2 + len(payload):
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed before the echo")
            rest += chunk
        ms = (time.perf_counter() - t0) * 1000.0
        if rest[:2 + len(payload)] != bytes([0x81, len(payload)]) + payload:
            raise ValueError(f"echo: got {rest[:40]!r}")
        s.sendall(_masked_frame(0x8, (1000).to_bytes(2, "big")))
    return ms


def _sample(kind, fn, out):
    """One sample.  A sample that timed out counts as failed and, with the time it took
    (at least the timeout), in the percentiles: they are lower bounds then."""
    t0 = time.perf_counter()
    try:
        out[kind].append(fn())
    except TimeoutError:
        ms = (time.perf_counter() - t0) * 1000.0
        out[kind].append(ms)
        out["failures"].append(f"{kind}: timed out after {ms:,.0f} ms")
    except (OSError, ValueError) as e:
        out["failures"].append(f"{kind}: {e}"[:200])


def measure(port, expected_body, samples, alive, timeout=30.0):
    """Alternate `samples` page loads and WebSocket cycles while alive() is true."""
    out = {"page_ms": [], "ws_ms": [], "failures": [], "not_under_load": 0}
    for _ in range(samples):
        for kind, fn in (("page_ms", lambda: page_load(port, expected_body,
                                                        timeout=timeout)),
                         ("ws_ms", lambda: ws_cycle(port, timeout=timeout))):
            if not alive():
                out["not_under_load"] += 1
                continue
            _sample(kind, fn, out)
    return out


def summary(ms):
    """p50/p99/max of a list of milliseconds."""
    return {"n": len(ms), "p50": percentile(ms, 50), "p99": percentile(ms, 99),
            "max": max(ms) if ms else None}


def run(wsload, client_cpu, port, pid, expected_body, conns, samples, max_load_s,
        timeout, json_path):
    """One round: start the load, wait until its connections are open and echoing,
    take the samples, stop the load.  Returns the round's result (a dict)."""
    argv = ["taskset", "-c", client_cpu, wsload, "echo", f"ws://127.0.0.1:{port}/echo",
            "-c", str(conns), "-s", "32", "-d", str(max_load_s), "-w", "1",
            "--open-first", "-B", "128", "--pid", str(pid), "--json", json_path]
    load = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in load.stdout:       # "wsload: N of M connections open in X s"
            lines.append(line)
            if "connections open in" in line:
                break
        opened_line = lines[-1].strip() if lines else ""
        time.sleep(1.5)                # the warm-up (-w 1): every client is echoing now
        t0 = time.monotonic()
        res = measure(port, expected_body, samples, lambda: load.poll() is None, timeout)
        res["sampling_s"] = time.monotonic() - t0
    finally:
        if load.poll() is None:
            load.send_signal(signal.SIGTERM)
        try:
            rest, _ = load.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            load.kill()
            rest, _ = load.communicate()
    res["load_output"] = ("".join(lines) + (rest or ""))[-2000:]
    res["load_opened"] = opened_line
    res["load_rc"] = load.returncode
    res["conns"] = conns
    try:
        with open(json_path) as f:
            res["load"] = json.load(f)
        os.unlink(json_path)
    except (OSError, ValueError):
        res["load"] = None
    return res


def combine(rounds):
    """Pool the rounds' samples: the figures the report shows."""
    page = [v for r in rounds for v in r["page_ms"]]
    ws = [v for r in rounds for v in r["ws_ms"]]
    loads = [r["load"] for r in rounds if r.get("load")]
    return {"rounds": len(rounds), "conns": rounds[0]["conns"] if rounds else None,
            "page": summary(page), "ws": summary(ws),
            "failures": sum(len(r["failures"]) for r in rounds),
            "first_failure": next((r["failures"][0] for r in rounds if r["failures"]), None),
            "not_under_load": sum(r["not_under_load"] for r in rounds),
            "load_msgs_per_s": (sorted(ld["msgs_per_s"] for ld in loads)[len(loads) // 2]
                                if loads else None),
            "load_errors": sum(ld.get("errors", 0) for ld in loads)}


def report_lines(pages, samples_per_round):
    """The report's section (Markdown lines); pages: combine()'s result."""
    L = []
    w = L.append
    w("## Pages under load")
    w("")
    w(f"Server configured like `make demo` (event MPM, `scripts/genconf.py --scale`: 2 "
      f"children x 25 workers, HTTP/2 on; LogLevel warn), pinned to CPU 0 like the other "
      f"servers; `wsload` (CPU 1) keeps {pages['conns']:,} WebSocket "
      "clients echoing 32 B text messages as fast as they can (one in flight each); "
      f"meanwhile {samples_per_round} page loads of `/` (new connection, whole body "
      f"checked) and {samples_per_round} new WebSocket cycles (connect, handshake, one "
      "32 B echo) are timed one after another, alternating; "
      f"{pages['rounds']} round(s), samples pooled. Target (issue 11): p99 under "
      f"{TARGET_MS:.0f} ms for both.")
    w("")
    w("| | samples | p50 (ms) | p99 (ms) | max (ms) | p99 < 50 ms? |")
    w("|---|---:|---:|---:|---:|:---:|")
    for key, name in (("page", "page load of `/`"), ("ws", "connect + handshake + echo")):
        s = pages[key]
        if not s["n"]:
            w(f"| {name} | 0 | — | — | — | **no** |")
            continue
        ok = s["p99"] < TARGET_MS and pages["failures"] == 0
        w(f"| {name} | {s['n']} | {s['p50']:,.1f} | {s['p99']:,.1f} | {s['max']:,.1f} | "
          f"{'yes' if ok else '**no**'} |")
    w("")
    mps = pages.get("load_msgs_per_s")
    w(f"The load meanwhile: {mps:,.0f} echoes/s over {pages['conns']:,} connections "
      f"({pages['load_errors']} errors)." if mps else "The load's figures are missing.")
    if pages["failures"]:
        w(f"Failed samples: {pages['failures']} (first: `{pages['first_failure']}`). A "
          "sample that timed out is in the percentiles with the time it took (at least "
          "the timeout), so they are lower bounds.")
    if pages["not_under_load"]:
        w(f"Samples skipped because the load had already ended: {pages['not_under_load']}.")
    w("")
    return L
