#!/usr/bin/env node
// Runs README.md's browser examples in headless Chromium for tests/it/readme.rs:
//
//   node tests/js/readme-browser.mjs --url http://127.0.0.1:PORT --chromium /usr/bin/chromium
//        --page NAME=ENTRY[:BLOCK] …
//
// Each page's ENTRY (a README block the test extracted, or a small app in tests/js/readme/ that
// imports the README block BLOCK as `readme-block`) is bundled with esbuild and served by a
// small HTTP server on 127.0.0.1 at /NAME.html, as an app's own server would (walcast is another
// origin, as usual; the apps find its address in window.WALCAST_URL). Prints JSON lines: {type:"console", page, text} for every
// console message, {type:"pageerror", page, message}, {type:"rendered", page, items} whenever a
// page's `#articles li` texts change; exits on "exit" on stdin (or after --timeout ms, 1).
import { parseArgs } from 'node:util';
import { createInterface } from 'node:readline';
import path from 'node:path';
import http from 'node:http';
import { chromium } from 'playwright-core';
import { build } from 'esbuild';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    chromium: { type: 'string', default: '/usr/bin/chromium' },
    page: { type: 'string', multiple: true, default: [] },
    timeout: { type: 'string', default: '60000' },
  },
});
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

async function bundle(entry, block) {
  const alias = {
    name: 'readme-block',
    setup(b) {
      b.onResolve({ filter: /^readme-block$/ }, () => ({ path: path.resolve(block) }));
    },
  };
  const result = await build({
    entryPoints: [entry],
    bundle: true,
    write: false,
    format: 'esm',
    target: 'es2022',
    jsx: 'automatic',
    logLevel: 'silent',
    plugins: block ? [alias] : [],
    define: {
      'process.env.NODE_ENV': '"production"',
      __VUE_OPTIONS_API__: 'true',
      __VUE_PROD_DEVTOOLS__: 'false',
      __VUE_PROD_HYDRATION_MISMATCH_DETAILS__: 'false',
    },
  });
  return result.outputFiles[0].text;
}

let browser;
let exitCode = 0;
const deadline = setTimeout(async () => {
  out({ type: 'failed', message: `no "exit" within ${args.timeout} ms` });
  exitCode = 1;
  await browser?.close();
  process.exit(1);
}, Number(args.timeout));

try {
  browser = await chromium.launch({
    executablePath: args.chromium,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  const files = new Map();
  const server = http.createServer((req, res) => {
    const file = files.get(new URL(req.url, 'http://x').pathname);
    if (req.url === '/favicon.ico') return res.writeHead(204).end();
    res.writeHead(file ? 200 : 404, { 'content-type': file?.type ?? 'text/plain' });
    res.end(file?.body ?? 'not found');
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  server.unref();
  const origin = `http://127.0.0.1:${server.address().port}`;
  const context = await browser.newContext();
  for (const spec of args.page) {
    const [name, rest] = spec.split(/=(.*)/s);
    const [entry, block] = rest.split(':');
    files.set(`/${name}.js`, { type: 'text/javascript', body: await bundle(entry, block) });
    files.set(`/${name}.html`, {
      type: 'text/html',
      body: `<!doctype html><meta charset="utf-8"><title>${name}</title><div id="root"></div><script>window.WALCAST_URL = ${JSON.stringify(args.url)};</script><script type="module" src="/${name}.js"></script>`,
    });
    const base = `${origin}/${name}`;
    const page = await context.newPage();
    page.on('console', (msg) => out({ type: 'console', page: name, text: msg.text() }));
    page.on('pageerror', (e) => out({ type: 'pageerror', page: name, message: e.message }));
    await page.goto(`${base}.html`);
    out({ type: 'loaded', page: name });
    let last = '[]';
    (async () => {
      while (!page.isClosed()) {
        const items = await page.$$eval('#articles li', (lis) => lis.map((li) => li.textContent)).catch(() => []);
        const now = JSON.stringify(items);
        if (now !== last) {
          last = now;
          out({ type: 'rendered', page: name, items });
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
  }
} catch (e) {
  out({ type: 'failed', message: String(e?.stack ?? e) });
  exitCode = 1;
}

const finish = async () => {
  clearTimeout(deadline);
  await browser?.close().catch(() => {});
  process.exit(exitCode);
};
if (exitCode) await finish();
createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() === 'exit') finish();
});
process.stdin.on('end', finish);
