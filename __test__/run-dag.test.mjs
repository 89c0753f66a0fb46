import { describe, test, expect } from 'vitest';
import { runDag, DagRunner, CompiledDag } from 'ramus';
import { sleep } from './helpers.mjs';

describe('runDag results', () => {
  test('one leaf: resolves with that leaf output', async () => {
    const dag = {
      name: 'chain',
      nodes: {
        root: { run: async ({ context }) => context.ctxValue + 1 },
        intone: { parents: ['root'], run: async ({ input }) => input.root + 1 },
        inttwo: { parents: ['root'], run: async ({ input }) => input.root + 1 },
        collector: {
          parents: ['intone', 'inttwo'],
          run: async ({ input, rootInput }) => input.intone + input.inttwo + rootInput,
        },
      },
    };
    // 2 * ((5 + 1) + 1) + 10
    expect(await runDag({ dag, input: 10, context: { ctxValue: 5 } })).toBe(24);
  });

  test('single-node DAG resolves with its output', async () => {
    const dag = { name: 'single', nodes: { only: { run: () => ({ answer: 42 }) } } };
    expect(await runDag({ dag, input: null })).toEqual({ answer: 42 });
  });

  test('several leaves: resolves with an object keyed by leaf name', async () => {
    const dag = {
      name: 'fanout',
      nodes: {
        root: { run: async ({ context }) => context.ctxValue + 1 },
        outputOne: { parents: ['root'], run: async ({ input }) => input.root + 1 },
        outputTwo: { parents: ['root'], run: async ({ input }) => input.root + 2 },
      },
    };
    expect(await runDag({ dag, input: undefined, context: { ctxValue: 5 } })).toEqual({ outputOne: 7, outputTwo: 8 });
  });

  test('independent root leaves all appear in the output', async () => {
    const dag = {
      name: 'roots',
      nodes: { a: { run: () => 'A' }, b: { run: () => 'B' }, c: { run: () => 'C' } },
    };
    expect(await runDag({ dag, input: null })).toEqual({ a: 'A', b: 'B', c: 'C' });
  });

  test('a node receives an object keyed by parent name; roots receive {}', async () => {
    const seen = {};
    const dag = {
      name: 'inputs',
      nodes: {
        one: {
          run: ({ input }) => {
            seen.one = input;
            return 1;
          },
        },
        two: {
          run: ({ input }) => {
            seen.two = input;
            return 'two';
          },
        },
        three: {
          parents: ['one', 'two'],
          run: ({ input }) => {
            seen.three = input;
            return [input.one, input.two];
          },
        },
      },
    };
    expect(await runDag({ dag, input: 'root' })).toEqual([1, 'two']);
    expect(seen.one).toEqual({});
    expect(seen.two).toEqual({});
    expect(seen.three).toEqual({ one: 1, two: 'two' });
    expect(Object.keys(seen.three).sort()).toEqual(['one', 'two']);
  });

  test('node inputs are plain objects, as in the original (prototype, hasOwnProperty, toStrictEqual)', async () => {
    const seen = {};
    const dag = {
      name: 'plain-inputs',
      nodes: {
        a: { run: ({ input }) => ((seen.a = input), 1) },
        b: { parents: ['a'], run: ({ input }) => ((seen.b = input), input.hasOwnProperty('a')) },
      },
    };
    expect(await runDag({ dag, input: null })).toBe(true);
    expect(Object.getPrototypeOf(seen.a)).toBe(Object.prototype);
    expect(Object.getPrototypeOf(seen.b)).toBe(Object.prototype);
    expect(seen.a).toStrictEqual({});
    expect(seen.b).toStrictEqual({ a: 1 });
  });

  // A fan-out's branches get their inputs built another way (one shared hidden class): the
  // same plain objects, also from a parent named __proto__.
  test.each(['root', '__proto__', '7'])('the branches of a wide fan-out from %s get plain inputs too', async (root) => {
    const inputs = [];
    const nodes = { [root]: { run: () => 1 } };
    const branches = [];
    for (let i = 0; i < 40; i++) {
      branches.push(`b${i}`);
      nodes[`b${i}`] = { parents: [root], run: ({ input }) => (inputs.push(input), input[root] + i) };
    }
    nodes.sink = { parents: branches, run: ({ input }) => Object.values(input).reduce((a, b) => a + b, 0) };
    expect(await runDag({ dag: { name: 'wide', nodes }, input: null })).toBe(40 + (39 * 40) / 2);
    expect(inputs).toHaveLength(40);
    for (const input of inputs) {
      expect(Object.getPrototypeOf(input)).toBe(Object.prototype);
      expect(Object.keys(input)).toEqual([root]);
      expect(Object.getOwnPropertyDescriptor(input, root)?.value).toBe(1);
    }
  });

  test('structured outputs pass to children intact', async () => {
    const value = { list: [1, 2, { deep: 'x' }], flag: true, nothing: null, n: 1.5, s: 'é✓' };
    const dag = {
      name: 'structured',
      nodes: {
        a: { run: () => value },
        b: { parents: ['a'], run: ({ input }) => input.a },
      },
    };
    expect(await runDag({ dag, input: null })).toEqual(value);
  });

  test('an undefined output round-trips as undefined', async () => {
    let childInput;
    const dag = {
      name: 'undef',
      nodes: {
        a: { run: () => undefined },
        b: {
          parents: ['a'],
          run: ({ input }) => {
            childInput = input;
            return undefined;
          },
        },
      },
    };
    const out = await runDag({ dag, input: null });
    expect(out).toBeUndefined();
    expect('a' in childInput).toBe(true);
    expect(childInput.a).toBeUndefined();
  });

  test('rootInput is given to every node, and dag:start sees it', async () => {
    const seen = [];
    const dag = {
      name: 'root-input',
      nodes: {
        a: {
          run: ({ rootInput }) => {
            seen.push(rootInput);
            return 1;
          },
        },
        b: {
          parents: ['a'],
          run: ({ rootInput }) => {
            seen.push(rootInput);
            return rootInput.topic;
          },
        },
      },
    };
    expect(await runDag({ dag, input: { topic: 'rust', n: [1, 2] } })).toBe('rust');
    expect(seen).toEqual([
      { topic: 'rust', n: [1, 2] },
      { topic: 'rust', n: [1, 2] },
    ]);
  });

  test('primitive root inputs are passed as-is', async () => {
    const dag = { name: 'prim', nodes: { a: { run: ({ rootInput }) => [rootInput, typeof rootInput] } } };
    expect(await runDag({ dag, input: 7 })).toEqual([7, 'number']);
    expect(await runDag({ dag, input: 'str' })).toEqual(['str', 'string']);
    expect(await runDag({ dag, input: undefined })).toEqual([undefined, 'undefined']);
  });

  test('sync runners work', async () => {
    const dag = {
      name: 'sync',
      nodes: {
        a: { run: () => 2 },
        b: { parents: ['a'], run: ({ input }) => input.a * 10 },
      },
    };
    expect(await runDag({ dag, input: null })).toBe(20);
  });

  test('async runners work, including ones that await timers', async () => {
    const dag = {
      name: 'async',
      nodes: {
        a: {
          run: async () => {
            await sleep(10);
            return 2;
          },
        },
        b: {
          parents: ['a'],
          run: async ({ input }) => {
            await new Promise((r) => setImmediate(r));
            return input.a * 10;
          },
        },
      },
    };
    expect(await runDag({ dag, input: null })).toBe(20);
  });

  test('mixing sync and async runners works', async () => {
    const dag = {
      name: 'mixed',
      nodes: {
        a: { run: () => 1 },
        b: { run: async () => 2 },
        c: { parents: ['a', 'b'], run: ({ input }) => input.a + input.b },
        d: { parents: ['c'], run: async ({ input }) => input.c * 100 },
      },
    };
    expect(await runDag({ dag, input: null })).toBe(300);
  });

  test('runDag accepts a CompiledDag', async () => {
    const compiled = new CompiledDag({ name: 'compiled', nodes: { a: { run: ({ rootInput }) => rootInput + 1 } } });
    expect(await runDag({ dag: compiled, input: 1 })).toBe(2);
  });

  test('each node runs exactly once', async () => {
    const counts = { a: 0, b: 0, c: 0, d: 0 };
    const mk = (name) => () => {
      counts[name] += 1;
      return name;
    };
    const dag = {
      name: 'once',
      nodes: {
        a: { run: mk('a') },
        b: { parents: ['a'], run: mk('b') },
        c: { parents: ['a'], run: mk('c') },
        d: { parents: ['b', 'c', 'a'], run: mk('d') },
      },
    };
    await runDag({ dag, input: null });
    expect(counts).toEqual({ a: 1, b: 1, c: 1, d: 1 });
  });

  test('a large fan-out/fan-in DAG completes with the right result', async () => {
    const nodes = { root: { run: () => 1 } };
    const mids = [];
    for (let i = 0; i < 200; i++) {
      nodes[`m${i}`] = { parents: ['root'], run: async ({ input }) => input.root + i };
      mids.push(`m${i}`);
    }
    nodes.sum = { parents: mids, run: ({ input }) => Object.values(input).reduce((a, b) => a + b, 0) };
    // sum over i of (1 + i) = 200 + 199*200/2
    expect(await runDag({ dag: { name: 'wide', nodes }, input: null })).toBe(200 + (199 * 200) / 2);
  });
});

// A compiled DAG's node ids are the order of its nodes in the definition's JSON text; the face
// learns names and runners as JSON.stringify meets them, so they must be the nodes JSON holds.
describe('the nodes of a config are the nodes its JSON holds', () => {
  const leaves = (dag) => new CompiledDag(dag).info;

  test('integer-like names come first, in numeric order, as in the JSON text', async () => {
    const nodes = { b: { run: () => 'b' }, 10: { run: () => 10 }, 2: { parents: ['b'], run: ({ input }) => `2<${input.b}` } };
    const dag = new CompiledDag({ name: 'order', nodes });
    expect(dag.names).toEqual(['2', '10', 'b']);
    expect(await runDag({ dag, input: null })).toEqual({ 2: '2<b', 10: 10 });
  });

  test('an entry whose value JSON leaves out is not a node', async () => {
    const dag = { name: 'holes', nodes: { a: { run: () => 1 }, gone: undefined, skip: { toJSON: () => undefined }, b: { parents: ['a'], run: ({ input }) => input.a + 1 } } };
    expect(leaves(dag)).toEqual({ rootNodes: ['a'], leafNodes: ['b'] });
    expect(await runDag({ dag, input: null })).toBe(2);
  });

  test('nodes given by toJSON, and objects met again after the nodes, are read as JSON reads them', async () => {
    const real = { x: { run: () => 'x' }, y: { parents: ['x'], run: ({ input }) => `${input.x}y` } };
    const dag = { name: 'tojson', nodes: { toJSON: () => real } };
    expect(leaves(dag)).toEqual({ rootNodes: ['x'], leafNodes: ['y'] });
    expect(await runDag({ dag, input: null })).toBe('xy');
    // `info` after `nodes` holds the nodes object again: its entries are not nodes twice.
    const nodes = { a: { runner: 'k', args: { n: 1 } } };
    const twice = new CompiledDag({ name: 'twice', nodes, info: { again: nodes } });
    expect(twice.names).toEqual(['a']);
    expect(twice.runners).toEqual([undefined]);
  });

  test('what JSON.stringify throws on (a cycle, a throwing getter) is a plain Error from the constructor', () => {
    const info = {};
    info.self = info;
    const thrown = (config) => {
      try {
        new CompiledDag(config);
      } catch (err) {
        return [err.constructor, err.message.split('\n')[0]];
      }
    };
    expect(thrown({ name: 'c', nodes: { a: { run: () => 1 } }, info })).toEqual([Error, 'Converting circular structure to JSON']);
    const node = { run: () => 1, get tags() { throw new RangeError('boom'); } };
    expect(thrown({ name: 'g', nodes: { a: node } })).toEqual([Error, 'boom']);
  });

  test('a registered runner beside inline ones, and a node named __proto__, keep their ids', async () => {
    const nodes = { a: { run: () => 1 }, ['__proto__']: { parents: ['a'], run: ({ input }) => input.a + 1 }, c: { parents: ['__proto__'], run: ({ input }) => input['__proto__'] * 10 } };
    const dag = new CompiledDag({ name: 'proto', nodes });
    expect(dag.names).toEqual(['a', '__proto__', 'c']);
    expect(dag.runners.map((r) => typeof r)).toEqual(['function', 'function', 'function']);
    expect(await runDag({ dag, input: null })).toBe(20);
  });
});

describe('scale', () => {
  test(
    'a 20k-node chain of sync runners completes (no stack growth)',
    async () => {
      const N = 20_000;
      const nodes = { n0: { run: () => 0 } };
      for (let i = 1; i < N; i++) nodes[`n${i}`] = { parents: [`n${i - 1}`], run: ({ input }) => input[`n${i - 1}`] + 1 };
      expect(await runDag({ dag: { name: 'long', nodes }, input: null })).toBe(N - 1);
    },
    60_000
  );

  test(
    'a 5k-node chain of async runners completes',
    async () => {
      const N = 5_000;
      const nodes = { n0: { run: async () => 0 } };
      for (let i = 1; i < N; i++) nodes[`n${i}`] = { parents: [`n${i - 1}`], run: async ({ input }) => input[`n${i - 1}`] + 1 };
      expect(await runDag({ dag: { name: 'long-async', nodes }, input: null })).toBe(N - 1);
    },
    60_000
  );

  // More nodes start at once than the engine launches before it hands the event loop back
  // (4,096) and than one response of the binding holds: every one of them still runs.
  test.each(['sync', 'async'])('a fan-out of 10k %s runners between a root and a sink: each runs once', async (kind) => {
    const N = 10_000;
    let calls = 0;
    const nodes = { root: { run: () => 1 } };
    const names = [];
    for (let i = 0; i < N; i++) {
      names.push(`m${i}`);
      nodes[`m${i}`] = {
        parents: ['root'],
        run: kind === 'sync' ? ({ input }) => (calls++, input.root) : async ({ input }) => (calls++, input.root),
      };
    }
    nodes.sink = { parents: names, run: ({ input }) => Object.values(input).reduce((a, b) => a + b, 0) };
    expect(await runDag({ dag: { name: 'wide', nodes }, input: null })).toBe(N);
    expect(calls).toBe(N);
  }, 60_000);
});

describe('context', () => {
  test('options.context is the very object given to every node', async () => {
    const ctx = { value: 1 };
    const seen = [];
    const dag = {
      name: 'ctx',
      context: () => ({ value: 'from dag' }),
      nodes: {
        a: {
          run: ({ context }) => {
            seen.push(context);
            return context.value;
          },
        },
        b: {
          parents: ['a'],
          run: ({ context }) => {
            seen.push(context);
            return context.value;
          },
        },
      },
    };
    expect(await runDag({ dag, input: null, context: ctx })).toBe(1);
    expect(seen[0]).toBe(ctx);
    expect(seen[1]).toBe(ctx);
  });

  test('defaults to dag.context() when the caller gives none, fresh for each run', async () => {
    let factoryCalls = 0;
    const dag = {
      name: 'ctx-default',
      context: () => {
        factoryCalls += 1;
        return { count: 0 };
      },
      nodes: {
        a: {
          run: ({ context }) => {
            context.count += 1;
            return context.count;
          },
        },
      },
    };
    expect(await runDag({ dag, input: null })).toBe(1);
    expect(await runDag({ dag, input: null })).toBe(1);
    expect(factoryCalls).toBe(2);
  });

  test('dag.context() is not called when the caller gives a context', async () => {
    let factoryCalls = 0;
    const dag = {
      name: 'ctx-given',
      context: () => {
        factoryCalls += 1;
        return { from: 'factory' };
      },
      nodes: { a: { run: ({ context }) => context.from } },
    };
    expect(await runDag({ dag, input: null, context: { from: 'caller' } })).toBe('caller');
    expect(factoryCalls).toBe(0);
  });

  test('defaults to {} when neither the caller nor the DAG gives a context', async () => {
    const dag = { name: 'ctx-empty', nodes: { a: { run: ({ context }) => context } } };
    const out = await runDag({ dag, input: null });
    expect(out).toEqual({});
  });

  test('mutations by one node are visible to later nodes and to the caller', async () => {
    const ctx = { log: [], count: 0 };
    const dag = {
      name: 'ctx-mutate',
      nodes: {
        a: {
          run: ({ context }) => {
            context.count += 1;
            context.log.push('a');
          },
        },
        b: {
          parents: ['a'],
          run: async ({ context }) => {
            await sleep(1);
            context.count += 10;
            context.log.push('b');
          },
        },
        c: {
          parents: ['b'],
          run: ({ context }) => ({ count: context.count, log: [...context.log] }),
        },
      },
    };
    expect(await runDag({ dag, input: null, context: ctx })).toEqual({ count: 11, log: ['a', 'b'] });
    expect(ctx).toEqual({ count: 11, log: ['a', 'b'] });
  });

  test('a mutation made by the default context is visible to later nodes', async () => {
    const dag = {
      name: 'ctx-default-mutate',
      context: () => ({ steps: [] }),
      nodes: {
        a: { run: ({ context }) => void context.steps.push('a') },
        b: { parents: ['a'], run: ({ context }) => void context.steps.push('b') },
        c: { parents: ['b'], run: ({ context }) => context.steps.join(',') },
      },
    };
    expect(await runDag({ dag, input: null })).toBe('a,b');
  });
});

describe('tools', () => {
  test('tools are passed through as the same object, functions intact', async () => {
    class Client {
      constructor() {
        this.calls = 0;
      }
      search(q) {
        this.calls += 1;
        return `result for ${q}`;
      }
    }
    const client = new Client();
    const tools = { client, upper: (s) => s.toUpperCase(), sym: Symbol('s') };
    const seen = [];
    const dag = {
      name: 'tools',
      nodes: {
        a: {
          run: ({ tools: t }) => {
            seen.push(t);
            return t.client.search('x');
          },
        },
        b: {
          parents: ['a'],
          run: async ({ tools: t, input }) => {
            seen.push(t);
            return t.upper(input.a);
          },
        },
      },
    };
    expect(await runDag({ dag, input: null, tools })).toBe('RESULT FOR X');
    expect(seen[0]).toBe(tools);
    expect(seen[1]).toBe(tools);
    expect(seen[0].client).toBe(client);
    expect(client.calls).toBe(1);
  });

  test('DagRunner passes tools too', async () => {
    const tools = { k: () => 5 };
    const runner = new DagRunner({ dag: { name: 't', nodes: { a: { run: ({ tools: t }) => t.k() } } }, input: null, tools });
    expect(await runner.run()).toBe(5);
  });
});

describe('NodeArgs', () => {
  test('a node gets context, input, rootInput, tools, isCancelled, exitIfCancelled and emit', async () => {
    let args;
    const dag = {
      name: 'args',
      nodes: {
        a: {
          run: (a) => {
            args = a;
            return 1;
          },
        },
      },
    };
    await runDag({ dag, input: 'r', context: { c: 1 }, tools: { t: 1 } });
    expect(args.context).toEqual({ c: 1 });
    expect(args.input).toEqual({});
    expect(args.rootInput).toBe('r');
    expect(args.tools).toEqual({ t: 1 });
    expect(typeof args.isCancelled).toBe('function');
    expect(typeof args.exitIfCancelled).toBe('function');
    expect(typeof args.emit).toBe('function');
  });

  test('isCancelled() is false and exitIfCancelled() does not throw in a normal run', async () => {
    const dag = {
      name: 'not-cancelled',
      nodes: {
        a: {
          run: async ({ isCancelled, exitIfCancelled }) => {
            const before = isCancelled();
            exitIfCancelled();
            await sleep(1);
            exitIfCancelled();
            return [before, isCancelled()];
          },
        },
      },
    };
    expect(await runDag({ dag, input: null })).toEqual([false, false]);
  });
});
