// The inspector's views as components another app can mount against its own API:
//
//   mountGraph(el, { run, steps, transitions, definition }, { onSelect })
//   mountTimeline(el, steps, { run, transitions, definition, children, loadChildSteps, onSelect })
//   mountStepPanel(el, { step, events, children }, { onOpenRun })
//   mountJson(el, value, { name, openDepth })
//
// Each returns `{ update(data), destroy() }`. The data shapes are the JSON that
// `NativeStore` reads return and the inspector's API serves (docs/inspector.md). Nothing
// here fetches: the host app does. Untrusted values are set as text only.
import dagre from './vendor/dagre.js';
import { badge, clear, duration, errorMessage, h, s, time } from './dom.js';

export { badge, duration, time } from './dom.js';

// ---------------------------------------------------------------------------------------
// JSON tree: collapsible, searchable, and lazy (children render when first opened, long
// arrays and objects a page at a time), so a large output costs only what is on screen.

const PAGE = 100;
const LONG_STRING = 400;

function kindOf(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

function preview(v) {
  if (Array.isArray(v)) return `[…] ${v.length} item${v.length === 1 ? '' : 's'}`;
  const n = Object.keys(v).length;
  return `{…} ${n} key${n === 1 ? '' : 's'}`;
}

function primitive(v, matchText) {
  const kind = kindOf(v);
  if (kind === 'string') {
    const full = JSON.stringify(v);
    const el = h('span', { class: 'j-string' });
    if (full.length > LONG_STRING && !(matchText && v.toLowerCase().includes(matchText))) {
      el.textContent = `${full.slice(0, LONG_STRING)}…`;
      const more = h('button', { class: 'link', text: `show all ${v.length} chars`, on: { click: () => {
        el.textContent = full;
      } } });
      return h('span', null, el, ' ', more);
    }
    el.textContent = full;
    return el;
  }
  return h('span', { class: `j-${kind}`, text: v === undefined ? 'undefined' : JSON.stringify(v) });
}

/** Paths (arrays of keys) of the values whose key or text contains `text`, at most `max`. */
function search(value, text, max = 200) {
  const found = [];
  const walk = (v, path) => {
    if (found.length >= max) return;
    if (v !== null && typeof v === 'object') {
      const entries = Array.isArray(v) ? v.map((x, i) => [i, x]) : Object.entries(v);
      for (const [k, x] of entries) {
        if (found.length >= max) return;
        const p = [...path, k];
        if (typeof k === 'string' && k.toLowerCase().includes(text)) found.push(p);
        else if (x === null || typeof x !== 'object') {
          if (String(x).toLowerCase().includes(text)) found.push(p);
        }
        walk(x, p);
      }
    } else if (path.length === 0 && String(v).toLowerCase().includes(text)) found.push(path);
  };
  walk(value, []);
  return found;
}

const pathKey = (path) => path.map(String).join('\u0000');

function jsonNode(key, value, path, depth, ctx) {
  const label = key === undefined ? null : h('span', { class: 'j-key', text: typeof key === 'number' ? `${key}` : key });
  const sep = label ? ': ' : null;
  const matched = ctx.matches.has(pathKey(path));
  if (value === null || typeof value !== 'object') {
    return h('div', { class: `j-row${matched ? ' j-match' : ''}` }, label, sep, primitive(value, ctx.text));
  }
  const entries = Array.isArray(value) ? value.map((x, i) => [i, x]) : Object.entries(value);
  const details = h('details', { class: `j-node${matched ? ' j-match' : ''}` });
  const summary = h('summary', null, label, sep, h('span', { class: 'j-preview', text: preview(value) }));
  details.appendChild(summary);
  let shown = 0;
  const body = h('div', { class: 'j-children' });
  const more = () => {
    const end = Math.min(entries.length, shown + PAGE);
    for (; shown < end; shown++) {
      const [k, x] = entries[shown];
      body.insertBefore(jsonNode(k, x, [...path, k], depth + 1, ctx), moreButton.isConnected ? moreButton : null);
    }
    if (shown < entries.length) {
      moreButton.textContent = `show ${Math.min(PAGE, entries.length - shown)} more of ${entries.length - shown}`;
      if (!moreButton.isConnected) body.appendChild(moreButton);
    } else moreButton.remove();
  };
  const moreButton = h('button', { class: 'link j-more', on: { click: more } });
  const render = () => {
    if (shown === 0 && entries.length > 0) {
      details.appendChild(body);
      more();
    }
  };
  details.addEventListener('toggle', () => {
    if (details.open) render();
  });
  const forced = ctx.open.has(pathKey(path));
  if (forced || (depth < ctx.openDepth && entries.length <= 50)) {
    details.open = true;
    render();
  }
  return details;
}

/** A collapsible, searchable JSON viewer. */
export function mountJson(el, value, options = {}) {
  const root = h('div', { class: 'json' });
  const tree = h('div', { class: 'j-tree' });
  const status = h('span', { class: 'j-status' });
  const input = h('input', { type: 'search', placeholder: 'search keys and values', class: 'j-search', 'aria-label': 'search JSON' });
  let current = value;
  const draw = () => {
    const text = input.value.trim().toLowerCase();
    const ctx = { matches: new Set(), open: new Set(), openDepth: options.openDepth ?? 1, text };
    if (text) {
      const found = search(current, text);
      for (const p of found) {
        ctx.matches.add(pathKey(p));
        for (let i = 0; i <= p.length - 1; i++) ctx.open.add(pathKey(p.slice(0, i)));
      }
      status.textContent = found.length >= 200 ? '200+ matches' : `${found.length} match${found.length === 1 ? '' : 'es'}`;
    } else status.textContent = '';
    clear(tree).appendChild(jsonNode(undefined, current, [], 0, ctx));
  };
  let pending;
  input.addEventListener('input', () => {
    clearTimeout(pending);
    pending = setTimeout(draw, 120);
  });
  const isTree = (v) => v !== null && typeof v === 'object';
  root.append(isTree(value) ? h('div', { class: 'j-tools' }, input, status) : '', tree);
  el.appendChild(root);
  draw();
  return {
    update(v) {
      current = v;
      draw();
    },
    destroy() {
      root.remove();
    },
  };
}

// ---------------------------------------------------------------------------------------
// Graph: a DAG left to right, or a state machine's states and transitions, laid out by dagre.

/** Above this many nodes the layout would freeze the page; the timeline still shows every step. */
export const MAX_GRAPH_NODES = 1500;

function lastByNode(steps) {
  const last = new Map();
  for (const st of steps) last.set(st.node, st);
  return last;
}

function configNodes(definition) {
  const nodes = definition?.config?.nodes;
  return nodes && typeof nodes === 'object' && !Array.isArray(nodes) ? nodes : undefined;
}

/**
 * Nodes and edges of a DAG run: from the stored definition's `parents`, else from the
 * parents its steps took (`step.parents`, the keys of each input).
 */
export function dagModel({ steps, definition }) {
  const cfg = configNodes(definition);
  const last = lastByNode(steps);
  const names = new Set([...(cfg ? Object.keys(cfg) : []), ...last.keys()]);
  const nodes = [...names].map((name) => {
    const st = last.get(name);
    return { id: name, label: name, status: st ? st.status : 'notRun', step: st, runs: steps.filter((x) => x.node === name).length };
  });
  const edges = [];
  if (cfg) {
    for (const [name, n] of Object.entries(cfg)) {
      for (const p of Array.isArray(n?.parents) ? n.parents : []) {
        if (names.has(p)) edges.push({ from: p, to: name, label: '', taken: 0 });
      }
    }
  } else {
    for (const [name, st] of last) {
      for (const p of Array.isArray(st.parents) ? st.parents : []) {
        if (names.has(p)) edges.push({ from: p, to: name, label: '', taken: 0 });
      }
    }
  }
  return { kind: 'dag', nodes, edges };
}

function configEdges(cfg) {
  const edges = [];
  for (const [name, n] of Object.entries(cfg)) {
    const t = n?.transition ?? n?.transitions;
    const add = (event, target) => {
      if (typeof target === 'string') edges.push({ from: name, to: target, event });
      else if (Array.isArray(target)) for (const x of target) add(event, x);
      else if (target && typeof target === 'object' && typeof target.state === 'string') edges.push({ from: name, to: target.state, event });
    };
    if (typeof t === 'string') add('', t);
    else if (t && typeof t === 'object') for (const [event, target] of Object.entries(t)) add(event, target);
    if (n?.timeout && typeof n.timeout.state === 'string') edges.push({ from: name, to: n.timeout.state, event: 'timeout' });
    if (typeof n?.errorState === 'string') edges.push({ from: name, to: n.errorState, event: 'error' });
  }
  return edges;
}

/** States and transitions of a machine run: the definition's, plus every transition taken, with
 * visit counts; the path the run took is the edges with `taken > 0`. */
export function machineModel({ run, steps, transitions, definition }) {
  const cfg = configNodes(definition);
  // A visit is a step; transitions count only where a state has none (the entry into the
  // initial state may or may not have a transition row).
  const visits = new Map();
  for (const st of steps) visits.set(st.node, (visits.get(st.node) ?? 0) + 1);
  const entered = new Map();
  const taken = new Map();
  for (const t of transitions) {
    entered.set(t.to, (entered.get(t.to) ?? 0) + 1);
    if (t.from !== null && t.from !== undefined) {
      const k = `${t.from}\u0000${t.to}\u0000${t.eventType ?? ''}`;
      taken.set(k, (taken.get(k) ?? 0) + 1);
    }
  }
  for (const [state, n] of entered) if (!visits.has(state)) visits.set(state, n);
  const current = transitions.length ? transitions[transitions.length - 1].to : steps[steps.length - 1]?.node;
  const initial = definition?.config?.initial ?? transitions[0]?.from ?? transitions[0]?.to ?? steps[0]?.node;
  const names = new Set([...(cfg ? Object.keys(cfg) : []), ...visits.keys()]);
  const last = lastByNode(steps);
  const nodes = [...names].map((name) => {
    let status = last.get(name)?.status ?? (visits.has(name) ? 'visited' : 'notRun');
    if (name === current && !['finished', 'error', 'cancelled'].includes(run.status)) status = run.status;
    return {
      id: name,
      label: name,
      status,
      step: last.get(name),
      visits: visits.get(name) ?? 0,
      current: name === current,
      initial: name === initial,
      final: Boolean(cfg?.[name]?.final),
    };
  });
  const edges = [];
  const seen = new Set();
  // A guarded self-loop and a plain edge between the same states are drawn once per event.
  const push = (from, to, event) => {
    const k = `${from}\u0000${to}\u0000${event}`;
    if (seen.has(k)) return;
    seen.add(k);
    edges.push({ from, to, label: event, taken: taken.get(k) ?? 0 });
  };
  if (cfg) for (const e of configEdges(cfg)) if (names.has(e.to)) push(e.from, e.to, e.event);
  for (const k of taken.keys()) {
    const [from, to, event] = k.split('\u0000');
    push(from, to, event);
  }
  return { kind: 'machine', nodes, edges, current };
}

const textWidth = (text, size = 7.2) => Math.max(40, Math.ceil(String(text).length * size));

/** Sizes move in steps of this many pixels, so a counter that grows (`×9` → `×10`) rarely
 * changes the layout's input and a live update can reuse the last layout. */
const BUCKET = 24;
const bucket = (w) => Math.ceil(w / BUCKET) * BUCKET;

function layout(model, children, steps, cache) {
  for (const n of model.nodes) n.children = childCount(children, steps, n.id);
  const nodes = model.nodes.map((n) => {
    const sub = `${n.visits ? `${n.visits} visits` : n.status}${n.children ? ` · ${n.children} runs ▸` : ''}`;
    return [n.id, bucket(Math.max(textWidth(n.label, 7.8), textWidth(sub, 6.6)) + 28)];
  });
  const edges = model.edges.map((e, i) => {
    const label = edgeLabel(e);
    return [e.from, e.to, `e${i}`, e.from === e.to ? 0 : label ? bucket(textWidth(label, 6.4)) : 0];
  });
  // dagre takes about a second for 1,500 nodes: a live update whose nodes, edges and sizes
  // are unchanged (a step finished, a count grew within its bucket) keeps the last layout.
  const signature = JSON.stringify([nodes, edges]);
  if (cache && cache.signature === signature) return cache.g;
  const loops = model.edges.some((e) => e.from === e.to);
  const g = new dagre.graphlib.Graph({ multigraph: true });
  // Self-loops are drawn above their node by hand (dagre's own loop points curl into
  // neighbours); leave room for them.
  g.setGraph({ rankdir: 'LR', nodesep: loops ? 56 : 28, ranksep: 70, edgesep: 14, marginx: 16, marginy: loops ? 48 : 16 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const [id, width] of nodes) g.setNode(id, { width, height: 44 });
  for (const [from, to, name, width] of edges) {
    if (from === to) continue;
    g.setEdge(from, to, { width, height: width ? 16 : 0, labelpos: 'c' }, name);
  }
  dagre.layout(g);
  if (cache) {
    cache.signature = signature;
    cache.g = g;
  }
  return g;
}

function edgeLabel(e) {
  const parts = [];
  if (e.label) parts.push(e.label);
  if (e.taken > 0) parts.push(`×${e.taken}`);
  return parts.join(' ');
}

function pathOf(points) {
  if (!points.length) return '';
  let d = `M${points[0].x},${points[0].y}`;
  if (points.length === 2) return `${d} L${points[1].x},${points[1].y}`;
  for (let i = 1; i < points.length - 1; i++) {
    const p = points[i];
    const q = points[i + 1];
    const mx = i === points.length - 2 ? q.x : (p.x + q.x) / 2;
    const my = i === points.length - 2 ? q.y : (p.y + q.y) / 2;
    d += ` Q${p.x},${p.y} ${mx},${my}`;
  }
  return d;
}

/** How many runs the steps of `node` started. */
function childCount(children, steps, node) {
  if (!children?.length) return 0;
  const ids = new Set(steps.filter((st) => st.node === node).map((st) => st.id));
  return children.filter((c) => ids.has(c.parentStepId)).length;
}

function drawGraph(el, data, options) {
  const model = data.run.kind === 'machine' ? machineModel(data) : dagModel(data);
  const steps = data.steps;
  if (model.nodes.length > MAX_GRAPH_NODES) {
    el.appendChild(h('p', { class: 'note', text: `${model.nodes.length} nodes: too many to lay out here; the timeline below lists every step.` }));
    return;
  }
  if (model.nodes.length === 0) {
    el.appendChild(h('p', { class: 'note', text: 'No steps yet.' }));
    return;
  }
  const g = layout(model, options.children, steps, options.layoutCache);
  const { width, height } = g.graph();
  const svg = s('svg', {
    class: `graph graph-${model.kind}`,
    width: Math.ceil(width),
    height: Math.ceil(height),
    viewBox: `0 0 ${Math.ceil(width)} ${Math.ceil(height)}`,
    role: 'img',
    'aria-label': model.kind === 'machine' ? 'state machine' : 'DAG',
  });
  const defs = s('defs', null,
    s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' }, s('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrow' })),
    s('marker', { id: 'arrow-taken', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' }, s('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrow-taken' })));
  svg.appendChild(defs);
  const loopCount = new Map();
  model.edges.forEach((e, i) => {
    let d;
    let lx;
    let ly;
    if (e.from === e.to) {
      const box = g.node(e.from);
      const n = loopCount.get(e.from) ?? 0;
      loopCount.set(e.from, n + 1);
      const top = box.y - box.height / 2;
      const rise = 30 + n * 14;
      d = `M${box.x + 12},${top} C${box.x + 34},${top - rise} ${box.x - 34},${top - rise} ${box.x - 12},${top}`;
      lx = box.x;
      ly = top - rise + 2;
    } else {
      const info = g.edge(e.from, e.to, `e${i}`);
      if (!info) return;
      d = pathOf(info.points);
      lx = info.x;
      ly = info.y + 4;
    }
    const label = edgeLabel(e);
    const group = s('g', { class: `edge${e.taken ? ' taken' : ''}`, 'data-from': e.from, 'data-to': e.to, 'data-event': e.label ?? '', 'data-taken': e.taken });
    group.appendChild(s('path', { d, 'marker-end': e.taken ? 'url(#arrow-taken)' : 'url(#arrow)' }));
    if (label) group.appendChild(s('text', { x: lx, y: ly, 'text-anchor': 'middle', class: 'edge-label', text: label }));
    svg.appendChild(group);
  });
  for (const n of model.nodes) {
    const box = g.node(n.id);
    const x = box.x - box.width / 2;
    const y = box.y - box.height / 2;
    const classes = ['node', `st-${String(n.status).replace(/[^A-Za-z]/g, '')}`];
    if (n.current) classes.push('current');
    if (n.visits) classes.push('visited');
    if (options.selected && n.id === options.selected) classes.push('selected');
    const group = s('g', {
      class: classes.join(' '),
      'data-node': n.id,
      'data-status': n.status,
      'data-visits': n.visits ?? '',
      'data-current': n.current ? 'true' : null,
      tabindex: 0,
      role: 'button',
      'aria-label': `${n.label}: ${n.status}`,
      on: {
        click: () => options.onSelect?.(n.id, n.step),
        keydown: (ev) => {
          if (ev.key === 'Enter' || ev.key === ' ') options.onSelect?.(n.id, n.step);
        },
      },
    });
    group.appendChild(s('rect', { x, y, width: box.width, height: box.height, rx: n.final ? 14 : 6 }));
    if (n.final) group.appendChild(s('rect', { x: x + 3, y: y + 3, width: box.width - 6, height: box.height - 6, rx: 11, class: 'final-ring' }));
    group.appendChild(s('text', { x: box.x, y: box.y - 3, 'text-anchor': 'middle', class: 'node-label', text: n.label }));
    const sub = model.kind === 'machine' ? (n.visits ? `${n.visits} visit${n.visits === 1 ? '' : 's'}` : 'not visited') : n.runs > 1 ? `${n.status} ×${n.runs}` : n.status;
    const started = childCount(options.children, steps, n.id);
    group.appendChild(s('text', { x: box.x, y: box.y + 13, 'text-anchor': 'middle', class: 'node-sub', text: started ? `${sub} · ${started} run${started === 1 ? '' : 's'} ▸` : sub }));
    if (started) group.setAttribute('data-children', String(started));
    if (n.initial) group.appendChild(s('circle', { cx: x - 8, cy: box.y, r: 5, class: 'initial-dot' }));
    svg.appendChild(group);
  }
  el.appendChild(h('div', { class: 'graph-scroll' }, svg));
  el.appendChild(legend(model.kind));
}

function legend(kind) {
  const items = kind === 'machine'
    ? [['finished', 'visited'], ['waitingForEvent', 'waiting for an event'], ['running', 'running'], ['error', 'failed'], ['notRun', 'not visited']]
    : [['finished', 'finished'], ['running', 'running'], ['pending', 'waiting for a slot'], ['error', 'failed'], ['cancelled', 'cancelled'], ['notRun', 'not run']];
  return h('div', { class: 'legend' },
    items.map(([st, text]) => h('span', { class: 'legend-item' }, h('span', { class: `swatch st-${st}` }), text)),
    kind === 'machine' ? h('span', { class: 'legend-item' }, h('span', { class: 'swatch path' }), 'path taken (×visits)') : null);
}

/** Draws a run's DAG, or its state machine with the path taken. `data`: `{ run, steps,
 * transitions, definition, children? }` (children: runs started by steps, counted on their
 * node); `options.onSelect(nodeName, lastStep)` on a click. */
export function mountGraph(el, data, options = {}) {
  const root = h('div', { class: 'graph-view' });
  el.appendChild(root);
  let current = data;
  const layoutCache = { signature: '', g: null };
  const draw = () => {
    // A live update redraws; keep where the user had scrolled a large graph to.
    const scroller = root.querySelector('.graph-scroll');
    const at = scroller ? [scroller.scrollLeft, scroller.scrollTop] : null;
    clear(root);
    drawGraph(root, current, { ...options, children: current.children ?? options.children, layoutCache });
    const next = root.querySelector('.graph-scroll');
    if (at && next) [next.scrollLeft, next.scrollTop] = at;
  };
  draw();
  return {
    update(next, opts) {
      current = next;
      if (opts) Object.assign(options, opts);
      draw();
    },
    select(name) {
      options.selected = name;
      for (const n of root.querySelectorAll('g.node')) n.classList.toggle('selected', n.getAttribute('data-node') === name);
    },
    destroy() {
      root.remove();
    },
  };
}

// ---------------------------------------------------------------------------------------
// Timeline: one row per step (child runs nested under the step that started them), a
// virtualized list so 10k steps cost only the rows on screen.

const ROW = 22;

/**
 * When each step became ready, so the wait before it started (a semaphore slot, for a DAG
 * node) can be drawn apart from its run. The schema records start and end only: a DAG node
 * is ready when its last parent ended (parents from the stored definition), a machine state
 * when the transition into it happened.
 */
export function readyTimes({ run, steps, transitions, definition }) {
  const ready = new Map();
  if (run?.kind === 'machine') {
    const entering = enteringTransitions(transitions);
    steps.forEach((st, i) => {
      const t = entering(i);
      if (t && t.to === st.node && st.startedAt !== null && t.time <= st.startedAt) ready.set(st.id, t.time);
    });
    return ready;
  }
  return dagReady(run, steps, definition, ready);
}

/** The transition that entered the i-th visit. Each visit after the first is entered by one
 * transition, in order; the entry into the initial state has a row (from NULL) or not. */
function enteringTransitions(transitions) {
  const ts = transitions ?? [];
  const offset = ts.length > 0 && (ts[0].from === null || ts[0].from === undefined) ? 0 : 1;
  return (i) => ts[i - offset];
}

/** For a machine: until when each visit rested in its state after its run ended, waiting for
 * an event or a delay (the time of the transition out; now for a run still waiting). */
export function restTimes({ run, steps, transitions }) {
  const rest = new Map();
  if (run?.kind !== 'machine') return rest;
  const entering = enteringTransitions(transitions);
  steps.forEach((st, i) => {
    const out = entering(i + 1);
    if (st.endedAt === null) return;
    if (out && out.from === st.node && out.time > st.endedAt) rest.set(st.id, out.time);
    else if (!out && i === steps.length - 1 && (run.status === 'waitingForEvent' || run.status === 'sleeping')) rest.set(st.id, Date.now());
  });
  return rest;
}

function dagReady(run, steps, definition, ready) {
  const cfg = configNodes(definition);
  if (!cfg) return ready;
  const ended = new Map();
  for (const st of steps) if (st.endedAt !== null) ended.set(st.node, st.endedAt);
  for (const st of steps) {
    const parents = Array.isArray(cfg[st.node]?.parents) ? cfg[st.node].parents : [];
    let at = parents.length === 0 ? run?.createdAt : undefined;
    for (const p of parents) if (ended.has(p)) at = Math.max(at ?? 0, ended.get(p));
    if (at !== undefined && st.startedAt !== null && at <= st.startedAt) ready.set(st.id, at);
  }
  return ready;
}

/** Draws the Gantt chart of `steps`. Options: `run`, `transitions`, `definition` (for
 * ready times), `children` (runs started by steps), `loadChildSteps(runId) → Promise<steps>`
 * (to expand them in place), `onSelect(step)`, `selected` (a step id). */
export function mountTimeline(el, steps, options = {}) {
  const root = h('div', { class: 'timeline' });
  const header = h('div', { class: 'tl-header' });
  const scroller = h('div', { class: 'tl-scroll', tabindex: 0 });
  const spacer = h('div', { class: 'tl-spacer' });
  const rowsEl = h('div', { class: 'tl-rows' });
  spacer.appendChild(rowsEl);
  scroller.appendChild(spacer);
  root.append(header, scroller);
  el.appendChild(root);

  let data = steps;
  const expanded = new Map(); // child run id -> steps (or 'loading')
  let rows = [];
  let t0 = 0;
  let t1 = 1;
  let ready = new Map();
  let rest = new Map();

  function flatten() {
    const model = { run: options.run, steps: data, transitions: options.transitions, definition: options.definition };
    ready = readyTimes(model);
    rest = restTimes(model);
    const byStep = new Map();
    for (const c of options.children ?? []) {
      if (!byStep.has(c.parentStepId)) byStep.set(c.parentStepId, []);
      byStep.get(c.parentStepId).push(c);
    }
    rows = [];
    const add = (list, depth) => {
      for (const st of list) {
        rows.push({ kind: 'step', step: st, depth });
        for (const c of byStep.get(st.id) ?? []) {
          rows.push({ kind: 'run', run: c, depth: depth + 1 });
          const sub = expanded.get(c.id);
          if (Array.isArray(sub)) add(sub, depth + 2);
        }
      }
    };
    add(data, 0);
    t0 = Infinity;
    t1 = -Infinity;
    const now = Date.now();
    for (const r of rows) {
      const start = r.kind === 'step' ? ready.get(r.step.id) ?? r.step.startedAt : r.run.createdAt;
      const end = r.kind === 'step' ? rest.get(r.step.id) ?? r.step.endedAt ?? (r.step.startedAt !== null ? now : null) : r.run.endedAt ?? now;
      if (start !== null && start !== undefined) t0 = Math.min(t0, start);
      if (end !== null && end !== undefined) t1 = Math.max(t1, end);
    }
    if (options.run?.createdAt) t0 = Math.min(t0, options.run.createdAt);
    if (!Number.isFinite(t0)) t0 = 0;
    if (!Number.isFinite(t1) || t1 <= t0) t1 = t0 + 1;
    spacer.style.height = `${rows.length * ROW}px`;
    scroller.style.height = `${Math.min(360, rows.length * ROW + 2)}px`;
    drawHeader();
  }

  function drawHeader() {
    clear(header);
    const span = t1 - t0;
    header.appendChild(h('div', { class: 'tl-label', text: `${rows.length} row${rows.length === 1 ? '' : 's'}` }));
    const axis = h('div', { class: 'tl-axis' });
    for (let i = 0; i <= 4; i++) {
      axis.appendChild(h('span', { class: 'tl-tick', style: { left: `${i * 25}%` }, text: `+${duration((span * i) / 4) || '0 ms'}` }));
    }
    header.appendChild(axis);
  }

  const pct = (t) => `${(((t - t0) / (t1 - t0)) * 100).toFixed(3)}%`;
  const width = (a, b) => `max(1px, ${(((b - a) / (t1 - t0)) * 100).toFixed(3)}%)`;

  function rowEl(r, index) {
    const top = `${index * ROW}px`;
    if (r.kind === 'run') {
      const c = r.run;
      const open = expanded.has(c.id);
      const toggle = h('button', {
        class: 'link tl-toggle',
        'aria-expanded': open ? 'true' : 'false',
        text: open ? '▾' : '▸',
        on: { click: (ev) => {
          ev.stopPropagation();
          toggleChild(c.id);
        } },
      });
      const label = h('div', { class: 'tl-label', style: { 'padding-left': `${4 + r.depth * 14}px` } }, toggle, ' ', h('span', { class: 'tl-run-name', text: c.name }), ' ', badge(c.status));
      const bar = h('div', { class: 'tl-track' },
        h('div', { class: `tl-bar tl-child st-${c.status}`, style: { left: pct(c.createdAt), width: width(c.createdAt, c.endedAt ?? Date.now()) }, title: `${c.name}: ${duration((c.endedAt ?? Date.now()) - c.createdAt)}` }));
      return h('div', { class: 'tl-row tl-run-row', 'data-child-run': c.id, style: { top } }, label, bar);
    }
    const st = r.step;
    const readyAt = ready.get(st.id);
    const track = h('div', { class: 'tl-track' });
    const waited = readyAt !== undefined && st.startedAt !== null ? st.startedAt - readyAt : 0;
    if (waited > 0) {
      track.appendChild(h('div', { class: 'tl-bar tl-wait', style: { left: pct(readyAt), width: width(readyAt, st.startedAt) }, title: `waited ${duration(waited)} before starting` }));
    }
    if (st.startedAt !== null) {
      const end = st.endedAt ?? Date.now();
      track.appendChild(h('div', {
        class: `tl-bar tl-run st-${st.status}`,
        style: { left: pct(st.startedAt), width: width(st.startedAt, end) },
        title: `${st.node}: ran ${duration(end - st.startedAt)}${waited > 0 ? `, waited ${duration(waited)}` : ''}`,
      }));
    }
    const restUntil = rest.get(st.id);
    if (restUntil !== undefined) {
      track.appendChild(h('div', { class: 'tl-bar tl-rest', style: { left: pct(st.endedAt), width: width(st.endedAt, restUntil) }, title: `rested ${duration(restUntil - st.endedAt)} waiting for an event or a delay` }));
    }
    const label = h('div', { class: 'tl-label', style: { 'padding-left': `${4 + r.depth * 14}px` } },
      h('span', { class: 'tl-seq', text: `#${st.seq}` }), ' ', h('span', { class: 'tl-node', text: st.node }),
      h('span', { class: 'tl-dur', text: st.startedAt !== null && st.endedAt !== null ? duration(st.endedAt - st.startedAt) : st.status }));
    return h('div', {
      class: `tl-row${options.selected === st.id ? ' selected' : ''}`,
      'data-step': st.id,
      'data-node': st.node,
      style: { top },
      on: { click: () => options.onSelect?.(st) },
    }, label, track);
  }

  let drawn = '';
  function drawRows(force) {
    const first = Math.max(0, Math.floor(scroller.scrollTop / ROW) - 10);
    const last = Math.min(rows.length, Math.ceil((scroller.scrollTop + (scroller.clientHeight || 400)) / ROW) + 10);
    const key = `${first}:${last}`;
    if (!force && key === drawn) return;
    drawn = key;
    clear(rowsEl);
    for (let i = first; i < last; i++) rowsEl.appendChild(rowEl(rows[i], i));
  }

  async function toggleChild(id) {
    if (expanded.has(id)) expanded.delete(id);
    else if (options.loadChildSteps) {
      expanded.set(id, 'loading');
      try {
        expanded.set(id, await options.loadChildSteps(id));
      } catch {
        expanded.delete(id);
      }
    }
    flatten();
    drawRows(true);
  }

  let frame = 0;
  scroller.addEventListener('scroll', () => {
    if (!frame) frame = requestAnimationFrame(() => {
      frame = 0;
      drawRows(false);
    });
  });
  flatten();
  drawRows(true);
  return {
    update(next, opts) {
      data = next;
      if (opts) Object.assign(options, opts);
      flatten();
      drawRows(true);
    },
    select(stepId) {
      options.selected = stepId;
      drawRows(true);
    },
    /** Scroll so the step's row is visible. */
    reveal(stepId) {
      const i = rows.findIndex((r) => r.kind === 'step' && r.step.id === stepId);
      if (i >= 0 && (i * ROW < scroller.scrollTop || (i + 1) * ROW > scroller.scrollTop + scroller.clientHeight)) {
        scroller.scrollTop = Math.max(0, i * ROW - scroller.clientHeight / 2);
      }
      drawRows(true);
    },
    destroy() {
      root.remove();
    },
  };
}

// ---------------------------------------------------------------------------------------
// Step panel.

function section(title, content, open = true) {
  return h('details', { class: 'section', open }, h('summary', { text: title }), content);
}

/** The buttons that change a run from one of its steps: fork from it (a machine with an
 * edited context), rerun the node, give it another output, cancel it while it runs.
 * `actions` does the requests: `fork(body)`, `rerun(body)`, `cancelNode()`, each resolving
 * with a message or throwing one. */
function stepActions(step, kind, actions) {
  const result = h('p', { class: 'action-result', role: 'status' });
  const say = (text, ok) => {
    result.textContent = text;
    result.className = `action-result ${ok ? 'ok' : 'bad'}`;
  };
  const run = async (f) => {
    try {
      say(await f(), true);
    } catch (e) {
      say(String(e.message ?? e), false);
    }
  };
  const json = (area, what) => {
    try {
      return JSON.parse(area.value);
    } catch (e) {
      throw new Error(`The ${what} is not JSON: ${e.message}`);
    }
  };
  const editor = (value, label, name) => {
    const area = h('textarea', { class: `json-editor ${name}`, rows: 6, spellcheck: 'false', 'aria-label': label });
    area.value = value === undefined || value === null ? '' : JSON.stringify(value, null, 2);
    return area;
  };
  const box = h('div', { class: 'step-actions' });
  if (kind === 'machine') {
    const context = editor(step.context, 'context the fork starts with (JSON)', 'fork-context');
    box.append(
      h('label', { class: 'payload-label' }, 'Context the fork starts with (JSON)', context),
      h('button', { class: 'fork-step', text: 'Fork from this step', on: { click: () => run(() => actions.fork(step.context === undefined && !context.value.trim() ? { atStep: step.id } : { atStep: step.id, context: json(context, 'context') })) } }));
  } else {
    const output = editor(step.output, 'the node\u2019s new output (JSON)', 'node-output');
    box.append(
      h('div', { class: 'action-row' },
        h('button', { class: 'rerun-node', text: 'Rerun this node', on: { click: () => run(() => actions.rerun({ node: step.node })) } }),
        h('button', { class: 'fork-step', text: 'Fork from this step', on: { click: () => run(() => actions.fork({ atStep: step.id })) } }),
        step.status === 'running' || step.status === 'pending'
          ? h('button', { class: 'cancel-node', text: 'Cancel this node', on: { click: () => run(() => actions.cancelNode({ node: step.node })) } })
          : null),
      h('label', { class: 'payload-label' }, 'Output (JSON): set it and rerun what follows', output),
      h('button', { class: 'set-output', text: 'Set output and rerun', on: { click: () => run(() => actions.rerun({ node: step.node, output: json(output, 'output') })) } }));
  }
  box.appendChild(result);
  return box;
}

/** Shows one step: `{ step, events, children }` with the step's input, output and error
 * (values as the API serves them), its custom events and the runs it started.
 * `options.readyAt` (ms) adds the wait before it started; `options.onOpenRun(id)` links
 * child runs; `options.actions` (with `options.kind`, 'dag' or 'machine') adds the buttons
 * that fork from the step, rerun or cancel its node (see `stepActions`). */
export function mountStepPanel(el, data, options = {}) {
  const root = h('div', { class: 'step-panel' });
  el.appendChild(root);
  const mounted = [];
  const draw = ({ step, events = [], children = [] }) => {
    for (const m of mounted.splice(0)) m.destroy();
    clear(root);
    const ran = step.startedAt !== null && step.endedAt !== null ? step.endedAt - step.startedAt : null;
    const waited = options.readyAt !== undefined && step.startedAt !== null ? step.startedAt - options.readyAt : null;
    root.appendChild(h('div', { class: 'step-head' }, h('h3', { class: 'step-title', text: step.node }), badge(step.status)));
    root.appendChild(h('dl', { class: 'facts' },
      h('dt', { text: 'step' }), h('dd', { text: `#${step.seq}` }),
      h('dt', { text: 'attempt' }), h('dd', { class: 'attempt', text: String(step.attempt) }),
      h('dt', { text: 'started' }), h('dd', { text: time(step.startedAt) || '—' }),
      h('dt', { text: 'ended' }), h('dd', { text: time(step.endedAt) || '—' }),
      h('dt', { text: 'ran' }), h('dd', { text: ran === null ? '—' : duration(ran) }),
      waited !== null && waited > 0 ? [h('dt', { text: 'waited' }), h('dd', { text: duration(waited) })] : null,
      h('dt', { text: 'id' }), h('dd', { class: 'mono', text: step.id })));
    const value = (title, v, open) => {
      const box = h('div', { class: 'value' });
      if (v === null || v === undefined) box.appendChild(h('span', { class: 'muted', text: 'none' }));
      else mounted.push(mountJson(box, v));
      root.appendChild(section(title, box, open));
    };
    if (step.error !== null && step.error !== undefined) {
      const e = step.error;
      const box = h('div', { class: 'error-box' },
        h('div', { class: 'error-message', text: `${e?.name ? `${e.name}: ` : ''}${errorMessage(e)}` }),
        typeof e?.stack === 'string' ? h('pre', { class: 'stack', text: e.stack }) : null);
      root.appendChild(section('Error', box));
    }
    value('Input', step.input, true);
    value('Output', step.output, true);
    if (step.context !== undefined) value('Context at this step', step.context, false);
    else root.appendChild(section('Context at this step', h('p', { class: 'muted', text: options.kind === 'dag' ? 'DAG nodes share the run\u2019s context; it is not kept per step.' : 'Not recorded for this step (recorded before schema version 7).' }), false));
    if (options.actions && step.supersededAt === null) root.appendChild(section('Change the run', stepActions(step, options.kind, options.actions), false));
    const list = h('div', { class: 'events' });
    if (events.length === 0) list.appendChild(h('span', { class: 'muted', text: 'none' }));
    for (const ev of events) {
      const box = h('div', { class: 'event-data' });
      list.appendChild(h('div', { class: 'event', 'data-event-type': ev.type }, h('div', { class: 'event-head' }, h('span', { class: 'event-type', text: ev.type }), ' ', h('span', { class: 'muted', text: time(ev.time) })), box));
      mounted.push(mountJson(box, ev.data, { openDepth: 0 }));
    }
    root.appendChild(section(`Custom events (${events.length})`, list));
    if (children.length) {
      root.appendChild(section(`Runs started here (${children.length})`, h('ul', { class: 'children' }, children.map((c) =>
        h('li', null, h('button', { class: 'link', text: c.name, on: { click: () => options.onOpenRun?.(c.id) } }), ' ', badge(c.status))))));
    }
  };
  draw(data);
  return {
    update(next, opts) {
      if (opts) Object.assign(options, opts);
      draw(next);
    },
    destroy() {
      for (const m of mounted.splice(0)) m.destroy();
      root.remove();
    },
  };
}
