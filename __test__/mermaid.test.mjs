import { describe, test, expect, beforeAll } from 'vitest';
import { toMermaid, CompiledDag, DagRunner, StateMachineRunner } from 'ramus';
import { readFileSync } from 'node:fs';
import { settle } from './helpers.mjs';

const noop = () => {};
const yes = () => true;

const researchDag = () => ({
  name: 'research',
  nodes: {
    plan: { run: noop },
    web: { parents: ['plan'], semaphoreKey: 'search', run: noop },
    news: { parents: ['plan'], semaphoreKey: 'search', run: noop },
    summarize: { parents: ['web', 'news'], run: noop },
  },
});

const writerMachine = () => ({
  name: 'writer',
  initial: 'draft',
  errorState: 'failed',
  nodes: {
    draft: { run: noop, transition: { '': [{ state: 'draft', condition: yes }, { state: 'review' }] } },
    review: {
      timeout: { after: '2h', state: 'escalate' },
      transition: { approve: 'send', reject: 'draft', remind: { state: 'review', delay: '90s' }, nudge: { state: 'review', delay: 500 } },
    },
    send: { final: true, errorState: 'draft' },
    escalate: { final: true },
    failed: { final: true },
  },
});

const lines = (...ls) => `${ls.join('\n')}\n`;

// Characters a label may hold as themselves: the plain ASCII set, entity codes, `<br>`, and
// non-ASCII code points other than those written as entity codes.
const SAFE_LABEL = /^(?:[A-Za-z0-9 _.,!?'*+\-/=@^~]|#[A-Za-z0-9]+;|<br>|[^\x00-\x9f\u00b6\ufb02\u2028\u2029\ufeff\ufffe\uffff\ud800-\udfff])*$/u;

const HOSTILE = [
  'say "hi"',
  'a"]; click n0 call alert(1) %%',
  '%%{init: {"theme":"dark"}}%%',
  '%%{ init: { "securityLevel": "loose" } }%%',
  'line1\nline2',
  'cr\r\nlf\rmac',
  '<img src=x onerror=alert(1)>',
  '<script>alert(1)</script>',
  '[*]',
  '-->',
  'end',
  'state',
  'note right of s0 : pwned',
  'classDef x fill:#f00;',
  'style n0 fill:#f00;',
  'x #quot; y #35; z',
  'a;b:c::d',
  '`**md**`',
  '$$x^2$$',
  'a & b &amp; c',
  '(round) [square] {curly} |pipe| \\back',
  'résumé → 日本語 🚀 Straße',
  'ﬂ°°60¶ß',
  '\u2028sep\u2029\u0085nel\u0000nul\ttab\u007f',
  '\ud800 lone \udc00',
  '',
  '  spaced  ',
  '__proto__',
  'constructor',
  '---',
];

describe('toMermaid: DAGs', () => {
  test('a small DAG: flowchart LR, generated ids, quoted labels, parent --> child edges', () => {
    expect(toMermaid(researchDag())).toBe(
      lines(
        '---',
        'title: "research"',
        '---',
        'flowchart LR',
        '  n0["plan"]',
        '  n1["web"]',
        '  n2["news"]',
        '  n3["summarize"]',
        '  n0 --> n1',
        '  n0 --> n2',
        '  n1 --> n3',
        '  n2 --> n3',
      ),
    );
  });

  test('a CompiledDag draws like its definition', () => {
    const dag = researchDag();
    expect(toMermaid(new CompiledDag(dag))).toBe(toMermaid(dag));
  });

  test('options.title replaces the name; false or empty leaves the title out', () => {
    const dag = { name: 'one', nodes: { a: { run: noop } } };
    expect(toMermaid(dag, { title: 'Research agent' })).toBe(lines('---', 'title: "Research agent"', '---', 'flowchart LR', '  n0["a"]'));
    expect(toMermaid(dag, { title: false })).toBe(lines('flowchart LR', '  n0["a"]'));
    expect(toMermaid({ ...dag, name: '' })).toBe(lines('flowchart LR', '  n0["a"]'));
    expect(toMermaid({ nodes: dag.nodes })).toBe(lines('flowchart LR', '  n0["a"]'));
  });

  test('options.states colours nodes by state, one classDef per state used', () => {
    const out = toMermaid(researchDag(), {
      title: false,
      states: { summarize: 'waiting', news: 'pendingSemaphore', web: 'running', plan: 'finished' },
    });
    expect(out).toBe(
      lines(
        'flowchart LR',
        '  n0["plan"]',
        '  n1["web"]',
        '  n2["news"]',
        '  n3["summarize"]',
        '  n0 --> n1',
        '  n0 --> n2',
        '  n1 --> n3',
        '  n2 --> n3',
        '  classDef waiting fill:#ffffff,stroke:#adb5bd,color:#212529',
        '  class n3 waiting',
        '  classDef pendingSemaphore fill:#fff3cd,stroke:#ffc107,color:#664d03',
        '  class n2 pendingSemaphore',
        '  classDef running fill:#cfe2ff,stroke:#0d6efd,color:#084298',
        '  class n1 running',
        '  classDef finished fill:#d1e7dd,stroke:#198754,color:#0f5132',
        '  class n0 finished',
      ),
    );
  });

  test('every state has its colour: finished green, error red, running blue, cancelled grey, pendingSemaphore amber', () => {
    const nodes = Object.fromEntries(['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'].map((n) => [n, { run: noop }]));
    const out = toMermaid(
      { name: 'all', nodes },
      {
        title: false,
        states: { a: 'finished', b: 'error', c: 'running', d: 'cancelled', e: 'waiting', f: 'ready', g: 'pendingSemaphore', h: 'finished' },
      },
    );
    const defs = Object.fromEntries(
      out
        .split('\n')
        .filter((l) => l.startsWith('  classDef '))
        .map((l) => l.trim().split(' ').slice(1)),
    );
    expect(defs.finished).toContain('fill:#d1e7dd'); // green
    expect(defs.error).toContain('fill:#f8d7da'); // red
    expect(defs.running).toContain('fill:#cfe2ff'); // blue
    expect(defs.cancelled).toContain('fill:#e2e3e5'); // grey
    expect(defs.pendingSemaphore).toContain('fill:#fff3cd'); // amber
    expect(defs.waiting).toContain('fill:#ffffff'); // neutral
    expect(defs.ready).toContain('fill:#f8f9fa'); // neutral
    expect(out).toContain('  class n0,n7 finished\n');
    expect(out).toContain('  class n1 error\n');
  });

  test("a runner's nodeState after a failed run colours the diagram", async () => {
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
    const states = Object.fromEntries(Object.keys(dag.nodes).map((n) => [n, runner.nodeState(n)]));
    expect(toMermaid(dag, { states })).toBe(
      lines(
        '---',
        'title: "states"',
        '---',
        'flowchart LR',
        '  n0["ok"]',
        '  n1["bad"]',
        '  n2["child"]',
        '  n0 --> n1',
        '  n1 --> n2',
        '  classDef finished fill:#d1e7dd,stroke:#198754,color:#0f5132',
        '  class n0 finished',
        '  classDef error fill:#f8d7da,stroke:#dc3545,color:#842029',
        '  class n1 error',
        '  classDef cancelled fill:#e2e3e5,stroke:#6c757d,color:#41464b',
        '  class n2 cancelled',
      ),
    );
  });
});

describe('toMermaid: state machines', () => {
  test('a small machine: stateDiagram-v2 with start, event, guarded, delayed, timeout, error and final edges', () => {
    expect(toMermaid(writerMachine())).toBe(
      lines(
        '---',
        'title: "writer"',
        '---',
        'stateDiagram-v2',
        '  state "draft" as s0',
        '  state "review" as s1',
        '  state "send" as s2',
        '  state "escalate" as s3',
        '  state "failed" as s4',
        '  [*] --> s0',
        '  s0 --> s0 : [guarded]',
        '  s0 --> s1',
        '  s1 --> s2 : approve',
        '  s1 --> s0 : reject',
        '  s1 --> s1 : remind after 90s',
        '  s1 --> s1 : nudge after 500ms',
        '  s1 --> s3 : timeout after 2h',
        '  s2 --> s0 : error',
        '  s2 --> [*]',
        '  s3 --> [*]',
        '  s4 --> [*]',
        '  note right of s4 : entered when a state throws',
      ),
    );
  });

  test('a transition given as a plain state name, and a guarded delayed event', () => {
    const out = toMermaid({
      name: 'm',
      initial: 'a',
      nodes: {
        a: { transition: 'b' },
        b: { transition: { go: [{ state: 'c', condition: yes, delay: '15m' }, 'a'] } },
        c: { final: true },
      },
    });
    expect(out).toBe(
      lines(
        '---',
        'title: "m"',
        '---',
        'stateDiagram-v2',
        '  state "a" as s0',
        '  state "b" as s1',
        '  state "c" as s2',
        '  [*] --> s0',
        '  s0 --> s1',
        '  s1 --> s2 : go [guarded] after 15m',
        '  s1 --> s0 : go',
        '  s2 --> [*]',
      ),
    );
  });

  test('options.path highlights the visited states with visit counts and marks the last one current', () => {
    const out = toMermaid(writerMachine(), { title: false, path: ['draft', 'draft', 'draft', 'review', 'send'] });
    expect(out).toBe(
      lines(
        'stateDiagram-v2',
        '  state "draft ×3" as s0',
        '  state "review ×1" as s1',
        '  state "send ×1" as s2',
        '  state "escalate" as s3',
        '  state "failed" as s4',
        '  [*] --> s0',
        '  s0 --> s0 : [guarded]',
        '  s0 --> s1',
        '  s1 --> s2 : approve',
        '  s1 --> s0 : reject',
        '  s1 --> s1 : remind after 90s',
        '  s1 --> s1 : nudge after 500ms',
        '  s1 --> s3 : timeout after 2h',
        '  s2 --> s0 : error',
        '  s2 --> [*]',
        '  s3 --> [*]',
        '  s4 --> [*]',
        '  note right of s4 : entered when a state throws',
        '  classDef visited fill:#cfe2ff,stroke:#0d6efd,color:#084298',
        '  class s0,s1 visited',
        '  classDef current fill:#cfe2ff,stroke:#084298,stroke-width:3px,color:#084298',
        '  class s2 current',
      ),
    );
    // An empty path highlights nothing.
    expect(toMermaid(writerMachine(), { path: [] })).toBe(toMermaid(writerMachine()));
  });

  test('the path of a real run, from its state_machine:transition events', async () => {
    const config = {
      name: 'loop',
      initial: 'draft',
      context: () => ({ n: 0 }),
      nodes: {
        draft: {
          run: ({ context }) => {
            context.n += 1;
            return context.n;
          },
          transition: { '': [{ state: 'draft', condition: ({ output }) => output < 3 }, { state: 'review' }] },
        },
        review: { transition: { approve: 'done' } },
        done: { final: true },
      },
    };
    const runner = new StateMachineRunner({ config, input: null });
    const path = [config.initial];
    runner.on('event', (e) => {
      if (e.type === 'state_machine:transition') path.push(e.data.to);
    });
    await runner.run();
    runner.send({ type: 'approve', data: null });
    await runner.finished;
    expect(path).toEqual(['draft', 'draft', 'draft', 'review', 'done']);
    const out = toMermaid(config, { path, title: false });
    expect(out).toContain('  state "draft ×3" as s0\n  state "review ×1" as s1\n  state "done ×1" as s2\n');
    expect(out).toContain('  class s0,s1 visited\n');
    expect(out).toContain('  class s2 current\n');
  });
});

describe('toMermaid: the README', () => {
  test("the Diagrams section shows the writer machine's real output", () => {
    const config = {
      name: 'writer',
      initial: 'draft',
      maxSteps: 50,
      errorState: 'failed',
      nodes: {
        draft: { run: noop, transition: { '': [{ state: 'draft', condition: yes }, { state: 'review' }] } },
        review: { timeout: { after: '2h', state: 'escalate' }, transition: { approve: 'send', reject: 'draft' } },
        send: { final: true, run: noop },
        escalate: { final: true },
        failed: { final: true },
      },
    };
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const section = readme.slice(readme.indexOf('## Diagrams'), readme.indexOf('## How it is built'));
    const shown = /\n```\n(---\n[\s\S]*?)```\n/.exec(section)[1];
    expect(shown).toBe(toMermaid(config, { path: ['draft', 'draft', 'review'] }));
  });
});

describe('toMermaid: escaping names from the definition', () => {
  test('quotes, markup, directives, comments and separators become entity codes; newlines <br>', () => {
    const name = 'say "hi" <b>#1</b>; 100% {x}: `y` & $z$';
    expect(toMermaid({ name: 'd', nodes: { [name]: { run: noop } } }, { title: false })).toBe(
      lines(
        'flowchart LR',
        '  n0["say #quot;hi#quot; #lt;b#gt;#35;1#lt;/b#gt;#59; 100#37; #123;x#125;#58; #96;y#96; #amp; #36;z#36;"]',
      ),
    );
    expect(toMermaid({ name: 'd', nodes: { '%%{init: {"theme":"dark"}}%%\nline 2': { run: noop } } }, { title: false })).toBe(
      lines('flowchart LR', '  n0["#37;#37;#123;init#58; #123;#quot;theme#quot;#58;#quot;dark#quot;#125;#125;#37;#37;<br>line 2"]'),
    );
  });

  test('unicode is kept; the characters Mermaid gives a meaning to are not', () => {
    expect(toMermaid({ name: 'd', nodes: { 'résumé → 日本語 🚀': { run: noop } } }, { title: false })).toBe(
      lines('flowchart LR', '  n0["résumé → 日本語 🚀"]'),
    );
    // U+FB02 and U+00B6 are Mermaid's internal entity markers; line separators, controls and lone surrogates.
    expect(toMermaid({ name: 'd', nodes: { 'ﬂ°°60¶ß\u2028\u0085\t\ud800': { run: noop } } }, { title: false })).toBe(
      lines('flowchart LR', '  n0["#64258;°°60#182;ß#8232;#133;#9;#65533;"]'),
    );
  });

  test('an empty name gets a blank label, since Mermaid rejects an empty one', () => {
    expect(toMermaid({ name: 'd', nodes: { '': { run: noop } } }, { title: false })).toBe(lines('flowchart LR', '  n0["#32;"]'));
  });

  test('machine state names, event types, delays and timeouts are escaped too', () => {
    const out = toMermaid({
      name: 'm"\n%%{init}%%',
      initial: 'a "1"',
      nodes: {
        'a "1"': {
          transition: { 'go: now; #1 -->': { state: 'b\n[*]', delay: '1s; click' } },
          timeout: { after: '2h%%', state: 'b\n[*]' },
        },
        'b\n[*]': { final: true },
      },
    }, { path: ['a "1"'] });
    expect(out).toBe(
      lines(
        '---',
        'title: "m\\u0022\\u000a\\u0025\\u0025\\u007binit\\u007d\\u0025\\u0025"',
        '---',
        'stateDiagram-v2',
        '  state "a #quot;1#quot; ×1" as s0',
        '  state "b<br>#91;*#93;" as s1',
        '  [*] --> s0',
        '  s0 --> s1 : go#58; now#59; #35;1 --#gt; after 1s#59; click',
        '  s0 --> s1 : timeout after 2h#37;#37;',
        '  s1 --> [*]',
        '  classDef current fill:#cfe2ff,stroke:#084298,stroke-width:3px,color:#084298',
        '  class s0 current',
      ),
    );
  });

  test('hostile names never break out of their labels (DAG and machine)', () => {
    const nodes = Object.fromEntries(HOSTILE.map((n, i) => [n, { run: noop, parents: i > 0 ? [HOSTILE[i - 1]] : undefined }]));
    const dag = toMermaid({ name: HOSTILE.join(' '), nodes });
    const dagLines = dag.split('\n');
    // Title (3) + header + one line per node + one per edge, and the final newline.
    expect(dagLines.length).toBe(3 + 1 + HOSTILE.length + (HOSTILE.length - 1) + 1);
    HOSTILE.forEach((_, i) => {
      const m = /^ {2}n(\d+)\["(.*)"\]$/.exec(dagLines[4 + i]);
      expect(m, dagLines[4 + i]).not.toBeNull();
      expect(Number(m[1])).toBe(i);
      expect(m[2]).toMatch(SAFE_LABEL);
    });
    expect(dag).not.toMatch(/[%{}\r\u2028\u2029]/);

    const states = Object.fromEntries(
      HOSTILE.map((n, i) => [n, i === HOSTILE.length - 1 ? { final: true } : { transition: { [HOSTILE[i]]: HOSTILE[i + 1] } }]),
    );
    const machine = toMermaid({ name: HOSTILE.join(' '), initial: HOSTILE[0], nodes: states }, { path: HOSTILE });
    const mLines = machine.split('\n');
    HOSTILE.forEach((_, i) => {
      const m = /^ {2}state "(.*) ×1" as s(\d+)$/.exec(mLines[4 + i]);
      expect(m, mLines[4 + i]).not.toBeNull();
      expect(m[1]).toMatch(SAFE_LABEL);
      expect(Number(m[2])).toBe(i);
    });
    const edges = mLines.filter((l) => /^ {2}s\d+ --> s\d+ : /.test(l));
    expect(edges.length).toBe(HOSTILE.length - 2); // the '' event has no label
    for (const e of edges) expect(e.replace(/^ {2}s\d+ --> s\d+ : /, '')).toMatch(SAFE_LABEL);
    expect(machine).not.toMatch(/[%{}\r\u2028\u2029]/);
  });
});

describe('toMermaid: input validation', () => {
  const usage = /^toMermaid expects a DAG \(\{ name, nodes \}\), a CompiledDag or a state machine config/;

  test('something that is neither a DAG nor a machine is a TypeError', () => {
    for (const bad of [undefined, null, 42, 'dag', [], () => {}, {}, { name: 'x' }, { name: 'x', nodes: null }, { name: 'x', nodes: [] }, { nodes: 'a' }]) {
      expect(() => toMermaid(bad), String(bad)).toThrow(TypeError);
      expect(() => toMermaid(bad), String(bad)).toThrow(usage);
    }
    expect(() => toMermaid(null)).toThrow(/got null$/);
    expect(() => toMermaid({ name: 'x' })).toThrow(/got an object without nodes$/);
  });

  test('dangling references and malformed nodes are TypeErrors', () => {
    const cases = [
      [{ name: 'd', nodes: {} }, 'DAG has no nodes'],
      [{ name: 'd', nodes: { a: 1 } }, "Node 'a' must be an object"],
      [{ name: 'd', nodes: { a: { parents: 'b' } } }, "Node 'a' parents must be an array of node names"],
      [{ name: 'd', nodes: { a: { parents: ['b'] } } }, "Node 'a' has unknown parent 'b'"],
      [{ name: 'm', nodes: { a: { final: true } } }, 'No initial state'],
      [{ name: 'm', initial: 'x', nodes: { a: {} } }, 'Initial state x does not exist'],
      [{ name: 'm', initial: 'a', errorState: 'x', nodes: { a: {} } }, 'Error state x does not exist'],
      [{ name: 'm', initial: 'a', nodes: { a: { transition: 'x' } } }, 'State a Transition target x does not exist'],
      [{ name: 'm', initial: 'a', nodes: { a: { transition: { go: { state: 'x' } } } } }, 'State a Transition target x does not exist'],
      [{ name: 'm', initial: 'a', nodes: { a: { transition: { go: {} } } } }, "State a transition for event 'go' must name a state"],
      [{ name: 'm', initial: 'a', nodes: { a: { timeout: { after: 1, state: 'x' } } } }, 'State a timeout target x does not exist'],
      [{ name: 'm', initial: 'a', nodes: { a: { timeout: 5 } } }, 'State a timeout must be { after, state }'],
      [{ name: 'm', initial: 'a', nodes: { a: { errorState: 'x' } } }, 'State a error state x does not exist'],
    ];
    for (const [def, message] of cases) expect(() => toMermaid(def), message).toThrow(new TypeError(message));
  });

  test('options are checked against the kind of definition', () => {
    const dag = researchDag();
    const m = writerMachine();
    expect(() => toMermaid(dag, null)).toThrow(new TypeError('toMermaid options must be an object'));
    expect(() => toMermaid(dag, { title: 5 })).toThrow(new TypeError('toMermaid options.title must be a string or false'));
    expect(() => toMermaid(dag, { path: ['plan'] })).toThrow(new TypeError('toMermaid options.path applies to state machines, not DAGs'));
    expect(() => toMermaid(m, { states: { draft: 'finished' } })).toThrow(new TypeError('toMermaid options.states applies to DAGs, not state machines'));
    expect(() => toMermaid(dag, { states: { nope: 'finished' } })).toThrow(new TypeError("toMermaid options.states names unknown node 'nope'"));
    expect(() => toMermaid(dag, { states: { plan: 'done' } })).toThrow(/^toMermaid options.states: node 'plan' has unknown state "done"/);
    expect(() => toMermaid(m, { path: 'draft' })).toThrow(new TypeError('toMermaid options.path must be an array of state names'));
    expect(() => toMermaid(m, { path: ['draft', 'nope'] })).toThrow(new TypeError('toMermaid options.path: state nope does not exist'));
  });
});

describe('toMermaid: the output parses with the real Mermaid parser', () => {
  let mermaid;

  beforeAll(async () => {
    // Mermaid sanitizes labels with DOMPurify, which needs a DOM: give it jsdom's window
    // before Mermaid (and DOMPurify) load.
    const { JSDOM } = await import('jsdom');
    globalThis.window = new JSDOM('').window;
    mermaid = (await import('mermaid')).default;
    mermaid.initialize({ startOnLoad: false });
  }, 60_000);

  /** Mermaid's db text back to the name: its entity markers, then `<br>`. */
  const NAMED = { quot: '"', amp: '&', lt: '<', gt: '>' };
  const decode = (text) =>
    text.replace(/\ufb02\u00b0\u00b0(\d+)\u00b6\u00df|\ufb02\u00b0(\w+)\u00b6\u00df|<br>/g, (_, num, name) =>
      num !== undefined ? String.fromCodePoint(Number(num)) : name !== undefined ? NAMED[name] : '\n',
    );
  /** What a name reads as once drawn: one kind of newline, lone surrogates replaced, a blank for ''. */
  const norm = (name) =>
    name.replace(/\r\n?/g, '\n').toWellFormed() || ' ';
  /** Mermaid trims labels. */
  const drawn = (name) => norm(name).trim();
  const titleOf = (text) => JSON.parse(/^title: (.*)$/m.exec(text)[1]);

  async function parse(text) {
    const result = await mermaid.parse(text);
    // No directive or front matter config got through: only the title is in the front matter.
    expect(result.config).toEqual({});
    const diagram = await mermaid.mermaidAPI.getDiagramFromText(text.replace(/^---\n[\s\S]*?\n---\n/, ''));
    return { type: result.diagramType, db: diagram.db };
  }

  test('the small DAG, with and without states', async () => {
    for (const options of [{}, { states: { plan: 'finished', web: 'error', news: 'cancelled', summarize: 'running' } }]) {
      const { type, db } = await parse(toMermaid(researchDag(), options));
      expect(type).toBe('flowchart-v2');
      expect([...db.getVertices().values()].map((v) => [v.id, v.text, v.classes])).toEqual([
        ['n0', 'plan', options.states ? ['finished'] : []],
        ['n1', 'web', options.states ? ['error'] : []],
        ['n2', 'news', options.states ? ['cancelled'] : []],
        ['n3', 'summarize', options.states ? ['running'] : []],
      ]);
      expect(db.getEdges().map((e) => [e.start, e.end])).toEqual([
        ['n0', 'n1'],
        ['n0', 'n2'],
        ['n1', 'n3'],
        ['n2', 'n3'],
      ]);
    }
  });

  test('every DAG state class', async () => {
    const all = ['waiting', 'ready', 'pendingSemaphore', 'running', 'cancelled', 'error', 'finished'];
    const nodes = Object.fromEntries(all.map((s) => [s, { run: noop }]));
    const { db } = await parse(toMermaid({ name: 'all', nodes }, { states: Object.fromEntries(all.map((s) => [s, s])) }));
    expect([...db.getClasses().keys()].sort()).toEqual([...all].sort());
    expect([...db.getVertices().values()].map((v) => v.classes[0])).toEqual(all);
  });

  test('the small machine, with a path', async () => {
    const { type, db } = await parse(toMermaid(writerMachine(), { path: ['draft', 'draft', 'review'] }));
    expect(type).toBe('stateDiagram');
    const states = db.getStates();
    expect(states.get('s0').descriptions).toEqual(['draft ×2']);
    expect(states.get('s0').classes).toEqual(['visited']);
    expect(states.get('s1').classes).toEqual(['current']);
    expect(states.get('s4').note.text.trim()).toBe('entered when a state throws');
    expect(db.getRelations().map((r) => [r.id1, r.id2, r.relationTitle])).toEqual([
      ['root_start', 's0', ''],
      ['s0', 's0', '[guarded]'],
      ['s0', 's1', ''],
      ['s1', 's2', 'approve'],
      ['s1', 's0', 'reject'],
      ['s1', 's1', 'remind after 90s'],
      ['s1', 's1', 'nudge after 500ms'],
      ['s1', 's3', 'timeout after 2h'],
      ['s2', 's0', 'error'],
      ['s2', 'root_end', ''],
      ['s3', 'root_end', ''],
      ['s4', 'root_end', ''],
    ]);
  });

  test('hostile names parse, inject no config, and read back exactly (DAG)', async () => {
    const nodes = Object.fromEntries(HOSTILE.map((n, i) => [n, { run: noop, parents: i > 0 ? [HOSTILE[i - 1]] : undefined }]));
    const title = `${HOSTILE.join(' | ')} %%{init: {"theme":"dark"}}%%`;
    const text = toMermaid({ name: title, nodes }, { states: { [HOSTILE[1]]: 'error', [HOSTILE[2]]: 'finished' } });
    expect(titleOf(text)).toBe(title.toWellFormed());
    const { db } = await parse(text);
    const vertices = [...db.getVertices().values()];
    expect(vertices.map((v) => v.id)).toEqual(HOSTILE.map((_, i) => `n${i}`));
    expect(vertices.map((v) => decode(v.text).trim())).toEqual(HOSTILE.map(drawn));
    expect(db.getEdges().length).toBe(HOSTILE.length - 1);
    expect([...db.getClasses().keys()].sort()).toEqual(['error', 'finished']);
  });

  test('hostile names parse, inject no config, and read back exactly (machine)', async () => {
    const states = Object.fromEntries(
      HOSTILE.map((n, i) => [
        n,
        i === HOSTILE.length - 1
          ? { final: true, errorState: HOSTILE[0] }
          : { transition: { [HOSTILE[i]]: { state: HOSTILE[i + 1], condition: yes, delay: HOSTILE[i] } }, timeout: { after: HOSTILE[i], state: HOSTILE[0] } },
      ]),
    );
    const text = toMermaid({ name: HOSTILE.join(' '), initial: HOSTILE[0], errorState: HOSTILE[3], nodes: states }, { path: HOSTILE });
    const { db } = await parse(text);
    const all = db.getStates();
    HOSTILE.forEach((name, i) => {
      const s = all.get(`s${i}`);
      expect(s.descriptions.map((d) => decode(d).trim())).toEqual([`${norm(name)} ×1`.trim()]);
    });
    const relations = db.getRelations();
    // start + (transition + timeout) per non-final state + the error edge + the final edge
    expect(relations.length).toBe(1 + 2 * (HOSTILE.length - 1) + 2);
    HOSTILE.slice(0, -1).forEach((name, i) => {
      const [edge, timeout] = relations.filter((r) => r.id1 === `s${i}`);
      const event = name === '' ? '' : `${norm(name)} `;
      expect(decode(edge.relationTitle).trim()).toBe(`${event}[guarded] after ${norm(name)}`.trim());
      expect(decode(timeout.relationTitle).trim()).toBe(`timeout after ${norm(name)}`.trim());
    });
  });

  test('a directive outside a label is seen by the parser (the check is real)', async () => {
    const res = await mermaid.parse('flowchart LR\n  n0["x"]\n%%{init: {"theme":"dark"}}%%');
    expect(res.config).toEqual({ theme: 'dark' });
    await expect(mermaid.parse('flowchart LR\n  n0["a"b"]')).rejects.toThrow(/Parse error/);
    await expect(mermaid.parse('stateDiagram-v2\n  state "" as s0')).rejects.toThrow(/Parse error/);
  });
});
