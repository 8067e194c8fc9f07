"""MaxConnectionsPerChild with sessions on the event loops (event MPM).

One child at a time, `MaxConnectionsPerChild 4`.  Sessions to /echo are opened one after
another until the child has used up its connections; it then stops gracefully (the MPM's
own decision), and since its sessions left the MPM, mod_websocket must end them: each
gets close 1001 "server shutting down" (also one whose handshake was under way when the
child began to stop), the old child exits, and later sessions are served by a new child.
A session on the loops never holds a stopping child open.
"""

import asyncio

import websockets

from support import children, scaled, wait_gone
from wsutil import connect, recv, run

MPM = {"StartServers": 1, "ServerLimit": 2, "ThreadsPerChild": 8, "MaxRequestWorkers": 8,
       "MinSpareThreads": 1, "MaxSpareThreads": 8, "MaxConnectionsPerChild": 4}
SESSIONS = 6


async def echo_once(ws, text):
    try:
        await ws.send(text)
        assert await recv(ws) == text
    except websockets.exceptions.ConnectionClosedOK:
        pass            # that child stopped first: the close code is checked below


def test_child_recycled_with_open_sessions(httpd_factory):
    srv = httpd_factory(mpm="event", tls=False, locations=[("/echo", "echo")],
                        mpm_settings=MPM)
    old = children(srv)
    assert len(old) == 1, old

    async def scenario():
        wss = []
        for i in range(SESSIONS):
            ws = await connect(srv, "ws", "/echo")
            await echo_once(ws, f"hello {i}")
            wss.append(ws)
        # the first child is gone by now or soon: its sessions were closed with 1001
        await asyncio.get_running_loop().run_in_executor(None, wait_gone, set(old), 5.0)
        ended, alive = [], 0
        for ws in wss:
            try:
                await asyncio.wait_for(ws.wait_closed(), 0.5)
                ended.append((ws.close_code, ws.close_reason))
            except asyncio.TimeoutError:
                await echo_once(ws, "still here")   # served by the new child
                await ws.close()
                alive += 1
        return ended, alive

    ended, alive = run(scenario())
    assert ended and all(e == (1001, "server shutting down") for e in ended), ended
    assert alive >= 1, "no session reached the new child"
    assert set(children(srv)).isdisjoint(old)
