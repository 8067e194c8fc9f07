// permessage-deflate with Node's `ws` (Debian's node-ws 8.x) for test_ws_830_deflate.py:
//
//   NODE_PATH=/usr/share/nodejs node deflate.js '<json>'
//
// The JSON argument:
//   {"url": ..., "ca": cert path or null, "deadline_ms": N,
//    "perMessageDeflate": true | {ws's perMessageDeflate options},
//    "messages": [{"type": "text"|"binary", "content": "compressible"|"random",
//                  "size": N}, ...]}
// Sends each message, checks its echo (type and bytes), then closes with 1000.
// Prints one JSON line {"ok": bool, "error": str|null, "extensions": the 101's
// Sec-WebSocket-Extensions, "negotiated": ws.extensions, "echoed": N, "code": C}
// and exits 0 if ok.
'use strict';

const fs = require('fs');
const crypto = require('crypto');
const WebSocket = require('ws');

const cfg = JSON.parse(process.argv[2]);
const opts = { perMessageDeflate: cfg.perMessageDeflate, maxPayload: 0 };
if (cfg.ca) {
  opts.ca = fs.readFileSync(cfg.ca);
}

let done = false;
const result = { extensions: null, negotiated: null, echoed: 0 };
function finish(extra) {
  if (done) {
    return;
  }
  done = true;
  Object.assign(result, extra);
  process.stdout.write(JSON.stringify(Object.assign({ ok: !result.error, error: null },
    result)) + '\n');
  process.exit(result.error ? 1 : 0);
}

const deadline = cfg.deadline_ms || 60000;
setTimeout(() => finish({ error: `deadline of ${deadline} ms passed after ` +
                                 `${result.echoed} messages` }), deadline);

// A block of words (some not ASCII): compresses well at any window size.
const WORDS = ('the quick brown fox jumps over lazy dog mod_websocket permessage deflate ' +
               'Übergrößenträger naïve café 2024 € ✓ 🚀 日本語').split(' ');
let seed = 7692;
function rnd(n) {
  seed = (seed * 1103515245 + 12345) & 0x7fffffff;
  return seed % n;
}
const parts = [];
for (let len = 0; len < 4000;) {
  const w = WORDS[rnd(WORDS.length)];
  parts.push(w);
  len += Buffer.byteLength(w) + 1;
}
const BLOCK = Buffer.from(parts.join(' ') + '\n');

// Exactly `size` bytes; text is valid UTF-8 (random text: 2-byte characters).
function payload(m) {
  const n = m.size;
  let buf;
  if (m.content === 'random') {
    buf = crypto.randomBytes(n);
    if (m.type === 'text') {
      for (let i = 0; i + 1 < n; i += 2) {
        buf[i] = 0xc2 + (buf[i] % 30);
        buf[i + 1] = 0x80 | (buf[i + 1] & 0x3f);
      }
      if (n & 1) {
        buf[n - 1] = 0x41;
      }
    }
  } else {
    buf = Buffer.alloc(n, 'x');
    const whole = n - (n % BLOCK.length);
    for (let off = 0; off < whole; off += BLOCK.length) {
      BLOCK.copy(buf, off);
    }
    if (m.type === 'binary') {
      BLOCK.copy(buf, whole, 0, n - whole);
    }
  }
  return m.type === 'text' ? buf.toString('utf8') : buf;
}

const ws = new WebSocket(cfg.url, [], opts);
const msgs = cfg.messages;
let i = 0;
let sent = null;
const sendNext = () => {
  sent = payload(msgs[i]);
  if (msgs[i].type === 'text' && Buffer.byteLength(sent) !== msgs[i].size) {
    return finish({ error: `message ${i}: built ${Buffer.byteLength(sent)} bytes` });
  }
  ws.send(sent, { binary: msgs[i].type === 'binary' });
};
ws.on('upgrade', (res) => {
  result.extensions = res.headers['sec-websocket-extensions'] || null;
});
ws.on('open', () => {
  result.negotiated = ws.extensions;
  if (msgs.length) {
    sendNext();
  } else {
    ws.close(1000, 'done');
  }
});
ws.on('message', (data, isBinary) => {
  const m = msgs[i];
  if (isBinary !== (m.type === 'binary')) {
    return finish({ error: `message ${i}: type ${isBinary ? 'binary' : 'text'}` });
  }
  const want = Buffer.isBuffer(sent) ? sent : Buffer.from(sent);
  if (!data.equals(want)) {
    return finish({ error: `message ${i} (${m.type} ${m.content} ${m.size} bytes): ` +
                           `echo differs (${data.length} bytes back)` });
  }
  i++;
  result.echoed = i;
  if (i < msgs.length) {
    sendNext();
  } else {
    ws.close(1000, 'done');
  }
});
ws.on('close', (code, reason) => {
  if (i !== msgs.length) {
    return finish({ error: `closed (${code} ${reason}) after ${i}/${msgs.length} messages`,
                    code });
  }
  finish({ code, reason: reason.toString() });
});
ws.on('error', (e) => finish({ error: e.message }));
