'use strict';
// Worker throughput and claim latency on one store (a SQLite file, and PostgreSQL when
// RAMUS_BENCH_PG names a database): 1, 2 and 4 worker processes
// (scripts/queue-worker.mjs, concurrency 50 each) take N queued runs (half a 4-node DAG,
// half a 4-visit machine) whose steps await 2-20 ms of simulated I/O. While steps wait on
// I/O, throughput should grow with workers until the store's writer is the limit.
// Claim latency: an idle worker, one run enqueued from another process; the time from the
// enqueue to its first step's start (from the workers' step log), median of 20.
//
//   node bench/workers.js [N=2000] [workers=1,2,4]
//   RAMUS_BENCH_PG=postgres://user@host:port/db node bench/workers.js   # and on PostgreSQL
//
// Each size runs with the workers' runs 'sync' (every step committed before the next) and
// 'batched'. The runs are enqueued first, all due at one time; the clock starts then.

const { fork } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const N = Number(process.argv[2] ?? 2000);
const COUNTS = (process.argv[3] ?? '1,2,4').split(',').map(Number);
const RAMUS = require.resolve('ramus');
const WORKER = path.join(__dirname, '..', 'scripts', 'queue-worker.mjs');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const PG = process.env.RAMUS_BENCH_PG;
let schemas = 0;

/** A new store: a file in `dir`, or a new schema on PG (the store creates it). */
function location(store, dir) {
  if (store === 'sqlite') return path.join(dir, 'runs.sqlite');
  return `${PG}${PG.includes('?') ? '&' : '?'}options=-csearch_path%3Dbench_${process.pid}_${++schemas}`;
}

async function setup(store) {
  const { Engine } = require(RAMUS);
  const { register } = await import(path.join(__dirname, '..', 'scripts', 'torture-defs.mjs'));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ramus-bench-workers-'));
  const db = location(store, dir);
  const log = path.join(dir, 'steps.log');
  fs.writeFileSync(log, '');
  const engine = new Engine({ db, durability: 'sync' });
  register(engine);
  return { dir, db, log, engine };
}

async function spawnWorkers(db, log, count, durability = 'sync') {
  const children = [];
  for (let i = 0; i < count; i++) {
    const child = fork(WORKER, [RAMUS, db, log, '50', '5000', '2', '20', durability], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    await new Promise((resolve) => child.once('message', resolve));
    children.push(child);
  }
  return children;
}

async function stop(children) {
  await Promise.all(children.map((c) => new Promise((resolve) => (c.on('exit', resolve), c.kill('SIGTERM')))));
}

async function throughput(store, count, durability) {
  const { dir, db, log, engine } = await setup(store);
  const children = await spawnWorkers(db, log, count, durability);
  // Queued first, due together: the clock starts when the workers may take them.
  const due = Date.now() + 2000 + N;
  for (let n = 0; n < N; n++) engine.enqueue(n % 2 === 0 ? 'torture-dag' : 'torture-machine', { input: { n }, runAt: due });
  if (Date.now() > due) throw new Error('enqueueing took longer than planned');
  while (Date.now() < due) await sleep(1);
  while (engine.runs({ status: 'finished', limit: N + 1 }).length < N) await sleep(50);
  const ms = Date.now() - due;
  await stop(children);
  await engine.close();
  fs.rmSync(dir, { recursive: true, force: true });
  return ms;
}

async function latency(store) {
  const { dir, db, log, engine } = await setup(store);
  const children = await spawnWorkers(db, log, 1);
  const samples = [];
  for (let i = 0; i < 20; i++) {
    const before = fs.statSync(log).size;
    const t = Date.now();
    engine.enqueue('torture-dag', { input: { n: 1_000_000 + i } });
    for (;;) {
      const text = fs.readFileSync(log, 'utf8').slice(before);
      const line = text.split('\n').find((l) => l.startsWith(`start\t${1_000_000 + i}/a`));
      if (line) {
        samples.push(Number(line.split('\t')[3]) - t);
        break;
      }
      await sleep(1);
    }
    await sleep(100);
  }
  await stop(children);
  await engine.close();
  fs.rmSync(dir, { recursive: true, force: true });
  samples.sort((a, b) => a - b);
  return { median: samples[samples.length >> 1], p90: samples[Math.floor(samples.length * 0.9)] };
}

// An idle poll over many resting machines nobody holds (waiting for an event that has not
// come): what every worker pays every poll interval. Starts from indexes, so it should not
// grow with the machines.
async function idlePoll(store, resting) {
  const { Engine } = require(RAMUS);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ramus-bench-idle-'));
  const db = location(store, dir);
  const maker = new Engine({ db, durability: 'batched' });
  maker.register('ask', async () => 'asked');
  const machine = { name: 'resting', initial: 'ask', nodes: { ask: { runner: 'ask', transition: { go: 'done' } }, done: { final: true } } };
  const runs = [];
  for (let i = 0; i < resting; i++) runs.push(maker.start(machine));
  while (maker.waiting({ limit: resting + 1 }).length < resting) await sleep(50);
  await maker.close();
  const engine = new Engine({ db, durability: 'batched' });
  engine.register('ask', async () => 'asked');
  const worker = engine.work({ pollInterval: 3_600_000 });
  const times = [];
  for (let i = 0; i < 21; i++) {
    const t = process.hrtime.bigint();
    await worker.poll();
    times.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  await worker.stop();
  await engine.close();
  fs.rmSync(dir, { recursive: true, force: true });
  times.sort((a, b) => a - b);
  return times[10];
}

(async () => {
  for (const store of PG ? ['sqlite', 'postgres'] : ['sqlite']) {
    const where = store === 'sqlite' ? 'one SQLite file' : 'one PostgreSQL database';
    console.log(`\nWorkers on ${where}: ${N} queued runs (4 steps each, 2-20 ms of I/O per step), concurrency 50 per worker`);
    console.log('durability | workers | runs/s | steps/s | total ms | speedup');
    for (const durability of ['sync', 'batched']) {
      let base;
      for (const count of COUNTS) {
        const ms = await throughput(store, count, durability);
        const rate = (N * 1000) / ms;
        base ??= rate;
        console.log(`${durability.padStart(10)} | ${String(count).padStart(7)} | ${rate.toFixed(0).padStart(6)} | ${(rate * 4).toFixed(0).padStart(7)} | ${String(ms).padStart(8)} | ${(rate / base).toFixed(2)}x`);
      }
    }
    const { median, p90 } = await latency(store);
    console.log(`claim latency (enqueue in another process -> first step starts): median ${median} ms, p90 ${p90} ms (worker poll interval 20 ms)`);
    for (const resting of [1000, 20000]) console.log(`idle poll with ${resting} resting machines nobody holds: median ${(await idlePoll(store, resting)).toFixed(2)} ms`);
  }
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
