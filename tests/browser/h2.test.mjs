#!/usr/bin/env node
// The echo page over HTTP/2 in Chromium, and its WebSocket: RFC 8441 or not.
//
//   node tests/browser/h2.test.mjs https://127.0.0.1:PORT/
//
// Loads the page (its navigation's nextHopProtocol must be h2), connects the page's own
// WebSocket (wss://.../echo) with its Connect button, echoes a text message, disconnects
// with the Disconnect button.  Prints "page protocol: h2"; whether the WebSocket went over
// an h2 stream (RFC 8441) or a separate HTTP/1.1 connection only the server can tell: its
// session-end line says proto=h2 or proto=http/1.1 (tests/integration/test_ws_860_h2.py).
import { StepFailure, finish, launch, ok } from './lib.mjs';

const pageUrl = process.argv[2];
if (!pageUrl) { console.error('usage: node h2.test.mjs https://HOST:PORT/'); process.exit(2); }
const TIMEOUT = 15000;
let step = 'start';

async function waitLine(page, re) {
  try {
    const h = await page.waitForFunction((src) => {
      const r = new RegExp(src);
      return [...document.querySelectorAll('#log .line .msg')].map((e) => e.textContent)
        .find((l) => r.test(l)) || false;
    }, re, { timeout: TIMEOUT, polling: 'raf' });
    return await h.jsonValue();
  } catch (e) {
    if (e.name !== 'TimeoutError') throw e;
    const log = await page.$$eval('#log .line .msg', (els) => els.map((x) => x.textContent));
    throw new StepFailure(`no log line /${re}/ in ${TIMEOUT} ms; log:\n  ${log.join('\n  ')}`);
  }
}

async function main() {
  let context = null, profile = null, failure = null;
  try {
    step = 'launch chromium';
    ({ context, profile } = await launch());
    const page = context.pages()[0] || await context.newPage();

    step = 'load page over h2';
    const resp = await page.goto(pageUrl, { waitUntil: 'load', timeout: TIMEOUT });
    if (!resp || !resp.ok()) throw new StepFailure(`GET ${pageUrl} -> ${resp ? resp.status() : 'no response'}`);
    const proto = await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
    console.log(`page protocol: ${proto}`);
    if (proto !== 'h2') throw new StepFailure(`the page came over ${proto}, not h2`);
    ok('page loaded over h2');

    step = 'connect';
    await page.click('#connect');
    await waitLine(page, '^CONNECTED to wss://');
    ok('WebSocket connected');

    step = 'echo';
    const text = `over h2 ${Date.now()}`;
    await page.fill('#message', text);
    await page.click('#send');
    await waitLine(page, `^RESPONSE: ${text}$`);
    ok('text echoed');

    step = 'disconnect';
    await page.click('#disconnect');
    await waitLine(page, '^DISCONNECTED');
    ok('disconnected');
  } catch (e) {
    failure = e;
  }
  process.exitCode = await finish({ context, profile, failure, step });
}

main();
