#!/usr/bin/env node
// Browser test of the echo page (htdocs/index.html) against a live mod_websocket /echo.
//
//   node tests/browser/echo.test.mjs URL [SCREENSHOT.png] [--location WS_URL]
//
// URL is the page, e.g. http://127.0.0.1:8080/index.html or https://127.0.0.1:8081/.
// Drives Debian's Chromium (/usr/bin/chromium, or $CHROMIUM) through playwright-core, by the
// page's real controls only, and waits on the log's text (no sleeps).  Exits 0 when every
// step passed, 1 with a message naming the failed step otherwise.  The screenshot is taken
// in both cases when a path is given.
import { StepFailure, finish, launch, ok } from './lib.mjs';

const args = process.argv.slice(2);
let pageUrl = null, shot = null, wsOverride = null;
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--location') wsOverride = args[++i];
  else if (args[i] === '-h' || args[i] === '--help') {
    console.log('usage: node echo.test.mjs URL [SCREENSHOT.png] [--location WS_URL]');
    process.exit(0);
  } else if (!pageUrl) pageUrl = args[i];
  else if (!shot) shot = args[i];
  else { console.error(`unexpected argument ${args[i]}`); process.exit(2); }
}
if (!pageUrl) { console.error('usage: node echo.test.mjs URL [SCREENSHOT.png] [--location WS_URL]'); process.exit(2); }

const BIG = 4 * 1024 * 1024;
const MIB = 1024 * 1024;
const STEP_TIMEOUT = 15000;
const BIG_TIMEOUT = 90000;

// the page connects beside itself: /echo for /, /websocket-demo/echo for /websocket-demo/
const expectedLocation = (() => {
  const u = new URL('echo', pageUrl);
  return `${u.protocol === 'https:' ? 'wss:' : 'ws:'}//${u.host}${u.pathname}`;
})();

let step = 'start';


// Waits until a line of #log matches `want` (a regex source) and returns that line's text.
// Fails as soon as a line matches `bad` instead (an ERROR, a mismatch, an unexpected
// disconnect), so a broken server shows up at once, with the line that says why.
async function waitLog(page, want, { bad = '^(ERROR:|DISCONNECTED)|DIFFERS|\\[expected', timeout = STEP_TIMEOUT, from = 0 } = {}) {
  let handle;
  try {
    handle = await page.waitForFunction(({ want, bad, from }) => {
      const lines = [...document.querySelectorAll('#log .line .msg')].slice(from).map((e) => e.textContent);
      const w = new RegExp(want), b = bad ? new RegExp(bad) : null;
      for (const l of lines) {
        if (w.test(l)) return { ok: true, line: l };
        if (b && b.test(l)) return { ok: false, line: l };
      }
      return false;
    }, { want, bad, from }, { timeout, polling: 'raf' });
  } catch (e) {
    if (e.name !== 'TimeoutError') throw e;
    const log = await logLines(page).catch(() => []);
    throw new StepFailure(`timed out after ${timeout} ms waiting for a log line /${want}/; log:\n  ${log.join('\n  ')}`);
  }
  const r = await handle.jsonValue();
  if (!r.ok) throw new StepFailure(`expected /${want}/ but the log says: ${r.line}`);
  return r.line;
}

async function logLines(page) {
  return page.$$eval('#log .line .msg', (els) => els.map((e) => e.textContent));
}
async function logCount(page) {
  return page.$$eval('#log .line', (els) => els.length);
}
function reEscape(s) { return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'); }

async function main() {
  let context = null, profile = null, page = null, failure = null;
  const pageErrors = [];
  try {
    step = 'launch chromium';
    ({ context, profile } = await launch({ viewport: { width: 1000, height: 1150 } }));
    page = context.pages()[0] || await context.newPage();
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(`console: ${m.text()}`); });

    step = 'load page';
    const resp = await page.goto(pageUrl, { waitUntil: 'load', timeout: STEP_TIMEOUT });
    if (!resp || !resp.ok()) throw new StepFailure(`GET ${pageUrl} -> ${resp ? resp.status() : 'no response'}`);
    await page.locator('#location').waitFor({ timeout: STEP_TIMEOUT });
    ok(`page loaded (${pageUrl})`);

    step = 'default location';
    const loc = await page.inputValue('#location');
    if (wsOverride) {
      await page.fill('#location', wsOverride);
    } else if (loc !== expectedLocation) {
      throw new StepFailure(`#location defaults to ${loc}, expected ${expectedLocation}`);
    }
    ok(`location ${wsOverride || loc}`);

    step = 'connect';
    let from = await logCount(page);
    await page.click('#connect');
    const connected = await waitLog(page, '^CONNECTED to ', { from });
    const m = /\(protocol: "([^"]*)", extensions: "([^"]*)"\)$/.exec(connected);
    if (!m) throw new StepFailure(`CONNECTED line lacks protocol/extensions: ${connected}`);
    // No subprotocol was offered, so the server must not have chosen one (RFC 6455 4.1).
    // Chromium offers permessage-deflate and the server accepts it by default
    // (WebSocketCompression on); it always answers server_no_context_takeover.
    if (m[1] !== '') throw new StepFailure(`server selected subprotocol "${m[1]}" that was never offered`);
    if (!/^permessage-deflate(;|$)/.test(m[2])) throw new StepFailure(`permessage-deflate was not negotiated: extensions "${m[2]}"`);
    if (!/(^|;)\s*server_no_context_takeover\s*(;|$)/.test(m[2])) throw new StepFailure(`extensions "${m[2]}" lack server_no_context_takeover`);
    if (!(await page.isEnabled('#send'))) throw new StepFailure('#send still disabled after CONNECTED');
    ok(`connected: protocol "${m[1]}", extensions "${m[2]}"`);

    step = 'text echo';
    const text = `héllo wörld ✓ 🚀 ${Date.now()}`;
    await page.fill('#message', text);
    from = await logCount(page);
    await page.click('#send');
    await waitLog(page, `^RESPONSE: ${reEscape(text)}$`, { from });
    ok('text message echoed');

    step = 'long text echo';
    const long = 'mod_websocket ✓ '.repeat(5000);          // 80000 chars: 64-bit length form
    await page.fill('#message', long);
    from = await logCount(page);
    await page.click('#send');
    await waitLog(page, `^RESPONSE: ${reEscape(long.slice(0, 1000))}… \\(${long.length} characters\\)$`, { from });
    ok(`${long.length}-character text message echoed`);

    step = '1 MiB compressible text echo';
    // Exactly 1 MiB of UTF-8 (multi-byte characters included), put in the page's own text
    // box and sent with its Send button; compressed both ways over permessage-deflate.  The
    // page compares the echo with what it sent and logs DIFFERS on any difference.
    // page.fill() would type 1 MiB through the input pipeline (minutes), so the box's value
    // is set directly, with the input event that typing would fire.
    const unit = 'permessage-deflate ✓ größer 日本 ';
    const unitBytes = new TextEncoder().encode(unit).length;
    const mib = unit.repeat(Math.floor(MIB / unitBytes)) + 'x'.repeat(MIB % unitBytes);
    if (new TextEncoder().encode(mib).length !== MIB) throw new StepFailure('1 MiB text has the wrong size');
    await page.$eval('#message', (el, v) => {
      el.value = v;
      el.dispatchEvent(new Event('input', { bubbles: true }));
    }, mib);
    from = await logCount(page);
    await page.click('#send');
    await waitLog(page, `^RESPONSE: ${reEscape(mib.slice(0, 1000))}… \\(${mib.length} characters\\)$`, { from, timeout: BIG_TIMEOUT });
    ok(`1 MiB text message (${mib.length} characters) echoed`);

    step = 'binary checkbox echo';
    await page.check('#binary');
    await page.fill('#message', 'binary ✓');
    from = await logCount(page);
    await page.click('#send');
    await waitLog(page, '^RESPONSE: 10 bytes binary, matches', { from });
    await page.uncheck('#binary');
    ok('binary message echoed');

    step = '4 MiB random binary echo';
    await page.fill('#blob-size', String(BIG));
    from = await logCount(page);
    await page.click('#send-blob');
    await waitLog(page, `^SENT: ${BIG} bytes binary \\(random\\)$`, { from });
    const big = await waitLog(page, `^RESPONSE: ${BIG} bytes binary, matches`, { from, timeout: BIG_TIMEOUT });
    ok(big.replace(/^RESPONSE: /, '4 MiB: '));

    step = 'empty text echo';
    await page.fill('#message', '');
    from = await logCount(page);
    await page.click('#send');
    await waitLog(page, '^RESPONSE: $', { from });
    ok('empty text message echoed');

    step = 'disconnect';
    from = await logCount(page);
    await page.click('#disconnect');
    const closed = await waitLog(page, '^DISCONNECTED \\(code (1000|1005),', { from, bad: '^ERROR:|^DISCONNECTED' });
    if (!/, clean\)$/.test(closed)) throw new StepFailure(`close was not clean: ${closed}`);
    await page.waitForSelector('#connect:not([disabled])', { timeout: STEP_TIMEOUT });
    ok(closed);

    step = 'reconnect';
    from = await logCount(page);
    await page.click('#connect');
    await waitLog(page, '^CONNECTED to ', { from });
    await page.fill('#message', 'again');
    await page.click('#send');
    await waitLog(page, '^RESPONSE: again$', { from });
    await page.click('#disconnect');
    await waitLog(page, '^DISCONNECTED \\(code (1000|1005),', { from, bad: '^ERROR:|^DISCONNECTED' });
    ok('reconnected, echoed, disconnected');

    step = 'page errors';
    const all = await logLines(page);
    const errs = all.filter((l) => /^ERROR:|DIFFERS|\[expected/.test(l));
    if (errs.length) throw new StepFailure(`log has error lines:\n  ${errs.join('\n  ')}`);
    if (pageErrors.length) throw new StepFailure(`page errors:\n  ${pageErrors.join('\n  ')}`);
    ok('no page or log errors');
  } catch (e) {
    failure = e;
  }
  return finish({ context, profile, shots: [[page, shot]], failure, step });
}

main().then((code) => process.exit(code), (e) => { console.error(`FAIL: ${e.stack || e}`); process.exit(1); });
