#!/usr/bin/env node
// npm's `prepare` script (package.json). npm runs it
//   - on `npm install` / `npm ci` in this repository: a contributor's first command on a fresh
//     clone, and .ci/run's `npm ci`. That builds the engine from source (a release build:
//     cargo decides what is out of date) and the typed face, as before;
//   - before `npm pack` / `npm publish`: only the typed face is built. The engine ships in the
//     per-platform packages (npm/<platform>/), which `npm run package` packs;
//   - in this folder when another project installs it as a dependency (`npm install ../ramus`):
//     no Rust build either. It uses the engine already built here, and says so when there
//     is none.
// It never runs for a user who installs the package from the registry or a tarball: npm
// runs no `prepare` for those, and the published package.json has no scripts at all.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.join(__dirname, '..');
const real = (p) => {
  try {
    return fs.realpathSync(p);
  } catch {
    return path.resolve(p);
  }
};
const here = real(ROOT);
const from = process.env.INIT_CWD ? real(process.env.INIT_CWD) : here;
const command = process.env.npm_command ?? '';
/** npm was run in this repository (or below it), not in a project that installs it. */
const contributor = from === here || from.startsWith(here + path.sep);

function npmRun(script) {
  const execpath = process.env.npm_execpath;
  const [cmd, args] = execpath && /\.c?js$/.test(execpath) ? [process.execPath, [execpath, 'run', script]] : ['npm', ['run', script]];
  const res = spawnSync(cmd, args, { cwd: ROOT, stdio: 'inherit', shell: process.platform === 'win32' && cmd === 'npm' });
  if (res.error) throw res.error;
  if (res.status !== 0) process.exit(res.status ?? 1);
}

function has(cmd) {
  return spawnSync(cmd, ['--version'], { stdio: 'ignore', shell: process.platform === 'win32' }).status === 0;
}

function log(message) {
  process.stderr.write(`ramus prepare: ${message}\n`);
}

if (command === 'pack' || command === 'publish') {
  log(`npm ${command}: building the typed face only; the engine binary ships in ramus-<platform> (see \`npm run package\`).`);
  npmRun('build:ts');
} else if (!contributor) {
  // Installed into another project from this folder: build nothing heavy.
  const binaries = fs.readdirSync(ROOT).filter((f) => f.endsWith('.node'));
  if (!fs.existsSync(path.join(ROOT, 'lib', 'index.js'))) {
    if (fs.existsSync(path.join(ROOT, 'node_modules', 'typescript'))) npmRun('build:ts');
    else log(`${ROOT}/lib is missing: run \`npm install\` in ${ROOT} first.`);
  }
  if (binaries.length === 0) log(`no engine is built in ${ROOT}: run \`npm run build\` there (it needs Rust), or install the published package (\`npm install ramus\`).`);
} else {
  if (!has('cargo')) {
    log('building the engine from source needs Rust (cargo was not found on PATH): install it from https://rustup.rs and run `npm install` again.');
    log('To use Ramus in a project without Rust, install the published package instead: `npm install ramus`.');
    process.exit(1);
  }
  npmRun('build');
}
