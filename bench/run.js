'use strict';
// Ramus benchmark: wall time per node of Ramus beside a bare-JS floor (the same async functions awaited in a plain
// loop / Promise.all) and beside XState 5 and LangGraph.js on the same shapes. Prints Markdown tables to stdout (for
// pasting into an issue note) and progress to stderr.
//
//   node --expose-gc bench/run.js [--sizes 1k,10k,100k,1M] [--shapes chain,fanout,agent-loop]
//                                 [--modes run,e2e] [--peers xstate,langgraph] [--budget 30]
//
// What each row times (per node = the median run's wall time ÷ N; see bench/workloads.js for the code):
//   chain, fanout — run        the run alone: the graph is defined and compiled once beforehand (setup, reported in
//                              the detail table) and each timed run reuses it. Ramus: `runDag` over a `CompiledDag`;
//                              XState: `createActor(machine).start()` to its output; LangGraph: `app.invoke`.
//   chain, fanout — e2e        build + compile + run, all timed together, every run: Ramus builds the definition
//                              object and `new CompiledDag(...)`, then `runDag`; XState `setup().createMachine(...)`,
//                              then the actor; LangGraph a `StateGraph` with its nodes and edges, `compile()`, then
//                              `invoke`. The node functions themselves are made beforehand, untimed, for every engine.
//   floor                      the same node functions awaited in a plain loop / Promise.all. It has nothing to
//                              build, so the end-to-end table divides by the same run-only floor.
//   agent-loop                 N steps of one async step function, each followed by its guard, against two floors:
//                              the bare-JS loop (the step and guard in a hand-written while loop) and the plain-JS
//                              machine (a generic interpreter of a `{ initial, nodes: { step: { run, transitions } } }`
//                              config, a few dozen lines, no events), both calling the very step and guard functions
//                              Ramus's machine runs. The machines are built once (the agent loop has no e2e mode: its
//                              definition does not grow with N); XState and LangGraph write the loop their own way.
//
// Every measurement runs in its own worker process (bench/worker.js). A measurement whose time, extrapolated from
// the smaller sizes, would exceed the budget is skipped, as are larger sizes after it; one that overruns anyway is
// killed.

const { fork } = require('node:child_process');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { shapes: ALL_SHAPES, MODES, has } = require('./workloads');

const PEER_PACKAGES = { xstate: 'xstate', langgraph: '@langchain/langgraph' };
const PEERS = Object.keys(PEER_PACKAGES);
const LABELS = { floor: 'floor', machine: 'plain-JS machine', ramus: 'Ramus', 'ramus-flat': 'Ramus, nestAcrossAwaits(false)', xstate: 'XState', langgraph: 'LangGraph' };
const ALL_MODES = ['run', 'e2e'];
const MODE_LABELS = { run: 'run', e2e: 'build+compile+run' };
const DEFAULT_SIZES = '1k,10k,100k,1M';
// Workers get far more heap than Node's default (~4 GB): XState keeps ~3 KB per state, so a 1M-state machine alone
// is ~3 GB. Warnings are silenced because LangGraph trips MaxListenersExceededWarning on every large graph.
const WORKER_EXEC_ARGV = ['--expose-gc', '--no-warnings', '--max-old-space-size=16384'];

function usage(message) {
  console.error(`${message}\n\nusage: node --expose-gc bench/run.js [--sizes ${DEFAULT_SIZES}] ` +
    `[--shapes ${ALL_SHAPES.join(',')}] [--modes ${ALL_MODES.join(',')}] [--peers ${PEERS.join(',')}] ` +
    '[--budget SECONDS]');
  process.exit(2);
}

function parseSize(text) {
  const match = /^(\d+(?:\.\d+)?)([kKmM]?)$/.exec(text.trim());
  if (!match) usage(`bad size '${text}'`);
  const scale = { '': 1, k: 1e3, m: 1e6 }[match[2].toLowerCase()];
  return Math.round(Number(match[1]) * scale);
}

function parseList(text, allowed, what) {
  const items = text.split(',').map((item) => item.trim()).filter(Boolean);
  for (const item of items) if (!allowed.includes(item)) usage(`unknown ${what} '${item}'`);
  return items;
}

function parseOptions() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        sizes: { type: 'string', default: DEFAULT_SIZES },
        shapes: { type: 'string', default: ALL_SHAPES.join(',') },
        modes: { type: 'string', default: ALL_MODES.join(',') },
        peers: { type: 'string', default: PEERS.join(',') },
        budget: { type: 'string', default: '30' },
      },
    }));
  } catch (error) {
    usage(error.message);
  }
  const budgetS = Number(values.budget);
  if (!(budgetS > 0)) usage(`bad budget '${values.budget}'`);
  return {
    sizes: values.sizes.split(',').map(parseSize).sort((a, b) => a - b),
    shapes: parseList(values.shapes, ALL_SHAPES, 'shape'),
    modes: parseList(values.modes, ALL_MODES, 'mode'),
    peers: parseList(values.peers, PEERS, 'peer'),
    budgetS,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Running workers

function runWorker(engine, shape, mode, n, timeoutMs) {
  return new Promise((resolve) => {
    const child = fork(path.join(__dirname, 'worker.js'), [engine, shape, mode, String(n)], {
      execArgv: WORKER_EXEC_ARGV,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    let answer;
    const timer = setTimeout(() => {
      answer = { ok: false, timedOut: true };
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('message', (message) => {
      answer = message;
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve(answer ?? { ok: false, error: `worker died (${signal ?? `exit code ${code}`})` });
    });
  });
}

// Projected seconds for size n from the measured sizes: per-node time (setup + run) extrapolated with the power law
// through the last two sizes, so that engines whose per-node cost grows with N (quadratic joins, per-step
// checkpoints) are caught before they blow the budget, not after.
function projectSeconds(history, n) {
  const last = history.at(-1);
  if (!last) return 0;
  const prev = history.at(-2);
  const exponent = prev ? Math.max(0, Math.log(last.perNodeUs / prev.perNodeUs) / Math.log(last.n / prev.n)) : 0;
  return (last.perNodeUs * (n / last.n) ** exponent * n) / 1e6;
}

/** The shape × mode pairs to measure, in order. */
function measuredModes(shapes, modes) {
  return shapes.flatMap((shape) => MODES[shape].filter((mode) => modes.includes(mode)).map((mode) => ({ shape, mode })));
}

async function measureAll({ sizes, shapes, modes, peers, budgetS }) {
  const engines = ['floor', 'machine', 'ramus', 'ramus-flat', ...peers];
  // The kill timeout is generous because one measured size gives no growth rate: LangGraph's chain, at ~2 ms/node
  // at 1k, projects 20 s at 10k but takes ~75 s, and that data point is still worth having.
  const timeoutMs = Math.max(60, 4 * budgetS) * 1000;
  const results = new Map(); // `${engine}/${shape}/${mode}/${n}` → worker answer, or a stand-in for a size not run
  // The end-to-end table divides by the run-only floor, so `--modes e2e` alone still measures the floor's run.
  const jobs = [];
  for (const { shape, mode } of measuredModes(shapes, modes)) {
    for (const engine of engines) {
      if (has(engine, shape, mode)) jobs.push({ engine, shape, mode });
      else if (mode === 'e2e' && engine === 'floor' && !modes.includes('run')) jobs.push({ engine, shape, mode: 'run' });
    }
  }
  for (const { engine, shape, mode } of jobs) {
    const history = [];
    // Once an engine is skipped, unavailable, failed or killed on a shape, its larger sizes are not tried.
    let stopped;
    for (const n of sizes) {
      const key = `${engine}/${shape}/${mode}/${n}`;
      if (stopped) {
        results.set(key, stopped);
        continue;
      }
      const projectedS = projectSeconds(history, n);
      if (projectedS > budgetS) {
        console.error(`${key}: skipped, projected ${projectedS.toFixed(0)} s > ${budgetS} s budget`);
        stopped = { ok: false, skipped: true };
        results.set(key, stopped);
        continue;
      }
      const started = performance.now();
      const result = await runWorker(engine, shape, mode, n, timeoutMs);
      results.set(key, result);
      const tookS = ((performance.now() - started) / 1000).toFixed(1);
      if (result.ok) {
        history.push({ n, perNodeUs: ((result.setupMs + result.runMs) * 1000) / n });
        console.error(`${key}: ${formatNumber((result.runMs * 1000) / n)} µs/node (${tookS} s)`);
      } else {
        console.error(`${key}: ${result.unavailable ?? result.error ?? 'killed (timeout)'}`);
        stopped = result.unavailable ? result : { ok: false, afterFailure: true };
      }
    }
  }
  return { jobs, results, timeoutMs };
}

// ---------------------------------------------------------------------------------------------------------------
// Report

function formatNumber(x, digits) {
  const places = digits ?? (x < 10 ? 2 : x < 100 ? 1 : 0);
  return x.toLocaleString('en-US', { minimumFractionDigits: places, maximumFractionDigits: places });
}

const formatRatio = (x) => `${formatNumber(x, x < 10 ? 1 : 0)}×`;
const SUPERSCRIPT = '⁰¹²³⁴⁵⁶⁷⁸⁹';
const superscript = (i) => [...String(i)].map((digit) => SUPERSCRIPT[digit]).join('');

/** A Markdown table; the first `textColumns` columns are left-aligned, the rest (numbers) right-aligned. */
function markdownTable(header, rows, textColumns = 2) {
  const line = (cells) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map((_, i) => (i < textColumns ? '---' : '---:'))), ...rows.map(line)].join('\n');
}

function report({ sizes, shapes, modes, peers, budgetS }, { jobs, results, timeoutMs }) {
  const footnotes = new Map(); // text → number, in order of first use
  const footnoted = (text) => {
    if (!footnotes.has(text)) footnotes.set(text, footnotes.size + 1);
    return `—${superscript(footnotes.get(text))}`;
  };
  const missing = (result) => {
    if (!result) return footnoted('not measured');
    if (result.skipped) return footnoted(`skipped: projected from the smaller sizes to exceed the ${budgetS} s budget`);
    if (result.timedOut) return footnoted(`killed after ${timeoutMs / 1000} s`);
    if (result.afterFailure) return footnoted('not run: a smaller size failed or was killed');
    if (result.unavailable) return footnoted(result.unavailable);
    return footnoted(`failed: ${result.error.split('\n')[0]}`);
  };
  const resultOf = (engine, shape, mode, n) => results.get(`${engine}/${shape}/${mode}/${n}`);
  const perNodeUs = (engine, shape, mode, n) => {
    const result = resultOf(engine, shape, mode, n);
    return result?.ok ? (result.runMs * 1000) / n : undefined;
  };
  const cell = (engine, shape, mode, n) => {
    const us = perNodeUs(engine, shape, mode, n);
    return us === undefined ? missing(resultOf(engine, shape, mode, n)) : formatNumber(us);
  };
  const ratio = (a, b) => (a === undefined || b === undefined ? '—' : formatRatio(a / b));
  const measured = measuredModes(shapes, modes);

  // Chain and fanout, one table per mode. The floor has nothing to build: both tables divide by its run.
  const dagTable = (mode) => {
    const shapesHere = measured.filter((m) => m.mode === mode && m.shape !== 'agent-loop').map((m) => m.shape);
    if (!shapesHere.length) return [];
    const tag = `(${MODE_LABELS[mode]})`;
    const header = ['shape', 'N', 'floor µs', `Ramus ${tag} µs`, 'Ramus ÷ floor'];
    for (const peer of peers) header.push(`${LABELS[peer]} ${tag} µs`, `${LABELS[peer]} ÷ Ramus`);
    const rows = [];
    for (const shape of shapesHere) {
      for (const n of sizes) {
        const floorUs = perNodeUs('floor', shape, 'run', n);
        const ramusUs = perNodeUs('ramus', shape, mode, n);
        const row = [shape, formatNumber(n, 0), cell('floor', shape, 'run', n), cell('ramus', shape, mode, n),
          ratio(ramusUs, floorUs)];
        for (const peer of peers) row.push(cell(peer, shape, mode, n), ratio(perNodeUs(peer, shape, mode, n), ramusUs));
        rows.push(row);
      }
    }
    const title = mode === 'run'
      ? '#### Run only: a graph defined and compiled once, then run (the time of a run)'
      : '#### End to end: build the definition, compile it and run it, all timed (the floor: its run; it builds nothing)';
    return [title, '', markdownTable(header, rows), ''];
  };

  const loopTable = () => {
    if (!measured.some((m) => m.shape === 'agent-loop')) return [];
    const shape = 'agent-loop';
    const header = ['N', 'bare-JS loop µs', 'plain-JS machine µs', 'Ramus µs', 'Ramus ÷ bare-JS loop',
      'Ramus ÷ plain-JS machine', `${LABELS['ramus-flat']} µs`, '… ÷ plain-JS machine'];
    for (const peer of peers) header.push(`${LABELS[peer]} µs`, `${LABELS[peer]} ÷ Ramus`);
    const rows = [];
    for (const n of sizes) {
      const ramusUs = perNodeUs('ramus', shape, 'run', n);
      const row = [formatNumber(n, 0), cell('floor', shape, 'run', n), cell('machine', shape, 'run', n),
        cell('ramus', shape, 'run', n), ratio(ramusUs, perNodeUs('floor', shape, 'run', n)),
        ratio(ramusUs, perNodeUs('machine', shape, 'run', n)), cell('ramus-flat', shape, 'run', n),
        ratio(perNodeUs('ramus-flat', shape, 'run', n), perNodeUs('machine', shape, 'run', n))];
      for (const peer of peers) row.push(cell(peer, shape, 'run', n), ratio(perNodeUs(peer, shape, 'run', n), ramusUs));
      rows.push(row);
    }
    return ['#### Agent loop: N steps of one async step and its guard, against two floors', '',
      markdownTable(header, rows, 1), ''];
  };

  const detailRows = [];
  const groups = [...new Set(jobs.map(({ shape, mode }) => `${shape}/${mode}`))].map((key) => key.split('/'));
  for (const [shape, mode] of groups) {
    const enginesHere = jobs.filter((job) => job.shape === shape && job.mode === mode).map((job) => job.engine);
    for (const n of sizes) {
      for (const engine of enginesHere) {
        const result = resultOf(engine, shape, mode, n);
        if (!result?.ok) continue;
        detailRows.push([
          shape,
          MODE_LABELS[mode],
          formatNumber(n, 0),
          shape === 'agent-loop' && engine === 'floor' ? 'bare-JS loop' : LABELS[engine],
          formatNumber(result.setupMs),
          formatNumber(result.runMs),
          String(result.runs),
          formatNumber(result.peakRssMB, 1),
          formatNumber(result.retainedHeapMB, 1),
        ]);
      }
    }
  }

  // The tables first (they number the footnotes), then the footnotes under them.
  const tables = [...dagTable('run'), ...dagTable('e2e'), ...loopTable()];
  // Markdown line breaks ('  \n') keep the footnotes on separate lines of one paragraph.
  const footnoteLines = footnotes.size
    ? [[...footnotes].map(([text, number]) => `${superscript(number)} ${text}`).join('  \n'), '']
    : [];
  const cpus = os.cpus();
  const versions = peers.map((peer) => {
    const pkg = PEER_PACKAGES[peer];
    return `${pkg} ${require(`${pkg}/package.json`).version}`;
  });
  const out = [
    '### Ramus benchmark: engine overhead per node',
    '',
    [
      `Node ${process.version}`,
      `${os.platform()} ${os.arch()}`,
      `${cpus.length} × ${cpus[0].model}`,
      `ramus ${require('../package.json').version}`,
      ...versions,
    ].join(' · '),
    '',
    'µs per node = median timed wall time ÷ N; each measurement in a fresh process after a warm-up run at ≤ 1k. ' +
      '"(run)": the run of an already compiled graph, setup excluded; "(build+compile+run)": building the ' +
      'definition, compiling it and running it, timed together on every run (the node functions are made ' +
      'beforehand). "Ramus ÷ floor" = Ramus µs ÷ bare-JS floor µs; "Peer ÷ Ramus" = peer µs ÷ Ramus µs in the same ' +
      'mode. For agent-loop, N is the number of loop steps; its floors are the bare-JS loop and a plain-JS state ' +
      'machine interpreter, both calling the same step and guard functions as Ramus.',
    '',
    ...tables,
    ...footnoteLines,
    'Setup = in run mode, define + compile the graph/machine (once); in build+compile+run mode, only making the ' +
      'node functions (the build is in run ms). Runs = measured runs (median reported). Peak ΔRSS = process peak ' +
      'RSS over the RSS before setup; retained heap = JS heap still live after the first run and a full GC, with ' +
      'the compiled graph referenced in run mode (native memory shows only in RSS).',
    '',
    markdownTable(
      ['shape', 'timed', 'N', 'engine', 'setup ms', 'run ms', 'runs', 'peak ΔRSS MB', 'retained heap MB'],
      detailRows,
      4,
    ),
  ];
  console.log(out.join('\n'));
}

async function main() {
  const options = parseOptions();
  report(options, await measureAll(options));
}

main();
