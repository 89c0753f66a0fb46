import { CompiledDag } from './dag';
import type { Dag, DagNodeState } from './dag-types';
import type { AnyStateMachine } from './machine-types';

/** Options of `toMermaid`. */
export interface ToMermaidOptions {
  /** DAGs only: node states by node name (for example from a runner's `nodeState(name)`);
   * each named node is coloured by its state. */
  states?: Readonly<Record<string, DagNodeState>>;
  /** State machines only: the states a run visited, in order. Visited states are highlighted
   * and labelled with their visit count (`draft ×3`); the last one is marked as current. */
  path?: readonly string[];
  /** A title above the diagram (Mermaid front matter); default: the definition's `name`;
   * `false` or `''`: no title. */
  title?: string | false;
}

/** Anything `toMermaid` draws: a DAG definition, a `CompiledDag` or a state machine config. */
export type MermaidSource = Dag<any, any, any> | CompiledDag<any, any, any> | AnyStateMachine;

/** Styles of the DAG node states, in the order their `classDef`s are written. */
const DAG_STATE_STYLES: Record<DagNodeState, string> = {
  waiting: 'fill:#ffffff,stroke:#adb5bd,color:#212529',
  ready: 'fill:#f8f9fa,stroke:#495057,color:#212529',
  pendingSemaphore: 'fill:#fff3cd,stroke:#ffc107,color:#664d03',
  running: 'fill:#cfe2ff,stroke:#0d6efd,color:#084298',
  finished: 'fill:#d1e7dd,stroke:#198754,color:#0f5132',
  error: 'fill:#f8d7da,stroke:#dc3545,color:#842029',
  cancelled: 'fill:#e2e3e5,stroke:#6c757d,color:#41464b',
  retrying: 'fill:#ffe5d0,stroke:#fd7e14,color:#653208',
};
const DAG_STATES = Object.keys(DAG_STATE_STYLES) as DagNodeState[];

const VISITED_STYLE = 'fill:#cfe2ff,stroke:#0d6efd,color:#084298';
const CURRENT_STYLE = 'fill:#cfe2ff,stroke:#084298,stroke-width:3px,color:#084298';

const USAGE = 'toMermaid expects a DAG ({ name, nodes }), a CompiledDag or a state machine config ({ name, initial, nodes })';

/**
 * Mermaid source for a DAG (`flowchart LR`) or a state machine (`stateDiagram-v2`).
 *
 * Node and state ids are generated (`n0`, `n1`, … / `s0`, `s1`, …); every name, event type and
 * duration taken from the definition is written as an escaped label, so any name yields valid
 * Mermaid that cannot add directives, comments or markup. Throws a `TypeError` when
 * `definition` is neither kind or refers to a node or state that does not exist.
 *
 * ```ts
 * toMermaid(dag, { states: { plan: 'finished', web: 'running' } });
 * toMermaid(machine, { path: ['draft', 'draft', 'review'] });
 * ```
 */
export function toMermaid(definition: MermaidSource, options: ToMermaidOptions = {}): string {
  const def: unknown = definition instanceof CompiledDag ? definition.config : definition;
  if (!isObject(def)) throw new TypeError(`${USAGE}; got ${describe(def)}`);
  if (!isObject(def.nodes)) throw new TypeError(`${USAGE}; got an object without nodes`);
  if (!isObject(options)) throw new TypeError('toMermaid options must be an object');
  const title = options.title === undefined ? (typeof def.name === 'string' ? def.name : undefined) : options.title;
  if (title !== undefined && title !== false && typeof title !== 'string') {
    throw new TypeError('toMermaid options.title must be a string or false');
  }
  const lines: string[] = [];
  if (typeof title === 'string' && title !== '') lines.push('---', `title: ${yamlString(title)}`, '---');
  if (looksLikeMachine(def)) machineLines(def, def.nodes, options, lines);
  else dagLines(def.nodes, options, lines);
  return `${lines.join('\n')}\n`;
}

function dagLines(nodes: Record<string, unknown>, options: ToMermaidOptions, out: string[]): void {
  if (options.path !== undefined) throw new TypeError('toMermaid options.path applies to state machines, not DAGs');
  const names = Object.keys(nodes);
  if (names.length === 0) throw new TypeError('DAG has no nodes');
  const ids = new Map(names.map((name, i) => [name, `n${i}`]));
  out.push('flowchart LR');
  for (const name of names) out.push(`  ${ids.get(name)}["${label(name)}"]`);
  for (const name of names) {
    const node = nodes[name];
    if (!isObject(node)) throw new TypeError(`Node '${name}' must be an object`);
    const parents = node.parents;
    if (parents === undefined || parents === null) continue;
    if (!Array.isArray(parents)) throw new TypeError(`Node '${name}' parents must be an array of node names`);
    for (const parent of new Set<unknown>(parents)) {
      if (typeof parent !== 'string') throw new TypeError(`Node '${name}' has a parent that is not a node name: ${String(parent)}`);
      const from = ids.get(parent);
      if (from === undefined) throw new TypeError(`Node '${name}' has unknown parent '${parent}'`);
      out.push(`  ${from} --> ${ids.get(name)}`);
    }
  }
  const { states } = options;
  if (states === undefined) return;
  if (!isObject(states)) throw new TypeError('toMermaid options.states must be an object of node states by node name');
  const byState = new Map<DagNodeState, string[]>();
  for (const [name, state] of Object.entries(states)) {
    const id = ids.get(name);
    if (id === undefined) throw new TypeError(`toMermaid options.states names unknown node '${name}'`);
    if (state === undefined) continue;
    if (!(DAG_STATES as unknown[]).includes(state)) {
      throw new TypeError(`toMermaid options.states: node '${name}' has unknown state ${JSON.stringify(state)} (expected ${DAG_STATES.join(', ')})`);
    }
    const list = byState.get(state) ?? [];
    list.push(id);
    byState.set(state, list);
  }
  for (const state of DAG_STATES) {
    const list = byState.get(state);
    if (list === undefined) continue;
    list.sort((a, b) => Number(a.slice(1)) - Number(b.slice(1)));
    out.push(`  classDef ${state} ${DAG_STATE_STYLES[state]}`, `  class ${list.join(',')} ${state}`);
  }
}

function machineLines(config: Record<string, unknown>, nodes: Record<string, unknown>, options: ToMermaidOptions, out: string[]): void {
  if (options.states !== undefined) throw new TypeError('toMermaid options.states applies to DAGs, not state machines');
  const names = Object.keys(nodes);
  const ids = new Map(names.map((name, i) => [name, `s${i}`]));
  const target = (name: unknown, what: string): string => {
    if (typeof name !== 'string') throw new TypeError(`${what} must be a state name`);
    const id = ids.get(name);
    if (id === undefined) throw new TypeError(`${what} ${name} does not exist`);
    return id;
  };
  const initial = config.initial;
  if (initial === undefined || initial === null || initial === '') throw new TypeError('No initial state');
  const initialId = target(initial, 'Initial state');
  const machineError = config.errorState == null ? undefined : target(config.errorState, 'Error state');

  const visits = new Map<string, number>();
  const path = options.path;
  if (path !== undefined) {
    if (!Array.isArray(path)) throw new TypeError('toMermaid options.path must be an array of state names');
    for (const state of path) {
      const id = target(state, 'toMermaid options.path: state');
      visits.set(id, (visits.get(id) ?? 0) + 1);
    }
  }

  out.push('stateDiagram-v2');
  for (const name of names) {
    const id = ids.get(name)!;
    const count = visits.get(id);
    out.push(`  state "${label(name)}${count === undefined ? '' : ` ×${count}`}" as ${id}`);
  }
  out.push(`  [*] --> ${initialId}`);
  for (const name of names) {
    const id = ids.get(name)!;
    const node = nodes[name];
    if (!isObject(node)) throw new TypeError(`State ${name} must be an object`);
    const edge = (to: string, text: string) => out.push(`  ${id} --> ${to}${text === '' ? '' : ` : ${text}`}`);
    const t = node.transition;
    if (typeof t === 'string') {
      edge(target(t, `State ${name} Transition target`), '');
    } else if (t !== undefined && t !== null) {
      if (!isObject(t)) throw new TypeError(`State ${name} transition must be a state name or an object of events`);
      for (const [event, value] of Object.entries(t)) {
        for (const item of Array.isArray(value) ? value : [value]) {
          if (typeof item === 'string') {
            edge(target(item, `State ${name} Transition target`), event === '' ? '' : label(event));
            continue;
          }
          if (!isObject(item) || typeof item.state !== 'string') {
            throw new TypeError(`State ${name} transition for event '${event}' must name a state`);
          }
          const parts: string[] = [];
          if (event !== '') parts.push(label(event));
          if (item.condition != null) parts.push('[guarded]');
          if (item.delay != null) parts.push(`after ${duration(item.delay)}`);
          edge(target(item.state, `State ${name} Transition target`), parts.join(' '));
        }
      }
    }
    const timeout = node.timeout;
    if (timeout !== undefined && timeout !== null) {
      if (!isObject(timeout) || typeof timeout.state !== 'string') throw new TypeError(`State ${name} timeout must be { after, state }`);
      const after = timeout.after == null ? '' : ` after ${duration(timeout.after)}`;
      edge(target(timeout.state, `State ${name} timeout target`), `timeout${after}`);
    }
    if (node.errorState != null) edge(target(node.errorState, `State ${name} error state`), 'error');
    if (node.final === true) out.push(`  ${id} --> [*]`);
  }
  if (machineError !== undefined) out.push(`  note right of ${machineError} : entered when a state throws`);

  if (visits.size > 0) {
    const last = target(path![path!.length - 1], 'toMermaid options.path: state');
    const visited = [...visits.keys()].filter((id) => id !== last).sort((a, b) => Number(a.slice(1)) - Number(b.slice(1)));
    if (visited.length > 0) out.push(`  classDef visited ${VISITED_STYLE}`, `  class ${visited.join(',')} visited`);
    out.push(`  classDef current ${CURRENT_STYLE}`, `  class ${last} current`);
  }
}

/** A config is a machine when it has an initial state or anything only machines have. */
function looksLikeMachine(def: Record<string, unknown>): boolean {
  if (def.initial !== undefined || def.errorState !== undefined || def.maxSteps !== undefined) return true;
  for (const node of Object.values(def.nodes as Record<string, unknown>)) {
    if (isObject(node) && ['transition', 'final', 'timeout', 'errorState', 'maxVisits'].some((k) => node[k] !== undefined)) {
      return true;
    }
  }
  return false;
}

function duration(d: unknown): string {
  return typeof d === 'number' ? `${label(String(d))}ms` : label(String(d));
}

/** Characters written as themselves in a label; everything else in ASCII is an entity code. */
const PLAIN = /^[A-Za-z0-9 _.,!?'*+\-/=@^~]$/;
const NAMED: Readonly<Record<string, string>> = { '"': '#quot;', '&': '#amp;', '<': '#lt;', '>': '#gt;' };

/** Non-ASCII code points written as entity codes: controls, line and paragraph separators,
 * BOM and non-characters, lone surrogates, and the two marker characters Mermaid uses
 * internally for entity codes (U+00B6, U+FB02), so a name cannot forge one. */
function unsafe(cp: number): boolean {
  return (
    cp <= 0x9f ||
    cp === 0xb6 ||
    cp === 0xfb02 ||
    cp === 0x2028 ||
    cp === 0x2029 ||
    cp === 0xfeff ||
    cp === 0xfffe ||
    cp === 0xffff ||
    (cp >= 0xd800 && cp <= 0xdfff)
  );
}

/** A name as Mermaid label text, for a quoted node or state label or a transition label:
 * quotes, brackets, `#`, `;`, `:`, `%`, braces, `<`, `>`, `&`, backticks, `$` and the like
 * become Mermaid entity codes (`#quot;`, `#35;`, …), newlines become `<br>`. */
function label(text: string): string {
  if (text === '') return '#32;'; // Mermaid rejects an empty quoted label
  let out = '';
  for (const ch of text.replace(/\r\n?/g, '\n')) {
    if (ch === '\n') {
      out += '<br>';
      continue;
    }
    const cp = ch.codePointAt(0)!;
    if (cp < 0x80) out += PLAIN.test(ch) ? ch : (NAMED[ch] ?? `#${cp};`);
    else if (unsafe(cp)) out += `#${cp >= 0xd800 && cp <= 0xdfff ? 0xfffd : cp};`;
    else out += ch;
  }
  return out;
}

/** A double-quoted YAML (and JSON) string for the front matter title; only plain characters
 * are written as themselves. */
function yamlString(text: string): string {
  let out = '"';
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    if (cp < 0x80 ? PLAIN.test(ch) : !unsafe(cp)) out += ch;
    else out += `\\u${(cp >= 0xd800 && cp <= 0xdfff ? 0xfffd : cp).toString(16).padStart(4, '0')}`;
  }
  return `${out}"`;
}

function isObject(value: unknown): value is Record<string, any> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}
