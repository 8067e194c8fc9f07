// A Node `ws` client for the integration tests (Debian's node-ws 8.x:
// NODE_PATH=/usr/share/nodejs node client.js '<json>').
//
// The JSON argument: {"scenario": NAME, "url": ..., "ca": cert path or null, ...}
//   echo           {"messages": [{"type": "text"|"binary", "size": N}, ...]}
//                  sends each, checks each echo (type and bytes), closes with 1000
//   subprotocol    {"protocols": [...]}: reports the negotiated protocol and the hello
//   server-close   {"command": "close:4001:bye"} (to the probe): reports code/reason
//   client-close   {"code": 4002, "reason": "..."}: reports the code/reason the server
//                  answered with
//   refused        reports the HTTP status of a refused handshake
// Prints one JSON line {"ok": bool, "error": str|null, ...results} and exits 0 if ok.
'use strict';

const fs = require('fs');
const crypto = require('crypto');
const WebSocket = require('ws');

const cfg = JSON.parse(process.argv[2]);
const opts = { perMessageDeflate: false, maxPayload: 0 };
if (cfg.ca) {
  opts.ca = fs.readFileSync(cfg.ca);
}
if (cfg.origin) {
  opts.origin = cfg.origin;
}

let done = false;
function finish(result) {
  if (done) {
    return;
  }
  done = true;
  process.stdout.write(JSON.stringify(Object.assign({ ok: !result.error, error: null },
    result)) + '\n');
  process.exit(result.error ? 1 : 0);
}

setTimeout(() => finish({ error: `deadline of ${cfg.deadline_ms || 20000} ms passed` }),
  cfg.deadline_ms || 20000);

function payload(m, i) {
  if (m.type === 'text') {
    // deterministic, multi-byte characters included, exactly m.size bytes
    const unit = `€${i}-abc`;
    const count = Math.floor(m.size / Buffer.byteLength(unit));
    return unit.repeat(count) + 'x'.repeat(m.size - count * Buffer.byteLength(unit));
  }
  return crypto.randomBytes(m.size);
}

function scenarioEcho() {
  const ws = new WebSocket(cfg.url, cfg.protocols || [], opts);
  const msgs = cfg.messages;
  let i = 0;
  let sent = null;
  const sendNext = () => {
    sent = payload(msgs[i], i);
    ws.send(sent, { binary: msgs[i].type === 'binary' });
  };
  ws.on('open', () => {
    if (cfg.skip_hello) {
      return;
    }
    sendNext();
  });
  ws.on('message', (data, isBinary) => {
    if (cfg.skip_hello) {
      cfg.skip_hello = false;     // the probe's hello
      sendNext();
      return;
    }
    const m = msgs[i];
    if (isBinary !== (m.type === 'binary')) {
      return finish({ error: `message ${i}: type ${isBinary ? 'binary' : 'text'}` });
    }
    const want = Buffer.isBuffer(sent) ? sent : Buffer.from(sent);
    if (!data.equals(want)) {
      return finish({ error: `message ${i} (${m.size} bytes): echo differs ` +
                             `(${data.length} bytes back)` });
    }
    i++;
    if (i < msgs.length) {
      sendNext();
    } else {
      ws.close(1000, 'done');
    }
  });
  ws.on('close', (code, reason) => {
    if (i !== msgs.length) {
      return finish({ error: `closed (${code}) after ${i}/${msgs.length} messages` });
    }
    finish({ echoed: i, code, reason: reason.toString() });
  });
  ws.on('error', (e) => finish({ error: e.message }));
}

function scenarioSubprotocol() {
  const ws = new WebSocket(cfg.url, cfg.protocols, opts);
  ws.on('message', (data) => {
    const hello = JSON.parse(data.toString());
    const protocol = ws.protocol;
    ws.close(1000);
    ws.on('close', () => finish({ protocol, hello }));
  });
  ws.on('error', (e) => finish({ error: e.message }));
}

function scenarioServerClose() {
  const ws = new WebSocket(cfg.url, [], opts);
  let hello = false;
  ws.on('message', () => {
    if (!hello) {
      hello = true;
      ws.send(cfg.command);
    }
  });
  ws.on('close', (code, reason) => finish({ code, reason: reason.toString() }));
  ws.on('error', (e) => finish({ error: e.message }));
}

function scenarioClientClose() {
  const ws = new WebSocket(cfg.url, [], opts);
  ws.on('open', () => ws.close(cfg.code, cfg.reason));
  ws.on('close', (code, reason) => finish({ code, reason: reason.toString() }));
  ws.on('error', (e) => finish({ error: e.message }));
}

function scenarioRefused() {
  const ws = new WebSocket(cfg.url, [], opts);
  ws.on('unexpected-response', (req, res) => finish({ status: res.statusCode }));
  ws.on('open', () => finish({ error: 'the handshake succeeded' }));
  ws.on('error', (e) => finish({ error: e.message }));
}

const scenarios = {
  echo: scenarioEcho,
  subprotocol: scenarioSubprotocol,
  'server-close': scenarioServerClose,
  'client-close': scenarioClientClose,
  refused: scenarioRefused,
};
if (!scenarios[cfg.scenario]) {
  finish({ error: `unknown scenario ${cfg.scenario}` });
} else {
  scenarios[cfg.scenario]();
}
