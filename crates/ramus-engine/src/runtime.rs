//! The live runs of one thread, driven through one interface for both kinds.
//!
//! A driver (the Node binding on the JS thread, the Rust [`crate::Engine`] on tokio)
//! creates runs, applies [`Command`]s to them and performs the actions that come back. In
//! between, the runtime does everything that is the same whatever calls the runners: it
//! keeps each run's timers in its clock's wheel, feeds its events to the store and to
//! spans, records how it ended, links runs started inside a step to that step (their ids,
//! their rows, their spans) and cancels them with it.

use std::sync::Arc;

use ramus_core::{
    Action, Command, DagRun, DagRunOptions, End, Event, Executor, Guards, Id, MachineRun,
    MachineSnapshot, Outcome, Recorder,
};
use std::collections::{HashMap, VecDeque};

use ramus_store::{Kind, PendingEvent, Run, RunStatus, Store};

use crate::clock::{Clock, SystemClock};
use crate::def::{Compiled, RunDef};
use crate::engine_core::{continuation, end_tree, Nested};
use crate::error::EngineError;
use crate::ids::seed;
use crate::sink::{MachineValues, Tap, Values};
use crate::timers::TimerWheel;
use crate::trace::{tracing_enabled, RunKind, RunSpans};
use crate::writer::{stored_status, RunRow, RunWriter};

/// A live run: an index into the runtime and a generation, so a handle kept past the run's
/// release never reaches another run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunKey {
    /// Slot in the runtime.
    pub index: u32,
    /// Generation of the slot.
    pub gen: u32,
}

/// A clock registered with a runtime, with the wheel of its runs' timers.
pub type ClockId = u32;

/// The clock every runtime starts with.
pub const SYSTEM_CLOCK: ClockId = 0;

/// Generations of a slot wrap within these bits (see [`RunKey`]).
pub const GEN_MASK: u32 = 0x7f;

/// After this many step launches the driver should let its event loop run before the next
/// ones: a loop of synchronous (or instantly resolving) steps must not starve timers,
/// `cancel()` and I/O.
pub const YIELD_EVERY: u32 = 4096;

/// Where a durable run writes.
#[derive(Clone)]
pub struct Durable {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Each step is committed before the next starts.
    pub sync: bool,
    /// The run's row (new runs), or what a resumed run continues from.
    pub row: DurableRow,
    /// The lease its writes are fenced with (a resumed run's claim); a new top-level run's
    /// comes with its row (`RunRow::lease`), a nested run's from its parent.
    pub fence: Option<crate::writer::Fence>,
}

/// A durable run's row.
// Made once per run start and moved into its writer: not worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum DurableRow {
    /// A new run.
    New(RunRow),
    /// A stored run continuing here.
    Resume {
        /// Its row id.
        id: String,
        /// Its highest step and transition numbers.
        seqs: (i64, i64),
    },
}

/// What a restored run continues from.
#[allow(clippy::large_enum_variant)] // One per resumed run: boxing would buy nothing.
pub enum Restore {
    /// A DAG: the nodes that finished, and (when it tolerates failures) those that failed,
    /// with their outputs or errors (JSON text).
    Dag {
        /// `(node, output)` of finished nodes.
        finished: Vec<(u32, Option<String>)>,
        /// `(node, error)` of failed nodes.
        failed: Vec<(u32, Option<String>)>,
        /// `(node, failed attempts)` of nodes that failed attempts and retry.
        attempts: Vec<(u32, u32)>,
        /// Armed retry timers `(timer, due, row id)`.
        timers: Vec<(u64, u64, String)>,
        /// Nodes cancelled with `cancelNode`: they stay cancelled.
        cancelled: Vec<u32>,
    },
    /// A machine: the core's snapshot, the values beside it, the context and its armed
    /// timers `(timer, due, row id)`.
    Machine {
        /// The core's snapshot.
        snapshot: MachineSnapshot,
        /// Input, outputs, held events.
        values: MachineValues,
        /// The context, JSON text.
        context: Option<String>,
        /// Armed timers.
        timers: Vec<(u64, u64, String)>,
    },
}

/// How to create a run.
#[derive(Default)]
pub struct RunOptions {
    /// The clock its time comes from.
    pub clock: ClockId,
    /// The step it is started in: `(run, slot)`.
    pub parent: Option<(RunKey, u32)>,
    /// Its run id (events carry it); a new one when none (a nested run shares its
    /// parent's).
    pub run_id: Option<Id>,
    /// The run's name (spans, rows).
    pub name: Option<String>,
    /// Record events for the driver to drain.
    pub observe: bool,
    /// Steps with a semaphore key acquire first.
    pub semaphores: bool,
    /// DAGs: ready nodes wait for [`Command::RunNode`].
    pub stepwise: bool,
    /// Machines: the state to start in.
    pub initial: Option<u32>,
    /// Its timers keep the driver's process alive.
    pub keep_alive: bool,
    /// Write it to a store.
    pub durable: Option<Durable>,
    /// The W3C traceparent its span joins (default: the parent step's span).
    pub traceparent: Option<String>,
    /// Its input, JSON text (a nested run's row needs it).
    pub input: Option<String>,
    /// Its context, JSON text (written with a new durable run's row).
    pub context: Option<String>,
    /// Continue from stored records.
    pub restore: Option<Restore>,
    /// Runs its interrupted steps had started (a resumed run), by node or state name.
    pub nested: Nested,
    /// What the driver needs to continue a resumed run with its own values.
    pub continued: Option<Continued>,
}

/// What a driver needs to continue a stored run with its own values: the JSON texts it
/// restores its copies from, and the events sent meanwhile; or, for a run nested in a step
/// that ran again and had ended before the restart, how it ended (it does not run again).
#[derive(Clone, Debug, Default)]
pub struct Continued {
    /// The run's row id.
    pub row_id: String,
    /// The nested run had ended: `(status, output, error)`.
    pub done: Option<(RunStatus, Option<String>, Option<String>)>,
    /// DAGs: finished nodes' outputs.
    pub finished: Vec<(u32, Option<String>)>,
    /// DAGs: failed nodes' errors.
    pub failed: Vec<(u32, Option<String>)>,
    /// Machines: input, outputs and held events, and the state before the current one.
    pub machine: Option<(MachineValues, Option<String>)>,
    /// The context (JSON text).
    pub context: Option<String>,
    /// Events sent while nobody ran it, to deliver now.
    pub pending: Vec<PendingEvent>,
}

impl Continued {
    /// What a driver gets from a restore.
    pub fn of(
        row_id: &str,
        restore: &Restore,
        context: Option<String>,
        pending: Vec<PendingEvent>,
    ) -> Continued {
        let mut c = Continued {
            row_id: row_id.to_owned(),
            context,
            pending,
            ..Continued::default()
        };
        match restore {
            Restore::Dag {
                finished, failed, ..
            } => {
                c.finished = finished.clone();
                c.failed = failed.clone();
            }
            Restore::Machine {
                snapshot, values, ..
            } => c.machine = Some((values.clone(), snapshot.previous.clone())),
        }
        c
    }
}

/// JSON values that travel with a command, for the run's sinks.
#[derive(Default, Clone, Copy)]
pub struct CommandValues<'a> {
    /// A step's output or error, or an event's data.
    pub value: Option<&'a str>,
    /// The run's context now.
    pub context: Option<&'a str>,
}

/// One live run.
pub struct Live {
    gen: u32,
    /// The executor.
    pub exec: Executor,
    /// Its definition.
    pub def: Arc<RunDef>,
    clock: ClockId,
    parent: Option<(RunKey, u32)>,
    children: Vec<(u32, RunKey)>,
    /// Its sinks, when it is durable or traced.
    pub tap: Option<Box<Tap>>,
    observe: bool,
    clocked: bool,
    keep_alive: bool,
    ended: Option<End>,
    /// Runs its interrupted steps had started, by node name, until the step runs again.
    nested: Nested,
    /// The same, once the step runs again: by its slot.
    slot_nested: HashMap<u32, VecDeque<Run>>,
    continued: Option<Continued>,
    /// A driver's own note about the run (the binding: the last status it told the face).
    pub driver_mark: u64,
    /// Steps to launch once the commit with that ticket is done (sync runs of a driver
    /// that is woken on commits, see [`Runtime::wake_on_commit`]).
    held: Vec<(u64, Action)>,
}

impl Live {
    /// Whether the driver listens to its events.
    pub fn observed(&self) -> bool {
        self.observe
    }

    /// How the run ended, if it did.
    pub fn ended(&self) -> Option<End> {
        self.ended
    }

    /// Whether the driver must pass values as JSON (the run is stored or traced).
    pub fn wants_values(&self) -> bool {
        self.tap.as_ref().is_some_and(|t| t.wants_values())
    }

    /// How many steps after the running one the driver may run by itself before it
    /// reports them (see [`MachineRun::local_budget`](ramus_core::machine::MachineRun::local_budget)).
    pub fn local_budget(&self) -> u32 {
        match &self.exec {
            Executor::Machine(m) if self.may_run_locally() => m.local_budget(),
            _ => 0,
        }
    }

    /// Whether the run lets its driver run steps by itself at all. Not a run whose events,
    /// records or spans are kept (each step has values to pass), that continues stored
    /// nested runs or has runs nested in it, or that is nested: a parent's step can cancel
    /// it from inside the runtime, where the driver's unreported steps are unknown.
    fn may_run_locally(&self) -> bool {
        self.tap.is_none()
            && !self.observe
            && self.parent.is_none()
            && self.children.is_empty()
            && self.ended.is_none()
            && self.nested.is_empty()
            && self.slot_nested.is_empty()
    }

    /// Whether the run is stored.
    pub fn is_durable(&self) -> bool {
        self.tap.as_ref().is_some_and(|t| t.writer.is_some())
    }

    /// Whether its steps commit before the next starts.
    pub fn is_sync(&self) -> bool {
        self.tap
            .as_ref()
            .and_then(|t| t.writer.as_ref())
            .is_some_and(|w| w.is_sync())
    }

    /// Whether the run continues from stored records (see [`Live::take_continued`]).
    pub fn is_continued(&self) -> bool {
        self.continued.is_some()
    }

    /// What the driver needs to continue a restored run (taken once).
    pub fn take_continued(&mut self) -> Option<Continued> {
        self.continued.take()
    }

    /// Whether the driver can let it go: it ended, nothing of it runs any more, and no
    /// action (its end) waits for a commit.
    pub fn is_done(&self) -> bool {
        self.ended.is_some()
            && self.exec.is_done()
            && self.children.is_empty()
            && self.held.is_empty()
    }

    /// The store the run writes to.
    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.tap
            .as_ref()
            .and_then(|t| t.writer.as_ref())
            .map(|w| w.store())
    }

    /// The run's row id, when it is stored.
    pub fn row_id(&self) -> Option<&str> {
        self.tap
            .as_ref()
            .and_then(|t| t.writer.as_ref())
            .map(|w| w.run_id())
    }
}

struct Slot {
    gen: u32,
    live: Option<Box<Live>>,
}

struct ClockEntry {
    clock: Arc<dyn Clock>,
    wheel: TimerWheel,
}

/// A runtime's live runs and clocks.
pub struct Runtime {
    slots: Vec<Slot>,
    free: Vec<u32>,
    clocks: Vec<Option<ClockEntry>>,
    scratch: Vec<Action>,
    touched: Vec<RunKey>,
    failures: Vec<(RunKey, EngineError)>,
    launches: Launches,
    commits: Arc<Commits>,
    commit_wake: Option<Arc<dyn Fn() + Send + Sync>>,
    next_ticket: u64,
    /// Runs holding steps until a commit.
    holding: usize,
    holds_changed: bool,
}

/// Steps launched since the driver last let its event loop run (see [`YIELD_EVERY`]).
#[derive(Default)]
struct Launches {
    count: u32,
    yield_now: bool,
}

impl Launches {
    fn add(&mut self, n: u32) {
        self.count += n;
        if self.count >= YIELD_EVERY {
            self.count = 0;
            self.yield_now = true;
        }
    }
}

/// Commits of sync runs' records, as the store's writer thread reports them.
#[derive(Default)]
struct Commits {
    any: std::sync::atomic::AtomicBool,
    done: std::sync::Mutex<Vec<(RunKey, u64, Option<EngineError>)>>,
}

impl Commits {
    fn push(&self, key: RunKey, ticket: u64, error: Option<EngineError>) {
        self.done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((key, ticket, error));
        self.any.store(true, std::sync::atomic::Ordering::Release);
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime::new()
    }
}

/// Guards for drivers that have no conditions to ask (Rust runs without them).
struct NoConditions;

impl Guards for NoConditions {
    fn holds(&mut self, _: u32, _: Option<u64>) -> Result<bool, ramus_core::GuardFailed> {
        Ok(true)
    }
}

impl Runtime {
    /// A runtime with the system clock.
    pub fn new() -> Runtime {
        Runtime {
            slots: Vec::new(),
            free: Vec::new(),
            clocks: vec![Some(ClockEntry {
                clock: Arc::new(SystemClock),
                wheel: TimerWheel::default(),
            })],
            scratch: Vec::new(),
            touched: Vec::new(),
            failures: Vec::new(),
            launches: Launches::default(),
            commits: Arc::default(),
            commit_wake: None,
            next_ticket: 0,
            holding: 0,
            holds_changed: false,
        }
    }

    /// Register a clock; runs created with its id take their time from it.
    pub fn add_clock(&mut self, clock: Arc<dyn Clock>) -> ClockId {
        let entry = ClockEntry {
            clock,
            wheel: TimerWheel::default(),
        };
        if let Some(i) = self.clocks.iter().position(Option::is_none) {
            self.clocks[i] = Some(entry);
            i as ClockId
        } else {
            self.clocks.push(Some(entry));
            (self.clocks.len() - 1) as ClockId
        }
    }

    /// Forget a clock (its timers are dropped).
    pub fn remove_clock(&mut self, id: ClockId) {
        if id != SYSTEM_CLOCK {
            if let Some(c) = self.clocks.get_mut(id as usize) {
                *c = None;
            }
        }
    }

    /// The time on a clock.
    pub fn now(&self, clock: ClockId) -> u64 {
        self.clock(clock).map_or(0, |c| c.clock.now_ms())
    }

    fn clock(&self, id: ClockId) -> Option<&ClockEntry> {
        self.clocks.get(id as usize).and_then(Option::as_ref)
    }

    /// The clock of a live run.
    pub fn clock_of(&self, key: RunKey) -> Option<ClockId> {
        self.get(key).map(|l| l.clock)
    }

    /// A live run.
    pub fn get(&self, key: RunKey) -> Option<&Live> {
        let slot = self.slots.get(key.index as usize)?;
        slot.live.as_deref().filter(|l| l.gen == key.gen)
    }

    /// A live run, mutably.
    pub fn get_mut(&mut self, key: RunKey) -> Option<&mut Live> {
        let slot = self.slots.get_mut(key.index as usize)?;
        slot.live.as_deref_mut().filter(|l| l.gen == key.gen)
    }

    /// Number of live runs.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.live.is_some()).count()
    }

    /// Whether no run is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs whose state changed since the last call, in order.
    pub fn take_touched(&mut self, into: &mut Vec<RunKey>) {
        into.append(&mut self.touched);
    }

    /// Runs that failed because their records could not be written.
    pub fn take_failures(&mut self) -> Vec<(RunKey, EngineError)> {
        std::mem::take(&mut self.failures)
    }

    /// Whether the driver should let its event loop run before launching the steps of the
    /// last call (see [`YIELD_EVERY`]); reading it resets it.
    pub fn take_yield(&mut self) -> bool {
        std::mem::take(&mut self.launches.yield_now)
    }

    /// Create a run.
    pub fn create(
        &mut self,
        def: Arc<RunDef>,
        mut opts: RunOptions,
    ) -> Result<RunKey, EngineError> {
        // A run started inside a step keeps its parent's time.
        let clock = opts
            .parent
            .and_then(|(pk, _)| self.get(pk).map(|p| p.clock))
            .unwrap_or(opts.clock);
        let now = self.now(clock);
        // A run started inside a step shares its run id and hangs under that step.
        let (run_id, parent_step, parent_tap) = match opts.parent {
            Some((pk, slot)) => {
                let p = self.get_mut(pk).ok_or(EngineError::StaleRun)?;
                let rec = p.exec.recorder();
                let run_id = rec.run_id(now);
                let step = rec.step(slot, now);
                let durable = p
                    .tap
                    .as_ref()
                    .and_then(|t| t.writer.as_ref())
                    .filter(|w| !w.ended())
                    .map(|w| {
                        (
                            Arc::clone(w.store()),
                            w.is_sync(),
                            w.run_id().to_owned(),
                            w.fence().cloned(),
                        )
                    });
                let traceparent = p
                    .tap
                    .as_ref()
                    .and_then(|t| t.spans.as_ref())
                    .map(|s| s.traceparent(Some(slot)));
                (Some(run_id), Some(step), Some((durable, traceparent)))
            }
            None => (opts.run_id, None, None),
        };
        // A step that ran again after a restart starts a run it had started before: that
        // run continues from its own records (or, if it had ended, does not run again).
        let name = opts.name.clone().unwrap_or_else(|| def.name.clone());
        if let (Some((pk, slot)), Some((Some((store, sync, _, _)), _))) = (opts.parent, &parent_tap)
        {
            let stored = self.get_mut(pk).and_then(|p| {
                let q = p.slot_nested.get_mut(&slot)?;
                q.front()
                    .is_some_and(|c| c.kind == def.kind() && c.name == name)
                    .then(|| q.pop_front())
                    .flatten()
            });
            if let Some(row) = stored {
                if row.status.is_terminal() {
                    opts.continued = Some(Continued {
                        row_id: row.id.clone(),
                        done: Some((row.status, row.output.clone(), row.error.clone())),
                        ..Continued::default()
                    });
                } else {
                    continuation(store.as_ref(), &row, &def, now as i64)?.continue_run(
                        &row.id,
                        Arc::clone(store),
                        *sync,
                        true,
                        &mut opts,
                    );
                }
            }
        }
        let len = def.len();
        let mut rec = Recorder::new(
            seed() ^ now,
            if def.kind() == Kind::Dag { len } else { 0 },
            run_id,
            parent_step,
        );
        rec.set_observe(opts.observe);
        let mut exec = match (&def.compiled, &opts.restore) {
            (Compiled::Dag(dag), restore) => {
                let mut run = DagRun::new(
                    Arc::clone(dag),
                    DagRunOptions {
                        tolerate_failures: def.tolerate_failures,
                        manual: opts.stepwise,
                        semaphores: opts.semaphores,
                    },
                    rec,
                );
                if let Some(Restore::Dag {
                    finished,
                    failed,
                    attempts,
                    timers,
                    cancelled,
                }) = restore
                {
                    for (node, _) in finished {
                        run.restore_finished(*node);
                    }
                    for &node in cancelled {
                        run.restore_cancelled(node);
                    }
                    for (node, _) in failed {
                        run.restore_failed(*node);
                    }
                    for &(node, n) in attempts {
                        run.restore_attempts(node, n);
                    }
                    for (timer, _, _) in timers {
                        run.restore_retry(*timer);
                    }
                }
                Executor::Dag(run)
            }
            (Compiled::Machine(m), Some(Restore::Machine { snapshot, .. })) => Executor::Machine(
                MachineRun::restore(Arc::clone(m), rec, opts.semaphores, snapshot)?,
            ),
            (Compiled::Machine(m), _) => Executor::Machine(MachineRun::new(
                Arc::clone(m),
                rec,
                opts.semaphores,
                opts.initial,
            )),
        };
        let kind = def.kind();
        let memo = opts.continued.as_ref().is_some_and(|c| c.done.is_some());
        // Durable: the options, or the parent's store for a run nested in a stored run
        // (not for one that ended before a restart: it does not run again).
        let durable = match (&opts.durable, &parent_tap) {
            _ if memo => None,
            (Some(d), _) => Some((d.clone(), None)),
            (None, Some((Some((store, sync, parent_row, fence)), _))) => {
                let step = parent_step.map(|s| s.to_string()).unwrap_or_default();
                Some((
                    Durable {
                        store: Arc::clone(store),
                        sync: *sync,
                        fence: fence.clone(),
                        row: DurableRow::New(RunRow {
                            id: crate::ids::new_id(now),
                            name: name.clone(),
                            kind: Some(kind),
                            definition: def.stored.clone(),
                            input: opts.input.clone(),
                            tags: Vec::new(),
                            info: None,
                            parent: Some((parent_row.clone(), step)),
                            snapshot: None,
                            lease: None,
                        }),
                    },
                    Some(()),
                ))
            }
            _ => None,
        };
        let traceparent = opts
            .traceparent
            .clone()
            .or_else(|| parent_tap.as_ref().and_then(|(_, tp)| tp.clone()));
        let traced = tracing_enabled();
        let mut tap: Option<Box<Tap>> = None;
        let mut restored_timers = Vec::new();
        if durable.is_some() || traced {
            let mut t = Box::new(Tap::new(kind == Kind::Machine, len, opts.observe));
            if traced {
                let run_id = exec.recorder().run_id(now).to_string();
                t.spans = RunSpans::start(
                    if kind == Kind::Dag {
                        RunKind::Dag
                    } else {
                        RunKind::Machine
                    },
                    &name,
                    &run_id,
                    traceparent.as_deref(),
                    def.attributes.as_deref(),
                );
            }
            // A sink records every event; the driver drains them only if it listens.
            exec.recorder().set_observe(true);
            if let Some((d, _)) = durable {
                let ids = t.spans.as_ref().map(|s| s.ids());
                let writer = match d.row {
                    DurableRow::New(mut row) => {
                        row.kind = Some(kind);
                        if row.snapshot.is_none() {
                            row.snapshot =
                                opts.context.as_ref().map(|c| initial_snapshot(&exec, c));
                        }
                        RunWriter::create(d.store, row, d.sync, ids, d.fence, now)?
                    }
                    DurableRow::Resume { id, seqs } => {
                        let mut w = RunWriter::resume(d.store, id, kind, d.sync, seqs);
                        w.set_fence(d.fence);
                        w.status(stored_status(exec.phase()));
                        if let Some(step) = parent_step {
                            w.reparent(step.to_string());
                        }
                        w
                    }
                };
                t.writer = Some(writer);
            }
            t.context = opts.context.clone();
            // A machine's first state takes the run's input.
            if let (Values::Machine(m), None) = (&mut t.values, &opts.restore) {
                let input = match &opts.durable {
                    Some(Durable {
                        row: DurableRow::New(row),
                        ..
                    }) => row.input.clone(),
                    _ => None,
                }
                .or_else(|| opts.input.clone());
                m.input = crate::sink::raw(input.as_deref());
            }
            match (opts.restore, &mut t.values) {
                (
                    Some(Restore::Dag {
                        finished,
                        failed,
                        timers,
                        ..
                    }),
                    Values::Dag { outputs, errors },
                ) => {
                    for (node, v) in finished {
                        outputs[node as usize] = v;
                    }
                    for (node, v) in failed {
                        errors[node as usize] = v;
                    }
                    restored_timers = timers;
                }
                (
                    Some(Restore::Machine {
                        values,
                        context,
                        timers,
                        ..
                    }),
                    Values::Machine(m),
                ) => {
                    *m = values;
                    t.context = context;
                    restored_timers = timers;
                }
                _ => {}
            }
            if let Some(w) = t.writer.as_mut() {
                for (timer, _, row) in &restored_timers {
                    w.timer_row(*timer, row.clone());
                }
            }
            // Armed below, once the run has its key.
            tap = Some(t);
        }
        let clocked = opts.observe || tap.is_some() || def.uses_timers();
        let timers = restored_timers;
        let key = self.insert(Live {
            gen: 0,
            exec,
            def,
            clock,
            parent: opts.parent,
            children: Vec::new(),
            tap,
            observe: opts.observe,
            clocked,
            keep_alive: opts.keep_alive,
            ended: None,
            nested: opts.nested,
            slot_nested: HashMap::new(),
            continued: opts.continued,
            driver_mark: u64::MAX,
            held: Vec::new(),
        });

        if let Some(c) = self.clocks.get_mut(clock as usize).and_then(Option::as_mut) {
            for (timer, at, _) in timers {
                c.wheel.arm(key, timer, at, opts.keep_alive);
            }
        }
        if let Some((pk, slot)) = opts.parent {
            if let Some(p) = self.get_mut(pk) {
                p.children.push((slot, key));
            }
        }
        Ok(key)
    }

    fn insert(&mut self, mut live: Live) -> RunKey {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot { gen: 0, live: None });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        // Drivers may keep fewer bits of a handle's generation (the Node binding keeps 7):
        // generations wrap within them, so a handle is told apart from the slot's last
        // GEN_MASK uses, which is what a stale handle needs.
        slot.gen = (slot.gen + 1) & GEN_MASK;
        live.gen = slot.gen;
        slot.live = Some(Box::new(live));
        RunKey {
            index,
            gen: slot.gen,
        }
    }

    /// Let a run go (it ended, or its driver dropped it): its memory is freed now and its
    /// timers disarmed. Returns it.
    pub fn release(&mut self, key: RunKey) -> Option<Box<Live>> {
        let slot = self.slots.get_mut(key.index as usize)?;
        if slot.live.as_ref().map(|l| l.gen) != Some(key.gen) {
            return None;
        }
        let live = slot.live.take()?;
        self.free.push(key.index);
        if !live.held.is_empty() {
            self.holding -= 1;
            self.holds_changed = true;
        }
        if let Some(c) = self
            .clocks
            .get_mut(live.clock as usize)
            .and_then(Option::as_mut)
        {
            c.wheel.clear_run(key);
        }
        if let Some((pk, _)) = live.parent {
            if let Some(p) = self.get_mut(pk) {
                p.children.retain(|&(_, c)| c != key);
            }
        }
        Some(live)
    }

    /// Apply a command to a run, with the JSON values its sinks need. The driver's
    /// actions (for this run, and for runs nested in it that this cancelled) are appended
    /// to `out`. Returns whether the command applied.
    pub fn apply(
        &mut self,
        key: RunKey,
        command: Command,
        values: CommandValues,
        guards: &mut dyn Guards,
        out: &mut Vec<(RunKey, Action)>,
    ) -> Result<bool, EngineError> {
        let applied = self.apply_one(key, command, values, guards, out)?;
        self.cascade(key, out);
        self.release_committed(out);
        Ok(applied)
    }

    fn apply_one(
        &mut self,
        key: RunKey,
        command: Command,
        values: CommandValues,
        guards: &mut dyn Guards,
        out: &mut Vec<(RunKey, Action)>,
    ) -> Result<bool, EngineError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let Some(entry) = self.slots.get_mut(key.index as usize) else {
            return Err(EngineError::StaleRun);
        };
        let Some(live) = entry.live.as_deref_mut().filter(|l| l.gen == key.gen) else {
            return Err(EngineError::StaleRun);
        };
        let clock = self
            .clocks
            .get_mut(live.clock as usize)
            .and_then(Option::as_mut)
            .ok_or(EngineError::StaleRun)?;
        let force_clock = matches!(
            command,
            Command::TimerFired { .. }
                | Command::Complete {
                    outcome: Outcome::Choose { delay: Some(_), .. },
                    ..
                }
        );
        let now = if live.clocked || force_clock {
            clock.clock.now_ms()
        } else {
            0
        };
        if let Some(tap) = live.tap.as_deref_mut() {
            match command {
                // The late report of an attempt a rerun or timeout abandoned: its value
                // must not replace the current attempt's.
                Command::Complete { slot, .. }
                    if matches!(live.exec, Executor::Dag(_)) && live.exec.is_cancelled(slot) => {}
                Command::Rerun { node, given: true } => {
                    tap.step_value(node, values.value.map(str::to_owned), false)
                }
                Command::Complete { slot, outcome } => match outcome {
                    // A DAG keeps values by node; its later attempts have slots of their own.
                    Outcome::Ok | Outcome::Cached | Outcome::Choose { .. } => tap.step_value(
                        live.exec.slot_node(slot).unwrap_or(slot),
                        values.value.map(str::to_owned),
                        false,
                    ),
                    Outcome::Error | Outcome::Fatal => tap.step_value(
                        live.exec.slot_node(slot).unwrap_or(slot),
                        values.value.map(str::to_owned),
                        true,
                    ),
                    Outcome::Cancelled => {}
                },
                Command::Send { handle, event, .. } => {
                    tap.event_sent(handle, event, values.value.map(str::to_owned))
                }
                Command::TimerFired { timer } => {
                    if let Some(w) = tap.writer.as_mut() {
                        w.timer_fired(timer, now);
                    }
                }
                _ => {}
            }
            if let Some(c) = values.context {
                tap.context = Some(c.to_owned());
            }
        }
        let applied = live.exec.apply(command, guards, now, &mut scratch);
        // Runs a step had started before a restart end with the step if it did not start
        // them again.
        let mut orphans: Vec<Run> = Vec::new();
        if let Command::Complete { slot, .. } = command {
            if applied && !live.slot_nested.is_empty() {
                orphans.extend(live.slot_nested.remove(&slot).into_iter().flatten());
            }
        }
        for a in &scratch {
            if let Action::Run { slot, node } = a {
                if !live.nested.is_empty() {
                    if let Some(q) = live.nested.remove(live.def.node_name(*node)) {
                        live.slot_nested.insert(*slot, q);
                    }
                }
            }
        }
        if scratch.iter().any(|a| matches!(a, Action::Ended(_))) {
            orphans.extend(live.nested.drain().flat_map(|(_, q)| q));
            orphans.extend(live.slot_nested.drain().flat_map(|(_, q)| q));
        }
        if !orphans.is_empty() {
            if let Some(store) = live.store() {
                for row in orphans.iter().filter(|r| !r.status.is_terminal()) {
                    let _ = end_tree(store.as_ref(), &row.id, now as i64);
                }
            }
        }
        for a in &scratch {
            match a {
                Action::ArmTimer { timer, at, .. } => {
                    clock.wheel.arm(key, *timer, *at, live.keep_alive)
                }
                Action::ClearTimer { timer } => clock.wheel.clear(key, *timer),
                Action::Run { .. } => self.launches.add(1),
                _ => {}
            }
        }
        let mut ended = None;
        if let Some(tap) = live.tap.as_deref_mut() {
            tap.actions(&live.def, &scratch, now);
            tap.branch_cancel = matches!(command, Command::CancelNode { .. });
            tap.events(&mut live.exec, &live.def);
            tap.branch_cancel = false;
        }
        for a in &scratch {
            if let Action::Ended(end) = a {
                if live.ended.is_none() {
                    live.ended = Some(*end);
                    ended = Some(*end);
                    if let Some(tap) = live.tap.as_deref_mut() {
                        tap.ended(&live.exec, &live.def, *end, now);
                    }
                }
            }
        }
        let mut failure = None;
        let mut hold = None;
        if let Some(tap) = live.tap.as_deref_mut() {
            if let Some(w) = tap.writer.as_ref() {
                // A sync run commits before its next step starts; any run commits its end
                // with its last snapshot; a batched run waits for the driver's end of turn.
                if w.is_sync() || ended.is_some() || w.full() {
                    let snapshot = if w.full() && !w.is_sync() && ended.is_none() {
                        None
                    } else {
                        tap.snapshot(&live.exec)
                    };
                    let sync = w.is_sync();
                    if let Some(w) = tap.writer.as_mut() {
                        match &self.commit_wake {
                            // The steps wait for the commit, the driver does not: the commits
                            // of many runs then share one write to disk.
                            Some(wake) if sync => {
                                self.next_ticket += 1;
                                let ticket = self.next_ticket;
                                let (commits, wake) = (Arc::clone(&self.commits), Arc::clone(wake));
                                let done = Box::new(move |r: Result<(), EngineError>| {
                                    commits.push(key, ticket, r.err());
                                    wake();
                                });
                                if w.flush_then(snapshot, now, done) {
                                    hold = Some(ticket);
                                }
                            }
                            _ => {
                                if let Err(e) = w.flush(snapshot, now) {
                                    failure = Some(e);
                                }
                            }
                        }
                    }
                }
            }
        }
        // Steps that follow a commit still owed wait for it too, in order.
        let hold = hold.or_else(|| live.held.last().map(|&(t, _)| t));
        for a in scratch.drain(..) {
            match a {
                Action::ArmTimer { .. } | Action::ClearTimer { .. } => {}
                // A sync run's end waits for its commit too: it settles as its records
                // did (a refused write fails it).
                Action::Run { .. }
                | Action::Acquire { .. }
                | Action::Ready { .. }
                | Action::Ended(_) => match hold {
                    Some(ticket) => {
                        if live.held.is_empty() {
                            self.holding += 1;
                            self.holds_changed = true;
                        }
                        live.held.push((ticket, a));
                    }
                    None => out.push((key, a)),
                },
                other => out.push((key, other)),
            }
        }
        self.scratch = scratch;
        self.touched.push(key);
        if let Some(e) = failure {
            self.failures.push((key, e));
        }
        if ended.is_some() {
            if let Some((pk, _)) = self.get(key).and_then(|l| l.parent) {
                if let Some(p) = self.get_mut(pk) {
                    p.children.retain(|&(_, c)| c != key);
                }
            }
        }
        Ok(applied)
    }

    /// Launch steps of sync runs only once their records are committed, and call `wake` (on
    /// the store's writer thread) when a commit came back: the driver then calls
    /// [`release_committed`](Self::release_committed). Without it a sync run's driver waits
    /// for each commit itself.
    pub fn wake_on_commit(&mut self, wake: Arc<dyn Fn() + Send + Sync>) {
        self.commit_wake = Some(wake);
    }

    /// Hand out the steps whose commits came back (see [`wake_on_commit`](Self::wake_on_commit)),
    /// in order; a failed commit fails its run as a failed write does.
    pub fn release_committed(&mut self, out: &mut Vec<(RunKey, Action)>) {
        if !self
            .commits
            .any
            .swap(false, std::sync::atomic::Ordering::Acquire)
        {
            return;
        }
        let done =
            std::mem::take(&mut *self.commits.done.lock().unwrap_or_else(|e| e.into_inner()));
        for (key, ticket, error) in done {
            let failed = error.is_some();
            if let Some(e) = error {
                self.failures.push((key, e));
                self.touched.push(key);
            }
            let Some(live) = self.get_mut(key) else {
                continue;
            };
            let n = live.held.iter().take_while(|&&(t, _)| t <= ticket).count();
            if n == 0 {
                continue;
            }
            // Steps whose records were refused never start (another engine may run them
            // now); the run's end still reaches the driver, with its failure.
            out.extend(
                live.held
                    .drain(..n)
                    .filter(|(_, a)| !failed || matches!(a, Action::Ended(_)))
                    .map(|(_, a)| (key, a)),
            );
            let emptied = live.held.is_empty();
            self.touched.push(key);
            if emptied {
                self.holding -= 1;
                self.holds_changed = true;
            }
        }
    }

    /// Whether steps wait for a commit (the driver keeps its process alive meanwhile).
    pub fn holds_steps(&self) -> bool {
        self.holding > 0
    }

    /// Whether [`holds_steps`](Self::holds_steps) changed since the last call.
    pub fn take_holds_changed(&mut self) -> bool {
        std::mem::take(&mut self.holds_changed)
    }

    /// Apply the completions of the steps a driver ran by itself after the running one,
    /// within the run's [`Live::local_budget`] (see
    /// [`MachineRun::complete_local`](ramus_core::machine::MachineRun::complete_local)). A
    /// step that was not a plain move means the driver went where the core would not have,
    /// and is an error.
    pub fn apply_local(&mut self, key: RunKey, answers: &[i32]) -> Result<(), EngineError> {
        let live = self.get_mut(key).ok_or(EngineError::StaleRun)?;
        if !live.may_run_locally() {
            return Err(EngineError::LocalSteps);
        }
        let Executor::Machine(m) = &mut live.exec else {
            return Err(EngineError::LocalSteps);
        };
        // The core checks its own budget for these steps.
        m.complete_local(answers)
            .map_err(|_| EngineError::LocalSteps)?;
        self.launches.add(answers.len() as u32);
        self.touched.push(key);
        Ok(())
    }

    /// A live DAG run takes a larger definition (its nodes, then new ones: `addNodes`);
    /// [`Command::Grow`] then starts what can start. A stored run records the stored
    /// definition it goes on under, so a resume loads the larger graph.
    pub fn stage_graph(&mut self, key: RunKey, def: Arc<RunDef>) -> Result<(), EngineError> {
        let live = self.get_mut(key).ok_or(EngineError::StaleRun)?;
        let (Executor::Dag(run), Some(dag)) = (&mut live.exec, def.dag()) else {
            return Err(EngineError::Invalid(
                "addNodes: only a DAG run takes new nodes".into(),
            ));
        };
        if live.def.stored.is_some() && def.stored.is_none() {
            return Err(EngineError::Invalid(
                "addNodes: a run of a stored definition takes nodes that name registered runners (runner: 'key')".into(),
            ));
        }
        run.stage(Arc::clone(dag))
            .map_err(|e| EngineError::Invalid(format!("addNodes: {e}")))?;
        let n = dag.len();
        if let Some(tap) = live.tap.as_deref_mut() {
            if let Values::Dag { outputs, errors } = &mut tap.values {
                outputs.resize(n, None);
                errors.resize(n, None);
            }
            if let (Some(w), Some((name, version))) = (tap.writer.as_mut(), &def.stored) {
                w.redefined(name, *version);
            }
        }
        live.def = def;
        Ok(())
    }

    /// Cancel the runs nested in steps of `key` (and below) that no longer count: the step
    /// was cancelled, failed with its run, or timed out.
    fn cascade(&mut self, key: RunKey, out: &mut Vec<(RunKey, Action)>) {
        if self.get(key).is_none_or(|l| l.children.is_empty()) {
            return;
        }
        let mut work = vec![key];
        while let Some(k) = work.pop() {
            let Some(live) = self.get(k) else { continue };
            let doomed: Vec<RunKey> = live
                .children
                .iter()
                .filter(|(slot, _)| live.exec.is_cancelled(*slot))
                .map(|&(_, c)| c)
                .collect();
            for child in doomed {
                if self
                    .apply_one(
                        child,
                        Command::Cancel,
                        CommandValues::default(),
                        &mut NoConditions,
                        out,
                    )
                    .is_ok()
                {
                    work.push(child);
                }
            }
        }
    }

    /// The timers of `clock` due at or before `now` (its time), taken off the wheel, as
    /// `(run, timer)`, earliest first: the caller fires each with [`Command::TimerFired`],
    /// with guards of that run (its conditions, its `retryOn`).
    pub fn take_due(&mut self, clock: ClockId, now: u64) -> Vec<(RunKey, u64)> {
        match self.clocks.get_mut(clock as usize).and_then(Option::as_mut) {
            Some(c) => c
                .wheel
                .pop_due(now)
                .into_iter()
                .map(|d| (d.run, d.timer))
                .collect(),
            None => Vec::new(),
        }
    }

    /// When the next timer of `clock` falls due.
    pub fn next_due(&self, clock: ClockId) -> Option<u64> {
        self.clock(clock).and_then(|c| c.wheel.next_due())
    }

    /// Whether the next due time of `clock` changed since the last call.
    pub fn take_timers_changed(&mut self, clock: ClockId) -> bool {
        self.clocks
            .get_mut(clock as usize)
            .and_then(Option::as_mut)
            .is_some_and(|c| c.wheel.take_changed())
    }

    /// Whether any armed timer of `clock` keeps the process alive.
    pub fn keeps_alive(&self, clock: ClockId) -> bool {
        self.clock(clock).is_some_and(|c| c.wheel.keeps_alive())
    }

    /// The timers armed for a run: `(timer, due)`.
    pub fn armed(&self, key: RunKey) -> Vec<(u64, u64)> {
        self.get(key)
            .and_then(|l| self.clock(l.clock))
            .map(|c| c.wheel.armed(key))
            .unwrap_or_default()
    }

    /// End of a turn of a batched run: write what it collected, with its snapshot (the
    /// context now, JSON text, for DAGs).
    pub fn flush(&mut self, key: RunKey, context: Option<&str>) -> Result<(), EngineError> {
        let live = self.get_mut(key).ok_or(EngineError::StaleRun)?;
        let now = if live.clocked {
            self.now(self.get(key).map_or(0, |l| l.clock))
        } else {
            0
        };
        let live = self.get_mut(key).ok_or(EngineError::StaleRun)?;
        let Some(tap) = live.tap.as_deref_mut() else {
            return Ok(());
        };
        if let (Some(c), Executor::Dag(_)) = (context, &live.exec) {
            tap.context = Some(c.to_owned());
        }
        // After the end too: a DAG's face hands over the context the run ended with.
        if tap.writer.is_none() {
            return Ok(());
        }
        let snapshot = tap.snapshot(&live.exec);
        match tap.writer.as_mut() {
            Some(w) => w.flush(snapshot, now),
            None => Ok(()),
        }
    }

    /// Stop writing a run (its engine closes): what it collected is written first. The
    /// run goes on without a store.
    pub fn detach(&mut self, key: RunKey) -> Result<(), EngineError> {
        self.flush(key, None)?;
        let live = self.get_mut(key).ok_or(EngineError::StaleRun)?;
        if let Some(tap) = live.tap.as_deref_mut() {
            tap.writer = None;
        }
        Ok(())
    }

    /// A value of the run could not be stored (`error`, JSON text, names it): the run
    /// ends as failed with that error, and is cancelled.
    pub fn fail_storage(
        &mut self,
        key: RunKey,
        error: String,
        out: &mut Vec<(RunKey, Action)>,
    ) -> Result<(), EngineError> {
        let now = self.get(key).map_or(0, |l| self.now(l.clock));
        let live = self.get_mut(key).ok_or(EngineError::StaleRun)?;
        if let Some(tap) = live.tap.as_deref_mut() {
            tap.failed_storage(error, now);
        }
        self.apply(
            key,
            Command::Cancel,
            CommandValues::default(),
            &mut NoConditions,
            out,
        )?;
        let live = self.get_mut(key).ok_or(EngineError::StaleRun)?;
        if let Some(w) = live.tap.as_deref_mut().and_then(|t| t.writer.as_mut()) {
            w.flush(None, now)?;
        }
        Ok(())
    }

    /// Record a custom event a runner emitted on the step of `slot` (its data as JSON when
    /// the run is stored or traced).
    pub fn custom_event(
        &mut self,
        key: RunKey,
        slot: u32,
        event_type: &str,
        data: Option<String>,
        store: bool,
    ) -> Result<(), EngineError> {
        let now = {
            let live = self.get(key).ok_or(EngineError::StaleRun)?;
            self.now(live.clock)
        };
        let live = self.get_mut(key).ok_or(EngineError::StaleRun)?;
        if !store && !live.observe {
            return Ok(());
        }
        if let Some(tap) = live.tap.as_deref_mut() {
            tap.push_custom(data, store);
        }
        live.exec.recorder().custom_event(slot, event_type, now);
        // A listener hears of it now, not with the step's next record.
        self.touched.push(key);
        let live = self.get_mut(key).ok_or(EngineError::StaleRun)?;
        if let Some(tap) = live.tap.as_deref_mut() {
            tap.events(&mut live.exec, &live.def);
            if let Some(w) = tap.writer.as_mut().filter(|w| w.is_sync() && store) {
                let snapshot = None;
                w.flush(snapshot, now)?;
            }
        }
        Ok(())
    }

    /// A stored event was delivered to the run (the store marks it taken).
    pub fn delivered(&mut self, key: RunKey, event_id: String) {
        let now = self.get(key).map_or(0, |l| self.now(l.clock));
        if let Some(w) = self
            .get_mut(key)
            .and_then(|l| l.tap.as_deref_mut())
            .and_then(|t| t.writer.as_mut())
        {
            w.delivered(event_id, now);
        }
    }

    /// Turn event recording for the driver on or off.
    pub fn set_observe(&mut self, key: RunKey, on: bool) {
        if let Some(live) = self.get_mut(key) {
            live.observe = on;
            if on {
                live.clocked = true;
            }
            match live.tap.as_deref_mut() {
                Some(t) => t.set_listened(on),
                None => live.exec.recorder().set_observe(on),
            }
        }
    }

    /// The events recorded for the driver since the last drain.
    pub fn drain(&mut self, key: RunKey) -> Vec<Event> {
        let Some(live) = self.get_mut(key) else {
            return Vec::new();
        };
        if let Some(t) = live.tap.as_deref_mut() {
            t.drained();
        }
        live.exec.recorder().drain()
    }

    /// The run id (shared with the enclosing run when nested).
    pub fn run_id(&mut self, key: RunKey) -> Option<Id> {
        let now = self.get(key).map(|l| self.now(l.clock))?;
        Some(self.get_mut(key)?.exec.recorder().run_id(now))
    }

    /// The id of a step.
    pub fn step_id(&mut self, key: RunKey, slot: u32) -> Option<Id> {
        let now = self.get(key).map(|l| self.now(l.clock))?;
        Some(self.get_mut(key)?.exec.recorder().step(slot, now))
    }

    /// The `traceparent` of a step's span (or the run's), for runs started inside it.
    pub fn traceparent(&self, key: RunKey, slot: Option<u32>) -> Option<String> {
        self.get(key)?
            .tap
            .as_ref()?
            .spans
            .as_ref()
            .map(|s| s.traceparent(slot))
    }
}

/// The snapshot a new durable run's row starts with: its context, so a crash before its
/// first step is written resumes with what the caller passed.
fn initial_snapshot(exec: &Executor, context: &str) -> String {
    match exec {
        Executor::Dag(_) => format!(r#"{{"context":{context}}}"#),
        Executor::Machine(m) => {
            let core = serde_json::to_string(&m.snapshot()).unwrap_or_else(|_| "null".into());
            format!(r#"{{"core":{core},"context":{context}}}"#)
        }
    }
}
