#!/usr/bin/python3
"""A tiny fake publisher for testing `wsload broadcast`: every INTERVAL_MS it pushes
{"ts":MICROSECONDS_SINCE_EPOCH,"seq":N} to every connected client (text messages).
Usage: /usr/bin/python3 bench/peers/fake_ticker.py PORT [INTERVAL_MS]"""
import asyncio
import json
import resource
import sys
import time

import websockets

clients = set()


async def handler(ws, path=None):
    clients.add(ws)
    try:
        async for _ in ws:
            pass
    except websockets.ConnectionClosed:
        pass
    finally:
        clients.discard(ws)


async def publish(interval):
    seq = 0
    while True:
        await asyncio.sleep(interval)
        seq += 1
        msg = json.dumps({"ts": time.time_ns() // 1000, "seq": seq}, separators=(",", ":"))
        websockets.broadcast(clients, msg)


async def main(port, interval):
    async with websockets.serve(handler, "127.0.0.1", port, compression=None,
                                ping_interval=None, backlog=4096):
        print(f"fake ticker on 127.0.0.1:{port} every {interval * 1000:.0f} ms", flush=True)
        await publish(interval)


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main(int(sys.argv[1]), float(sys.argv[2] if len(sys.argv) > 2 else 100) / 1000))
