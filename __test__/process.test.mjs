import { describe, test, expect } from 'vitest';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import * as esm from 'ramus';
import * as esmTesting from 'ramus/testing';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const require = createRequire(import.meta.url);

/** Run `node <args>` in the package root; it must exit by itself within `timeout` ms. */
function node(args, timeout = 8000) {
  const started = Date.now();
  const res = spawnSync(process.execPath, args, { cwd: ROOT, encoding: 'utf8', timeout });
  return { ...res, elapsed: Date.now() - started };
}

function expectCleanExit(res) {
  // res.error is set (ETIMEDOUT) and signal is SIGTERM when the child had to be killed.
  expect(res.error?.code, `child did not exit by itself; stderr:\n${res.stderr}`).toBeUndefined();
  expect(res.signal, `child was killed; stderr:\n${res.stderr}`).toBeNull();
  expect(res.status, `stderr:\n${res.stderr}`).toBe(0);
}

describe('package loading', () => {
  test("require('ramus') resolves to this package (self-reference) with every export", () => {
    const cjs = require('ramus');
    expect(require.resolve('ramus')).toBe(`${ROOT}lib/index.js`);
    for (const name of ['runDag', 'DagRunner', 'CompiledDag', 'analyzeDag', 'LocalSemaphore', 'CancelledError']) {
      expect(typeof cjs[name], name).toBe('function');
    }
  });

  test("import from 'ramus' under vitest exposes every export", () => {
    for (const name of ['runDag', 'DagRunner', 'CompiledDag', 'analyzeDag', 'LocalSemaphore', 'CancelledError']) {
      expect(typeof esm[name], name).toBe('function');
    }
  });

  // vitest.config.mjs has no `server.deps` setting: vitest transforms lib/index.mjs itself, as
  // it does for a linked install in a user's project, and the ES face must still hand back
  // Node's own CommonJS instance, not a copy vitest evaluated (whose exports read undefined).
  test("import and require under vitest's default module handling share one instance", () => {
    const cjs = require('ramus');
    const names = Object.keys(cjs).filter((k) => k !== 'default');
    expect(names.length).toBeGreaterThan(20);
    for (const name of names) expect(esm[name], name).toBe(cjs[name]);
    expect(esm.default).toBe(cjs);
    expect(esmTesting.TestClock).toBe(require('ramus/testing').TestClock);
    expect(esmTesting.TestClock).toBe(cjs.TestClock);
  });
});

describe('process exit', () => {
  test('a process that only requires ramus exits by itself', () => {
    const res = node(['-e', "require('ramus'); console.log('loaded')"]);
    expectCleanExit(res);
    expect(res.stdout.trim()).toBe('loaded');
  });

  test('a process that runs a DAG and does nothing else exits by itself', () => {
    const code = `
      const { runDag } = require('ramus');
      runDag({
        dag: { name: 'exit', nodes: {
          a: { run: async () => 1 },
          b: { parents: ['a'], run: ({ input }) => input.a + 1 },
        } },
        input: null,
      }).then((out) => console.log('out=' + out));
    `;
    const res = node(['-e', code]);
    expectCleanExit(res);
    expect(res.stdout.trim()).toBe('out=2');
  });

  test('a process whose DAG fails (error caught) exits by itself', () => {
    const code = `
      const { runDag } = require('ramus');
      runDag({
        dag: { name: 'exit-fail', nodes: {
          a: { run: async () => { throw new Error('boom'); } },
          b: { run: () => new Promise((r) => setTimeout(r, 50)) },
        } },
        input: null,
      }).catch((e) => console.log('caught=' + e.message));
    `;
    const res = node(['-e', code]);
    expectCleanExit(res);
    expect(res.stdout.trim()).toBe('caught=boom');
  });

  test('a process with a cancelled DagRunner, listeners and semaphores exits by itself', () => {
    const code = `
      const { DagRunner, LocalSemaphore } = require('ramus');
      const sem = new LocalSemaphore({ k: 1 });
      const runner = new DagRunner({
        dag: { name: 'exit-cancel', nodes: {
          a: { semaphoreKey: 'k', run: async ({ isCancelled }) => { await new Promise((r) => setTimeout(r, 20)); return isCancelled(); } },
          b: { parents: ['a'], run: () => 'never' },
        } },
        input: null,
        semaphores: [sem],
      });
      runner.on('event', () => {});
      runner.on('dag:state', () => {});
      runner.run().catch((e) => console.log('cancelled=' + e.message));
      setTimeout(() => runner.cancel(), 5);
    `;
    const res = node(['-e', code]);
    expectCleanExit(res);
    expect(res.stdout.trim()).toBe('cancelled=Cancelled');
  });

  test('a process with a stepwise runner left unfinished exits by itself', () => {
    const code = `
      const { DagRunner } = require('ramus');
      const runner = new DagRunner({
        dag: { name: 'exit-stepwise', nodes: { a: { run: () => 1 }, b: { parents: ['a'], run: () => 2 } } },
        input: null,
        autorun: () => false,
      });
      runner.run().catch(() => {});
      runner.runNode('a').then((ok) => console.log('ran=' + ok));
    `;
    const res = node(['-e', code]);
    expectCleanExit(res);
    expect(res.stdout.trim()).toBe('ran=true');
  });

  test('a process running a nested DAG and many runs exits by itself', () => {
    const code = `
      const { runDag } = require('ramus');
      const inner = { name: 'inner', nodes: { x: { run: () => 'x' } } };
      const outer = { name: 'outer', nodes: { a: { run: async () => { await new Promise((r) => setTimeout(r, 1)); return runDag({ dag: inner, input: 1 }); } } } };
      Promise.all(Array.from({ length: 50 }, () => runDag({ dag: outer, input: null })))
        .then((outs) => console.log('n=' + outs.filter((o) => o === 'x').length));
    `;
    const res = node(['-e', code]);
    expectCleanExit(res);
    expect(res.stdout.trim()).toBe('n=50');
  });
});

// machine-timers.test.mjs covers a '30d' delay without keepAlive (the process exits) and
// keepAlive with short delays (it fires). Here: a '30d' delay with keepAlive false and true,
// for a StateMachineRunner and a machine started through an Engine. Whether the process is
// kept alive is read with an unref'd probe timer: it can fire only while something else keeps
// the event loop alive, and then ends the process itself.
describe("keepAlive and a machine sleeping on a '30d' delay", () => {
  const SLEEPER = "{ name: 'sleeper', initial: 'a', nodes: { a: { run: () => 1, transition: { '': { state: 'b', delay: '30d' } } }, b: { final: true, run: () => console.log('fired') } } }";
  const STORED_SLEEPER = "{ name: 'sleeper', initial: 'a', nodes: { a: { transition: { '': { state: 'b', delay: '30d' } } }, b: { final: true } } }";
  const probe = "setTimeout(() => { console.log('kept alive'); process.exit(0); }, 300).unref();";
  const starts = {
    StateMachineRunner: (keepAlive) => `
      const { StateMachineRunner } = require('ramus');
      const r = new StateMachineRunner({ config: ${SLEEPER}, input: null, keepAlive: ${keepAlive} });
      r.run().then(() => { console.log('rested ' + r.machineStatus); ${probe} });
    `,
    'engine.start': (keepAlive) => `
      const { Engine } = require('ramus');
      const engine = new Engine({ db: ':memory:' });
      const r = engine.start(${STORED_SLEEPER}, { keepAlive: ${keepAlive} });
      r.run().then(() => { console.log('rested ' + r.machineStatus); ${probe} });
    `,
  };

  for (const [how, code] of Object.entries(starts)) {
    test(`${how}, keepAlive: false: the process exits by itself while the machine sleeps`, () => {
      const res = node(['-e', code(false)]);
      expectCleanExit(res);
      expect(res.stdout.trim().split('\n')).toEqual(['rested sleeping']);
    });

    test(`${how}, keepAlive: true: the sleeping machine keeps the process alive`, () => {
      const res = node(['-e', code(true)]);
      expectCleanExit(res);
      expect(res.stdout.trim().split('\n')).toEqual(['rested sleeping', 'kept alive']);
    });
  }
});

describe('ESM', () => {
  test("node --input-type=module: import { runDag } from 'ramus' works", () => {
    const code = `
      import { runDag, DagRunner, CompiledDag, analyzeDag, LocalSemaphore, CancelledError } from 'ramus';
      const out = await runDag({
        dag: { name: 'esm', nodes: { a: { run: ({ rootInput }) => rootInput * 2 }, b: { parents: ['a'], run: ({ input }) => input.a + 1 } } },
        input: 20,
      });
      console.log(JSON.stringify({
        out,
        kinds: [DagRunner, CompiledDag, analyzeDag, LocalSemaphore, CancelledError].map((f) => typeof f),
      }));
    `;
    const res = node(['--input-type=module', '-e', code]);
    expectCleanExit(res);
    expect(JSON.parse(res.stdout)).toEqual({ out: 41, kinds: ['function', 'function', 'function', 'function', 'function'] });
  });

  test('ESM and CJS share the same classes (CancelledError instanceof works across both)', () => {
    const code = `
      import { createRequire } from 'node:module';
      import * as esm from 'ramus';
import * as esmTesting from 'ramus/testing';
      const cjs = createRequire(import.meta.url)('ramus');
      const same = ['runDag', 'DagRunner', 'CompiledDag', 'analyzeDag', 'LocalSemaphore', 'CancelledError']
        .filter((n) => esm[n] !== cjs[n]);
      const runner = new cjs.DagRunner({ dag: { name: 'x', nodes: { a: { run: () => 1 } } }, input: null });
      runner.cancel();
      let crossInstance = false;
      try { await runner.run(); } catch (e) { crossInstance = e instanceof esm.CancelledError; }
      console.log(JSON.stringify({ differing: same, crossInstance }));
    `;
    const res = node(['--input-type=module', '-e', code]);
    expectCleanExit(res);
    expect(JSON.parse(res.stdout)).toEqual({ differing: [], crossInstance: true });
  });
});
