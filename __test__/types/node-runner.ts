// DagNodeRunner: its config, input, context and output are typed from its generics. Every
// `@ts-expect-error` must hit a real error.
import { DagNodeRunner, type RunnerResult } from 'ramus';

const parent = new DagNodeRunner<{ value: number }, string, {}, number>({
  name: 'parent',
  dagName: 'd',
  rootInput: 'root',
  context: { value: 1 },
  config: { run: ({ context, rootInput }) => context.value + rootInput.length },
});

const child = new DagNodeRunner<{ value: number }, string, { parent: number }, string>({
  name: 'child',
  dagName: 'd',
  rootInput: 'root',
  context: { value: 1 },
  autorun: () => false,
  config: { parents: ['parent'], run: ({ input }) => input.parent.toFixed(1) },
});

export async function use(): Promise<void> {
  parent.init([]);
  child.init([parent]);
  const ran: boolean = await parent.run();
  const { output } = await child.finished;
  const text: string = output;
  const result: RunnerResult<string> | undefined = child.result;
  child.on('finish', (e) => e.output.toUpperCase());
  child.on('state', (e) => e.state === 'ready');
  void [ran, text, result];

  // @ts-expect-error: the output is a string
  const wrong: number = output;
  void wrong;
  new DagNodeRunner<{ value: number }, string, { parent: number }, string>({
    name: 'bad',
    dagName: 'd',
    rootInput: 'root',
    context: { value: 1 },
    // @ts-expect-error: the parent's output is a number, which has no toUpperCase
    config: { parents: ['parent'], run: ({ input }) => input.parent.toUpperCase() },
  });
  // @ts-expect-error: not an event it emits
  child.on('done', () => {});
}
