#!/usr/bin/python3
"""Python `websockets` peer of the benchmarks: echo every message (str stays text, bytes
stay binary).  Usage: /usr/bin/python3 bench/peers/py_echo.py PORT"""
import asyncio
import resource
import sys

import websockets


async def echo(ws, path=None):
    try:
        async for msg in ws:
            await ws.send(msg)
    except websockets.ConnectionClosed:
        pass


async def main(port):
    async with websockets.serve(echo, "127.0.0.1", port, max_size=None, max_queue=None,
                                compression=None, ping_interval=None, backlog=4096):
        print(f"python websockets echo on 127.0.0.1:{port}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main(int(sys.argv[1])))
