import { describe, test, expect } from 'vitest';
import { spawnSync } from 'node:child_process';
import { analyzeDag, CompiledDag, runDag } from 'ramus';

const noop = () => {};
const sorted = (a) => [...a].sort();
const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
/** Matches an error whose message is exactly `msg` (extra fields such as a native `code` are fine). */
const exactly = (msg) => new RegExp(`^${escapeRe(msg)}$`);

describe('analyzeDag: roots and leaves', () => {
  test('finds root and leaf nodes of a valid DAG', () => {
    const nodes = {
      one: { run: noop },
      two: { parents: ['one'], run: noop },
      three: { parents: ['one', 'two'], run: noop },
      four: { parents: ['three'], run: noop },
      five: { run: noop },
      six: { parents: ['five', 'three'], run: noop },
      seven: { run: noop },
    };
    const { rootNodes, leafNodes } = analyzeDag(nodes);
    expect(sorted(rootNodes)).toEqual(['five', 'one', 'seven']);
    expect(sorted(leafNodes)).toEqual(['four', 'seven', 'six']);
  });

  test('a single node is both root and leaf', () => {
    const { rootNodes, leafNodes } = analyzeDag({ only: { run: noop } });
    expect(rootNodes).toEqual(['only']);
    expect(leafNodes).toEqual(['only']);
  });

  test('an empty parents array makes a root node', () => {
    const { rootNodes, leafNodes } = analyzeDag({
      a: { parents: [], run: noop },
      b: { parents: ['a'], run: noop },
    });
    expect(rootNodes).toEqual(['a']);
    expect(leafNodes).toEqual(['b']);
  });

  test('a diamond has one root and one leaf', () => {
    const { rootNodes, leafNodes } = analyzeDag({
      top: { run: noop },
      left: { parents: ['top'], run: noop },
      right: { parents: ['top'], run: noop },
      bottom: { parents: ['left', 'right'], run: noop },
    });
    expect(rootNodes).toEqual(['top']);
    expect(leafNodes).toEqual(['bottom']);
  });
});

describe('analyzeDag: unknown parents', () => {
  test('names the node and the unknown parent', () => {
    const nodes = {
      one: { run: noop },
      two: { parents: ['three'], run: noop },
    };
    expect(() => analyzeDag(nodes)).toThrow(exactly("Node 'two' has unknown parent 'three'"));
  });

  test('reports an unknown parent listed after a valid one', () => {
    const nodes = {
      a: { run: noop },
      b: { parents: ['a', 'zzz'], run: noop },
    };
    expect(() => analyzeDag(nodes)).toThrow("Node 'b' has unknown parent 'zzz'");
  });

  test('the thrown value is an Error instance with exactly that message', () => {
    let caught;
    try {
      analyzeDag({ x: { parents: ['ghost'], run: noop } });
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(Error);
    expect(caught.message).toBe("Node 'x' has unknown parent 'ghost'");
  });
});

describe('analyzeDag: cycles', () => {
  test('cycle through the first node: one -> six -> three -> one', () => {
    const nodes = {
      one: { parents: ['six'], run: noop },
      two: { parents: ['one'], run: noop },
      three: { parents: ['one', 'two'], run: noop },
      four: { parents: ['three'], run: noop },
      five: { run: noop },
      six: { parents: ['five', 'three'], run: noop },
      seven: { run: noop },
    };
    let caught;
    try {
      analyzeDag(nodes);
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(Error);
    expect(caught.message).toBe('Cycle detected: one -> six -> three -> one');
  });

  test('cycle in the middle is reported from the first node on it in declaration order', () => {
    const nodes = {
      one: { run: noop },
      two: { parents: ['one', 'four'], run: noop },
      three: { parents: ['one', 'two'], run: noop },
      four: { parents: ['three'], run: noop },
      five: { parents: ['four'], run: noop },
    };
    expect(() => analyzeDag(nodes)).toThrow(exactly('Cycle detected: two -> four -> three -> two'));
  });

  test('two-node cycle', () => {
    const nodes = {
      one: { parents: ['two'], run: noop },
      two: { parents: ['one'], run: noop },
    };
    expect(() => analyzeDag(nodes)).toThrow(exactly('Cycle detected: one -> two -> one'));
  });

  test('self-loop', () => {
    const nodes = {
      first: { run: noop },
      loop: { parents: ['loop'], run: noop },
    };
    expect(() => analyzeDag(nodes)).toThrow(exactly('Cycle detected: loop -> loop'));
  });

  test('the printed path starts at the start node even when it is not on the cycle', () => {
    const nodes = {
      start: { parents: ['b'], run: noop },
      b: { parents: ['c'], run: noop },
      c: { parents: ['b'], run: noop },
    };
    expect(() => analyzeDag(nodes)).toThrow(exactly('Cycle detected: start -> b -> c -> b'));
  });

  test('parents are followed in declaration order (the first parent on a cycle wins)', () => {
    const nodes = {
      a: { parents: ['x', 'y'], run: noop },
      x: { parents: ['a'], run: noop },
      y: { parents: ['a'], run: noop },
    };
    expect(() => analyzeDag(nodes)).toThrow(exactly('Cycle detected: a -> x -> a'));

    const swapped = {
      a: { parents: ['y', 'x'], run: noop },
      x: { parents: ['a'], run: noop },
      y: { parents: ['a'], run: noop },
    };
    expect(() => analyzeDag(swapped)).toThrow(exactly('Cycle detected: a -> y -> a'));
  });

  test('CompiledDag and runDag report the cycle too', async () => {
    const dag = { name: 'cyclic', nodes: { a: { parents: ['b'], run: noop }, b: { parents: ['a'], run: noop } } };
    expect(() => new CompiledDag(dag)).toThrow(exactly('Cycle detected: a -> b -> a'));
    await expect(Promise.resolve().then(() => runDag({ dag, input: null }))).rejects.toThrow(
      'Cycle detected: a -> b -> a'
    );
  });
});

describe('analyzeDag: size (linear time)', () => {
  test(
    'a 2000-node chain analyzes',
    () => {
      const nodes = {};
      for (let i = 0; i < 2000; i++) {
        nodes[`n${i}`] = i === 0 ? { run: noop } : { parents: [`n${i - 1}`], run: noop };
      }
      const { rootNodes, leafNodes } = analyzeDag(nodes);
      expect(rootNodes).toEqual(['n0']);
      expect(leafNodes).toEqual(['n1999']);
    },
    20_000
  );

  test(
    'a 2000-node chain closed into a ring reports the full path',
    () => {
      const N = 2000;
      const nodes = {};
      for (let i = 0; i < N; i++) {
        nodes[`n${i}`] = { parents: [i === 0 ? `n${N - 1}` : `n${i - 1}`], run: noop };
      }
      const path = ['n0'];
      for (let i = N - 1; i >= 1; i--) path.push(`n${i}`);
      path.push('n0');
      expect(() => analyzeDag(nodes)).toThrow(exactly(`Cycle detected: ${path.join(' -> ')}`));
    },
    20_000
  );

  test(
    'a 2000-node graph with heavy fan-in (each node has the previous 20 as parents) analyzes',
    () => {
      // Heavy fan-in: a naive re-walk from every node is exponential here.
      const nodes = {};
      for (let i = 0; i < 2000; i++) {
        const parents = [];
        for (let j = Math.max(0, i - 20); j < i; j++) parents.push(`n${j}`);
        nodes[`n${i}`] = { parents, run: noop };
      }
      const { rootNodes, leafNodes } = analyzeDag(nodes);
      expect(rootNodes).toEqual(['n0']);
      expect(leafNodes).toEqual(['n1999']);
    },
    20_000
  );

  test(
    'a 100k-node layered graph analyzes',
    () => {
      const LAYERS = 1000;
      const WIDTH = 100;
      const nodes = {};
      for (let l = 0; l < LAYERS; l++) {
        for (let w = 0; w < WIDTH; w++) {
          const parents = l === 0 ? [] : [`l${l - 1}_${w}`, `l${l - 1}_${(w + 1) % WIDTH}`];
          nodes[`l${l}_${w}`] = { parents, run: noop };
        }
      }
      const { rootNodes, leafNodes } = analyzeDag(nodes);
      expect(rootNodes.length).toBe(WIDTH);
      expect(leafNodes.length).toBe(WIDTH);
      expect(sorted(rootNodes)).toEqual(sorted(Array.from({ length: WIDTH }, (_, w) => `l0_${w}`)));
      expect(sorted(leafNodes)).toEqual(sorted(Array.from({ length: WIDTH }, (_, w) => `l${LAYERS - 1}_${w}`)));
    },
    60_000
  );

  test(
    'a 100k-node chain (100k deep) analyzes without overflowing the stack',
    () => {
      // Run in a child process so that a stack overflow cannot take the test worker down.
      const code = `
        const { analyzeDag } = require('ramus');
        const nodes = {};
        const N = 100000;
        for (let i = 0; i < N; i++) nodes['n' + i] = i === 0 ? { run() {} } : { parents: ['n' + (i - 1)], run() {} };
        const r = analyzeDag(nodes);
        console.log(JSON.stringify(r));
      `;
      const res = spawnSync(process.execPath, ['-e', code], {
        cwd: new URL('..', import.meta.url).pathname,
        encoding: 'utf8',
        timeout: 50_000,
      });
      expect(res.stderr).toBe('');
      expect(res.signal).toBeNull();
      expect(res.status).toBe(0);
      expect(JSON.parse(res.stdout)).toEqual({ rootNodes: ['n0'], leafNodes: ['n99999'] });
    },
    60_000
  );
});

describe('CompiledDag validation', () => {
  test('a DAG without nodes throws "DAG has no nodes"', () => {
    expect(() => new CompiledDag({ name: 'empty', nodes: {} })).toThrow(exactly('DAG has no nodes'));
  });

  test('runDag with a DAG without nodes fails with "DAG has no nodes"', async () => {
    await expect(
      Promise.resolve().then(() => runDag({ dag: { name: 'empty', nodes: {} }, input: null }))
    ).rejects.toThrow('DAG has no nodes');
  });

  test('a node without a run function throws', () => {
    const dag = { name: 'd', nodes: { a: { run: noop }, x: { parents: ['a'] } } };
    expect(() => new CompiledDag(dag)).toThrow(exactly("Node 'x' has no run function"));
  });

  test('a node whose run is not a function throws', () => {
    const dag = { name: 'd', nodes: { x: { run: 'not a function' } } };
    expect(() => new CompiledDag(dag)).toThrow(exactly("Node 'x' has no run function"));
  });

  test('runDag with a node lacking run fails with the same message', async () => {
    const dag = { name: 'd', nodes: { x: {} } };
    await expect(Promise.resolve().then(() => runDag({ dag, input: null }))).rejects.toThrow(
      "Node 'x' has no run function"
    );
  });

  test('a CompiledDag can be run many times', async () => {
    let calls = 0;
    const compiled = new CompiledDag({
      name: 'reuse',
      nodes: {
        a: { run: ({ rootInput }) => rootInput * 2 },
        b: {
          parents: ['a'],
          run: ({ input }) => {
            calls += 1;
            return input.a + 1;
          },
        },
      },
    });
    expect(await runDag({ dag: compiled, input: 1 })).toBe(3);
    expect(await runDag({ dag: compiled, input: 10 })).toBe(21);
    expect(await Promise.all([runDag({ dag: compiled, input: 2 }), runDag({ dag: compiled, input: 3 })])).toEqual([
      5, 7,
    ]);
    expect(calls).toBe(4);
  });
});
