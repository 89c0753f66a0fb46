import { describe, test, expect, vi } from 'vitest';
import { runDag, DagRunner, CancelledError } from 'ramus';
import { deferred, settle, sleep, within, collectEvents, waitUntil, promiseState } from './helpers.mjs';

const chain = (record = []) => ({
  name: 'chain',
  nodes: {
    a: {
      run: ({ rootInput }) => {
        record.push('a');
        return rootInput + 1;
      },
    },
    b: {
      parents: ['a'],
      run: ({ input }) => {
        record.push('b');
        return input.a * 2;
      },
    },
  },
});

describe('DagRunner basics', () => {
  test('run() resolves with the output and sets runner.output', async () => {
    const runner = new DagRunner({ dag: chain(), input: 4 });
    expect(await runner.run()).toBe(10);
    expect(runner.output).toBe(10);
  });

  test('finished read before run() resolves with the output', async () => {
    const runner = new DagRunner({ dag: chain(), input: 1 });
    const finished = runner.finished;
    expect(finished).toBeInstanceOf(Promise);
    runner.run();
    expect(await within(finished, 3000, 'finished (before run)')).toBe(4);
  });

  test('finished read after run() completed still resolves with the output', async () => {
    const runner = new DagRunner({ dag: chain(), input: 2 });
    await runner.run();
    await settle();
    expect(await within(runner.finished, 3000, 'finished (after run)')).toBe(6);
  });

  test('finished read while running resolves with the output', async () => {
    const gate = deferred();
    const runner = new DagRunner({
      dag: { name: 'g', nodes: { a: { run: () => gate.promise } } },
      input: null,
    });
    const p = runner.run();
    await settle();
    const f = runner.finished;
    expect(await promiseState(f)).toBe('pending');
    gate.resolve('gated');
    expect(await within(f, 3000, 'finished (during run)')).toBe('gated');
    expect(await p).toBe('gated');
  });

  test('finished read after a failure rejects with the error', async () => {
    const err = new Error('late reader');
    const runner = new DagRunner({
      dag: {
        name: 'f',
        nodes: {
          a: {
            run: () => {
              throw err;
            },
          },
        },
      },
      input: null,
    });
    await expect(runner.run()).rejects.toBe(err);
    await settle();
    await expect(within(runner.finished, 3000, 'finished (after failure)')).rejects.toBe(err);
  });

  test("'finish' listener gets the output once", async () => {
    const runner = new DagRunner({ dag: chain(), input: 0 });
    const onFinish = vi.fn();
    runner.on('finish', onFinish);
    await runner.run();
    await settle();
    expect(onFinish).toHaveBeenCalledTimes(1);
    expect(onFinish).toHaveBeenCalledWith(2);
  });

  test("'finish' with several leaves gets the keyed object", async () => {
    const runner = new DagRunner({
      dag: { name: 'two', nodes: { x: { run: () => 1 }, y: { run: () => 2 } } },
      input: null,
    });
    const onFinish = vi.fn();
    runner.on('finish', onFinish);
    await runner.run();
    expect(onFinish).toHaveBeenCalledWith({ x: 1, y: 2 });
  });

  test("'dag:state' listener sees every node go running -> finished", async () => {
    const runner = new DagRunner({ dag: chain(), input: 0 });
    const states = [];
    runner.on('dag:state', (s) => states.push(s));
    await runner.run();
    for (const node of ['a', 'b']) {
      const seq = states.filter((s) => s.sourceNode === node).map((s) => s.state);
      expect(seq).toContain('running');
      expect(seq.at(-1)).toBe('finished');
      expect(seq.indexOf('running')).toBeLessThan(seq.lastIndexOf('finished'));
    }
    // b cannot be running before a finished
    const aFinished = states.findIndex((s) => s.sourceNode === 'a' && s.state === 'finished');
    const bRunning = states.findIndex((s) => s.sourceNode === 'b' && s.state === 'running');
    expect(aFinished).toBeGreaterThanOrEqual(0);
    expect(bRunning).toBeGreaterThan(aFinished);
  });

  test("'dag:state' for a failed node ends in error", async () => {
    const runner = new DagRunner({
      dag: {
        name: 'e',
        nodes: {
          a: {
            run: () => {
              throw new Error('e');
            },
          },
        },
      },
      input: null,
    });
    const states = [];
    runner.on('dag:state', (s) => states.push(s));
    await runner.run().catch(() => {});
    await settle();
    const seq = states.filter((s) => s.sourceNode === 'a').map((s) => s.state);
    expect(seq).toContain('running');
    expect(seq.at(-1)).toBe('error');
  });

  test('nodeState reads finished for every node after the run', async () => {
    const runner = new DagRunner({ dag: chain(), input: 0 });
    await runner.run();
    expect(runner.nodeState('a')).toBe('finished');
    expect(runner.nodeState('b')).toBe('finished');
  });

  test('nodeState is waiting for a child while its parent runs, then running', async () => {
    const gate = deferred();
    const childGate = deferred();
    const runner = new DagRunner({
      dag: {
        name: 'w',
        nodes: {
          a: { run: () => gate.promise },
          b: { parents: ['a'], run: () => childGate.promise },
        },
      },
      input: null,
    });
    const p = runner.run();
    await settle();
    expect(runner.nodeState('a')).toBe('running');
    expect(runner.nodeState('b')).toBe('waiting');
    gate.resolve(1);
    await waitUntil(() => runner.nodeState('b') === 'running', 'b running');
    expect(runner.nodeState('a')).toBe('finished');
    childGate.resolve(2);
    expect(await p).toBe(2);
  });
});

describe('cancellation', () => {
  test('cancel() before run(): no node runs, all cancelled, run() rejects with CancelledError', async () => {
    const record = [];
    const runner = new DagRunner({ dag: chain(record), input: 0 });
    runner.cancel();
    const err = await runner.run().then(
      () => null,
      (e) => e
    );
    expect(err).toBeInstanceOf(CancelledError);
    expect(err).toBeInstanceOf(Error);
    expect(err.message).toBe('Cancelled');
    await settle();
    expect(record).toEqual([]);
    expect(runner.nodeState('a')).toBe('cancelled');
    expect(runner.nodeState('b')).toBe('cancelled');
  });

  test('cancel() while a parent runs: waiting nodes never run and are cancelled', async () => {
    const gate = deferred();
    const ran = [];
    const runner = new DagRunner({
      dag: {
        name: 'c',
        nodes: {
          a: {
            run: async () => {
              ran.push('a');
              await gate.promise;
              return 1;
            },
          },
          b: { parents: ['a'], run: () => ran.push('b') },
          c: { parents: ['b'], run: () => ran.push('c') },
        },
      },
      input: null,
    });
    const p = runner.run();
    p.catch(() => {});
    await waitUntil(() => ran.length === 1, 'a started');
    runner.cancel();
    await settle();
    expect(runner.nodeState('b')).toBe('cancelled');
    expect(runner.nodeState('c')).toBe('cancelled');
    gate.resolve();
    await expect(p).rejects.toBeInstanceOf(CancelledError);
    await settle();
    expect(ran).toEqual(['a']);
    expect(runner.nodeState('b')).toBe('cancelled');
    expect(runner.nodeState('c')).toBe('cancelled');
  });

  test('a running node sees isCancelled() turn true after cancel()', async () => {
    const gate = deferred();
    const seen = [];
    const runner = new DagRunner({
      dag: {
        name: 'c',
        nodes: {
          a: {
            run: async ({ isCancelled }) => {
              seen.push(isCancelled());
              await gate.promise;
              seen.push(isCancelled());
              return 1;
            },
          },
        },
      },
      input: null,
    });
    const p = runner.run();
    p.catch(() => {});
    await waitUntil(() => seen.length === 1, 'a started');
    runner.cancel();
    gate.resolve();
    await p.catch(() => {});
    await settle();
    expect(seen).toEqual([false, true]);
  });

  test('exitIfCancelled() throws CancelledError; the node ends cancelled and no dag:node_error is emitted', async () => {
    const gate = deferred();
    let thrown;
    const runner = new DagRunner({
      dag: {
        name: 'c',
        nodes: {
          a: {
            run: async ({ exitIfCancelled }) => {
              await gate.promise;
              try {
                exitIfCancelled();
              } catch (e) {
                thrown = e;
                throw e;
              }
              return 'not reached';
            },
          },
        },
      },
      input: null,
    });
    const events = collectEvents(runner);
    const onError = vi.fn();
    runner.on('ramus:error', onError);
    const p = runner.run();
    p.catch(() => {});
    await waitUntil(() => runner.nodeState('a') === 'running', 'a running');
    runner.cancel();
    gate.resolve();
    const err = await p.then(
      () => null,
      (e) => e
    );
    await settle();
    expect(thrown).toBeInstanceOf(CancelledError);
    expect(err).toBeInstanceOf(CancelledError);
    expect(err.message).toBe('Cancelled');
    expect(runner.nodeState('a')).toBe('cancelled');
    expect(events.filter((e) => e.type === 'dag:node_error')).toEqual([]);
    expect(onError).not.toHaveBeenCalled();
  });

  test('finished rejects with CancelledError after cancel()', async () => {
    const gate = deferred();
    const runner = new DagRunner({
      dag: { name: 'c', nodes: { a: { run: () => gate.promise } } },
      input: null,
    });
    runner.run().catch(() => {});
    await settle();
    runner.cancel();
    const err = await within(runner.finished, 3000, 'finished after cancel').then(
      () => null,
      (e) => e
    );
    gate.resolve();
    expect(err).toBeInstanceOf(CancelledError);
    expect(err.message).toBe('Cancelled');
  });

  test("'cancelled' listener fires on cancel()", async () => {
    const gate = deferred();
    const runner = new DagRunner({
      dag: { name: 'c', nodes: { a: { run: () => gate.promise } } },
      input: null,
    });
    const onCancelled = vi.fn();
    const onFinish = vi.fn();
    runner.on('cancelled', onCancelled);
    runner.on('finish', onFinish);
    runner.run().catch(() => {});
    await settle();
    runner.cancel();
    gate.resolve(1);
    await runner.finished.catch(() => {});
    await settle();
    expect(onCancelled).toHaveBeenCalledTimes(1);
    expect(onFinish).not.toHaveBeenCalled();
  });

  test('cancel() after the run finished changes nothing', async () => {
    const runner = new DagRunner({ dag: chain(), input: 1 });
    expect(await runner.run()).toBe(4);
    runner.cancel();
    await settle();
    expect(await runner.finished).toBe(4);
    expect(runner.nodeState('a')).toBe('finished');
    expect(runner.nodeState('b')).toBe('finished');
  });

  test('a node ignoring cancellation does not resurrect the run: its children still never run', async () => {
    const gate = deferred();
    const ran = [];
    const runner = new DagRunner({
      dag: {
        name: 'ignore',
        nodes: {
          a: {
            run: async () => {
              await gate.promise;
              ran.push('a-done');
              return 1;
            },
          },
          b: { parents: ['a'], run: () => ran.push('b') },
        },
      },
      input: null,
    });
    const onFinish = vi.fn();
    runner.on('finish', onFinish);
    const p = runner.run();
    p.catch(() => {});
    await settle();
    runner.cancel();
    gate.resolve();
    await expect(p).rejects.toBeInstanceOf(CancelledError);
    await settle();
    expect(ran).toEqual(['a-done']);
    expect(onFinish).not.toHaveBeenCalled();
  });

  test('CancelledError is an exported Error subclass', () => {
    const e = new CancelledError();
    expect(e).toBeInstanceOf(Error);
    expect(e).toBeInstanceOf(CancelledError);
  });
});

describe('stepwise mode (autorun: () => false)', () => {
  const stepDag = (record) => ({
    name: 'steps',
    nodes: {
      a: {
        run: ({ rootInput }) => {
          record.push('a');
          return rootInput + 1;
        },
      },
      b: {
        run: async () => {
          record.push('b');
          await sleep(2);
          return 10;
        },
      },
      c: {
        parents: ['a', 'b'],
        run: ({ input }) => {
          record.push('c');
          return input.a + input.b;
        },
      },
    },
  });

  test('roots become ready but do not start; children stay waiting', async () => {
    const record = [];
    const runner = new DagRunner({ dag: stepDag(record), input: 0, autorun: () => false });
    const p = runner.run();
    p.catch(() => {});
    await settle();
    expect(record).toEqual([]);
    expect(runner.nodeState('a')).toBe('ready');
    expect(runner.nodeState('b')).toBe('ready');
    expect(runner.nodeState('c')).toBe('waiting');
    expect(await promiseState(p)).toBe('pending');
    runner.cancel();
  });

  test('runNode returns false for a node still waiting on parents and does not run it', async () => {
    const record = [];
    const runner = new DagRunner({ dag: stepDag(record), input: 0, autorun: () => false });
    const p = runner.run();
    p.catch(() => {});
    await settle();
    expect(await runner.runNode('c')).toBe(false);
    expect(record).toEqual([]);
    expect(runner.nodeState('c')).toBe('waiting');
    runner.cancel();
  });

  test('runNode runs one ready node, resolves true once it settled, and readies its children', async () => {
    const record = [];
    const runner = new DagRunner({ dag: stepDag(record), input: 0, autorun: () => false });
    const p = runner.run();
    p.catch(() => {});
    await settle();

    expect(await runner.runNode('a')).toBe(true);
    expect(record).toEqual(['a']);
    expect(runner.nodeState('a')).toBe('finished');
    expect(runner.nodeState('b')).toBe('ready');
    expect(runner.nodeState('c')).toBe('waiting');

    expect(await runner.runNode('b')).toBe(true);
    expect(record).toEqual(['a', 'b']);
    expect(runner.nodeState('b')).toBe('finished');
    await settle();
    expect(runner.nodeState('c')).toBe('ready');
    // Nothing runs by itself in stepwise mode.
    expect(record).toEqual(['a', 'b']);
    runner.cancel();
  });

  test('runNode returns false for a node that already ran', async () => {
    const record = [];
    const runner = new DagRunner({ dag: stepDag(record), input: 0, autorun: () => false });
    const p = runner.run();
    p.catch(() => {});
    await settle();
    expect(await runner.runNode('a')).toBe(true);
    expect(await runner.runNode('a')).toBe(false);
    expect(record).toEqual(['a']);
    runner.cancel();
  });

  test('repeated runNode drives the run to completion', async () => {
    const record = [];
    const runner = new DagRunner({ dag: stepDag(record), input: 5, autorun: () => false });
    const onFinish = vi.fn();
    runner.on('finish', onFinish);
    const p = runner.run();
    await settle();
    expect(await runner.runNode('b')).toBe(true);
    expect(await runner.runNode('a')).toBe(true);
    expect(await runner.runNode('c')).toBe(true);
    expect(record).toEqual(['b', 'a', 'c']);
    expect(await within(p, 3000, 'run() in stepwise mode')).toBe(16);
    expect(await runner.finished).toBe(16);
    expect(onFinish).toHaveBeenCalledWith(16);
    for (const n of ['a', 'b', 'c']) expect(runner.nodeState(n)).toBe('finished');
  });

  test('a failing node in stepwise mode: runNode resolves true and the run rejects', async () => {
    const err = new Error('step failure');
    const runner = new DagRunner({
      dag: {
        name: 'sf',
        nodes: {
          a: {
            run: () => {
              throw err;
            },
          },
          b: { parents: ['a'], run: () => 1 },
        },
      },
      input: null,
      autorun: () => false,
    });
    const p = runner.run();
    p.catch(() => {});
    await settle();
    expect(await runner.runNode('a')).toBe(true);
    await expect(p).rejects.toBe(err);
    expect(runner.nodeState('a')).toBe('error');
    expect(await runner.runNode('b')).toBe(false);
  });

  test('cancel() in stepwise mode cancels ready nodes; runNode then returns false', async () => {
    const record = [];
    const runner = new DagRunner({ dag: stepDag(record), input: 0, autorun: () => false });
    const p = runner.run();
    p.catch(() => {});
    await settle();
    runner.cancel();
    await settle();
    expect(runner.nodeState('a')).toBe('cancelled');
    expect(runner.nodeState('c')).toBe('cancelled');
    expect(await runner.runNode('a')).toBe(false);
    expect(record).toEqual([]);
    await expect(p).rejects.toBeInstanceOf(CancelledError);
  });

  test("dag:state reports 'ready' for roots at start and for a child once its parents finished", async () => {
    const record = [];
    const runner = new DagRunner({ dag: stepDag(record), input: 0, autorun: () => false });
    const states = [];
    runner.on('dag:state', (s) => states.push(`${s.sourceNode}:${s.state}`));
    const p = runner.run();
    p.catch(() => {});
    await settle();
    expect(states).toEqual(expect.arrayContaining(['a:ready', 'b:ready']));
    expect(states).not.toContain('c:ready');
    await runner.runNode('a');
    await runner.runNode('b');
    await settle();
    expect(states).toContain('c:ready');
    expect(states.indexOf('c:ready')).toBeGreaterThan(states.indexOf('b:finished'));
    runner.cancel();
    await settle();
    expect(states.at(-1)).toBe('c:cancelled');
  });

  test('autorun is consulted: returning true runs the DAG normally', async () => {
    const autorun = vi.fn(() => true);
    const record = [];
    expect(await runDag({ dag: stepDag(record), input: 0, autorun })).toBe(11);
    expect(autorun).toHaveBeenCalled();
  });
});

describe('concurrency', () => {
  test('root nodes start together', async () => {
    const gates = { a: deferred(), b: deferred(), c: deferred() };
    const started = new Set();
    const mk = (n) => async () => {
      started.add(n);
      await gates[n].promise;
      return n;
    };
    const p = runDag({
      dag: { name: 'roots', nodes: { a: { run: mk('a') }, b: { run: mk('b') }, c: { run: mk('c') } } },
      input: null,
    });
    // None of the gates is opened until all three roots are running at once.
    await waitUntil(() => started.size === 3, 'all three roots running at once');
    gates.c.resolve();
    gates.a.resolve();
    gates.b.resolve();
    expect(await p).toEqual({ a: 'a', b: 'b', c: 'c' });
  });

  test('a node starts as soon as its last parent finishes, without waiting for unrelated nodes', async () => {
    const unrelated = deferred();
    const started = [];
    const p = runDag({
      dag: {
        name: 'eager',
        nodes: {
          slow: {
            run: async () => {
              started.push('slow');
              await unrelated.promise;
              return 'slow';
            },
          },
          fast: {
            run: async () => {
              started.push('fast');
              return 1;
            },
          },
          child: {
            parents: ['fast'],
            run: ({ input }) => {
              started.push('child');
              return input.fast + 1;
            },
          },
          grandchild: {
            parents: ['child'],
            run: ({ input }) => {
              started.push('grandchild');
              return input.child + 1;
            },
          },
        },
      },
      input: null,
    });
    await waitUntil(() => started.includes('grandchild'), 'grandchild ran while slow still running');
    unrelated.resolve();
    expect(await p).toEqual({ slow: 'slow', grandchild: 3 });
  });

  test('a node with two parents waits for both', async () => {
    const gateB = deferred();
    const ran = [];
    const p = runDag({
      dag: {
        name: 'join',
        nodes: {
          a: { run: () => 'a' },
          b: { run: () => gateB.promise },
          join: {
            parents: ['a', 'b'],
            run: ({ input }) => {
              ran.push('join');
              return input.a + input.b;
            },
          },
        },
      },
      input: null,
    });
    await settle();
    expect(ran).toEqual([]);
    gateB.resolve('b');
    expect(await p).toBe('ab');
    expect(ran).toEqual(['join']);
  });

  test('siblings under one parent run concurrently', async () => {
    const gates = [deferred(), deferred()];
    const started = new Set();
    const p = runDag({
      dag: {
        name: 'siblings',
        nodes: {
          root: { run: () => 0 },
          s0: {
            parents: ['root'],
            run: async () => {
              started.add('s0');
              return gates[0].promise;
            },
          },
          s1: {
            parents: ['root'],
            run: async () => {
              started.add('s1');
              return gates[1].promise;
            },
          },
        },
      },
      input: null,
    });
    await waitUntil(() => started.size === 2, 'both siblings running at once');
    gates[1].resolve(1);
    gates[0].resolve(0);
    expect(await p).toEqual({ s0: 0, s1: 1 });
  });

  test('two runs of the same DAG do not share state', async () => {
    const firstHolds = deferred();
    const dag = {
      name: 'parallel-runs',
      nodes: {
        a: {
          run: async ({ rootInput, context }) => {
            context.seen = rootInput;
            if (rootInput === 1) await firstHolds.promise;
            else await Promise.resolve();
            return context.seen;
          },
        },
      },
    };
    // The second run writes and reads its context while the first is between its write and read.
    const first = runDag({ dag, input: 1 });
    const y = await runDag({ dag, input: 2 });
    firstHolds.resolve();
    const x = await first;
    expect([x, y]).toEqual([1, 2]);
  });

  test('many concurrent runs all complete', async () => {
    const dag = {
      name: 'many',
      nodes: {
        a: { run: async ({ rootInput }) => rootInput },
        b: { parents: ['a'], run: ({ input }) => input.a * 2 },
      },
    };
    const outs = await Promise.all(Array.from({ length: 200 }, (_, i) => runDag({ dag, input: i })));
    expect(outs).toEqual(Array.from({ length: 200 }, (_, i) => i * 2));
  });
});
