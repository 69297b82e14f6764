// Opens the test page in headless Chromium (the machine's /usr/bin/chromium, driven by
// playwright-core; no browser download) and runs the same steps as web-provider.mjs, in the
// page, over stdin/stdout:
//
//   node browser.mjs '{"pageUrl": ..., "chromium": "/usr/bin/chromium"}'
//
// The page (page/index.html + the bundle) is served by the test from another origin than Lab.
import { createInterface } from 'node:readline';

import { chromium } from 'playwright-core';

const { pageUrl, chromium: executablePath, waitForPoll = true } = JSON.parse(process.argv[2]);
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
const console_ = [];
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('console', (message) => console_.push(`${message.type()}: ${message.text()}`));
  page.on('pageerror', (error) => console_.push(`pageerror: ${error}`));
  await page.goto(pageUrl);
  await page.waitForFunction(() => document.getElementById('status').textContent !== 'starting', null, {
    timeout: 20000,
  });
  const snapshot = (step) =>
    page.evaluate(
      (name) => ({
        step: name,
        status: document.getElementById('status').textContent,
        shown: JSON.parse(document.getElementById('results').textContent || 'null'),
        origin: window.location.origin,
        ready: window.labFlow.ready,
        results: window.labFlow.evaluate(),
        requests: window.labFlow.requests,
        events: window.labFlow.events,
      }),
      step,
    );
  const emit = async (step) =>
    process.stdout.write(`${JSON.stringify({ ...(await snapshot(step)), console: console_ })}\n`);

  await emit('initial');
  if (waitForPoll) {
    await page.evaluate(() => window.labFlow.waitForNotModified());
    await emit('polled');
    const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
    await lines.next();
    await page.evaluate(() => window.labFlow.waitForChange());
    await emit('changed');
  }
} finally {
  await browser.close();
}
process.exit(0);
