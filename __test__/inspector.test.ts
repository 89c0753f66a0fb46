// The inspector end to end: its HTTP API without a browser, then the real web app in headless
// Chromium against a database of runs. Screenshots go to test-output/inspector/.
import { execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import * as ramus from 'ramus';
import { inspect, inspectorAssets, type Inspector } from 'ramus';

import { CHROMIUM, chromiumMissing } from './chromium.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const require = createRequire(import.meta.url);
const { NativeStore } = require('../index.js') as typeof import('../index.js');
const run = promisify(execFile);

const XSS = '<img src=x onerror=alert(1)>';
const shots = join(root, 'test-output', 'inspector');

interface Runs {
  /** finished DAG: plan, web finished; news failed; slow cancelled; summarize finished */
  dag: string;
  /** finished machine: research, draft ×3, review ×2, send (approve) */
  machine: string;
  /** machine waiting in `review` for approve / reject */
  waiting: string;
  /** DAG whose `fanout` step started two child runs */
  parent: string;
  /** outputs, event data, names and errors that are markup */
  xss: string;
  /** a 10,000-step machine run without a stored definition */
  big: string;
  /** a DAG of 2,002 nodes: more than the graph lays out */
  wide: string;
}

// The one place that knows where runs come from. When durable engine runs exist, this becomes
// "run the examples with an Engine on `path`" and the rest of the file stays as it is.
async function produceDatabase(path: string): Promise<Runs> {
  const { stdout } = await run('cargo', ['run', '--quiet', '-p', 'ramus-store', '--example', 'fixture', '--', path], {
    cwd: root,
    maxBuffer: 1 << 20,
  });
  return JSON.parse(stdout) as Runs;
}

// Plays the engine's part: a process holding the waiting run takes its pending event.
async function engineTakesPendingEvent(path: string, runId: string): Promise<{ state: string; final: boolean }> {
  const { stdout } = await run('cargo', ['run', '--quiet', '-p', 'ramus-store', '--example', 'fixture', '--', path, 'resume', runId], {
    cwd: root,
  });
  return JSON.parse(stdout) as { state: string; final: boolean };
}

let dir: string;
let db: string;
let runs: Runs;
let inspector: Inspector;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ramus-inspector-'));
  db = join(dir, 'ramus.sqlite');
  runs = await produceDatabase(db);
  inspector = await inspect({ db, pollInterval: 100 });
  mkdirSync(shots, { recursive: true });
});

afterAll(async () => {
  await inspector?.close();
  rmSync(dir, { recursive: true, force: true });
});

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  json: () => any;
}

function http(path: string, options: { method?: string; body?: string | Buffer; headers?: Record<string, string> } = {}): Promise<Reply> {
  const url = new URL(path, inspector.url);
  return new Promise((resolve, reject) => {
    const headers = { Authorization: `Bearer ${inspector.token}`, ...options.headers };
    const req = request(url, { method: options.method ?? 'GET', headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json: () => JSON.parse(body) });
      });
    });
    req.on('error', reject);
    if (options.body !== undefined) req.write(options.body);
    req.end();
  });
}

const postEvent = (id: string, body: unknown) =>
  http(`/api/runs/${id}/events`, { method: 'POST', body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } });

describe('inspector API', () => {
  it('refuses a file that is not a Ramus database, and leaves it as it was', async () => {
    const foreign = join(dir, 'empty.sqlite');
    writeFileSync(foreign, '');
    await expect(inspect({ db: foreign })).rejects.toThrow(/is not a Ramus database/);
    expect(readFileSync(foreign).length).toBe(0);
    await expect(inspect({ db: join(dir, 'nope.sqlite') })).rejects.toThrow(/No Ramus database at/);
  });

  it('binds loopback on a free port and prints a loopback URL', () => {
    expect(inspector.host).toBe('127.0.0.1');
    expect(inspector.port).toBeGreaterThan(0);
    expect(inspector.url).toBe(`http://127.0.0.1:${inspector.port}/?token=${inspector.token}`);
    expect(inspector.token).toMatch(/^[\w-]{32}$/);
  });

  it('lists top-level runs newest first with step counts and errors', async () => {
    const res = await http('/api/runs');
    expect(res.status).toBe(200);
    const list = res.json().runs as Array<{ id: string; name: string; steps: number; createdAt: number; error: unknown }>;
    expect(list.map((r) => r.id)).toEqual([runs.waiting, runs.xss, runs.parent, runs.machine, runs.dag, runs.big, runs.wide]);
    expect(list.find((r) => r.id === runs.big)!.steps).toBe(10_000);
    expect(list.find((r) => r.id === runs.dag)!.steps).toBe(5);
    expect(list.find((r) => r.id === runs.xss)!.error).toMatchObject({ message: '<script>alert(3)</script>' });
    const all = (await http('/api/runs?all=1')).json().runs as unknown[];
    expect(all).toHaveLength(list.length + 2);
  });

  it('filters by name, status, tag and time with parameters, not SQL text', async () => {
    const names = async (q: string) => ((await http(`/api/runs?${q}`)).json().runs as Array<{ id: string }>).map((r) => r.id);
    expect(await names('name=APPROVAL')).toEqual([runs.waiting, runs.machine]);
    expect(await names('status=waitingForEvent')).toEqual([runs.waiting]);
    expect(await names('tag=demo')).toEqual([runs.machine, runs.dag]);
    expect(await names('tag=load')).toEqual([runs.big, runs.wide]);
    expect(await names(`tag=${encodeURIComponent('<i>tag</i>')}`)).toEqual([runs.xss]);
    expect(await names(`name=${encodeURIComponent(`' OR '1'='1`)}`)).toEqual([]);
    expect(await names(`name=${encodeURIComponent('x"); DROP TABLE runs; --')}`)).toEqual([]);
    const machine = (await http(`/api/runs/${runs.machine}`)).json().run;
    expect(await names(`since=${machine.createdAt}&until=${machine.createdAt + 1}`)).toEqual([runs.machine]);
    expect(await names(`since=${encodeURIComponent(new Date(machine.createdAt).toISOString())}&limit=2`)).toEqual([runs.waiting, runs.xss]);
    expect((await http('/api/runs?status=nope')).status).toBe(400);
    expect((await http('/api/runs?since=yesterday')).status).toBe(400);
    expect((await http('/api/runs?limit=0')).status).toBe(400);
    // The table survived.
    expect((await names('')).length).toBe(7);
  });

  it('serves a run with its steps, transitions, definition and the events it accepts', async () => {
    const dag = (await http(`/api/runs/${runs.dag}`)).json();
    expect(dag.run).toMatchObject({ id: runs.dag, kind: 'dag', status: 'finished', definitionName: 'research' });
    expect(Object.fromEntries(dag.steps.map((s: { node: string; status: string }) => [s.node, s.status]))).toEqual({
      plan: 'finished',
      web: 'finished',
      slow: 'cancelled',
      news: 'error',
      summarize: 'finished',
    });
    expect(dag.steps.find((s: { node: string }) => s.node === 'news').errorMessage).toBe('news API returned 503');
    expect(dag.steps[0].output).toBeUndefined(); // values come one step at a time
    expect(dag.definition.config.nodes.summarize.parents).toEqual(['web', 'news', 'slow']);
    expect(dag.accepts).toEqual({ state: null, events: [], source: 'none' });

    const waiting = (await http(`/api/runs/${runs.waiting}`)).json();
    expect(waiting.run.status).toBe('waitingForEvent');
    expect(waiting.transitions.map((t: { to: string }) => t.to)).toEqual(['research', 'draft', 'draft', 'review']);
    expect(waiting.accepts).toEqual({ state: 'review', events: ['approve', 'reject'], source: 'definition' });

    const big = (await http(`/api/runs/${runs.big}`)).json();
    expect(big.steps).toHaveLength(10_000);
    expect(big.definition).toBeNull();
    expect(big.accepts.source).toBe('none');

    const parent = (await http(`/api/runs/${runs.parent}`)).json();
    expect(parent.children.map((c: { name: string }) => c.name)).toEqual(['search:web', 'search:news']);
  });

  it('returns agent markup as JSON data, with a CSP and nosniff', async () => {
    const page = (await http(`/api/runs/${runs.xss}`)).json();
    const render = page.steps.find((s: { node: string }) => s.node === 'render');
    const res = await http(`/api/runs/${runs.xss}/steps/${render.id}`);
    expect(res.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(res.headers['x-content-type-options']).toBe('nosniff');
    expect(res.headers['content-security-policy']).toContain("script-src 'self'");
    expect(res.headers['access-control-allow-origin']).toBeUndefined();
    const step = res.json();
    expect(step.step.output).toBe(XSS);
    expect(step.events.map((e: { data: unknown }) => e.data)).toEqual([XSS]);
    const html = await http('/');
    expect(html.headers['content-security-policy']).toMatch(/default-src 'none'.*script-src 'self'/);
    expect(html.body).not.toMatch(/<script>[^<]/); // no inline script
  });

  it('answers 404 to unknown routes, ids and steps, and 405 to other methods', async () => {
    expect((await http('/nope')).status).toBe(404);
    expect((await http('/api/nope')).status).toBe(404);
    expect((await http('/api/runs/not-an-id')).status).toBe(404);
    expect((await http('/api/runs/0190b6a4-1f00-7000-8000-000000000000')).status).toBe(404);
    expect((await http(`/api/runs/${runs.dag}/steps/0190b6a4-1f00-7000-8000-000000000000`)).status).toBe(404);
    expect((await http('/../package.json')).status).toBe(404);
    expect((await http('/%2e%2e/package.json')).status).toBe(404);
    expect((await http('/api/runs', { method: 'DELETE' })).status).toBe(404);
    expect((await http(`/api/runs/${runs.dag}`, { method: 'DELETE' })).status).toBe(405);
  });

  it('runs nothing by itself: a fork or rerun needs the engine that has the runners (engine.inspect())', async () => {
    const post = (what: string, body: unknown, headers: Record<string, string> = {}) =>
      http(`/api/runs/${runs.dag}/${what}`, { method: 'POST', body: JSON.stringify(body), headers: { 'Content-Type': 'application/json', ...headers } });
    const res = await post('fork', { atStep: 'x' });
    expect(res.status).toBe(501);
    expect(res.json().error).toMatch(/open it from an engine \(engine\.inspect\(\)\)/);
    expect((await post('rerun', { node: 'a' }, { Origin: 'http://evil.example' })).status).toBe(403);
    expect((await http(`/api/runs/${runs.dag}`)).json().actions).toBe(false);
  });

  it('refuses other Host headers (DNS rebinding)', async () => {
    expect((await http('/api/runs', { headers: { Host: 'evil.example:80' } })).status).toBe(421);
  });

  it('answers only who has its token; the page keeps it as a cookie', async () => {
    const bare = (path: string, headers: Record<string, string> = {}) => http(path, { headers: { Authorization: '', ...headers } });
    expect((await bare('/api/runs')).status).toBe(401);
    expect((await bare('/')).status).toBe(401);
    expect((await bare('/api/runs', { Authorization: 'Bearer not-the-token' })).status).toBe(401);
    expect((await bare(`/api/runs?token=${inspector.token}x`)).status).toBe(401);
    const opened = await bare(`/?token=${inspector.token}`);
    expect(opened.status).toBe(200);
    const set = String(opened.headers['set-cookie']);
    expect(set).toMatch(/HttpOnly; SameSite=Strict; Path=\//);
    expect((await bare('/api/runs', { Cookie: set.split(';')[0]! })).status).toBe(200);
    // What a page needs that holds no runs loads without it.
    expect((await bare('/app.js')).status).toBe(200);
    const open = await inspect({ db, token: false });
    try {
      expect(open.url).toBe(`http://127.0.0.1:${open.port}/`);
      expect((await fetch(new URL('api/runs', open.url))).status).toBe(200);
    } finally {
      await open.close();
    }
  });

  it('shows durations rounded before they are split: never "1 m 60 s"', async () => {
    const { duration } = (await import(join(root, 'inspector', 'dom.js'))) as { duration: (ms: number) => string };
    expect([340, 999.6, 1_250, 9_999, 12_500, 59_960, 60_000, 119_999, 200_000, 3_599_600, 7_500_000, 7_199_999].map(duration)).toEqual([
      '340 ms',
      '1.00 s',
      '1.25 s',
      '10.0 s',
      '12.5 s',
      '1 m 0 s',
      '1 m 0 s',
      '2 m 0 s',
      '3 m 20 s',
      '1 h 0 m',
      '2 h 5 m',
      '2 h 0 m',
    ]);
  });

  it('draws a DAG without a stored definition with the edges its steps took', async () => {
    const page = (await http(`/api/runs/${runs.parent}`)).json();
    expect(page.definition).toBeNull();
    expect(page.steps.map((s: { node: string; parents?: string[] }) => [s.node, s.parents])).toEqual([
      ['fanout', undefined],
      ['merge', ['fanout']],
    ]);
  });

  it('answers 999 tag parameters with a clear 400, not a failure', async () => {
    const many = await http(`/api/runs?${Array.from({ length: 999 }, (_, i) => `tag=t${i}`).join('&')}`);
    expect(many.status).toBe(400);
    expect(many.json().error).toBe("At most 50 'tag' parameters (got 999)");
    expect((await http('/api/runs?tag=a&tag=b')).status).toBe(200);
  });

  it('validates what it is sent, and refuses events to ended runs and from other origins', async () => {
    const store = new NativeStore(db, 'off');
    try {
      expect((await http(`/api/runs/${runs.machine}/events`, { method: 'POST', body: '{"type":"x"}', headers: { 'Content-Type': 'text/plain' } })).status).toBe(415);
      const big = Buffer.alloc(100 * 1024, 'a');
      const tooBig = await http(`/api/runs/${runs.machine}/events`, { method: 'POST', body: big, headers: { 'Content-Type': 'application/json' } });
      expect(tooBig.status).toBe(413);
      expect((await postEvent(runs.machine, { data: 1 })).status).toBe(400);
      expect((await postEvent(runs.machine, { type: '' })).status).toBe(400);
      expect((await postEvent(runs.dag, { type: 'approve' })).status).toBe(409);
      expect((await postEvent('0190b6a4-1f00-7000-8000-000000000000', { type: 'approve' })).status).toBe(404);
      // An ended run takes no more events: refused, as engine.send refuses it.
      const ended = await postEvent(runs.machine, { type: 'nudge' });
      expect(ended.status).toBe(409);
      expect(ended.json().error).toMatch(/has already ended \(finished\); it takes no more events/);
      // A page of another origin cannot send one, whatever it sends.
      const evil = await http(`/api/runs/${runs.waiting}/events`, { method: 'POST', body: '{"type":"approve"}', headers: { 'Content-Type': 'application/json', Origin: 'http://evil.com' } });
      expect(evil.status).toBe(403);
      expect(JSON.parse(store.pendingEvents(runs.machine))).toEqual([]);
      expect(JSON.parse(store.pendingEvents(runs.waiting))).toEqual([]);
      // A valid one is stored: see 'sends an event to a waiting machine' below.
    } finally {
      store.close();
    }
  });

  it('the CLI prints its URL, explains bad arguments and a missing file', async () => {
    const cli = join(root, 'bin', 'ramus.js');
    expect(execFileSync('node', [cli, '--help'], { encoding: 'utf8' })).toMatch(/ramus inspect --db <path>/);
    const fails = (args: string[]) =>
      run('node', [cli, ...args]).then(
        () => ({ code: 0, stderr: '' }),
        (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }),
      );
    expect(await fails(['inspect'])).toMatchObject({ code: 2, stderr: expect.stringMatching(/--db <path> is required/) });
    expect(await fails(['inspect', '--db', db, '--port', 'x'])).toMatchObject({ code: 2, stderr: expect.stringMatching(/--port must be a number/) });
    expect(await fails(['frobnicate'])).toMatchObject({ code: 2, stderr: expect.stringMatching(/unknown command/) });
    expect(await fails(['inspect', '--db', join(dir, 'missing.sqlite')])).toMatchObject({ code: 1, stderr: expect.stringMatching(/no database at/) });
    expect(existsSync(join(dir, 'missing.sqlite'))).toBe(false);
    writeFileSync(join(dir, 'notes.txt'), 'not a database at all, just some text '.repeat(20));
    expect(await fails(['inspect', '--db', join(dir, 'notes.txt')])).toMatchObject({ code: 1, stderr: expect.stringMatching(/Cannot read .* as a Ramus database/) });

    const child = spawn('node', [cli, 'inspect', '--db', db], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      const line = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (c: Buffer) => {
          out += c.toString();
          if (out.includes('\n')) resolve(out.trim());
        });
        child.on('exit', (code) => reject(new Error(`exited ${code}`)));
      });
      const m = /^Ramus inspector: (http:\/\/127\.0\.0\.1:(\d+)\/)\?token=([\w-]+)$/.exec(line);
      expect(m, line).not.toBeNull();
      expect((await fetch(`${m![1]}api/runs`)).status).toBe(401);
      const res = await fetch(`${m![1]}api/runs?token=${m![3]}`);
      expect(res.status).toBe(200);
    } finally {
      child.kill('SIGTERM');
    }
  });

  it('shows the limits shared through the store, with slots held and steps waiting, and the schedules', async () => {
    const engine = new ramus.Engine({ db, durability: 'sync' });
    engine.register('noop', (async () => 1) as never);
    engine.define({ name: 'nightly', nodes: { n: { runner: 'noop' } } } as never);
    engine.limits({ llm: { concurrency: 4, rate: '60/min' } });
    engine.schedule('nightly', { cron: '0 3 * * *', timezone: 'Europe/Paris' });
    await engine.close();
    const body = (await http('/api/runs')).json() as { limits: unknown[]; schedules: unknown[] };
    expect(body.limits).toEqual([{ key: 'llm', concurrency: 4, rate: { count: 60, per: 60_000 }, running: 0, waiting: 0 }]);
    expect(body.schedules).toEqual([{ name: 'nightly', definition: 'nightly', cron: '0 3 * * *', timezone: 'Europe/Paris', input: null, tags: [], priority: 0, next: expect.any(Number) }]);
  });
});

// ---------------------------------------------------------------------------------------

// .ci/run installs Chromium; elsewhere a machine without it skips these (CI never does), and
// skip-notice-reporter.mjs says so after the summary.
describe.skipIf(chromiumMissing)('inspector in Chromium', () => {
  let browser: Browser;
  let page: Page;
  const dialogs: string[] = [];
  const errors: string[] = [];

  beforeAll(async () => {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking'],
    });
    page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    page.on('dialog', (d) => {
      dialogs.push(d.message());
      void d.dismiss();
    });
    page.on('pageerror', (e) => errors.push(e.message));
  });

  afterAll(async () => {
    await browser?.close();
    // No agent value ever ran as script, and the app itself threw nothing.
    expect(dialogs).toEqual([]);
    expect(errors).toEqual([]);
  });

  const open = async (hash: string) => {
    await page.goto(`${inspector.url}${hash}`);
    await page.locator('#live.on').waitFor();
  };
  const shot = (name: string) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
  const node = (name: string) => page.locator(`svg.graph g.node[data-node="${name}"]`);

  it('lists runs and filters them', async () => {
    await open('#/');
    await expect.poll(() => page.locator('tr.run-row').count()).toBe(7);
    expect(await page.locator('tr.run-row').first().getAttribute('data-run-id')).toBe(runs.waiting);
    await expect.poll(() => page.locator(`tr[data-run-id="${runs.big}"] td.num`).textContent()).toBe('10000');
    // The limits and schedules of the store, above the runs.
    await expect.poll(() => page.locator('table.limits tr[data-limit="llm"] td').allTextContents()).toEqual(['llm', '0', '0', '4', '60/min']);
    expect(await page.locator('table.schedules tr[data-schedule="nightly"] td').nth(2).textContent()).toBe('0 3 * * *');
    await shot('01-run-list');
    await page.selectOption('select[name=status]', 'waitingForEvent');
    await page.click('form.filters button[type=submit]');
    await expect.poll(() => page.locator('tr.run-row').count()).toBe(1);
  });

  it('draws a DAG run with each node in its state and opens a step', async () => {
    await open(`#/run/${runs.dag}`);
    await node('summarize').waitFor();
    const states: Record<string, string | null> = {};
    for (const n of ['plan', 'web', 'news', 'slow', 'summarize']) states[n] = await node(n).getAttribute('data-status');
    expect(states).toEqual({ plan: 'finished', web: 'finished', news: 'error', slow: 'cancelled', summarize: 'finished' });
    expect(await page.locator('svg.graph g.edge').count()).toBe(6);
    // Laid out left to right: parents before children.
    const x = async (n: string) => (await node(n).boundingBox())!.x;
    expect(await x('plan')).toBeLessThan(await x('news'));
    expect(await x('news')).toBeLessThan(await x('summarize'));
    // news waited for a `search` slot: drawn apart from its run.
    expect(await page.locator('.tl-row[data-node="news"] .tl-wait').count()).toBe(1);
    await shot('02-dag-run');

    await node('news').click();
    await page.locator('.step-panel .error-message').waitFor();
    expect(await page.locator('.step-panel .error-message').textContent()).toBe('Error: news API returned 503');
    expect(await page.locator('.step-panel .stack').textContent()).toContain('at fetchNews');
    expect(await page.locator('.step-panel .attempt').textContent()).toBe('1');
    await node('web').click();
    await page.locator('.step-panel .event[data-event-type="progress"]').waitFor();
    await page.fill('.step-panel .j-search >> nth=1', 'tokio');
    await expect.poll(() => page.locator('.step-panel .j-match').count()).toBeGreaterThan(0);
    await shot('03-dag-step');
  });

  it('draws a machine run with the path taken and visit counts', async () => {
    await open(`#/run/${runs.machine}`);
    await node('send').waitFor();
    const visits = async (n: string) => node(n).getAttribute('data-visits');
    expect([await visits('research'), await visits('draft'), await visits('review'), await visits('send')]).toEqual(['1', '3', '2', '1']);
    expect(await node('escalate').getAttribute('data-status')).toBe('notRun');
    expect(await node('send').getAttribute('data-current')).toBe('true');
    const edge = (from: string, to: string, event = '') => page.locator(`svg.graph g.edge[data-from="${from}"][data-to="${to}"][data-event="${event}"]`);
    expect(await edge('review', 'send', 'approve').getAttribute('data-taken')).toBe('1');
    expect(await edge('review', 'draft', 'reject').getAttribute('data-taken')).toBe('1');
    expect(await edge('draft', 'review').getAttribute('data-taken')).toBe('2');
    expect(await edge('draft', 'draft').getAttribute('data-taken')).toBe('1');
    expect(await edge('review', 'escalate', 'timeout').getAttribute('data-taken')).toBe('0');
    await shot('04-machine-run');
  });

  it('expands child runs in place', async () => {
    await open(`#/run/${runs.parent}`);
    // Without a stored definition, its edges are the parents its steps took.
    await node('fanout').waitFor();
    await expect.poll(() => page.locator('svg.graph g.edge[data-from="fanout"][data-to="merge"]').count()).toBe(1);
    // The node whose step started the runs says so; clicking it opens them in place.
    expect(await node('fanout').getAttribute('data-children')).toBe('2');
    await node('fanout').click();
    const child = page.locator('details.child').first();
    await child.locator('svg.graph g.node[data-node="fetch"]').waitFor();
    expect(await page.locator('details.child[open]').count()).toBe(2);
    // The timeline nests the child runs under the step that started them, and expands them.
    const row = page.locator('.tl-run-row').first();
    await row.locator('.tl-toggle').click();
    await expect.poll(() => page.locator('.timeline-panel .tl-row[data-node="fetch"]').count()).toBe(1);
    await shot('05-child-runs');
  });

  it('shows agent markup as text', async () => {
    await open(`#/run/${runs.xss}`);
    await node('render').click();
    await page.locator('.step-panel .event[data-event-type="html"]').waitFor();
    expect(await page.locator('.step-panel').textContent()).toContain(XSS);
    expect(await page.locator('.run-error .error-message').textContent()).toBe('Error: <script>alert(3)</script>');
    expect(await node('<b>bold</b>').count()).toBe(1);
    expect(await page.locator('main img, main b, main i, main script').count()).toBe(0);
    await shot('06-xss-as-text');
  });

  it('stays responsive on a run with 10,000 steps', async () => {
    const started = Date.now();
    await open(`#/run/${runs.big}`);
    await node('think').waitFor();
    await page.locator('.tl-row').first().waitFor();
    expect(Date.now() - started).toBeLessThan(8_000);
    expect(await node('think').getAttribute('data-visits')).toBe('3333');
    // Only the rows on screen exist.
    expect(await page.locator('.tl-row').count()).toBeLessThan(100);
    await page.locator('.tl-scroll').evaluate((el) => {
      el.scrollTop = el.scrollHeight;
    });
    await page.locator('.tl-row[data-node="done"]').waitFor();
    await page.locator('.tl-row[data-node="done"]').click();
    await expect.poll(() => page.locator('.step-panel .step-title').textContent()).toBe('done');
    await shot('07-10k-steps');
  });

  it('lists every step of a DAG too large to lay out', async () => {
    await open(`#/run/${runs.wide}`);
    await page.locator('.graph-view .note').waitFor();
    expect(await page.locator('.graph-view .note').textContent()).toMatch(/^2002 nodes: too many to lay out/);
    expect(await page.locator('.timeline .tl-header').textContent()).toContain('2002 rows');
    expect(await page.locator('.tl-row').count()).toBeLessThan(100);
  });

  it('mounts the components in another app against its own API', async () => {
    // The host app of docs/inspector.md: its own server and API, the components from
    // inspectorAssets() under /ramus/.
    const assets = inspectorAssets();
    const store = new NativeStore(db, 'off');
    const hostJs = `
      import { mountGraph, mountTimeline, mountStepPanel } from '/ramus/components.js';
      const data = await (await fetch('/my-api/run')).json();
      const panel = { view: null };
      const showStep = async (step) => {
        const detail = await (await fetch('/my-api/step/' + step.id)).json();
        if (panel.view) panel.view.update(detail);
        else panel.view = mountStepPanel(document.getElementById('step'), detail);
      };
      mountGraph(document.getElementById('graph'), data, { onSelect: (node, step) => step && showStep(step) });
      mountTimeline(document.getElementById('timeline'), data.steps, { ...data, onSelect: showStep });
      document.body.dataset.ready = 'yes';
    `;
    const host: Server = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://host');
      const reply = (type: string, body: string | Buffer) => {
        res.writeHead(200, { 'Content-Type': type });
        res.end(body);
      };
      if (url.pathname === '/') {
        return reply('text/html', '<!doctype html><link rel="stylesheet" href="/ramus/style.css"><h1>My app</h1><div id="graph"></div><div id="timeline"></div><div id="step"></div><script type="module" src="/host.js"></script>');
      }
      if (url.pathname === '/host.js') return reply('text/javascript', hostJs);
      if (url.pathname === '/my-api/run') {
        const steps = JSON.parse(store.steps(runs.dag));
        return reply('application/json', JSON.stringify({
          run: JSON.parse(store.run(runs.dag)!),
          steps,
          transitions: [],
          definition: JSON.parse(store.definition('research')!),
        }));
      }
      if (url.pathname.startsWith('/my-api/step/')) {
        const id = url.pathname.slice('/my-api/step/'.length);
        const step = JSON.parse(store.steps(runs.dag)).find((x: { id: string }) => x.id === id);
        return reply('application/json', JSON.stringify({ step, events: [], children: [] }));
      }
      const file = url.pathname.startsWith('/ramus/') ? assets.get(url.pathname.slice('/ramus'.length)) : undefined;
      if (!file) {
        res.writeHead(404).end();
        return;
      }
      reply(file.endsWith('.css') ? 'text/css' : 'text/javascript', readFileSync(file));
    });
    await new Promise<void>((resolve) => host.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = host.address() as { port: number };
      await page.goto(`http://127.0.0.1:${port}/`);
      await page.locator('body[data-ready="yes"]').waitFor();
      expect(await node('news').getAttribute('data-status')).toBe('error');
      await page.locator('.tl-row[data-node="web"]').click();
      await expect.poll(() => page.locator('.step-panel .step-title').textContent()).toBe('web');
      await shot('10-components-in-another-app');
    } finally {
      host.closeAllConnections();
      await new Promise((resolve) => host.close(resolve));
      store.close();
    }
  });

  it('sends an event to a waiting machine and follows it as it resumes', async () => {
    await open(`#/run/${runs.waiting}`);
    await page.locator('.waiting button.send-event[data-event="approve"]').waitFor();
    expect(await page.locator('.waiting button.send-event').allTextContents()).toEqual(['approve', 'reject']);
    expect(await node('review').getAttribute('data-status')).toBe('waitingForEvent');
    await page.fill('.waiting textarea.payload', '{"by": "ana@example.com"}');
    await shot('08-waiting-machine');
    await page.click('.waiting button.send-event[data-event="approve"]');
    await expect.poll(() => page.locator('.send-result.ok').count()).toBe(1);

    const store = new NativeStore(db, 'off');
    try {
      const pending = JSON.parse(store.pendingEvents(runs.waiting));
      expect(pending).toMatchObject([{ type: 'approve', data: { by: 'ana@example.com' }, deliveredAt: null }]);
    } finally {
      store.close();
    }
    // The page follows the database: the sent event shows as not taken yet…
    await page.locator('.waiting .pending li').waitFor();
    // …until the engine takes it and the run moves on.
    expect(await engineTakesPendingEvent(db, runs.waiting)).toEqual({ state: 'send', final: true });
    await expect.poll(() => page.locator('.run-head .badge').first().getAttribute('data-status'), { timeout: 5_000 }).toBe('finished');
    await expect.poll(() => node('send').getAttribute('data-visits')).toBe('1');
    expect(await page.locator('svg.graph g.edge[data-from="review"][data-to="send"][data-event="approve"]').getAttribute('data-taken')).toBe('1');
    expect(await page.locator('.waiting').isHidden()).toBe(true);
    await shot('09-machine-resumed');
  }, 30_000);

  it('the run list follows runs written while it is open', async () => {
    await open('#/');
    // Count once the list has rendered: counting an empty table first made this flaky.
    await page.locator('tr.run-row').first().waitFor();
    const before = await page.locator('tr.run-row').count();
    await produceDatabase(db); // another batch of runs, as an engine in another process would write
    await expect.poll(() => page.locator('tr.run-row').count(), { timeout: 5_000 }).toBe(before + 7);
  });
});

// ---------------------------------------------------------------------------------------
// Against the durable engine itself: a run of the research demo, and a person approving a
// waiting machine from the browser while an engine in this process holds the run. Skipped
// where the package has no Engine yet.

type EngineLike = {
  register(r: Record<string, (args: any) => unknown>): unknown;
  start(config: object, options: object): { runId: string; finished: Promise<unknown> };
  run(id: string): { status: string; output: unknown } | undefined;
  close(): Promise<void>;
};
const Engine = (ramus as unknown as { Engine?: new (options: object) => EngineLike }).Engine;

describe.skipIf(!Engine || chromiumMissing)('inspector on real engine runs', () => {
  let browser: Browser;
  let page: Page;
  let work: string;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'ramus-inspector-engine-'));
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking'],
    });
    page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  });

  afterAll(async () => {
    await browser?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it('shows a run of the research demo: every node finished, searches waiting for the semaphore', async () => {
    await run('node', [join(root, 'examples', 'research-agent.mjs')], { cwd: work });
    const demo = await inspect({ db: join(work, 'ramus.sqlite'), pollInterval: 100 });
    try {
      const { runs: list } = (await (await fetch(new URL('api/runs', demo.url), { headers: { Authorization: `Bearer ${demo.token}` } })).json()) as { runs: Array<{ id: string; name: string; steps: number }> };
      expect(list.map((r) => [r.name, r.steps])).toEqual([['research', 8]]);
      await page.goto(`${demo.url}#/run/${list[0]!.id}`);
      await page.locator('svg.graph g.node[data-node="summarize"]').waitFor();
      const statuses = await page.locator('svg.graph g.node').evaluateAll((els) => els.map((e) => e.getAttribute('data-status')));
      expect(statuses).toHaveLength(8);
      expect(new Set(statuses)).toEqual(new Set(['finished']));
      expect(await page.locator('svg.graph g.edge').count()).toBe(11);
      // Two search slots for five searches: some waited, and the timeline says so.
      expect(await page.locator('.tl-row .tl-wait').count()).toBeGreaterThan(0);
      await page.screenshot({ path: join(shots, '11-engine-research-demo.png'), fullPage: true });
    } finally {
      await demo.close();
    }
  });

  it('approves a waiting machine from the browser; the engine holding it resumes', async () => {
    const path = join(work, 'hitl.sqlite');
    const engine = new Engine!({ db: path, durability: 'sync', pollInterval: 100 });
    engine.register({
      draft: ({ input }) => ({ text: `a draft about ${input.topic}` }),
      send: ({ input, event }) => ({ sent: input.text, approvedBy: event?.data?.by ?? null }),
    });
    const started = engine.start(
      {
        name: 'approval',
        initial: 'draft',
        nodes: {
          draft: { runner: 'draft', transition: 'review' },
          review: { transition: { approve: 'send', reject: 'draft' }, timeout: { after: '7d', state: 'send' } },
          send: { runner: 'send', final: true },
        },
      },
      { input: { topic: 'engines' }, tags: ['hitl'] },
    );
    await expect.poll(() => engine.run(started.runId)?.status).toBe('waitingForEvent');
    const live = await inspect({ db: path, pollInterval: 100 });
    try {
      await page.goto(`${live.url}#/run/${started.runId}`);
      await page.locator('.waiting button.send-event[data-event="approve"]').waitFor();
      expect(await page.locator('.waiting button.send-event').allTextContents()).toEqual(['approve', 'reject']);
      // Who takes an event sent from here, and when the wait ends by itself.
      expect(await page.locator('.waiting .holder').textContent()).toMatch(new RegExp(`^Held by engine \\S+ \\(pid ${process.pid} on .+\\), its lease until `));
      expect(await page.locator('.waiting .timeout-due').textContent()).toMatch(/^Times out at .* \(in 16\d h \d+ m\)\.$/);
      await page.fill('.waiting textarea.payload', '{"by": "ana@example.com"}');
      await page.click('.waiting button.send-event[data-event="approve"]');
      await expect.poll(() => page.locator('.run-head .badge').first().getAttribute('data-status'), { timeout: 5_000 }).toBe('finished');
      expect(await started.finished).toEqual({ sent: 'a draft about engines', approvedBy: 'ana@example.com' });
      for (const state of ['draft', 'review', 'send']) {
        expect(await page.locator(`svg.graph g.node[data-node="${state}"]`).getAttribute('data-visits')).toBe('1');
      }
      expect(await page.locator('svg.graph g.edge[data-from="review"][data-to="send"][data-event="approve"]').getAttribute('data-taken')).toBe('1');
      // The time review rested waiting for the person is drawn apart from its run.
      expect(await page.locator('.tl-row[data-node="review"] .tl-rest').count()).toBe(1);
      await page.locator('svg.graph g.node[data-node="send"]').click();
      await expect.poll(() => page.locator('.step-panel').textContent()).toContain('ana@example.com');
      await page.screenshot({ path: join(shots, '12-engine-approved-from-browser.png'), fullPage: true });
    } finally {
      await live.close();
      await engine.close();
    }
  }, 30_000);

  it('edits a DAG node\u2019s output and forks a machine with another context from the browser', async () => {
    const path = join(work, 'travel.sqlite');
    const engine = new Engine!({ db: path, durability: 'sync' }) as EngineLike & {
      define(c: object): unknown;
      start(name: string, o?: object): { runId: string; finished: Promise<unknown> };
      steps(id: string): Array<{ id: string; node: string; output: unknown; supersededAt: number | null }>;
      inspect(o?: object): Promise<Inspector>;
    };
    engine.register({
      word: ({ args }) => args.word,
      join: ({ input }) => Object.keys(input).sort().map((k) => input[k]).join(' '),
      work: ({ context }) => {
        context.n += context.step;
        return context.n;
      },
      more: ((g: any) => g.context.n < 5) as any,
      big: ((g: any) => g.context.big === true) as any,
    });
    engine.define({ name: 'words', nodes: { a: { runner: 'word', args: { word: 'hello' } }, b: { runner: 'word', args: { word: 'world' } }, j: { runner: 'join', parents: ['a', 'b'] } } });
    engine.define({
      name: 'count',
      initial: 'work',
      context: { n: 0, step: 1 },
      nodes: {
        work: { runner: 'work', transition: { '': [{ state: 'work', condition: 'more' }, { state: 'big', condition: 'big' }, { state: 'done' }] } },
        done: { final: true },
        big: { final: true },
      },
    });
    const words = engine.start('words');
    expect(await words.finished).toBe('hello world');
    const count = engine.start('count');
    await count.finished;
    const live = await engine.inspect({ pollInterval: 100 });
    try {
      // A DAG: give `b` another output; `j` runs again, `a` keeps its own.
      const b = engine.steps(words.runId).find((st) => st.node === 'b')!;
      await page.goto(`${live.url}#/run/${words.runId}/step/${b.id}`);
      await page.locator('.step-panel details.section:has(.step-actions) > summary').click();
      await page.fill('.step-panel textarea.node-output', '"there"');
      await page.click('.step-panel button.set-output');
      await expect.poll(() => page.locator('.step-panel .action-result').textContent()).toBe('Set the output of b; rerunning what follows');
      await expect.poll(() => engine.run(words.runId)?.output, { timeout: 5_000 }).toBe('hello there');
      const current = engine.steps(words.runId).filter((st) => st.supersededAt === null);
      expect(current.map((st) => [st.node, st.output]).sort()).toEqual([['a', 'hello'], ['b', 'there'], ['j', 'hello there']]);

      // A machine: fork at its third step with a bigger step and the `big` ending.
      const third = engine.steps(count.runId)[2]!;
      await page.goto(`${live.url}#/run/${count.runId}/step/${third.id}`);
      await page.locator('.step-panel details.section:has(.step-actions) > summary').click();
      expect(JSON.parse(await page.locator('.step-panel textarea.fork-context').inputValue())).toEqual({ n: 2, step: 1 });
      await page.fill('.step-panel textarea.fork-context', '{"n": 2, "step": 10, "big": true}');
      await page.click('.step-panel button.fork-step');
      await page.waitForURL((u) => /#\/run\//.test(u.hash) && !u.hash.includes(count.runId));
      const forkId = decodeURIComponent(new URL(page.url()).hash.split('/')[2]!);
      await expect.poll(() => engine.run(forkId)?.status, { timeout: 5_000 }).toBe('finished');
      expect(engine.run(forkId)).toMatchObject({ output: 12, forkedFrom: { runId: count.runId, stepId: third.id } });
      await expect.poll(() => page.locator('.run-head .badge').first().getAttribute('data-status')).toBe('finished');
      expect(await page.locator('.run-head a.forked-from').getAttribute('href')).toBe(`#/run/${count.runId}/step/${third.id}`);
      await page.screenshot({ path: join(shots, '13-engine-forked-from-browser.png'), fullPage: true });

      // Writes from another origin are refused; errors name the culprit.
      const post = (what: string, body: unknown, headers: Record<string, string> = {}) =>
        fetch(new URL(`api/runs/${count.runId}/${what}`, live.url), { method: 'POST', body: JSON.stringify(body), headers: { Authorization: `Bearer ${live.token}`, 'Content-Type': 'application/json', ...headers } });
      expect((await post('fork', { atStep: third.id }, { Origin: 'http://evil.example' })).status).toBe(403);
      const wrong = await post('rerun', { node: 'work' });
      expect(wrong.status).toBe(409);
      expect(((await wrong.json()) as { error: string }).error).toMatch(/is a state machine; fork it at a step instead/);
      expect((await post('fork', { atStep: 'nope' })).status).toBe(404);
    } finally {
      await live.close();
      await engine.close();
    }
  }, 30_000);
});
