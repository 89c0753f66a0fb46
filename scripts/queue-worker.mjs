// One worker process over a shared store, for the torture test (scripts/torture.mjs), the
// worker benchmark (bench/workers.js) and the multi-process tests: it works on the queue
// until it is told to stop (SIGTERM: `worker.stop()`, then exit) or killed.
//
//   node scripts/queue-worker.mjs RAMUS DB LOG [concurrency] [leaseMs] [ioMin] [ioMax] [durability]
//
// Every step appends `start` and `end` lines (step key, pid, time) to LOG, an append-only
// file outside the store: the checker uses it to prove that no step ever ran in two places
// at once. Steps await ioMin..ioMax ms, as an LLM or tool call would.
import fs from 'node:fs';
import { register } from './torture-defs.mjs';

const [ramusPath, db, log, concurrency = '20', leaseMs = '2000', ioMin = '2', ioMax = '20', durability = 'sync'] = process.argv.slice(2);
const { Engine } = await import(ramusPath);
const engine = new Engine({ db, durability, leaseMs: Number(leaseMs), pollInterval: 50 });
const min = Number(ioMin);
const span = Math.max(0, Number(ioMax) - min);
const logFd = fs.openSync(log, 'a');
const note = (what, key) => fs.writeSync(logFd, `${what}\t${key}\t${process.pid}\t${Date.now()}\n`);

register(engine, async (key, fn) => {
  note('start', key);
  await new Promise((r) => setTimeout(r, min + Math.random() * span));
  const out = fn();
  note('end', key);
  return out;
});

const worker = engine.work({ concurrency: Number(concurrency), pollInterval: 20 });
worker.on('error', (err) => process.stderr.write(`worker error: ${err?.stack ?? err}\n`));
process.on('SIGTERM', async () => {
  await worker.stop();
  await engine.close();
  process.exit(0);
});
process.send?.('ready');
// Alive until the driver stops or kills it (a worker's polling alone does not hold a process).
setInterval(() => {}, 1 << 30);
