// The Engine's types: registered runners' arguments, the keys stored definitions may name, and
// the runs `engine.start` returns. Every `@ts-expect-error` must hit a real error.
import { DagBuilder, DagRunner, Engine, StateMachineRunner, defineMachine, type EngineRun, type RegisteredRunnerArgs, type TransitionGuardInput } from 'ramus';

const llm = async (prompt: string) => `text for ${prompt}`;

// ---- register: arguments typed by context, tools from the engine's option ----

const engine = new Engine({ db: ':memory:', tools: { llm } }).register({
  draft: async ({ context, tools, rootInput, args, attempt, emit, isCancelled }) => {
    context.drafts += 1; // context is any: one runner serves every definition
    emit('drafting', { attempt, cancelled: isCancelled(), args });
    const text: string = await tools.llm(String(rootInput));
    // @ts-expect-error tools are the engine's: llm takes a string
    await tools.llm(42);
    // @ts-expect-error the engine's tools have no search
    tools.search('x');
    return text;
  },
  publish: ({ input, event }) => ({ text: String(input), by: String(event?.data.by) }),
  // Conditions and retryOn predicates registered among runners: their parameters are annotated.
  long: ({ output }: { output: string }) => output.length > 100,
  transient: (error: unknown) => error instanceof Error && error.message.startsWith('503'),
});

// A runner may narrow its arguments by annotating them.
export const typedArgs = new Engine({ db: ':memory:' }).register('fetch', ({ args, context }: RegisteredRunnerArgs<{ seen: number }, { url: string }>) => {
  context.seen += 1;
  return args.url.length;
});

// The key-and-function form, a condition by key.
export const one = new Engine({ db: ':memory:' })
  .register('echo', ({ input }) => input)
  .register('approved', (g: TransitionGuardInput<unknown, unknown>) => g.event?.type === 'approve');

// An unannotated function is a runner: runners get no `output`.
// @ts-expect-error a condition's parameter is annotated
new Engine({ db: ':memory:' }).register({ bad: ({ output }) => output });
// @ts-expect-error register takes functions
new Engine({ db: ':memory:' }).register({ notAFunction: 5 });

// ---- stored definitions are checked against the keys ----

engine.define({
  name: 'approval',
  initial: 'draft',
  context: { drafts: 0 },
  nodes: {
    draft: { runner: 'draft', retry: { attempts: 3, retryOn: 'transient' }, transition: { '': [{ state: 'review', condition: 'long' }, { state: 'draft' }] } },
    review: { transition: { approve: 'publish' } },
    publish: { runner: 'publish', final: true },
  },
});
// @ts-expect-error 'drat' is not a registered key
engine.define({ name: 'typo', nodes: { a: { runner: 'drat' } } });
// @ts-expect-error conditions name registered keys too
engine.define({ name: 'typo', initial: 'a', nodes: { a: { transition: { '': { state: 'a', condition: 'lng' } } } } });
// @ts-expect-error and so do retryOn predicates
engine.start({ name: 'typo', nodes: { a: { runner: 'draft', retry: { attempts: 2, retryOn: 'transent' } } } });

// An engine whose type knows no runners (`register` called as a statement) takes any key.
const untyped = new Engine({ db: ':memory:' });
untyped.register({ anything: () => 1 });
untyped.define({ name: 'free', nodes: { a: { runner: 'anything' }, b: { runner: 'not-checked' } } });
export const byName: EngineRun = untyped.start('free');
export const explicitOut: Promise<number> = untyped.start<number>('free').finished;

// ---- a typed machine of registered runners: durable, with its types ----

const approval = defineMachine<{ drafts: number }, string, { approve: { by: string }; reject: undefined }>()({
  name: 'approval',
  initial: 'draft',
  context: { drafts: 0 }, // the stored initial context: an object
  nodes: {
    draft: { runner: 'draft', args: { style: 'short' }, transition: { '': { state: 'review', condition: 'long' } } },
    review: { transition: { approve: 'publish', reject: 'draft' }, timeout: { after: '7d', state: 'publish' } },
    publish: { runner: 'publish', final: true },
  },
});
engine.define(approval);

export async function durable(): Promise<void> {
  const run = engine.start(approval, { input: 'rust', tags: ['blog'] });
  const typed: StateMachineRunner<{ drafts: number }, string, { text: string; by: string }, 'draft' | 'review' | 'publish', { approve: { by: string }; reject: undefined }> = run;
  const any: EngineRun = run; // a typed run is still an EngineRun
  const drafts: number = run.context.drafts;
  const post: { text: string; by: string } = await run.finished;
  run.send({ type: 'approve', data: { by: 'ann' } });
  run.send({ type: 'reject' });
  // @ts-expect-error only 'approve' and 'reject' are handled
  run.send({ type: 'aprove', data: { by: 'ann' } });
  // @ts-expect-error approve carries who approved
  run.send({ type: 'approve' });
  // @ts-expect-error the root input is a string
  engine.start(approval, { input: 42 });
  // @ts-expect-error finished resolves with publish's output
  const wrong: Promise<string> = run.finished;
  void [typed, any, drafts, post, wrong];
}

// @ts-expect-error a registered state holds no code: it would not be stored
defineMachine<{}, string>()({ name: 'mixed', initial: 'a', nodes: { a: { runner: 'draft', transition: 'b' }, b: { final: true, run: () => 1 } } });

defineMachine<{ n: number }, string>()({
  name: 'ctx',
  initial: 'a',
  // @ts-expect-error a stored machine's context is the object, not a function
  context: () => ({ n: 0 }),
  nodes: { a: { runner: 'draft', final: true } },
});

// @ts-expect-error a machine of registered runners needs an engine
new StateMachineRunner({ config: approval, input: 'x' });

const typo = defineMachine<{}, string>()({ name: 'typo', initial: 'a', nodes: { a: { runner: 'drat', final: true } } });
// @ts-expect-error 'drat' is not registered on this engine
engine.start(typo);

// ---- stored JSON and typed DAGs: their outputs ----

export async function outputs(): Promise<void> {
  const machine = engine.start({ name: 'm', initial: 'a', nodes: { a: { runner: 'draft', transition: { go: 'b' } }, b: { runner: 'publish', final: true } } });
  const m: { text: string; by: string } = await machine.finished;
  machine.send({ type: 'go' });
  // @ts-expect-error the machine handles 'go' only
  machine.send({ type: 'og' });

  // A literal's context is not narrowed to its initial values.
  engine.start({ name: 'ctx', initial: 'a', context: { drafts: 0 }, nodes: { a: { runner: 'draft', final: true } } }, { context: { drafts: 5 } });

  const dag = engine.start({ name: 'd', nodes: { a: { runner: 'draft' }, b: { runner: 'publish', parents: ['a'] }, c: { runner: 'draft', parents: ['a'] } } });
  const leaves: { b: { text: string; by: string }; c: string } = await dag.finished;
  const asDag: DagRunner = dag;

  const built = new DagBuilder<{ n: number }, string>('built')
    .node('len', { run: ({ rootInput }) => rootInput.length })
    .build();
  const b = engine.start(built, { input: 'abc', context: { n: 1 } });
  const len: number = await b.finished;
  // @ts-expect-error the DAG's input is a string
  engine.start(built, { input: 3 });
  // @ts-expect-error and its context a { n: number }
  engine.start(built, { input: 'x', context: { n: 'one' } });
  void [m, leaves, asDag, len];
}
