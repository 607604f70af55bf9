#!/usr/bin/env node
// Watch walcast's events as a person would: one coloured line per event. Used by `make demo`.
//
//   node tests/js/watch.mjs [--url http://127.0.0.1:1338] [--path /socket.io]
//        [--token TOKEN] [--strategy jwt|api-token|admin-jwt] [--status draft] [--no-color]
//
// Without --token the socket is a public client (role `public`). Ctrl-C exits.
import { parseArgs } from 'node:util';
import { io } from 'socket.io-client';

let opts;
try {
  opts = parseArgs({
    options: {
      url: { type: 'string', default: 'http://127.0.0.1:1338' },
      path: { type: 'string', default: '/socket.io' },
      token: { type: 'string' },
      strategy: { type: 'string' },
      status: { type: 'string' },
      'no-color': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  }).values;
} catch (err) {
  console.error(`watch: ${err.message}`);
  process.exit(2);
}
if (opts.help) {
  console.log('usage: node tests/js/watch.mjs [--url URL] [--path /socket.io] [--token T] [--strategy S] [--status draft] [--no-color]');
  process.exit(0);
}

const useColor = !opts['no-color'] && process.stdout.isTTY && !process.env.NO_COLOR;
const paint = (code) => (s) => (useColor ? `\x1b[${code}m${s}\x1b[0m` : String(s));
const c = {
  dim: paint('2'),
  bold: paint('1'),
  red: paint('31'),
  green: paint('32'),
  yellow: paint('33'),
  blue: paint('34'),
  magenta: paint('35'),
  cyan: paint('36'),
};

const time = () => new Date().toISOString().slice(11, 23);
const say = (s) => console.log(`${c.dim(time())} ${s}`);

function actionColor(name) {
  const action = name.includes(':') ? name.slice(name.lastIndexOf(':') + 1) : name;
  switch (action) {
    case 'create': return c.green;
    case 'update': return c.yellow;
    case 'delete': return c.red;
    case 'publish': return c.cyan;
    case 'unpublish': return c.magenta;
    default: return c.blue;
  }
}

// Payloads come as Strapi's REST entry ({ id, documentId, locale, title, ... }) or, in the
// plugin-io compatibility mode, as { data: { id, attributes: { documentId, ... } }, meta }.
function entryOf(payload) {
  if (payload && typeof payload === 'object' && !Array.isArray(payload)) {
    const d = payload.data;
    if (d && typeof d === 'object' && !Array.isArray(d)) {
      return { id: d.id, ...(d.attributes && typeof d.attributes === 'object' ? d.attributes : {}), ...d };
    }
    return payload;
  }
  return null;
}

const SUMMARY_KEYS = ['title', 'name', 'username', 'email', 'slug', 'text', 'message', 'body'];
function clip(s, n = 60) {
  s = String(s).replace(/\s+/g, ' ').trim();
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}

function summarize(name, args) {
  const entry = entryOf(args[0]);
  if (!entry) {
    return args.length ? clip(JSON.stringify(args[0]), 80) : '';
  }
  const parts = [];
  if (entry.documentId !== undefined) parts.push(c.bold(entry.documentId));
  else if (entry.id !== undefined) parts.push(c.bold(`#${entry.id}`));
  if (entry.locale) parts.push(c.cyan(`[${entry.locale}]`));
  const key = SUMMARY_KEYS.find((k) => typeof entry[k] === 'string' && entry[k]);
  if (key) parts.push(`${c.dim(`${key}:`)} ${JSON.stringify(clip(entry[key]))}`);
  if (entry.publishedAt === null) parts.push(c.dim('(draft)'));
  if (!key && entry.documentId === undefined) parts.push(clip(JSON.stringify(entry), 80));
  const offset = args.length > 1 && typeof args[args.length - 1] === 'string' ? args[args.length - 1] : null;
  if (offset) parts.push(c.dim(`@${offset}`));
  return parts.join(' ');
}

const auth = {};
if (opts.token) auth.token = opts.token;
if (opts.strategy) auth.strategy = opts.strategy;
if (opts.status) auth.status = opts.status;

say(c.dim(`connecting to ${opts.url}${opts.path} as ${opts.token ? `${opts.strategy ?? 'jwt'} token` : 'a public client'}…`));
const socket = io(opts.url, { path: opts.path, auth, reconnectionDelayMax: 2000 });
let events = 0;

socket.on('connect', () => say(`${c.green('● connected')} ${c.dim(`socket ${socket.id} via ${socket.io.engine.transport.name}`)}`));
socket.on('disconnect', (reason) => say(`${c.red('○ disconnected')} ${c.dim(reason)}`));
socket.on('connect_error', (err) => {
  say(`${c.red('✗ connect error')} ${err.message}`);
  if (!socket.active) {
    // Refused by the server (bad token, draft access denied…): retrying will not help.
    socket.close();
    process.exitCode = 1;
  }
});
socket.io.on('reconnect_attempt', (n) => { if (n === 1 || n % 10 === 0) say(c.dim(`reconnecting (attempt ${n})…`)); });
socket.onAny((name, ...args) => {
  events += 1;
  if (typeof args[args.length - 1] === 'function') args.pop()();
  say(`${actionColor(name)(name.padEnd(24))} ${summarize(name, args)}`);
});

function stop() {
  say(c.dim(`bye (${events} event${events === 1 ? '' : 's'} seen)`));
  socket.close();
  process.exit(0);
}
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
