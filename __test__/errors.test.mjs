import { describe, test, expect, vi, afterEach } from 'vitest';
import { runDag, DagRunner, CancelledError } from 'ramus';
import { deferred, settle, sleep, within, collectEvents, waitUntil } from './helpers.mjs';

function failingDag(thrower, { extra = {}, dagExtra = {} } = {}) {
  return {
    name: 'failing',
    ...dagExtra,
    nodes: {
      ok: { run: () => 1 },
      bad: { parents: ['ok'], run: thrower },
      ...extra,
    },
  };
}

describe('a failing node rejects the run with the very value thrown', () => {
  test('sync throw of an Error: same object', async () => {
    const err = new Error('sync boom');
    const p = runDag({
      dag: failingDag(() => {
        throw err;
      }),
      input: null,
    });
    await expect(p).rejects.toBe(err);
  });

  test('async rejection of an Error: same object', async () => {
    const err = new Error('async boom');
    const p = runDag({
      dag: failingDag(async () => {
        await sleep(1);
        throw err;
      }),
      input: null,
    });
    await expect(p).rejects.toBe(err);
  });

  test('returned rejected promise: same object', async () => {
    const err = new TypeError('returned rejection');
    await expect(runDag({ dag: failingDag(() => Promise.reject(err)), input: null })).rejects.toBe(err);
  });

  test('custom Error subclass keeps class, message and own fields', async () => {
    class ToolError extends Error {
      constructor(message, code) {
        super(message);
        this.name = 'ToolError';
        this.code = code;
      }
    }
    const err = new ToolError('tool went wrong', 'E_TOOL');
    let caught;
    try {
      await runDag({
        dag: failingDag(() => {
          throw err;
        }),
        input: null,
      });
    } catch (e) {
      caught = e;
    }
    expect(caught).toBe(err);
    expect(caught).toBeInstanceOf(ToolError);
    expect(caught.message).toBe('tool went wrong');
    expect(caught.code).toBe('E_TOOL');
    expect(caught.name).toBe('ToolError');
  });

  test('throwing a string rejects with that string', async () => {
    const p = runDag({
      dag: failingDag(() => {
        throw 'plain string failure';
      }),
      input: null,
    });
    await expect(p).rejects.toBe('plain string failure');
  });

  test('throwing a plain object rejects with the same object', async () => {
    const obj = { code: 42, reason: 'nope' };
    const p = runDag({
      dag: failingDag(async () => {
        throw obj;
      }),
      input: null,
    });
    await expect(p).rejects.toBe(obj);
  });

  test('throwing a number rejects with that number', async () => {
    const p = runDag({
      dag: failingDag(() => {
        throw 7;
      }),
      input: null,
    });
    await expect(p).rejects.toBe(7);
  });

  test('throwing null rejects with null', async () => {
    const p = runDag({
      dag: failingDag(() => {
        throw null;
      }),
      input: null,
    });
    await expect(p).rejects.toBe(null);
  });

  test('throwing undefined rejects with undefined', async () => {
    const p = runDag({
      dag: failingDag(async () => {
        throw undefined;
      }),
      input: null,
    });
    const outcome = await p.then(
      (v) => ({ resolved: v }),
      (e) => ({ rejected: e })
    );
    expect(outcome).toHaveProperty('rejected');
    expect(outcome.rejected).toBeUndefined();
  });

  test('a root node failing rejects the run', async () => {
    const err = new RangeError('root failed');
    const dag = {
      name: 'root-fail',
      nodes: {
        a: {
          run: () => {
            throw err;
          },
        },
        b: { parents: ['a'], run: () => 1 },
      },
    };
    await expect(runDag({ dag, input: null })).rejects.toBe(err);
  });

  test('DagRunner: run(), finished and ramus:error all carry the same error', async () => {
    const err = new Error('runner boom');
    const runner = new DagRunner({
      dag: failingDag(() => {
        throw err;
      }),
      input: null,
    });
    const onError = vi.fn();
    const onFinish = vi.fn();
    runner.on('ramus:error', onError);
    runner.on('finish', onFinish);
    const finished = runner.finished;
    await expect(runner.run()).rejects.toBe(err);
    await expect(finished).rejects.toBe(err);
    await expect(runner.finished).rejects.toBe(err);
    expect(onError).toHaveBeenCalledTimes(1);
    expect(onError.mock.calls[0][0]).toEqual({ error: err, fatal: true });
    expect(onError.mock.calls[0][0].error).toBe(err);
    expect(onFinish).not.toHaveBeenCalled();
  });

  test('ramus:error gets a non-Error thrown value as-is, in { error, fatal }', async () => {
    const obj = { not: 'an error' };
    const runner = new DagRunner({
      dag: failingDag(() => {
        throw obj;
      }),
      input: null,
    });
    const onError = vi.fn();
    runner.on('ramus:error', onError);
    await expect(runner.run()).rejects.toBe(obj);
    expect(onError).toHaveBeenCalledWith({ error: obj, fatal: true });
    expect(onError.mock.calls[0][0].error).toBe(obj);
  });

  test('the failed node ends in state error; its waiting child ends cancelled', async () => {
    const dag = {
      name: 'states',
      nodes: {
        ok: { run: () => 1 },
        bad: {
          parents: ['ok'],
          run: () => {
            throw new Error('x');
          },
        },
        child: { parents: ['bad'], run: () => 2 },
      },
    };
    const runner = new DagRunner({ dag, input: null });
    await expect(runner.run()).rejects.toThrow('x');
    await settle();
    expect(runner.nodeState('ok')).toBe('finished');
    expect(runner.nodeState('bad')).toBe('error');
    expect(runner.nodeState('child')).toBe('cancelled');
  });

  test("dag:state and dag:node_state report 'cancelled' for a node cancelled by the failure", async () => {
    const dag = {
      name: 'state-events',
      nodes: {
        bad: {
          run: () => {
            throw new Error('x');
          },
        },
        child: { parents: ['bad'], run: () => 1 },
      },
    };
    const runner = new DagRunner({ dag, input: null });
    const states = [];
    runner.on('dag:state', (s) => states.push(`${s.sourceNode}:${s.state}`));
    const events = collectEvents(runner);
    await expect(runner.run()).rejects.toThrow('x');
    await settle();
    expect(states).toContain('bad:error');
    expect(states).toContain('child:cancelled');
    expect(
      events.some((e) => e.type === 'dag:node_state' && e.sourceNode === 'child' && e.data.state === 'cancelled')
    ).toBe(true);
  });

  test('error events: dag:node_error for the node, dag:error for the run, no dag:finish', async () => {
    const err = new Error('evented');
    const runner = new DagRunner({
      dag: failingDag(() => {
        throw err;
      }),
      input: null,
    });
    const events = collectEvents(runner);
    await expect(runner.run()).rejects.toBe(err);
    await settle();
    const nodeErrors = events.filter((e) => e.type === 'dag:node_error');
    expect(nodeErrors).toHaveLength(1);
    expect(nodeErrors[0].sourceNode).toBe('bad');
    const nodeErr = nodeErrors[0].data.error;
    expect(nodeErr === err || nodeErr?.message === 'evented' || String(nodeErr).includes('evented')).toBe(true);
    const runErrors = events.filter((e) => e.type === 'dag:error');
    expect(runErrors).toHaveLength(1);
    expect(runErrors[0].sourceNode).toBe('');
    expect(events.indexOf(nodeErrors[0])).toBeLessThan(events.indexOf(runErrors[0]));
    expect(events.some((e) => e.type === 'dag:finish')).toBe(false);
  });
});

describe('failure cancels the rest of the run', () => {
  test('a node still waiting on a slow sibling never runs after the failure', async () => {
    const slowGate = deferred();
    const ran = [];
    let slowSawCancel;
    const dag = {
      name: 'cancel-rest',
      nodes: {
        bad: {
          run: async () => {
            await sleep(1);
            throw new Error('first failure');
          },
        },
        slow: {
          run: async ({ isCancelled }) => {
            ran.push('slow');
            await slowGate.promise;
            slowSawCancel = isCancelled();
            return 'slow';
          },
        },
        afterSlow: {
          parents: ['slow'],
          run: () => {
            ran.push('afterSlow');
            return 'never';
          },
        },
        afterBad: {
          parents: ['bad'],
          run: () => {
            ran.push('afterBad');
          },
        },
      },
    };
    const runner = new DagRunner({ dag, input: null });
    await expect(runner.run()).rejects.toThrow('first failure');
    slowGate.resolve();
    await settle();
    expect(slowSawCancel).toBe(true);
    expect(ran).toEqual(['slow']);
    expect(runner.nodeState('afterSlow')).toBe('cancelled');
    expect(runner.nodeState('afterBad')).toBe('cancelled');
  });

  test('the run rejects as soon as the node fails, without waiting for running siblings', async () => {
    const never = deferred();
    const dag = {
      name: 'fast-fail',
      nodes: {
        bad: {
          run: () => {
            throw new Error('fail fast');
          },
        },
        hang: { run: () => never.promise },
      },
    };
    await expect(within(runDag({ dag, input: null }), 2000, 'runDag')).rejects.toThrow('fail fast');
    never.resolve();
  });

  test('only the first error rejects the run when two nodes fail', async () => {
    const first = new Error('first');
    const second = new Error('second');
    const gate = deferred();
    const dag = {
      name: 'two-failures',
      nodes: {
        a: {
          run: () => {
            throw first;
          },
        },
        b: {
          run: async () => {
            await gate.promise;
            throw second;
          },
        },
      },
    };
    const runner = new DagRunner({ dag, input: null });
    const onError = vi.fn();
    runner.on('ramus:error', onError);
    await expect(runner.run()).rejects.toBe(first);
    gate.resolve();
    await settle();
    expect(onError).toHaveBeenCalledTimes(1);
    expect(onError).toHaveBeenCalledWith({ error: first, fatal: true });
  });
});

describe('tolerateFailures', () => {
  test('a failed leaf is undefined in the output, the others finish', async () => {
    const dag = {
      name: 'tolerant',
      tolerateFailures: true,
      nodes: {
        root: { run: async ({ context }) => context.ctxValue + 1 },
        outputOne: {
          parents: ['root'],
          run: async () => {
            throw new Error('failure');
          },
        },
        outputTwo: { parents: ['root'], run: async ({ input }) => input.root + 2 },
      },
    };
    const out = await runDag({ dag, input: undefined, context: { ctxValue: 5 } });
    expect(out).toEqual({ outputOne: undefined, outputTwo: 8 });
    expect(out.outputTwo).toBe(8);
    expect(out.outputOne).toBeUndefined();
  });

  test('a slow sibling still runs to completion after another node failed', async () => {
    const ran = [];
    const slowGate = deferred();
    const dag = {
      name: 'tolerant-slow',
      tolerateFailures: true,
      nodes: {
        bad: {
          run: () => {
            throw new Error('x');
          },
        },
        slow: {
          run: async ({ isCancelled }) => {
            await slowGate.promise;
            ran.push(['slow', isCancelled()]);
            return 's';
          },
        },
        afterSlow: {
          parents: ['slow'],
          run: ({ input }) => {
            ran.push(['afterSlow']);
            return input.slow + '!';
          },
        },
      },
    };
    const runner = new DagRunner({ dag, input: null });
    const p = runner.run();
    await waitUntil(() => runner.nodeState('bad') === 'error', 'bad failed');
    expect(runner.nodeState('slow')).toBe('running'); // still running when bad failed
    slowGate.resolve();
    const out = await within(p, 3000, 'run');
    expect(out).toEqual({ bad: undefined, afterSlow: 's!' });
    expect(ran).toEqual([['slow', false], ['afterSlow']]);
    expect(runner.nodeState('bad')).toBe('error');
    expect(runner.nodeState('afterSlow')).toBe('finished');
  });

  test('ramus:error is not emitted and the run resolves under tolerateFailures', async () => {
    const dag = {
      name: 'tolerant-events',
      tolerateFailures: true,
      nodes: {
        bad: {
          run: () => {
            throw new Error('x');
          },
        },
        good: { run: () => 1 },
      },
    };
    const runner = new DagRunner({ dag, input: null });
    const onFinish = vi.fn();
    const onError = vi.fn();
    runner.on('finish', onFinish);
    runner.on('ramus:error', onError);
    const events = collectEvents(runner);
    const out = await runner.run();
    expect(out).toEqual({ bad: undefined, good: 1 });
    expect(onFinish).toHaveBeenCalledTimes(1);
    expect(onError).not.toHaveBeenCalled();
    expect(events.filter((e) => e.type === 'dag:node_error').map((e) => e.sourceNode)).toEqual(['bad']);
    expect(events.at(-1).type).toBe('dag:finish');
  });
});

describe('tolerateParentErrors', () => {
  test('a child runs with undefined under the failed parent key', async () => {
    let childInput;
    const dag = {
      name: 'tolerate-parent',
      nodes: {
        good: { run: () => 'g' },
        bad: {
          run: () => {
            throw new Error('parent failed');
          },
        },
        child: {
          parents: ['good', 'bad'],
          tolerateParentErrors: true,
          run: ({ input }) => {
            childInput = input;
            return `child saw ${input.good} and ${input.bad}`;
          },
        },
      },
      tolerateFailures: true,
    };
    const out = await runDag({ dag, input: null });
    expect(out).toBe('child saw g and undefined');
    expect(childInput.good).toBe('g');
    expect(childInput.bad).toBeUndefined();
    expect(Object.keys(childInput).sort()).toEqual(['bad', 'good']);
  });

  test('a child without tolerateParentErrors is cancelled when its parent failed (tolerateFailures)', async () => {
    const ran = [];
    const dag = {
      name: 'no-tolerate-parent',
      tolerateFailures: true,
      nodes: {
        bad: {
          run: () => {
            throw new Error('parent failed');
          },
        },
        strict: {
          parents: ['bad'],
          run: () => {
            ran.push('strict');
          },
        },
        lenient: {
          parents: ['bad'],
          tolerateParentErrors: true,
          run: ({ input }) => {
            ran.push('lenient');
            return input.bad === undefined ? 'ok' : 'wrong';
          },
        },
      },
    };
    const runner = new DagRunner({ dag, input: null });
    const out = await runner.run();
    expect(ran).toEqual(['lenient']);
    expect(out.lenient).toBe('ok');
    expect(out.strict).toBeUndefined();
    expect(runner.nodeState('strict')).toBe('cancelled');
  });

  test('a child tolerating a parent that threw CancelledError on its own runs with undefined input', async () => {
    const dag = {
      name: 'tolerate-cancelled-parent',
      nodes: {
        quitter: {
          run: () => {
            throw new CancelledError();
          },
        },
        child: {
          parents: ['quitter'],
          tolerateParentErrors: true,
          run: ({ input }) => ({ keys: Object.keys(input), value: input.quitter }),
        },
      },
    };
    const runner = new DagRunner({ dag, input: null });
    const events = collectEvents(runner);
    const out = await runner.run();
    expect(out).toEqual({ keys: ['quitter'], value: undefined });
    expect(runner.nodeState('quitter')).toBe('cancelled');
    expect(events.some((e) => e.type === 'dag:node_error')).toBe(false);
  });

  test('a node throwing CancelledError on its own does not fail the run: siblings finish', async () => {
    const ran = [];
    const siblingGate = deferred();
    const dag = {
      name: 'self-cancel',
      nodes: {
        quitter: {
          run: () => {
            throw new CancelledError();
          },
        },
        blocked: {
          parents: ['quitter'],
          run: () => {
            ran.push('blocked');
          },
        },
        sibling: {
          run: async ({ isCancelled }) => {
            await siblingGate.promise;
            ran.push(['sibling', isCancelled()]);
            return 'sib';
          },
        },
      },
    };
    const runner = new DagRunner({ dag, input: null });
    const onError = vi.fn();
    runner.on('ramus:error', onError);
    const events = collectEvents(runner);
    const p = runner.run();
    await waitUntil(() => runner.nodeState('quitter') === 'cancelled', 'quitter cancelled itself');
    expect(runner.nodeState('sibling')).toBe('running'); // still running when quitter quit
    siblingGate.resolve();
    const outcome = await p.then(
      (v) => ({ ok: v }),
      (e) => ({ err: e })
    );
    await settle();
    expect(ran).toEqual([['sibling', false]]);
    expect(runner.nodeState('quitter')).toBe('cancelled');
    expect(runner.nodeState('blocked')).toBe('cancelled');
    expect(runner.nodeState('sibling')).toBe('finished');
    expect(onError).not.toHaveBeenCalled();
    expect(events.some((e) => e.type === 'dag:node_error' || e.type === 'dag:error')).toBe(false);
    expect(outcome).toBeDefined();
  });

  test('a node throwing CancelledError on its own: the run resolves, its cancelled child leaf is undefined', async () => {
    const dag = {
      name: 'self-cancel-output',
      nodes: {
        quitter: {
          run: () => {
            throw new CancelledError();
          },
        },
        blocked: { parents: ['quitter'], run: () => 'never' },
        sibling: { run: () => 'sib' },
      },
    };
    const out = await runDag({ dag, input: null });
    expect(out).toEqual({ blocked: undefined, sibling: 'sib' });
  });
});

describe('no unhandled rejections leak', () => {
  let unhandled = [];
  const onUnhandled = (reason) => unhandled.push(reason);

  const watch = () => {
    unhandled = [];
    process.on('unhandledRejection', onUnhandled);
  };
  afterEach(() => {
    process.off('unhandledRejection', onUnhandled);
  });
  const drain = async () => {
    await settle();
    await sleep(30);
    await settle();
  };

  test('awaited runDag that fails', async () => {
    watch();
    await expect(
      runDag({
        dag: failingDag(() => {
          throw new Error('caught by caller');
        }),
        input: null,
      })
    ).rejects.toThrow('caught by caller');
    await drain();
    expect(unhandled).toEqual([]);
  });

  test('failing DagRunner where only run() is awaited (finished never read)', async () => {
    watch();
    const runner = new DagRunner({
      dag: failingDag(async () => {
        throw new Error('only run');
      }),
      input: null,
    });
    await expect(runner.run()).rejects.toThrow('only run');
    await drain();
    expect(unhandled).toEqual([]);
  });

  test('failing DagRunner with no ramus:error listener does not throw from the emitter', async () => {
    watch();
    const runner = new DagRunner({
      dag: failingDag(() => {
        throw new Error('no listener');
      }),
      input: null,
    });
    await expect(runner.run()).rejects.toThrow('no listener');
    await drain();
    expect(unhandled).toEqual([]);
  });

  test('original usage pattern: run() not awaited, finished awaited', async () => {
    watch();
    const runner = new DagRunner({
      dag: failingDag(() => {
        throw new Error('via finished');
      }),
      input: null,
    });
    runner.run();
    await expect(runner.finished).rejects.toThrow('via finished');
    await drain();
    expect(unhandled).toEqual([]);
  });

  test('cancelled run whose run() promise is awaited', async () => {
    watch();
    const gate = deferred();
    const runner = new DagRunner({
      dag: { name: 'c', nodes: { a: { run: () => gate.promise }, b: { parents: ['a'], run: () => 1 } } },
      input: null,
    });
    const p = runner.run();
    await settle();
    runner.cancel();
    gate.resolve();
    await expect(p).rejects.toBeInstanceOf(CancelledError);
    await drain();
    expect(unhandled).toEqual([]);
  });

  test('tolerated failures and a node throwing CancelledError', async () => {
    watch();
    await runDag({
      dag: {
        name: 't',
        tolerateFailures: true,
        nodes: {
          a: {
            run: () => {
              throw new Error('tolerated');
            },
          },
          b: {
            run: () => {
              throw new CancelledError();
            },
          },
          c: { run: () => 1 },
        },
      },
      input: null,
    }).catch(() => {});
    await drain();
    expect(unhandled).toEqual([]);
  });

  test('a failure inside a run cancels a node blocked in exitIfCancelled without leaking', async () => {
    watch();
    const gate = deferred();
    const dag = {
      name: 'exit-after-fail',
      nodes: {
        bad: {
          run: async () => {
            await sleep(1);
            throw new Error('fail');
          },
        },
        waiter: {
          run: async ({ exitIfCancelled }) => {
            await gate.promise;
            exitIfCancelled();
            return 'not reached';
          },
        },
      },
    };
    const p = runDag({ dag, input: null });
    await expect(p).rejects.toThrow('fail');
    gate.resolve();
    await drain();
    expect(unhandled).toEqual([]);
  });
});

test('waitUntil helper sanity: fails when the condition never holds', async () => {
  await expect(waitUntil(() => false, 'never', 20)).rejects.toThrow('timed out waiting for: never');
});
