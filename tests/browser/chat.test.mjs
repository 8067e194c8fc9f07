#!/usr/bin/env node
// Browser test of the chat page (htdocs/chat.html) against a live mod_websocket /chat:
// two Chromium pages join one room and talk to each other.
//
//   node tests/browser/chat.test.mjs URL [SCREENSHOT.png]
//
// URL is the page, e.g. http://127.0.0.1:8080/chat.html.  Drives Debian's Chromium
// (/usr/bin/chromium, or $CHROMIUM) through playwright-core, by the page's controls only,
// waiting on what the pages show (no sleeps).  Exits 0 when every step passed, 1 with a
// message naming the failed step otherwise.  Screenshots of both pages are taken in both
// cases when a path is given (the second page's name ends in -2.png).
import { StepFailure, finish, launch, ok } from './lib.mjs';

const [pageUrl, shot] = process.argv.slice(2);
if (!pageUrl) { console.error('usage: node chat.test.mjs URL [SCREENSHOT.png]'); process.exit(2); }

const STEP_TIMEOUT = 15000;
const room = `browser-${Date.now() % 100000}`;

let step = 'start';

// Waits until #messages of `page` has a line of `type` whose .from and .text equal the
// given values (undefined: any); returns {from, text, cls}.  Fails at once on an error line.
async function waitLine(page, type, from, text, { timeout = STEP_TIMEOUT } = {}) {
  let handle;
  try {
    handle = await page.waitForFunction(({ type, from, text }) => {
      for (const el of document.querySelectorAll('#messages .chat-line')) {
        const f = el.querySelector('.from').textContent, t = el.querySelector('.text').textContent;
        if (el.dataset.type === 'error') return { error: t };
        if (el.dataset.type === type && (from === null || f === from) && (text === null || t === text)) {
          return { from: f, text: t, cls: el.className, html: el.querySelector('.text').innerHTML };
        }
      }
      return false;
    }, { type, from: from ?? null, text: text ?? null }, { timeout, polling: 'raf' });
  } catch (e) {
    if (e.name !== 'TimeoutError') throw e;
    throw new StepFailure(`timed out after ${timeout} ms waiting for a ${type} line ` +
      `(from ${JSON.stringify(from)}, text ${JSON.stringify(text)}); lines:\n  ${(await lines(page)).join('\n  ')}`);
  }
  const r = await handle.jsonValue();
  if (r.error) throw new StepFailure(`the page shows an error: ${r.error}`);
  return r;
}

async function lines(page) {
  return page.$$eval('#messages .chat-line', (els) => els.map((e) =>
    `[${e.dataset.type}] ${e.querySelector('.ts').textContent} ${e.querySelector('.from').textContent}: ${e.querySelector('.text').textContent}`))
    .catch(() => []);
}

async function open(context, errors, name) {
  const page = await context.newPage();
  page.on('pageerror', (e) => errors.push(`${name}: ${e}`));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`${name} console: ${m.text()}`); });
  const resp = await page.goto(pageUrl, { waitUntil: 'load', timeout: STEP_TIMEOUT });
  if (!resp || !resp.ok()) throw new StepFailure(`GET ${pageUrl} -> ${resp ? resp.status() : 'no response'}`);
  return page;
}

async function connectAs(page, nick) {
  await page.fill('#room', room);
  await page.fill('#nickname', nick);
  await page.click('#connect');
  await page.waitForFunction((n) => document.getElementById('me').textContent === n, nick,
    { timeout: STEP_TIMEOUT });
  await waitLine(page, 'join', nick, `joined ${room}`);
  const roomShown = await page.textContent('#room-name');
  if (roomShown !== room) throw new StepFailure(`#room-name shows ${roomShown}, expected ${room}`);
  const status = await page.textContent('#status');
  if (status !== 'connected') throw new StepFailure(`#status is "${status}"`);
}

async function say(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

async function main() {
  let context = null, profile = null, alice = null, bob = null, failure = null;
  const errors = [];
  try {
    step = 'launch chromium';
    ({ context, profile } = await launch({ viewport: { width: 1000, height: 1100 } }));

    step = 'load pages';
    alice = await open(context, errors, 'alice');
    bob = await open(context, errors, 'bob');
    const nav = await alice.$$eval('#nav a', (as) => as.map((a) => `${a.getAttribute('href')}${a.classList.contains('active') ? '*' : ''}`));
    if (nav.join(' ') !== 'index.html chat.html* ticker.html news.html') throw new StepFailure(`nav is ${nav.join(' ')}`);
    ok(`two pages loaded (${pageUrl}), nav ${nav.join(' ')}`);

    step = 'alice joins';
    await connectAs(alice, 'Alice');
    const endpoint = await alice.textContent('#endpoint');
    const want = `${new URL(pageUrl).protocol === 'https:' ? 'wss' : 'ws'}://${new URL(pageUrl).host}/chat/${room}?name=Alice`;
    if (endpoint !== want) throw new StepFailure(`endpoint ${endpoint}, expected ${want}`);
    ok(`alice joined ${endpoint}`);

    step = 'bob joins';
    await connectAs(bob, 'Bob');
    await waitLine(alice, 'join', 'Bob', `joined ${room}`);
    ok('bob joined; alice saw it');

    step = 'alice to bob';
    const hello = `Hello Bob <b>not bold</b> & "quotes" ✓ ${Date.now()}`;
    await say(alice, hello);
    const atBob = await waitLine(bob, 'message', 'Alice', hello);
    if (/<b>/.test(atBob.html)) throw new StepFailure(`the message was rendered as HTML: ${atBob.html}`);
    const atAlice = await waitLine(alice, 'message', 'Alice', hello);
    if (!/\bmine\b/.test(atAlice.cls)) throw new StepFailure(`own message not marked mine: ${atAlice.cls}`);
    ok('bob got alice\'s message (as text, not HTML); alice sees it as hers');

    step = 'bob to alice';
    const reply = `Hi Alice 🚀 ${Date.now()}`;
    await say(bob, reply);
    await waitLine(alice, 'message', 'Bob', reply);
    await waitLine(bob, 'message', 'Bob', reply);
    ok('alice got bob\'s reply');

    step = 'bob renames';
    await bob.fill('#nickname', 'Robert');
    await bob.click('#set-name');
    await waitLine(alice, 'nick', 'Bob', 'is now known as Robert');
    await bob.waitForFunction(() => document.getElementById('me').textContent === 'Robert', null, { timeout: STEP_TIMEOUT });
    await say(bob, 'new name');
    await waitLine(alice, 'message', 'Robert', 'new name');
    ok('rename seen by alice, messages come from the new name');

    step = 'bob leaves';
    await bob.click('#disconnect');
    await bob.waitForFunction(() => document.getElementById('status').textContent === 'disconnected', null, { timeout: STEP_TIMEOUT });
    await waitLine(alice, 'leave', 'Robert', `left ${room}`);
    ok('bob disconnected; alice saw him leave');

    // Last: from here on alice's list has an error line, which waitLine treats as failure.
    step = 'too long';
    await say(alice, 'x'.repeat(1001));
    const err = await alice.waitForFunction(() => {
      const e = document.querySelector('#messages .chat-error .text');
      return e && e.textContent;
    }, null, { timeout: STEP_TIMEOUT });
    if ((await err.jsonValue()) !== 'a message has at most 1000 bytes') throw new StepFailure(`error line: ${await err.jsonValue()}`);
    ok('a too long message is refused with an error line for its sender');

    step = 'page errors';
    if (errors.length) throw new StepFailure(`page errors:\n  ${errors.join('\n  ')}`);
    ok('no page errors');
  } catch (e) {
    failure = e;
  }
  return finish({ context, profile, shots: [[alice, shot], [bob, shot && shot.replace(/\.png$/, '-2.png')]], failure, step });
}

main().then((code) => process.exit(code), (e) => { console.error(`FAIL: ${e.stack || e}`); process.exit(1); });
