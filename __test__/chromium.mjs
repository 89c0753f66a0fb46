// Where the browser tests (inspector.test.ts) find Chromium, and whether they skip. .ci/run
// installs Debian's /usr/bin/chromium; RAMUS_CHROMIUM points them at another Chromium or
// Chrome binary. Without one they skip, except in CI (CI=true), where they fail instead;
// skip-notice-reporter.mjs says so at the end of the run.
import { existsSync } from 'node:fs';

export const CHROMIUM = process.env.RAMUS_CHROMIUM || '/usr/bin/chromium';
export const chromiumMissing = !existsSync(CHROMIUM) && process.env.CI !== 'true';
