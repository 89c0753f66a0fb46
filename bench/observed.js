'use strict';
// What the event stream costs: the same runs with and without an 'event' listener.
// Unobserved runs record nothing; observed ones get every event (a DAG node yields four:
// two state changes, start, finish; a machine step about five).
//
//   node --expose-gc bench/observed.js [N]
const { CompiledDag, DagRunner, StateMachineRunner } = require('..');

const n = Number(process.argv[2] ?? 100_000);

function chainDag() {
  const nodes = { n0: { run: async () => 0 } };
  for (let i = 1; i < n; i++) {
    const parent = `n${i - 1}`;
    nodes[`n${i}`] = { parents: [parent], run: async ({ input }) => input[parent] + 1 };
  }
  return new CompiledDag({ name: 'observed-chain', nodes });
}

const loop = {
  name: 'observed-loop',
  initial: 'step',
  maxSteps: n + 10,
  nodes: {
    step: {
      run: async ({ input }) => input + 1,
      transition: { '': [{ state: 'step', condition: ({ output }) => output < n }, { state: 'done' }] },
    },
    done: { final: true },
  },
};

async function measure(label, makeRunner) {
  const rows = [];
  for (const observed of [false, true]) {
    global.gc?.();
    const runner = makeRunner();
    let events = 0;
    if (observed) runner.on('event', () => events++);
    const t0 = performance.now();
    await runner.run();
    await runner.finished;
    const us = ((performance.now() - t0) * 1000) / n;
    rows.push({ observed, us, events });
  }
  const [plain, seen] = rows;
  console.log(
    `| ${label} | ${n.toLocaleString('en-US')} | ${plain.us.toFixed(2)} | ${seen.us.toFixed(2)} | ` +
      `${(seen.events / n).toFixed(1)} | ${((seen.us - plain.us) / (seen.events / n)).toFixed(2)} |`,
  );
}

(async () => {
  console.log('| shape | N | µs/unit unobserved | µs/unit observed | events/unit | µs/event |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
  const dag = chainDag();
  await measure('chain', () => new DagRunner({ dag, input: null }));
  await measure('agent-loop', () => new StateMachineRunner({ config: loop, input: 0 }));
})();
