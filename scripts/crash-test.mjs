#!/usr/bin/env node
// The crash test: run durable jobs in child processes, kill them with SIGKILL at random
// points many times, then let one run to the end and check the database:
// - every job finished with the right output;
// - every node or state has exactly one finished step (nothing committed twice);
// - in 'sync' durability, every runner call has its step row committed before it: a node
//   whose finished step was committed never ran again (calls <= step rows of the node; the
//   extra rows are the interrupted attempts, stored as cancelled).
//
//   node scripts/crash-test.mjs [--jobs 500] [--kills 50] [--max-kill-ms 100] [--durability sync|batched] [--seed N]
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

/** A child process; `crashAfter`: it SIGKILLs itself right after its n-th runner call (0: never). */
function child(ramus, db, log, jobs, durability, crashAfter = 0) {
  return spawn(process.execPath, [path.join(here, 'crash-child.mjs'), ramus, db, log, String(jobs), durability, String(crashAfter)], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
}

function size(file) {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

function exited(proc) {
  return new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
}

/** A small seeded PRNG, so a failing run can be repeated with --seed. */
function prng(seed) {
  let s = seed >>> 0 || 1;
  return () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32);
}

function expectedDag(job) {
  const a = 1 + job;
  const b = a + 2 + job;
  const c = a + 3 + job;
  const d = b + c + 4 + job;
  return d + 5 + job;
}

export async function crashTest({ jobs = 20, kills = 5, durability = 'sync', seed = Date.now(), maxKillMs = 150, dir } = {}) {
  const ramus = require.resolve('ramus');
  const work = dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'ramus-crash-'));
  const db = path.join(work, 'crash.sqlite');
  const log = path.join(work, 'calls.log');
  const random = prng(seed);
  let killed = 0;
  for (let i = 0; i < kills; i++) {
    // Each child dies by SIGKILL at a random point: from this process, a random time after
    // it started working (anywhere: in a runner, in a commit, between turns), or, if it
    // gets that far first, by its own hand right after a random runner call. The second
    // way makes sure kills land even when a loaded machine delays this process's timers
    // until the child has finished.
    const proc = child(ramus, db, log, jobs, durability, 1 + Math.floor(random() * jobs * 2));
    let stderr = '';
    proc.stderr.on('data', (d) => (stderr += d));
    const done = exited(proc);
    // Kill at a random point after the child has started working (it appends to the call
    // log), not while Node is still loading, so each kill lands in the middle of runs.
    const before = size(log);
    let timer;
    const poll = setInterval(() => {
      if (size(log) > before && !timer) timer = setTimeout(() => proc.kill('SIGKILL'), random() * maxKillMs);
    }, 2);
    const { code, signal } = await done;
    clearInterval(poll);
    clearTimeout(timer);
    if (signal === 'SIGKILL') killed++;
    else if (code !== 0) throw new Error(`crash child ${i} exited with ${code}: ${stderr}`);
  }
  const last = child(ramus, db, log, jobs, durability);
  let stderr = '';
  last.stderr.on('data', (d) => (stderr += d));
  const { code } = await exited(last);
  if (code !== 0) throw new Error(`final child exited with ${code}: ${stderr}`);
  return { ...check(ramus, db, log, jobs, durability), killed, seed, dir: work };
}

function check(ramus, db, log, jobs, durability) {
  const { Engine } = require(ramus);
  const engine = new Engine({ db });
  const problems = [];
  const runs = engine.runs();
  const calls = new Map();
  for (const line of fs.existsSync(log) ? fs.readFileSync(log, 'utf8').split('\n') : []) {
    if (line) calls.set(line, (calls.get(line) ?? 0) + 1);
  }
  let steps = 0;
  let interrupted = 0;
  if (runs.length !== jobs) problems.push(`expected ${jobs} runs, found ${runs.length}`);
  for (const run of runs) {
    const job = run.input.job;
    if (run.status !== 'finished') {
      problems.push(`${run.name}: status ${run.status}`);
      continue;
    }
    const rows = engine.steps(run.id);
    steps += rows.length;
    const finished = new Map();
    const byNode = new Map();
    for (const s of rows) {
      if (s.status === 'finished') finished.set(s.node, (finished.get(s.node) ?? 0) + 1);
      if (s.status === 'cancelled') interrupted++;
      byNode.set(s.node, (byNode.get(s.node) ?? 0) + 1);
    }
    if (run.kind === 'dag') {
      if (run.output !== expectedDag(job)) problems.push(`${run.name}: output ${run.output}, expected ${expectedDag(job)}`);
      for (const node of ['a', 'b', 'c', 'd', 'e']) {
        if (finished.get(node) !== 1) problems.push(`${run.name}: node ${node} finished ${finished.get(node) ?? 0} times`);
        const called = calls.get(`${job}\t${node}`) ?? 0;
        // A process can die between committing a step's start and calling its runner, so
        // a node may have more rows than calls, never more calls than rows.
        if (durability === 'sync' && (called < 1 || called > byNode.get(node))) {
          problems.push(`${run.name}: node ${node} ran ${called} times for ${byNode.get(node)} step rows`);
        }
      }
    } else {
      if (run.output?.n !== 5) problems.push(`${run.name}: output ${JSON.stringify(run.output)}`);
      if (finished.get('tick') !== 5) problems.push(`${run.name}: tick finished ${finished.get('tick') ?? 0} times`);
      if (finished.get('done') !== 1) problems.push(`${run.name}: done finished ${finished.get('done') ?? 0} times`);
      if (durability === 'sync') {
        // A tick whose step committed is never called again: each count 1..5 is called once
        // per stored attempt of that visit.
        let calledTicks = 0;
        for (let n = 1; n <= 5; n++) calledTicks += calls.get(`${job}\ttick${n}`) ?? 0;
        if (calledTicks < 5 || calledTicks > byNode.get('tick')) problems.push(`${run.name}: tick ran ${calledTicks} times for ${byNode.get('tick')} step rows`);
      }
    }
  }
  engine.close();
  return { runs: runs.length, steps, interrupted, calls: [...calls.values()].reduce((a, b) => a + b, 0), problems };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const arg = (name, def) => {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 ? process.argv[i + 1] : def;
  };
  const opts = {
    jobs: Number(arg('jobs', 500)),
    kills: Number(arg('kills', 50)),
    durability: arg('durability', 'sync'),
    seed: Number(arg('seed', Date.now() % 1e9)),
    maxKillMs: Number(arg('max-kill-ms', 100)),
  };
  const t0 = Date.now();
  const report = await crashTest(opts);
  console.log(JSON.stringify({ ...opts, ...report, problems: report.problems.length, seconds: (Date.now() - t0) / 1000 }, null, 1));
  for (const p of report.problems.slice(0, 20)) console.log('PROBLEM', p);
  process.exit(report.problems.length === 0 ? 0 : 1);
}
