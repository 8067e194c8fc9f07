#!/usr/bin/python3
"""Reproducer: memory a child keeps after plugin threads fill outbound queues.

    /usr/bin/python3 fuzz/repro-queue-retention.py [ROUNDS] [MPM]     (needs `make all`)

Each round, 8 client threads run 200 sessions on /probe (the default 16 MiB
WebSocketMaxQueue); a third of them ask for an endless flood (`flood:100000000:200`,
a plugin thread sending 200-byte messages through a handle) and, without reading it,
send `fail` after the first flood message, so the session ends (1011) with a queue of
up to 16 MiB of small messages that is then freed.  Nothing leaks (valgrind finds no
lost block), but the children's RSS keeps climbing from round to round, because the
queued copies are malloc'd in the flooding thread's glibc arena and freed memory in
the middle of an arena is not returned to the system.  At the end the script calls
malloc_trim(0) in each child through gdb to show how much of it was free memory.

Seen on event (2 children): 17 -> 163 -> 226 -> 372 -> 405 -> 475 MiB over 5 rounds,
then 475 -> 168 MiB after malloc_trim(0).
"""

import os
import subprocess
import sys
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "integration"))

from httpd import start_httpd  # noqa: E402
from rawws import OP_BINARY, RawWS  # noqa: E402


def children(ppid):
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                st = open(f"/proc/{name}/stat").read()
            except OSError:
                continue
            fields = st[st.rindex(")") + 2:].split()
            if int(fields[1]) == ppid and fields[0] != "Z":
                out.append(int(name))
    return out


def rss(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def session(srv, i):
    with RawWS.open(srv, "ws", "/probe", timeout=60) as c:
        c.recv_message()
        if i % 3 == 0:
            c.send_text("flood:100000000:200")
            assert c.recv_message()[0] == OP_BINARY
        c.send_text("fail")
        c.expect_close(timeout=60)


def round_(srv, n=200, threads=8):
    def worker(k):
        for i in range(k, n, threads):
            session(srv, i)

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    mpm = sys.argv[2] if len(sys.argv) > 2 else "event"
    srv = start_httpd(tempfile.mkdtemp(prefix="ws-retention-"), mpm=mpm, tls=False,
                      locations=[("/probe", "probe")], loglevel="warn")
    try:
        total = lambda: sum(rss(p) for p in children(srv.proc.pid))  # noqa: E731
        print(f"{mpm}: children RSS at start {total()} KiB", flush=True)
        for r in range(rounds):
            round_(srv)
            print(f"after round {r + 1}: {total()} KiB", flush=True)
        for pid in children(srv.proc.pid):
            before = rss(pid)
            subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex",
                            "call (int)malloc_trim(0)"], capture_output=True, timeout=120)
            print(f"child {pid}: {before} KiB -> {rss(pid)} KiB after malloc_trim(0)")
    finally:
        srv.stop(check=False)


if __name__ == "__main__":
    main()
