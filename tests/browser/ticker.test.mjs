#!/usr/bin/env node
// Browser test of the ticker page (htdocs/ticker.html) against a live mod_websocket /ticker.
//
//   node tests/browser/ticker.test.mjs URL [SCREENSHOT.png]
//
// URL is the page, e.g. http://127.0.0.1:8080/ticker.html (?transport=eventsource: the
// board from the ticker's channel at /sub/ticker, over that transport).  Drives Debian's Chromium
// (/usr/bin/chromium, or $CHROMIUM) through playwright-core and waits on what the page
// shows (no sleeps): the board connects by itself, fills with the server's symbols and
// updates; prices are coloured green (up) and red (down).  Exits 0 when every step
// passed, 1 with a message naming the failed step otherwise.
import { StepFailure, finish, launch, ok } from './lib.mjs';

const [pageUrl, shot] = process.argv.slice(2);
if (!pageUrl) { console.error('usage: node ticker.test.mjs URL [SCREENSHOT.png]'); process.exit(2); }

const STEP_TIMEOUT = 15000;
const UPDATES = 3;
const GREEN = 'rgb(27, 127, 59)', RED = 'rgb(198, 40, 40)';   // --ok, --err (light scheme)

let step = 'start';

const updates = (page) => page.textContent('#updates').then(Number);

async function waitUpdates(page, n) {
  try {
    await page.waitForFunction((n) => Number(document.getElementById('updates').textContent) >= n,
      n, { timeout: STEP_TIMEOUT, polling: 'raf' });
  } catch (e) {
    if (e.name !== 'TimeoutError') throw e;
    throw new StepFailure(`fewer than ${n} updates after ${STEP_TIMEOUT} ms (#updates ${await updates(page)}, ` +
      `#status ${await page.textContent('#status')})`);
  }
}

// Every row: symbol, price text, the sign classes and computed colours of change and pct.
async function board(page) {
  return page.$$eval('#quote-rows tr', (trs) => trs.map((tr) => {
    const cell = (k) => tr.querySelector(`.${k}`);
    const info = (k) => ({ text: cell(k).textContent, cls: cell(k).className, color: getComputedStyle(cell(k)).color });
    return { id: tr.id, symbol: cell('symbol').textContent, price: cell('price').textContent,
      priceCls: cell('price').className, change: info('change'), pct: info('pct') };
  }));
}

async function main() {
  let context = null, profile = null, page = null, failure = null;
  const errors = [];
  try {
    step = 'launch chromium';
    ({ context, profile } = await launch({ colorScheme: 'light', viewport: { width: 1000, height: 900 } }));
    page = context.pages()[0] || await context.newPage();
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });

    step = 'load page';
    const resp = await page.goto(pageUrl, { waitUntil: 'load', timeout: STEP_TIMEOUT });
    if (!resp || !resp.ok()) throw new StepFailure(`GET ${pageUrl} -> ${resp ? resp.status() : 'no response'}`);
    const u = new URL(pageUrl);
    const via = u.searchParams.get('transport');     // the ticker's channel, by channel.js
    const want = via ? `${u.protocol}//${u.host}/sub/ticker` : `${u.protocol === 'https:' ? 'wss' : 'ws'}://${u.host}/ticker`;
    const loc = await page.inputValue('#location');
    if (loc !== want) throw new StepFailure(`#location is ${loc}, expected ${want}`);
    ok(`page loaded (${pageUrl}), location ${loc}`);

    step = 'snapshot';
    await waitUpdates(page, 1);
    const path = await page.textContent('#via');
    const name = { websocket: 'WebSocket', eventsource: 'EventSource', longpoll: 'long-poll' }[via];
    if (via ? path !== `channel /sub/ticker over ${name}` : path !== "the ticker plugin's WebSocket") {
      throw new StepFailure(`#via shows "${path}"`);
    }
    const first = await board(page);
    if (first.length !== 8) throw new StepFailure(`expected the 8 default symbols, got ${first.map((r) => r.symbol)}`);
    ok(`snapshot: ${first.map((r) => `${r.symbol} ${r.price}`).join(', ')}`);

    step = `${UPDATES} updates`;
    await waitUpdates(page, 1 + UPDATES);
    const rows = await board(page);
    const moved = rows.filter((r, i) => r.price !== first[i].price);
    if (!moved.length) throw new StepFailure('no price changed over the updates');
    ok(`${await updates(page)} updates; ${moved.length} of ${rows.length} prices moved`);

    step = 'rendering';
    let up = 0, down = 0;
    for (const r of rows) {
      if (r.id !== `row-${r.symbol}`) throw new StepFailure(`row id ${r.id} for ${r.symbol}`);
      if (!/^\d+\.\d+$/.test(r.price)) throw new StepFailure(`${r.symbol}: price "${r.price}"`);
      if (!/^[+-]?\d+\.\d+%$/.test(r.pct.text)) throw new StepFailure(`${r.symbol}: pct "${r.pct.text}"`);
      for (const c of [r.change, r.pct]) {
        const v = parseFloat(c.text);
        const cls = v > 0 ? 'up' : v < 0 ? 'down' : 'flat';
        if (!c.cls.split(' ').includes(cls)) throw new StepFailure(`${r.symbol}: "${c.text}" has class "${c.cls}", expected ${cls}`);
        if (cls === 'up' && c.color !== GREEN) throw new StepFailure(`${r.symbol}: up is ${c.color}, not green`);
        if (cls === 'down' && c.color !== RED) throw new StepFailure(`${r.symbol}: down is ${c.color}, not red`);
        if (c === r.change) { up += cls === 'up'; down += cls === 'down'; }
      }
    }
    if (up + down === 0) throw new StepFailure('no symbol is shown as up or down');
    const flashes = rows.filter((r) => /flash-(up|down)/.test(r.priceCls)).length;
    if (!flashes) throw new StepFailure('no price flashed on a change');
    ok(`colours: ${up} up (green), ${down} down (red); ${flashes} prices flashed`);

    step = 'currency board';
    const fx = await page.$$eval('#fx-rows tr', (trs) => trs.map((tr) => ({ id: tr.id,
      pair: tr.querySelector('.pair').textContent, bid: tr.querySelector('.bid').textContent,
      ask: tr.querySelector('.ask').textContent, spread: tr.querySelector('.spread').textContent })));
    const pairs = fx.map((r) => r.pair).join(' ');
    if (pairs !== 'EUR/USD GBP/USD USD/JPY BTC/USD') throw new StepFailure(`currency board pairs: ${pairs}`);
    for (const r of fx) {
      const sym = r.pair.replace('/', '');
      if (r.id !== `fx-${sym}` || !(Number(r.bid) < Number(r.ask))) throw new StepFailure(`${r.pair}: ${JSON.stringify(r)}`);
      const pips = /JPY|EUR|GBP/.test(r.pair);
      if (pips ? !/^\d+\.\d pips$/.test(r.spread) : !/^\d+\.\d+$/.test(r.spread)) throw new StepFailure(`${r.pair}: spread "${r.spread}"`);
    }
    ok(`currency board: ${fx.map((r) => `${r.pair} ${r.bid}/${r.ask} (${r.spread})`).join(', ')}`);

    step = 'delay';
    const delay = await page.textContent('#delay');
    const m = /^(-?\d+\.\d) ms$/.exec(delay);
    if (!m || Number(m[1]) < -5 || Number(m[1]) > 10000) throw new StepFailure(`#delay shows "${delay}"`);
    const last = await page.textContent('#last-update');
    if (!/^\d\d:\d\d:\d\d\.\d\d\d$/.test(last)) throw new StepFailure(`#last-update shows "${last}"`);
    ok(`last update ${last}, delay ${delay}, p50/max ${await page.textContent('#delay-stats')}`);

    step = 'disconnect and reconnect';
    await page.click('#disconnect');
    await page.waitForFunction(() => document.getElementById('status').textContent === 'disconnected', null, { timeout: STEP_TIMEOUT });
    const before = await updates(page);
    await page.click('#connect');
    await waitUpdates(page, before + 2);
    ok(`reconnected, updates go on (${await updates(page)})`);

    step = 'page errors';
    if (errors.length) throw new StepFailure(`page errors:\n  ${errors.join('\n  ')}`);
    ok('no page errors');
  } catch (e) {
    failure = e;
  }
  return finish({ context, profile, shots: [[page, shot]], failure, step });
}

main().then((code) => process.exit(code), (e) => { console.error(`FAIL: ${e.stack || e}`); process.exit(1); });
