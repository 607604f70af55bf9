#!/usr/bin/env node
// A long-lived socket.io-client (the official one) controlled through JSON lines, so that a Rust
// integration test can drive many real clients.
//
//   node tests/js/client.mjs --url http://127.0.0.1:PORT [--path /socket.io] [--auth '<json>']
//        [--query '<json>'] [--headers '<json>'] [--transports websocket,polling] [--no-reconnect]
//        [--resume]
//
// --resume: every (re)connection sends `auth.offset` = the offset of the last event received
// (the trailing argument walcast adds to each event), as the README tells clients to, so that
// walcast replays what was missed; socket.io-client's automatic reconnection then resumes too.
//
// stdout, one JSON object per line (every line also carries `at`, ms since the epoch as a float):
//   {"type":"connected","id":"<socket id>","offset":"<auth.offset sent, if any>"}
//   {"type":"connect_error","message":"...","data":...}   then exit 0 when --no-reconnect
//   {"type":"disconnect","reason":"..."}
//   {"type":"event","name":"<event>","args":[...]}          every server event (socket.onAny); a
//        server ack callback is answered with no arguments and shown as "ack_requested":true
//   {"type":"ack","id":<n>,"args":[...]} / {"type":"ack_timeout","id":<n>}
//   {"type":"pong","id":<n>}                                  answer to {"cmd":"ping"}
//   {"type":"error","message":"..."}                          bad input line (the client goes on)
//
// stdin, one JSON object per line:
//   {"cmd":"emit","event":"name","args":[...],"ack":true,"id":7,"timeout_ms":5000}
//   {"cmd":"disconnect"}  {"cmd":"connect","auth":{...}?}  {"cmd":"ping","id":1}  {"cmd":"exit"}
//   (`connect` with `auth` replaces the handshake auth; with --resume the offset is still added)
// On stdin EOF the client disconnects and exits 0.
import { parseArgs } from 'node:util';
import { createInterface } from 'node:readline';
import { performance } from 'node:perf_hooks';
import { io } from 'socket.io-client';

const now = () => performance.timeOrigin + performance.now();

function out(obj) {
  obj.at ??= now();
  let line;
  try {
    line = JSON.stringify(obj);
  } catch (err) {
    line = JSON.stringify({ type: 'error', message: `unserializable output: ${err.message}`, at: now() });
  }
  // stdout to a pipe is synchronous on Linux, so every line is flushed as it is written.
  process.stdout.write(line + '\n');
}

let exiting = false;
function exit(code) {
  if (exiting) return;
  exiting = true;
  process.stdout.write('', () => process.exit(code));
}

process.stdout.on('error', () => process.exit(0)); // reader went away (EPIPE)

function fail(message) {
  out({ type: 'error', message });
  exit(2);
}

let opts;
try {
  opts = parseArgs({
    options: {
      url: { type: 'string' },
      path: { type: 'string', default: '/socket.io' },
      auth: { type: 'string', default: '{}' },
      query: { type: 'string' },
      headers: { type: 'string' },
      transports: { type: 'string' },
      'no-reconnect': { type: 'boolean', default: false },
      resume: { type: 'boolean', default: false },
    },
    strict: true,
  }).values;
} catch (err) {
  fail(err.message);
}

function jsonArg(name, text) {
  if (text === undefined) return undefined;
  try {
    const v = JSON.parse(text);
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not a JSON object');
    return v;
  } catch (err) {
    fail(`--${name}: ${err.message}`);
    return undefined;
  }
}

if (opts && !opts.url) fail('--url is required');

if (!exiting) {
  const reconnect = !opts['no-reconnect'];
  const auth = { base: jsonArg('auth', opts.auth) ?? {}, resume: opts.resume, last: undefined, sent: undefined };
  auth.last = auth.base.offset;
  const ioOpts = {
    path: opts.path,
    // A function is called by socket.io-client before every (re)connection attempt.
    auth: (cb) => {
      const handshake = auth.resume && auth.last !== undefined ? { ...auth.base, offset: auth.last } : auth.base;
      auth.sent = handshake.offset;
      cb(handshake);
    },
    reconnection: reconnect,
    forceNew: true,
  };
  const query = jsonArg('query', opts.query);
  if (query) ioOpts.query = query;
  const headers = jsonArg('headers', opts.headers);
  if (headers) ioOpts.extraHeaders = headers;
  if (opts.transports) {
    ioOpts.transports = opts.transports.split(',').map((t) => t.trim()).filter(Boolean);
  }
  if (!exiting) run(opts.url, ioOpts, reconnect, auth);
}

// The offsets walcast puts last on every event it emits.
const OFFSET = /^[0-9A-F]{16}-[0-9]{10}$/;

function run(url, ioOpts, reconnect, auth) {
  const socket = io(url, ioOpts);

  socket.on('connect', () => {
    const line = { type: 'connected', id: socket.id, transport: socket.io.engine?.transport?.name };
    if (auth.sent !== undefined) line.offset = auth.sent;
    out(line);
  });
  socket.on('connect_error', (err) => {
    const line = { type: 'connect_error', message: err?.message ?? String(err) };
    if (err?.data !== undefined) line.data = err.data;
    out(line);
    if (!reconnect) {
      socket.close();
      exit(0);
    }
  });
  socket.on('disconnect', (reason, details) => {
    const line = { type: 'disconnect', reason };
    if (details?.description?.message) line.description = details.description.message;
    out(line);
  });
  socket.onAny((name, ...args) => {
    const at = now();
    const line = { type: 'event', name, args, at };
    const last = args[args.length - 1];
    if (typeof last === 'function') {
      args.pop();
      line.ack_requested = true;
      last();
    }
    const offset = args[args.length - 1];
    if (typeof offset === 'string' && OFFSET.test(offset)) auth.last = offset;
    out(line);
  });

  function handle(text) {
    if (!text.trim()) return;
    let msg;
    try {
      msg = JSON.parse(text);
    } catch (err) {
      out({ type: 'error', message: `bad JSON: ${err.message}`, input: text.slice(0, 200) });
      return;
    }
    if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) {
      out({ type: 'error', message: 'a command is a JSON object', input: text.slice(0, 200) });
      return;
    }
    switch (msg.cmd) {
      case 'emit': {
        if (typeof msg.event !== 'string' || !msg.event) {
          out({ type: 'error', message: 'emit needs "event" (a string)', id: msg.id });
          return;
        }
        const args = msg.args === undefined ? [] : msg.args;
        if (!Array.isArray(args)) {
          out({ type: 'error', message: 'emit "args" must be an array', id: msg.id });
          return;
        }
        if (msg.ack) {
          const timeout = Number.isFinite(msg.timeout_ms) ? msg.timeout_ms : 5000;
          socket.timeout(timeout).emit(msg.event, ...args, (err, ...resp) => {
            if (err) out({ type: 'ack_timeout', id: msg.id });
            else out({ type: 'ack', id: msg.id, args: resp });
          });
        } else {
          socket.emit(msg.event, ...args);
        }
        return;
      }
      case 'disconnect':
        socket.disconnect();
        return;
      case 'connect':
        if (msg.auth !== undefined) {
          if (msg.auth === null || typeof msg.auth !== 'object' || Array.isArray(msg.auth)) {
            out({ type: 'error', message: 'connect "auth" must be an object', id: msg.id });
            return;
          }
          auth.base = msg.auth;
          if (msg.auth.offset !== undefined) auth.last = msg.auth.offset;
        }
        socket.connect();
        return;
      case 'ping':
        out({ type: 'pong', id: msg.id });
        return;
      case 'exit':
        socket.disconnect();
        exit(0);
        return;
      default:
        out({ type: 'error', message: `unknown cmd ${JSON.stringify(msg.cmd)}`, id: msg.id });
    }
  }

  const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
  rl.on('line', (line) => {
    try {
      handle(line);
    } catch (err) {
      out({ type: 'error', message: err?.message ?? String(err) });
    }
  });
  rl.on('close', () => {
    socket.disconnect();
    exit(0);
  });
}
