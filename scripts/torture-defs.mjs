// What the torture test's workers run (scripts/queue-worker.mjs) and its driver enqueues
// (scripts/torture.mjs): a DAG and a machine whose outputs are pure functions of their
// input `n`, so the driver can check every result.

export const DAG = {
  name: 'torture-dag',
  nodes: {
    a: { runner: 'add', args: { node: 'a', k: 1 } },
    b: { runner: 'add', args: { node: 'b', k: 2 }, parents: ['a'] },
    c: { runner: 'add', args: { node: 'c', k: 3 }, parents: ['a'] },
    d: { runner: 'add', args: { node: 'd', k: 4 }, parents: ['b', 'c'] },
  },
};

export const MACHINE = {
  name: 'torture-machine',
  initial: 'tick',
  context: { count: 0 },
  nodes: {
    tick: { runner: 'tick', args: { node: 'tick' }, transition: { '': [{ state: 'tick', condition: 'more' }, { state: 'finish' }] } },
    finish: { runner: 'finish', args: { node: 'finish' }, final: true },
  },
};

/** The output a run of `n` must end with. */
export function expected(name, n) {
  if (name === DAG.name) {
    const a = 1 + n;
    const b = a + 2 + n;
    const c = a + 3 + n;
    return b + c + 4 + n;
  }
  return { n, count: 3 };
}

/**
 * Register the runners on `engine`; `around(key, fn)` wraps each step (the workers log
 * and await simulated I/O there; the driver only needs the keys to exist). A step's key
 * names one execution slot: run input `n`, node, and the machine's visit.
 */
export function register(engine, around = (_key, fn) => fn()) {
  engine.register({
    add: ({ args, input, rootInput }) => around(`${rootInput.n}/${args.node}`, () => Object.values(input).reduce((x, y) => x + y, args.k + rootInput.n)),
    tick: ({ context, rootInput }) =>
      around(`${rootInput.n}/tick/${context.count + 1}`, () => {
        context.count += 1;
        return context.count;
      }),
    more: ({ context }) => context.count < 3,
    finish: ({ context, rootInput }) => around(`${rootInput.n}/finish`, () => ({ n: rootInput.n, count: context.count })),
  });
  engine.define(DAG);
  engine.define(MACHINE);
}
