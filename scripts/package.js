#!/usr/bin/env node
// `npm run package [-- --out <dir>] [--all] [--no-build]`: writes the npm tarballs into <dir>
// (default dist/):
//   - ramus-<version>.tgz, the main package: the typed face (lib/), napi's loader (index.js),
//     the inspector, and `optionalDependencies` on every platform package of napi.targets,
//     at this version (what `napi pre-publish` writes). Its package.json keeps no scripts and
//     no devDependencies: installing it runs nothing;
//   - ramus-<platform>-<version>.tgz for this machine's platform (with --all: for every
//     target, as the release workflow does after `napi artifacts` put each binary in
//     npm/<platform>/), holding only the prebuilt engine.
// The repository's files are not touched: both packages are staged in a temporary folder.
// Before packing, the typed face is rebuilt from scratch (lib/ removed first, so a module
// deleted from ts/ cannot linger); --no-build packs lib/ as it is (the package test does,
// while the rest of the suite reads lib/). The engine is not built: `npm run build` does that.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.join(__dirname, '..');
const args = process.argv.slice(2);
const flag = (name) => args.includes(name);
const outIndex = args.indexOf('--out');
const OUT = path.resolve(outIndex >= 0 ? args[outIndex + 1] ?? '' : path.join(ROOT, 'dist'));

function fail(message) {
  process.stderr.write(`npm run package: ${message}\n`);
  process.exit(1);
}

function run(cmd, argv, cwd, capture = false) {
  const execpath = process.env.npm_execpath;
  const [c, a] = cmd === 'npm' && execpath && /\.c?js$/.test(execpath) ? [process.execPath, [execpath, ...argv]] : [cmd, argv];
  const res = spawnSync(c, a, { cwd, encoding: 'utf8', stdio: capture ? ['ignore', 'pipe', 'inherit'] : 'inherit', shell: process.platform === 'win32' && c === 'npm' });
  if (res.error) throw res.error;
  if (res.status !== 0) fail(`${cmd} ${argv.join(' ')} failed (exit ${res.status})`);
  return res.stdout;
}

if (!flag('--no-build')) {
  fs.rmSync(path.join(ROOT, 'lib'), { recursive: true, force: true });
  run('npm', ['run', 'build:ts'], ROOT);
}
for (const f of ['index.js', 'index.mjs', 'index.d.ts', 'index.d.mts', 'testing.js', 'testing.mjs', 'platform.js']) {
  if (!fs.existsSync(path.join(ROOT, 'lib', f))) fail(`lib/${f} is missing: run \`npm run build:ts\` (or drop --no-build)`);
}
const { currentPlatform, platformsOf } = require(path.join(ROOT, 'lib', 'platform.js'));

const manifest = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
const { name, version } = manifest;
const binaryName = manifest.napi?.binaryName ?? name;
const supported = platformsOf(manifest);
const platforms = flag('--all') ? supported : [currentPlatform()];
if (!supported.includes(platforms[0])) fail(`this machine is ${platforms[0]}, which is not among napi.targets (${supported.join(', ')})`);

/** The newest Rust source: a binary older than it was built from other sources. */
function newestSource() {
  let newest = { file: '', mtime: 0 };
  const visit = (p) => {
    const st = fs.statSync(p, { throwIfNoEntry: false });
    if (!st) return;
    if (st.isDirectory()) {
      for (const e of fs.readdirSync(p)) if (e !== 'target' && e !== 'node_modules') visit(path.join(p, e));
    } else if (/\.rs$|Cargo\.(toml|lock)$/.test(p) && st.mtimeMs > newest.mtime) newest = { file: path.relative(ROOT, p), mtime: st.mtimeMs };
  };
  for (const p of ['src', 'crates', 'build.rs', 'Cargo.toml', 'Cargo.lock']) visit(path.join(ROOT, p));
  return newest;
}

const stage = fs.mkdtempSync(path.join(os.tmpdir(), 'ramus-package-'));
process.on('exit', () => fs.rmSync(stage, { recursive: true, force: true }));
fs.mkdirSync(OUT, { recursive: true });
const written = [];

function pack(dir) {
  const [info] = JSON.parse(run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', OUT], dir, true));
  written.push(info);
  return info;
}

{
  // Platform packages: npm/<platform>/ (package.json, README) plus the binary.
  for (const platform of platforms) {
    const file = `${binaryName}.${platform}.node`;
    const binary = [path.join(ROOT, 'npm', platform, file), path.join(ROOT, file)].find((p) => fs.existsSync(p));
    if (!binary) fail(`${file} is missing (looked in npm/${platform}/ and the repository root): build it with \`npm run build\` (it needs Rust)`);
    const pkgDir = path.join(ROOT, 'npm', platform);
    const platformManifest = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8'));
    if (platformManifest.name !== `${name}-${platform}` || platformManifest.version !== version) {
      fail(`npm/${platform}/package.json is ${platformManifest.name}@${platformManifest.version}, expected ${name}-${platform}@${version} (\`npx napi version\` syncs them)`);
    }
    if (binary === path.join(ROOT, file)) {
      const src = newestSource();
      if (src.mtime > fs.statSync(binary).mtimeMs) process.stderr.write(`npm run package: warning: ${file} is older than ${src.file}; \`npm run build\` rebuilds it\n`);
    }
    const dir = path.join(stage, platform);
    fs.mkdirSync(dir);
    for (const f of fs.readdirSync(pkgDir)) if (!f.endsWith('.node')) fs.copyFileSync(path.join(pkgDir, f), path.join(dir, f));
    fs.copyFileSync(binary, path.join(dir, file));
    pack(dir);
  }

  // The main package: the files `npm pack` would take from the repository, with the
  // published package.json.
  const [listing] = JSON.parse(run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], ROOT, true));
  const main = path.join(stage, 'main');
  for (const { path: rel } of listing.files) {
    if (/\.node$|\.rs$|Cargo\.(toml|lock)$|(^|\/)build\.rs$|binding\.gyp$/.test(rel)) fail(`the main package would ship ${rel}`);
    fs.mkdirSync(path.dirname(path.join(main, rel)), { recursive: true });
    fs.copyFileSync(path.join(ROOT, rel), path.join(main, rel));
  }
  const published = { ...manifest };
  delete published.scripts;
  delete published.devDependencies;
  published.optionalDependencies = Object.fromEntries(supported.map((p) => [`${name}-${p}`, version]));
  fs.writeFileSync(path.join(main, 'package.json'), `${JSON.stringify(published, null, 2)}\n`);
  pack(main);
}

const kb = (n) => `${(n / 1024).toFixed(0)} kB`;
for (const info of written) {
  process.stdout.write(`${path.join(OUT, info.filename)}  ${kb(info.size)} packed, ${kb(info.unpackedSize)} unpacked, ${info.entryCount} files\n`);
}
