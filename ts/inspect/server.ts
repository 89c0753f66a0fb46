// The inspector's HTTP server: a JSON API over a run database, the web app's static files,
// and a change feed (Server-Sent Events). node:http only, so the package gains no server
// dependency.
//
// Security model: it binds loopback by default and trusts no value that came from an agent.
// Reads go through NativeStore's read-only connection (parameterized SQL in Rust); the only
// write is storing an event sent to a run. Everything is served with a CSP that forbids
// inline script, and the UI only ever sets agent data as text.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import type { AddressInfo } from 'node:net';

import { native } from '../native';
import { ID, RUN_STATUSES, RunReader } from './data';

export interface InspectOptions {
  /** The run database (a file an engine writes, possibly from another process). */
  db: string;
  /** The port; 0 or absent picks a free one. */
  port?: number;
  /** The interface to bind; loopback unless you mean to expose runs to your network. */
  host?: string;
  /** How often to look for commits, in ms (default 500). */
  pollInterval?: number;
  /**
   * What a request must carry to read runs or send events: a new random token by default
   * (in `url`, as `?token=`, which the page keeps as a cookie); `false` for none.
   */
  token?: string | false;
  /**
   * What the page may do to runs besides sending events: given by `engine.inspect()`,
   * whose engine holds the runners a fork or rerun needs. A plain `inspect({ db })` has
   * none, and its page shows no such buttons.
   */
  actions?: InspectActions;
}

/** Run changes the page can ask for; each resolves with the id of the run that goes on. */
export interface InspectActions {
  fork(runId: string, options: { atStep: string; input?: unknown; context?: unknown; output?: unknown }): Promise<string>;
  rerun(runId: string, options: { node: string; output?: unknown }): Promise<string>;
  cancelNode(runId: string, node: string): void;
}

export interface Inspector {
  /** The page, with its token: what to open. */
  url: string;
  /** The token API requests carry (`Authorization: Bearer <token>`, or the page's cookie). */
  token: string | undefined;
  port: number;
  host: string;
  close(): Promise<void>;
}

const TOKEN_COOKIE = 'ramus_inspector';

function bearer(req: http.IncomingMessage): string | undefined {
  const m = /^Bearer (\S+)$/.exec(String(req.headers.authorization ?? ''));
  return m?.[1];
}

function cookie(req: http.IncomingMessage, name: string): string | undefined {
  for (const part of String(req.headers.cookie ?? '').split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === name) return v.join('=');
  }
  return undefined;
}

/** Compared in constant time, so the token cannot be guessed a character at a time. */
function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** The largest request body accepted (an event's JSON payload). */
export const MAX_BODY = 64 * 1024;

const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

const SECURITY_HEADERS: Record<string, string> = {
  'Content-Security-Policy': CSP,
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'X-Frame-Options': 'DENY',
  'Cross-Origin-Resource-Policy': 'same-origin',
};

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
};

/** Where the web app's files are: `inspector/` at the package root (lib/inspect/ → ../../). */
export const INSPECTOR_DIR = path.join(__dirname, '..', '..', 'inspector');

/**
 * The UI's static files by URL path: the files of `inspector/` and the layout library from
 * node_modules. Another app can serve the components from this table (see docs/inspector.md).
 */
export function inspectorAssets(): Map<string, string> {
  const files = new Map<string, string>();
  for (const name of fs.readdirSync(INSPECTOR_DIR)) {
    if (TYPES[path.extname(name)]) files.set(`/${name}`, path.join(INSPECTOR_DIR, name));
  }
  files.set('/', path.join(INSPECTOR_DIR, 'index.html'));
  const dagre = path.dirname(require.resolve('@dagrejs/dagre/package.json'));
  files.set('/vendor/dagre.js', path.join(dagre, 'dist', 'dagre.esm.js'));
  return files;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function send(res: http.ServerResponse, status: number, body: string | Buffer, type: string, extra: Record<string, string> = {}): void {
  res.writeHead(status, { ...SECURITY_HEADERS, 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), ...extra });
  res.end(body);
}

function sendJson(req: http.IncomingMessage, res: http.ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  // The run page re-asks after every commit to the file; an unchanged run costs a 304.
  const etag = `"${createHash('sha1').update(body).digest('base64url')}"`;
  if (status === 200 && req.headers['if-none-match'] === etag) {
    res.writeHead(304, { ...SECURITY_HEADERS, ETag: etag, 'Cache-Control': 'no-cache' });
    res.end();
    return;
  }
  send(res, status, body, 'application/json; charset=utf-8', { 'Cache-Control': 'no-cache', ETag: etag });
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = Number(req.headers['content-length'] ?? 0) > MAX_BODY;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY) tooLarge = true;
      // Drain a moderately oversized body so the client reads our 413 instead of a reset;
      // past that, stop reading altogether.
      if (size > 16 * MAX_BODY) req.destroy();
      if (!tooLarge) chunks.push(chunk);
    });
    req.on('end', () => {
      if (tooLarge) reject(new HttpError(413, `Request body over ${MAX_BODY} bytes`));
      else resolve(Buffer.concat(chunks).toString('utf8'));
    });
    req.on('error', reject);
  });
}

/** A time filter: epoch ms, or anything `Date.parse` reads (ISO 8601). */
function parseTime(name: string, v: string | null): number | undefined {
  if (v === null || v === '') return undefined;
  const t = /^\d+$/.test(v) ? Number(v) : Date.parse(v);
  if (!Number.isFinite(t)) throw new HttpError(400, `Bad '${name}': expected epoch milliseconds or an ISO date`);
  return t;
}

function runQuery(params: URLSearchParams): string {
  const status = params.get('status') || undefined;
  if (status !== undefined && !(RUN_STATUSES as readonly string[]).includes(status)) {
    throw new HttpError(400, `Unknown status '${status}' (expected one of ${RUN_STATUSES.join(', ')})`);
  }
  const limitText = params.get('limit');
  const limit = limitText ? Number(limitText) : 200;
  if (!Number.isInteger(limit) || limit < 1 || limit > 5000) throw new HttpError(400, "Bad 'limit': expected 1 to 5000");
  return JSON.stringify({
    nameContains: params.get('name') || undefined,
    status,
    tags: tagsOf(params),
    since: parseTime('since', params.get('since')),
    until: parseTime('until', params.get('until')),
    topLevel: params.get('all') !== '1',
    limit,
  });
}

/** The `tag` parameters: a few, each a tag a run must carry. */
function tagsOf(params: URLSearchParams): string[] {
  const tags = params.getAll('tag').filter((t) => t !== '');
  if (tags.length > MAX_TAGS) throw new HttpError(400, `At most ${MAX_TAGS} 'tag' parameters (got ${tags.length})`);
  return tags;
}

const MAX_TAGS = 50;

function checkId(id: string): string {
  if (!ID.test(id)) throw new HttpError(404, 'No such run');
  return id;
}

/** Serve the inspector for the database at `db`. Resolves once it listens. */
export async function inspect(options: InspectOptions): Promise<Inspector> {
  const db = options.db;
  if (typeof db !== 'string' || db === '') throw new TypeError('inspect: `db` must be the path of a Ramus database');
  const onServer = /^postgres(ql)?:\/\//.test(db);
  if (db === ':memory:' || (!onServer && !fs.existsSync(db))) throw new Error(`No Ramus database at ${db}`);
  // Opening a store migrates the file: make sure it is a Ramus database first, so a wrong
  // --db never turns somebody's SQLite file into one.
  let schema: number | null;
  try {
    schema = native.NativeStore.probe(db);
  } catch (e) {
    throw new Error(`Cannot read ${db} as a Ramus database: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (schema === null) throw new Error(`${db} is not a Ramus database (it has no meta table)`);
  const host = options.host ?? '127.0.0.1';
  const port = options.port ?? 0;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RangeError(`inspect: bad port ${String(options.port)}`);
  const poll = options.pollInterval ?? 500;
  if (options.token !== undefined && options.token !== false && (typeof options.token !== 'string' || !/^[\w-]{16,}$/.test(options.token))) {
    throw new TypeError('inspect: token must be false or at least 16 letters, digits, - or _');
  }
  const token = options.token === false ? undefined : (options.token ?? randomBytes(24).toString('base64url'));

  const store = new native.NativeStore(db, 'sync');
  const reader = new RunReader(store);
  const assets = inspectorAssets();
  let version = 0;
  let seen = store.dataVersion();
  const feeds = new Set<http.ServerResponse>();

  const timer = setInterval(() => {
    let now: number;
    try {
      now = store.dataVersion();
    } catch {
      return;
    }
    if (now === seen) return;
    seen = now;
    version += 1;
    for (const res of feeds) res.write(`event: change\ndata: ${JSON.stringify({ version })}\n\n`);
  }, poll);
  timer.unref();
  const heartbeat = setInterval(() => {
    for (const res of feeds) res.write(': keep-alive\n\n');
  }, 15_000);
  heartbeat.unref();

  // Undefined when bound beyond loopback: whoever did that chose to be reached by any name.
  let allowedHosts: Set<string> | undefined = new Set();

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    // A page on another site can make the browser send requests here; a DNS name that
    // rebinds to 127.0.0.1 would then be same-origin to it. Only our own Host is served.
    if (allowedHosts && !allowedHosts.has(String(req.headers.host ?? '').toLowerCase())) {
      throw new HttpError(421, 'Unexpected Host header');
    }
    const url = new URL(req.url ?? '/', 'http://inspector');
    const parts = url.pathname.split('/').filter(Boolean);
    const method = req.method === 'HEAD' ? 'GET' : (req.method ?? 'GET');
    // Runs hold what agents saw and said: the page and the API answer only who has the
    // token (any local process or page can reach a loopback port). The scripts and styles
    // hold nothing and load without it.
    const page = parts[0] !== 'api' && (url.pathname === '/' || url.pathname === '/index.html');
    if (token !== undefined && (page || parts[0] === 'api')) {
      const given = url.searchParams.get('token') ?? bearer(req) ?? cookie(req, TOKEN_COOKIE);
      if (given === undefined || !sameSecret(given, token)) {
        throw new HttpError(401, 'This inspector needs its token: open the URL it printed (it ends in ?token=…)');
      }
      if (page && url.searchParams.has('token')) res.setHeader('Set-Cookie', `${TOKEN_COOKIE}=${token}; HttpOnly; SameSite=Strict; Path=/`);
    }

    if (parts[0] !== 'api') {
      if (method !== 'GET') throw new HttpError(405, 'Method not allowed');
      const file = assets.get(url.pathname);
      if (!file) throw new HttpError(404, 'Not found');
      const body = await fs.promises.readFile(file);
      send(res, 200, body, TYPES[path.extname(file)] ?? 'application/octet-stream', { 'Cache-Control': 'no-cache' });
      return;
    }

    if (parts.length === 2 && parts[1] === 'runs' && method === 'GET') {
      const runs = JSON.parse(store.runList(runQuery(url.searchParams))) as unknown;
      const { limits, schedules } = JSON.parse(store.queueState(Date.now())) as { limits: unknown[]; schedules: unknown[] };
      sendJson(req, res, 200, { runs, limits, schedules, version });
      return;
    }
    if (parts.length === 2 && parts[1] === 'live' && method === 'GET') {
      res.writeHead(200, { ...SECURITY_HEADERS, 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: 'keep-alive' });
      res.write(`retry: 1000\nevent: hello\ndata: ${JSON.stringify({ version })}\n\n`);
      feeds.add(res);
      req.on('close', () => feeds.delete(res));
      return;
    }
    if (parts[1] === 'runs' && parts.length >= 3) {
      const id = checkId(parts[2]!);
      if (parts.length === 3 && method === 'GET') {
        const page = reader.run(id, version);
        if (!page) throw new HttpError(404, 'No such run');
        sendJson(req, res, 200, { ...page, actions: options.actions !== undefined });
        return;
      }
      if (parts.length === 4 && ['fork', 'rerun', 'cancel-node'].includes(parts[3]!) && method === 'POST') {
        await act(req, res, id, parts[3]!);
        return;
      }
      if (parts.length === 5 && parts[3] === 'steps' && method === 'GET') {
        const stepId = parts[4]!;
        const step = ID.test(stepId) ? reader.step(id, stepId, version) : undefined;
        if (!step) throw new HttpError(404, 'No such step');
        sendJson(req, res, 200, step);
        return;
      }
      if (parts.length === 4 && parts[3] === 'events' && method === 'POST') {
        await sendEvent(req, res, id);
        return;
      }
      if (parts.length <= 5) throw new HttpError(405, 'Method not allowed');
    }
    throw new HttpError(404, 'Not found');
  }

  /** The JSON object a write carries, once it is known to come from this page. */
  async function writeBody(req: http.IncomingMessage): Promise<Record<string, unknown>> {
    // A write from a page of another origin is refused outright (browsers send `Origin` on
    // every POST), whatever its content type.
    const origin = req.headers.origin;
    if (origin !== undefined) {
      let from = '';
      try {
        from = new URL(origin).host.toLowerCase();
      } catch {
        // `null` (a sandboxed or file page), or no URL: not this page.
      }
      if (from !== String(req.headers.host ?? '').toLowerCase()) throw new HttpError(403, `Refused: a request from ${origin} cannot change runs here`);
    }
    // A cross-site form can post text/plain without a preflight; JSON needs one, and no
    // CORS header is ever sent, so only our own page can send events.
    const type = String(req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (type !== 'application/json') throw new HttpError(415, 'Send the event as application/json');
    const body = await readBody(req);
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch {
      throw new HttpError(400, 'The body is not JSON');
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new HttpError(400, 'Expected a JSON object');
    return parsed as Record<string, unknown>;
  }

  /** Fork a run at a step, rerun (or set the output of) a DAG node, or cancel one. */
  async function act(req: http.IncomingMessage, res: http.ServerResponse, id: string, what: string): Promise<void> {
    const body = await writeBody(req);
    const actions = options.actions;
    if (!actions) throw new HttpError(501, 'This inspector reads a database and runs nothing: open it from an engine (engine.inspect()) to fork, rerun or cancel, with its runners');
    const text = (key: string): string => {
      const v = body[key];
      if (typeof v !== 'string' || v === '' || v.length > 200) throw new HttpError(400, `'${key}' must be a non-empty string`);
      return v;
    };
    try {
      if (what === 'fork') {
        const runId = await actions.fork(id, { atStep: text('atStep'), input: body['input'], context: body['context'], output: body['output'] });
        sendJson(req, res, 201, { runId });
      } else if (what === 'rerun') {
        const runId = await actions.rerun(id, { node: text('node'), output: body['output'] });
        sendJson(req, res, 201, { runId });
      } else {
        actions.cancelNode(id, text('node'));
        sendJson(req, res, 200, { runId: id });
      }
    } catch (e) {
      if (e instanceof HttpError) throw e;
      const code = (e as { code?: string }).code;
      const status = code === 'ERR_NO_RUN' || code === 'ERR_NO_STEP' ? 404 : code === 'ERR_INVALID_ARGUMENT' || e instanceof TypeError ? 400 : 409;
      throw new HttpError(status, e instanceof Error ? e.message : String(e));
    }
  }

  async function sendEvent(req: http.IncomingMessage, res: http.ServerResponse, id: string): Promise<void> {
    const event = (await writeBody(req)) as { type?: unknown; data?: unknown };
    if (typeof event.type !== 'string' || event.type.trim() === '' || event.type.length > 200) {
      throw new HttpError(400, "'type' must be a non-empty string of at most 200 characters");
    }
    const text = store.run(id);
    if (text === null) throw new HttpError(404, 'No such run');
    const run = JSON.parse(text) as { kind: string; status: string; name: string };
    if (run.kind !== 'machine') throw new HttpError(409, 'Only state machine runs take events');
    // As `engine.send` refuses it: an ended run would keep the event pending forever.
    if (['finished', 'error', 'cancelled'].includes(run.status)) {
      throw new HttpError(409, `Run ${id} (${run.name}) has already ended (${run.status}); it takes no more events`);
    }
    const data = event.data === undefined ? undefined : JSON.stringify(event.data);
    const eventId = store.sendEvent(id, event.type, data, false, false);
    sendJson(req, res, 201, { id: eventId });
  }

  const server = http.createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      const status = e instanceof HttpError ? e.status : 500;
      const message = e instanceof Error ? e.message : String(e);
      if (res.headersSent) {
        res.destroy();
        return;
      }
      sendJson(req, res, status, { error: message });
    });
  });
  server.keepAliveTimeout = 5_000;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  allowedHosts = new Set([`${shown}:${address.port}`, `localhost:${address.port}`, `127.0.0.1:${address.port}`, `[::1]:${address.port}`]);
  if (host !== address.address) allowedHosts.add(`${host.toLowerCase()}:${address.port}`);
  if (!/^(127\.|::1$|localhost$)/.test(host) && address.address !== '::1') allowedHosts = undefined;
  const url = `http://${shown}:${address.port}/${token === undefined ? '' : `?token=${token}`}`;

  let closed: Promise<void> | undefined;
  return {
    url,
    token,
    port: address.port,
    host: address.address,
    close() {
      closed ??= new Promise<void>((resolve) => {
        clearInterval(timer);
        clearInterval(heartbeat);
        for (const res of feeds) res.end();
        feeds.clear();
        server.close(() => {
          store.close();
          resolve();
        });
        server.closeAllConnections();
      });
      return closed;
    },
  };
}
