// One process of the crash test (scripts/crash-test.mjs): resumes what earlier processes
// left, starts the jobs that do not exist yet, and runs until all have finished, unless the
// driver kills it first with SIGKILL. Every runner call is appended to an execution log
// *before* it does its work, so the driver can compare calls with stored steps.
import fs from 'node:fs';

const [ramusPath, db, log, jobs, durability, crashAfter] = process.argv.slice(2);
const { Engine } = await import(ramusPath);
const engine = new Engine({ db, durability });
const jitter = () => new Promise((r) => setTimeout(r, Math.random() * 10));
let calls = 0;
const record = (job, node) => {
  fs.appendFileSync(log, `${job}\t${node}\n`);
  if (++calls === Number(crashAfter)) process.kill(process.pid, 'SIGKILL');
};

engine.register({
  // A DAG node: its output is a pure function of its parents, so the result is checkable.
  add: async ({ args, input, rootInput }) => {
    record(rootInput.job, args.node);
    await jitter();
    return Object.values(input).reduce((a, b) => a + b, args.k + rootInput.job);
  },
  // A machine state that counts in the context.
  tick: async ({ context, rootInput }) => {
    context.n += 1;
    record(rootInput.job, `tick${context.n}`);
    await jitter();
    return context.n;
  },
  more: ({ context }) => context.n < 5,
  done: ({ context, rootInput }) => {
    record(rootInput.job, 'done');
    return { job: rootInput.job, n: context.n };
  },
});

const dag = {
  name: 'crash-dag',
  nodes: {
    a: { runner: 'add', args: { node: 'a', k: 1 } },
    b: { runner: 'add', args: { node: 'b', k: 2 }, parents: ['a'] },
    c: { runner: 'add', args: { node: 'c', k: 3 }, parents: ['a'] },
    d: { runner: 'add', args: { node: 'd', k: 4 }, parents: ['b', 'c'] },
    e: { runner: 'add', args: { node: 'e', k: 5 }, parents: ['d'] },
  },
};
const machine = {
  name: 'crash-machine',
  initial: 'tick',
  context: { n: 0 },
  nodes: {
    tick: { runner: 'tick', transition: { '': [{ state: 'nap', condition: 'more' }, { state: 'done' }] } },
    nap: { transition: { '': { state: 'tick', delay: 5 } } },
    done: { runner: 'done', final: true },
  },
};

// Delays do not keep a process alive by default; this one has nothing else to do.
const runs = await engine.resumeAll({}, { keepAlive: true });
const existing = new Set(engine.runs().map((r) => r.name));
for (let job = 0; job < Number(jobs); job++) {
  const name = `job-${job}`;
  if (existing.has(name)) continue;
  runs.push(engine.start(job % 2 === 0 ? dag : machine, { name, input: { job }, keepAlive: true }));
}
await Promise.all(runs.map((r) => r.finished));
await engine.close();
