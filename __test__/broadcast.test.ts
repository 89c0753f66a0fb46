// engine.sendWhere: one event to every waiting run that matches, here and in other engines.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { Engine } from 'ramus';

import { waitUntil, within } from './helpers.mjs';
import { pgSchema } from './engine-fixtures';

const engines: Engine[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const e of engines.splice(0)) await e.close().catch(() => {});
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

const WAIT = {
  name: 'subscription',
  initial: 'active',
  nodes: {
    active: { transition: { cancelled: 'ended', renewed: 'active' } },
    ended: { runner: 'bye', final: true },
  },
};

function engineOn(db: string): Engine {
  const e = new Engine({ db, durability: 'batched', pollInterval: 5 });
  e.register('bye', (async ({ event }: any) => `ended: ${event.data.reason}`) as any);
  engines.push(e);
  return e;
}

describe('sendWhere', () => {
  test('reaches every one of 1,000 waiting runs with the tags, and no other', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ramus-broadcast-'));
    dirs.push(dir);
    const db = pgSchema('broadcast') ?? path.join(dir, 'runs.sqlite');
    const here = engineOn(db);
    const there = engineOn(db);
    const runs = [];
    for (let i = 0; i < 1000; i++) {
      const engine = i % 4 === 3 ? there : here;
      runs.push({ i, run: engine.start(WAIT, { tags: [`user:${i % 2 === 0 ? 7 : 8}`, 'plan:pro'] }) });
    }
    here.flush();
    there.flush();
    await waitUntil(() => here.waiting({ tags: ['plan:pro'] }).length === 1000, 'all waiting', 10_000);

    const sent = await here.sendWhere({ tags: ['user:7', 'plan:pro'], name: 'subscription' }, { type: 'cancelled', data: { reason: 'account closed' } });
    expect(sent).toBe(500);
    // Runs live here took it at once; those of the other engine get it from the store.
    for (const { i, run } of runs) {
      if (i % 2 === 0) expect(await within(run.finished, 10_000, `run ${i}`)).toBe('ended: account closed');
    }
    expect(here.waiting({ tags: ['user:8'] })).toHaveLength(500);
    expect(here.waiting({ tags: ['user:7'] })).toHaveLength(0);
    // Nothing matches: nothing sent.
    expect(await here.sendWhere({ tags: ['user:7'] }, { type: 'cancelled', data: { reason: 'again' } })).toBe(0);
    expect(await here.sendWhere({ name: 'other' }, { type: 'cancelled' })).toBe(0);
  }, 60_000);

  test('bad arguments name the culprit', async () => {
    const e = new Engine({ db: ':memory:' });
    engines.push(e);
    await expect(e.sendWhere(null as any, { type: 'x' })).rejects.toThrow('filter must be an object');
    await expect(e.sendWhere({}, { type: '' })).rejects.toThrow('event.type must be a non-empty string');
  });
});
