#!/usr/bin/env node
// The second pass of `npm test`: the suites that touch the store, again on PostgreSQL.
// `RAMUS_TEST_PG` names the server's database (.ci/run starts one); each test gets a schema
// of its own there. Without it the pass is skipped, loudly.
import { spawnSync } from 'node:child_process';

const url = process.env.RAMUS_TEST_PG;
if (!url) {
  console.error('\n*** The PostgreSQL pass was SKIPPED: set RAMUS_TEST_PG=postgres://user@host:port/db (.ci/run starts a server) ***\n');
  process.exit(0);
}

// The JS suites whose databases follow RAMUS_TEST_PG (engine-fixtures, or their own
// helper) and that read the store only through the package: engines, queues, workers,
// limits, cron, leases across processes, broadcast, time travel and the scale-out torture test.
const suites = [
  '__test__/engine.test.ts',
  '__test__/engine-robust.test.ts',
  '__test__/engine-strict.test.ts',
  '__test__/engine-regressions.test.ts',
  '__test__/queue.test.ts',
  '__test__/limits.test.ts',
  '__test__/schedule.test.ts',
  '__test__/leases.test.ts',
  '__test__/broadcast.test.ts',
  '__test__/travel.test.ts',
  '__test__/torture.test.ts',
];

function run(cmd, args) {
  console.log(`\n[postgres] ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { stdio: 'inherit', env: process.env });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

run('cargo', ['test', '-p', 'ramus-store']);
run('npx', ['vitest', 'run', ...suites]);
