"""RFC 6455 conformance of /echo: tests/conformance/wsconform.py (about 200 cases in the
manner of Autobahn|Testsuite's fuzzing client) over ws and wss, on each MPM of
WS_TEST_MPMS; no case may end FAILED, nor NON-STRICT (a variation the RFC allows, such as
dropping TCP instead of sending a close frame, answering 1000 instead of echoing the code,
finding bad UTF-8 only at the end of a message, losing earlier echoes) unless it is in
NON_STRICT_BASELINE below with its reason.  The JSON report goes to
build/artifacts/wsconform-MPM-TRANSPORT.json.

Also an interoperability check with an independent client implementation (Debian's
python3-websockets, which offers permessage-deflate like browsers do).
"""

import asyncio
import json
import os
import subprocess
import sys


from support import mpm_server

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
WSCONFORM = os.path.join(REPO, "tests", "conformance", "wsconform.py")
ARTIFACTS = os.path.join(REPO, "build", "artifacts")


# Cases allowed to end NON-STRICT, per MPM: {case id: the reason}.  Empty: the module
# gives the strict answer to every case on every MPM.
NON_STRICT_BASELINE = {"event": {}, "worker": {}, "prefork": {}}

server = mpm_server([("/echo", "echo")])


def test_wsconform(server, transport):
    os.makedirs(ARTIFACTS, exist_ok=True)
    out = os.path.join(ARTIFACTS, f"wsconform-{server.mpm}-{transport}.json")
    cmd = [sys.executable, WSCONFORM, server.url(transport, "/echo"), "--json", out,
           "--timeout", "5"]
    if transport == "wss":
        cmd += ["--cafile", server.cert]      # the generated cert names 127.0.0.1
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       encoding="utf-8", errors="replace", timeout=600)
    print(p.stdout[-20000:], p.stderr[-5000:])
    assert os.path.exists(out), f"wsconform wrote no report (exit {p.returncode}):\n{p.stderr}"
    with open(out, encoding="utf-8") as f:
        doc = json.load(f)
    s = doc["summary"]
    assert s["total"] >= 150, f"only {s['total']} cases ran"
    allowed = NON_STRICT_BASELINE[server.mpm]
    bad = [c for c in doc["cases"] if c["status"] == "FAILED"
           or (c["status"] == "NON-STRICT" and c["id"] not in allowed)]
    lines = []
    for c in bad:
        lines.append(f"{c['id']} {c['description']}")
        lines += [f"    - {n}" for n in c["notes"]]
        lines += [f"      {t}" for t in c["trace"][-8:]]
    assert p.returncode == 0 and not bad, (
        f"{len(bad)} of {s['total']} cases FAILED or NON-STRICT (beyond the baseline) "
        f"over {transport} ({server.mpm}); "
        f"OK {s['ok']}, NON-STRICT {s['non_strict']}\n" + "\n".join(lines)
        + (f"\n{p.stderr}" if p.returncode not in (0, 1) else ""))
    assert p.returncode == 0 and s["passed"] == s["total"]
    assert s["ok"] + s["non_strict"] == s["total"] and s["non_strict"] <= len(allowed)


SIZES = [0, 1, 125, 126, 65535, 65536, 1 << 20, (1 << 20) + 1, 4 << 20]


def test_independent_client(server, transport):
    """python3-websockets (a separate RFC 6455 implementation, offering permessage-deflate)
    exchanges text and binary messages of every length class with /echo and closes
    cleanly with 1000."""
    import websockets

    async def run():
        ssl_ctx = server.ssl_for(transport)
        async with websockets.connect(server.url(transport, "/echo"), ssl=ssl_ctx,
                                      max_size=None, open_timeout=10,
                                      close_timeout=10) as ws:
            for n in SIZES:
                binary = os.urandom(n)
                text = ("wsé✓😀" * (n // 10 + 1))[:max(0, n // 4)]
                for msg in (binary, text):
                    await ws.send(msg)
                    got = await asyncio.wait_for(ws.recv(), 20)
                    assert type(got) is type(msg) and got == msg, \
                        f"{type(msg).__name__} of {len(msg)} not echoed intact"
            pong = await ws.ping(b"independent")
            await asyncio.wait_for(pong, 10)
            await ws.close(1000, "done")
            return ws.close_code

    assert asyncio.run(asyncio.wait_for(run(), 120)) == 1000
