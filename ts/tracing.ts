import { native, plain } from './native';

/** Where spans go: an OTLP/HTTP collector (JSON encoding). */
export interface TracingOptions {
  /** The traces URL, e.g. `http://127.0.0.1:4318/v1/traces` (an OpenTelemetry Collector, Jaeger, …). */
  endpoint: string;
  /** `service.name` of the exported resource; default `'ramus'`. */
  serviceName?: string;
  /** Sent with every export (an API key, …). */
  headers?: Record<string, string>;
  /** Export timeout in ms (default 3000, at most 4500). */
  timeout?: number;
}

let on = false;

/**
 * Export OpenTelemetry spans of every run created from now on: one per run
 * (`invoke_workflow <dag>`, `invoke_agent <machine>`), one per DAG node or state visit
 * (`workflow.dag.node <name>`, `workflow.state_machine.state <name>`, or `execute_tool <name>`
 * for nodes whose `info` says `tool: true`), custom events and transitions as span events.
 * Spans join the caller's trace: the active OpenTelemetry span (when `@opentelemetry/api` is
 * installed and a context manager is registered), or a `traceparent` run option.
 */
export function configureTracing(options: TracingOptions): void {
  if (options === null || typeof options !== 'object' || typeof options.endpoint !== 'string') {
    throw new TypeError('configureTracing({ endpoint }): endpoint must be the OTLP/HTTP traces URL');
  }
  plain(() => native.configureTracing(options.endpoint, options.serviceName, options.headers, options.timeout));
  on = true;
}

/** Export the spans ended so far; rejects when the collector cannot be reached. */
export async function flushTracing(): Promise<void> {
  try {
    await native.flushTracing();
  } catch (err) {
    throw new Error((err as Error).message);
  }
}

/** Flush and stop exporting: runs created afterwards record no spans. */
export async function shutdownTracing(): Promise<void> {
  on = false;
  try {
    await native.shutdownTracing();
  } catch (err) {
    throw new Error((err as Error).message);
  }
}

/** Whether runs created now record spans. */
export function tracingOn(): boolean {
  return on;
}

type OtelApi = {
  trace: { getActiveSpan(): { spanContext(): { traceId: string; spanId: string; traceFlags: number } } | undefined };
  isSpanContextValid(sc: unknown): boolean;
};
let otel: OtelApi | null | undefined;

/** The W3C traceparent of the caller's active OpenTelemetry span, if `@opentelemetry/api` is installed and one is active. */
export function activeTraceparent(): string | undefined {
  if (otel === undefined) {
    try {
      // Optional: only the caller's own OpenTelemetry setup can make a span active.
      otel = require('@opentelemetry/api') as OtelApi;
    } catch {
      otel = null;
    }
  }
  const sc = otel?.trace.getActiveSpan()?.spanContext();
  if (!sc || !otel!.isSpanContextValid(sc)) return undefined;
  return `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 1) === 1 ? '01' : '00'}`;
}
