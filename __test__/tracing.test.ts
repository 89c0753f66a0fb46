// OpenTelemetry spans of runs, exported over OTLP/HTTP (JSON) to a collector that is a
// plain HTTP server in this process.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { context, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { configureTracing, Engine, flushTracing, runDag, shutdownTracing, StateMachineRunner } from 'ramus';

import { attr, otlpCollector, type Span } from './engine-fixtures';

let collector: Awaited<ReturnType<typeof otlpCollector>>;

beforeAll(async () => {
  collector = await otlpCollector();
  configureTracing({ endpoint: collector.endpoint, serviceName: 'ramus-tests', headers: { 'x-api-key': 'k1' } });
});

afterAll(async () => {
  await shutdownTracing();
  collector.close();
});

/** The spans of one trace, once exported. */
async function spansOf(traceId: string): Promise<Span[]> {
  await flushTracing();
  return collector.spans.filter((s) => s.traceId === traceId);
}

describe('tracing', () => {
  it('exports a span per run and node, nested runs under their step, errors and custom events, under a traceparent', async () => {
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    await runDag({
      traceparent: `00-${traceId}-00f067aa0ba902b7-01`,
      input: 1,
      dag: {
        name: 'research',
        tolerateFailures: true,
        nodes: {
          search: {
            info: { tool: true, model: 'fake' },
            run: async ({ emit }) => {
              emit('search:hits', { count: 3 });
              return 3;
            },
          },
          expand: {
            parents: ['search'],
            run: async () => runDag({ input: 0, dag: { name: 'inner', nodes: { x: { run: () => 5 } } } }),
          },
          broken: {
            parents: ['search'],
            run: () => {
              throw new Error('tool exploded');
            },
          },
        },
      },
    });
    const spans = await spansOf(traceId);
    const byName = (n: string) => spans.find((s) => s.name === n);
    const run = byName('invoke_workflow research')!;
    expect(run).toBeDefined();
    expect(run.parentSpanId).toBe('00f067aa0ba902b7');
    expect(attr(run, 'gen_ai.operation.name')).toBe('invoke_workflow');
    expect(attr(run, 'workflow.run.status')).toBe('finished');

    const tool = byName('execute_tool search')!;
    expect(tool.parentSpanId).toBe(run.spanId);
    expect(attr(tool, 'gen_ai.tool.name')).toBe('search');
    expect(attr(tool, 'workflow.step.info.model')).toBe('fake');
    expect(tool.events?.map((e) => e.name)).toEqual(['search:hits']);
    expect(BigInt(tool.endTimeUnixNano)).toBeGreaterThanOrEqual(BigInt(tool.startTimeUnixNano));

    const expand = byName('workflow.dag.node expand')!;
    const inner = byName('invoke_workflow inner')!;
    expect(inner.parentSpanId).toBe(expand.spanId);
    expect(byName('workflow.dag.node x')!.parentSpanId).toBe(inner.spanId);

    const broken = byName('workflow.dag.node broken')!;
    expect(broken.status).toMatchObject({ code: 2, message: 'tool exploded' });
    expect(collector.headers.at(-1)!['x-api-key']).toBe('k1');
  });

  it('a machine is an agent: a span per state visit, transitions as events', async () => {
    const m = new StateMachineRunner({
      input: 0,
      traceparent: `00-${'c'.repeat(32)}-${'d'.repeat(16)}-01`,
      config: {
        name: 'loop',
        initial: 'think',
        nodes: {
          think: { run: ({ input }) => (input as number) + 1, transition: { '': [{ state: 'think', condition: ({ output }) => output < 3 }, { state: 'done' }] } },
          done: { final: true },
        },
      },
    });
    await m.run();
    await m.finished;
    const spans = await spansOf('c'.repeat(32));
    const agent = spans.find((s) => s.name === 'invoke_agent loop')!;
    expect(attr(agent, 'gen_ai.agent.name')).toBe('loop');
    expect(spans.filter((s) => s.name === 'workflow.state_machine.state think' && s.parentSpanId === agent.spanId)).toHaveLength(3);
    const moves = agent.events!.filter((e) => e.name === 'workflow.state_machine.transition');
    expect(moves.map((e) => Object.values(e.attributes.find((a) => a.key === 'workflow.state_machine.to')!.value)[0])).toEqual(['think', 'think', 'done']);
  });

  it("joins the caller's active OpenTelemetry span", async () => {
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
    const sc = { traceId: 'e'.repeat(32), spanId: 'f'.repeat(16), traceFlags: 1 };
    await context.with(trace.setSpan(context.active(), trace.wrapSpanContext(sc)), () =>
      runDag({ input: null, dag: { name: 'joined', nodes: { a: { run: () => 1 } } } }),
    );
    const spans = await spansOf('e'.repeat(32));
    expect(spans.find((s) => s.name === 'invoke_workflow joined')?.parentSpanId).toBe('f'.repeat(16));
    context.disable();
  });

  it("a durable run's row carries its trace and span ids", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ramus-trace-'));
    const engine = new Engine({ db: path.join(dir, 'runs.sqlite') });
    engine.register('one', () => 1);
    const run = engine.start({ name: 'stored', nodes: { a: { runner: 'one' } } }, { traceparent: `00-${'1'.repeat(32)}-${'2'.repeat(16)}-01` });
    await run.finished;
    engine.flush();
    const row = engine.run(run.runId)!;
    await engine.close();
    const spans = await spansOf('1'.repeat(32));
    const span = spans.find((s) => s.name === 'invoke_workflow stored')!;
    expect(row.traceId).toBe('1'.repeat(32));
    expect(row.spanId).toBe(span.spanId);
  });

  it('rejects an endpoint that is not an http URL, naming it', () => {
    expect(() => configureTracing({ endpoint: 'grpc://collector:4317' })).toThrow(/must be an http:\/\/ URL.*grpc:\/\/collector:4317/);
  });
});
