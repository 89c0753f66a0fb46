// Partial output: run.stream(), emit(…, { store: false }), and listeners attached right
// after engine.start() / resume() seeing every event.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { CancelledError, DagRunner, Engine, runDag, StateMachineRunner, type RamusEvent } from 'ramus';

import { within } from './helpers.mjs';

const engines: Engine[] = [];
afterEach(async () => {
  for (const e of engines.splice(0)) await e.close();
});

function memoryEngine(): Engine {
  const e = new Engine({ db: ':memory:', durability: 'sync' });
  engines.push(e);
  return e;
}

describe('run.stream()', () => {
  test('yields the run’s events, nested runs’ included, filtered by type, and ends with the run', async () => {
    const runner = new DagRunner({
      dag: {
        name: 'writer',
        nodes: {
          draft: {
            run: async ({ emit }) => {
              for (const t of ['Hel', 'lo']) {
                await Promise.resolve();
                emit('token', t, { store: false });
              }
              // A nested run: its events are the outer run's too.
              return runDag({ dag: { name: 'inner', nodes: { polish: { run: ({ emit: e }) => (e('token', '!'), 'polished') } } } });
            },
          },
        },
      },
    });
    const stream = runner.stream({ types: ['token', 'dag:finish'] });
    void runner.run();
    const seen: Array<[string, unknown]> = [];
    for await (const e of stream) seen.push([e.type, e.data]);
    expect(seen).toEqual([
      ['token', 'Hel'],
      ['token', 'lo'],
      ['token', '!'],
      ['dag:finish', { output: 'polished' }],
      ['dag:finish', { output: 'polished' }],
    ]);
    expect(runner.listenerCount('event'), 'the stream lets go of its listener').toBe(0);
  });

  test('throws the run’s error when it fails, and a break lets go of the run', async () => {
    const failing = new StateMachineRunner({
      config: { name: 'm', initial: 'a', nodes: { a: { run: () => Promise.reject(new Error('model down')) } } },
    });
    const types: string[] = [];
    const consume = (async () => {
      for await (const e of failing.stream()) types.push(e.type);
    })();
    void failing.run();
    await expect(within(consume, 2000, 'stream')).rejects.toThrow('model down');
    expect(types).toContain('state_machine:error');

    const runner = new DagRunner({ dag: { name: 'd', nodes: { a: { run: ({ emit }) => (emit('x', 1), emit('x', 2), 'done') } } } });
    const stream = runner.stream({ types: ['x'] });
    void runner.run();
    for await (const e of stream) {
      expect(e.data).toBe(1);
      break;
    }
    expect(runner.listenerCount('event')).toBe(0);
    await runner.finished;
  });
});

describe('emit(…, { store: false })', () => {
  test('reaches listeners and streams of a stored run but not its events table', async () => {
    const engine = memoryEngine();
    engine.register('write', (async ({ emit }: any) => {
      emit('token', 'a', { store: false });
      emit('progress', { done: 1 });
      emit('token', 'b', { store: false });
      return 'ab';
    }) as any);
    const run = engine.start({ name: 'writer', nodes: { write: { runner: 'write' } } });
    const tokens: unknown[] = [];
    for await (const e of run.stream({ types: ['token'] })) tokens.push(e.data);
    expect(tokens).toEqual(['a', 'b']);
    expect(await run.finished).toBe('ab');
    expect(engine.events(run.runId).map((e) => e.type)).toEqual(['progress']);
  });

  test('an unstored emit of data JSON cannot hold is no error: it never becomes JSON', async () => {
    const engine = memoryEngine();
    const handle = { close() {} };
    engine.register('send', (async ({ emit }: any) => (emit('handle', handle, { store: false }), 'sent')) as any);
    const run = engine.start({ name: 'sender', nodes: { send: { runner: 'send' } } });
    const got: unknown[] = [];
    run.on('handle', () => {});
    run.on('event', (e: RamusEvent) => e.type === 'handle' && got.push(e.data));
    expect(await run.finished).toBe('sent');
    expect(got).toEqual([handle]);
  });
});

describe('listeners attached right after engine.start() and resume()', () => {
  test('see the run’s start and the events of its first nested run', async () => {
    const engine = memoryEngine();
    engine.register('outer', (async () => runDag({ dag: { name: 'inner', nodes: { x: { run: () => 'x' } } } })) as any);
    const run = engine.start({ name: 'outer', nodes: { o: { runner: 'outer' } } });
    const types: string[] = [];
    run.on('event', (e: RamusEvent) => types.push(`${e.type}${e.source === 'inner' ? ' (inner)' : ''}`));
    await run.finished;
    expect(types[0]).toBe('dag:start');
    expect(types).toContain('dag:start (inner)');
    expect(types).toContain('dag:node_finish (inner)');
  });

  test('a resumed machine’s first events reach a listener attached after `await resume()`', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ramus-stream-'));
    const db = path.join(dir, 'runs.sqlite');
    const config = {
      name: 'approval',
      initial: 'ask',
      nodes: { ask: { runner: 'ask', transition: { approve: 'done' } }, done: { runner: 'done', final: true } },
    };
    const register = (e: Engine) =>
      e.register('ask', (async () => 'asked') as any).register('done', (async ({ event }: any) => `approved by ${event.data.by}`) as any);
    const first = register(new Engine({ db, durability: 'sync' }));
    const run = first.start(config);
    await within(
      (async () => {
        while (first.run(run.runId)?.status !== 'waitingForEvent') await new Promise((r) => setImmediate(r));
      })(),
      2000,
      'waiting',
    );
    await first.close();
    const second = register(new Engine({ db, durability: 'sync' }));
    engines.push(second);
    second.send(run.runId, { type: 'approve', data: { by: 'ada' } });
    const resumed = await second.resume(run.runId);
    const types: string[] = [];
    resumed.on('event', (e: RamusEvent) => types.push(e.type));
    expect(await within(resumed.finished, 2000, 'resumed')).toBe('approved by ada');
    expect(types).toEqual(expect.arrayContaining(['state_machine:transition', 'state_machine:node_start', 'state_machine:finish']));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('cancel() right after start ends the run without calling a runner', async () => {
    const engine = memoryEngine();
    let calls = 0;
    engine.register('work', (async () => ++calls) as any);
    const run = engine.start({ name: 'w', nodes: { a: { runner: 'work' } } });
    run.cancel();
    await expect(within(run.finished, 2000, 'cancelled')).rejects.toBeInstanceOf(CancelledError);
    expect(calls).toBe(0);
    expect(engine.run(run.runId)?.status).toBe('cancelled');
  });
});
