// The inspector web app: a run list and a run page over the inspector's JSON API, kept live by
// the server's change feed. Views are the components in components.js.
import { mountGraph, mountJson, mountStepPanel, mountTimeline, readyTimes } from './components.js';
import { badge, clear, duration, errorMessage, h, time } from './dom.js';

const main = document.getElementById('main');
const liveEl = document.getElementById('live');

class ApiError extends Error {}

async function api(path, init) {
  const res = await fetch(path, { cache: 'no-cache', ...init });
  const text = await res.text();
  if (!res.ok) {
    let message = `${res.status} ${res.statusText}`;
    try {
      message = JSON.parse(text).error ?? message;
    } catch {
      // not JSON: keep the status line
    }
    throw new ApiError(message);
  }
  return { text, json: () => JSON.parse(text) };
}

// ---------------------------------------------------------------------------------------
// Live updates: the server says when the database changed; the current view re-reads.

let view = { refresh() {}, destroy() {} };
let refreshing = false;
let again = false;

async function refresh() {
  if (refreshing) {
    again = true;
    return;
  }
  refreshing = true;
  try {
    await view.refresh();
  } catch (e) {
    console.error(e);
  } finally {
    refreshing = false;
    if (again) {
      again = false;
      refresh();
    }
  }
}

function connectLive() {
  const source = new EventSource('/api/live');
  source.addEventListener('hello', () => {
    liveEl.textContent = 'live';
    liveEl.className = 'live on';
  });
  source.addEventListener('change', () => refresh());
  source.addEventListener('error', () => {
    liveEl.textContent = 'reconnecting…';
    liveEl.className = 'live off';
  });
}

// ---------------------------------------------------------------------------------------
// Run list.

const STATUSES = ['', 'pending', 'queued', 'running', 'waitingForEvent', 'sleeping', 'finished', 'error', 'cancelled'];

function listView(params) {
  const field = (name, attrs) => h('input', { name, value: params.get(name) ?? '', ...attrs });
  const statusSelect = h('select', { name: 'status', 'aria-label': 'status' },
    STATUSES.map((st) => h('option', { value: st, selected: params.get('status') === st, text: st || 'any status' })));
  const toLocal = (ms) => {
    if (!ms) return '';
    const d = new Date(Number(ms));
    return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
  };
  const since = h('input', { type: 'datetime-local', name: 'since', 'aria-label': 'created after', value: toLocal(params.get('since')) });
  const until = h('input', { type: 'datetime-local', name: 'until', 'aria-label': 'created before', value: toLocal(params.get('until')) });
  const all = h('input', { type: 'checkbox', name: 'all', checked: params.get('all') === '1' });
  const form = h('form', { class: 'filters', on: { submit: (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    const data = new FormData(form);
    for (const key of ['name', 'status', 'tag']) {
      const v = String(data.get(key) ?? '').trim();
      if (v) q.set(key, v);
    }
    for (const key of ['since', 'until']) {
      const v = String(data.get(key) ?? '');
      if (v) q.set(key, String(new Date(v).getTime()));
    }
    if (all.checked) q.set('all', '1');
    location.hash = `#/?${q}`;
  } } },
  field('name', { placeholder: 'name contains', 'aria-label': 'name' }),
  statusSelect,
  field('tag', { placeholder: 'tag', 'aria-label': 'tag' }),
  h('label', null, 'from ', since),
  h('label', null, 'to ', until),
  h('label', null, all, ' child runs too'),
  h('button', { type: 'submit', text: 'Filter' }),
  h('a', { href: '#/', class: 'button-link', text: 'Clear' }));

  const tbody = h('tbody');
  const count = h('p', { class: 'muted count' });
  const table = h('table', { class: 'runs' },
    h('thead', null, h('tr', null, ['Name', 'Status', 'Started', 'Duration', 'Steps', 'Tags', 'Error'].map((t) => h('th', { text: t })))),
    tbody);
  // Limits shared through the store and cron schedules, when there are any.
  const queueBox = h('section', { class: 'queue-state' });
  clear(main).append(queueBox, h('h2', { text: 'Runs' }), form, count, table);

  const query = new URLSearchParams();
  for (const key of ['name', 'status', 'tag', 'since', 'until', 'all']) if (params.get(key)) query.set(key, params.get(key));
  let last = '';
  return {
    async refresh() {
      const res = await api(`/api/runs?${query}`);
      const { runs, limits = [], schedules = [] } = res.json();
      const key = JSON.stringify([runs, limits, schedules]);
      if (key === last) return;
      last = key;
      clear(queueBox);
      if (limits.length > 0) {
        queueBox.append(h('h2', { text: 'Limits' }), h('table', { class: 'limits' },
          h('thead', null, h('tr', null, ['Key', 'Running', 'Waiting', 'Concurrency', 'Rate'].map((t) => h('th', { text: t })))),
          h('tbody', null, limits.map((l) => h('tr', { 'data-limit': l.key },
            h('td', { text: l.key }),
            h('td', { class: 'num', text: String(l.running) }),
            h('td', { class: 'num', text: String(l.waiting) }),
            h('td', { class: 'num', text: l.concurrency == null ? '—' : String(l.concurrency) }),
            h('td', { text: l.rate ? rateText(l.rate) : '—' }))))));
      }
      if (schedules.length > 0) {
        queueBox.append(h('h2', { text: 'Schedules' }), h('table', { class: 'schedules' },
          h('thead', null, h('tr', null, ['Name', 'Definition', 'Cron', 'Time zone', 'Next'].map((t) => h('th', { text: t })))),
          h('tbody', null, schedules.map((s) => h('tr', { 'data-schedule': s.name },
            h('td', { text: s.name }),
            h('td', { text: s.definition }),
            h('td', null, h('code', { text: s.cron })),
            h('td', { text: s.timezone ?? 'UTC' }),
            h('td', { text: s.next == null ? '—' : time(s.next) }))))));
      }
      clear(tbody);
      count.textContent = `${runs.length} run${runs.length === 1 ? '' : 's'}, newest first`;
      const now = Date.now();
      for (const r of runs) {
        const href = `#/run/${encodeURIComponent(r.id)}`;
        tbody.appendChild(h('tr', { 'data-run-id': r.id, class: 'run-row', on: { click: (ev) => {
          if (ev.target.tagName !== 'A') location.hash = href;
        } } },
          h('td', null, h('a', { href, text: r.name }), h('span', { class: 'kind', text: r.kind })),
          h('td', null, badge(r.status)),
          h('td', { text: time(r.createdAt) }),
          h('td', { text: duration((r.endedAt ?? now) - r.createdAt) + (r.endedAt ? '' : ' …') }),
          h('td', { class: 'num', text: String(r.steps) }),
          h('td', null, (r.tags ?? []).map((t) => h('span', { class: 'tag', text: t }))),
          h('td', { class: 'error-cell', text: errorMessage(r.error) })));
      }
      if (runs.length === 0) tbody.appendChild(h('tr', null, h('td', { colspan: 7, class: 'muted', text: 'No runs match.' })));
    },
    destroy() {},
  };
}

/** A limit's rate as it is written: `60/min`, else `10 per 5 s`. */
function rateText({ count, per }) {
  const unit = { 1000: 's', 60000: 'min', 3600000: 'h', 86400000: 'day' }[per];
  return unit ? `${count}/${unit}` : `${count} per ${duration(per)}`;
}

// ---------------------------------------------------------------------------------------
// Run page.

function runView(runId, stepId) {
  const head = h('div', { class: 'run-head' });
  const waitBox = h('div', { class: 'waiting' });
  const graphBox = h('section', { class: 'panel graph-panel' }, h('h3', { text: 'Graph' }));
  const timelineBox = h('section', { class: 'panel timeline-panel' }, h('h3', { text: 'Timeline' }), h('p', { class: 'muted hint', text: 'Amber hatch: ready but waiting to start (a semaphore slot) · solid: running · violet hatch: a machine resting in the state, waiting for an event or a delay.' }));
  const childrenBox = h('section', { class: 'panel children-panel' });
  const stepBox = h('aside', { class: 'panel step-box' }, h('p', { class: 'muted', text: 'Select a node or a timeline row to see its step.' }));
  const runInfo = h('section', { class: 'panel run-info' });
  clear(main).append(h('p', null, h('a', { href: '#/', text: '← all runs' })), head, waitBox,
    h('div', { class: 'run-layout' }, h('div', { class: 'run-main' }, graphBox, timelineBox, childrenBox, runInfo), stepBox));

  let last = '';
  let data;
  let graph;
  let timeline;
  let panel;
  let selected = stepId;
  let selectedKey = '';
  let sendResult = { text: '', className: 'send-result' };
  const childCache = new Map();

  const openRun = (id) => {
    location.hash = `#/run/${encodeURIComponent(id)}`;
  };

  // What the step panel's buttons ask the engine that serves this page.
  const post = async (what, body) => (await api(`/api/runs/${encodeURIComponent(runId)}/${what}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  })).json();
  const actions = {
    async fork(body) {
      const { runId: fork } = await post('fork', body);
      openRun(fork);
      return `Forked: run ${fork}`;
    },
    async rerun(body) {
      await post('rerun', body);
      return body.output === undefined ? `Rerunning ${body.node} and what follows` : `Set the output of ${body.node}; rerunning what follows`;
    },
    async cancelNode(body) {
      await post('cancel-node', body);
      return `Cancelled ${body.node} and what follows`;
    },
  };

  async function loadChild(id) {
    const res = await api(`/api/runs/${encodeURIComponent(id)}`);
    const d = res.json();
    childCache.set(id, d);
    return d;
  }

  async function selectStep(id, { reveal = false } = {}) {
    selected = id;
    const base = `#/run/${encodeURIComponent(runId)}`;
    const want = `${base}/step/${encodeURIComponent(id)}`;
    if (location.hash !== want) history.replaceState(null, '', want);
    timeline?.select(id);
    if (reveal) timeline?.reveal(id);
    const step = data.steps.find((st) => st.id === id);
    graph?.select(step?.node);
    await showStep();
  }

  async function showStep() {
    if (!selected) return;
    const summary = data.steps.find((st) => st.id === selected);
    // Re-read the step only when it changed (a finished step never does).
    const key = summary ? `${summary.status}:${summary.endedAt}` : 'gone';
    if (key === selectedKey && panel) return;
    selectedKey = key;
    let detail;
    try {
      detail = (await api(`/api/runs/${encodeURIComponent(runId)}/steps/${encodeURIComponent(selected)}`)).json();
    } catch (e) {
      clear(stepBox).appendChild(h('p', { class: 'error-message', text: String(e.message) }));
      panel = undefined;
      return;
    }
    const readyAt = readyTimes(data).get(selected);
    const opts = { readyAt, kind: data.run.kind, actions: data.actions ? actions : undefined };
    if (panel) panel.update(detail, opts);
    else {
      clear(stepBox);
      panel = mountStepPanel(stepBox, detail, { ...opts, onOpenRun: openRun });
    }
  }

  function renderHead() {
    const r = data.run;
    const end = r.endedAt ?? Date.now();
    clear(head).append(...[
      h('h2', null, h('span', { class: 'run-name', text: r.name }), ' ', badge(r.status), h('span', { class: 'kind', text: r.kind })),
      h('dl', { class: 'facts inline' },
        h('dt', { text: 'id' }), h('dd', { class: 'mono', text: r.id }),
        h('dt', { text: 'started' }), h('dd', { text: time(r.createdAt) }),
        h('dt', { text: 'duration' }), h('dd', { text: duration(end - r.createdAt) + (r.endedAt ? '' : ' (running)') }),
        h('dt', { text: 'steps' }), h('dd', { text: String(data.steps.length) }),
        r.definitionName ? [h('dt', { text: 'definition' }), h('dd', { text: `${r.definitionName} v${r.definitionVersion}` })] : null,
        (r.tags ?? []).length ? [h('dt', { text: 'tags' }), h('dd', null, r.tags.map((t) => h('span', { class: 'tag', text: t })))] : null,
        r.parentRunId ? [h('dt', { text: 'started by' }), h('dd', null, h('a', { href: `#/run/${encodeURIComponent(r.parentRunId)}`, text: 'parent run' }))] : null,
        r.forkedFrom ? [h('dt', { text: 'forked from' }), h('dd', null, r.forkedFrom.stepId
          ? h('a', { class: 'forked-from', href: `#/run/${encodeURIComponent(r.forkedFrom.runId)}/step/${encodeURIComponent(r.forkedFrom.stepId)}`, text: 'its step' })
          : h('a', { class: 'forked-from', href: `#/run/${encodeURIComponent(r.forkedFrom.runId)}`, text: 'a run, kept as it ended' }))] : null),
      r.error ? h('div', { class: 'error-box run-error' },
        h('div', { class: 'error-message', text: `${r.error.name ? `${r.error.name}: ` : ''}${errorMessage(r.error)}` }),
        typeof r.error.stack === 'string' ? h('pre', { class: 'stack', text: r.error.stack }) : null) : null].filter(Boolean));
  }

  function renderWaiting() {
    clear(waitBox);
    const r = data.run;
    const { accepts } = data;
    if (r.kind !== 'machine' || r.status !== 'waitingForEvent') {
      waitBox.hidden = true;
      return;
    }
    waitBox.hidden = false;
    const payload = h('textarea', { class: 'payload', rows: 3, spellcheck: 'false', 'aria-label': 'event data (JSON)', placeholder: '{"by": "you"}' });
    payload.value = waitBox.dataset.payload ?? '';
    payload.addEventListener('input', () => {
      waitBox.dataset.payload = payload.value;
    });
    // Kept across re-renders: sending changes the database, which re-renders this box.
    const result = h('p', { class: sendResult.className, role: 'status', text: sendResult.text });
    const say = (text, ok) => {
      sendResult = { text, className: `send-result ${ok ? 'ok' : 'bad'}` };
      result.textContent = text;
      result.className = sendResult.className;
    };
    const send = async (type) => {
      let dataValue;
      const text = payload.value.trim();
      if (text) {
        try {
          dataValue = JSON.parse(text);
        } catch (e) {
          say(`The payload is not JSON: ${e.message}`, false);
          return;
        }
      }
      try {
        const res = await api(`/api/runs/${encodeURIComponent(runId)}/events`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify(dataValue === undefined ? { type } : { type, data: dataValue }),
        });
        say(`Sent '${type}' (${res.json().id}); the engine takes it when it next looks.`, true);
      } catch (e) {
        say(`Not sent: ${e.message}`, false);
      }
    };
    const custom = h('input', { class: 'custom-type', placeholder: 'event type', 'aria-label': 'event type' });
    // Who takes an event sent from here, and when the wait ends by itself.
    const now = Date.now();
    const lease = data.lease;
    const holder = lease && lease.expiresAt > now
      ? h('p', { class: 'holder', text: `Held by ${lease.owner}, its lease until ${time(lease.expiresAt)}: that process takes events sent here.` })
      : h('p', { class: 'holder muted', text: `${lease ? `No live process holds it (the lease of ${lease.owner} ran out at ${time(lease.expiresAt)})` : 'No process holds it'}: events sent here wait until a process resumes it.` });
    const timeout = (data.timers ?? []).find((t) => t.kind === 'timeout' && t.firedAt === null);
    const due = timeout
      ? h('p', { class: 'timeout-due', text: timeout.dueAt > now ? `Times out at ${time(timeout.dueAt)} (in ${duration(timeout.dueAt - now)}).` : `Its timeout fell due at ${time(timeout.dueAt)}: it moves on once a process runs it.` })
      : null;
    waitBox.append(...[
      h('h3', null, 'Waiting for an event in ', h('span', { class: 'mono', text: accepts.state ?? '?' })),
      holder,
      due,
      accepts.events.length
        ? h('div', { class: 'event-buttons' }, accepts.events.map((type) => h('button', { class: 'send-event', 'data-event': type, text: type, on: { click: () => send(type) } })))
        : h('p', { class: 'muted', text: 'The run has no stored definition that names the events this state takes; type one.' }),
      accepts.source === 'history' ? h('p', { class: 'muted', text: 'Buttons come from events this state took earlier in the run.' }) : null,
      h('label', { class: 'payload-label' }, 'Data (JSON, optional)', payload),
      h('form', { class: 'custom-send', on: { submit: (ev) => {
        ev.preventDefault();
        if (custom.value.trim()) send(custom.value.trim());
      } } }, custom, h('button', { type: 'submit', text: 'Send other event' })),
      result].filter(Boolean));
    if (data.pendingEvents.length) {
      waitBox.appendChild(h('div', { class: 'pending' }, h('h4', { text: 'Sent, not taken yet' }),
        h('ul', null, data.pendingEvents.map((p) => h('li', { 'data-pending': p.id }, h('span', { class: 'mono', text: p.type }), ' ', h('span', { class: 'muted', text: time(p.createdAt) }))))));
    }
  }

  function renderChildren() {
    clear(childrenBox);
    if (!data.children.length) {
      childrenBox.hidden = true;
      return;
    }
    childrenBox.hidden = false;
    childrenBox.appendChild(h('h3', { text: `Child runs (${data.children.length})` }));
    const byStep = new Map(data.steps.map((st) => [st.id, st]));
    for (const c of data.children) {
      const body = h('div', { class: 'child-body' });
      const details = h('details', { class: 'child', 'data-child-run': c.id },
        h('summary', null, h('span', { class: 'run-name', text: c.name }), ' ', badge(c.status), ' ',
          h('span', { class: 'muted', text: `started by ${byStep.get(c.parentStepId)?.node ?? 'a step'} · ${duration((c.endedAt ?? Date.now()) - c.createdAt)}` }), ' ',
          h('a', { href: `#/run/${encodeURIComponent(c.id)}`, text: 'open' })),
        body);
      // Expanded in place: the child's own graph and timeline, read when first opened.
      details.addEventListener('toggle', async () => {
        if (!details.open || body.firstChild) return;
        body.appendChild(h('p', { class: 'muted', text: 'loading…' }));
        try {
          const d = await loadChild(c.id);
          clear(body);
          mountGraph(body, d, { onSelect: () => openRun(c.id) });
          mountTimeline(body, d.steps, { run: d.run, transitions: d.transitions, definition: d.definition });
        } catch (e) {
          clear(body).appendChild(h('p', { class: 'error-message', text: e.message }));
        }
      });
      childrenBox.appendChild(details);
    }
  }

  let infoKey = '';
  function renderInfo() {
    const r = data.run;
    // Re-drawn only when the values change, so opened sections stay open while the run moves.
    const key = JSON.stringify([r.input, r.output, r.snapshot]);
    if (key === infoKey) return;
    infoKey = key;
    clear(runInfo);
    runInfo.appendChild(h('h3', { text: 'Run' }));
    const rows = [['Input', r.input], ['Output', r.output], ['Snapshot (latest, engine state)', r.snapshot]];
    for (const [title, v] of rows) {
      if (v === null || v === undefined) continue;
      const box = h('div', { class: 'value' });
      runInfo.appendChild(h('details', { class: 'section' }, h('summary', { text: title }), box));
      mountJson(box, v);
    }
  }

  return {
    async refresh() {
      let res;
      try {
        res = await api(`/api/runs/${encodeURIComponent(runId)}`);
      } catch (e) {
        clear(main).append(h('p', null, h('a', { href: '#/', text: '← all runs' })), h('p', { class: 'error-message', text: e.message }));
        return;
      }
      if (res.text === last) return;
      last = res.text;
      data = res.json();
      document.title = `${data.run.name} · Ramus inspector`;
      renderHead();
      renderWaiting();
      const onSelectNode = (name, step) => {
        if (!step) return;
        selectStep(step.id, { reveal: true });
        // A node whose steps started runs opens them in place, below.
        const ids = new Set(data.steps.filter((st) => st.node === name).map((st) => st.id));
        let first;
        for (const c of data.children) {
          if (!ids.has(c.parentStepId)) continue;
          const el = childrenBox.querySelector(`details[data-child-run="${CSS.escape(c.id)}"]`);
          if (el) {
            el.open = true;
            first ??= el;
          }
        }
        first?.scrollIntoView({ block: 'nearest' });
      };
      const selectedNode = data.steps.find((st) => st.id === selected)?.node;
      if (graph) graph.update(data, { selected: selectedNode });
      else graph = mountGraph(graphBox, data, { onSelect: onSelectNode, selected: selectedNode });
      const tlOptions = {
        run: data.run,
        transitions: data.transitions,
        definition: data.definition,
        children: data.children,
        selected,
        loadChildSteps: async (id) => (await loadChild(id)).steps,
        onSelect: (st) => selectStep(st.id),
      };
      if (timeline) timeline.update(data.steps, tlOptions);
      else {
        timeline = mountTimeline(timelineBox, data.steps, tlOptions);
        if (selected) timeline.reveal(selected);
      }
      renderChildren();
      renderInfo();
      await showStep();
    },
    destroy() {},
  };
}

// ---------------------------------------------------------------------------------------
// Routing: #/ (with filters as a query), #/run/<id>, #/run/<id>/step/<id>.

function route() {
  view.destroy();
  const hash = location.hash.replace(/^#/, '') || '/';
  const [pathPart, queryPart = ''] = hash.split('?');
  const parts = pathPart.split('/').filter(Boolean).map(decodeURIComponent);
  if (parts[0] === 'run' && parts[1]) view = runView(parts[1], parts[2] === 'step' ? parts[3] : undefined);
  else {
    document.title = 'Ramus inspector';
    view = listView(new URLSearchParams(queryPart));
  }
  refresh();
}

window.addEventListener('hashchange', route);
connectLive();
route();
