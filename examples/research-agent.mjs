// The demo agent: a research DAG that fans out over several (fake) tool calls, limits them
// with a semaphore, and prints its event stream as it goes.
//
//   plan ──┬─ search:web ─────┐
//          ├─ search:news ────┤
//          ├─ search:papers ──┼─ rank ── summarize
//          ├─ search:forums ──┤
//          └─ search:code ────┘
//
// It runs as a durable run of an `Engine` on the embedded default store, `./ramus.sqlite`:
// every step, input and output is written there, and the run can be opened in the
// inspector afterwards (the command is printed at the end).
//
// Run it with `npm run demo`.
import { Engine, LocalSemaphore } from 'ramus';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Tools stay in JS and are never serialized: here a fake search client with latency.
const tools = {
  async search(source, query) {
    await sleep(40 + Math.floor(Math.random() * 80));
    return [1, 2, 3].map((i) => ({ source, title: `${query} — ${source} result ${i}`, score: Math.random() }));
  },
};

const engine = new Engine({ db: './ramus.sqlite', tools });

// Serializable runners: the stored definition names them by key, so a run can be resumed
// in any process that registers the same keys.
engine.register({
  plan: ({ rootInput }) => ({ query: rootInput.topic.toLowerCase() }),
  async search({ args, input, tools, emit, context }) {
    const hits = await tools.search(args.source, input.plan.query);
    emit('search:hits', { source: args.source, count: hits.length });
    context.calls += 1;
    return hits;
  },
  rank: ({ input }) =>
    Object.values(input)
      .flat()
      .sort((a, b) => b.score - a.score)
      .slice(0, 5),
  summarize: ({ input, context }) => ({ top: input.rank.map((hit) => hit.title), toolCalls: context.calls }),
});

const sources = ['web', 'news', 'papers', 'forums', 'code'];
// The definition is pure JSON: `engine.define` stores it (a new version only when it changed).
const { version } = engine.define({
  name: 'research',
  context: { calls: 0 },
  nodes: {
    plan: { runner: 'plan' },
    ...Object.fromEntries(
      sources.map((source) => [
        `search:${source}`,
        // Every search holds one slot of the 'search' semaphore while it runs.
        { runner: 'search', args: { source }, parents: ['plan'], semaphoreKey: 'search' },
      ]),
    ),
    rank: { runner: 'rank', parents: sources.map((s) => `search:${s}`) },
    summarize: { runner: 'summarize', parents: ['rank'] },
  },
});

// At most two searches at a time, whatever the DAG's width.
const semaphore = new LocalSemaphore({ search: 2 });
const runner = engine.start('research', { input: { topic: 'Rust async runtimes' }, tags: ['demo'], semaphores: [semaphore] });

const t0 = Date.now();
runner.on('event', (e) => {
  if (e.type === 'dag:node_state') return; // states are shown by the node events below
  const at = String(e.time - t0).padStart(4);
  const detail =
    e.type === 'search:hits'
      ? `${e.data.count} hits from ${e.data.source}`
      : e.type === 'dag:node_start' && e.sourceNode.startsWith('search:')
        ? `slots in use: ${semaphore.current('search')}`
        : '';
  console.log(`${at} ms  ${e.type.padEnd(16)} ${e.sourceNode.padEnd(14)} ${detail}`);
});

const result = await runner.finished;
console.log('\nSummary:', JSON.stringify(result, null, 2));
engine.flush();
const steps = engine.steps(runner.runId).length;
await engine.close();
console.log(`\nStored run ${runner.runId} (research v${version}, ${steps} steps) in ./ramus.sqlite.`);
console.log('Open it in the inspector:');
console.log('  npm run inspect -- --db ./ramus.sqlite     (in this repository)');
console.log('  npx ramus inspect --db ./ramus.sqlite      (in a project that installed ramus)');
