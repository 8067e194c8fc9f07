// Shared by the browser tests: Debian's Chromium under playwright-core, step reporting
// ("ok ..." lines, then "N passed, M failed"), screenshots and clean-up.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export class StepFailure extends Error {}

export const passed = [];
export function ok(what) { passed.push(what); console.log(`ok   ${what}`); }

// A fresh profile and a headless Chromium that never touches the network by itself
// (background networking, updates and sync off) and accepts the test certificate.
export async function launch(options = {}) {
  const profile = mkdtempSync(join(tmpdir(), 'ws-chromium-'));
  try {
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      headless: true,
      ignoreHTTPSErrors: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        '--ignore-certificate-errors'],
      ...options,
    });
    return { context, profile };
  } catch (e) {
    rmSync(profile, { recursive: true, force: true });
    throw e;
  }
}

// Screenshots ([page, path] pairs, pages may be null), close, report.  Returns the exit code.
export async function finish({ context, profile, shots = [], failure, step }) {
  for (const [page, path] of shots) {
    if (!page || !path) continue;
    try {
      await page.screenshot({ path, fullPage: true });
      console.log(`screenshot: ${path}`);
    } catch (e) {
      console.error(`screenshot failed: ${e.message}`);
    }
  }
  if (context) await context.close().catch(() => {});
  if (profile) rmSync(profile, { recursive: true, force: true });
  if (failure) {
    const msg = failure instanceof StepFailure ? failure.message : (failure.stack || String(failure));
    console.error(`FAIL [${step}]: ${msg}`);
    console.log(`${passed.length} passed, 1 failed`);
    return 1;
  }
  console.log(`${passed.length} passed, 0 failed`);
  return 0;
}
