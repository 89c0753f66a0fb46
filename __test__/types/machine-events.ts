// A machine's events and output, typed from its config: what `send` takes, what a state's
// `event` is, and what `finished` resolves with. Every `@ts-expect-error` must hit a real error.
import { StateMachineRunner, defineMachine, transitionTo, type MachineEvent, type StateMachine } from 'ramus';

// ---- event types read from the transitions (data unknown) ----

const inferred = defineMachine<{ n: number }, string>()({
  name: 'inferred',
  initial: 'a',
  nodes: {
    a: {
      run: ({ event }) => {
        const type: 'go' | 'stop' | undefined = event?.type;
        // @ts-expect-error '' fires without an event: it is no event type
        const none: '' | undefined = event?.type;
        return [type, none];
      },
      transition: { go: 'b', '': [{ state: 'c', condition: ({ event }) => event?.type === 'stop' }] },
    },
    b: { transition: { stop: 'c' } },
    c: { final: true, run: () => 'done' },
  },
});

export async function inferredEvents(): Promise<void> {
  const run = new StateMachineRunner({ config: inferred, input: 'x', context: { n: 0 } });
  run.send({ type: 'go' });
  run.send({ type: 'stop', data: { any: 'thing' }, queue: true });
  // @ts-expect-error 'og' is not handled by any state
  run.send({ type: 'og' });
  const out: string = await run.finished;
  void out;
}

// ---- declared events: their data is typed ----

type Events = { approve: { by: string }; reject: { reason: string } | undefined; ping: undefined };

const declared = defineMachine<{}, string, Events>()({
  name: 'declared',
  initial: 'wait',
  nodes: {
    wait: { transition: { approve: 'done', reject: 'wait', ping: 'wait' } },
    done: {
      final: true,
      run: ({ event }) => {
        if (event?.type === 'approve') return event.data.by;
        // @ts-expect-error only approve carries `by`
        return event?.data.by;
      },
    },
  },
});

export async function declaredEvents(): Promise<void> {
  const run = new StateMachineRunner({ config: declared, input: 'x' });
  run.send({ type: 'approve', data: { by: 'dana' } });
  run.send({ type: 'reject' });
  run.send({ type: 'reject', data: { reason: 'too long' } });
  run.send({ type: 'ping' });
  // @ts-expect-error approve needs its data
  run.send({ type: 'approve' });
  // @ts-expect-error and of the declared type
  run.send({ type: 'approve', data: { by: 1 } });
  // @ts-expect-error an event type that is not declared
  run.send({ type: 'aprove', data: { by: 'dana' } });
  const by: string | undefined = await run.finished;
  void by;
}

defineMachine<{}, string, Events>()({
  name: 'undeclared',
  initial: 'a',
  // @ts-expect-error with declared events, transitions handle only those
  nodes: { a: { transition: { aprove: 'a' } } },
});

// ---- finished: the outputs of the final states ----

const outputs = defineMachine<{ n: number }, string>()({
  name: 'outputs',
  initial: 'start',
  nodes: {
    // A chosen transition's output is the next state's input, not the choice itself.
    start: { run: ({ context }) => (context.n > 0 ? transitionTo('count', 'chosen') : { state: 'plain' }), transition: { '': 'count' } },
    count: { final: true, run: async ({ input }) => String(input).length },
    flag: { final: true, run: () => transitionTo('start', true) },
    middle: { run: () => 'not final' },
  },
});
export const finals: Promise<number | boolean> = new StateMachineRunner({ config: outputs, input: 'x' }).finished;
// @ts-expect-error flag's output is one of them too
export const onlyCount: Promise<number> = new StateMachineRunner({ config: outputs, input: 'x' }).finished;

// A final state without a run passes its input on: the output is unknown then.
const passing = defineMachine<{}, string>()({ name: 'passing', initial: 'a', nodes: { a: { run: () => 1, transition: 'b' }, b: { final: true } } });
export const passed: Promise<unknown> = new StateMachineRunner({ config: passing, input: 'x' }).finished;
// @ts-expect-error unknown, not number
export const notNumber: Promise<number> = new StateMachineRunner({ config: passing, input: 'x' }).finished;

// ---- an annotated StateMachine: events declared in the type, else any ----

export const annotated: StateMachine<{}, string, 'a' | 'b', { go: { fast: boolean } }> = {
  name: 'annotated',
  initial: 'a',
  nodes: {
    a: { transition: { go: 'b' } },
    b: { final: true, run: ({ event }) => event?.data.fast },
  },
};
const annotatedRun = new StateMachineRunner({ config: annotated, input: 'x' });
annotatedRun.send({ type: 'go', data: { fast: true } });
// @ts-expect-error only go
annotatedRun.send({ type: 'stop' });

export const open: StateMachine<{}, string> = { name: 'open', initial: 'a', nodes: { a: { transition: { anything: 'a' } } } };
new StateMachineRunner({ config: open, input: 'x' }).send({ type: 'whatever', data: 1 });

export const event: MachineEvent<{ by: string }, 'approve'> = { type: 'approve', data: { by: 'x' } };
