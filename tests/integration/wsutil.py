"""Small asyncio helpers over the `websockets` library (Debian's 10.4, legacy API)."""

import asyncio
import json
import os
import subprocess

import websockets

DEADLINE = 20.0


def run(coro, timeout=DEADLINE):
    """Run a coroutine with a hard deadline."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def connect(server, transport, path, **kw):
    """websockets.connect to the server over ws or wss (trusting its certificate).
    Defaults: no size limit, a 10 s open timeout."""
    kw.setdefault("max_size", None)
    kw.setdefault("open_timeout", 10)
    kw.setdefault("close_timeout", 10)
    if transport == "wss":
        kw.setdefault("ssl", server.ssl_context())
    return websockets.connect(server.url(transport, path), **kw)


async def recv(ws, timeout=10.0):
    return await asyncio.wait_for(ws.recv(), timeout)


async def recv_json(ws, timeout=10.0):
    msg = await recv(ws, timeout)
    assert isinstance(msg, str), f"expected a text message, got {msg!r:.80}"
    return json.loads(msg)


async def expect_closed(ws, timeout=10.0):
    """Wait for the connection to close; return (code, reason) as received (1006 if no
    close frame came)."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except websockets.exceptions.ConnectionClosed as e:
        return e.code, e.reason


NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node")
NODE_PATH = "/usr/share/nodejs"     # Debian's node-ws


def run_node(script, cfg, timeout=60):
    """Run tests/integration/node/<script> with a JSON argument; return its JSON line
    (the last line of stdout) as a dict, with "returncode" and "stderr" added."""
    env = dict(os.environ, NODE_PATH=NODE_PATH)
    p = subprocess.run(["node", os.path.join(NODE_DIR, script), json.dumps(cfg)],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=env, timeout=timeout, text=True)
    lines = [line for line in p.stdout.splitlines() if line.strip()]
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise AssertionError(f"node {script} printed no result (exit {p.returncode}):\n"
                             f"stdout: {p.stdout[-2000:]}\nstderr: {p.stderr[-2000:]}")
    result["returncode"] = p.returncode
    result["stderr"] = p.stderr
    return result
