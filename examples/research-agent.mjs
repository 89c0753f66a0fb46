// The demo agent: a research DAG that fans out over several (fake) tool calls, limits them
// with a semaphore, and prints its event stream as it goes.
//
//   plan ──┬─ search:web ─────┐
//          ├─ search:news ────┤
//          ├─ search:papers ──┼─ rank ── summarize
//          ├─ search:forums ──┤
//          └─ search:code ────┘
//
// Run it with `npm run demo`.
import { DagRunner, LocalSemaphore } from 'ramus';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Tools stay in JS and are never serialized: here a fake search client with latency.
const tools = {
  async search(source, query) {
    await sleep(40 + Math.floor(Math.random() * 80));
    return [1, 2, 3].map((i) => ({ source, title: `${query} — ${source} result ${i}`, score: Math.random() }));
  },
};

const sources = ['web', 'news', 'papers', 'forums', 'code'];
const searchNodes = Object.fromEntries(
  sources.map((source) => [
    `search:${source}`,
    {
      parents: ['plan'],
      // Every search holds one slot of the 'search' semaphore while it runs.
      semaphoreKey: 'search',
      async run({ input, tools, emit, context }) {
        const hits = await tools.search(source, input.plan.query);
        emit('search:hits', { source, count: hits.length });
        context.calls += 1;
        return hits;
      },
    },
  ]),
);

const dag = {
  name: 'research',
  context: () => ({ calls: 0 }),
  nodes: {
    plan: { run: ({ rootInput }) => ({ query: rootInput.topic.toLowerCase() }) },
    ...searchNodes,
    rank: {
      parents: sources.map((s) => `search:${s}`),
      run: ({ input }) =>
        Object.values(input)
          .flat()
          .sort((a, b) => b.score - a.score)
          .slice(0, 5),
    },
    summarize: {
      parents: ['rank'],
      run: ({ input, context }) => ({
        top: input.rank.map((hit) => hit.title),
        toolCalls: context.calls,
      }),
    },
  },
};

// At most two searches at a time, whatever the DAG's width.
const semaphore = new LocalSemaphore({ search: 2 });
const runner = new DagRunner({ dag, input: { topic: 'Rust async runtimes' }, tools, semaphores: [semaphore] });

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

const result = await runner.run();
console.log('\nSummary:', JSON.stringify(result, null, 2));
