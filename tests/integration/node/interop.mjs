// The interop echo script for WHATWG-style WebSocket clients (test_ws_850_interop.py):
// Node's `ws` (Debian's node-ws), Node's built-in WebSocket (node --experimental-websocket)
// and, through tests/browser/interop.test.mjs, Chromium.
//
//   node [--experimental-websocket] interop.mjs '{"client": "ws"|"builtin", "url": ...,
//        "ca": cert path or null, "deflate": bool}'
//
// Prints one JSON line (see runScript) and exits 0 if every step passed.
//
// runScript is self-contained (no reference to this module's scope) so that the browser
// test can evaluate its source in a page.

export async function runScript(WS, url, opts) {
  const r = { ok: false, steps: [], extensions: null, close: null, ping: 'n/a', error: null };
  const enc = new TextEncoder();
  let seed = 850;
  const rnd = (n) => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
  const letters = (n) => { let s = ''; for (let i = 0; i < n; i++) s += String.fromCharCode(97 + rnd(26)); return s; };
  const bytes = (n) => { const b = new Uint8Array(n); for (let i = 0; i < n; i++) b[i] = rnd(256); return b; };
  const words = 'the quick brown fox jumps over the lazy dog; mod_websocket permessage-deflate café ✓ ';
  const msgs = [
    ['text', 'hello'],
    ['utf8', 'héllo wörld ✓ 🚀 日本語 ǅ'],
    ['empty', ''],
    ['70KB text', letters(70000)],
    ['binary', Uint8Array.from({ length: 256 }, (_, i) => i)],
    ['1MiB binary', bytes(1 << 20)],
    ['1MB compressible text', words.repeat(Math.ceil(1000000 / words.length)).slice(0, 1000000)],
  ];
  const same = (a, b) => {
    if (typeof b === 'string') return a === b;
    if (typeof a === 'string') return false;
    const x = new Uint8Array(a);
    if (x.length !== b.length) return false;
    for (let i = 0; i < x.length; i++) if (x[i] !== b[i]) return false;
    return true;
  };
  let ws;
  const queue = [], waiters = [];
  let closed = null;
  const deliver = (item) => { const w = waiters.shift(); if (w) w(item); else queue.push(item); };
  const next = (what, ms = 30000) => new Promise((resolve, reject) => {
    if (queue.length) { resolve(queue.shift()); return; }
    const t = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
    waiters.push((item) => { clearTimeout(t); resolve(item); });
  });
  try {
    ws = opts.makeWebSocket ? opts.makeWebSocket(url) : new WS(url);
    ws.binaryType = 'arraybuffer';
    ws.onmessage = (ev) => deliver({ data: ev.data });
    ws.onclose = (ev) => { closed = { code: ev.code, reason: ev.reason }; deliver({ closed }); };
    ws.onerror = () => {};
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      const t = setTimeout(() => reject(new Error('open timed out')), 15000);
      ws.addEventListener('open', () => clearTimeout(t));
      ws.addEventListener('close', (ev) => { clearTimeout(t); reject(new Error(`closed before open: ${ev.code}`)); });
    });
    r.extensions = ws.extensions;
    for (const [name, m] of msgs) {
      ws.send(m);
      const got = await next(name);
      if (got.closed) throw new Error(`${name}: closed ${got.closed.code} ${got.closed.reason}`);
      if (!same(got.data, m)) throw new Error(`${name}: echo differs (${typeof got.data})`);
      r.steps.push(name);
    }
    if (opts.ping) {
      await opts.ping(ws, enc.encode('ping-850'));
      r.ping = 'ok';
      r.steps.push('ping');
    }
    ws.close(4000, 'bye ✓');
    const end = await next('close');
    if (!end.closed) throw new Error('a message instead of the close');
    r.close = end.closed;
    if (end.closed.code !== 4000 || end.closed.reason !== 'bye ✓') {
      throw new Error(`close: got ${end.closed.code} "${end.closed.reason}", expected 4000 "bye ✓"`);
    }
    r.steps.push('close');
    r.ok = true;
  } catch (e) {
    r.error = String(e && e.message || e);
    try { if (ws) ws.close(); } catch (e2) { /* already closed */ }
  }
  return r;
}

async function main() {
  const cfg = JSON.parse(process.argv[2]);
  const fs = await import('node:fs');
  const { createRequire } = await import('node:module');
  let WS = null, opts = {};
  if (cfg.client === 'ws') {
    const NodeWS = createRequire(import.meta.url)('/usr/share/nodejs/ws');
    const o = { perMessageDeflate: cfg.deflate, maxPayload: 0 };
    if (cfg.ca) o.ca = fs.readFileSync(cfg.ca);
    opts.makeWebSocket = (url) => new NodeWS(url, o);
    opts.ping = (ws, data) => new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no pong')), 10000);
      ws.once('pong', (d) => {
        clearTimeout(t);
        if (Buffer.compare(d, Buffer.from(data)) === 0) resolve(); else reject(new Error('pong data differs'));
      });
      ws.ping(data);
    });
  } else {
    WS = globalThis.WebSocket;       // certificates: NODE_EXTRA_CA_CERTS
    if (!WS) throw new Error('no built-in WebSocket: run node with --experimental-websocket');
  }
  const deadline = setTimeout(() => {
    process.stdout.write(JSON.stringify({ ok: false, error: 'deadline passed' }) + '\n');
    process.exit(1);
  }, cfg.deadline_ms || 60000);
  const r = await runScript(WS, cfg.url, opts);
  clearTimeout(deadline);
  process.stdout.write(JSON.stringify(r) + '\n');
  process.exit(r.ok ? 0 : 1);
}

if (process.argv[1] && import.meta.url === (await import('node:url')).pathToFileURL(process.argv[1]).href) {
  await main();
}
