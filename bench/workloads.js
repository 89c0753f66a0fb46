'use strict';
// The benchmark shapes, written once per engine.
//
// Every workload is `prepare(n) → run`, where prepare defines the graph or machine and compiles it (timed as
// "setup") and `run()` executes it once and resolves with a number that must equal `n` (timed as "run"; checked
// so that a broken workload cannot report a fast time). `run` must be callable more than once.
//
// Shapes:
//   chain       n0 -> n1 -> ... -> n(N-1), each node an async function returning its parent's output + 1.
//   fanout      root -> N middle nodes -> sink; the sink sums the N middle outputs.
//   agent-loop  one async step repeated K (= N) times, with a guard evaluated before every step: the shape of an
//               agent's think/act loop.
//
// Engines are loaded lazily so that a worker only pays for (and can only be disturbed by) the one it measures.

// ---------------------------------------------------------------------------------------------------------------
// Node bodies shared by the floor and Ramus: exactly the functions a Ramus user writes, so that the floor calls the
// same code and the difference between the two is the engine alone.

function chainNodes(n) {
  const names = [];
  const runs = [];
  for (let i = 0; i < n; i++) {
    const parent = `n${i - 1}`;
    names.push(`n${i}`);
    runs.push(async ({ input }) => (input[parent] ?? 0) + 1);
  }
  return { names, runs };
}

function fanoutNodes(n) {
  const middleNames = [];
  const middleRuns = [];
  for (let i = 0; i < n; i++) {
    middleNames.push(`m${i}`);
    middleRuns.push(async ({ input }) => input.root + 1);
  }
  return {
    root: async () => 0,
    middleNames,
    middleRuns,
    sink: async ({ input }) => {
      let sum = 0;
      for (const name in input) sum += input[name];
      return sum;
    },
  };
}

// The per-step work in the plain form the agent-loop floor and the peers (which pass state their own way) wrap.
const increment = async (i) => i + 1;

// ---------------------------------------------------------------------------------------------------------------
// Floor: the same async functions driven by plain JavaScript, i.e. the least any engine has to do.
//
// Inputs keyed by node name are built on null-prototype objects: those start in V8's dictionary mode, whereas
// `{ [name]: value }` with a million distinct names creates a hidden class per name and makes the floor several
// times slower than it needs to be at 100k+.

const floor = {
  chain(n) {
    const { names, runs } = chainNodes(n);
    return async () => {
      let output = await runs[0]({ input: {} });
      for (let i = 1; i < n; i++) {
        const input = Object.create(null);
        input[names[i - 1]] = output;
        output = await runs[i]({ input });
      }
      return output;
    };
  },
  fanout(n) {
    const { root, middleNames, middleRuns, sink } = fanoutNodes(n);
    return async () => {
      const rootOutput = await root({ input: {} });
      const outputs = await Promise.all(middleRuns.map((run) => run({ input: { root: rootOutput } })));
      const input = Object.create(null);
      for (let i = 0; i < n; i++) input[middleNames[i]] = outputs[i];
      return sink({ input });
    };
  },
  'agent-loop'(k) {
    return async () => {
      let i = 0;
      while (i < k) i = await increment(i);
      return i;
    };
  },
};

// ---------------------------------------------------------------------------------------------------------------
// Ramus

// Thrown by a Ramus workload that cannot run in this build; the worker reports it as a skip, not a failure.
class Unavailable extends Error {}

let ramusModule;
function loadRamus() {
  if (!ramusModule) {
    try {
      ramusModule = require('..');
    } catch (error) {
      throw new Unavailable(`Ramus could not be loaded (${error.message.split('\n')[0]})`);
    }
  }
  return ramusModule;
}

const ramus = {
  chain(n) {
    const { runDag, CompiledDag } = loadRamus();
    const { names, runs } = chainNodes(n);
    const nodes = { [names[0]]: { run: runs[0] } };
    for (let i = 1; i < n; i++) nodes[names[i]] = { parents: [names[i - 1]], run: runs[i] };
    const dag = new CompiledDag({ name: 'bench-chain', nodes });
    return () => runDag({ dag, input: {} });
  },
  fanout(n) {
    const { runDag, CompiledDag } = loadRamus();
    const { root, middleNames, middleRuns, sink } = fanoutNodes(n);
    const nodes = { root: { run: root } };
    for (let i = 0; i < n; i++) nodes[middleNames[i]] = { parents: ['root'], run: middleRuns[i] };
    nodes.sink = { parents: middleNames, run: sink };
    const dag = new CompiledDag({ name: 'bench-fanout', nodes });
    return () => runDag({ dag, input: {} });
  },
  // Agent-loop hook (StateMachineRunner; builds without it report the column as skipped): one `step` state whose
  // eventless transition loops back to itself while its guard holds, then rests in `done`. Each state's output is
  // the next state's input. The machine config is compiled on first use and cached per config object, so a run
  // here is a new runner over an already-compiled machine, like a new XState actor or a LangGraph invoke.
  'agent-loop'(k) {
    const { StateMachineRunner } = loadRamus();
    if (typeof StateMachineRunner !== 'function') throw new Unavailable('Ramus has no StateMachineRunner export yet');
    const config = {
      name: 'bench-agent-loop',
      initial: 'step',
      maxSteps: k + 10,
      nodes: {
        step: {
          run: ({ input }) => increment(input),
          transition: { '': [{ state: 'step', condition: ({ output }) => output < k }, { state: 'done' }] },
        },
        done: { final: true, run: ({ input }) => input },
      },
    };
    return async () => {
      const runner = new StateMachineRunner({ config, input: 0 });
      await runner.run();
      return runner.output;
    };
  },
};

// ---------------------------------------------------------------------------------------------------------------
// XState 5

const xstate = {
  // A machine of N states, each invoking a promise actor whose onDone moves to the next state.
  chain(n) {
    const { setup, createActor, fromPromise, assign, toPromise } = require('xstate');
    const states = {};
    for (let i = 0; i < n; i++) {
      states[`n${i}`] = {
        invoke: {
          src: 'step',
          input: ({ context }) => context.value,
          onDone: { target: `n${i + 1}`, actions: assign({ value: ({ event }) => event.output }) },
        },
      };
    }
    states[`n${n}`] = { type: 'final' };
    const machine = setup({ actors: { step: fromPromise(({ input }) => increment(input)) } }).createMachine({
      context: { value: 0 },
      initial: 'n0',
      states,
      output: ({ context }) => context.value,
    });
    return () => toPromise(createActor(machine).start());
  },
  // N spawned promise actors, joined by counting their done events. A parallel state with N regions is the other
  // idiomatic form, but it re-walks every region on every transition (~40 ms/node at 1k), so it cannot reach 10k.
  // Spawning is quadratic too (each finished child copies the machine's children map), only with a far smaller
  // constant.
  fanout(n) {
    const { setup, createActor, fromPromise, assign, toPromise } = require('xstate');
    const machine = setup({ actors: { middle: fromPromise(({ input }) => increment(input)) } }).createMachine({
      context: { sum: 0, pending: n },
      initial: 'fan',
      states: {
        fan: {
          entry: assign(({ spawn }) => {
            for (let i = 0; i < n; i++) spawn('middle', { id: `m${i}`, input: 0 });
            return {};
          }),
          on: {
            'xstate.done.actor.*': {
              actions: assign({
                sum: ({ context, event }) => context.sum + event.output,
                pending: ({ context }) => context.pending - 1,
              }),
            },
          },
          always: { guard: ({ context }) => context.pending === 0, target: 'sink' },
        },
        sink: { type: 'final' },
      },
      output: ({ context }) => context.sum,
    });
    return () => toPromise(createActor(machine).start());
  },
  // 'decide' is an eventless (always) state whose guard runs before every step; 'step' invokes the async step and
  // increments the context on done.
  'agent-loop'(k) {
    const { setup, createActor, fromPromise, assign, toPromise } = require('xstate');
    const machine = setup({
      actors: { step: fromPromise(({ input }) => increment(input)) },
      guards: { more: ({ context }) => context.i < k },
    }).createMachine({
      context: { i: 0 },
      initial: 'decide',
      states: {
        decide: { always: [{ guard: 'more', target: 'step' }, { target: 'done' }] },
        step: {
          invoke: {
            src: 'step',
            input: ({ context }) => context.i,
            onDone: { target: 'decide', actions: assign({ i: ({ event }) => event.output }) },
          },
        },
        done: { type: 'final' },
      },
      output: ({ context }) => context.i,
    });
    return () => toPromise(createActor(machine).start());
  },
};

// ---------------------------------------------------------------------------------------------------------------
// LangGraph.js. Every superstep counts against recursionLimit (default 25), so it is raised to the step count.

const lastValue = (_, next) => next;

const langgraph = {
  chain(n) {
    const { StateGraph, Annotation, START, END } = require('@langchain/langgraph');
    const State = Annotation.Root({ value: Annotation({ reducer: lastValue, default: () => 0 }) });
    const graph = new StateGraph(State);
    for (let i = 0; i < n; i++) graph.addNode(`n${i}`, async ({ value }) => ({ value: await increment(value) }));
    graph.addEdge(START, 'n0');
    for (let i = 1; i < n; i++) graph.addEdge(`n${i - 1}`, `n${i}`);
    graph.addEdge(`n${n - 1}`, END);
    const app = graph.compile();
    return async () => (await app.invoke({}, { recursionLimit: n + 10 })).value;
  },
  // The middles' outputs meet in a summing reducer; the list-form edge makes the sink wait for all of them.
  fanout(n) {
    const { StateGraph, Annotation, START, END } = require('@langchain/langgraph');
    const State = Annotation.Root({
      sum: Annotation({ reducer: (a, b) => a + b, default: () => 0 }),
      total: Annotation({ reducer: lastValue, default: () => 0 }),
    });
    const graph = new StateGraph(State);
    const middles = [];
    graph.addNode('root', async () => ({}));
    for (let i = 0; i < n; i++) {
      middles.push(`m${i}`);
      graph.addNode(`m${i}`, async () => ({ sum: await increment(0) }));
    }
    graph.addNode('sink', async ({ sum }) => ({ total: sum }));
    graph.addEdge(START, 'root');
    for (const middle of middles) graph.addEdge('root', middle);
    graph.addEdge(middles, 'sink');
    graph.addEdge('sink', END);
    const app = graph.compile();
    return async () => (await app.invoke({}, { recursionLimit: 10 })).total;
  },
  // One node, routed back to itself by a conditional edge (the guard) until the counter reaches k.
  'agent-loop'(k) {
    const { StateGraph, Annotation, START, END } = require('@langchain/langgraph');
    const State = Annotation.Root({ i: Annotation({ reducer: lastValue, default: () => 0 }) });
    const route = ({ i }) => (i < k ? 'step' : END);
    const app = new StateGraph(State)
      .addNode('step', async ({ i }) => ({ i: await increment(i) }))
      .addConditionalEdges(START, route)
      .addConditionalEdges('step', route)
      .compile();
    return async () => (await app.invoke({}, { recursionLimit: k + 10 })).i;
  },
};

module.exports = {
  engines: { floor, ramus, xstate, langgraph },
  shapes: ['chain', 'fanout', 'agent-loop'],
  Unavailable,
};
