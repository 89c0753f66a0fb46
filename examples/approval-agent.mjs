// A state machine agent: it researches with a budget, drafts an answer in a loop until it
// is good enough, then waits for a person to approve it (with a timeout), and sends it.
//
//   research ─▶ draft ⟲ (until score ≥ 0.8) ─▶ review ──approve──▶ send (final)
//                                                 │ └─reject──▶ draft
//                                                 └─ timeout ──▶ escalate (final)
//
// Run it with `node examples/approval-agent.mjs`.
import { DagRunner, runAll, runDag, StateMachineRunner } from 'ramus';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Ten searches with a 150 ms budget: use whatever came back in time.
function searchDag(source, latency) {
  return {
    name: `search:${source}`,
    nodes: {
      fetch: { run: async ({ rootInput }) => (await sleep(latency), `${source} says ${rootInput}`) },
    },
  };
}

const config = {
  name: 'approval-agent',
  initial: 'research',
  context: () => ({ drafts: 0 }),
  maxSteps: 20,
  nodes: {
    research: {
      async run({ input }) {
        const sources = Array.from({ length: 10 }, (_, i) => searchDag(`source${i}`, 20 + i * 20));
        const children = sources.map((dag) => new DagRunner({ dag, input: input.question }));
        const results = await runAll(children, { timeout: 150 });
        return results.filter((r) => r.status === 'fulfilled').map((r) => r.value);
      },
      transition: 'draft',
    },
    draft: {
      async run({ input, context }) {
        context.drafts += 1;
        // A DAG started inside a state nests under its step in the event stream.
        const text = await runDag({
          dag: {
            name: 'write',
            nodes: {
              outline: { run: () => (Array.isArray(input) ? input : input.notes).slice(0, 3) },
              prose: { parents: ['outline'], run: ({ input: i }) => i.outline.join('; ') },
            },
          },
          input: null,
        });
        const score = Math.min(1, 0.35 * context.drafts);
        return { text, score, notes: Array.isArray(input) ? input : input.notes };
      },
      transition: { '': [{ state: 'draft', condition: ({ output }) => output.score < 0.8 }, { state: 'review' }] },
    },
    review: {
      // Waits for a person; gives up after 2 seconds.
      timeout: { after: '2s', state: 'escalate' },
      transition: { approve: 'send', reject: 'draft' },
    },
    send: {
      final: true,
      run: ({ input, event }) => ({ sent: input.text, approvedBy: event?.data?.by }),
    },
    // The timeout's TimeoutError arrives as input.
    escalate: { final: true, run: ({ input }) => ({ escalated: input.message }) },
  },
};

const agent = new StateMachineRunner({ config, input: { question: 'is the engine fast?' } });
agent.on('event', (e) => {
  if (e.type === 'state_machine:transition') console.log(`  ${e.data.from} -> ${e.data.to}${e.data.event ? ` (on ${e.data.event})` : ''}`);
  if (e.type === 'dag:finish' && e.source.startsWith('search:')) console.log(`  ${e.source} came back in time`);
});

await agent.run();
console.log(`resting in '${agent.state}' (${agent.machineStatus}); events it accepts: ${agent.availableEvents().join(', ')}`);

// A person approves after a moment (an HTTP handler would call send the same way).
setTimeout(() => agent.send({ type: 'approve', data: { by: 'dana' } }), 100);
console.log('result:', await agent.finished);
