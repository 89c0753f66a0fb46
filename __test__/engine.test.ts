// The durable Engine in one process: definitions, starting runs, reading the log back,
// statuses, values the store cannot hold, durability modes and pruning.
// Restarts (resume in another process) are in engine-restart.test.ts.
import { describe, expect, test } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { CancelledError, Engine, StateMachineRunner, StorageError, TestClock, runDag } from 'ramus';
import { engineFixtures, settled, storedStatus } from './engine-fixtures';
// @ts-expect-error: plain ESM helpers without types
import { deferred, settle, waitUntil, within } from './helpers.mjs';

// ---- fixtures ----

const { engines, tempDb, open, track } = engineFixtures('ramus-engine-');

/** A runner that resolves after a short real delay: each step boundary is a separate turn. */
const later = <T>(value: T, ms = 5) => new Promise<T>((r) => setTimeout(() => r(value), ms));

/** Runners most tests use. */
function registerBasics(engine: Engine) {
  const calls: string[] = [];
  engine.register({
    fetch: async ({ args }: any) => {
      calls.push(`fetch${args.i}`);
      return later(args.i * 10);
    },
    sum: async ({ input }: any) => {
      calls.push('sum');
      return later(Object.values(input as Record<string, number>).reduce((a, b) => a + b, 0));
    },
    echo: async ({ input, args }: any) => later(args === undefined ? input : { input, args }),
    publish: async ({ input, event }: any) => later({ input, event }),
    fail: async ({ args }: any) => {
      await later(null);
      const err = new Error(args?.message ?? 'boom') as Error & { code?: string };
      err.name = args?.name ?? 'Error';
      if (args?.code) err.code = args.code;
      throw err;
    },
  });
  return calls;
}

const pipeline = () => ({
  name: 'pipeline',
  nodes: {
    a: { runner: 'fetch', args: { i: 1 } },
    b: { runner: 'fetch', args: { i: 2 } },
    total: { runner: 'sum', parents: ['a', 'b'] },
  },
});

const approval = (name = 'approval', tags?: string[]) => ({
  name,
  initial: 'draft',
  ...(tags ? { tags } : {}),
  nodes: {
    draft: { runner: 'echo', transition: 'review' },
    review: { transition: { approve: 'publish', reject: 'draft' } },
    publish: { runner: 'publish', final: true },
  },
});

// ---- define ----

describe('define', () => {
  test('returns versions: same content (any key order) keeps the version, new content makes the next, A→B→A makes v3', () => {
    const engine = open();
    registerBasics(engine);
    const a = pipeline();
    const aReordered = {
      nodes: {
        total: { parents: ['a', 'b'], runner: 'sum' },
        b: { args: { i: 2 }, runner: 'fetch' },
        a: { args: { i: 1 }, runner: 'fetch' },
      },
      name: 'pipeline',
    };
    const b = { ...a, nodes: { ...a.nodes, b: { runner: 'fetch', args: { i: 3 } } } };
    expect(engine.define(a)).toEqual({ name: 'pipeline', version: 1, created: true });
    expect(engine.define(a)).toEqual({ name: 'pipeline', version: 1, created: false });
    expect(engine.define(aReordered)).toEqual({ name: 'pipeline', version: 1, created: false });
    expect(engine.define(b)).toEqual({ name: 'pipeline', version: 2, created: true });
    expect(engine.define(b)).toEqual({ name: 'pipeline', version: 2, created: false });
    expect(engine.define(a)).toEqual({ name: 'pipeline', version: 3, created: true });
    // Versions count per name.
    expect(engine.define({ ...a, name: 'other' })).toEqual({ name: 'other', version: 1, created: true });
  });

  test('start by name runs the latest version, or the version asked for', async () => {
    const engine = open();
    registerBasics(engine);
    const a = pipeline();
    const b = { ...a, nodes: { ...a.nodes, b: { runner: 'fetch', args: { i: 3 } } } };
    engine.define(a);
    engine.define(b);
    engine.define(a); // v3 = a's content again
    const latest = engine.start('pipeline');
    const v2 = engine.start('pipeline', { version: 2 });
    expect(await latest.finished).toBe(30);
    expect(await v2.finished).toBe(40);
    engine.flush();
    expect(engine.run(latest.runId)).toMatchObject({ definitionName: 'pipeline', definitionVersion: 3 });
    expect(engine.run(v2.runId)).toMatchObject({ definitionName: 'pipeline', definitionVersion: 2 });
    expect(() => engine.start('pipeline', { version: 9 })).toThrow(/9/);
  });

  test('a definition with an inline run function is rejected, naming the node, and nothing is stored', () => {
    const engine = open();
    registerBasics(engine);
    const config: any = { name: 'mixed', nodes: { a: { runner: 'fetch', args: { i: 1 } }, helper: { parents: ['a'], run: () => 1 } } };
    expect(() => engine.define(config)).toThrow(/'helper'/);
    expect(() => engine.define(config)).toThrow(/inline run/);
    expect(() => engine.start('mixed')).toThrow(/mixed/);
  });

  test('an unknown runner key is an error naming the node and the key (DAG node and machine state)', () => {
    const engine = open();
    registerBasics(engine);
    const dag = { name: 'bad-dag', nodes: { a: { runner: 'fetch', args: { i: 1 } }, enrich: { runner: 'enricher', parents: ['a'] } } };
    expect(() => engine.define(dag)).toThrow(/node 'enrich'.*'enricher'/);
    const machine = { name: 'bad-machine', initial: 's', nodes: { s: { runner: 'echo', transition: 't' }, t: { runner: 'summarize', final: true } } };
    expect(() => engine.define(machine)).toThrow(/'t'.*'summarize'/);
    // Neither was stored.
    expect(() => engine.start('bad-dag')).toThrow(/bad-dag/);
    expect(() => engine.start('bad-machine')).toThrow(/bad-machine/);
  });

  test('starting a stored definition in an engine that did not register its runner names the node and the key', () => {
    const db = tempDb();
    const definer = open({ db });
    registerBasics(definer);
    definer.define(pipeline());
    const other = open({ db });
    other.register('sum', ({ input }: any) => input);
    expect(() => other.start('pipeline')).toThrow(/node 'a'.*'fetch'/);
    expect(other.runs()).toEqual([]);
  });

  test('start of an unknown definition name is a clear error', () => {
    const engine = open();
    registerBasics(engine);
    expect(() => engine.start('no-such-flow')).toThrow(/definition.*'no-such-flow'|'no-such-flow'.*definition/i);
  });
});

// ---- start ----

describe('start', () => {
  test('a config mixing registered runners with inline functions runs both (it is not stored)', async () => {
    const engine = open();
    const seen: string[] = [];
    engine.register('shout', (async ({ input }: any) => (seen.push('shout'), String(input).toUpperCase())) as any);
    engine.register('long', ((g: { output: unknown }) => String(g.output).length > 3) as any);
    const machine = engine.start({
      name: 'mixed',
      initial: 'draft',
      nodes: {
        draft: { run: ({ input }: any) => (seen.push('draft'), `${input}!`), transition: { '': [{ state: 'loud', condition: 'long' }, { state: 'quiet' }] } },
        loud: { runner: 'shout', final: true },
        quiet: { final: true },
      },
    } as any, { input: 'hey' });
    expect(await machine.finished).toBe('HEY!');
    engine.register('after', (async ({ input }: any) => (seen.push('after'), `${input.a} then b`)) as any);
    const dag = engine.start({ name: 'mixed-dag', nodes: { a: { run: () => 'a' }, b: { runner: 'after', parents: ['a'] } } } as any);
    expect(await dag.finished).toBe('a then b');
    expect(seen).toEqual(['draft', 'shout', 'after']);
  });

  test('by name: the run is stored with its definition, input and output', async () => {
    const engine = open({ durability: 'sync' });
    registerBasics(engine);
    engine.define(pipeline());
    const run = engine.start('pipeline', { input: { q: 'x' } });
    expect(await run.finished).toBe(30);
    const row = engine.run(run.runId)!;
    expect(row).toMatchObject({
      id: run.runId,
      name: 'pipeline',
      kind: 'dag',
      definitionName: 'pipeline',
      definitionVersion: 1,
      status: 'finished',
      input: { q: 'x' },
      output: 30,
      error: null,
      parentRunId: null,
    });
    expect(row.endedAt).toBeGreaterThanOrEqual(row.createdAt);
  });

  test('by config of registered runners: the config is defined implicitly', async () => {
    const engine = open({ durability: 'sync' });
    registerBasics(engine);
    const machine = approval('implicit');
    const run = track(engine.start(machine, { input: 'text' }));
    await storedStatus(engine, run.runId, 'waitingForEvent');
    const [row] = engine.runs();
    expect(row.id).toBe(run.runId);
    expect(row.kind).toBe('machine');
    expect(row.definitionName).toBe('implicit');
    expect(row.definitionVersion).toBe(1);
    // The same content again is the same version; it can also be started by name now.
    expect(engine.define(machine)).toEqual({ name: 'implicit', version: 1, created: false });
    const again = track(engine.start('implicit', { input: 'more' }));
    await storedStatus(engine, again.runId, 'waitingForEvent');
  });

  test('by config with inline run functions: runs and is stored, without a definition', async () => {
    const engine = open({ durability: 'sync' });
    const run = engine.start({ name: 'inline', nodes: { a: { run: ({ rootInput }: any) => rootInput * 2 } } } as any, { input: 21 });
    expect(await run.finished).toBe(42);
    expect(engine.run(run.runId)).toMatchObject({ name: 'inline', status: 'finished', output: 42, definitionName: null, definitionVersion: null });
    expect(() => engine.start('inline')).toThrow(/inline/);
  });

  test('args reach each runner', async () => {
    const engine = open({ durability: 'sync' });
    registerBasics(engine);
    const run = engine.start({
      name: 'args',
      nodes: {
        x: { runner: 'echo', args: { lang: 'en', n: [1, 2] } },
        y: { runner: 'echo', args: { lang: 'fr' } },
      },
    });
    expect(await run.finished).toEqual({ x: { input: {}, args: { lang: 'en', n: [1, 2] } }, y: { input: {}, args: { lang: 'fr' } } });
  });

  test('tools reach runners (engine tools merged with run tools) and are never stored', async () => {
    const secret = `tool-secret-${process.pid}-${Date.now()}`;
    const visible = `input-marker-${process.pid}-${Date.now()}`;
    class Client {
      token = secret;
      double(x: number) {
        return x * 2;
      }
    }
    const db = tempDb();
    const engine = new Engine({ db, durability: 'sync', tools: { client: new Client(), apiKey: secret, region: 'eu' } });
    const seen: any[] = [];
    engine.register('useTools', async ({ tools, rootInput }: any) => {
      seen.push(tools);
      return later({ doubled: tools.client.double(rootInput.n), region: tools.region, extra: tools.extra(), sameKey: tools.apiKey === secret });
    });
    const run = engine.start({ name: 'tools', nodes: { a: { runner: 'useTools' } } }, { input: { n: 21, marker: visible }, tools: { extra: () => 'x', region: 'us' } });
    expect(await run.finished).toEqual({ doubled: 42, region: 'us', extra: 'x', sameKey: true });
    expect(seen[0].client).toBeInstanceOf(Client);
    const stored = JSON.stringify([engine.run(run.runId), engine.steps(run.runId), engine.events(run.runId), engine.runs()]);
    expect(stored).toContain(visible);
    expect(stored).not.toContain(secret);
    await engine.close();
    // On a file, the bytes themselves too (the PostgreSQL pass has no file to scan).
    if (process.env.RAMUS_TEST_PG) return;
    const bytes = ['', '-wal', '-shm']
      .map((suffix) => db + suffix)
      .filter((f) => fs.existsSync(f))
      .map((f) => fs.readFileSync(f).toString('latin1'))
      .join('');
    expect(bytes).toContain(visible); // the scan can see stored text...
    expect(bytes).not.toContain(secret); // ...and the tools are not in it
  });

  test('tags, info and a run name are stored', async () => {
    const engine = open({ durability: 'sync' });
    registerBasics(engine);
    engine.define(pipeline());
    const run = engine.start('pipeline', { tags: ['urgent', 'eu'], info: { requestedBy: 'ann', priority: 2 }, name: 'pipeline for ann' });
    await run.finished;
    expect(run.name).toBe('pipeline for ann');
    expect(engine.run(run.runId)).toMatchObject({
      name: 'pipeline for ann',
      definitionName: 'pipeline',
      tags: ['urgent', 'eu'],
      info: { requestedBy: 'ann', priority: 2 },
    });
    const plain = engine.start('pipeline');
    await plain.finished;
    expect(engine.run(plain.runId)).toMatchObject({ name: 'pipeline', tags: [], info: null });
  });

  test('runs() filters by name, status and tags, newest first, with a limit', async () => {
    const clock = new TestClock();
    const engine = open({ durability: 'sync', clock });
    registerBasics(engine);
    engine.define(pipeline());
    engine.define({ name: 'failing', nodes: { a: { runner: 'fail' } } });
    const ids: string[] = [];
    const r1 = engine.start('pipeline', { tags: ['x'] });
    ids.push(r1.runId);
    await r1.finished;
    await clock.advance(3);
    const r2 = engine.start('failing', { tags: ['x', 'y'] });
    ids.push(r2.runId);
    await r2.finished.catch(() => {});
    await clock.advance(3);
    const r3 = engine.start('pipeline', { tags: ['y'] });
    ids.push(r3.runId);
    await r3.finished;
    // created 3ms apart on the run's clock
    const t0 = engine.run(r1.runId)!.createdAt;
    expect([r1, r2, r3].map((r) => engine.run(r.runId)!.createdAt - t0)).toEqual([0, 3, 6]);
    const idsOf = (rows: Array<{ id: string }>) => rows.map((r) => r.id);
    expect(idsOf(engine.runs())).toEqual([r3.runId, r2.runId, r1.runId]);
    expect(idsOf(engine.runs({ name: 'pipeline' }))).toEqual([r3.runId, r1.runId]);
    expect(idsOf(engine.runs({ status: 'error' }))).toEqual([r2.runId]);
    expect(idsOf(engine.runs({ status: 'finished' }))).toEqual([r3.runId, r1.runId]);
    expect(idsOf(engine.runs({ tags: ['x'] }))).toEqual([r2.runId, r1.runId]);
    expect(idsOf(engine.runs({ tags: ['y'], name: 'pipeline' }))).toEqual([r3.runId]);
    expect(idsOf(engine.runs({ limit: 2 }))).toEqual([r3.runId, r2.runId]);
    expect(engine.runs({ name: 'nothing' })).toEqual([]);
  });

  test('steps(runId): in seq order with input, output, status and timings', async () => {
    const engine = open({ durability: 'sync' });
    registerBasics(engine);
    const before = Date.now();
    const run = engine.start(pipeline(), { input: 'root' });
    expect(await run.finished).toBe(30);
    const after = Date.now();
    const steps = engine.steps(run.runId);
    expect(steps.map((s) => s.seq)).toEqual([1, 2, 3]);
    expect(new Set(steps.map((s) => s.id)).size).toBe(3);
    expect(steps.map((s) => s.node).slice(0, 2).sort()).toEqual(['a', 'b']);
    const byNode = Object.fromEntries(steps.map((s) => [s.node, s]));
    expect(steps[2].node).toBe('total');
    expect(byNode.a).toMatchObject({ runId: run.runId, status: 'finished', output: 10, error: null, attempt: 1 });
    expect(byNode.b).toMatchObject({ status: 'finished', output: 20 });
    expect(byNode.total).toMatchObject({ status: 'finished', input: { a: 10, b: 20 }, output: 30 });
    for (const s of steps) {
      expect(s.startedAt).toBeGreaterThanOrEqual(before);
      expect(s.endedAt).toBeGreaterThanOrEqual(s.startedAt!);
      expect(s.endedAt).toBeLessThanOrEqual(after);
    }
    // total started after both parents ended.
    expect(byNode.total.startedAt).toBeGreaterThanOrEqual(Math.max(byNode.a.endedAt!, byNode.b.endedAt!));
    expect(engine.steps('00000000-0000-7000-8000-000000000000')).toEqual([]);
  });

  test('transitions(runId) of a machine: states, event type and data, in order', async () => {
    const engine = open({ durability: 'sync' });
    registerBasics(engine);
    const run = track(engine.start(approval(), { input: 'v1' }));
    await storedStatus(engine, run.runId, 'waitingForEvent');
    engine.send(run.runId, { type: 'reject', data: { why: 'typo' } });
    await waitUntil(() => engine.steps(run.runId).length === 4, 'back in review');
    await storedStatus(engine, run.runId, 'waitingForEvent');
    engine.send(run.runId, { type: 'approve', data: { by: 'ann' } });
    const out: any = await within(run.finished, 3000, 'finished');
    expect(out).toEqual({ input: 'v1', event: { type: 'approve', data: { by: 'ann' } } });
    const t = engine.transitions(run.runId);
    expect(t.map((x) => x.seq)).toEqual(t.map((_, i) => i + 1));
    // schema.md documents a row for the entry into the initial state (from: null); the engine
    // does not write one at the moment (reported). Accept it when present, check the rest.
    const moves = t[0]?.from === null ? (expect(t[0].to).toBe('draft'), t.slice(1)) : t;
    expect(moves.map((x) => [x.from, x.to, x.eventType, x.eventData])).toEqual([
      ['draft', 'review', null, null],
      ['review', 'draft', 'reject', { why: 'typo' }],
      ['draft', 'review', null, null],
      ['review', 'publish', 'approve', { by: 'ann' }],
    ]);
    for (let i = 1; i < t.length; i++) expect(t[i].time).toBeGreaterThanOrEqual(t[i - 1].time);
    expect(engine.steps(run.runId).map((s) => s.node)).toEqual(['draft', 'review', 'draft', 'review', 'publish']);
  });

  test('events(runId): custom emit() events with their data, node and step', async () => {
    const engine = open({ durability: 'sync' });
    engine.register({
      work: async ({ emit, args }: any) => {
        emit('progress', { pct: 50, of: args.of });
        await later(null);
        emit('progress', { pct: 100, of: args.of });
        emit('note');
        return 'done';
      },
    });
    const dag = engine.start({ name: 'emitting', nodes: { a: { runner: 'work', args: { of: 'a' } } } });
    await dag.finished;
    const steps = engine.steps(dag.runId);
    const events = engine.events(dag.runId);
    expect(events.map((e) => [e.type, e.data, e.sourceNode])).toEqual([
      ['progress', { pct: 50, of: 'a' }, 'a'],
      ['progress', { pct: 100, of: 'a' }, 'a'],
      ['note', null, 'a'],
    ]);
    for (const e of events) expect(e.stepId).toBe(steps[0].id);

    const machine = engine.start({ name: 'emitting-machine', initial: 's', nodes: { s: { runner: 'work', args: { of: 's' }, final: true } } });
    await machine.finished;
    expect(engine.events(machine.runId).map((e) => [e.type, e.data, e.sourceNode])).toEqual([
      ['progress', { pct: 50, of: 's' }, 's'],
      ['progress', { pct: 100, of: 's' }, 's'],
      ['note', null, 's'],
    ]);
    // The lifecycle events are not repeated as custom events.
    expect(engine.events(machine.runId).every((e) => !e.type.includes(':'))).toBe(true);
  });

  test('children(runId): a DAG and a machine started inside a step are stored as child runs', async () => {
    const engine = open({ durability: 'sync' });
    engine.register('fanout', async ({ input }: any) => {
      const sub = await runDag({
        dag: { name: 'inner-dag', nodes: { x: { run: async () => later('X') }, y: { parents: ['x'], run: ({ input }: any) => `${input.x}Y` } } },
        input: 'to-dag',
      } as any);
      const m = new StateMachineRunner({
        config: { name: 'inner-machine', initial: 'p', nodes: { p: { run: async () => later('P'), transition: 'q' }, q: { final: true, run: ({ input }: any) => `${input}Q` } } },
        input: 'to-machine',
      } as any);
      void m.run();
      return { sub, machine: await m.finished };
    });
    engine.register('echo', async ({ input }: any) => later(input));
    const run = engine.start({ name: 'outer', nodes: { start: { runner: 'echo' }, fan: { runner: 'fanout', parents: ['start'] } } });
    expect(await run.finished).toEqual({ sub: 'XY', machine: 'PQ' });
    const fanStep = engine.steps(run.runId).find((s) => s.node === 'fan')!;
    expect(engine.steps(run.runId).map((s) => s.node)).toEqual(['start', 'fan']);
    const children = engine.children(run.runId);
    expect(children.map((c) => [c.name, c.kind, c.status, c.input, c.output]).sort()).toEqual([
      ['inner-dag', 'dag', 'finished', 'to-dag', 'XY'],
      ['inner-machine', 'machine', 'finished', 'to-machine', 'PQ'],
    ]);
    for (const c of children) {
      expect(c.parentRunId).toBe(run.runId);
      expect(c.parentStepId).toBe(fanStep.id);
      expect(c.id).not.toBe(run.runId);
    }
    const dagChild = children.find((c) => c.kind === 'dag')!;
    const machineChild = children.find((c) => c.kind === 'machine')!;
    expect(engine.steps(dagChild.id).map((s) => [s.node, s.status, s.output])).toEqual([
      ['x', 'finished', 'X'],
      ['y', 'finished', 'XY'],
    ]);
    expect(engine.steps(machineChild.id).map((s) => [s.node, s.status, s.output])).toEqual([
      ['p', 'finished', 'P'],
      ['q', 'finished', 'PQ'],
    ]);
    expect(engine.transitions(machineChild.id).filter((t) => t.from !== null).map((t) => [t.from, t.to])).toEqual([['p', 'q']]);
    expect(engine.children(dagChild.id)).toEqual([]);
  });

  test('children(runId) of a machine run: a DAG started inside a state', async () => {
    const engine = open({ durability: 'sync' });
    engine.register('research', async ({ input }: any) =>
      runDag({ dag: { name: 'lookup', nodes: { q: { run: async ({ rootInput }: any) => later(`found ${rootInput}`) } } }, input } as any),
    );
    const run = engine.start({ name: 'agent', initial: 'r', nodes: { r: { runner: 'research', final: true } } }, { input: 'cats' });
    expect(await run.finished).toBe('found cats');
    const [child] = engine.children(run.runId);
    expect(child).toMatchObject({ name: 'lookup', kind: 'dag', status: 'finished', parentRunId: run.runId, parentStepId: engine.steps(run.runId)[0].id });
    expect(engine.steps(child.id).map((s) => [s.node, s.output])).toEqual([['q', 'found cats']]);
  });
});

// ---- statuses ----

describe('run statuses', () => {
  test('error: finished rejects with the thrown error, stored with name, message, stack and own fields', async () => {
    const engine = open({ durability: 'sync' });
    registerBasics(engine);
    const run = engine.start({ name: 'failing', nodes: { ok: { runner: 'echo' }, bad: { runner: 'fail', parents: ['ok'], args: { name: 'QuotaError', message: 'quota exceeded', code: 'Q1' } } } });
    const result = await settled(run.finished);
    expect(result.ok).toBe(false);
    const err = (result as { error: any }).error;
    expect(err.name).toBe('QuotaError');
    expect(err.message).toBe('quota exceeded');
    const row = engine.run(run.runId)!;
    expect(row.status).toBe('error');
    expect(row.output).toBeNull();
    expect(row.endedAt).not.toBeNull();
    expect(row.error).toMatchObject({ name: 'QuotaError', message: 'quota exceeded', code: 'Q1' });
    expect(typeof (row.error as any).stack).toBe('string');
    expect((row.error as any).stack).toContain('quota exceeded');
    const bad = engine.steps(run.runId).find((s) => s.node === 'bad')!;
    expect(bad.status).toBe('error');
    expect(bad.error).toMatchObject({ name: 'QuotaError', message: 'quota exceeded' });
    expect(engine.steps(run.runId).find((s) => s.node === 'ok')!.status).toBe('finished');
  });

  test('cancelled: run.cancel() stops a DAG and it is stored as cancelled', async () => {
    const engine = open({ durability: 'sync' });
    engine.register('wait', ({ isCancelled }: any) => new Promise((resolve) => {
      const t = setInterval(() => {
        if (isCancelled()) {
          clearInterval(t);
          resolve('stopped');
        }
      }, 2);
    }));
    engine.register('never', () => 'should not run');
    const run = engine.start({ name: 'cancel-me', nodes: { w: { runner: 'wait' }, after: { runner: 'never', parents: ['w'] } } });
    await waitUntil(() => engine.steps(run.runId).some((s) => s.node === 'w' && s.status === 'running'), 'w running');
    run.cancel();
    const result = await settled(run.finished);
    expect(result.ok).toBe(false);
    expect((result as any).error).toBeInstanceOf(CancelledError);
    await storedStatus(engine, run.runId, 'cancelled');
    expect(engine.run(run.runId)!.endedAt).not.toBeNull();
    expect(engine.steps(run.runId).map((s) => s.node)).toEqual(['w']);
  });

  test('cancelled: a machine waiting for an event, cancelled, leaves waiting()', async () => {
    const engine = open({ durability: 'sync' });
    registerBasics(engine);
    const run = engine.start(approval());
    run.finished.catch(() => {});
    await storedStatus(engine, run.runId, 'waitingForEvent');
    expect(engine.waiting().map((r) => r.id)).toEqual([run.runId]);
    run.cancel();
    await storedStatus(engine, run.runId, 'cancelled');
    expect(engine.waiting()).toEqual([]);
    expect(() => engine.send(run.runId, { type: 'approve' })).toThrow(/cancelled/);
  });

  test('waitingForEvent: waiting() lists machines (filter by name and tags), send() moves one on', async () => {
    const engine = open({ durability: 'sync' });
    registerBasics(engine);
    const eu = track(engine.start(approval(), { input: 'eu doc', tags: ['eu'] }));
    const us = track(engine.start(approval(), { input: 'us doc', tags: ['us'] }));
    const other = track(engine.start(approval('review'), { input: 'other', tags: ['eu', 'legal'] }));
    const dag = engine.start(pipeline());
    await dag.finished;
    for (const r of [eu, us, other]) await storedStatus(engine, r.runId, 'waitingForEvent');
    const ids = (rows: Array<{ id: string }>) => rows.map((r) => r.id).sort();
    expect(ids(engine.waiting())).toEqual([eu.runId, us.runId, other.runId].sort());
    expect(ids(engine.waiting({ name: 'approval' }))).toEqual([eu.runId, us.runId].sort());
    expect(ids(engine.waiting({ tags: ['eu'] }))).toEqual([eu.runId, other.runId].sort());
    expect(ids(engine.waiting({ name: 'approval', tags: ['eu'] }))).toEqual([eu.runId]);
    expect(engine.waiting({ name: 'pipeline' })).toEqual([]);
    expect(engine.waiting()[0]).toMatchObject({ status: 'waitingForEvent', kind: 'machine' });

    const eventId = engine.send(eu.runId, { type: 'approve', data: { by: 'ann' } });
    expect(typeof eventId).toBe('string');
    expect(await within(eu.finished, 3000, 'eu finished')).toEqual({ input: 'eu doc', event: { type: 'approve', data: { by: 'ann' } } });
    await storedStatus(engine, eu.runId, 'finished');
    expect(engine.run(eu.runId)!.output).toEqual({ input: 'eu doc', event: { type: 'approve', data: { by: 'ann' } } });
    expect(ids(engine.waiting())).toEqual([us.runId, other.runId].sort());
  });

  test('send(): to a DAG, to an unknown id, to a finished run, with a bad event → clear errors', async () => {
    const engine = open({ durability: 'sync' });
    registerBasics(engine);
    const gate = deferred();
    engine.register('gate', () => gate.promise);
    const liveDag = engine.start({ name: 'gated', nodes: { g: { runner: 'gate' } } });
    expect(() => engine.send(liveDag.runId, { type: 'go' })).toThrow(/DAG/);
    gate.resolve('done');
    await liveDag.finished;
    expect(() => engine.send(liveDag.runId, { type: 'go' })).toThrow(/DAG|ended/);

    const unknown = '01900000-0000-7000-8000-000000000000';
    expect(() => engine.send(unknown, { type: 'go' })).toThrow(new RegExp(unknown));

    const m = engine.start(approval());
    await storedStatus(engine, m.runId, 'waitingForEvent');
    engine.send(m.runId, { type: 'approve' });
    await m.finished;
    await storedStatus(engine, m.runId, 'finished');
    let caught: any;
    try {
      engine.send(m.runId, { type: 'approve' });
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(Error);
    expect(caught.message).toContain(m.runId);
    expect(caught.message).toMatch(/finished/);

    const waitingRun = track(engine.start(approval()));
    await storedStatus(engine, waitingRun.runId, 'waitingForEvent');
    expect(() => engine.send(waitingRun.runId, { type: '' })).toThrow(/type/);
    expect(() => engine.send(waitingRun.runId, { type: 'approve', data: { cb: () => 1 } })).toThrow(/event\.data\.cb: functions cannot be stored/);
    // A refused event is not delivered.
    await settle();
    expect(engine.run(waitingRun.runId)!.status).toBe('waitingForEvent');
  });
});

// ---- values the store cannot hold ----

describe('values that cannot be stored', () => {
  const cyclic = () => {
    const c: any = { graph: { name: 'g' } };
    c.graph.self = c.graph;
    return c;
  };
  const cases: Array<[string, () => object, string]> = [
    ['a function', () => ({ user: { id: 1, session: () => 'token' } }), 'context.user.session: functions cannot be stored'],
    ['a BigInt', () => ({ count: 10n }), 'context.count: BigInt values cannot be stored'],
    ['a class instance (Map)', () => ({ cache: new Map([['a', 1]]) }), 'context.cache: Map instances cannot be stored'],
    ['a cycle', cyclic, 'context.graph.self: circular reference'],
  ];

  test.each(cases)('DAG context holding %s: finished rejects with a StorageError naming the path, never stored as finished', async (_label, context, message) => {
    const engine = open({ durability: 'sync' });
    registerBasics(engine);
    const run = engine.start({ name: 'ctx', nodes: { a: { runner: 'echo' }, b: { runner: 'echo', parents: ['a'] } } }, { context: context() });
    const result = await settled(run.finished);
    expect(result.ok).toBe(false);
    const err = (result as any).error;
    expect(err).toBeInstanceOf(StorageError);
    expect(err.name).toBe('StorageError');
    expect(err.message).toContain(message);
    engine.flush();
    // Stored as failed, with the same reason.
    expect(engine.run(run.runId)?.status).toBe('error');
    expect((engine.run(run.runId)?.error as any).message).toBe((result as any).error.message);
  });

  test.each(cases)('machine context holding %s: finished rejects with a StorageError naming the path, never stored as finished', async (_label, context, message) => {
    const engine = open({ durability: 'batched' });
    registerBasics(engine);
    const run = engine.start({ name: 'mctx', initial: 'a', nodes: { a: { runner: 'echo', transition: 'b' }, b: { runner: 'echo', final: true } } }, { context: context() });
    const result = await settled(run.finished);
    expect(result.ok).toBe(false);
    expect((result as any).error).toBeInstanceOf(StorageError);
    expect((result as any).error.message).toContain(message);
    engine.flush();
    // Stored as failed, with the same reason.
    expect(engine.run(run.runId)?.status).toBe('error');
    expect((engine.run(run.runId)?.error as any).message).toBe((result as any).error.message);
  });

  test('a runner that puts a function into the context fails the run at the next step boundary', async () => {
    const engine = open({ durability: 'sync' });
    const ran: string[] = [];
    engine.register({
      login: async ({ context }: any) => {
        ran.push('login');
        await later(null);
        context.user = { name: 'ann', session: { refresh: () => 'token' } };
        return 'ok';
      },
      next: async () => {
        ran.push('next');
        return later('next');
      },
    });
    const run = engine.start({ name: 'leaky', nodes: { login: { runner: 'login' }, use: { runner: 'next', parents: ['login'] } } }, { context: {} });
    const result = await settled(run.finished);
    expect(result.ok).toBe(false);
    expect((result as any).error).toBeInstanceOf(StorageError);
    expect((result as any).error.message).toContain('context.user.session.refresh: functions cannot be stored');
    engine.flush();
    // Stored as failed, with the same reason.
    expect(engine.run(run.runId)?.status).toBe('error');
    expect((engine.run(run.runId)?.error as any).message).toBe((result as any).error.message);
    const steps = engine.steps(run.runId);
    expect(steps.some((s) => s.node === 'use' && s.status === 'finished')).toBe(false);
    expect(ran[0]).toBe('login');
  });

  test('a non-JSON input to start() throws synchronously, naming input, and stores nothing', () => {
    const engine = open({ durability: 'sync' });
    registerBasics(engine);
    engine.define(pipeline());
    let caught: any;
    try {
      engine.start('pipeline', { input: { query: 'x', callback: () => 1 } });
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(StorageError);
    expect(caught.message).toBe('input.callback: functions cannot be stored');
    expect(() => engine.start('pipeline', { input: 5n })).toThrow(/^input: BigInt values cannot be stored$/);
    expect(() => engine.start('pipeline', { input: [1, new Set()] })).toThrow(/^input\[1\]: Set instances cannot be stored/);
    engine.flush();
    expect(engine.runs()).toEqual([]);
  });

  test('a node output containing a function fails the run, naming the path', async () => {
    const engine = open({ durability: 'sync' });
    const ran: string[] = [];
    engine.register({
      connect: async () => {
        ran.push('connect');
        return later({ url: 'db://x', close: () => {} });
      },
      use: async ({ input }: any) => {
        ran.push('use');
        return later(input);
      },
    });
    const run = engine.start({ name: 'leaky-output', nodes: { connect: { runner: 'connect' }, use: { runner: 'use', parents: ['connect'] } } });
    const result = await settled(run.finished);
    expect(result.ok).toBe(false);
    const err = (result as any).error;
    expect(err).toBeInstanceOf(StorageError);
    expect(err.message).toMatch(/connect\.output\.close: functions cannot be stored/);
    await storedStatus(engine, run.runId, 'error');
    expect((engine.run(run.runId)!.error as any).message).toBe(err.message);
    expect(ran[0]).toBe('connect');
    // The output that cannot be stored is not stored as a finished step.
    expect(engine.steps(run.runId).filter((s) => s.status === 'finished')).toEqual([]);
  });

  test('a machine state output containing a function fails the run, naming the path', async () => {
    const engine = open({ durability: 'sync' });
    engine.register({ connect: async () => later({ handle: { on: () => {} } }), use: async ({ input }: any) => later(input) });
    const run = engine.start({ name: 'leaky-state', initial: 'connect', nodes: { connect: { runner: 'connect', transition: 'use' }, use: { runner: 'use', final: true } } });
    const result = await settled(run.finished);
    expect(result.ok).toBe(false);
    expect((result as any).error).toBeInstanceOf(StorageError);
    expect((result as any).error.message).toMatch(/connect\.output\.handle\.on: functions cannot be stored/);
    engine.flush();
    // Stored as failed, with the same reason.
    expect(engine.run(run.runId)?.status).toBe('error');
    expect((engine.run(run.runId)?.error as any).message).toBe((result as any).error.message);
    expect(engine.steps(run.runId).some((s) => s.node === 'connect' && s.status === 'finished')).toBe(false);
  });
});

// ---- durability ----

describe('durability', () => {
  test.each(['sync', 'batched'] as const)("fsync: true (synchronous = FULL), %s: runs are stored, and another engine resumes them", async (durability) => {
    const db = tempDb();
    const engine = open({ db, durability, fsync: true });
    registerBasics(engine);
    const dag = engine.start(pipeline());
    const machine = engine.start(approval(), { input: 'x' }) as StateMachineRunner;
    expect(await dag.finished).toBe(30);
    await machine.run();
    await engine.close();
    const next = open({ db, fsync: true });
    registerBasics(next);
    expect(next.run(dag.runId)).toMatchObject({ status: 'finished', output: 30 });
    const again = await next.resume(machine.runId);
    next.send(machine.runId, { type: 'approve' });
    expect(await again.finished).toMatchObject({ input: 'x', event: { type: 'approve' } });
    expect(next.run(machine.runId)!.status).toBe('finished');
  });

  test('fsync must be a boolean', () => {
    for (const fsync of ['yes', 1, null]) {
      expect(() => new Engine({ db: ':memory:', fsync: fsync as any })).toThrow(/^Engine fsync must be true or false, got /);
    }
  });

  test("'sync': a step is committed before the next step starts, and the end before finished resolves", async () => {
    const engine = open({ durability: 'sync' });
    let seenByB: any[] = [];
    engine.register({
      first: async () => later('A'),
      second: ({ input }: any) => {
        seenByB = engine.steps(runId).map((s) => [s.node, s.status, s.output]);
        return `${input.a}B`;
      },
    });
    const run = engine.start({ name: 'sync', nodes: { a: { runner: 'first' }, b: { runner: 'second', parents: ['a'] } } });
    const runId = run.runId;
    expect(await run.finished).toBe('AB');
    expect(seenByB.filter(([node]) => node === 'a')).toEqual([['a', 'finished', 'A']]);
    // No flush: the end was committed before finished resolved.
    expect(engine.run(runId)).toMatchObject({ status: 'finished', output: 'AB' });
  });

  test("'batched' (the default): everything is there after flush()", async () => {
    const engine = open();
    expect(engine.durability).toBe('batched');
    registerBasics(engine);
    const runs = [engine.start(pipeline()), engine.start(pipeline()), engine.start(approval(), { input: 'x' })];
    await Promise.all(runs.slice(0, 2).map((r) => r.finished));
    await waitUntil(() => (runs[2] as any).machineStatus === 'waitingForEvent', 'machine waiting');
    engine.flush();
    for (const r of runs.slice(0, 2)) {
      expect(engine.run(r.runId)).toMatchObject({ status: 'finished', output: 30 });
      expect(engine.steps(r.runId).map((s) => s.status)).toEqual(['finished', 'finished', 'finished']);
    }
    expect(engine.run(runs[2].runId)!.status).toBe('waitingForEvent');
    runs[2].cancel();
    await runs[2].finished.catch(() => {});
  });

  test("'batched': everything is there after close(), for another engine on the file", async () => {
    const db = tempDb();
    const engine = new Engine({ db, durability: 'batched' });
    registerBasics(engine);
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const r = engine.start(pipeline(), { input: i });
      ids.push(r.runId);
      await r.finished;
    }
    await engine.close();
    expect(() => engine.start(pipeline())).toThrow(/closed/);
    const reader = open({ db });
    expect(reader.runs().map((r) => r.id).sort()).toEqual([...ids].sort());
    for (const [i, id] of ids.entries()) {
      expect(reader.run(id)).toMatchObject({ status: 'finished', input: i, output: 30 });
      expect(reader.steps(id)).toHaveLength(3);
    }
  });

  test("'off' engine: runs work but nothing is stored; a run may still ask for 'sync'", async () => {
    const engine = open({ durability: 'off' });
    registerBasics(engine);
    engine.define(pipeline());
    engine.define(approval());
    const run = engine.start('pipeline', { input: 1 });
    expect(await run.finished).toBe(30);
    const m = engine.start('approval', { input: 'doc' });
    await waitUntil(() => (m as any).machineStatus === 'waitingForEvent', 'machine waiting');
    (m as any).send({ type: 'approve' });
    expect(await m.finished).toEqual({ input: 'doc', event: { type: 'approve' } });
    engine.flush();
    expect(engine.runs()).toEqual([]);
    expect(engine.run(run.runId)).toBeUndefined();
    expect(engine.steps(run.runId)).toEqual([]);
    expect(engine.transitions(m.runId)).toEqual([]);

    const stored = engine.start('pipeline', { durability: 'sync' });
    await stored.finished;
    expect(engine.runs().map((r) => r.id)).toEqual([stored.runId]);
  });

  test("per run: durability 'off' on a storing engine stores nothing for that run only", async () => {
    const engine = open({ durability: 'sync' });
    registerBasics(engine);
    engine.define(pipeline());
    const off = engine.start('pipeline', { durability: 'off' });
    const on = engine.start('pipeline');
    const batched = engine.start('pipeline', { durability: 'batched' });
    await Promise.all([off.finished, on.finished, batched.finished]);
    engine.flush();
    expect(engine.runs().map((r) => r.id).sort()).toEqual([on.runId, batched.runId].sort());
    expect(engine.steps(off.runId)).toEqual([]);
    expect(engine.steps(batched.runId)).toHaveLength(3);
  });

  test('an unknown durability is refused', () => {
    expect(() => open({ durability: 'always' as any })).toThrow(/durability/);
    const engine = open();
    registerBasics(engine);
    engine.define(pipeline());
    expect(() => engine.start('pipeline', { durability: 'eventually' as any })).toThrow(/durability/);
  });
});

// ---- prune ----

describe('prune', () => {
  /** Two runs, 15ms on the engine's clock before `cut`, two 15ms after it; then 5ms pass. */
  async function seed(engine: Engine, clock: TestClock) {
    registerBasics(engine);
    engine.define(pipeline());
    engine.define({ name: 'failing', nodes: { a: { runner: 'fail' } } });
    const done = async (name: string) => {
      const r = engine.start(name);
      await r.finished.catch(() => {});
      return r.runId;
    };
    const oldOk = await done('pipeline');
    const oldErr = await done('failing');
    await clock.advance(15);
    const cut = clock.now();
    await clock.advance(15);
    const newOk = await done('pipeline');
    const newErr = await done('failing');
    await clock.advance(5);
    return { oldOk, oldErr, newOk, newErr, cut };
  }

  test('olderThan a time (number) with a status deletes only those runs, with their steps', async () => {
    const clock = new TestClock();
    const engine = open({ durability: 'sync', clock });
    const { oldOk, oldErr, newOk, newErr, cut } = await seed(engine, clock);
    expect(engine.steps(oldErr)).toHaveLength(1);
    expect(engine.prune({ olderThan: cut, status: 'error' })).toBe(1);
    expect(engine.run(oldErr)).toBeUndefined();
    expect(engine.steps(oldErr)).toEqual([]);
    expect(engine.runs().map((r) => r.id).sort()).toEqual([oldOk, newOk, newErr].sort());
    expect(engine.steps(oldOk)).toHaveLength(3);
  });

  test('olderThan a Date deletes every older run; an age that nothing is older than deletes nothing', async () => {
    const clock = new TestClock();
    const engine = open({ durability: 'sync', clock });
    const { oldOk, oldErr, newOk, newErr, cut } = await seed(engine, clock);
    expect(engine.prune({ olderThan: '1h' })).toBe(0);
    expect(engine.runs()).toHaveLength(4);
    expect(engine.prune({ olderThan: new Date(cut) })).toBe(2);
    expect(engine.runs().map((r) => r.id).sort()).toEqual([newOk, newErr].sort());
    for (const id of [oldOk, oldErr]) expect(engine.steps(id)).toEqual([]);
  });

  test("olderThan '0ms' deletes all runs; definitions survive", async () => {
    const clock = new TestClock();
    const engine = open({ durability: 'sync', clock });
    await seed(engine, clock);
    expect(engine.prune({ olderThan: '0ms', status: 'finished' })).toBe(2);
    expect(engine.runs().map((r) => r.status)).toEqual(['error', 'error']);
    expect(engine.prune({ olderThan: '0ms' })).toBe(2);
    expect(engine.runs()).toEqual([]);
    expect(engine.define(pipeline())).toEqual({ name: 'pipeline', version: 1, created: false });
    const again = engine.start('pipeline');
    expect(await again.finished).toBe(30);
  });

  test('pruning a run deletes the runs started inside it', async () => {
    const clock = new TestClock();
    const engine = open({ durability: 'sync', clock });
    engine.register('nest', async () => runDag({ dag: { name: 'inner', nodes: { x: { run: async () => later('X') } } }, input: null } as any));
    const run = engine.start({ name: 'outer', nodes: { n: { runner: 'nest' } } });
    await run.finished;
    const [child] = engine.children(run.runId);
    expect(child).toBeDefined();
    await clock.advance(5);
    expect(engine.prune({ olderThan: clock.now(), status: 'finished' })).toBeGreaterThanOrEqual(1);
    expect(engine.run(run.runId)).toBeUndefined();
    expect(engine.run(child.id)).toBeUndefined();
    expect(engine.steps(child.id)).toEqual([]);
  });

  test('bad options are refused', () => {
    const engine = open();
    expect(() => engine.prune({ olderThan: 'yesterday' as any })).toThrow();
    expect(() => engine.prune({ olderThan: NaN })).toThrow(/olderThan/);
    expect(() => (engine as any).prune({})).toThrow(/olderThan/);
  });
});

describe('engine.inspect', () => {
  test("serves the inspector on the engine's database, with the runs it just wrote", async () => {
    const engine = open({ durability: 'batched' });
    engine.register('one', () => 1);
    const run = engine.start({ name: 'seen', nodes: { a: { runner: 'one' } } });
    await run.finished;
    const inspector = await engine.inspect({ port: 0 });
    try {
      expect(inspector.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/\?token=[\w-]+$/);
      const list = (await (await fetch(new URL(`api/runs?token=${inspector.token}`, inspector.url))).json()) as { runs: Array<{ id: string; status: string }> };
      expect(list.runs.find((r) => r.id === run.runId)?.status).toBe('finished');
    } finally {
      await inspector.close();
    }
  });

  test('an engine on :memory: has no file to show', async () => {
    const engine = new Engine({ db: ':memory:' });
    await expect(engine.inspect()).rejects.toThrow(/:memory:/);
    await engine.close();
  });
});

describe('timers and pending events are readable', () => {
  test('a delay is a timer row until it fires; an event sent to a stored run waits as pending', async () => {
    const clock = new TestClock();
    const engine = open({ durability: 'sync', clock });
    engine.register('go', () => 'went');
    const run = engine.start({
      name: 'later',
      initial: 'wait',
      nodes: {
        wait: { runner: 'go', transition: { '': { state: 'done', delay: '30d' }, poke: 'done' } },
        done: { final: true },
      },
    });
    await waitUntil(() => engine.timers(run.runId).length === 1, 'the delay stored');
    const [timer] = engine.timers(run.runId);
    expect(timer).toMatchObject({ kind: 'delay', firedAt: null });
    expect(timer!.dueAt).toBe(clock.now() + 30 * 24 * 3600 * 1000);
    expect(clock.next()).toBe(timer!.dueAt);
    await engine.close();

    // Another engine, with nobody running the machine: the event waits in the database.
    const other = new Engine({ db: engine.db });
    engines.push(other);
    other.send(run.runId, { type: 'poke', data: { n: 1 } });
    expect(other.pendingEvents(run.runId)).toMatchObject([{ type: 'poke', data: { n: 1 }, queue: false }]);
  });
});
