#!/usr/bin/env node
// Browser test of the live news page (htdocs/news.html, htdocs/channel.js) against a real
// httpd serving /pub/news (publisher) and /sub/news (subscriber, newest-only policy).
//
//   node tests/browser/news.test.mjs PAGE_BASE PUB_BASE SHOT_PREFIX [N] [M]
//
// PAGE_BASE: where the pages come from, http://127.0.0.1:PORT or https://127.0.0.1:PORT
// (then HTTP/2 when the server offers it); PUB_BASE: where the test POSTs, the plain
// http://127.0.0.1:PORT of the same server.  The pages are loaded
// through a TCP proxy in this script (same host, another port), so that the test can cut
// their connections like a network drop (every socket reset, new connections refused
// while cut) without touching the server.  Steps, each awaited on what the pages show:
//   1. three pages, forced to websocket, eventsource and longpoll, report that transport
//      and "live"; the server counts 3 subscribers;
//   2. N headlines POSTed to /pub/news appear on all three, the same, in the same
//      (newest first) order, with the ids the server gave;
//   3. the proxy cuts every connection; once each page shows it is reconnecting, M more
//      headlines are POSTed; the proxy lets connections through again; every page
//      reconnects (resuming by id: the proxy saw last_event_id or Last-Event-ID) and
//      shows all N + M headlines, each exactly once, in order;
//   4. one more headline arrives live everywhere;
//   5. auto: a page through this proxy uses WebSocket; through a proxy that resets
//      WebSocket upgrades, EventSource; through one that also resets event streams,
//      long-polling; each shows the next headline;
//   6. pages resuming from an id of another epoch (?last_event_id=1-1) report the gap
//      ("lost") once and show every stored headline;
//   7. the client's id guard drops a message delivered again;
//   8. DELETE /pub/news: the websocket and longpoll pages show the channel ended.
// Screenshots: SHOT_PREFIX-NAME.png for every page (TRANSPORT, auto-TRANSPORT,
// lost-TRANSPORT), before step 8 (or at a failure).  Exits 0 when every step passed.
import net from 'node:net';
import { StepFailure, finish, launch, ok } from './lib.mjs';

const [pageBase, pubBase, shotPrefix, nArg, mArg] = process.argv.slice(2);
if (!pageBase || !pubBase || !shotPrefix) {
  console.error('usage: node news.test.mjs PAGE_BASE PUB_BASE SHOT_PREFIX [N] [M]');
  process.exit(2);
}
const N = Number(nArg || 5), M = Number(mArg || 4);
const TRANSPORTS = ['websocket', 'eventsource', 'longpoll'];
const STEP_TIMEOUT = 20000;
const RUN = Date.now().toString(36);

let step = 'start';
const target = new URL(pageBase);
const TLS = target.protocol === 'https:';      // the proxy sees no request: no sniffing

// ---- a TCP proxy that can drop every connection -------------------------------------
// refuse(request): reset a connection whose request matches, like a proxy that does not
// pass WebSocket upgrades or event streams.
function parseHead(d) {
  const head = d.toString('latin1');
  const m = /^(GET|POST|PUT|DELETE) (\S+) HTTP\/1\.1\r\n/.exec(head);
  if (!m) return null;
  const h = (name) => (new RegExp(`\\r\\n${name}: *([^\\r]*)`, 'i').exec(head) || [])[1] || '';
  return { path: m[2], lastEventId: h('Last-Event-ID'), accept: h('Accept'),
           upgrade: h('Upgrade').toLowerCase() };
}

function startProxy(target, refuse = null) {
  const socks = new Set();
  const requests = [];              // request heads seen, for the resume check
  let cut = false;
  const track = (s) => { socks.add(s); s.on('close', () => socks.delete(s)); };
  const server = net.createServer((c) => {
    if (cut) { c.resetAndDestroy(); return; }
    track(c);
    let u = null;
    c.on('error', () => { c.destroy(); if (u) u.destroy(); });
    c.on('end', () => { if (u) u.end(); });
    c.on('data', (d) => {
      const req = parseHead(d);
      if (req) {
        requests.push(req);
        if (refuse && refuse(req)) { c.resetAndDestroy(); if (u) u.destroy(); return; }
      }
      if (!u) {
        u = net.connect(target.port, target.hostname);
        track(u);
        u.on('error', () => { c.destroy(); u.destroy(); });
        u.pipe(c);
      }
      u.write(d);
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({
    port: server.address().port,
    requests,
    drop() { cut = true; for (const s of socks) s.resetAndDestroy(); },
    restore() { cut = false; },
    close() { for (const s of socks) s.destroy(); server.close(); },
  })));
}

// ---- the server ----------------------------------------------------------------------
const pubUrl = new URL('/pub/news', pubBase).toString();

async function publish(i, phase) {
  const msg = { headline: `Headline ${phase} ${i} (${RUN})`, source: `src-${i}`,
                time: new Date().toISOString() };
  const res = await fetch(pubUrl, { method: 'POST', body: JSON.stringify(msg),
                                    headers: { 'Content-Type': 'application/json' } });
  if (res.status !== 200) throw new StepFailure(`POST ${pubUrl} -> ${res.status} ${await res.text()}`);
  const a = await res.json();
  if (!/^\d+-\d+$/.test(a.id) || a.channel !== 'news') throw new StepFailure(`POST answer ${JSON.stringify(a)}`);
  return { id: a.id, text: msg.headline, source: msg.source, subscribers: a.subscribers };
}

async function channelInfo() {
  const res = await fetch(pubUrl);
  if (res.status !== 200) throw new StepFailure(`GET ${pubUrl} -> ${res.status}`);
  return res.json();
}

// Poll the channel's info for a subscriber count, with a deadline (an event on the
// server that the page cannot show: a held long-poll says nothing until it is answered).
async function waitSubscribers(n) {
  const deadline = Date.now() + STEP_TIMEOUT;
  let info;
  for (;;) {
    info = await channelInfo();
    if (info.subscribers >= n) return info;
    if (Date.now() > deadline) throw new StepFailure(`channel has ${info.subscribers} subscribers, expected ${n}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// ---- the pages -----------------------------------------------------------------------
const shown = (page) => page.$$eval('#headlines li.headline', (lis) => lis.map((li) => ({
  id: li.dataset.id, text: li.querySelector('.text').textContent,
  source: li.querySelector('.source').textContent, time: li.querySelector('time').textContent })));

const state = (page) => page.evaluate(() => ({
  status: document.getElementById('status').dataset.state || '',
  transport: document.getElementById('transport').dataset.transport,
  count: Number(document.getElementById('count').textContent),
  reconnects: Number(document.getElementById('reconnects').textContent),
  lost: Number(document.getElementById('lost').textContent) }));

async function waitPage(page, name, what, fn, arg) {
  try {
    await page.waitForFunction(fn, arg, { timeout: STEP_TIMEOUT, polling: 100 });
  } catch (e) {
    if (e.name !== 'TimeoutError') throw e;
    throw new StepFailure(`${name}: ${what} not seen in ${STEP_TIMEOUT} ms (${JSON.stringify(await state(page))})`);
  }
}

// Every page shows exactly `want` (newest first), ids and all.
async function expectShown(pages, want, what) {
  const expect = want.slice().reverse();
  for (const [name, page] of pages) {
    await waitPage(page, name, `${want.length} headlines`,
      (n) => Number(document.getElementById('count').textContent) >= n, want.length);
    const got = await shown(page);
    const bad = got.length !== expect.length ||
      got.some((g, i) => g.id !== expect[i].id || g.text !== expect[i].text || g.source !== expect[i].source);
    if (bad) {
      throw new StepFailure(`${name} ${what}: shows\n    ${got.map((g) => `${g.id} ${g.text}`).join('\n    ')}\n` +
        `  expected\n    ${expect.map((g) => `${g.id} ${g.text}`).join('\n    ')}`);
    }
    if (got.some((g) => !/^\d\d:\d\d:\d\d$/.test(g.time))) throw new StepFailure(`${name}: times ${got.map((g) => g.time)}`);
  }
}

async function main() {
  let context = null, profile = null, proxy = null, failure = null;
  const pages = [], all = [], proxies = [];
  const errors = [];
  try {
    step = 'proxy';
    proxy = await startProxy(target);

    step = 'launch chromium';
    ({ context, profile } = await launch({ colorScheme: 'light', viewport: { width: 900, height: 900 } }));

    const open = async (name, port, query) => {
      const page = all.length ? await context.newPage() : (context.pages()[0] || await context.newPage());
      page.on('pageerror', (e) => errors.push(`${name}: ${e}`));
      const url = `${target.protocol}//127.0.0.1:${port}/news.html${query}`;
      const resp = await page.goto(url, { waitUntil: 'load', timeout: STEP_TIMEOUT });
      if (!resp || !resp.ok()) throw new StepFailure(`GET ${url} -> ${resp ? resp.status() : 'no response'}`);
      all.push([name, page]);
      return [name, page];
    };
    const live = async (list, key = (name) => name) => {
      for (const [name, page] of list) {
        await waitPage(page, name, `transport ${key(name)}, live`, (t) =>
          document.getElementById('transport').dataset.transport === t &&
          document.getElementById('status').dataset.state === 'open', key(name));
      }
    };

    step = 'load pages';
    for (const t of TRANSPORTS) pages.push(await open(t, proxy.port, `?transport=${t}`));
    await live(pages);
    const info = await waitSubscribers(TRANSPORTS.length);
    ok(`three pages live (${TRANSPORTS.join(', ')}); channel: ${JSON.stringify(info)}`);

    step = `publish ${N}`;
    const sent = [];
    for (let i = 1; i <= N; i++) sent.push(await publish(i, 'A'));
    await expectShown(pages, sent, 'after the first headlines');
    ok(`${N} headlines (${sent[0].id} .. ${sent[N - 1].id}) shown by all three pages in the same order`);

    step = 'cut';
    const before = new Map();
    for (const [t, page] of pages) before.set(t, await state(page));
    const firstAfterCut = proxy.requests.length;
    proxy.drop();
    for (const [t, page] of pages) {
      await waitPage(page, t, 'the drop', () => document.getElementById('status').dataset.state !== 'open');
    }
    for (let i = 1; i <= M; i++) sent.push(await publish(i, 'B'));
    ok(`connections cut, every page noticed; ${M} headlines published meanwhile`);
    proxy.restore();

    step = 'reconnect';
    await expectShown(pages, sent, 'after the reconnect');
    for (const [t, page] of pages) {
      const s = await state(page);
      if (s.reconnects <= before.get(t).reconnects) throw new StepFailure(`${t}: reconnects ${s.reconnects}, was ${before.get(t).reconnects}`);
      if (s.lost) throw new StepFailure(`${t}: reports ${s.lost} lost`);
      if (s.transport !== t) throw new StepFailure(`${t}: now on ${s.transport}`);
    }
    const after = proxy.requests.slice(firstAfterCut).filter((r) => r.path.startsWith('/sub/news'));
    const resumed = (t) => after.some((r) => (t === 'websocket' ? r.upgrade === 'websocket'
      : t === 'eventsource' ? /text\/event-stream/.test(r.accept) : r.upgrade === '' && !/event-stream/.test(r.accept)) &&
      (/[?&]last_event_id=\d+-\d+/.test(r.path) || /^\d+-\d+$/.test(r.lastEventId)));
    const notResumed = TLS ? [] : TRANSPORTS.filter((t) => !resumed(t));
    if (notResumed.length) {
      throw new StepFailure(`no resuming request from ${notResumed}: ${JSON.stringify(after)}`);
    }
    ok(`all three reconnected with a resume point${TLS ? '' : ' (seen by the proxy)'} and show the ${N + M} headlines once each`);

    step = 'live after the reconnect';
    sent.push(await publish(1, 'C'));
    await expectShown(pages, sent, 'after one more');
    const summary = [];
    for (const [t, page] of pages) summary.push(`${t}: ${JSON.stringify(await state(page))}`);
    ok(`one more headline live on all three; ${summary.join('; ')}`);

    step = 'auto';
    // Over TLS the proxy cannot see requests: there only the plain case (WebSocket).
    const behind = { websocket: proxy };
    if (!TLS) {
      behind.eventsource = await startProxy(target, (r) => r.upgrade === 'websocket');
      behind.longpoll = await startProxy(target, (r) => r.upgrade === 'websocket' || /event-stream/.test(r.accept));
      proxies.push(behind.eventsource, behind.longpoll);
    }
    const auto = [];
    for (const t of Object.keys(behind)) auto.push(await open(`auto-${t}`, behind[t].port, ''));
    await live(auto, (name) => name.slice(5));
    await waitSubscribers(TRANSPORTS.length + auto.length);
    const d = await publish(1, 'D');
    for (const [name, page] of auto) await expectShown([[name, page]], [d], 'on auto');
    sent.push(d);
    ok(TLS ? 'auto: WebSocket; it shows the next headline'
      : 'auto: WebSocket through a plain proxy; EventSource where Upgrade is refused; ' +
        'long-poll where event streams are refused too; each shows the next headline');

    step = 'lost';
    const info2 = await channelInfo();
    if (info2.messages !== sent.length) throw new StepFailure(`channel stores ${info2.messages}, ${sent.length} were sent`);
    const stale = [];
    for (const t of TRANSPORTS) stale.push(await open(`lost-${t}`, proxy.port, `?transport=${t}&last_event_id=1-1`));
    await expectShown(stale, sent, 'resuming from another epoch');
    for (const [name, page] of stale) {
      const s = await state(page);
      const gaps = await page.$$eval('#headlines li.news-gap', (lis) => lis.length);
      if (s.lost !== 1 || gaps !== 1) throw new StepFailure(`${name}: lost ${s.lost}, ${gaps} gap notes (${JSON.stringify(s)})`);
    }
    ok(`resuming from an id of another epoch: every transport reports the gap once and shows the ${sent.length} stored headlines`);

    step = 'ids';
    // The client's own guard: ids compare within an epoch as decimals of any length, a
    // message at or below the last id shown is dropped, another epoch counts as new.
    const [, wsPage] = pages[0];
    const guard = await wsPage.evaluate((ids) => {
      const C = window.MwsChannel, ch = window.newsChannel;
      const order = [C.isNewer('7-10', '7-9'), !C.isNewer('7-9', '7-10'), !C.isNewer('7-9', '7-9'),
        C.isNewer('7-9007199254740993', '7-9007199254740992'), C.isNewer('8-1', '7-99')];
      const before = Number(document.getElementById('count').textContent);
      for (const id of ids) ch._deliver(id, 'news', JSON.stringify({ headline: `again ${id}` }), false);
      return { order, added: Number(document.getElementById('count').textContent) - before };
    }, [sent[sent.length - 2].id, sent[0].id]);
    if (guard.order.includes(false) || guard.added !== 0) throw new StepFailure(`id guard: ${JSON.stringify(guard)}`);
    ok('ids: ordered within an epoch past 2^53, a new epoch is new; a message delivered again is not shown');

    step = 'screenshots';
    const shotPath = (name) => `${shotPrefix}-${name}.png`;
    for (const [name, page] of all) {
      await page.screenshot({ path: shotPath(name), fullPage: true });
      console.log(`screenshot: ${shotPath(name)}`);
    }

    step = 'delete';
    // DELETE ends the channel: a WebSocket is closed with 1000 "channel deleted", a held
    // long-poll answered 410; both pages show "ended" and stop (an event stream just
    // ends, and EventSource reconnects by itself: nothing to tell it from a drop).
    const del = await fetch(pubUrl, { method: 'DELETE' });
    if (del.status !== 200) throw new StepFailure(`DELETE ${pubUrl} -> ${del.status}`);
    for (const [name, page] of pages.filter(([t]) => t !== 'eventsource')) {
      await waitPage(page, name, 'the end of the channel', () => document.getElementById('status').dataset.state === 'ended');
    }
    ok('DELETE: the websocket and longpoll pages show the channel ended');

    step = 'page errors';
    if (errors.length) throw new StepFailure(`page errors:\n  ${errors.join('\n  ')}`);
    ok('no page errors');
  } catch (e) {
    failure = e;
  }
  // Taken before the DELETE when all went well; on a failure, as the pages are then.
  const code = await finish({ context, profile, failure, step,
                              shots: failure ? all.map(([name, page]) => [page, `${shotPrefix}-${name}.png`]) : [] });
  for (const p of [proxy, ...proxies]) if (p) p.close();
  return code;
}

main().then((code) => process.exit(code), (e) => { console.error(`FAIL: ${e.stack || e}`); process.exit(1); });
