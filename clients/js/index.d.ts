// Type declarations of @walcast/client.
import type { Socket, ManagerOptions, SocketOptions } from 'socket.io-client';

/** The offset walcast appends to every content event (opaque; grows with each event). */
export type WalcastOffset = string;

/** A Strapi REST entry as walcast sends it (`payload = "strapi"`). */
export interface StrapiEntry {
  id: number;
  documentId: string;
  locale?: string | null;
  createdAt?: string;
  updatedAt?: string;
  publishedAt?: string | null;
  [attribute: string]: unknown;
}

/** What a delete event carries. */
export interface DeletedEntry {
  id: number | null;
  documentId: string;
  locale: string | null;
}

export type ContentAction = 'create' | 'update' | 'delete' | 'publish' | 'unpublish';

/** Maps each content type's singular name to its entry type, e.g. `{ article: Article }`. */
export type ContentTypes = Record<string, StrapiEntry>;

export type ContentHandlers<T extends StrapiEntry> = {
  [A in ContentAction]?: (entry: A extends 'delete' ? DeletedEntry : T, offset: WalcastOffset) => void;
};

/** `localStorage`, or anything with the same three methods. */
export interface OffsetStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface WalcastClientOptions {
  url: string;
  /** Default `/socket.io`. */
  path?: string;
  /** users-permissions JWT, API token, or admin JWT / presence session token. */
  token?: string;
  /** `'jwt'` (default), `'api-token'` or `'admin-jwt'`. */
  strategy?: 'jwt' | 'api-token' | 'admin-jwt';
  /** `'draft'` for the draft view (admins, readable API tokens, `draft_roles`). */
  status?: 'published' | 'draft';
  /** `false`: only entity subscriptions, no role-room broadcasts. */
  broadcast?: boolean;
  /** Where the last offset is kept (default: in memory). */
  storage?: OffsetStorage;
  /** Default `walcast:offset`. */
  storageKey?: string;
  /** Default `true`. */
  autoConnect?: boolean;
  /** Extra socket.io-client options. */
  socketOptions?: Partial<ManagerOptions & SocketOptions>;
}

export interface WalcastGap {
  /** The offset the client asked to resume from. */
  offset: WalcastOffset;
  /** The oldest offset walcast still holds. */
  oldest: WalcastOffset | null;
}

export interface EntityAck {
  success: boolean;
  error?: string;
  [key: string]: unknown;
}

export interface WalcastClient<CT extends ContentTypes = ContentTypes> {
  readonly socket: Socket;
  /** The offset of the last event received (also in `storage`). */
  readonly lastOffset: WalcastOffset | undefined;
  resetOffset(): void;
  on(event: string, handler: (...args: any[]) => void): () => void;
  onContent<K extends keyof CT & string>(singularName: K, handlers: ContentHandlers<CT[K]>): () => void;
  onGap(handler: (gap: WalcastGap) => void): () => void;
  subscribeEntity(uid: string, id: string | number, options?: { timeoutMs?: number }): Promise<EntityAck>;
  unsubscribeEntity(uid: string, id: string | number, options?: { timeoutMs?: number }): Promise<EntityAck>;
  entitySubscriptions(options?: { timeoutMs?: number }): Promise<EntityAck>;
  connect(): void;
  disconnect(): void;
  close(): void;
}

export function createWalcastClient<CT extends ContentTypes = ContentTypes>(
  io: (url: string, options?: Partial<ManagerOptions & SocketOptions>) => Socket,
  options: WalcastClientOptions,
): WalcastClient<CT>;

export function memoryStorage(): OffsetStorage;
