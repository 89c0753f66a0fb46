// The crash test at a size that keeps CI fast; `npm run crash` runs it large.
import { describe, expect, it } from 'vitest';

// @ts-expect-error: a plain ESM script without types
import { crashTest } from '../scripts/crash-test.mjs';

interface Report {
  runs: number;
  steps: number;
  interrupted: number;
  killed: number;
  seed: number;
  problems: string[];
}

describe('crash test: SIGKILL at random points, restart, resume', () => {
  it.each(['sync', 'batched'] as const)('%s: every job completes, each step is stored once, no finished node runs again', async (durability) => {
    const report = (await crashTest({ jobs: 30, kills: 8, durability, maxKillMs: 80 })) as Report;
    expect(report.problems, `seed ${report.seed}`).toEqual([]);
    expect(report.runs).toBe(30);
    // The kills must have landed while work was in flight, or the test proves nothing. In
    // 'sync' a step's start is committed before its runner is called, so some kill finds
    // steps running; in 'batched' the writer may not have committed them yet.
    expect(report.killed).toBeGreaterThan(0);
    if (durability === 'sync') expect(report.interrupted).toBeGreaterThan(0);
  }, 60_000);
});
