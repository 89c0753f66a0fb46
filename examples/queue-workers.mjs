// A queue of agent runs and the workers that take them, on SQLite or PostgreSQL: a
// producer enqueues 20 triage runs (one per ticket, deduplicated, one at a time per
// customer, under a shared limit of 3 LLM calls at once), two workers take them, and the
// producer waits for every result wherever it ran.
//
//   node examples/queue-workers.mjs                                   # a SQLite file
//   RAMUS_DB=postgres://postgres@127.0.0.1:5432/ramus node examples/queue-workers.mjs
//
// With PostgreSQL the workers could as well be processes on other machines: each opens
// the same URL and registers the same runners.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Engine } from 'ramus';

const db = process.env.RAMUS_DB ?? path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ramus-queue-')), 'runs.sqlite');
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function engineOn(name) {
  const engine = new Engine({ db, durability: 'sync' });
  engine.register({
    // Stands in for an LLM call: 20-60 ms.
    summarize: async ({ rootInput }) => (await sleep(20 + Math.random() * 40), `ticket ${rootInput.ticket}: printer on fire`),
    route: async ({ input }) => ({ summary: input.summary, team: input.summary.includes('fire') ? 'facilities' : 'it', by: name }),
  });
  engine.define({
    name: 'triage',
    nodes: {
      summary: { runner: 'summarize', category: 'llm' },
      routed: { runner: 'route', parents: ['summary'] },
    },
  });
  return engine;
}

const producer = engineOn('producer');
producer.limits({ llm: { concurrency: 3 } });
const ids = [];
for (let ticket = 1; ticket <= 20; ticket++) {
  const { runId } = producer.enqueue('triage', {
    input: { ticket },
    idempotencyKey: `ticket-${ticket}`,
    concurrencyKey: `customer:${ticket % 4}`,
    priority: ticket % 5 === 0 ? 10 : 0,
  });
  ids.push(runId);
}
// The same key again finds the run already queued.
console.log('enqueued again:', producer.enqueue('triage', { input: { ticket: 1 }, idempotencyKey: 'ticket-1' }).created);

const workers = ['worker-a', 'worker-b'].map((name) => {
  const engine = engineOn(name);
  return { engine, worker: engine.work({ concurrency: 5 }) };
});
const results = await Promise.all(ids.map((id) => producer.result(id)));
const by = {};
for (const r of results) by[r.by] = (by[r.by] ?? 0) + 1;
console.log(`${results.length} tickets triaged on ${db.startsWith('postgres') ? 'PostgreSQL' : 'SQLite'}:`, by);
console.log(results[0]);
for (const { engine, worker } of workers) {
  await worker.stop();
  await engine.close();
}
await producer.close();
