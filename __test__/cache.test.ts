// The step cache: its stores (memory, files, SQLite, Redis for real), keys that never mix
// two steps up, hits that are visible steps, and entries that expire on the run's clock.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import {
  betterSqliteCache,
  calculateCacheKey,
  DagRunner,
  Engine,
  fileCache,
  memoryCache,
  redisCache,
  runDag,
  sqliteCache,
  StateMachineRunner,
  type NodeResultCache,
  type RamusEvent,
} from 'ramus';
import { TestClock } from 'ramus/testing';

import { redisMissing } from './redis.mjs';

const dirs: string[] = [];
const engines: Engine[] = [];
afterEach(async () => {
  for (const e of engines.splice(0)) await e.close();
});
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});
function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'ramus-cache-'));
  dirs.push(d);
  return d;
}

// A real Redis: REDIS_URL's (CI starts one), else one of our own on a free port.
let REDIS_URL = process.env.REDIS_URL ?? '';
let redis: ChildProcess | undefined;
beforeAll(async () => {
  if (REDIS_URL || redisMissing) return;
  const port = await new Promise<number>((resolve) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(p));
    });
  });
  redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  redis.on('error', () => {});
  REDIS_URL = `redis://127.0.0.1:${port}`;
  // Ready once it accepts a connection.
  for (let i = 0; i < 200; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => (s.end(), resolve(true)));
      s.on('error', () => resolve(false));
    });
    if (up) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error('redis-server did not start: install it (Debian: apt-get install redis-server) or set REDIS_URL');
});
afterAll(() => redis?.kill());

/** A DAG whose `answer` node counts its calls. */
function counting(name = 'qa') {
  const calls: string[] = [];
  const dag = {
    name,
    nodes: {
      answer: {
        run: async ({ rootInput }: { rootInput: string }) => {
          calls.push(rootInput);
          return { text: `answer to ${rootInput}` };
        },
      },
    },
  };
  return { dag, calls };
}

/** Run the DAG twice with `cache`: the second run must come from it. */
async function expectHitOnSecondRun(cache: NodeResultCache) {
  const { dag, calls } = counting();
  expect(await runDag({ dag, input: 'why', cache })).toEqual({ text: 'answer to why' });
  const runner = new DagRunner({ dag, input: 'why', cache });
  const finishes: unknown[] = [];
  runner.on('event', (e: RamusEvent) => e.type === 'dag:node_finish' && finishes.push(e.data));
  expect(await runner.run()).toEqual({ text: 'answer to why' });
  expect(calls).toEqual(['why']);
  expect(finishes).toEqual([{ output: { text: 'answer to why' }, cached: true }]);
  // Another input is another entry.
  expect(await runDag({ dag, input: 'how', cache })).toEqual({ text: 'answer to how' });
  expect(calls).toEqual(['why', 'how']);
}

describe('cache stores', () => {
  test('memoryCache', () => expectHitOnSecondRun(memoryCache()));
  test('fileCache: entries outlive the cache object (another process reads them)', async () => {
    const dir = tmp();
    const { dag, calls } = counting();
    await runDag({ dag, input: 'q', cache: fileCache(dir) });
    expect(await runDag({ dag, input: 'q', cache: fileCache(dir) })).toEqual({ text: 'answer to q' });
    expect(calls).toEqual(['q']);
    await expectHitOnSecondRun(fileCache(tmp()));
  });
  test('sqliteCache', () => expectHitOnSecondRun(sqliteCache(path.join(tmp(), 'cache.sqlite'))));
  test.skipIf(redisMissing)('redisCache on a real Redis, by URL', async () => {
    const cache = redisCache(REDIS_URL, { prefix: `ramus-test:${process.pid}:${Date.now()}:` });
    try {
      await cache.clear();
      await expectHitOnSecondRun(cache);
      await cache.clear('answer');
      expect(await cache.get('answer', 'anything')).toBeUndefined();
    } finally {
      await cache.clear();
      await cache.close();
    }
  });
  test('betterSqliteCache keeps the original’s table on any prepare/exec handle', async () => {
    // A stand-in for a better-sqlite3 Database: the statements the original issues, on a Map.
    const rows = new Map<string, string>();
    const sql: string[] = [];
    const db = {
      exec: (s: string) => void sql.push(s),
      prepare: (s: string) => ({
        get: (node: string, key: string) => (rows.has(`${node}|${key}`) ? { value: rows.get(`${node}|${key}`) } : undefined),
        run: (...a: unknown[]) => {
          if (s.startsWith('INSERT')) rows.set(`${a[0]}|${a[1]}`, a[2] as string);
          else if (s.includes('WHERE node')) for (const k of [...rows.keys()]) k.startsWith(`${a[0]}|`) && rows.delete(k);
          else rows.clear();
        },
      }),
    };
    await expectHitOnSecondRun(betterSqliteCache(db));
    expect(sql[0]).toContain('CREATE TABLE IF NOT EXISTS ramus_cache');
  });
});

describe('keys', () => {
  test('two closures with the same source never share an entry (one per node)', async () => {
    const ask = (model: string) => async ({ rootInput }: { rootInput: string }) => `${model}:${rootInput}`;
    const cache = memoryCache();
    const out = await runDag({ dag: { name: 'models', nodes: { gpt: { run: ask('gpt') }, claude: { run: ask('claude') } } }, input: 'x', cache });
    expect(out).toEqual({ gpt: 'gpt:x', claude: 'claude:x' });
    expect(await runDag({ dag: { name: 'models', nodes: { gpt: { run: ask('gpt') }, claude: { run: ask('claude') } } }, input: 'x', cache })).toEqual(out);
    // The same node name in a differently named definition is another entry.
    expect(await runDag({ dag: { name: 'other', nodes: { gpt: { run: ask('claude') } } }, input: 'x', cache })).toBe('claude:x');
  });

  test('cache.key replaces the key, version starts over, and cache: false never caches', async () => {
    const cache = memoryCache();
    let calls = 0;
    const run = async ({ rootInput }: { rootInput: { q: string; user: string } }) => `${++calls}:${rootInput.q}`;
    const dag = (version?: string, off = false) => ({
      name: 'keyed',
      nodes: { a: { run, cache: off ? false : { key: ({ rootInput }: any) => rootInput.q, version } } },
    });
    expect(await runDag({ dag: dag(), input: { q: 'x', user: 'ada' }, cache })).toBe('1:x');
    // A different user, the same key: a hit.
    expect(await runDag({ dag: dag(), input: { q: 'x', user: 'bob' }, cache })).toBe('1:x');
    expect(await runDag({ dag: dag(undefined, true), input: { q: 'x', user: 'bob' }, cache })).toBe('2:x');
    // With a key function the key is the function's; a version goes with the default key.
    const versioned = (version: string) => ({ name: 'v', nodes: { a: { run, cache: { version } } } });
    expect(await runDag({ dag: versioned('1'), input: { q: 'y', user: 'c' }, cache })).toBe('3:y');
    expect(await runDag({ dag: versioned('1'), input: { q: 'y', user: 'c' }, cache })).toBe('3:y');
    expect(await runDag({ dag: versioned('2'), input: { q: 'y', user: 'c' }, cache })).toBe('4:y');
  });

  test('an entry expires after its ttl on the run’s clock', async () => {
    const clock = new TestClock(Date.UTC(2026, 0, 1));
    const cache = memoryCache();
    let calls = 0;
    const dag = { name: 'ttl', nodes: { a: { run: () => ++calls, cache: { ttl: '1h' } } } };
    expect(await runDag({ dag, clock, cache })).toBe(1);
    await clock.advance('59m');
    expect(await runDag({ dag, clock, cache })).toBe(1);
    await clock.advance('1m');
    expect(await runDag({ dag, clock, cache })).toBe(2);
  });

  test('calculateCacheKey is the original’s: the runner’s source and the inputs, keys in order', () => {
    const f = (x: unknown) => x;
    expect(calculateCacheKey(f, { b: 1, a: 2 }, { z: [1, { y: 2, x: 1 }] })).toBe(`${String(f)}{"a":2,"b":1}{"z":[1,{"x":1,"y":2}]}`);
  });
});

describe('cached steps of machines and durable runs', () => {
  test('a machine caches only states that ask for it', async () => {
    const cache = memoryCache();
    const calls: string[] = [];
    const config = {
      name: 'm',
      initial: 'think',
      nodes: {
        think: { cache: true, run: ({ input }: any) => (calls.push('think'), `thought about ${input}`), transition: 'act' },
        act: { run: ({ input }: any) => (calls.push('act'), `did ${input}`), final: true },
      },
    };
    for (let i = 0; i < 2; i++) {
      const m = new StateMachineRunner({ config, input: 'it', cache });
      void m.run();
      expect(await m.finished).toBe('did thought about it');
    }
    expect(calls).toEqual(['think', 'act', 'act']);
  });

  test('in the engine’s own database, a hit is a stored step with cached: true', async () => {
    const db = path.join(tmp(), 'runs.sqlite');
    const first = new Engine({ db, durability: 'sync' });
    engines.push(first);
    const engine = new Engine({ db, durability: 'sync', cache: sqliteCache(first.db) });
    engines.push(engine);
    let calls = 0;
    engine.register('search', (async ({ rootInput }: any) => `${++calls}:${rootInput}`) as any);
    const def = { name: 'search', nodes: { s: { runner: 'search' } } };
    const a = engine.start(def, { input: 'ramus' });
    expect(await a.finished).toBe('1:ramus');
    const b = engine.start(def, { input: 'ramus' });
    expect(await b.finished).toBe('1:ramus');
    expect(engine.steps(a.runId).map((s) => [s.status, s.cached])).toEqual([['finished', false]]);
    expect(engine.steps(b.runId).map((s) => [s.status, s.cached, s.output])).toEqual([['finished', true, '1:ramus']]);
    expect(calls).toBe(1);
  });
});
