'use strict';
// One measurement in a fresh process: `worker.js ENGINE SHAPE MODE N` (MODE: run | e2e, see workloads.js), forked by
// run.js, which it answers with one IPC message. A process per measurement keeps one engine's heap, JIT state and pending GC work from bleeding into the
// next, and lets run.js kill a measurement that overruns.

const { prepare: workload, Unavailable } = require('./workloads');

const WARMUP_N = 1000;
// Small sizes finish in a few ms, where one run is noise: repeat them (the median is reported) while the repeats
// stay cheap. Large sizes run once.
const MAX_RUNS = 5;
const REPEAT_WHILE_TOTAL_MS_BELOW = 2000;

const MB = 1024 * 1024;

function collect() {
  // Twice: the first pass can leave finalizer work (weak refs, native handles) for the second.
  global.gc();
  global.gc();
}

async function runChecked(run, n) {
  const output = await run();
  if (output !== n) throw new Error(`wrong result: expected ${n}, got ${JSON.stringify(output)}`);
}

async function measure(engine, shape, mode, n) {
  const prepare = workload(engine, shape, mode);

  // Warm up once at a small size so that the measured run does not pay for module loading and first JIT tiers.
  const warmupN = Math.min(n, WARMUP_N);
  await runChecked(prepare(warmupN), warmupN);

  collect();
  const rssBefore = process.memoryUsage().rss;
  const heapBefore = process.memoryUsage().heapUsed;

  let start = performance.now();
  const run = prepare(n);
  const setupMs = performance.now() - start;

  const runMs = [];
  let totalMs = 0;
  let retainedHeapMB;
  do {
    start = performance.now();
    await runChecked(run, n);
    const ms = performance.now() - start;
    runMs.push(ms);
    totalMs += ms;
    if (retainedHeapMB === undefined) {
      // After the first run, with the compiled graph still referenced (in 'run' mode; in 'e2e' mode each run's graph
      // is garbage once it ends): what the definition + engine keep alive.
      // Clamped because for tiny graphs GC noise can put heapUsed a few KB below the baseline.
      collect();
      retainedHeapMB = Math.max(0, (process.memoryUsage().heapUsed - heapBefore) / MB);
    }
  } while (runMs.length < MAX_RUNS && totalMs < REPEAT_WHILE_TOTAL_MS_BELOW);

  runMs.sort((a, b) => a - b);
  return {
    setupMs,
    runMs: runMs[Math.floor(runMs.length / 2)],
    runs: runMs.length,
    // maxRSS is the process's peak (KiB on Linux); the warm-up's peak is far below the measured sizes'.
    peakRssMB: (process.resourceUsage().maxRSS * 1024 - rssBefore) / MB,
    retainedHeapMB,
  };
}

// Exit explicitly once the answer is sent: the IPC channel (and any timer an engine leaves behind) would otherwise
// keep the process alive.
const reply = (message) => process.send(message, () => process.exit(0));

const [engine, shape, mode, n] = process.argv.slice(2);
measure(engine, shape, mode, Number(n)).then(
  (result) => reply({ ok: true, ...result }),
  (error) =>
    reply(
      error instanceof Unavailable
        ? { ok: false, unavailable: error.message }
        : { ok: false, error: String(error?.stack ?? error) },
    ),
);
