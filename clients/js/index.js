// @walcast/client: a small wrapper around the official socket.io-client for walcast.
//
//   import { io } from 'socket.io-client';
//   import { createWalcastClient } from '@walcast/client';
//   const walcast = createWalcastClient(io, { url: 'http://localhost:1338', token, storage: localStorage });
//   walcast.onContent('article', { create: (a) => …, update: (a) => …, delete: (a) => … });
//
// What it adds to a plain socket: the handshake `auth` walcast (and the plugin) understand
// (`token`, `strategy`, `status`, `broadcast`), the offset of the last event kept in `storage`
// and sent as `auth.offset` on every (re)connection so that missed events are replayed,
// `walcast:gap` surfaced, and promise-based entity subscriptions. socket.io-client is passed in
// (`io`), so the module has no dependency of its own.

/** An offset as walcast sends it (the last argument of every content event). */
const OFFSET = /^[0-9A-F]{16}-[0-9]{1,10}$/;

/** Offsets compare as text once their sequence has the same width. */
function offsetKey(offset) {
  const [lsn, seq] = offset.split('-');
  return `${lsn}-${seq.padStart(10, '0')}`;
}

/** In-memory storage, for servers and tests (browsers pass `localStorage`). */
export function memoryStorage() {
  const map = new Map();
  return {
    getItem: (key) => (map.has(key) ? map.get(key) : null),
    setItem: (key, value) => void map.set(key, String(value)),
    removeItem: (key) => void map.delete(key),
  };
}

/**
 * Creates a walcast client. `io` is socket.io-client's `io` function.
 * See index.d.ts for the options.
 */
export function createWalcastClient(io, options = {}) {
  if (typeof io !== 'function') throw new TypeError('createWalcastClient(io, options): pass socket.io-client\'s io function');
  const {
    url,
    path = '/socket.io',
    token,
    strategy,
    status,
    broadcast,
    storage = memoryStorage(),
    storageKey = 'walcast:offset',
    autoConnect = true,
    socketOptions = {},
  } = options;
  if (!url) throw new TypeError('createWalcastClient: options.url is required');

  const gapHandlers = new Set();
  let lastOffset = storage.getItem(storageKey) ?? undefined;

  const handshake = () => {
    const auth = {};
    if (token) auth.token = token;
    if (strategy) auth.strategy = strategy;
    if (status) auth.status = status;
    if (broadcast === false) auth.broadcast = false;
    if (lastOffset) auth.offset = lastOffset;
    return auth;
  };

  const socket = io(url, {
    path,
    transports: ['websocket', 'polling'],
    ...socketOptions,
    autoConnect,
    // Called before every (re)connection: the offset sent is always the latest one seen.
    auth: (cb) => cb(handshake()),
  });

  const remember = (offset) => {
    if (typeof offset !== 'string' || !OFFSET.test(offset)) return;
    if (lastOffset && offsetKey(offset) <= offsetKey(lastOffset)) return;
    lastOffset = offset;
    storage.setItem(storageKey, offset);
  };
  socket.onAny((event, ...args) => {
    if (args.length > 1) remember(args[args.length - 1]);
  });
  socket.on('walcast:gap', (gap) => {
    for (const handler of gapHandlers) handler(gap);
  });

  const ack = (event, payload, timeoutMs) =>
    new Promise((resolve, reject) => {
      socket.timeout(timeoutMs).emit(event, payload, (err, response) => {
        if (err) reject(new Error(`${event}: no answer within ${timeoutMs} ms`));
        else resolve(response);
      });
    });

  return {
    socket,
    get lastOffset() {
      return lastOffset;
    },
    /** Forgets the stored offset: the next connection starts live. */
    resetOffset() {
      lastOffset = undefined;
      storage.removeItem(storageKey);
    },
    on(event, handler) {
      socket.on(event, handler);
      return () => socket.off(event, handler);
    },
    /** Handlers for `<singularName>:<action>` events; returns a function that removes them. */
    onContent(singularName, handlers) {
      const offs = Object.entries(handlers).map(([action, handler]) => {
        const event = `${singularName}:${action}`;
        socket.on(event, handler);
        return () => socket.off(event, handler);
      });
      return () => offs.forEach((off) => off());
    },
    /** Called when the server cannot replay from the stored offset: refetch, then go on. */
    onGap(handler) {
      gapHandlers.add(handler);
      return () => gapHandlers.delete(handler);
    },
    subscribeEntity(uid, id, { timeoutMs = 5000 } = {}) {
      return ack('subscribe-entity', { uid, id }, timeoutMs);
    },
    unsubscribeEntity(uid, id, { timeoutMs = 5000 } = {}) {
      return ack('unsubscribe-entity', { uid, id }, timeoutMs);
    },
    entitySubscriptions({ timeoutMs = 5000 } = {}) {
      return new Promise((resolve, reject) => {
        socket.timeout(timeoutMs).emit('get-entity-subscriptions', (err, response) => {
          if (err) reject(new Error(`get-entity-subscriptions: no answer within ${timeoutMs} ms`));
          else resolve(response);
        });
      });
    },
    connect() {
      socket.connect();
    },
    disconnect() {
      socket.disconnect();
    },
    close() {
      socket.close();
    },
  };
}
