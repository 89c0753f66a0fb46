// Strict definitions: every definition is parsed and checked in Rust when it is compiled —
// inline (`runDag`, `new DagRunner`, `new CompiledDag`, `new StateMachineRunner`) and stored
// (`engine.define`, `engine.start(config)`) alike — and a mistake is a plain `Error` whose
// message names the field and whose `code` starts with `ERR_DEFINITION`. Then `inputSchema`,
// which every way of starting a run enforces (ERR_INPUT_SCHEMA).
// The exact messages are those of crates/ramus-core/src/definition.rs (and its tests).
import { describe, expect, test } from 'vitest';
import { CompiledDag, DagRunner, Engine, runDag, StateMachineRunner, type StateMachine } from 'ramus';
import { engineFixtures, settled } from './engine-fixtures';

const { open } = engineFixtures('ramus-strict-');

// ---- how a definition error is caught and checked ----

/** The error `f` throws, or the rejection of the promise it returns; fails the test when there is none. */
async function failure(f: () => unknown): Promise<any> {
  let value: unknown;
  try {
    value = f();
  } catch (err) {
    return err;
  }
  if (value instanceof Promise) {
    try {
      await value;
    } catch (err) {
      return err;
    }
  }
  throw new Error('expected a definition error, but the definition was accepted');
}

/** A plain Error (not a subclass) with exactly `message` and a code: `code`, or any `ERR_DEFINITION…` one. */
function expectDefinitionError(err: any, message: string, code?: string) {
  expect(err).toBeInstanceOf(Error);
  expect(Object.getPrototypeOf(err), `a plain Error, not a ${err?.constructor?.name}`).toBe(Error.prototype);
  expect(err.name).toBe('Error');
  expect(err.message).toBe(message);
  expect(typeof err.code, `no code on "${err.message}"`).toBe('string');
  if (code) expect(err.code).toBe(code);
  else expect(err.code).toMatch(/^ERR_DEFINITION/);
}

const run = () => 'ran';

/** The four doors a definition comes in by; `step` is how a node or state runs (inline or registered). */
type Door = { name: string; inline: boolean; accept(config: any): unknown };

function doors(engine: Engine): Door[] {
  return [
    {
      name: 'inline',
      inline: true,
      accept: (config) => (config.initial !== undefined ? new StateMachineRunner({ config, input: 1 }) : runDag({ dag: config, input: 1 })),
    },
    { name: 'engine.define', inline: false, accept: (config) => engine.define(config) },
    { name: 'engine.start(config)', inline: false, accept: (config) => engine.start(config, { input: 1 }) },
  ];
}

/** An engine with the runner `k` that stored definitions name. */
function strictEngine(): Engine {
  const engine = open({ durability: 'sync' });
  engine.register({ k: () => 'ran' });
  return engine;
}

/** How a node or state runs through `door`: an inline function, or the registered runner `k`. */
const step = (door: Door) => (door.inline ? { run } : { runner: 'k' });

/** A DAG with the node `search` (and a root `a`). */
const dagWith = (door: Door, search: object, extra: object = {}) => ({ name: 'd', ...extra, nodes: { a: step(door), search: { parents: ['a'], ...step(door), ...search } } });

/** A machine whose state `a` is given, and a final `b`. */
const machineWith = (door: Door, a: object, extra: object = {}) => ({ name: 'm', initial: 'a', ...extra, nodes: { a: { ...step(door), ...a }, b: { final: true } } });

/** Each case: a config built for a door, and the message every door must refuse it with. */
type Case = [label: string, config: (door: Door) => object, message: string, code?: string];

async function expectEveryDoorRefuses(cases: Case[]) {
  const engine = strictEngine();
  for (const door of doors(engine)) {
    for (const [label, config, message, code] of cases) {
      const err = await failure(() => door.accept(config(door)));
      try {
        expectDefinitionError(err, message, code);
      } catch (e) {
        throw new Error(`${label} through ${door.name}: ${(e as Error).message}`);
      }
    }
  }
  // Nothing refused was stored, nor started.
  expect(engine.runs()).toEqual([]);
}

// ---- 1. strict definitions ----

describe('unknown fields are errors that suggest the nearest known name', () => {
  test('on a node, a state, a transition, a timeout and the definition itself, through every door', async () => {
    await expectEveryDoorRefuses([
      ['node retyr', (d) => dagWith(d, { retyr: 3 }), "unknown field 'retyr' on node 'search' (did you mean 'retry'?)", 'ERR_DEFINITION_UNKNOWN_FIELD'],
      ['node parent', (d) => dagWith(d, { parent: ['a'] }), "unknown field 'parent' on node 'search' (did you mean 'parents'?)", 'ERR_DEFINITION_UNKNOWN_FIELD'],
      ['state retyr', (d) => machineWith(d, { retyr: 3, transition: 'b' }), "unknown field 'retyr' on state 'a' (did you mean 'retry'?)", 'ERR_DEFINITION_UNKNOWN_FIELD'],
      ['state transiton', (d) => machineWith(d, { transiton: 'b' }), "unknown field 'transiton' on state 'a' (did you mean 'transition'?)", 'ERR_DEFINITION_UNKNOWN_FIELD'],
      [
        'transition delya',
        (d) => machineWith(d, { transition: { go: { state: 'b', delya: 5 } } }),
        "unknown field 'delya' on transition of state 'a' for event 'go' (did you mean 'delay'?)",
        'ERR_DEFINITION_UNKNOWN_FIELD',
      ],
      [
        'timeout aftr',
        (d) => machineWith(d, { transition: 'b', timeout: { after: 5, state: 'b', aftr: 1 } }),
        "unknown field 'aftr' on timeout of state 'a' (did you mean 'after'?)",
        'ERR_DEFINITION_UNKNOWN_FIELD',
      ],
      ['machine maxStep', (d) => machineWith(d, { transition: 'b' }, { maxStep: 5 }), "unknown field 'maxStep' on definition 'm' (did you mean 'maxSteps'?)", 'ERR_DEFINITION_UNKNOWN_FIELD'],
      ['dag nodse', (d) => ({ name: 'd', nodse: {}, nodes: { a: step(d) } }), "unknown field 'nodse' on definition 'd' (did you mean 'nodes'?)", 'ERR_DEFINITION_UNKNOWN_FIELD'],
      // Far from every known name: no suggestion.
      ['node zzzzzz', (d) => dagWith(d, { zzzzzz: 1 }), "unknown field 'zzzzzz' on node 'search'", 'ERR_DEFINITION_UNKNOWN_FIELD'],
    ]);
  });

  test('a DagRunner and a CompiledDag refuse an unknown field when they are constructed', () => {
    const dag = { name: 'd', nodes: { search: { run, retyr: 3 } } };
    for (const make of [() => new CompiledDag(dag as any), () => new DagRunner({ dag: dag as any, input: 1 })]) {
      let err: any;
      try {
        make();
      } catch (e) {
        err = e;
      }
      expectDefinitionError(err, "unknown field 'retyr' on node 'search' (did you mean 'retry'?)", 'ERR_DEFINITION_UNKNOWN_FIELD');
    }
  });

  test('a refused definition never ran its runners', async () => {
    let calls = 0;
    const counted = () => ++calls;
    await failure(() => runDag({ dag: { name: 'd', nodes: { a: { run: counted }, b: { parents: ['a'], run: counted, retyr: 1 } } } as any, input: 1 }));
    expect(() => new StateMachineRunner({ config: { name: 'm', initial: 'a', nodes: { a: { run: counted, transition: 'b' }, b: { final: true, retyr: 1 } } } as any, input: 1 })).toThrow(/retyr/);
    expect(calls).toBe(0);
  });
});

describe('counts, flags and shapes are checked', () => {
  test('maxSteps and maxVisits must be positive integers: NaN, Infinity, 0, 1.5 are errors', async () => {
    const cases: Case[] = [];
    for (const [v, shown] of [
      [NaN, 'NaN'],
      [Infinity, 'Infinity'],
      [0, '0'],
      [1.5, '1.5'],
      [-1, '-1'],
      ['5', '"5"'],
    ] as const) {
      cases.push([`maxSteps ${shown}`, (d) => machineWith(d, { transition: 'b' }, { maxSteps: v }), `Machine m maxSteps must be a positive integer, got ${shown}`]);
      cases.push([`maxVisits ${shown}`, (d) => machineWith(d, { transition: 'b', maxVisits: v }), `State a maxVisits must be a positive integer, got ${shown}`]);
    }
    await expectEveryDoorRefuses(cases);
  });

  test('a positive integer maxSteps or maxVisits is accepted (5.0 is an integer)', async () => {
    const r = new StateMachineRunner({ config: { name: 'm', initial: 'a', maxSteps: 5.0, nodes: { a: { run, maxVisits: 1, transition: 'b' }, b: { final: true } } }, input: 1 });
    await r.run();
    expect(await r.finished).toBe('ran');
  });

  test('final must be a boolean, tolerateFailures a boolean, nodes an object, a transition not an array', async () => {
    await expectEveryDoorRefuses([
      ['final "yes"', (d) => machineWith(d, { final: 'yes' }), 'State a final must be a boolean, got "yes"'],
      ['final 1', (d) => machineWith(d, { final: 1 }), 'State a final must be a boolean, got 1'],
      ['tolerateFailures "yes"', (d) => ({ name: 'd', tolerateFailures: 'yes', nodes: { a: step(d) } }), 'DAG \'d\' tolerateFailures must be a boolean, got "yes"'],
      ['dag nodes []', () => ({ name: 'd', nodes: [] }), 'DAG nodes must be an object of named nodes'],
      ['machine nodes []', () => ({ name: 'm', initial: 'a', nodes: [] }), 'State machine nodes must be an object of named states'],
      ['transition array', (d) => machineWith(d, { transition: ['b'] }), 'State a transition must be a state name or an object of events'],
    ]);
  });

  test('durations are ms or a duration string: [5] and 5n are errors, for delays and timeouts', async () => {
    await expectEveryDoorRefuses([
      ['delay [5]', (d) => machineWith(d, { transition: { '': { state: 'b', delay: [5] } } }), 'State a has an invalid delay: [5]'],
      ['delay 5n', (d) => machineWith(d, { transition: { '': { state: 'b', delay: 5n } } }), 'State a has an invalid delay: 5n'],
      ['delay "soon"', (d) => machineWith(d, { transition: { '': { state: 'b', delay: 'soon' } } }), 'State a has an invalid delay: soon'],
      ['timeout [5]', (d) => machineWith(d, { transition: 'b', timeout: { after: [5], state: 'b' } }), 'State a has an invalid timeout: [5]'],
      ['timeout 5n', (d) => machineWith(d, { transition: 'b', timeout: { after: 5n, state: 'b' } }), 'State a has an invalid timeout: 5n'],
      ['timeout Infinity', (d) => machineWith(d, { transition: 'b', timeout: { after: Infinity, state: 'b' } }), 'State a has an invalid timeout: Infinity'],
    ]);
  });

  test('a DAG with no nodes cannot be defined, compiled or run', async () => {
    await expectEveryDoorRefuses([['no nodes', () => ({ name: 'd', nodes: {} }), 'DAG has no nodes', 'ERR_DEFINITION_NO_NODES']]);
    let err: any;
    try {
      new CompiledDag({ name: 'd', nodes: {} });
    } catch (e) {
      err = e;
    }
    expectDefinitionError(err, 'DAG has no nodes', 'ERR_DEFINITION_NO_NODES');
  });
});

describe("a node, state or event named '__proto__' is an ordinary name", () => {
  test('inline DAG: the node runs, and its child gets it as an own input key', async () => {
    const out = await runDag({
      dag: {
        name: 'd',
        nodes: {
          ['__proto__']: { run: () => 'from proto' },
          child: { parents: ['__proto__'], run: ({ input }: any) => ({ keys: Object.keys(input), value: Object.getOwnPropertyDescriptor(input, '__proto__')?.value }) },
        },
      } as any,
      input: null,
    });
    expect(out).toEqual({ keys: ['__proto__'], value: 'from proto' });
    // As a leaf among several, it is an own key of the output.
    const leaves: any = await runDag({ dag: { name: 'd2', nodes: { ['__proto__']: { run: () => 1 }, other: { run: () => 2 } } } as any, input: null });
    expect(Object.keys(leaves).sort()).toEqual(['__proto__', 'other']);
    expect(Object.getOwnPropertyDescriptor(leaves, '__proto__')?.value).toBe(1);
    expect(Object.getPrototypeOf(leaves)).toBe(Object.prototype);
  });

  test('inline machine: a state and an event named __proto__ run end to end', async () => {
    const r = new StateMachineRunner({
      config: {
        name: 'm',
        initial: '__proto__',
        nodes: {
          ['__proto__']: { run: ({ input }: any) => input + 1, transition: { ['__proto__']: 'end' } },
          end: { final: true, run: ({ input, event, previousState }: any) => ({ input, event, previousState }) },
        },
      } as any,
      input: 1,
    });
    await r.run();
    expect([r.state, r.machineStatus, r.availableEvents()]).toEqual(['__proto__', 'waitingForEvent', ['__proto__']]);
    r.send({ type: '__proto__', data: 'go' });
    expect(await r.finished).toEqual({ input: 2, event: { type: '__proto__', data: 'go' }, previousState: '__proto__' });
  });

  test('stored DAG: define, start by name, and the steps read back keep the node', async () => {
    const engine = open({ durability: 'sync' });
    engine.register({ k: ({ args, input }: any) => ({ args, parents: Object.keys(input) }) });
    const def = { name: 'proto-dag', nodes: { ['__proto__']: { runner: 'k', args: { n: 1 } }, child: { parents: ['__proto__'], runner: 'k' } } };
    expect(engine.define(def as any)).toMatchObject({ name: 'proto-dag', version: 1 });
    const started = engine.start('proto-dag', { input: 7 });
    expect(await settled(started.finished)).toEqual({ ok: true, value: { args: undefined, parents: ['__proto__'] } });
    const steps = engine.steps(started.runId);
    expect(steps.map((s) => [s.node, s.status])).toEqual([
      ['__proto__', 'finished'],
      ['child', 'finished'],
    ]);
    expect(steps[0]!.output).toEqual({ args: { n: 1 }, parents: [] });
    // The child's stored input holds the parent as an own key, not a prototype.
    const input = steps[1]!.input as Record<string, unknown>;
    expect(Object.keys(input)).toEqual(['__proto__']);
    expect(Object.getOwnPropertyDescriptor(input, '__proto__')?.value).toEqual({ args: { n: 1 }, parents: [] });
    // Defining the same content again keeps the version: the node survived the round trip.
    expect(engine.define(def as any)).toMatchObject({ name: 'proto-dag', version: 1, created: false });
  });

  test('stored machine: a state and an event named __proto__, through define and start by name', async () => {
    const engine = open({ durability: 'sync' });
    engine.register({ k: ({ input }: any) => input * 2 });
    engine.define({ name: 'proto-m', initial: '__proto__', nodes: { ['__proto__']: { runner: 'k', transition: { ['__proto__']: 'end' } }, end: { final: true } } } as any);
    const started = engine.start('proto-m', { input: 21 });
    await (started as StateMachineRunner).run();
    engine.send(started.runId, { type: '__proto__', data: 'x' });
    expect(await settled(started.finished)).toEqual({ ok: true, value: 42 });
    expect(engine.steps(started.runId).map((s) => [s.node, s.status, s.output])).toEqual([['__proto__', 'finished', 42]]);
    expect(engine.transitions(started.runId).map((t) => [t.from, t.to, t.eventType, t.eventData])).toEqual([
      [null, '__proto__', null, null],
      ['__proto__', 'end', '__proto__', 'x'],
    ]);
  });
});

// ---- 2. inputSchema ----

const SCHEMA = { type: 'object', properties: { topic: { type: 'string' } }, required: ['topic'], additionalProperties: false };

function expectSchemaError(err: any, message: string) {
  expect(err).toBeInstanceOf(Error);
  expect(err.code).toBe('ERR_INPUT_SCHEMA');
  expect(err.message).toBe(message);
}

describe('inputSchema is enforced on every run', () => {
  test('runDag: a mismatching input is refused with the schema error, before any node runs; a matching one runs', async () => {
    let calls = 0;
    const dag = { name: 'research', inputSchema: SCHEMA, nodes: { a: { run: ({ rootInput }: any) => (calls++, rootInput.topic) } } };
    expectSchemaError(await failure(() => runDag({ dag, input: { topic: 5 } })), 'The input of research does not match its inputSchema: input.topic: 5 is not of type "string"');
    expectSchemaError(await failure(() => runDag({ dag, input: {} })), 'The input of research does not match its inputSchema: input: "topic" is a required property');
    expectSchemaError(
      await failure(() => runDag({ dag, input: { topic: 'x', extra: 1 } })),
      "The input of research does not match its inputSchema: input: Additional properties are not allowed ('extra' was unexpected)",
    );
    expect(calls).toBe(0);
    expect(await runDag({ dag, input: { topic: 'rust' } })).toBe('rust');
    expect(calls).toBe(1);
  });

  test('new StateMachineRunner: refused at construction; a matching input runs', async () => {
    const config: StateMachine<any, any> = { name: 'writer', initial: 'a', inputSchema: SCHEMA, nodes: { a: { final: true, run: ({ input }: any) => input.topic } } };
    expectSchemaError(await failure(() => new StateMachineRunner({ config, input: { topic: 1 } })), 'The input of writer does not match its inputSchema: input.topic: 1 is not of type "string"');
    const ok = new StateMachineRunner({ config, input: { topic: 'wasm' } });
    await ok.run();
    expect(await ok.finished).toBe('wasm');
  });

  test('engine.start: a stored definition (by name and as a config) refuses a mismatching input and stores no run', async () => {
    const engine = open({ durability: 'sync' });
    engine.register({ topic: ({ rootInput }: any) => rootInput.topic });
    // `inputSchema` is not in the StoredDag type, though a stored definition keeps and enforces it.
    engine.define({ name: 'sd', inputSchema: SCHEMA, nodes: { a: { runner: 'topic' } } } as any);
    const machine = { name: 'sm', initial: 'a', inputSchema: SCHEMA, nodes: { a: { runner: 'topic', final: true } } };
    for (const durability of ['sync', 'batched', 'off'] as const) {
      expectSchemaError(await failure(() => engine.start('sd', { input: { topic: 1 }, durability })), 'The input of sd does not match its inputSchema: input.topic: 1 is not of type "string"');
      expectSchemaError(await failure(() => engine.start(machine, { input: {}, durability })), 'The input of sm does not match its inputSchema: input: "topic" is a required property');
    }
    expect(engine.runs()).toEqual([]);
    const dagRun = engine.start('sd', { input: { topic: 'w' } });
    expect(await settled(dagRun.finished)).toEqual({ ok: true, value: 'w' });
    const machineRun = engine.start(machine, { input: { topic: 'm' } });
    expect(await settled(machineRun.finished)).toEqual({ ok: true, value: 'm' });
    expect(engine.runs().map((r) => [r.name, r.status, r.input]).sort()).toEqual([
      ['sd', 'finished', { topic: 'w' }],
      ['sm', 'finished', { topic: 'm' }],
    ]);
  });

  test('engine.start with an inline config (run functions) enforces its schema too', async () => {
    const engine = open({ durability: 'sync' });
    const dag = { name: 'inl', inputSchema: SCHEMA, nodes: { a: { run: ({ rootInput }: any) => rootInput.topic } } };
    expectSchemaError(await failure(() => engine.start(dag as any, { input: { topic: 1 } })), 'The input of inl does not match its inputSchema: input.topic: 1 is not of type "string"');
    const ok = engine.start(dag as any, { input: { topic: 'fine' } });
    expect(await settled(ok.finished)).toEqual({ ok: true, value: 'fine' });
  });
});
