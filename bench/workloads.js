'use strict';
// The benchmark shapes, written once per engine.
//
// Every workload is `{ bodies(n), build(bodies, n), run(built, n) }`:
//   bodies  the per-node (or per-step) functions a user writes, made once per size and never timed;
//   build   defines the graph or machine from them and compiles it (the engine's definition + compile work);
//   run     executes what `build` returned once and resolves with a number that must equal `n` (checked, so that a
//           broken workload cannot report a fast time). It must be callable more than once.
// `prepare(engine, shape, mode)` turns a workload into the `prepare(n) → run` the worker times, in one of two modes:
//   run  `build` is timed once as "setup"; each timed run reuses its result (compile once, run many times);
//   e2e  each timed run builds, compiles and runs ("end to end"); only the bodies are made beforehand.
// The shapes that have an end-to-end mode are listed in MODES.
//
// Shapes:
//   chain       n0 -> n1 -> ... -> n(N-1), each node an async function returning its parent's output + 1.
//   fanout      root -> N middle nodes -> sink; the sink sums the N middle outputs.
//   agent-loop  one async step repeated K (= N) times, with a guard evaluated after every step that decides whether
//               to step again: the shape of an agent's think/act loop.
//
// Engines: `floor` (the bare-JS floor: the bodies awaited in a plain loop / Promise.all), `machine` (agent-loop only:
// a plain-JS state machine, the least a state-machine engine has to do), `ramus`, `xstate`, `langgraph`. The floors
// have no definition to build, so they have no e2e mode.
//
// Engines are loaded lazily so that a worker only pays for (and can only be disturbed by) the one it measures.

// ---------------------------------------------------------------------------------------------------------------
// Node bodies shared by the floors and Ramus: exactly the functions a Ramus user writes, so that the floors call the
// same code and the difference between them is the engine alone.

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

// The per-step work in the plain form the peers (which pass state their own way) wrap.
const increment = async (i) => i + 1;

// The agent loop's step (a state's `run`: its input is the previous step's output) and its guard (a transition
// condition: step again while it holds), shared by the bare-JS loop, the plain-JS machine and Ramus.
function agentLoopBodies(k) {
  return {
    step: ({ input }) => increment(input),
    more: ({ output }) => output < k,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Floor: the same async functions driven by plain JavaScript, i.e. the least any engine has to do.
//
// Inputs keyed by node name are built on null-prototype objects: those start in V8's dictionary mode, whereas
// `{ [name]: value }` with a million distinct names creates a hidden class per name and makes the floor several
// times slower than it needs to be at 100k+.

const identity = (x) => x;

const floor = {
  chain: {
    bodies: chainNodes,
    build: identity,
    async run({ names, runs }, n) {
      let output = await runs[0]({ input: {} });
      for (let i = 1; i < n; i++) {
        const input = Object.create(null);
        input[names[i - 1]] = output;
        output = await runs[i]({ input });
      }
      return output;
    },
  },
  fanout: {
    bodies: fanoutNodes,
    build: identity,
    async run({ root, middleNames, middleRuns, sink }, n) {
      const rootOutput = await root({ input: {} });
      const outputs = await Promise.all(middleRuns.map((run) => run({ input: { root: rootOutput } })));
      const input = Object.create(null);
      for (let i = 0; i < n; i++) input[middleNames[i]] = outputs[i];
      return sink({ input });
    },
  },
  // The bare-JS loop: step, then ask the guard whether to step again.
  'agent-loop': {
    bodies: agentLoopBodies,
    build: identity,
    async run({ step, more }) {
      let output = await step({ input: 0 });
      while (more({ output })) output = await step({ input: output });
      return output;
    },
  },
};

// ---------------------------------------------------------------------------------------------------------------
// Plain-JS machine: a second floor for the agent loop. A generic state-machine interpreter in a few lines: look up
// the state object by name, await its `run`, evaluate its transitions' conditions in order and move to the first
// that holds; a state without transitions (or none holding) ends the run with its output. No events, no records, no
// limits: what any state-machine engine does at the least, beside the bare loop's hand-inlined control flow.

function plainMachine(config) {
  return async function run(input) {
    let state = config.initial;
    const context = {};
    let output;
    for (;;) {
      const node = config.nodes[state];
      output = node.run ? await node.run({ input, context, state }) : input;
      const transitions = node.transitions;
      if (!transitions) return output;
      let next;
      for (const t of transitions) {
        if (!t.condition || t.condition({ output, context, input })) {
          next = t.state;
          break;
        }
      }
      if (next === undefined) return output;
      state = next;
      input = output;
    }
  };
}

const machine = {
  'agent-loop': {
    bodies: agentLoopBodies,
    build: ({ step, more }) =>
      plainMachine({
        initial: 'step',
        nodes: {
          step: { run: step, transitions: [{ state: 'step', condition: more }, { state: 'done' }] },
          done: { run: ({ input }) => input },
        },
      }),
    run: (run) => run(0),
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
  // Build: the definition object (one `{ parents, run }` per node) and `new CompiledDag` (validation and the
  // native tables). Run: `runDag` over the compiled DAG.
  chain: {
    bodies: chainNodes,
    build({ names, runs }, n) {
      const { CompiledDag } = loadRamus();
      const nodes = { [names[0]]: { run: runs[0] } };
      for (let i = 1; i < n; i++) nodes[names[i]] = { parents: [names[i - 1]], run: runs[i] };
      return new CompiledDag({ name: 'bench-chain', nodes });
    },
    run: (dag) => loadRamus().runDag({ dag, input: {} }),
  },
  fanout: {
    bodies: fanoutNodes,
    build({ root, middleNames, middleRuns, sink }, n) {
      const { CompiledDag } = loadRamus();
      const nodes = { root: { run: root } };
      for (let i = 0; i < n; i++) nodes[middleNames[i]] = { parents: ['root'], run: middleRuns[i] };
      nodes.sink = { parents: middleNames, run: sink };
      return new CompiledDag({ name: 'bench-fanout', nodes });
    },
    run: (dag) => loadRamus().runDag({ dag, input: {} }),
  },
  // Agent-loop (StateMachineRunner; builds without it report the column as skipped): one `step` state whose
  // eventless transition loops back to itself while its guard holds, then rests in `done`. Each state's output is
  // the next state's input. The machine config is compiled on first use and cached per config object, so a run
  // here is a new runner over an already-compiled machine, like a new XState actor or a LangGraph invoke.
  'agent-loop': {
    bodies: agentLoopBodies,
    build({ step, more }, k) {
      const { StateMachineRunner } = loadRamus();
      if (typeof StateMachineRunner !== 'function') throw new Unavailable('Ramus has no StateMachineRunner export yet');
      return {
        name: 'bench-agent-loop',
        initial: 'step',
        maxSteps: k + 10,
        nodes: {
          step: { run: step, transition: { '': [{ state: 'step', condition: more }, { state: 'done' }] } },
          done: { final: true, run: ({ input }) => input },
        },
      };
    },
    async run(config) {
      const runner = new (loadRamus().StateMachineRunner)({ config, input: 0 });
      await runner.run();
      return runner.output;
    },
  },
};

// Ramus without AsyncLocalStorage (`nestAcrossAwaits(false)`): on Node 20 an AsyncLocalStorage turns on a promise
// hook for the whole process, which slows every promise (the plain-JS machine too, ~3x, when one is enabled beside
// it); without it runs started in a step after an `await` do not nest. Each measurement runs in its own process, so
// the setting stays with this column.
const ramusFlat = {
  'agent-loop': {
    ...ramus['agent-loop'],
    build(bodies, k) {
      loadRamus().nestAcrossAwaits(false);
      return ramus['agent-loop'].build(bodies, k);
    },
  },
};

// ---------------------------------------------------------------------------------------------------------------
// XState 5. Build: `setup(...)` and `createMachine` (XState interprets the config, so this is its define + compile).
// Run: `createActor(machine).start()` until its output.

const xstateRun = (machine) => {
  const { createActor, toPromise } = require('xstate');
  return toPromise(createActor(machine).start());
};

const xstate = {
  // A machine of N states, each invoking a promise actor whose onDone moves to the next state.
  chain: {
    bodies: () => ({ step: ({ input }) => increment(input) }),
    build({ step }, n) {
      const { setup, fromPromise, assign } = require('xstate');
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
      return setup({ actors: { step: fromPromise(step) } }).createMachine({
        context: { value: 0 },
        initial: 'n0',
        states,
        output: ({ context }) => context.value,
      });
    },
    run: xstateRun,
  },
  // N spawned promise actors, joined by counting their done events. A parallel state with N regions is the other
  // idiomatic form, but it re-walks every region on every transition (~40 ms/node at 1k), so it cannot reach 10k.
  // Spawning is quadratic too (each finished child copies the machine's children map), only with a far smaller
  // constant. The machine's size does not depend on N (the spawns happen at run time), so its build is small.
  fanout: {
    bodies: () => ({ middle: ({ input }) => increment(input) }),
    build({ middle }, n) {
      const { setup, fromPromise, assign } = require('xstate');
      return setup({ actors: { middle: fromPromise(middle) } }).createMachine({
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
    },
    run: xstateRun,
  },
  // 'decide' is an eventless (always) state whose guard runs before every step; 'step' invokes the async step and
  // increments the context on done.
  'agent-loop': {
    bodies: (k) => ({ step: ({ input }) => increment(input), more: ({ context }) => context.i < k }),
    build({ step, more }) {
      const { setup, fromPromise, assign } = require('xstate');
      return setup({ actors: { step: fromPromise(step) }, guards: { more } }).createMachine({
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
    },
    run: xstateRun,
  },
};

// ---------------------------------------------------------------------------------------------------------------
// LangGraph.js. Build: a `StateGraph` with its nodes and edges, then `compile()`. Run: `invoke`. Every superstep
// counts against recursionLimit (default 25), so it is raised to the step count.

const lastValue = (_, next) => next;

const langgraph = {
  chain: {
    bodies(n) {
      const runs = [];
      for (let i = 0; i < n; i++) runs.push(async ({ value }) => ({ value: await increment(value) }));
      return runs;
    },
    build(runs, n) {
      const { StateGraph, Annotation, START, END } = require('@langchain/langgraph');
      const State = Annotation.Root({ value: Annotation({ reducer: lastValue, default: () => 0 }) });
      const graph = new StateGraph(State);
      for (let i = 0; i < n; i++) graph.addNode(`n${i}`, runs[i]);
      graph.addEdge(START, 'n0');
      for (let i = 1; i < n; i++) graph.addEdge(`n${i - 1}`, `n${i}`);
      graph.addEdge(`n${n - 1}`, END);
      return graph.compile();
    },
    run: async (app, n) => (await app.invoke({}, { recursionLimit: n + 10 })).value,
  },
  // The middles' outputs meet in a summing reducer; the list-form edge makes the sink wait for all of them.
  fanout: {
    bodies(n) {
      const middleRuns = [];
      for (let i = 0; i < n; i++) middleRuns.push(async () => ({ sum: await increment(0) }));
      return { root: async () => ({}), middleRuns, sink: async ({ sum }) => ({ total: sum }) };
    },
    build({ root, middleRuns, sink }, n) {
      const { StateGraph, Annotation, START, END } = require('@langchain/langgraph');
      const State = Annotation.Root({
        sum: Annotation({ reducer: (a, b) => a + b, default: () => 0 }),
        total: Annotation({ reducer: lastValue, default: () => 0 }),
      });
      const graph = new StateGraph(State);
      const middles = [];
      graph.addNode('root', root);
      for (let i = 0; i < n; i++) {
        middles.push(`m${i}`);
        graph.addNode(`m${i}`, middleRuns[i]);
      }
      graph.addNode('sink', sink);
      graph.addEdge(START, 'root');
      for (const middle of middles) graph.addEdge('root', middle);
      graph.addEdge(middles, 'sink');
      graph.addEdge('sink', END);
      return graph.compile();
    },
    run: async (app) => (await app.invoke({}, { recursionLimit: 10 })).total,
  },
  // One node, routed back to itself by a conditional edge (the guard) until the counter reaches k.
  'agent-loop': {
    bodies(k) {
      const { END } = require('@langchain/langgraph');
      return { step: async ({ i }) => ({ i: await increment(i) }), route: ({ i }) => (i < k ? 'step' : END) };
    },
    build({ step, route }) {
      const { StateGraph, Annotation, START } = require('@langchain/langgraph');
      const State = Annotation.Root({ i: Annotation({ reducer: lastValue, default: () => 0 }) });
      return new StateGraph(State)
        .addNode('step', step)
        .addConditionalEdges(START, route)
        .addConditionalEdges('step', route)
        .compile();
    },
    run: async (app, k) => (await app.invoke({}, { recursionLimit: k + 10 })).i,
  },
};

// ---------------------------------------------------------------------------------------------------------------

const engines = { floor, machine, ramus, 'ramus-flat': ramusFlat, xstate, langgraph };
const shapes = ['chain', 'fanout', 'agent-loop'];
// The modes each shape is measured in: the DAG shapes also end to end; the agent loop's machine does not grow with
// N, so building it is a constant that end to end would only blur.
const MODES = { chain: ['run', 'e2e'], fanout: ['run', 'e2e'], 'agent-loop': ['run'] };

/** Whether `engine` measures `shape` in `mode` (the floors have no e2e mode: nothing to build). */
function has(engine, shape, mode) {
  const workload = engines[engine]?.[shape];
  if (!workload || !MODES[shape].includes(mode)) return false;
  return mode === 'run' || workload.build !== identity;
}

/** `prepare(n) → run` for the worker: in 'run' mode prepare builds (timed as setup) and run reuses the result; in
 * 'e2e' mode prepare only makes the bodies and every run builds, compiles and runs. */
function prepare(engine, shape, mode) {
  if (!has(engine, shape, mode)) throw new Error(`${engine} has no ${shape} workload in mode ${mode}`);
  const { bodies, build, run } = engines[engine][shape];
  return mode === 'run'
    ? (n) => {
        const built = build(bodies(n), n);
        return () => run(built, n);
      }
    : (n) => {
        const made = bodies(n);
        return () => run(build(made, n), n);
      };
}

module.exports = { engines, shapes, MODES, has, prepare, Unavailable };
