// A vitest reporter (vitest.config.mjs) that says loudly, after the summary, that tests
// needing Chromium or Redis were skipped and how to run them, instead of one more "skipped"
// in the counts.
import { CHROMIUM, chromiumMissing } from './chromium.mjs';
import { redisMissing } from './redis.mjs';

function skippedIn(testModules, file) {
  let skipped = 0;
  for (const mod of testModules) {
    if (!file.test(mod.moduleId)) continue;
    for (const t of mod.children.allTests()) if (t.result().state === 'skipped') skipped += 1;
  }
  return skipped;
}

function notice(lines) {
  const rule = '='.repeat(78);
  process.stderr.write(['', rule, ...lines, rule, ''].join('\n') + '\n');
}

export default class SkipNoticeReporter {
  onTestRunEnd(testModules) {
    const browser = chromiumMissing ? skippedIn(testModules, /inspector\.test\.ts$/) : 0;
    if (browser > 0) {
      notice([
        ` ${browser} BROWSER TESTS WERE SKIPPED (__test__/inspector.test.ts): no Chromium at ${CHROMIUM}.`,
        " The inspector's web app was not tested. To run them, install Chromium",
        ' (Debian/Ubuntu: apt-get install chromium, as .ci/run does) or point RAMUS_CHROMIUM',
        ' at a Chromium or Chrome binary, then: npm test (or npx vitest run __test__/inspector.test.ts).',
      ]);
    }
    const redis = redisMissing ? skippedIn(testModules, /cache\.test\.ts$/) : 0;
    if (redis > 0) {
      notice([
        ` ${redis} REDIS TEST WAS SKIPPED (__test__/cache.test.ts): no redis-server on the PATH and no REDIS_URL.`,
        ' To run it, install Redis (Debian/Ubuntu: apt-get install redis-server, as .ci/run does)',
        ' or set REDIS_URL, then: npm test (or npx vitest run __test__/cache.test.ts).',
      ]);
    }
  }
}
