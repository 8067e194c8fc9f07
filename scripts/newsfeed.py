#!/usr/bin/python3
"""A sample news feed for the demo: publishes a made-up headline every few seconds to
the "news" channel with a plain HTTP POST, as any backend (PHP, a cron job, curl) could.

    scripts/newsfeed.py [--url http://127.0.0.1:8080/pub/news] [--interval 4] [--count N]

Each message is JSON {"headline": ..., "source": ..., "time": ISO 8601 UTC}, what
htdocs/news.html shows.  scripts/demo.sh starts it in the background and stops it with
httpd; it also stops by itself when its parent goes away.  A refused or failed POST
(httpd still starting, or restarting) is reported once and retried at the next tick.
"""

import argparse
import datetime
import json
import os
import random
import sys
import time
import urllib.error
import urllib.request

SOURCES = ["Reuters", "AP", "AFP", "BBC", "dpa", "Kyodo", "ANSA", "EFE"]
SUBJECTS = ["Central bank", "Apache httpd", "City council", "Weather service", "Space agency",
            "Football club", "Stock market", "Research team", "Parliament", "Tech giant"]
VERBS = ["announces", "delays", "denies", "confirms", "celebrates", "reviews",
         "postpones", "unveils", "questions", "welcomes"]
OBJECTS = ["new interest rates", "WebSocket support", "record heat", "a moon mission",
           "the season's first win", "a surprise rally", "a breakthrough", "budget cuts",
           "a merger", "long-polling fallback"]


def make_headline(rng):
    return {"headline": f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}",
            "source": rng.choice(SOURCES),
            "time": datetime.datetime.now(datetime.timezone.utc)
            .isoformat(timespec="seconds").replace("+00:00", "Z")}


def publish(url, message, timeout=5.0):
    """POST one message; the server's answer (JSON: id, channel, subscribers)."""
    body = json.dumps(message).encode()
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read().decode())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080/pub/news")
    ap.add_argument("--interval", type=float, default=4.0, help="seconds between headlines")
    ap.add_argument("--count", type=int, default=0, help="stop after N (0: never)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    rng = random.Random()
    parent = os.getppid()
    sent, failing = 0, False
    while args.count == 0 or sent < args.count:
        if os.getppid() != parent:
            return 0                      # demo.sh is gone: so are we
        msg = make_headline(rng)
        try:
            answer = publish(args.url, msg)
            sent += 1
            failing = False
            if not args.quiet:
                print(f"newsfeed: {answer.get('id')} to {answer.get('subscribers')} "
                      f"subscriber(s): {msg['headline']} ({msg['source']})", flush=True)
        except (OSError, urllib.error.URLError, ValueError) as e:
            if not failing:
                print(f"newsfeed: POST {args.url} failed ({e}); retrying", file=sys.stderr,
                      flush=True)
            failing = True
        time.sleep(args.interval)         # the feed's own pace, not a synchronization
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
