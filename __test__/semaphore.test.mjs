import { describe, test, expect } from 'vitest';
import { LocalSemaphore, DagRunner, runDag, CancelledError } from 'ramus';
import { deferred, settle, sleep, collectEvents, concurrencyTracker, promiseState, waitUntil } from './helpers.mjs';

describe('LocalSemaphore', () => {
  test('an unknown key is unlimited: many acquires resolve at once', async () => {
    const sem = new LocalSemaphore({ other: 1 });
    const acquires = Array.from({ length: 100 }, () => sem.acquire('unknown'));
    for (const a of acquires) expect(a).toBeInstanceOf(Promise);
    await Promise.all(acquires);
    for (let i = 0; i < 100; i++) sem.release('unknown');
  });

  test('current() is 0 for a key never used', () => {
    const sem = new LocalSemaphore({ a: 2 });
    expect(sem.current('never')).toBe(0);
    expect(sem.current('a')).toBe(0);
  });

  test('acquire up to the limit resolves; the next one waits', async () => {
    const sem = new LocalSemaphore({ k: 2 });
    await sem.acquire('k');
    await sem.acquire('k');
    expect(sem.current('k')).toBe(2);
    const third = sem.acquire('k');
    expect(await promiseState(third)).toBe('pending');
    sem.release('k');
    await third;
    expect(sem.current('k')).toBe(2);
    sem.release('k');
    sem.release('k');
    expect(sem.current('k')).toBe(0);
  });

  test('limit is respected under load: max concurrent == limit', async () => {
    const sem = new LocalSemaphore({ k: 3 });
    const t = concurrencyTracker();
    let done = 0;
    await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        sem.run('k', async () => {
          t.enter();
          expect(sem.current('k')).toBeLessThanOrEqual(3);
          await sleep(2 + (i % 3));
          t.leave();
          done += 1;
        })
      )
    );
    expect(done).toBe(20);
    expect(t.max).toBe(3);
    expect(sem.current('k')).toBe(0);
  });

  test('waiters wake in FIFO order', async () => {
    const sem = new LocalSemaphore({ k: 1 });
    await sem.acquire('k');
    const order = [];
    const waiters = [1, 2, 3, 4].map((n) => sem.acquire('k').then(() => order.push(n)));
    await settle();
    expect(order).toEqual([]);
    for (let i = 0; i < 4; i++) {
      sem.release('k');
      await settle(3);
      expect(order).toEqual([1, 2, 3, 4].slice(0, i + 1));
    }
    await Promise.all(waiters);
    sem.release('k');
    expect(sem.current('k')).toBe(0);
  });

  test('release beyond the acquires leaves the count at 0 (limit still enforced)', async () => {
    const sem = new LocalSemaphore({ k: 1 });
    await sem.acquire('k');
    sem.release('k');
    sem.release('k');
    sem.release('k');
    expect(sem.current('k')).toBe(0);
    await sem.acquire('k');
    expect(sem.current('k')).toBe(1);
    const second = sem.acquire('k');
    expect(await promiseState(second)).toBe('pending');
    sem.release('k');
    await second;
    sem.release('k');
    expect(sem.current('k')).toBe(0);
  });

  test('release of a key never acquired is harmless', () => {
    const sem = new LocalSemaphore({ k: 1 });
    expect(() => sem.release('k')).not.toThrow();
    expect(() => sem.release('unknown')).not.toThrow();
    expect(sem.current('k')).toBe(0);
  });

  test('limit 0 blocks until setLimit raises it', async () => {
    const sem = new LocalSemaphore({ k: 0 });
    const a = sem.acquire('k');
    await settle();
    expect(await promiseState(a)).toBe('pending');
    expect(sem.current('k')).toBe(0);
    sem.setLimit('k', 1);
    await a;
    expect(sem.current('k')).toBe(1);
    sem.release('k');
  });

  test('raising a limit wakes as many waiters as fit, in FIFO order', async () => {
    const sem = new LocalSemaphore({ k: 1 });
    await sem.acquire('k');
    const order = [];
    const ws = ['a', 'b', 'c'].map((n) => sem.acquire('k').then(() => order.push(n)));
    await settle();
    sem.setLimit('k', 3);
    await settle();
    expect(order).toEqual(['a', 'b']);
    expect(sem.current('k')).toBe(3);
    sem.release('k');
    await Promise.all(ws);
    expect(order).toEqual(['a', 'b', 'c']);
  });

  test('lowering a limit makes later acquires wait until enough slots are released', async () => {
    const sem = new LocalSemaphore({ k: 3 });
    await sem.acquire('k');
    await sem.acquire('k');
    sem.setLimit('k', 1);
    const next = sem.acquire('k');
    sem.release('k');
    expect(await promiseState(next)).toBe('pending');
    sem.release('k');
    await next;
    expect(sem.current('k')).toBe(1);
    sem.release('k');
  });

  test('setLimit creates an unknown key, which is limited from then on', async () => {
    const sem = new LocalSemaphore({});
    sem.setLimit('fresh', 1);
    await sem.acquire('fresh');
    const second = sem.acquire('fresh');
    expect(await promiseState(second)).toBe('pending');
    sem.release('fresh');
    await second;
    sem.release('fresh');
  });

  test('run() resolves with the function result and releases', async () => {
    const sem = new LocalSemaphore({ k: 1 });
    let during;
    const out = await sem.run('k', async () => {
      during = sem.current('k');
      return { value: 42 };
    });
    expect(out).toEqual({ value: 42 });
    expect(during).toBe(1);
    expect(sem.current('k')).toBe(0);
  });

  test('run() accepts a sync function', async () => {
    const sem = new LocalSemaphore({ k: 1 });
    expect(await sem.run('k', () => 'sync')).toBe('sync');
    expect(sem.current('k')).toBe(0);
  });

  test('run() releases when the function throws and rejects with the same error', async () => {
    const sem = new LocalSemaphore({ k: 1 });
    const err = new Error('inside run');
    await expect(
      sem.run('k', () => {
        throw err;
      })
    ).rejects.toBe(err);
    expect(sem.current('k')).toBe(0);
    await expect(sem.run('k', async () => Promise.reject(err))).rejects.toBe(err);
    expect(sem.current('k')).toBe(0);
    // The slot is really free: another run gets it immediately.
    expect(await sem.run('k', () => 'free')).toBe('free');
  });

  test('keys are independent', async () => {
    const sem = new LocalSemaphore({ a: 1, b: 1 });
    await sem.acquire('a');
    const b = sem.acquire('b');
    expect(await promiseState(b)).toBe('fulfilled');
    expect(sem.current('a')).toBe(1);
    expect(sem.current('b')).toBe(1);
    sem.release('a');
    sem.release('b');
  });

  test('two semaphores with the same keys are independent', async () => {
    const s1 = new LocalSemaphore({ k: 1 });
    const s2 = new LocalSemaphore({ k: 1 });
    await s1.acquire('k');
    expect(await promiseState(s2.acquire('k'))).toBe('fulfilled');
    s1.release('k');
    s2.release('k');
  });
});

describe('DAG with semaphores', () => {
  const limitedDag = (n, tracker, observe) => {
    const nodes = {};
    for (let i = 0; i < n; i++) {
      nodes[`n${i}`] = {
        semaphoreKey: 'llm',
        run: async () => {
          tracker.enter();
          observe?.();
          await sleep(5);
          tracker.leave();
          return i;
        },
      };
    }
    return { name: 'limited', nodes };
  };

  test('nodes with a semaphoreKey respect the limit', async () => {
    const sem = new LocalSemaphore({ llm: 2 });
    const t = concurrencyTracker();
    const out = await runDag({ dag: limitedDag(8, t), input: null, semaphores: [sem] });
    expect(Object.keys(out)).toHaveLength(8);
    expect(t.max).toBe(2);
    expect(sem.current('llm')).toBe(0);
  });

  test('several semaphores: a node holds a slot of each; max concurrency == min limit', async () => {
    const s1 = new LocalSemaphore({ llm: 3 });
    const s2 = new LocalSemaphore({ llm: 2 });
    const s3 = new LocalSemaphore({ other: 1 });
    const t = concurrencyTracker();
    const seen = [];
    const observe = () => seen.push([t.active, s1.current('llm'), s2.current('llm')]);
    await runDag({ dag: limitedDag(8, t, observe), input: null, semaphores: [s1, s2, s3] });
    expect(t.max).toBe(2);
    // While a node runs, it holds a slot in both semaphores.
    for (const [active, c1, c2] of seen) {
      expect(c1).toBeGreaterThanOrEqual(active);
      expect(c2).toBeGreaterThanOrEqual(active);
    }
    expect(s1.current('llm')).toBe(0);
    expect(s2.current('llm')).toBe(0);
  });

  test('the min limit wins regardless of semaphore order', async () => {
    const s1 = new LocalSemaphore({ llm: 1 });
    const s2 = new LocalSemaphore({ llm: 4 });
    const t = concurrencyTracker();
    await runDag({ dag: limitedDag(5, t), input: null, semaphores: [s2, s1] });
    expect(t.max).toBe(1);
  });

  test('a node slot is visible to other users of the same semaphore', async () => {
    const sem = new LocalSemaphore({ llm: 1 });
    const gate = deferred();
    const p = runDag({
      dag: { name: 'hold', nodes: { a: { semaphoreKey: 'llm', run: () => gate.promise } } },
      input: null,
      semaphores: [sem],
    });
    await waitUntil(() => sem.current('llm') === 1, 'node holds the slot');
    const outside = sem.acquire('llm');
    expect(await promiseState(outside)).toBe('pending');
    gate.resolve('x');
    expect(await p).toBe('x');
    await outside;
    sem.release('llm');
  });

  test('nodes without a semaphoreKey are not limited', async () => {
    const sem = new LocalSemaphore({ llm: 0 });
    const out = await runDag({
      dag: { name: 'free', nodes: { a: { run: () => 1 }, b: { parents: ['a'], run: ({ input }) => input.a + 1 } } },
      input: null,
      semaphores: [sem],
    });
    expect(out).toBe(2);
  });

  test('a semaphoreKey no semaphore knows is unlimited', async () => {
    const sem = new LocalSemaphore({ llm: 1 });
    const gates = [deferred(), deferred()];
    const started = new Set();
    const p = runDag({
      dag: {
        name: 'unknown-key',
        nodes: {
          a: { semaphoreKey: 'search', run: () => (started.add('a'), gates[0].promise) },
          b: { semaphoreKey: 'search', run: () => (started.add('b'), gates[1].promise) },
        },
      },
      input: null,
      semaphores: [sem],
    });
    await waitUntil(() => started.size === 2, 'both nodes running at once');
    gates[0].resolve(1);
    gates[1].resolve(2);
    expect(await p).toEqual({ a: 1, b: 2 });
  });

  test('a running node cancelled with the run releases its slot when it returns', async () => {
    const sem = new LocalSemaphore({ llm: 1 });
    const gate = deferred();
    const runner = new DagRunner({
      dag: { name: 'cancel-running', nodes: { a: { semaphoreKey: 'llm', run: () => gate.promise } } },
      input: null,
      semaphores: [sem],
    });
    const p = runner.run();
    p.catch(() => {});
    await waitUntil(() => sem.current('llm') === 1, 'slot taken');
    runner.cancel();
    gate.resolve('late');
    await expect(p).rejects.toBeInstanceOf(CancelledError);
    await settle();
    expect(sem.current('llm')).toBe(0);
  });

  test('a node waiting for a slot is pendingSemaphore (nodeState and dag:state), then runs', async () => {
    const sem = new LocalSemaphore({ llm: 1 });
    await sem.acquire('llm');
    const ran = [];
    const runner = new DagRunner({
      dag: {
        name: 'pending',
        nodes: {
          a: {
            semaphoreKey: 'llm',
            run: () => {
              ran.push('a');
              return 'A';
            },
          },
        },
      },
      input: null,
      semaphores: [sem],
    });
    const states = [];
    runner.on('dag:state', (s) => states.push(s));
    const events = collectEvents(runner);
    const p = runner.run();
    await waitUntil(() => runner.nodeState('a') === 'pendingSemaphore', 'a pendingSemaphore');
    await settle();
    expect(ran).toEqual([]);
    expect(runner.nodeState('a')).toBe('pendingSemaphore');
    expect(states).toContainEqual(expect.objectContaining({ sourceNode: 'a', state: 'pendingSemaphore' }));
    expect(
      events.some((e) => e.type === 'dag:node_state' && e.sourceNode === 'a' && e.data.state === 'pendingSemaphore')
    ).toBe(true);
    sem.release('llm');
    expect(await p).toBe('A');
    const seq = states.filter((s) => s.sourceNode === 'a').map((s) => s.state);
    expect(seq.indexOf('pendingSemaphore')).toBeLessThan(seq.indexOf('running'));
    expect(sem.current('llm')).toBe(0);
  });

  test('a node with limit 0 waits until setLimit raises it', async () => {
    const sem = new LocalSemaphore({ llm: 0 });
    const runner = new DagRunner({
      dag: { name: 'zero', nodes: { a: { semaphoreKey: 'llm', run: () => 'ran' } } },
      input: null,
      semaphores: [sem],
    });
    const p = runner.run();
    await waitUntil(() => runner.nodeState('a') === 'pendingSemaphore', 'a pendingSemaphore');
    expect(await promiseState(p)).toBe('pending');
    sem.setLimit('llm', 1);
    expect(await p).toBe('ran');
  });

  test('a failing node releases its slots', async () => {
    const s1 = new LocalSemaphore({ llm: 1 });
    const s2 = new LocalSemaphore({ llm: 1 });
    const err = new Error('fails holding slots');
    await expect(
      runDag({
        dag: {
          name: 'fail-release',
          nodes: {
            a: {
              semaphoreKey: 'llm',
              run: async () => {
                await sleep(1);
                throw err;
              },
            },
          },
        },
        input: null,
        semaphores: [s1, s2],
      })
    ).rejects.toBe(err);
    await settle();
    expect(s1.current('llm')).toBe(0);
    expect(s2.current('llm')).toBe(0);
  });

  test('a node cancelled while pendingSemaphore never runs and does not keep a slot', async () => {
    const sem = new LocalSemaphore({ llm: 1 });
    await sem.acquire('llm');
    const ran = [];
    const runner = new DagRunner({
      dag: { name: 'cancel-pending', nodes: { a: { semaphoreKey: 'llm', run: () => ran.push('a') } } },
      input: null,
      semaphores: [sem],
    });
    const p = runner.run();
    p.catch(() => {});
    await waitUntil(() => runner.nodeState('a') === 'pendingSemaphore', 'a pendingSemaphore');
    runner.cancel();
    await expect(p).rejects.toBeInstanceOf(CancelledError);
    sem.release('llm');
    await settle();
    expect(ran).toEqual([]);
    expect(runner.nodeState('a')).toBe('cancelled');
    expect(sem.current('llm')).toBe(0);
    // The slot is really free.
    expect(await promiseState(sem.acquire('llm'))).toBe('fulfilled');
  });

  test('a node cancelled while waiting on one of two semaphores gives back the slot it took in the other', async () => {
    const s1 = new LocalSemaphore({ llm: 2 });
    const s2 = new LocalSemaphore({ llm: 1 });
    await s2.acquire('llm'); // held elsewhere for the whole test
    const runner = new DagRunner({
      dag: { name: 'partial', nodes: { a: { semaphoreKey: 'llm', run: () => 'never' } } },
      input: null,
      semaphores: [s1, s2],
    });
    const p = runner.run();
    p.catch(() => {});
    await waitUntil(() => runner.nodeState('a') === 'pendingSemaphore', 'a pendingSemaphore');
    runner.cancel();
    await expect(p).rejects.toBeInstanceOf(CancelledError);
    await settle();
    expect(runner.nodeState('a')).toBe('cancelled');
    // The cancelled node never runs: it must not keep a slot of s1 while s2 stays busy.
    expect(s1.current('llm')).toBe(0);
    s2.release('llm');
    await settle();
    expect(s1.current('llm')).toBe(0);
    expect(s2.current('llm')).toBe(0);
  });

  test('a slot held by a DAG node is released when it finishes, waking the next node', async () => {
    const sem = new LocalSemaphore({ llm: 1 });
    const order = [];
    const mk = (n) => async () => {
      order.push(`${n}:start`);
      await sleep(3);
      order.push(`${n}:end`);
      return n;
    };
    await runDag({
      dag: {
        name: 'serial',
        nodes: {
          a: { semaphoreKey: 'llm', run: mk('a') },
          b: { semaphoreKey: 'llm', run: mk('b') },
          c: { semaphoreKey: 'llm', run: mk('c') },
        },
      },
      input: null,
      semaphores: [sem],
    });
    // Never two starts in a row: strictly serial.
    for (let i = 0; i < order.length; i += 2) {
      expect(order[i].endsWith(':start')).toBe(true);
      expect(order[i + 1]).toBe(order[i].replace(':start', ':end'));
    }
  });
});
