// A script that ends while runs its engine started are resting says so on stderr.
//
// Node ends a process when its event loop runs dry. A machine sleeping on a delay, or waiting
// for an event, holds nothing in that loop (its timers are weak unless `keepAlive`), so a
// script that awaits such a run, or just reaches its end, stops there: silently, with exit
// code 13 when the `await` was a top-level one in an ES module. `beforeExit` is that moment:
// Node emits it only when the loop is empty, so every run still unsettled then is resting
// and nothing left in this process will move it. Not emitted after `process.exit()`; runs of
// an engine that was closed are not reported (closing said the script is done with them, and
// committed their records).
import type { Engine, EngineRun } from './engine';

interface Watched {
  engine: Engine;
  runner: EngineRun;
  closed: () => boolean;
}

const watched = new Set<Watched>();
const reported = new Set<string>();
let installed = false;

/** Watch a run an engine started or resumed until it settles (called from `Engine`). */
export function noticeOnExit(engine: Engine, runner: EngineRun, closed: () => boolean): void {
  const entry: Watched = { engine, runner, closed };
  watched.add(entry);
  const done = () => {
    watched.delete(entry);
  };
  runner.finished.then(done, done);
  if (!installed) {
    installed = true;
    process.on('beforeExit', report);
  }
}

function when(ms: number): string {
  const iso = new Date(ms).toISOString();
  const left = ms - Date.now();
  if (left <= 0) return iso;
  const units: Array<[number, string]> = [
    [86_400_000, 'd'],
    [3_600_000, 'h'],
    [60_000, 'min'],
    [1000, 's'],
  ];
  const [size, unit] = units.find(([n]) => left >= n) ?? [1, 'ms'];
  return `${iso} (in ${Math.round(left / size)}${unit})`;
}

/** The run's next pending timer, if its engine can still say. */
function nextTimer(w: Watched): { kind: string; dueAt: number } | undefined {
  try {
    return w.engine
      .timers(w.runner.runId)
      .filter((t) => t.firedAt === null)
      .sort((a, b) => a.dueAt - b.dueAt)[0];
  } catch {
    return undefined;
  }
}

function line(w: Watched): string {
  const r = w.runner;
  const label = `${r.runId} '${r.name}'`;
  if (!('machineStatus' in r)) return `${label} (a DAG) has steps that have not returned: they await promises nothing in this process will settle`;
  const timer = nextTimer(w);
  switch (r.machineStatus) {
    case 'sleeping':
      return `${label} is sleeping in state '${r.state}'${timer ? ` until ${when(timer.dueAt)}` : ''}`;
    case 'waitingForEvent': {
      const events = r.availableEvents();
      return `${label} is waiting in state '${r.state}' for an event${events.length ? ` (${events.join(', ')})` : ''}${timer ? `; its timeout fires at ${when(timer.dueAt)}` : ''}`;
    }
    case 'pendingSemaphore':
      return `${label} is waiting for a semaphore slot in state '${r.state}' that nothing in this process will release`;
    default:
      return `${label} is ${r.machineStatus} in state '${r.state}': a step awaits a promise nothing in this process will settle`;
  }
}

function report(): void {
  const resting = [...watched].filter((w) => !w.closed() && !reported.has(w.runner.runId));
  if (resting.length === 0) return;
  for (const w of resting) reported.add(w.runner.runId);
  // A batched engine hands a resting run's last records (its status, its timers) to the
  // writer thread, which commits them a few ms later: too late for a process that ends now.
  // Commit them, so what follows is true: the run can be resumed as it is, timers included.
  for (const engine of new Set(resting.map((w) => w.engine))) {
    try {
      engine.flush();
    } catch {
      // the notice still names the runs
    }
  }
  const out = [`ramus: this process is ending (its event loop is empty) while ${resting.length === 1 ? '1 run it started has' : `${resting.length} runs it started have`} not finished:`];
  for (const db of new Set(resting.map((w) => w.engine.db))) {
    const runs = resting.filter((w) => w.engine.db === db);
    for (const w of runs) out.push(`  - ${line(w)}`);
    if (db === ':memory:') {
      out.push(`  The engine's database is ':memory:': ${runs.length === 1 ? 'this run ends' : 'these runs end'} with the process. Give the Engine a database file to continue runs later.`);
    } else {
      out.push(
        `  ${runs.length === 1 ? 'It is' : 'They are'} stored in ${db}: \`engine.resumeAll()\` (or \`engine.resume(runId)\`) in a process that registers the same runners continues ${runs.length === 1 ? 'it' : 'them'}, and \`engine.send(runId, event)\` delivers an event from any process.`,
      );
    }
  }
  out.push("  To keep this process alive while a run's timers are pending, start it with { keepAlive: true }; `await engine.close()` at the end of a script ends it without this notice.");
  process.stderr.write(`${out.join('\n')}\n`);
}
