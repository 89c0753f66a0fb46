// Whether the cache tests find a Redis: REDIS_URL's (.ci/run starts one), or a
// `redis-server` on the PATH they start themselves. Without either they skip, except in CI
// (CI=true), where they fail instead; skip-notice-reporter.mjs says so at the end of the run.
import { execFileSync } from 'node:child_process';

function onPath(binary) {
  try {
    execFileSync(binary, ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export const redisMissing = !process.env.REDIS_URL && !onPath('redis-server') && process.env.CI !== 'true';
