#!/usr/bin/env node
// make bench load client: opens --clients socket.io-client connections (websocket only) to --url
// with --auth, prints {"type":"ready"} once all are connected, then counts received events.
//   --expect N    per client; the result line is printed once every client has N (or on "done"
//                 / stdin EOF)
//   --latency     events whose title is "lat:<epoch ms>" (set from clock_timestamp() in the
//                 committing transaction) give a commit → client latency sample
//   --sample F    writes the first event's arguments to F (the Node baseline broadcasts them)
// Result: {"type":"result","received":n,"first":ms,"last":ms,"latencies":[ms...]}
import { parseArgs } from 'node:util';
import { writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { performance } from 'node:perf_hooks';
import { io } from 'socket.io-client';

const { values: o } = parseArgs({
  options: {
    url: { type: 'string' }, clients: { type: 'string', default: '1' },
    auth: { type: 'string', default: '{}' }, expect: { type: 'string', default: '0' },
    latency: { type: 'boolean', default: false }, sample: { type: 'string' },
  },
});
process.stdout.on('error', () => process.exit(0));
const now = () => performance.timeOrigin + performance.now();
const n = Number(o.clients), expect = Number(o.expect) * n;
const auth = JSON.parse(o.auth);
let connected = 0, received = 0, first = 0, last = 0, finished = false, sampled = !o.sample;
const latencies = [];
const sockets = [];

function finish() {
  if (finished) return;
  finished = true;
  process.stdout.write(JSON.stringify({ type: 'result', received, first, last, latencies }) + '\n');
  for (const s of sockets) s.disconnect();
  setTimeout(() => process.exit(0), 200);
}

function onEvent(_name, ...args) {
  const t = now();
  if (!first) first = t;
  last = t;
  received++;
  if (!sampled) { sampled = true; writeFileSync(o.sample, JSON.stringify(args)); }
  if (o.latency) {
    const m = /"title":"lat:([0-9.]+)"/.exec(JSON.stringify(args[0]));
    if (m) latencies.push(t - Number(m[1]));
  }
  if (expect && received >= expect) finish();
}

for (let i = 0; i < n; i++) {
  const s = io(o.url, { transports: ['websocket'], auth, reconnection: false, forceNew: true });
  s.onAny(onEvent);
  s.on('connect', () => { if (++connected === n) process.stdout.write('{"type":"ready"}\n'); });
  s.on('connect_error', (e) => { process.stderr.write(`connect_error: ${e.message}\n`); process.exit(1); });
  sockets.push(s);
}
createInterface({ input: process.stdin }).on('line', (l) => { if (l.trim() === 'done') finish(); }).on('close', finish);
