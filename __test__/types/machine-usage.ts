// Typed usage of the state machine surface, checked with strict `tsc --noEmit` by
// __test__/machine-types.test.mjs. Every `@ts-expect-error` must hit a real error: if the types
// were `any`, tsc would report "Unused '@ts-expect-error' directive" and the test fails.
import { StateMachineRunner, transitionTo, runAll, TimeoutError, parseDuration, DagRunner, LocalSemaphore, defineMachine } from 'ramus';
import type { StateMachine, MachineStatus, RunAllResult, CurrentState, Dag } from 'ramus';

interface Ctx {
  count: number;
  log: string[];
}
interface Root {
  topic: string;
}
type S = 'start' | 'work' | 'done' | 'failed';

export const machine: StateMachine<Ctx, Root, S> = {
  name: 'typed-machine',
  description: 'types test',
  tags: ['t'],
  info: { owner: 'tests' },
  initial: 'start',
  errorState: 'failed',
  maxSteps: 10,
  context: () => ({ count: 0, log: [] }),
  nodes: {
    start: {
      run: ({ context, rootInput, previousState, event, isCancelled, exitIfCancelled, emit, input }) => {
        const n: number = context.count;
        const topic: string = rootInput.topic;
        const prev: string | undefined = previousState;
        const type: string | undefined = event?.type;
        const data: unknown = event?.data;
        const cancelled: boolean = isCancelled();
        exitIfCancelled();
        emit('my:event', { n });
        // @ts-expect-error count is a number, not a string
        const wrong: string = context.count;
        // @ts-expect-error the root input has no such field
        const missing = rootInput.missing;
        // @ts-expect-error the context has no such field
        context.nope = 1;
        // @ts-expect-error emit needs a string event type
        emit(42);
        void [prev, type, data, cancelled, wrong, missing, input];
        return transitionTo('work', topic.length + n);
      },
      transition: {
        go: 'work',
        approve: { state: 'done', condition: ({ event }) => event?.data === true },
        '': [
          { state: 'work', condition: ({ context, input, output, rootInput }) => context.count > 0 && rootInput.topic !== '' && input !== output },
          { state: 'done', condition: () => ({ transition: false }) },
          { state: 'done', delay: '5s' },
        ],
      },
      timeout: { after: '15m', state: 'failed' },
    },
    work: { transition: 'done', maxVisits: 3, semaphoreKey: 'llm', tags: ['w'], info: {} },
    done: { final: true },
    failed: { final: true, run: ({ input }) => String(input) },
  },
};

export const badTarget: StateMachine<Ctx, Root, S> = {
  name: 'bad-target',
  initial: 'start',
  nodes: {
    // @ts-expect-error a transition target must be one of the machine's states
    start: { transition: 'nowhere' },
    work: {},
    done: { final: true },
    failed: { final: true },
  },
};

export const badInitial: StateMachine<Ctx, Root, S> = {
  name: 'bad-initial',
  // @ts-expect-error the initial state must be one of the machine's states
  initial: 'elsewhere',
  nodes: { start: {}, work: {}, done: {}, failed: {} },
};

// @ts-expect-error every state of S needs a node
export const missingNode: StateMachine<Ctx, Root, S> = { name: 'missing', initial: 'start', nodes: { start: {}, work: {}, done: {} } };

// @ts-expect-error the default context must match Ctx
export const badContext: StateMachine<Ctx, Root, S> = { name: 'ctx', initial: 'start', context: () => ({ count: 'zero', log: [] }), nodes: { start: {}, work: {}, done: {}, failed: {} } };

export const badDelay: StateMachine<Ctx, Root, S> = {
  name: 'delay',
  initial: 'start',
  nodes: {
    // @ts-expect-error a delay is a number or a duration string
    start: { transition: { '': { state: 'work', delay: true } } },
    work: {},
    done: {},
    failed: {},
  },
};

const dag: Dag<{ n: number }, null> = { name: 'child-dag', nodes: { a: { run: () => 1 } } };

export async function useRunner(): Promise<void> {
  const sem = new LocalSemaphore({ llm: 1 });
  const r = new StateMachineRunner({ config: machine, input: { topic: 'x' }, context: { count: 1, log: [] }, tools: { f: () => 1 }, name: 'n', semaphores: [sem], keepAlive: true });
  const status: MachineStatus = r.machineStatus;
  const state: S = r.state;
  const stepped: boolean = await r.step();
  await r.run();
  const can: boolean = r.canStep();
  const available: string[] = r.availableEvents();
  const ctx: Ctx = r.context;
  const cur: CurrentState<S> = r.currentState;
  const prev: S | undefined = cur.previousState;
  r.send({ type: 'go' });
  r.send({ type: 'approve', data: true, queue: true });
  r.on('state_machine:state', ({ machineState, state: st }) => {
    const m: MachineStatus = machineState;
    const name: string = st;
    void [m, name];
  });
  r.on('event', (e) => {
    const t: string = e.type;
    const stepId: string = e.stepId;
    void [t, stepId];
  });
  r.on('finish', () => {});
  r.on('ramus:error', () => {});
  r.on('cancelled', () => {});
  const finished: Promise<unknown> = r.finished;
  r.cancel();
  // @ts-expect-error machineStatus is one of the machine statuses
  const badStatus: 'bogus' = r.machineStatus;
  // @ts-expect-error step() resolves a boolean
  const badStep: string = await r.step();
  // @ts-expect-error an event needs a type
  r.send({ data: 1 });
  // @ts-expect-error the root input must match the machine's
  new StateMachineRunner({ config: machine, input: { topic: 42 } });
  // @ts-expect-error the context must match the machine's
  new StateMachineRunner({ config: machine, input: { topic: 'x' }, context: { count: 'one', log: [] } });
  // @ts-expect-error options.initial must be one of the machine's states
  new StateMachineRunner({ config: machine, input: { topic: 'x' }, initial: 'elsewhere' });
  void [status, state, stepped, can, available, ctx, prev, finished, badStatus, badStep];
}

export async function useRunAll(): Promise<void> {
  const children = [new StateMachineRunner({ config: machine, input: { topic: 'a' } }), new DagRunner({ dag, input: null })];
  const results: RunAllResult[] = await runAll(children, { timeout: '90s' });
  await runAll(children, { timeout: 5000 });
  for (const res of results) {
    if (res.status === 'fulfilled') void res.value;
    else if (res.status === 'rejected') void res.reason;
    // @ts-expect-error a timed-out result has no value
    else void res.value;
  }
  // @ts-expect-error runAll takes an array of runners
  await runAll(children[0], { timeout: 10 });
}

export function useMisc(): void {
  const ms: number = parseDuration('90s');
  const n: number = parseDuration(250);
  const te: Error = new TimeoutError('State a timed out after 1ms');
  const t = transitionTo('work', { any: 'output' }, { delay: '1s' });
  // @ts-expect-error parseDuration returns a number
  const bad: string = parseDuration('1s');
  void [ms, n, te, t, bad];
}

// defineMachine infers the state names from `nodes`: every other state reference must name one.

const typedMachine = defineMachine<{ n: number }, string>()({
  name: 'typed',
  initial: 'a',
  errorState: 'b',
  nodes: {
    a: {
      run: ({ context }) => context.n,
      transition: { go: 'b', '': [{ state: 'a', condition: ({ context }) => context.n < 3 }] },
      timeout: { after: '1m', state: 'b' },
    },
    b: { final: true },
  },
});
new StateMachineRunner({ config: typedMachine, input: 'x' });

defineMachine<{ n: number }, string>()({
  name: 'bad-target',
  initial: 'a',
  // @ts-expect-error 'c' is not a state of this machine
  nodes: { a: { transition: 'c' }, b: { final: true } },
});

defineMachine<{ n: number }, string>()({
  name: 'bad-initial',
  // @ts-expect-error 'zz' is not a state of this machine
  initial: 'zz',
  nodes: { a: { transition: 'b' }, b: { final: true } },
});
