#!/usr/bin/env node
// make bench Node baseline: a plain socket.io@4 server on --port. Each stdin line
// `emit <count> <file>` broadcasts the event arguments in <file> (a JSON array, captured from
// walcast's own payload) <count> times to every connected client (`io.emit`, in chunks of 100
// so the event loop keeps writing), then prints `emitted`.
import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createInterface } from 'node:readline';
import { Server } from 'socket.io';

const { values: o } = parseArgs({ options: { port: { type: 'string' } } });
const http = createServer();
const io = new Server(http, { transports: ['websocket'] });
http.listen(Number(o.port), '127.0.0.1', () => process.stdout.write('listening\n'));
createInterface({ input: process.stdin }).on('line', (line) => {
  const [cmd, count, file] = line.trim().split(' ');
  if (cmd !== 'emit') return;
  const args = JSON.parse(readFileSync(file, 'utf8'));
  let left = Number(count);
  const chunk = () => {
    for (let i = 0; i < 100 && left > 0; i++, left--) io.emit('article:update', ...args);
    if (left > 0) setImmediate(chunk); else process.stdout.write('emitted\n');
  };
  chunk();
}).on('close', () => process.exit(0));
