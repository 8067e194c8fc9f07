#!/usr/bin/env node
// Chromium's WebSocket through the interop echo script (tests/integration/node/interop.mjs),
// for test_ws_850_interop.py: one browser for every combination.
//
//   node tests/browser/interop.test.mjs '[{"name": ..., "page": PAGE_URL, "url": WS_URL}, ...]'
//
// For each item: open PAGE_URL (same origin as the WebSocket, so the Origin check passes
// and ws:// is not mixed content), run the script in the page, print one JSON line
// {"name": ..., ...runScript's result}.  Exits 0 when the browser ran (the results say
// what passed).
import { finish, launch } from './lib.mjs';
import { runScript } from '../integration/node/interop.mjs';

const combos = JSON.parse(process.argv[2]);
let session, failure = null, step = 'launch';
try {
  session = await launch();
  const page = await session.context.newPage();
  for (const c of combos) {
    step = c.name;
    await page.goto(c.page);
    const r = await page.evaluate(`(${runScript.toString()})(WebSocket, ${JSON.stringify(c.url)}, {})`);
    console.log(JSON.stringify({ name: c.name, ...r }));
  }
} catch (e) {
  failure = e;
}
process.exit(await finish({ context: session?.context, profile: session?.profile, failure, step }));
