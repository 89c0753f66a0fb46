import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { native, plain } from './native';

/**
 * Where step outputs are cached, by node (or state) name and key; values are JSON text.
 * `now` is the run's clock (a `TestClock` in tests) and `ttl` how long an entry lives, in ms.
 */
export interface NodeResultCache {
  get(node: string, key: string, options?: { now?: number }): string | undefined | null | Promise<string | undefined | null>;
  set(node: string, key: string, value: string, options?: { ttl?: number; now?: number }): void | Promise<void>;
  /** Forget a node's entries, or all of them. */
  clear?(node?: string): void | Promise<void>;
}

/** JSON with object keys in order, so equal values give equal text. */
export function stableStringify(value: unknown): string | undefined {
  return JSON.stringify(value, (_k, v: unknown) =>
    v !== null && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : v,
  );
}

/** The original's cache key: the runner's source and its inputs. */
export function calculateCacheKey(f: Function, data: unknown, rootInputs: unknown): string {
  return String(f) + stableStringify(data) + stableStringify(rootInputs);
}

/** The default key of a step: a hash of where it is, what runs it, and what it is given. */
export function stepCacheKey(parts: { definition: string; node: string; runner: string; args: unknown; input: unknown; rootInput: unknown; version?: string }): string {
  const text = stableStringify([parts.definition, parts.node, parts.runner, parts.args ?? null, parts.input ?? null, parts.rootInput ?? null, parts.version ?? null]);
  return createHash('sha256').update(text ?? '').digest('hex');
}

const live = (e: { expires: number | null } | undefined, now: number): boolean => e !== undefined && (e.expires === null || e.expires > now);
const expiry = (o?: { ttl?: number; now?: number }): number | null => (o?.ttl === undefined ? null : (o.now ?? Date.now()) + o.ttl);

/** Entries in this process's memory. */
export function memoryCache(): Required<NodeResultCache> {
  const nodes = new Map<string, Map<string, { value: string; expires: number | null }>>();
  return {
    get: (node, key, o) => {
      const e = nodes.get(node)?.get(key);
      return live(e, o?.now ?? Date.now()) ? e!.value : undefined;
    },
    set: (node, key, value, o) => {
      let m = nodes.get(node);
      if (!m) nodes.set(node, (m = new Map()));
      m.set(key, { value, expires: expiry(o) });
    },
    clear: (node) => void (node === undefined ? nodes.clear() : nodes.delete(node)),
  };
}

/** One JSON file per entry under `dir` (`<dir>/<node>/<key>.json`), shared by processes. */
export function fileCache(dir: string): Required<NodeResultCache> {
  if (typeof dir !== 'string' || dir === '') throw new TypeError('fileCache(dir): dir must be a directory path');
  // Node names are any text: the folder is named by a hash, with the name readable beside it.
  const folder = (node: string) => path.join(dir, `${node.replace(/[^\w.-]/g, '_').slice(0, 40)}-${createHash('sha256').update(node).digest('hex').slice(0, 12)}`);
  const file = (node: string, key: string) => path.join(folder(node), `${createHash('sha256').update(key).digest('hex')}.json`);
  return {
    get: async (node, key, o) => {
      let e: { value: string; expires: number | null } | undefined;
      try {
        e = JSON.parse(await fs.promises.readFile(file(node, key), 'utf8'));
      } catch {
        return undefined;
      }
      return live(e, o?.now ?? Date.now()) ? e!.value : undefined;
    },
    set: async (node, key, value, o) => {
      const f = file(node, key);
      await fs.promises.mkdir(path.dirname(f), { recursive: true });
      // Written aside and renamed: a reader never sees half an entry.
      const tmp = `${f}.${process.pid}.${Math.random().toString(36).slice(2)}`;
      await fs.promises.writeFile(tmp, JSON.stringify({ value, expires: expiry(o) }));
      await fs.promises.rename(tmp, f);
    },
    clear: async (node) => {
      await fs.promises.rm(node === undefined ? dir : folder(node), { recursive: true, force: true });
    },
  };
}

/** Entries in the `cache` table of a SQLite file: an engine's own (`sqliteCache(engine.db)`) or any other. */
export function sqliteCache(file: string): Required<NodeResultCache> {
  if (typeof file !== 'string' || file === '') throw new TypeError('sqliteCache(path): path must be a database file');
  const db = plain(() => new native.NativeCache(file));
  return {
    get: (node, key, o) => plain(() => db.get(node, key, o?.now ?? Date.now())) ?? undefined,
    set: (node, key, value, o) => plain(() => db.set(node, key, value, o?.now ?? Date.now(), o?.ttl)),
    clear: (node) => plain(() => db.clear(node, Date.now())),
  };
}

/** The original's SQLite cache on a handle with `prepare`/`exec` (better-sqlite3): a `ramus_cache` table. */
export function betterSqliteCache(db: { exec(sql: string): unknown; prepare(sql: string): { get(...a: unknown[]): unknown; run(...a: unknown[]): unknown } }): Required<NodeResultCache> {
  db.exec('CREATE TABLE IF NOT EXISTS ramus_cache (node TEXT NOT NULL, key TEXT NOT NULL, value TEXT, created_at int, PRIMARY KEY (node, key))');
  return {
    get: (node, key) => (db.prepare('SELECT value FROM ramus_cache WHERE node = ? AND key = ?').get(node, key) as { value?: string } | undefined)?.value,
    set: (node, key, value) => void db.prepare('INSERT OR REPLACE INTO ramus_cache (node, key, value, created_at) VALUES (?, ?, ?, ?)').run(node, key, value, Date.now()),
    clear: (node) => void (node === undefined ? db.prepare('DELETE FROM ramus_cache').run() : db.prepare('DELETE FROM ramus_cache WHERE node = ?').run(node)),
  };
}

/** What `redisCache` needs of a client: node-redis 4+ (`createClient`). */
export interface RedisLike {
  get(key: string): Promise<string | null | undefined | {}>;
  set(key: string, value: string, options?: { PX?: number }): Promise<unknown>;
  keys(pattern: string): Promise<string[]>;
  del(keys: string | string[]): Promise<unknown>;
  quit?(): Promise<unknown>;
  close?(): Promise<unknown>;
  connect?(): Promise<unknown>;
  isOpen?: boolean;
}

/**
 * Entries in Redis, under `prefix` (default `ramus:cache:`): a client of your own, or a URL
 * (`redis://127.0.0.1:6379`, which needs the `redis` package installed; `close()` ends it).
 */
export function redisCache(urlOrClient: string | RedisLike, options: { prefix?: string } = {}): Required<NodeResultCache> & { close(): Promise<void> } {
  const prefix = options.prefix ?? 'ramus:cache:';
  const owned = typeof urlOrClient === 'string';
  let client: Promise<RedisLike>;
  if (owned) {
    let createClient: (o: { url: string }) => RedisLike;
    try {
      ({ createClient } = require('redis') as { createClient: (o: { url: string }) => RedisLike });
    } catch {
      throw new Error(`redisCache('${urlOrClient}') needs the redis package: npm install redis (or pass a connected client)`);
    }
    const c = createClient({ url: urlOrClient });
    client = Promise.resolve(c.connect?.()).then(() => c);
  } else {
    if (urlOrClient === null || typeof urlOrClient !== 'object' || typeof urlOrClient.get !== 'function') throw new TypeError('redisCache(client): pass a redis URL or a node-redis client');
    client = Promise.resolve(urlOrClient);
  }
  const at = (node: string, key: string) => `${prefix}${node}:${key}`;
  return {
    get: async (node, key, o) => {
      const text = await (await client).get(at(node, key));
      if (typeof text !== 'string') return undefined;
      // The expiry is kept with the value too, so a test clock decides as it does elsewhere.
      const e = JSON.parse(text) as { value: string; expires: number | null };
      return live(e, o?.now ?? Date.now()) ? e.value : undefined;
    },
    set: async (node, key, value, o) => {
      await (await client).set(at(node, key), JSON.stringify({ value, expires: expiry(o) }), o?.ttl === undefined ? undefined : { PX: Math.max(1, Math.ceil(o.ttl)) });
    },
    clear: async (node) => {
      const c = await client;
      const glob = (t: string) => t.replace(/[*?[\]\\]/g, '\\$&');
      const keys = await c.keys(`${glob(prefix)}${node === undefined ? '' : `${glob(node)}:`}*`);
      if (keys.length > 0) await c.del(keys);
    },
    close: async () => {
      if (!owned) return;
      const c = await client;
      await (c.close ?? c.quit)?.call(c);
    },
  };
}
