#!/usr/bin/env node
// Drives clients/js (@walcast/client) against a running walcast for tests/it/js_client.rs.
//
//   node tests/js/walcast-client.mjs <url>
//
// stdout: JSON lines {"type":"connected"|"tag:create"|"tag:delete"|"gap"|"ack"|"error", ...}
// stdin:  "disconnect" | "connect" | "subscribe <uid> <id>" | "subscriptions" | "exit"
import { createInterface } from 'node:readline';
import { io } from 'socket.io-client';
import { createWalcastClient, memoryStorage } from '../../clients/js/index.js';

const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const url = process.argv[2];
const storage = memoryStorage();
const walcast = createWalcastClient(io, { url, storage, socketOptions: { reconnection: false } });

walcast.socket.on('connect', () => out({ type: 'connected', sentOffset: storage.getItem('walcast:offset') }));
walcast.socket.on('connect_error', (err) => out({ type: 'error', message: err.message }));
walcast.onContent('tag', {
  create: (tag, offset) => out({ type: 'tag:create', name: tag.name, documentId: tag.documentId, offset }),
  delete: (tag, offset) => out({ type: 'tag:delete', documentId: tag.documentId, offset }),
});
walcast.onGap((gap) => out({ type: 'gap', ...gap }));

createInterface({ input: process.stdin }).on('line', async (line) => {
  const [cmd, ...args] = line.trim().split(/\s+/);
  try {
    if (cmd === 'disconnect') {
      walcast.disconnect();
      out({ type: 'disconnected', lastOffset: walcast.lastOffset });
    } else if (cmd === 'connect') {
      walcast.connect();
    } else if (cmd === 'subscribe') {
      out({ type: 'ack', ack: await walcast.subscribeEntity(args[0], args[1]) });
    } else if (cmd === 'subscriptions') {
      out({ type: 'ack', ack: await walcast.entitySubscriptions() });
    } else if (cmd === 'exit') {
      walcast.close();
      process.exit(0);
    }
  } catch (err) {
    out({ type: 'error', message: err.message });
  }
}).on('close', () => {
  walcast.close();
  process.exit(0);
});
