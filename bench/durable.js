'use strict';
// What durability costs per step: the same chain DAG and agent loop in memory (no engine)
// and through an Engine on a real SQLite file in each durability mode, with and without
// `fsync: true`; group commit across concurrent agent loops; and how long a restore of a
// run with N stored steps takes. Prints Markdown tables.
//
//   node --expose-gc bench/durable.js [N]        (default 10,000)
//
// Each mode runs in a fresh database in the OS temp dir; times are the median of 3 runs
// (1 run for 'sync' above 20,000 steps, and for 'sync' with fsync above 2,000: one fsync
// per step). µs/step = time ÷ N. "JS-thread CPU": CPU time of the JS thread alone (Linux
// schedstat) from start until the run's `finished` resolved: what durability costs the
// agent's own thread; the store's writer commits on another thread meanwhile. "until
// committed": wall time until `finished`, which in 'batched' waits (off the JS thread) for
// the run's records to be committed: the writer's throughput on this disk.
//
// Rows "…, fsync: true" use `new Engine({ db, durability, fsync: true })` (SQLite
// `synchronous = FULL`: a commit waits for an fsync of the WAL and survives a power loss);
// the other rows use the default, fsync false (`synchronous = NORMAL`: a commit survives a
// crash of the process, not of the machine). 'off' writes nothing, so fsync does not apply.
//
// Group commit: K agent loops started at once on one engine ('sync' and, for reference,
// 'batched'; fsync false and true), min(N, 1024) steps in all (each run ⌈that ÷ K⌉):
// µs/step = wall time from the first start until every run's `finished` ÷ all their steps.
// The number of commits is not measured: the engine does not expose its writer's counters
// (ramus-store's `Stats`) to JavaScript.
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Engine, DagRunner, CompiledDag, StateMachineRunner } = require('..');

const n = Number(process.argv[2] ?? 10_000);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ramus-durable-bench-'));
let dbCount = 0;
const freshDb = () => path.join(dir, `bench-${++dbCount}.sqlite`);

function chainDefinition() {
  const nodes = { n0: { runner: 'inc', args: { parent: null } } };
  for (let i = 1; i < n; i++) nodes[`n${i}`] = { runner: 'inc', args: { parent: `n${i - 1}` }, parents: [`n${i - 1}`] };
  return { name: 'bench-chain', nodes };
}
const inc = async ({ input, args }) => (args.parent === null ? 0 : input[args.parent]) + 1;

const loopDefinition = {
  name: 'bench-loop',
  initial: 'step',
  maxSteps: n + 10,
  nodes: {
    step: { runner: 'step', transition: { '': [{ state: 'step', condition: 'more' }, { state: 'done' }] } },
    done: { final: true },
  },
};
const step = async ({ input }) => (input ?? 0) + 1;
const more = ({ output }) => output < n;
// The group-commit loops: each run steps `context.steps` times.
const moreOfRun = ({ output, context }) => output < context.steps;
const groupLoopDefinition = {
  name: 'bench-group-loop',
  initial: 'step',
  nodes: {
    step: { runner: 'step', transition: { '': [{ state: 'step', condition: 'moreOfRun' }, { state: 'done' }] } },
    done: { final: true },
  },
};
const GROUP_STEPS = Math.min(n, 1024);
const GROUP_RUNS = [1, 8, 64];

function memoryChain() {
  const nodes = { n0: { run: (a) => inc({ ...a, args: { parent: null } }) } };
  for (let i = 1; i < n; i++) {
    const args = { parent: `n${i - 1}` };
    nodes[`n${i}`] = { parents: [`n${i - 1}`], run: (a) => inc({ input: a.input, args }) };
  }
  const dag = new CompiledDag({ name: 'bench-chain', nodes });
  return () => new DagRunner({ dag, input: null }).run();
}

function memoryLoop() {
  const config = {
    name: 'bench-loop',
    initial: 'step',
    maxSteps: n + 10,
    nodes: {
      step: { run: step, transition: { '': [{ state: 'step', condition: more }, { state: 'done' }] } },
      done: { final: true },
    },
  };
  return async () => {
    const m = new StateMachineRunner({ config, input: 0 });
    await m.run();
    return m.finished;
  };
}

function engineFor(durability, fsync = false) {
  const engine = new Engine({ db: freshDb(), durability, fsync });
  engine.register({ inc, step, more, moreOfRun });
  return engine;
}

/** CPU time of the JS thread alone, in ms (Linux: the main thread's schedstat, ns); the
 * store's writer and checkpoint threads are not counted. Falls back to null elsewhere. */
function jsThreadCpuMs() {
  try {
    return Number(fs.readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').split(' ')[0]) / 1e6;
  } catch {
    return null;
  }
}

/** Median of `times` runs of `f`: [ms until `f`'s mark (or its end), ms until its end,
 * CPU ms of the JS thread (the writer thread works apart; wall time where unknown)]. */
async function median(times, f) {
  const out = [];
  for (let i = 0; i < times; i++) {
    global.gc?.();
    const cpu0 = jsThreadCpuMs();
    const t0 = performance.now();
    const mid = await f();
    const end = (mid ?? performance.now()) - t0;
    const cpu = cpu0 === null ? end : jsThreadCpuMs() - cpu0;
    out.push([end, performance.now() - t0, cpu]);
  }
  out.sort((a, b) => a[0] - b[0]);
  return out[Math.floor(out.length / 2)];
}

const MODES = [
  ['off', false],
  ['batched', false],
  ['sync', false],
  ['batched', true],
  ['sync', true],
];

async function shape(label, memory, definition) {
  const us = (ms) => (ms * 1000) / n;
  const mem = await median(3, async () => { await memory(); });
  const results = { memory: us(mem[0]), memoryBusy: us(mem[2]) };
  for (const [durability, fsync] of MODES) {
    const engine = engineFor(durability, fsync);
    engine.define(definition);
    const runs = durability === 'sync' && (n > 20_000 || (fsync && n > 2_000)) ? 1 : 3;
    const [run, committed, busy] = await median(runs, async () => {
      const run = engine.start(definition.name, { input: 0 });
      await run.finished;
      const finished = performance.now();
      engine.flush();
      return finished;
    });
    const key = fsync ? `${durability}Fsync` : durability;
    results[key] = us(run);
    results[`${key}Committed`] = us(committed);
    results[`${key}Busy`] = us(busy);
    await engine.close();
  }
  const ratio = (x, base = results.memory) => `${(x / base).toFixed(1)}×`;
  const row = (rowLabel, off, batched, sync) =>
    console.log(
      `| ${rowLabel} | ${n.toLocaleString('en-US')} | ${results.memory.toFixed(2)} | ${results.memoryBusy.toFixed(2)} | ${off} | ` +
        `${results[`${batched}Busy`].toFixed(2)} (${ratio(results[`${batched}Busy`], results.memoryBusy)}) | ` +
        `${results[batched].toFixed(2)} (${ratio(results[batched])}) | ${results[sync].toFixed(2)} (${ratio(results[sync])}) |`,
    );
  row(label, results.off.toFixed(2), 'batched', 'sync');
  row(`${label}, fsync: true`, '—', 'batchedFsync', 'syncFsync');
}

/** K concurrent agent loops on one engine: µs per step over all of them. */
async function groupCommit() {
  const rows = [];
  for (const durability of ['sync', 'batched']) {
    for (const fsync of [false, true]) {
      let base;
      for (const k of GROUP_RUNS) {
        const steps = Math.ceil(GROUP_STEPS / k);
        const engine = engineFor(durability, fsync);
        engine.define(groupLoopDefinition);
        const [ms] = await median(3, async () => {
          const runs = [];
          for (let i = 0; i < k; i++) runs.push(engine.start('bench-group-loop', { input: 0, context: { steps } }));
          const outputs = await Promise.all(runs.map((run) => run.finished));
          for (const output of outputs) if (output !== steps) throw new Error(`group loop: expected ${steps}, got ${output}`);
          return undefined;
        });
        await engine.close();
        const perStep = (ms * 1000) / (k * steps);
        base ??= perStep;
        rows.push(`| ${durability} | ${fsync} | ${k} | ${steps.toLocaleString('en-US')} | ${perStep.toFixed(2)} | ${(perStep / base).toFixed(2)}× |`);
      }
    }
  }
  return rows;
}

/** A stored machine run with `n` steps, resting in `wait`; then the time to resume it. */
async function restore() {
  const db = freshDb();
  const config = {
    name: 'bench-restore',
    initial: 'step',
    maxSteps: n + 10,
    nodes: {
      step: { runner: 'step', transition: { '': [{ state: 'step', condition: 'more' }, { state: 'wait' }] } },
      wait: { transition: { go: 'done' } },
      done: { final: true },
    },
  };
  const open = () => {
    const e = new Engine({ db, durability: 'batched' });
    e.register({ inc, step, more, moreOfRun });
    return e;
  };
  let engine = open();
  const run = engine.start(config, { input: 0 });
  for (;;) {
    const live = engine.get(run.runId);
    if (live?.machineStatus === 'waitingForEvent') break;
    if (!live || ['error', 'final', 'cancelled'].includes(live.machineStatus)) {
      const stored = engine.run(run.runId);
      throw new Error(`bench-restore ended (${stored?.status}) instead of waiting: ${JSON.stringify(stored?.error)}`);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  await engine.close();
  const dag = chainDefinition();
  engine = open();
  // A DAG whose last node never finishes, so n - 1 finished nodes are stored.
  engine.register('inc', ({ input, args }) => (args.parent === `n${n - 2}` ? new Promise(() => {}) : inc({ input, args })));
  const d = engine.start(dag, { input: 0 });
  let failed;
  d.finished.catch((error) => { failed = error; });
  while (engine.steps(d.runId).length < n) {
    if (failed) throw failed;
    await new Promise((r) => setTimeout(r, 20));
  }
  engine.flush();
  await engine.close();
  const times = { machine: [], dag: [] };
  for (let i = 0; i < 3; i++) {
    for (const [kind, id] of [['machine', run.runId], ['dag', d.runId]]) {
      const e = open();
      e.register('inc', () => new Promise(() => {}));
      const t0 = performance.now();
      const r = await e.resume(id);
      times[kind].push(performance.now() - t0);
      // Closing leaves the run stored as it was (resumable again by the next round).
      void r;
      await e.close();
    }
  }
  const med = (a) => a.sort((x, y) => x - y)[1].toFixed(1);
  return { machine: med(times.machine), dag: med(times.dag) };
}

(async () => {
  console.log('| shape | N | in memory µs/step | in memory, JS-thread CPU | engine, off | batched: JS-thread CPU (÷ memory CPU) | batched: until committed (÷ memory) | sync (÷ memory) |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  await shape('chain', memoryChain(), chainDefinition());
  await shape('agent-loop', memoryLoop(), loopDefinition);
  const group = await groupCommit();
  console.log(`\nGroup commit: K agent loops started together on one engine, ${GROUP_STEPS.toLocaleString('en-US')} steps in all (each run ⌈${GROUP_STEPS} ÷ K⌉), median of 3; wall time until every run finished ÷ all steps. Commits are not counted (not exposed to JS).\n`);
  console.log('| durability | fsync | concurrent runs K | steps per run | µs/step | ÷ K = 1 |\n| --- | --- | ---: | ---: | ---: | ---: |');
  console.log(group.join('\n'));
  const r = await restore();
  console.log(`\nRestore: \`engine.resume(runId)\` in a fresh engine, median of 3.\n`);
  console.log(`| run kind | stored steps | resume ms |\n| --- | ---: | ---: |\n| machine (waiting for an event) | ${n.toLocaleString('en-US')} | ${r.machine} |\n| DAG (last node left to run) | ${(n - 1).toLocaleString('en-US')} | ${r.dag} |`);
  fs.rmSync(dir, { recursive: true, force: true });
})();
