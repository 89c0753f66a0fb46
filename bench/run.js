'use strict';
// Ramus benchmark: wall time per node of Ramus beside a bare-JS floor (the same async functions awaited in a plain
// loop / Promise.all) and beside XState 5 and LangGraph.js on the same shapes. Prints Markdown tables to stdout (for
// pasting into an issue note) and progress to stderr.
//
//   node --expose-gc bench/run.js [--sizes 1k,10k,100k,1M] [--shapes chain,fanout,agent-loop]
//                                 [--peers xstate,langgraph] [--budget 30]
//
// Every measurement runs in its own worker process (bench/worker.js). A measurement whose time, extrapolated from
// the smaller sizes, would exceed the budget is skipped, as are larger sizes after it; one that overruns anyway is
// killed.

const { fork } = require('node:child_process');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { shapes: ALL_SHAPES } = require('./workloads');

const PEER_PACKAGES = { xstate: 'xstate', langgraph: '@langchain/langgraph' };
const PEERS = Object.keys(PEER_PACKAGES);
const LABELS = { floor: 'floor', ramus: 'Ramus', xstate: 'XState', langgraph: 'LangGraph' };
const DEFAULT_SIZES = '1k,10k,100k,1M';
// Workers get far more heap than Node's default (~4 GB): XState keeps ~3 KB per state, so a 1M-state machine alone
// is ~3 GB. Warnings are silenced because LangGraph trips MaxListenersExceededWarning on every large graph.
const WORKER_EXEC_ARGV = ['--expose-gc', '--no-warnings', '--max-old-space-size=16384'];

function usage(message) {
  console.error(`${message}\n\nusage: node --expose-gc bench/run.js [--sizes ${DEFAULT_SIZES}] ` +
    `[--shapes ${ALL_SHAPES.join(',')}] [--peers ${PEERS.join(',')}] [--budget SECONDS]`);
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
    peers: parseList(values.peers, PEERS, 'peer'),
    budgetS,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Running workers

function runWorker(engine, shape, n, timeoutMs) {
  return new Promise((resolve) => {
    const child = fork(path.join(__dirname, 'worker.js'), [engine, shape, String(n)], {
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

async function measureAll({ sizes, shapes, peers, budgetS }) {
  const engines = ['floor', 'ramus', ...peers];
  // The kill timeout is generous because one measured size gives no growth rate: LangGraph's chain, at ~2 ms/node
  // at 1k, projects 20 s at 10k but takes ~75 s, and that data point is still worth having.
  const timeoutMs = Math.max(60, 4 * budgetS) * 1000;
  const results = new Map(); // `${engine}/${shape}/${n}` → worker answer, or a stand-in for a size not run
  for (const shape of shapes) {
    for (const engine of engines) {
      const history = [];
      // Once an engine is skipped, unavailable, failed or killed on a shape, its larger sizes are not tried.
      let stopped;
      for (const n of sizes) {
        const key = `${engine}/${shape}/${n}`;
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
        const result = await runWorker(engine, shape, n, timeoutMs);
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
  }
  return { engines, results, timeoutMs };
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

function markdownTable(header, rows) {
  const line = (cells) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map((_, i) => (i < 2 ? '---' : '---:'))), ...rows.map(line)].join('\n');
}

function report({ sizes, shapes, peers, budgetS }, { engines, results, timeoutMs }) {
  const footnotes = new Map(); // text → number, in order of first use
  const footnoted = (text) => {
    if (!footnotes.has(text)) footnotes.set(text, footnotes.size + 1);
    return `—${superscript(footnotes.get(text))}`;
  };
  const missing = (result) => {
    if (result.skipped) return footnoted(`skipped: projected from the smaller sizes to exceed the ${budgetS} s budget`);
    if (result.timedOut) return footnoted(`killed after ${timeoutMs / 1000} s`);
    if (result.afterFailure) return footnoted('not run: a smaller size failed or was killed');
    if (result.unavailable) return footnoted(result.unavailable);
    return footnoted(`failed: ${result.error.split('\n')[0]}`);
  };
  const perNodeUs = (engine, shape, n) => {
    const result = results.get(`${engine}/${shape}/${n}`);
    return result.ok ? (result.runMs * 1000) / n : undefined;
  };

  const summaryHeader = ['shape', 'N', 'floor µs', 'Ramus µs', 'Ramus ÷ floor'];
  for (const peer of peers) summaryHeader.push(`${LABELS[peer]} µs`, `${LABELS[peer]} ÷ Ramus`);
  const summaryRows = [];
  const detailRows = [];
  for (const shape of shapes) {
    for (const n of sizes) {
      const cell = (engine) => {
        const us = perNodeUs(engine, shape, n);
        return us === undefined ? missing(results.get(`${engine}/${shape}/${n}`)) : formatNumber(us);
      };
      const ratio = (a, b) => (a === undefined || b === undefined ? '—' : formatRatio(a / b));
      const floorUs = perNodeUs('floor', shape, n);
      const ramusUs = perNodeUs('ramus', shape, n);
      const row = [shape, formatNumber(n, 0), cell('floor'), cell('ramus'), ratio(ramusUs, floorUs)];
      for (const peer of peers) row.push(cell(peer), ratio(perNodeUs(peer, shape, n), ramusUs));
      summaryRows.push(row);

      for (const engine of engines) {
        const result = results.get(`${engine}/${shape}/${n}`);
        if (!result.ok) continue;
        detailRows.push([
          shape,
          formatNumber(n, 0),
          LABELS[engine],
          formatNumber(result.setupMs),
          formatNumber(result.runMs),
          String(result.runs),
          formatNumber(result.peakRssMB, 1),
          formatNumber(result.retainedHeapMB, 1),
        ]);
      }
    }
  }

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
    'µs per node = median run wall time ÷ N, setup excluded; each measurement in a fresh process after a warm-up ' +
      'run at ≤ 1k. "Ramus ÷ floor" = Ramus µs ÷ bare-JS floor µs; "Peer ÷ Ramus" = peer µs ÷ Ramus µs. ' +
      'For agent-loop, N is the number of loop steps.',
    '',
    markdownTable(summaryHeader, summaryRows),
    '',
    ...footnoteLines,
    'Setup = define + compile the graph/machine. Runs = measured runs (median reported). Peak ΔRSS = process ' +
      'peak RSS over the RSS before setup; retained heap = JS heap still live after the first run and a full GC, ' +
      'with the compiled graph referenced (native memory shows only in RSS).',
    '',
    markdownTable(
      ['shape', 'N', 'engine', 'setup ms', 'run ms', 'runs', 'peak ΔRSS MB', 'retained heap MB'],
      detailRows,
    ),
  ];
  console.log(out.join('\n'));
}

async function main() {
  const options = parseOptions();
  report(options, await measureAll(options));
}

main();
