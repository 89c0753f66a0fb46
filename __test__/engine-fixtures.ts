// What the Engine test files share: engines on temporary SQLite files (or PostgreSQL schemas) closed after each
// test, waiting on runs, and a local OTLP/HTTP collector for the tracing tests.
import { afterEach } from 'vitest';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Engine } from 'ramus';
// @ts-expect-error: plain ESM helpers without types
import { settle, waitUntil, within } from './helpers.mjs';

/**
 * Engines for one test file: `open()` an engine on a new temporary file (or on `{ db }`: a
 * second engine on the same file, a restart), `track()` a run that may still wait when a
 * test ends. After each test, tracked runs are cancelled, engines closed, files removed.
 */
export function engineFixtures(prefix: string) {
  const dirs: string[] = [];
  const engines: Engine[] = [];
  const live: Array<{ cancel(): void; finished: Promise<unknown> }> = [];

  afterEach(async () => {
    const cancelled = live.splice(0);
    for (const run of cancelled) run.cancel();
    await within(Promise.all(cancelled.map((run) => run.finished.catch(() => {}))), 5000, 'cancelled runs settle');
    await settle();
    for (const engine of engines.splice(0)) await engine.close();
    for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
  });

  function tempDb(): string {
    return pgSchema('t') ?? path.join(tempDir(), 'runs.sqlite');
  }

  /** A new directory, removed after the test. */
  function tempDir(): string {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
    dirs.push(dir);
    return dir;
  }

  function open(options: ConstructorParameters<typeof Engine>[0] = {}): Engine {
    const engine = new Engine({ db: tempDb(), ...options });
    engines.push(engine);
    return engine;
  }

  function track<T extends { cancel(): void; finished: Promise<unknown> }>(run: T): T {
    run.finished.catch(() => {});
    live.push(run);
    return run;
  }

  return { engines, tempDb, tempDir, open, track };
}

let schemas = 0;

/**
 * In the PostgreSQL pass (`RAMUS_TEST_PG`, set by .ci/run): the URL of a new schema on that
 * server, named after `tag`, which the store creates on first open. Otherwise undefined:
 * the test uses a SQLite file.
 */
export function pgSchema(tag: string): string | undefined {
  const pg = process.env.RAMUS_TEST_PG;
  if (!pg) return undefined;
  return `${pg}${pg.includes('?') ? '&' : '?'}options=-csearch_path%3D${tag}_${process.pid}_${++schemas}_${Date.now()}`;
}

/** The outcome of a promise as a value: `{ ok: true, value }` or `{ ok: false, error }`. */
export async function settled<T>(promise: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: any }> {
  try {
    return { ok: true, value: await within(promise, 5000, 'run.finished') };
  } catch (error) {
    return { ok: false, error };
  }
}

/** Wait until the stored run has `status` (a batched run's row is written after its first turn). */
export function storedStatus(engine: Engine, runId: string, status: string, ms = 3000): Promise<void> {
  return waitUntil(() => engine.run(runId)?.status === status, `run ${runId} stored as ${status} (now ${engine.run(runId)?.status})`, ms);
}

/** A span as OTLP/HTTP JSON carries it. */
export interface Span {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: Array<{ key: string; value: Record<string, unknown> }>;
  events?: Array<{ name: string; attributes: Array<{ key: string; value: Record<string, unknown> }> }>;
  status?: { code?: number; message?: string };
}

/** An OTLP/HTTP (JSON) collector on a free loopback port: the spans and headers it received. */
export async function otlpCollector(): Promise<{ endpoint: string; spans: Span[]; headers: http.IncomingHttpHeaders[]; close(): void }> {
  const spans: Span[] = [];
  const headers: http.IncomingHttpHeaders[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      headers.push(req.headers);
      const json = JSON.parse(body);
      for (const rs of json.resourceSpans) for (const ss of rs.scopeSpans) spans.push(...ss.spans);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const endpoint = `http://127.0.0.1:${(server.address() as { port: number }).port}/v1/traces`;
  return { endpoint, spans, headers, close: () => server.close() };
}

/** The value of a span attribute. */
export function attr(s: Span | undefined, key: string): unknown {
  const v = s?.attributes.find((a) => a.key === key)?.value;
  return v === undefined ? undefined : Object.values(v)[0];
}
