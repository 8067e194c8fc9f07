// Stress client for the probe plugin (Debian's node-ws: NODE_PATH=/usr/share/nodejs).
//
//   node stress.js '{"url": "wss://127.0.0.1:PORT/probe", "ca": "/path/cert.pem",
//                    "connections": 100, "flood": 20000, "size": 64, "echoes": 200,
//                    "deadline_ms": 120000}'
//
// Every connection waits for the probe's hello, sends "flood:N:SIZE", and while the
// flood arrives sends its own text messages (one every N/echoes flood messages), which
// the probe echoes.  Checked: every flood message arrives, in order (seq 0..N-1), with
// the right size and filler (seq & 0xff); "flood-done:N" comes after the last one; every
// echo arrives, in order, intact; the close handshake completes with 1000.
// Prints one JSON line: {"ok": bool, "errors": [...], "flood_msgs", "echo_msgs", "bytes",
// "seconds", ...} and exits 0 only if ok.
'use strict';

const fs = require('fs');
const WebSocket = require('ws');

const cfg = JSON.parse(process.argv[2]);
const N = cfg.flood;
const SIZE = cfg.size;
const ECHOES = cfg.echoes;
const CONNS = cfg.connections;
const EVERY = Math.max(1, Math.floor(N / Math.max(1, ECHOES)));
const opts = { perMessageDeflate: false, maxPayload: 0 };
if (cfg.ca) {
  opts.ca = fs.readFileSync(cfg.ca);
}

const fills = [];
for (let i = 0; i < 256; i++) {
  fills.push(Buffer.alloc(Math.max(0, SIZE - 8), i));
}

const errors = [];
let floodMsgs = 0;
let echoMsgs = 0;
let bytes = 0;
let finished = 0;
const start = Date.now();

function fail(id, msg) {
  if (errors.length < 50) {
    errors.push(`conn ${id}: ${msg}`);
  }
}

function echoText(id, i) {
  // varied lengths, non-ASCII included
  return `echo ${id}/${i} ` + 'é'.repeat(i % 7) + 'x'.repeat((i * 37) % 300);
}

function run(id) {
  return new Promise((resolve) => {
    const ws = new WebSocket(cfg.url, [], opts);
    let hello = false;
    let nextSeq = 0;
    let sentEchoes = 0;
    let gotEchoes = 0;
    let floodDone = false;
    let failed = false;
    let closeCode = null;

    const bad = (msg) => {
      if (!failed) {
        failed = true;
        fail(id, msg);
        ws.terminate();
      }
    };

    const sendEcho = () => {
      if (sentEchoes < ECHOES) {
        ws.send(echoText(id, sentEchoes++));
      }
    };

    const maybeClose = () => {
      if (floodDone && gotEchoes === ECHOES) {
        ws.close(1000, 'done');
      }
    };

    ws.on('message', (data, isBinary) => {
      bytes += data.length;
      if (!hello) {
        if (isBinary) {
          return bad('first message is binary, expected the hello');
        }
        hello = true;
        ws.send(`flood:${N}:${SIZE}`);
        sendEcho();
        return;
      }
      if (isBinary) {
        if (floodDone) {
          return bad('binary message after flood-done');
        }
        if (data.length !== SIZE) {
          return bad(`flood message ${nextSeq}: ${data.length} bytes, expected ${SIZE}`);
        }
        const seq = Number(data.readBigUInt64BE(0));
        if (seq !== nextSeq) {
          return bad(`flood out of order: got seq ${seq}, expected ${nextSeq}`);
        }
        if (SIZE > 8 && data.compare(fills[seq & 0xff], 0, SIZE - 8, 8, SIZE) !== 0) {
          return bad(`flood message ${seq}: corrupted filler`);
        }
        nextSeq++;
        floodMsgs++;
        if (nextSeq % EVERY === 0) {
          sendEcho();
        }
        return;
      }
      const text = data.toString('utf8');
      if (text.startsWith('flood-done:')) {
        if (text !== `flood-done:${N}` || nextSeq !== N) {
          return bad(`${text} after ${nextSeq} flood messages`);
        }
        floodDone = true;
        while (sentEchoes < ECHOES) {
          sendEcho();
        }
        return maybeClose();
      }
      const want = echoText(id, gotEchoes);
      if (text !== want) {
        return bad(`echo ${gotEchoes}: got ${JSON.stringify(text.slice(0, 60))}, ` +
                   `expected ${JSON.stringify(want.slice(0, 60))}`);
      }
      gotEchoes++;
      echoMsgs++;
      maybeClose();
    });
    ws.on('close', (code) => {
      closeCode = code;
      if (!failed) {
        if (!floodDone || gotEchoes !== ECHOES) {
          bad(`closed (${code}) early: ${nextSeq}/${N} flood, ${gotEchoes}/${ECHOES} echoes`);
        } else if (code !== 1000) {
          bad(`close code ${code}, expected 1000`);
        }
      }
      finished++;
      resolve(closeCode);
    });
    ws.on('error', (e) => bad(`error: ${e.message}`));
    ws.on('unexpected-response', (req, res) => bad(`HTTP ${res.statusCode}`));
  });
}

const timer = setTimeout(() => {
  errors.push(`deadline of ${cfg.deadline_ms} ms passed: ${finished}/${CONNS} finished, ` +
              `${floodMsgs} flood and ${echoMsgs} echo messages`);
  report();
}, cfg.deadline_ms || 120000);

function report() {
  const seconds = (Date.now() - start) / 1000;
  const ok = errors.length === 0 && floodMsgs === N * CONNS && echoMsgs === ECHOES * CONNS;
  process.stdout.write(JSON.stringify({
    ok, errors, connections: CONNS, finished, flood_msgs: floodMsgs,
    echo_msgs: echoMsgs, bytes, seconds,
  }) + '\n');
  process.exit(ok ? 0 : 1);
}

const all = [];
for (let i = 0; i < CONNS; i++) {
  all.push(run(i));
}
Promise.all(all).then(() => {
  clearTimeout(timer);
  report();
});
