// A vitest reporter (vitest.config.mjs) that says loudly, after the summary, that the browser
// tests were skipped and how to run them, instead of one more "skipped" in the counts.
import { CHROMIUM, chromiumMissing } from './chromium.mjs';

export default class SkipNoticeReporter {
  onTestRunEnd(testModules) {
    if (!chromiumMissing) return;
    let skipped = 0;
    for (const mod of testModules) {
      if (!/inspector\.test\.ts$/.test(mod.moduleId)) continue;
      for (const t of mod.children.allTests()) if (t.result().state === 'skipped') skipped += 1;
    }
    if (skipped === 0) return;
    const rule = '='.repeat(78);
    process.stderr.write(
      [
        '',
        rule,
        ` ${skipped} BROWSER TESTS WERE SKIPPED (__test__/inspector.test.ts): no Chromium at ${CHROMIUM}.`,
        " The inspector's web app was not tested. To run them, install Chromium",
        ' (Debian/Ubuntu: apt-get install chromium, as .ci/run does) or point RAMUS_CHROMIUM',
        ' at a Chromium or Chrome binary, then: npm test (or npx vitest run __test__/inspector.test.ts).',
        rule,
        '',
      ].join('\n') + '\n',
    );
  }
}
