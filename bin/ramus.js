#!/usr/bin/env node
// The `ramus` command. For now it has one subcommand: `inspect`, the web inspector.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const USAGE = `Usage: ramus inspect --db <path> [--port <n>] [--host <address>]

Commands:
  inspect   Serve the run inspector for a Ramus database and print its URL.

Options for inspect:
  --db <path>       the SQLite file an engine writes, or its PostgreSQL URL (required)
  --port <n>        the port to listen on (default: a free one)
  --host <address>  the interface to bind (default: 127.0.0.1; anything else exposes
                    your runs, and the power to send them events, to that network)
  -h, --help        show this help
`;

function fail(message) {
  process.stderr.write(`ramus: ${message}\n\n${USAGE}`);
  process.exit(2);
}

function parse(argv) {
  const [command, ...rest] = argv;
  if (command === undefined || command === '-h' || command === '--help' || command === 'help') {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  if (command !== 'inspect') fail(`unknown command '${command}'`);
  const opts = {};
  for (let i = 0; i < rest.length; i++) {
    let arg = rest[i];
    let value;
    if (arg === '-h' || arg === '--help') {
      process.stdout.write(USAGE);
      process.exit(0);
    }
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq > 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    if (!['--db', '--port', '--host'].includes(arg)) fail(`unknown option '${arg}'`);
    if (value === undefined) {
      value = rest[++i];
      if (value === undefined || value.startsWith('--')) fail(`${arg} needs a value`);
    }
    opts[arg.slice(2)] = value;
  }
  if (!opts.db) fail('--db <path> is required');
  if (opts.port !== undefined) {
    if (!/^\d+$/.test(opts.port) || Number(opts.port) > 65535) fail(`--port must be a number from 0 to 65535, not '${opts.port}'`);
    opts.port = Number(opts.port);
  }
  return opts;
}

async function main() {
  const opts = parse(process.argv.slice(2));
  const onServer = /^postgres(ql)?:\/\//.test(opts.db);
  const db = onServer ? opts.db : path.resolve(opts.db);
  if (!onServer && !fs.existsSync(db)) {
    process.stderr.write(`ramus: no database at ${db}\n`);
    process.exit(1);
  }
  const { inspect } = require('../lib/index.js');
  let inspector;
  try {
    inspector = await inspect({ db, port: opts.port, host: opts.host });
  } catch (e) {
    process.stderr.write(`ramus: ${e && e.message ? e.message : e}\n`);
    process.exit(1);
  }
  process.stdout.write(`Ramus inspector: ${inspector.url}\n`);
  const stop = () => inspector.close().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

main();
