#!/usr/bin/env node
// Drives walcast's dashboard page in headless Chromium (playwright-core) for the Rust
// integration test tests/it/dashboard.rs:
//
//   node tests/js/dashboard.mjs --url http://127.0.0.1:PORT --key API_KEY
//        --chromium /usr/bin/chromium --screenshot target/dashboard.png
//
// Checks, in order: the page loads and shows a connection count once the API key is entered;
// the count goes up when a socket.io-client connects; a test event sent from the page's form
// reaches that client; then writes a screenshot. Prints one JSON line per step and exits 0 when
// all passed, 1 with {"type":"failed","message"} otherwise.
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';
import { io } from 'socket.io-client';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    key: { type: 'string' },
    chromium: { type: 'string', default: '/usr/bin/chromium' },
    screenshot: { type: 'string', default: 'target/dashboard.png' },
    timeout: { type: 'string', default: '20000' },
  },
});
const timeout = Number(args.timeout);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

async function count(page) {
  const text = await page.textContent('#connections');
  const n = Number(text);
  return Number.isInteger(n) ? n : null;
}

async function waitFor(what, check) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

let browser, socket;
try {
  browser = await chromium.launch({
    executablePath: args.chromium,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  page.on('pageerror', (e) => out({ type: 'pageerror', message: e.message }));
  const res = await page.goto(`${args.url}/io/dashboard`);
  if (!res.ok()) throw new Error(`GET /io/dashboard: ${res.status()}`);
  out({ type: 'loaded', title: await page.title() });

  await page.fill('#api-key', args.key);
  await page.click('#auth-form button[type=submit]');
  const before = await waitFor('a connection count', async () => {
    const n = await count(page);
    return n === null ? null : { n };
  });
  out({ type: 'count', connections: before.n });

  socket = io(args.url, { transports: ['websocket'], reconnection: false });
  const received = new Promise((resolve) => socket.on('dashboard-test', (data) => resolve(data)));
  await new Promise((resolve, reject) => {
    socket.on('connect', resolve);
    socket.on('connect_error', reject);
  });
  const after = await waitFor('the connection count to go up', async () => {
    const n = await count(page);
    return n !== null && n > before.n ? { n } : null;
  });
  out({ type: 'count', connections: after.n });

  await page.fill('#event-name', 'dashboard-test');
  await page.fill('#event-data', '{"from":"dashboard form"}');
  await page.click('#send');
  const data = await Promise.race([
    received,
    new Promise((_, reject) => setTimeout(() => reject(new Error('test event not received')), timeout)),
  ]);
  if (data.from !== 'dashboard form' || data.test !== true) {
    throw new Error(`unexpected test event ${JSON.stringify(data)}`);
  }
  out({ type: 'received', data });
  await waitFor('the form result', async () => /sent to \d+/.test(await page.textContent('#test-result')));
  // Let one refresh draw the chart and the event log before the screenshot.
  await page.waitForTimeout(1200);
  await page.screenshot({ path: args.screenshot, fullPage: true });
  out({ type: 'screenshot', path: args.screenshot });
  out({ type: 'passed' });
  process.exitCode = 0;
} catch (e) {
  out({ type: 'failed', message: String(e && e.message || e) });
  process.exitCode = 1;
} finally {
  if (socket) socket.close();
  if (browser) await browser.close();
}
