#!/usr/bin/env node
// The scale-out torture test: W worker processes (scripts/queue-worker.mjs) over one
// SQLite file take RUNS queued runs of a DAG and a machine whose steps await 2-20 ms of
// simulated I/O, while the driver SIGKILLs random workers and starts new ones. At the end:
// - every run finished with the right output;
// - every step was committed exactly once (one finished row per node, per machine visit);
// - no step ever ran in two places at once: the workers' append-only log of step starts
//   and ends (outside the store) has no two overlapping executions of one step. A step
//   whose worker was killed ran until the kill.
//
//   node scripts/torture.mjs [--runs 10000] [--workers 4] [--kills 20] [--kill-ms 1000] [--concurrency 20] [--lease 3000]
//
// (a kill every 0.2-1 x kill-ms)
import { fork } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { DAG, MACHINE, expected, register } from './torture-defs.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const RAMUS = createRequire(import.meta.url).resolve('ramus');
const opt = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const RUNS = opt('runs', 10_000);
const WORKERS = opt('workers', 4);
const KILLS = opt('kills', 20);
const CONCURRENCY = opt('concurrency', 20);
const LEASE = opt('lease', 3000);
const KILL_MS = opt('kill-ms', 1000);

const { Engine } = await import(RAMUS);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ramus-torture-'));
// `--db postgres://…` runs it on PostgreSQL (a URL with `?options=-csearch_path%3Dname`
// keeps it in a schema of its own); the default is a new SQLite file.
const dbAt = process.argv.indexOf('--db');
const db = dbAt >= 0 ? process.argv[dbAt + 1] : path.join(dir, 'runs.sqlite');
const log = path.join(dir, 'steps.log');
fs.writeFileSync(log, '');
const engine = new Engine({ db, durability: 'sync' });
register(engine);

const t0 = Date.now();
for (let n = 0; n < RUNS; n++) engine.enqueue(n % 2 === 0 ? DAG.name : MACHINE.name, { input: { n } });
console.log(`enqueued ${RUNS} runs in ${Date.now() - t0} ms; ${WORKERS} workers, ${KILLS} kills, lease ${LEASE} ms, on ${db.startsWith('postgres') ? 'PostgreSQL' : 'SQLite'}`);

/** pid → when it was killed (ms), for steps it never ended. */
const killedAt = new Map();
let workerErrors = 0;
const live = new Set();
function spawnWorker() {
  const child = fork(path.join(here, 'queue-worker.mjs'), [RAMUS, db, log, String(CONCURRENCY), String(LEASE)], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
  // A worker that reports an error (a run it could not start, a claim that failed) fails the test.
  child.stderr.on('data', (d) => {
    process.stderr.write(d);
    workerErrors += String(d).split('\n').filter((l) => l.startsWith('worker error:') || / panicked at /.test(l)).length;
  });
  live.add(child);
  child.on('exit', () => live.delete(child));
  return child;
}
for (let i = 0; i < WORKERS; i++) spawnWorker();

const left = () => engine.runs({ limit: 1_000_000 }).filter((r) => !['finished', 'error', 'cancelled'].includes(r.status)).length;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const started = Date.now();
let kills = 0;
while (kills < KILLS && left() > 0) {
  await sleep(KILL_MS / 5 + Math.random() * (KILL_MS * 0.8));
  const victims = [...live];
  const victim = victims[Math.floor(Math.random() * victims.length)];
  if (!victim) continue;
  killedAt.set(victim.pid, Date.now());
  victim.kill('SIGKILL');
  kills++;
  spawnWorker();
}
let last = -1;
let still = Date.now();
for (;;) {
  const n = left();
  if (n === 0) break;
  if (n !== last) {
    last = n;
    still = Date.now();
  } else if (Date.now() - still > 60_000) throw new Error(`${n} runs made no progress for a minute`);
  await sleep(200);
}
const elapsed = Date.now() - started;
for (const child of live) child.kill('SIGTERM');
while (live.size > 0) await sleep(20);

// ---- checks ----
const failures = [];
const canon = (v) => JSON.stringify(v, (_k, x) => (x && typeof x === 'object' && !Array.isArray(x) ? Object.fromEntries(Object.entries(x).sort()) : x));
const runs = engine.runs({ limit: 1_000_000 });
if (runs.length !== RUNS) failures.push(`${runs.length} runs stored, ${RUNS} enqueued`);
let steps = 0;
for (const run of runs) {
  const n = run.input.n;
  if (run.status !== 'finished') failures.push(`run ${n} (${run.name}) ended ${run.status}: ${JSON.stringify(run.error)}`);
  else if (canon(run.output) !== canon(expected(run.name, n))) failures.push(`run ${n} (${run.name}) output ${JSON.stringify(run.output)}`);
  const finished = engine.steps(run.id).filter((s) => s.status === 'finished');
  steps += finished.length;
  const nodes = finished.map((s) => s.node).sort();
  const want = run.name === DAG.name ? ['a', 'b', 'c', 'd'] : ['finish', 'tick', 'tick', 'tick'];
  if (JSON.stringify(nodes) !== JSON.stringify(want)) failures.push(`run ${n} (${run.name}) committed steps ${nodes.join(',')}`);
}
// Executions of one step never overlap.
const open = new Map();
const executions = new Map();
let lines = 0;
for (const line of fs.readFileSync(log, 'utf8').split('\n')) {
  if (!line) continue;
  lines++;
  const [what, key, pid, time] = line.split('\t');
  const id = `${key}\t${pid}`;
  if (what === 'start') open.set(id, Number(time));
  else {
    const list = executions.get(key) ?? [];
    list.push([open.get(id), Number(time), pid]);
    executions.set(key, list);
    open.delete(id);
  }
}
for (const [id, start] of open) {
  const [key, pid] = id.split('\t');
  const list = executions.get(key) ?? [];
  list.push([start, killedAt.get(Number(pid)) ?? Infinity, pid]);
  executions.set(key, list);
}
let reran = 0;
for (const [key, list] of executions) {
  reran += list.length - 1;
  list.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < list.length; i++) {
    if (list[i][0] < list[i - 1][1]) failures.push(`step ${key} ran in pids ${list[i - 1][2]} and ${list[i][2]} at once`);
  }
}
await engine.close();
if (workerErrors > 0) failures.push(`${workerErrors} errors reported by workers`);
console.log(`${RUNS} runs, ${steps} committed steps, ${lines} log lines, ${reran} steps ran again after a kill; ${kills} workers killed; ${elapsed} ms (${Math.round((RUNS * 1000) / elapsed)} runs/s)`);
if (failures.length > 0) {
  console.error(`FAILED (${failures.length}):\n${failures.slice(0, 20).join('\n')}`);
  console.error(`store and log kept in ${dir}`);
  process.exit(1);
}
fs.rmSync(dir, { recursive: true, force: true });
console.log('ok: every run finished right, every step committed once, no step ran twice at once');
