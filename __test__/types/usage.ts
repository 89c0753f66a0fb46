// Typed usage of the public surface, checked with `tsc --noEmit -p __test__/tsconfig.json` (strict).
// Every `@ts-expect-error` below must hit a real error: if the types were `any`, tsc would report
// "Unused '@ts-expect-error' directive" and the types test fails.
import { runDag, DagRunner, CompiledDag, analyzeDag, LocalSemaphore, CancelledError, acquireSemaphores, MESSAGE_FROM_USER } from 'ramus';
import type { Dag, MessageFromUserEvent, MessageToUserEvent, RamusErrorEvent, SemaphoreCount, SemaphoreReleaser } from 'ramus';

interface Ctx {
  count: number;
  log: string[];
}
interface Root {
  topic: string;
}

export const dag: Dag<Ctx, Root> = {
  name: 'typed',
  description: 'types test',
  tags: ['t'],
  info: { owner: 'tests' },
  context: () => ({ count: 0, log: [] }),
  nodes: {
    first: {
      tags: ['x'],
      run: ({ context, rootInput, isCancelled, exitIfCancelled, emit }) => {
        const n: number = context.count;
        const topic: string = rootInput.topic;
        const cancelled: boolean = isCancelled();
        exitIfCancelled();
        emit('my:event', { n });
        emit('my:bare');
        // @ts-expect-error count is a number, not a string
        const wrong: string = context.count;
        // @ts-expect-error the root input has no such field
        const missing = rootInput.missing;
        // @ts-expect-error the context has no such field
        context.nope = 1;
        // @ts-expect-error emit needs a string event type
        emit(42);
        // @ts-expect-error isCancelled returns a boolean
        const notString: string = isCancelled();
        return topic.length + n + (cancelled ? 1 : 0) + String(wrong).length + String(missing).length + notString.length;
      },
    },
    second: {
      parents: ['first'],
      semaphoreKey: 'llm',
      tolerateParentErrors: true,
      run: async ({ context, tools }) => {
        context.log.push('second');
        void tools;
        return 'done';
      },
    },
  },
};

// @ts-expect-error the default context must match Ctx
export const badContext: Dag<Ctx, Root> = { name: 'bad', context: () => ({ count: 'zero', log: [] }), nodes: { a: { run: () => 1 } } };

// @ts-expect-error a DAG needs a name
export const noName: Dag<Ctx, Root> = { nodes: { a: { run: () => 1 } } };

export async function useRunDag(): Promise<void> {
  await runDag({ dag, input: { topic: 'rust' } });
  await runDag({ dag, input: { topic: 'rust' }, context: { count: 1, log: [] }, name: 'n', tools: { fetch: () => 1 } });
  // @ts-expect-error input must match the DAG's root input type
  await runDag({ dag, input: { topic: 42 } });
  // @ts-expect-error context must match the DAG's context type
  await runDag({ dag, input: { topic: 'x' }, context: { count: 'one', log: [] } });

  const compiled = new CompiledDag(dag);
  await runDag({ dag: compiled, input: { topic: 'y' } });
  // @ts-expect-error a CompiledDag keeps its root input type
  await runDag({ dag: compiled, input: { nope: true } });

  const sem = new LocalSemaphore({ llm: 2 });
  await runDag({ dag, input: { topic: 'x' }, semaphores: [sem], autorun: () => true });
}

export async function useRunner(): Promise<void> {
  const runner = new DagRunner({ dag, input: { topic: 'z' }, autorun: () => false });
  const state: 'waiting' | 'ready' | 'pendingSemaphore' | 'running' | 'cancelled' | 'error' | 'finished' | 'retrying' =
    runner.nodeState('first');
  // @ts-expect-error nodeState returns one of the node states only
  const badState: 'bogus' = runner.nodeState('first');
  const ran: boolean = await runner.runNode('first');
  // @ts-expect-error runNode resolves a boolean
  const ranWrong: string = await runner.runNode('first');
  const finished: Promise<unknown> = runner.finished;
  runner.on('event', (e) => {
    const id: string = e.id;
    const runId: string = e.runId;
    const stepId: string = e.stepId;
    const time: number = e.time;
    const type: string = e.type;
    const source: string = e.source;
    const sourceNode: string = e.sourceNode;
    void [id, runId, stepId, time, type, source, sourceNode];
  });
  runner.on('dag:state', ({ sourceNode, state: s }) => {
    const n: string = sourceNode;
    const st: string = s;
    void [n, st];
  });
  runner.on('finish', () => {});
  runner.on('ramus:error', ({ error, fatal }: RamusErrorEvent) => {
    const e: unknown = error;
    const f: boolean = fatal;
    void [e, f];
  });
  runner.on('cancelled', () => {});
  runner.cancel();
  void [state, badState, ran, ranWrong, finished, runner.output];
  // @ts-expect-error DagRunner needs the root input
  new DagRunner({ dag });
}

export async function useSemaphore(): Promise<void> {
  const sem = new LocalSemaphore({ llm: 2, search: 5 });
  await sem.acquire('llm');
  sem.release('llm');
  sem.setLimit('llm', 3);
  const cur: number = sem.current('llm');
  const r: number = await sem.run('llm', async () => 5);
  const s: string = await sem.run('llm', () => 'sync');
  // @ts-expect-error run resolves with the function result type
  const wrong: string = await sem.run('llm', async () => 5);
  // @ts-expect-error keys are strings
  await sem.acquire(1);
  const count: SemaphoreCount | undefined = sem.counts.get('llm');
  const held: number | undefined = count?.current;
  // @ts-expect-error counts is a view: it cannot be changed
  sem.counts.set('llm', { limit: 1, current: 0, pending: 0 });
  const release: SemaphoreReleaser = await acquireSemaphores([sem, new LocalSemaphore()], 'llm');
  await release();
  // @ts-expect-error acquireSemaphores takes a list of semaphores
  await acquireSemaphores(sem, 'llm');
  void [cur, r, s, wrong, held];
}

export function useChat(toUser: MessageToUserEvent, fromUser: MessageFromUserEvent): void {
  const type: 'chat' = MESSAGE_FROM_USER;
  const text: string = toUser.data.text;
  const replace: boolean | undefined = toUser.data.replace;
  const button: string | undefined = fromUser.buttonId;
  // @ts-expect-error a message to the user has text
  const bad: MessageToUserEvent['data'] = { id: 'x' };
  void [type, text, replace, button, bad];
}

export function useMisc(): void {
  const e: Error = new CancelledError();
  const { rootNodes, leafNodes } = analyzeDag(dag.nodes);
  const rn: string[] = rootNodes;
  const ln: string[] = leafNodes;
  // @ts-expect-error leafNodes is a string array
  const bad: number[] = leafNodes;
  void [e, rn, ln, bad];
}

export const retried: Dag<Ctx, Root> = {
  name: 'retried',
  nodes: {
    fetch: {
      retry: { attempts: 3, backoff: 'fixed', initial: '1s', max: 5000, jitter: true, retryOn: (e) => e instanceof TypeError },
      timeout: '30s',
      run: ({ attempt }) => {
        const n: number = attempt;
        // @ts-expect-error attempt is a number
        const s: string = attempt;
        return [n, s];
      },
    },
    // @ts-expect-error backoff is 'fixed' or 'exponential'
    other: { run: () => 1, retry: { attempts: 2, backoff: 'linear' } },
    // @ts-expect-error retry needs attempts
    third: { run: () => 1, retry: { initial: 10 } },
  },
};
