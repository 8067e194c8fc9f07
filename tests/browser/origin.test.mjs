#!/usr/bin/env node
// Browser test of the origin check: a page refused a cross-origin WebSocket.
//
//   node tests/browser/origin.test.mjs PAGE_URL SAME_WS_URL CROSS_WS_URL OPEN_WS_URL
//
// Loads PAGE_URL in Debian's Chromium (playwright-core) and, from that page, opens
//   SAME_WS_URL   the page's own origin: must open and echo;
//   CROSS_WS_URL  another origin (same server, other host name) on a location with the
//                 default same-origin policy: the handshake is refused, so the browser
//                 never fires open, fires error, and closes with 1006;
//   OPEN_WS_URL   that other origin on a location with WebSocketAllowedOrigins *: opens.
// Prints "ok ..." lines and "N passed, M failed"; exit status 0 only if all passed.
import { StepFailure, finish, launch, ok } from './lib.mjs';

const [pageUrl, sameUrl, crossUrl, openUrl] = process.argv.slice(2);
if (!openUrl) {
  console.error('usage: node origin.test.mjs PAGE_URL SAME_WS_URL CROSS_WS_URL OPEN_WS_URL');
  process.exit(2);
}

// In the page: open a WebSocket, echo one message if it opens, report what happened.
function attempt(url) {
  return new Promise((resolve) => {
    const out = { opened: false, error: false, echoed: null, code: null };
    const ws = new WebSocket(url);
    const timer = setTimeout(() => resolve({ ...out, timeout: true }), 10000);
    ws.onopen = () => { out.opened = true; ws.send('origin check'); };
    ws.onmessage = (e) => { out.echoed = e.data; ws.close(1000); };
    ws.onerror = () => { out.error = true; };
    ws.onclose = (e) => { out.code = e.code; clearTimeout(timer); resolve(out); };
  });
}

let step = 'launch', session = {};
try {
  session = await launch();
  const page = await session.context.newPage();
  step = 'load the page';
  const resp = await page.goto(pageUrl);
  if (!resp || resp.status() !== 200) throw new StepFailure(`page answered ${resp && resp.status()}`);
  ok(`page ${pageUrl} loaded (origin ${new URL(pageUrl).origin})`);
  for (const [what, url, want] of [['same origin', sameUrl, true], ['cross origin', crossUrl, false],
    ['cross origin, allowed by *', openUrl, true]]) {
    step = what;
    const r = await page.evaluate(attempt, url);
    const desc = JSON.stringify(r);
    if (want && !(r.opened && r.echoed === 'origin check' && r.code === 1000)) {
      throw new StepFailure(`${url}: expected open and echo, got ${desc}`);
    }
    if (!want && (r.opened || !r.error || r.code !== 1006 || r.timeout)) {
      throw new StepFailure(`${url}: expected a refused handshake (error, 1006), got ${desc}`);
    }
    ok(`${what}: ${url} ${want ? 'opened and echoed' : 'refused'} ${desc}`);
  }
  process.exit(await finish({ ...session }));
} catch (e) {
  process.exit(await finish({ ...session, failure: e, step }));
}
