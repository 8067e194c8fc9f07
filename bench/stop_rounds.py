#!/usr/bin/python3
"""Stop httpd under WebSocket load, again and again, and look for crashed children.

    bench/stop_rounds.py [--rounds 20] [--conns 200] [--mpm event]

Each round starts a fresh httpd (event MPM, ws and wss, /echo), puts `wsload` echo load
on it (half the connections over TLS), and a second into the load stops it: the first
`rounds` rounds with `-k graceful-stop` (SIGWINCH), the next `rounds` with SIGTERM.
After each stop the error log is searched for crash lines (segfaults, aborts, "exit
signal") and the round reports how long the parent took to exit.  Exit status 1 if any
round crashed or did not stop.  `make stop-rounds` runs it; the test suite runs two
rounds of each (tests/integration/test_ws_665_stop_rounds.py).
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "scripts"))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

from httpd import crash_lines, start_httpd  # noqa: E402

WSLOAD = os.path.join(REPO, "build", "bench", "wsload")
MPM = {"StartServers": 2, "ServerLimit": 2, "ThreadsPerChild": 25,
       "MaxRequestWorkers": 50, "AsyncRequestWorkerFactor": 100}


def one_round(directory, how, conns, mpm):
    srv = start_httpd(directory, mpm=mpm, tls=True,
                      locations=[{"path": "/echo", "plugin": "echo"}],
                      mpm_settings=MPM if mpm == "event" else None)
    loads = [subprocess.Popen([WSLOAD, "echo", url, "-c", str(conns // 2), "-m", "4",
                               "-d", "30", "-w", "0", "-q"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for url in (srv.ws_url("/echo"), srv.wss_url("/echo"))]
    time.sleep(1.0)     # load running for a while before the stop (no event to await)
    srv.stopped = True  # this round stops it itself
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGWINCH if how == "graceful-stop" else signal.SIGTERM)
    try:
        srv.proc.wait(timeout=30)
        took, stuck = time.monotonic() - t0, False
    except subprocess.TimeoutExpired:
        srv.proc.kill()
        srv.proc.wait()
        took, stuck = time.monotonic() - t0, True
    for p in loads:
        p.kill()
        p.wait()
    crashes = crash_lines(srv.error_log_text())
    return took, stuck, crashes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--conns", type=int, default=200)
    ap.add_argument("--mpm", default="event")
    args = ap.parse_args()
    if not os.path.exists(WSLOAD):
        sys.exit("stop_rounds.py: build/bench/wsload missing: run `make bench-tools`")
    bad = 0
    with tempfile.TemporaryDirectory(prefix="stop-rounds-") as tmp:
        for how in ("graceful-stop", "SIGTERM"):
            for i in range(args.rounds):
                took, stuck, crashes = one_round(os.path.join(tmp, f"{how}-{i}"), how,
                                                 args.conns, args.mpm)
                status = "STUCK" if stuck else "CRASH" if crashes else "ok"
                print(f"{how:13s} round {i + 1:2d}: parent exited after {took:5.2f}s  {status}",
                      flush=True)
                for line in crashes[:5]:
                    print("    " + line)
                bad += stuck or bool(crashes)
    print(f"stop rounds: {2 * args.rounds} rounds, {bad} bad")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
