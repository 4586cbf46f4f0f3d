// Drives Debian's headless Chromium through imds' web console, for tests/it/console.rs.
//
// Usage: node console.mjs '{"url":"http://127.0.0.1:PORT","target":"i-...","keys":{"id":"...",
//   "secret":"..."},"screenshot":"/path.png"}'
// Prints one JSON line per step and, after "required", waits for one line on stdin (the test
// sends a token-less request meanwhile) before checking that the graph counts it:
//   {"step":"listed","ids":[...],"wrongKeysError":"..."}
//   {"step":"required","clickToShownMs":N}
//   {"step":"done","rejected":"1","sentToShownMs":N,"callers":"...","reloaded":false,...}
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';

const options = JSON.parse(process.argv[2]);
const say = (value) => process.stdout.write(JSON.stringify(value) + '\n');
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

const browser = await chromium.launch({
  executablePath: options.chromium || '/usr/bin/chromium',
  args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
    '--disable-background-networking'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  // Everything the console sends the page, to check that no secret is among it.
  const bodies = [];
  page.on('response', async (response) => {
    try { bodies.push(await response.text()); } catch (_) { /* a redirect has no body */ }
  });
  // Script errors (a refused request's console message is expected, an exception is not).
  const pageErrors = [];
  page.on('pageerror', (error) => pageErrors.push(String(error)));

  await page.goto(options.url + '/console');
  let wrongKeysError = null;
  if (options.keys) {
    await page.waitForSelector('#login-form', { state: 'visible' });
    await page.fill('#login-key', options.keys.id);
    await page.fill('#login-secret', options.keys.secret + 'x');
    await page.click('#login-submit');
    await page.waitForSelector('#error', { state: 'visible' });
    wrongKeysError = await page.textContent('#error');
    await page.fill('#login-secret', options.keys.secret);
    await page.click('#login-submit');
  }
  await page.waitForSelector('#fleet tbody tr[data-instance]');
  // Marks this document: a reload would lose it.
  await page.evaluate(() => { window.imdsTestMarker = true; });
  const ids = await page.$$eval('#fleet tbody tr[data-instance]', (rows) => rows.map((r) => r.dataset.instance));
  say({ step: 'listed', ids, wrongKeysError });

  const row = `#fleet tbody tr[data-instance="${options.target}"]`;
  const clicked = Date.now();
  await page.click(`${row} button[data-action="requireImdsv2"]`);
  await page.waitForFunction((selector) => {
    const cell = document.querySelector(selector + ' td.tokens');
    return cell && cell.textContent.startsWith('required');
  }, row);
  const clickToShownMs = Date.now() - clicked;
  await page.click(`${row} td.id`);
  await page.waitForFunction((id) => {
    const shown = document.querySelector('#detail-id');
    return shown && shown.textContent.startsWith(id) && !document.querySelector('#detail').hidden;
  }, options.target);
  const before = await page.textContent('#rejected-total');
  say({ step: 'required', clickToShownMs, rejectedBefore: before });

  await lines.next();
  const sent = Date.now();
  await page.waitForFunction(
    () => document.querySelector('#rejected-total').textContent === '1',
    null,
    { timeout: 20000 },
  );
  const sentToShownMs = Date.now() - sent;
  await page.waitForFunction(() => document.querySelectorAll('#callers tbody tr td').length > 1);
  const callers = await page.textContent('#callers tbody');
  const bars = await page.$$eval('#graph svg rect.bar.rejected', (rects) => rects.length);
  const rowTokens = await page.textContent(`${row} td.tokens`);
  const reloaded = !(await page.evaluate(() => window.imdsTestMarker === true));
  await page.screenshot({ path: options.screenshot, fullPage: true });
  const secretSent = options.keys ? bodies.some((body) => body.includes(options.keys.secret)) : false;
  say({
    step: 'done', rejected: '1', sentToShownMs, callers, bars, rowTokens, reloaded, secretSent,
    pageErrors, screenshot: options.screenshot, chromium: browser.version(),
  });
} finally {
  await browser.close();
}
process.exit(0);
