// Cron schedules (engine.schedule): each tick's run is enqueued once however many workers
// look, in the schedule's time zone; missed ticks are not made up.
import { describe, expect, test } from 'vitest';
import { Engine, TestClock, type Worker } from 'ramus';

import { engineFixtures } from './engine-fixtures';
// @ts-expect-error: plain ESM helpers without types
import { waitUntil } from './helpers.mjs';

const { open } = engineFixtures('ramus-schedule-');
const T0 = Date.UTC(2026, 0, 1); // a Thursday, 00:00 UTC
const DIGEST = { name: 'digest', nodes: { send: { runner: 'send' } } };

function engineOn(db: string | undefined, clock: TestClock): Engine {
  const e = open({ durability: 'sync', clock, ...(db ? { db } : {}) });
  e.register('send', (async ({ rootInput }: any) => `digest for ${rootInput.team}`) as any);
  e.define(DIGEST);
  return e;
}

describe('schedules', () => {
  test('three workers on one store start each tick once; missed ticks are not made up', async () => {
    const clocks = [new TestClock(T0), new TestClock(T0), new TestClock(T0)];
    const a = engineOn(undefined, clocks[0]!);
    const engines = [a, engineOn(a.db, clocks[1]!), engineOn(a.db, clocks[2]!)];
    expect(a.schedule('digest', { cron: '*/5 * * * *', input: { team: 'core' }, tags: ['cron'] })).toEqual({ name: 'digest', next: new Date(T0 + 5 * 60_000) });
    const workers: Worker[] = engines.map((e) => e.work({ pollInterval: 3_600_000 }));
    const tick = async (to: number) => {
      for (const c of clocks) await c.advanceTo(to);
      return (await Promise.all(workers.map((w) => w.poll()))).reduce((x, y) => x + y, 0);
    };
    expect(await tick(T0 + 4 * 60_000)).toBe(0);
    expect(await tick(T0 + 5 * 60_000)).toBe(1);
    await waitUntil(() => a.runs({ name: 'digest' }).every((r) => r.status === 'finished'), 'the first tick runs');
    // Three ticks pass with no worker looking: one run, then the next tick after now. The
    // runs are counted, not what these polls took: a worker whose run ended looks for work
    // by itself a few ms later (seen taking the tick's run on PostgreSQL), and more polls
    // must not make up the missed ticks.
    await tick(T0 + 20 * 60_000 + 30_000);
    for (let i = 0; i < 3; i++) await Promise.all(workers.map((w) => w.poll()));
    expect(a.runs({ name: 'digest' }).length).toBe(2);
    await waitUntil(() => a.runs({ name: 'digest' }).every((r) => r.status === 'finished'), 'the second tick runs');
    expect(a.runs({ name: 'digest' }).map((r) => [r.output, r.tags])).toEqual([
      ['digest for core', ['cron']],
      ['digest for core', ['cron']],
    ]);
    expect(a.schedules()).toMatchObject([{ name: 'digest', definition: 'digest', cron: '*/5 * * * *', next: new Date(T0 + 25 * 60_000) }]);
    a.unschedule('digest');
    expect(a.schedules()).toEqual([]);
    expect(await tick(T0 + 30 * 60_000)).toBe(0);
    await Promise.all(workers.map((w) => w.stop()));
  });

  test('a schedule reads its cron in its time zone', () => {
    const engine = engineOn(undefined, new TestClock(T0));
    // Monday 2026-01-05 09:00 in Paris is 08:00 UTC.
    expect(engine.schedule('digest', { cron: '0 9 * * 1', timezone: 'Europe/Paris' }).next).toEqual(new Date(Date.UTC(2026, 0, 5, 8)));
    expect(engine.schedule('weekly', { cron: '@weekly', definition: 'digest' }).next).toEqual(new Date(Date.UTC(2026, 0, 4)));
  });

  test('setting a schedule again at each start keeps a due tick; changing its cron moves it', async () => {
    const clock = new TestClock(T0);
    const engine = engineOn(undefined, clock);
    engine.schedule('digest', { cron: '*/5 * * * *', input: { team: 'a' } });
    await clock.advanceTo(T0 + 6 * 60_000);
    // A process restarts and sets its schedules again: the 00:05 tick nobody ran stays due.
    expect(engine.schedule('digest', { cron: '*/5 * * * *', input: { team: 'b' } }).next).toEqual(new Date(T0 + 5 * 60_000));
    const worker = engine.work({ pollInterval: 3_600_000 });
    expect(await worker.poll()).toBe(1);
    await waitUntil(() => engine.runs({ name: 'digest' })[0]?.status === 'finished', 'the due tick runs');
    expect(engine.runs({ name: 'digest' })[0]!.output).toBe('digest for b');
    expect(engine.schedule('digest', { cron: '0 * * * *' }).next).toEqual(new Date(T0 + 60 * 60_000));
    await worker.stop();
  });

  test('bad schedules are named', () => {
    const engine = engineOn(undefined, new TestClock(T0));
    expect(() => engine.schedule('digest', { cron: '0 9 * *' })).toThrow(/has 4 fields/);
    expect(() => engine.schedule('digest', { cron: '0 25 * * *' })).toThrow(/25 in its hour field, outside 0-23/);
    expect(() => engine.schedule('digest', { cron: '0 9 * * *', timezone: 'Mars/Olympus' })).toThrow(/unknown time zone "Mars\/Olympus"/);
    expect(() => engine.schedule('nope', { cron: '0 9 * * *' })).toThrow(/No definition named 'nope'/);
    expect(() => engine.schedule('digest', {} as never)).toThrow(/options.cron must be a cron expression/);
  });
});
