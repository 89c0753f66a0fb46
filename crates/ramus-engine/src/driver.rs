//! The thread that drives an [`crate::Engine`]'s runs.
//!
//! The [`Runtime`] is made to be owned by one thread (the binding's is the JS thread's), so
//! an engine gives it a thread of its own and talks to it with messages: public calls,
//! runner completions, custom events, events found in the store. Runners run on tokio;
//! what they return comes back here as a [`Msg::Complete`]. The thread may block on the
//! store (a `sync` run commits each step before the next starts) without stalling a tokio
//! worker, and it sleeps on its channel until a message arrives or the system clock's
//! next timer falls due.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use ramus_core::{Action, Command, Delay, End, Executor, GuardFailed, Guards, NoGuards, Outcome};
use ramus_store::SqliteStore;
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch};

use crate::clock::TestClock;
use crate::def::{RunDef, RunnerRef};
use crate::delivery::Watched;
use crate::engine::{Defined, Durability, RunHandle, StartOptions, Target};
use crate::engine_core::EngineCore;
use crate::error::EngineError;
use crate::ids::new_id;
use crate::runtime::{
    ClockId, CommandValues, Durable, DurableRow, Restore, RunKey, RunOptions, Runtime,
};
use crate::sink::{EventValue, Values};
use crate::step::{Event, Guard, RunError, Step, StepError, StepShared};
use crate::writer::RunRow;

/// What a runner's future resolves to.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A registered runner, boxed.
pub(crate) type RunnerFn =
    dyn Fn(Step) -> Pin<Box<dyn Future<Output = Result<Value, BoxError>> + Send>> + Send + Sync;
/// A registered condition.
pub(crate) type ConditionFn = dyn Fn(&Guard) -> bool + Send + Sync;

/// Runners and conditions by key. Written by `register` on any thread, read here.
#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) runners: RwLock<HashMap<String, Arc<RunnerFn>>>,
    pub(crate) conditions: RwLock<HashMap<String, Arc<ConditionFn>>>,
}

impl Registry {
    fn runner(&self, key: &str) -> Option<Arc<RunnerFn>> {
        self.runners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    fn condition(&self, key: &str) -> Option<Arc<ConditionFn>> {
        self.conditions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }
}

type Reply<T> = oneshot::Sender<Result<T, EngineError>>;
type Outcome_ = Option<Result<Value, RunError>>;

/// What the driver is asked to do.
pub(crate) enum Msg {
    Start {
        target: Target,
        options: StartOptions,
        /// A queued run's row, claimed by this engine: the run starts in it.
        claimed: Option<String>,
        reply: Reply<RunHandle>,
    },
    Resume {
        run_id: String,
        reply: Reply<RunHandle>,
    },
    Complete {
        key: RunKey,
        slot: u32,
        result: Result<Value, StepError>,
        choice: Option<(String, Option<u64>)>,
    },
    Emit {
        key: RunKey,
        slot: u32,
        event_type: String,
        data: String,
    },
    Send {
        run_id: String,
        event: Event,
        reply: Reply<String>,
    },
    /// An event another process stored for a run live here.
    Deliver {
        run_id: String,
        id: String,
        event: Event,
    },
    Cancel {
        key: RunKey,
    },
    /// Cancel one node of a DAG run and its downstream.
    CancelNode {
        key: RunKey,
        node: String,
    },
    /// Test clocks: fire the earliest timers if they fall due at or before `upto`.
    FireNext {
        upto: u64,
        reply: oneshot::Sender<bool>,
    },
    /// How many steps run, how many messages were handled so far, and whether steps wait
    /// for a commit.
    Probe {
        reply: oneshot::Sender<(usize, u64, bool)>,
    },
    /// The store committed records that steps of sync runs wait for.
    Committed,
    /// Answer once no step runs.
    Idle {
        reply: oneshot::Sender<()>,
    },
    Flush {
        reply: Reply<()>,
    },
    Close {
        reply: Reply<()>,
    },
    /// The engine was dropped without `close`: stop at once, as a crash would.
    Abandon,
}

/// A run live here, beside its entry in the runtime.
struct RunState {
    run_id: Arc<str>,
    context: Arc<Mutex<Value>>,
    root_input: Arc<Value>,
    done: watch::Sender<Outcome_>,
    /// The last event handle given (handles restored from a snapshot included).
    next_handle: u64,
    settled: bool,
    /// A fork's output for the state the machine starts in, taken by its first step.
    given: Option<Value>,
}

/// What the engine hands its driver thread.
pub(crate) struct Parts {
    pub(crate) core: Arc<EngineCore>,
    pub(crate) store: Arc<SqliteStore>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) test_clock: Option<Arc<TestClock>>,
    pub(crate) sync: bool,
    pub(crate) handle: tokio::runtime::Handle,
    pub(crate) tx: Sender<Msg>,
    pub(crate) watched: Arc<Watched<()>>,
}

pub(crate) struct Driver {
    rt: Runtime,
    clock: ClockId,
    p: Parts,
    runs: HashMap<RunKey, RunState>,
    by_id: HashMap<String, RunKey>,
    in_flight: HashMap<RunKey, HashMap<u32, Arc<StepShared>>>,
    /// Completions made here (states without a runner), applied before the next message.
    local: VecDeque<Msg>,
    idle: Vec<oneshot::Sender<()>>,
    /// Runs whose running steps may have been cancelled by the last commands.
    check_cancel: HashSet<RunKey>,
    out: Vec<(RunKey, Action)>,
    /// Messages handled (probes aside): a settling test clock sees whether steps moved.
    handled: u64,
}

/// Parse stored JSON text; text that is not JSON (never written by the engine) becomes a
/// string rather than an error in a runner's input.
pub(crate) fn parse(text: Option<&str>) -> Value {
    match text {
        Some(t) => serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.to_owned())),
        None => Value::Null,
    }
}

fn raw(text: &str) -> Option<Box<serde_json::value::RawValue>> {
    serde_json::value::RawValue::from_string(text.to_owned()).ok()
}

fn lock(v: &Mutex<Value>) -> std::sync::MutexGuard<'_, Value> {
    v.lock().unwrap_or_else(|e| e.into_inner())
}

/// Store a definition (a machine has `initial`).
pub(crate) fn define(core: &EngineCore, config: &Value) -> Result<Defined, EngineError> {
    let kind = match config {
        Value::Object(o) if o.contains_key("initial") => ramus_store::Kind::Machine,
        Value::Object(_) => ramus_store::Kind::Dag,
        _ => {
            return Err(EngineError::Invalid(
                "A definition must be a JSON object with a name and nodes".into(),
            ))
        }
    };
    let (name, version, created) = core.define(kind, &config.to_string())?;
    Ok(Defined {
        name,
        version,
        created,
    })
}

/// The guards of a timer that fires: Rust runs have no `retryOn` predicates (their runners
/// say `StepError::no_retry()` instead), so a timeout is retried as without one: a DAG
/// node's is, a state's is not.
struct NoRetryOn {
    dag: bool,
}

impl Guards for NoRetryOn {
    fn holds(&mut self, _: u32, _: Option<u64>) -> Result<bool, GuardFailed> {
        Ok(true)
    }

    fn retries_timeout(&mut self, _: u32, _: u32, _: &str) -> bool {
        self.dag
    }
}

/// Transition conditions of one command, with the values they see.
struct Conditions {
    def: Arc<RunDef>,
    registry: Arc<Registry>,
    context: Arc<Mutex<Value>>,
    input: Value,
    output: Value,
    root: Arc<Value>,
    events: Vec<(u64, Event)>,
}

impl Guards for Conditions {
    fn holds(&mut self, transition: u32, event: Option<u64>) -> Result<bool, GuardFailed> {
        let Some(Some(key)) = self.def.conditions.get(transition as usize) else {
            return Ok(true);
        };
        let f = self.registry.condition(key).ok_or(GuardFailed)?;
        let event = event.and_then(|h| self.events.iter().find(|(x, _)| *x == h).map(|(_, e)| e));
        let context = lock(&self.context);
        let guard = Guard {
            context: &context,
            input: &self.input,
            output: &self.output,
            root_input: &self.root,
            event,
        };
        // A panicking condition fails the state, as a throwing one does in JS, instead of
        // taking the driver (and every run) down with it.
        catch_unwind(AssertUnwindSafe(|| f(&guard))).map_err(|_| GuardFailed)
    }
}

fn event_of(v: &EventValue) -> Event {
    Event::new(
        v.event_type.clone(),
        parse(v.data.as_ref().map(|d| d.get())),
    )
}

/// A runner's future that turns a panic into the step's error.
struct CatchUnwind(Pin<Box<dyn Future<Output = Result<Value, BoxError>> + Send>>);

impl Future for CatchUnwind {
    type Output = Result<Value, StepError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(r)) => Poll::Ready(r.map_err(StepError::from_boxed)),
            Err(panic) => Poll::Ready(Err(panicked(panic))),
        }
    }
}

fn panicked(panic: Box<dyn std::any::Any + Send>) -> StepError {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a runner panicked".to_owned());
    StepError::new(format!("the runner panicked: {msg}")).named("Panic")
}

impl Driver {
    pub(crate) fn new(p: Parts) -> Driver {
        let mut rt = Runtime::new();
        // Sync runs' steps wait for their commits, this thread does not: runs committing
        // together share one commit.
        let tx = p.tx.clone();
        rt.wake_on_commit(Arc::new(move || {
            let _ = tx.send(Msg::Committed);
        }));
        let clock = match &p.test_clock {
            Some(c) => rt.add_clock(Arc::clone(c) as Arc<dyn crate::Clock>),
            None => crate::SYSTEM_CLOCK,
        };
        Driver {
            rt,
            clock,
            p,
            runs: HashMap::new(),
            by_id: HashMap::new(),
            in_flight: HashMap::new(),
            local: VecDeque::new(),
            idle: Vec::new(),
            check_cancel: HashSet::new(),
            out: Vec::new(),
            handled: 0,
        }
    }

    /// The thread's loop: one turn per batch of messages, then due timers, then the end
    /// of the turn (batched runs write what they collected).
    pub(crate) fn run(mut self, rx: Receiver<Msg>) {
        let mut renewed = std::time::Instant::now();
        loop {
            // Leases are renewed in real time, a third of a lease apart, so a live engine
            // never lets them lapse (and one that stops, stopped or killed, does).
            let renew_every = Duration::from_millis((self.p.core.lease_ms() / 3).max(1) as u64);
            let renew_in = renew_every.saturating_sub(renewed.elapsed());
            let wait = match (&self.p.test_clock, self.rt.next_due(self.clock)) {
                (None, Some(at)) => Some(Duration::from_millis(
                    at.saturating_sub(self.rt.now(self.clock)),
                )),
                _ => None,
            };
            let wait = match (wait, self.by_id.is_empty()) {
                (w, true) => w,
                (Some(w), false) => Some(w.min(renew_in)),
                (None, false) => Some(renew_in),
            };
            let first = match wait {
                Some(d) => rx.recv_timeout(d),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match first {
                Ok(msg) => {
                    if !self.handle(msg) {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            // A bounded turn, so a flood of completions still writes its records in
            // groups of reasonable size.
            for _ in 0..4096 {
                match rx.try_recv() {
                    Ok(msg) => {
                        if !self.handle(msg) {
                            return;
                        }
                    }
                    Err(_) => break,
                }
            }
            if self.p.test_clock.is_none() {
                let now = self.rt.now(self.clock);
                if self.rt.next_due(self.clock).is_some_and(|at| at <= now) {
                    self.fire(now);
                }
            }
            self.end_turn();
            if renewed.elapsed() >= renew_every {
                renewed = std::time::Instant::now();
                self.renew_leases();
            }
        }
    }

    /// Renew this engine's leases; a run another engine took over meanwhile stops here (its
    /// writes are refused already).
    fn renew_leases(&mut self) {
        let now = self.rt.now(self.clock) as i64;
        let Ok(lost) = self.p.core.renew(now) else {
            return;
        };
        for run_id in lost {
            if let Some(&key) = self.by_id.get(&run_id) {
                self.settle(
                    key,
                    Err(RunError::Storage(format!(
                        "run {run_id} is no longer held by this engine: another engine took it over"
                    ))),
                );
                self.handle(Msg::Cancel { key });
            }
        }
    }

    /// Handle one message (and the completions it made here). False: stop the thread.
    fn handle(&mut self, msg: Msg) -> bool {
        let mut next = Some(msg);
        while let Some(msg) = next.take().or_else(|| self.local.pop_front()) {
            if !matches!(msg, Msg::Probe { .. }) {
                self.handled += 1;
            }
            match msg {
                Msg::Start {
                    target,
                    options,
                    claimed,
                    reply,
                } => {
                    let r = self.start(target, options, claimed);
                    let _ = reply.send(r);
                }
                Msg::Resume { run_id, reply } => {
                    let r = self.resume(&run_id);
                    let _ = reply.send(r);
                }
                Msg::Complete {
                    key,
                    slot,
                    result,
                    choice,
                } => self.complete(key, slot, result, choice),
                Msg::Emit {
                    key,
                    slot,
                    event_type,
                    data,
                } => {
                    // A step of a run that ended or went away emits into nothing.
                    if self.runs.contains_key(&key) {
                        let _ = self
                            .rt
                            .custom_event(key, slot, &event_type, Some(data), true);
                    }
                }
                Msg::Send {
                    run_id,
                    event,
                    reply,
                } => {
                    let r = self.send(&run_id, event, None);
                    let _ = reply.send(r);
                }
                Msg::Deliver { run_id, id, event } => {
                    let _ = self.send(&run_id, event, Some(id));
                }
                Msg::Cancel { key } => {
                    if self.runs.contains_key(&key) {
                        self.apply(key, Command::Cancel, None, None, &mut NoGuards);
                        self.check_cancel.insert(key);
                    }
                }
                Msg::CancelNode { key, node } => {
                    let id = self
                        .rt
                        .get(key)
                        .and_then(|l| l.def.dag().and_then(|d| d.node_id(&node)));
                    if let (true, Some(node)) = (self.runs.contains_key(&key), id) {
                        self.apply(key, Command::CancelNode { node }, None, None, &mut NoGuards);
                        self.check_cancel.insert(key);
                    }
                }
                Msg::FireNext { upto, reply } => {
                    let fired = self.fire_next(upto);
                    let _ = reply.send(fired);
                }
                Msg::Probe { reply } => {
                    let running = self.in_flight.values().map(HashMap::len).sum();
                    let _ = reply.send((running, self.handled, self.rt.holds_steps()));
                }
                Msg::Committed => {
                    let mut out = std::mem::take(&mut self.out);
                    out.clear();
                    self.rt.release_committed(&mut out);
                    self.perform(&mut out);
                    self.out = out;
                }
                Msg::Idle { reply } => self.idle.push(reply),
                Msg::Flush { reply } => {
                    let _ = reply.send(self.flush_all());
                }
                Msg::Close { reply } => {
                    let r = self.close();
                    let _ = reply.send(r);
                    return false;
                }
                Msg::Abandon => return false,
            }
        }
        true
    }

    fn handle_for(&self, key: RunKey) -> Option<RunHandle> {
        let s = self.runs.get(&key)?;
        Some(RunHandle {
            run_id: Arc::clone(&s.run_id),
            key,
            tx: self.p.tx.clone(),
            done: s.done.subscribe(),
        })
    }

    fn start(
        &mut self,
        target: Target,
        o: StartOptions,
        claimed: Option<String>,
    ) -> Result<RunHandle, EngineError> {
        let def = match target {
            Target::Name(name) => self.p.core.load(&name, o.version)?,
            Target::Config(config) => {
                let d = define(&self.p.core, &config)?;
                self.p.core.load(&d.name, Some(d.version))?
            }
        };
        let input = o.input.as_ref().map(Value::to_string);
        def.check_input(input.as_deref())?;
        let context = match o.context {
            Some(c) => c,
            None => def
                .context
                .as_deref()
                .and_then(|c| serde_json::from_str(c).ok())
                .unwrap_or_else(|| json!({})),
        };
        let context_text = context.to_string();
        let now = self.rt.now(self.clock);
        let fence = match &claimed {
            Some(id) => Some(self.p.core.fence_of(id).ok_or_else(|| {
                EngineError::Invalid(format!("run {id} is not held by this engine"))
            })?),
            None => None,
        };
        let run_id = claimed.clone().unwrap_or_else(|| new_id(now));
        let name = o.name.clone().unwrap_or_else(|| def.name.clone());
        let sync = o.durability.map_or(self.p.sync, |d| d == Durability::Sync);
        let opts = RunOptions {
            clock: self.clock,
            run_id: Some(
                run_id
                    .parse()
                    .map_err(|_| EngineError::Invalid(format!("not a run id: {run_id}")))?,
            ),
            name: Some(name.clone()),
            durable: Some(Durable {
                store: Arc::clone(self.p.core.store()),
                sync,
                fence,
                row: DurableRow::New(RunRow {
                    lease: claimed
                        .is_none()
                        .then(|| self.p.core.first_lease(&run_id, now as i64)),
                    id: run_id.clone(),
                    name,
                    kind: Some(def.kind()),
                    definition: def.stored.clone(),
                    input: input.clone(),
                    tags: o.tags.unwrap_or_else(|| def.tags.clone()),
                    info: o.info.map(|i| i.to_string()).or_else(|| def.info.clone()),
                    parent: None,
                    snapshot: None,
                }),
            }),
            input: input.clone(),
            context: Some(context_text),
            ..RunOptions::default()
        };
        let key = self.rt.create(def, opts)?;
        let root = o.input.unwrap_or(Value::Null);
        self.first_input(key, &root);
        self.adopt(key, run_id, context, root, 0, Vec::new());
        let handle = self.handle_for(key);
        self.apply(key, Command::Start, None, None, &mut NoGuards);
        handle.ok_or(EngineError::StaleRun)
    }

    /// A machine's first state takes the run's input: the runtime's values know it only
    /// once a transition set it, so give it to them here (the first step's row and the
    /// snapshot then hold it, for a resume in any process).
    fn first_input(&mut self, key: RunKey, root: &Value) {
        let Some(live) = self.rt.get_mut(key) else {
            return;
        };
        let first = matches!(&live.exec, Executor::Machine(m) if m.previous().is_none());
        if let (true, Some(Values::Machine(m))) =
            (first, live.tap.as_deref_mut().map(|t| &mut t.values))
        {
            if m.input.is_none() && !root.is_null() {
                m.input = raw(&root.to_string());
            }
        }
    }

    fn adopt(
        &mut self,
        key: RunKey,
        run_id: String,
        context: Value,
        root: Value,
        next_handle: u64,
        taken: Vec<String>,
    ) {
        let machine = self
            .rt
            .get(key)
            .is_some_and(|l| matches!(l.exec, Executor::Machine(_)));
        if machine {
            self.p.watched.watch(&run_id, (), taken);
        }
        let (done, _) = watch::channel(None);
        self.by_id.insert(run_id.clone(), key);
        self.runs.insert(
            key,
            RunState {
                run_id: run_id.into(),
                context: Arc::new(Mutex::new(context)),
                root_input: Arc::new(root),
                done,
                next_handle,
                settled: false,
                given: None,
            },
        );
    }

    fn resume(&mut self, run_id: &str) -> Result<RunHandle, EngineError> {
        if let Some(&key) = self.by_id.get(run_id) {
            // A run that ended (a rerun may have reopened its row since) is let go first.
            if self.runs.get(&key).is_some_and(|s| s.settled) {
                self.release_if_done(key);
                if self.by_id.contains_key(run_id) {
                    return Err(EngineError::NotResumable(format!(
                        "Run {run_id} is still ending in this engine (its last steps or nested runs are settling); resume it once they are"
                    )));
                }
            }
        }
        if let Some(&key) = self.by_id.get(run_id) {
            return self.handle_for(key).ok_or(EngineError::StaleRun);
        }
        let plan = self
            .p
            .core
            .resume_plan(run_id, self.rt.now(self.clock) as i64)?;
        let c = plan.continuation;
        let root = parse(plan.row.input.as_deref());
        let context = c
            .context
            .as_deref()
            .and_then(|c| serde_json::from_str(c).ok())
            .unwrap_or_else(|| json!({}));
        let given = match &c.restore {
            Restore::Machine { values, .. } => values.given.as_ref().map(|g| parse(Some(g.get()))),
            Restore::Dag { .. } => None,
        };
        // New events must not reuse a handle the restored queue or values hold.
        let next_handle = match &c.restore {
            Restore::Machine {
                snapshot, values, ..
            } => values
                .events
                .iter()
                .map(|(h, _)| *h)
                .chain(snapshot.queue.iter().map(|q| q.handle))
                .chain(match &snapshot.phase {
                    ramus_core::PhaseSnapshot::Sleeping { event, .. } => *event,
                    _ => None,
                })
                .max()
                .unwrap_or(0),
            Restore::Dag { .. } => 0,
        };
        let mut opts = RunOptions {
            clock: self.clock,
            run_id: Some(
                run_id
                    .parse()
                    .map_err(|_| EngineError::Invalid(format!("not a run id: {run_id}")))?,
            ),
            name: Some(plan.row.name.clone()),
            ..RunOptions::default()
        };
        let pending = c.continue_run(
            run_id,
            Arc::clone(self.p.core.store()),
            self.p.sync,
            false,
            &mut opts,
        );
        // As before: runs nested in the interrupted steps are not handed to the steps that
        // run again here (Rust runners start no nested runs; see the issue note).
        opts.nested = Default::default();
        let key = self.rt.create(plan.def, opts)?;
        self.first_input(key, &root);
        let taken = pending.iter().map(|e| e.id.clone()).collect();
        self.adopt(key, run_id.to_owned(), context, root, next_handle, taken);
        if let Some(s) = self.runs.get_mut(&key) {
            s.given = given;
        }
        let handle = self.handle_for(key);
        self.apply(key, Command::Start, None, None, &mut NoGuards);
        for e in pending {
            let mut event = Event::new(e.event_type, parse(e.data.as_deref()));
            event.queue = e.queue;
            let _ = self.send(run_id, event, Some(e.id));
        }
        handle.ok_or(EngineError::StaleRun)
    }

    /// Apply a command and perform what it asks.
    fn apply(
        &mut self,
        key: RunKey,
        command: Command,
        value: Option<&str>,
        context: Option<&str>,
        guards: &mut dyn Guards,
    ) {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        // An error here is a run that is no longer live (a late completion): nothing to do.
        let _ = self.rt.apply(
            key,
            command,
            CommandValues { value, context },
            guards,
            &mut out,
        );
        self.perform(&mut out);
        self.out = out;
    }

    fn perform(&mut self, out: &mut Vec<(RunKey, Action)>) {
        // A failed write settles its run first: an end that comes with it does not make it
        // a success.
        self.settle_failures();
        for (key, action) in out.drain(..) {
            match action {
                Action::Run { slot, node } => self.launch(key, slot, node),
                Action::Ended(end) => {
                    self.check_cancel.insert(key);
                    self.ended(key, end);
                }
                // No semaphores and no stepwise DAGs here; moves, failures and dropped
                // events are already in the runtime's values.
                _ => {}
            }
        }
        self.settle_failures();
    }

    /// Runs whose records could not be written fail, and stop.
    fn settle_failures(&mut self) {
        for (key, e) in self.rt.take_failures() {
            self.settle(key, Err(RunError::Storage(e.to_string())));
            self.local.push_back(Msg::Cancel { key });
        }
    }

    /// Call the runner of `node` for step `slot`.
    fn launch(&mut self, key: RunKey, slot: u32, node: u32) {
        // A forked machine's first step with an output given: it ends with that output.
        if let Some(output) = self.runs.get_mut(&key).and_then(|s| s.given.take()) {
            self.local.push_back(Msg::Complete {
                key,
                slot,
                result: Ok(output),
                choice: None,
            });
            return;
        }
        let (Some(live), Some(state)) = (self.rt.get(key), self.runs.get(&key)) else {
            return;
        };
        let def = Arc::clone(&live.def);
        let fail = |msg: String| Msg::Complete {
            key,
            slot,
            result: Err(StepError::new(msg)),
            choice: None,
        };
        let node_name = def.node_name(node).to_owned();
        let (runner, args) = match def.runners.get(node as usize) {
            Some(RunnerRef::Key { key: k, args }) => match self.p.registry.runner(k) {
                Some(f) => (Some(f), parse(args.as_deref())),
                None => {
                    self.local.push_back(fail(format!(
                        "Runner '{k}' of '{node_name}' is not registered in this engine"
                    )));
                    return;
                }
            },
            Some(RunnerRef::Inline) => {
                self.local.push_back(fail(format!(
                    "'{node_name}' has an inline run function, which only the process that defined it can call"
                )));
                return;
            }
            Some(RunnerRef::Expand { .. } | RunnerRef::Map { .. }) => {
                self.local.push_back(fail(format!(
                    "'{node_name}' expands or maps at run time, which only the Node engine does for now"
                )));
                return;
            }
            _ => (None, Value::Null),
        };
        let tap = live.tap.as_deref();
        let (input, event, previous) = match (&live.exec, tap.map(|t| &t.values)) {
            (Executor::Dag(d), Some(Values::Dag { outputs, .. })) => {
                let dag = d.dag();
                let mut m = serde_json::Map::new();
                for &p in dag.parents(node) {
                    if let Some(out) = &outputs[p as usize] {
                        m.insert(dag.node_name(p).to_owned(), parse(Some(out)));
                    }
                }
                (Value::Object(m), None, None)
            }
            (Executor::Machine(m), Some(Values::Machine(v))) => (
                parse(v.input.as_ref().map(|r| r.get())),
                v.event.as_ref().map(event_of),
                m.previous().map(|p| def.node_name(p).to_owned()),
            ),
            _ => (Value::Null, None, None),
        };
        let Some(runner) = runner else {
            // A state without a runner passes its input on as its output.
            self.local.push_back(Msg::Complete {
                key,
                slot,
                result: Ok(input),
                choice: None,
            });
            return;
        };
        let shared = Arc::new(StepShared::default());
        let step = Step {
            input,
            root_input: Arc::clone(&state.root_input),
            args,
            context: Arc::clone(&state.context),
            event,
            previous_state: previous,
            node: node_name,
            run_id: Arc::clone(&state.run_id),
            machine: matches!(live.exec, Executor::Machine(_)),
            shared: Arc::clone(&shared),
            key,
            slot,
            attempt: live.exec.slot_attempt(slot),
            tx: self.p.tx.clone(),
        };
        self.in_flight
            .entry(key)
            .or_default()
            .insert(slot, Arc::clone(&shared));
        let tx = self.p.tx.clone();
        self.p.handle.spawn(async move {
            let result = match catch_unwind(AssertUnwindSafe(|| runner(step))) {
                Ok(fut) => CatchUnwind(fut).await,
                Err(panic) => Err(panicked(panic)),
            };
            let choice = shared
                .choice
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            let _ = tx.send(Msg::Complete {
                key,
                slot,
                result,
                choice,
            });
        });
    }

    /// The conditions a command of `key` may ask, when its machine has any.
    fn conditions(
        &self,
        key: RunKey,
        output: Option<&Value>,
        sent: Option<(u64, &Event)>,
    ) -> Option<Conditions> {
        let live = self.rt.get(key)?;
        if !live.def.conditions.iter().any(Option::is_some) {
            return None;
        }
        let state = self.runs.get(&key)?;
        let Some(Values::Machine(v)) = live.tap.as_deref().map(|t| &t.values) else {
            return None;
        };
        let mut events: Vec<(u64, Event)> =
            v.events.iter().map(|(h, e)| (*h, event_of(e))).collect();
        if let Some((h, e)) = sent {
            events.push((h, e.clone()));
        }
        Some(Conditions {
            def: Arc::clone(&live.def),
            registry: Arc::clone(&self.p.registry),
            context: Arc::clone(&state.context),
            input: parse(v.input.as_ref().map(|r| r.get())),
            output: output
                .cloned()
                .unwrap_or_else(|| parse(v.output.as_ref().map(|r| r.get()))),
            root: Arc::clone(&state.root_input),
            events,
        })
    }

    fn complete(
        &mut self,
        key: RunKey,
        slot: u32,
        result: Result<Value, StepError>,
        choice: Option<(String, Option<u64>)>,
    ) {
        if let Some(steps) = self.in_flight.get_mut(&key) {
            steps.remove(&slot);
            if steps.is_empty() {
                self.in_flight.remove(&key);
            }
        }
        let (Some(live), Some(state)) = (self.rt.get(key), self.runs.get(&key)) else {
            return;
        };
        let machine = matches!(live.exec, Executor::Machine(_));
        // The snapshot keeps the context of each step boundary. A DAG's could wait for the
        // end of the turn, but the completion that ends the run writes its last snapshot
        // at once, and which one that is only the runtime knows.
        let context = Some(lock(&state.context).to_string());
        match result {
            Ok(output) => {
                let text = output.to_string();
                let mut conditions = self.conditions(key, Some(&output), None);
                let guards: &mut dyn Guards = match conditions.as_mut() {
                    Some(c) => c,
                    None => &mut NoGuards,
                };
                let outcome = match &choice {
                    Some((target, delay)) if machine => Outcome::Choose {
                        target,
                        delay: delay.map(|ms| Delay::Ms(ms as f64)),
                    },
                    _ => Outcome::Ok,
                };
                self.apply(
                    key,
                    Command::Complete { slot, outcome },
                    Some(&text),
                    context.as_deref(),
                    guards,
                );
            }
            Err(e) if e.is_cancelled() => self.apply(
                key,
                Command::Complete {
                    slot,
                    outcome: Outcome::Cancelled,
                },
                None,
                context.as_deref(),
                &mut NoGuards,
            ),
            Err(e) => {
                let text = e.to_json().to_string();
                self.apply(
                    key,
                    Command::Complete {
                        slot,
                        outcome: if e.is_no_retry() {
                            Outcome::Fatal
                        } else {
                            Outcome::Error
                        },
                    },
                    Some(&text),
                    context.as_deref(),
                    &mut NoGuards,
                );
            }
        }
    }

    /// An event for a run: live here (`stored`: the id of the stored event it is), or
    /// stored for whoever runs it.
    fn send(
        &mut self,
        run_id: &str,
        event: Event,
        stored: Option<String>,
    ) -> Result<String, EngineError> {
        let data = (!event.data.is_null()).then(|| event.data.to_string());
        let Some(&key) = self.by_id.get(run_id) else {
            return match stored {
                // Found by the poller for a run that has gone since: it stays stored.
                Some(id) => Ok(id),
                None => self
                    .p
                    .core
                    .send_stored(run_id, &event.event_type, data, event.queue),
            };
        };
        let Some(live) = self.rt.get(key) else {
            return Err(EngineError::StaleRun);
        };
        let Executor::Machine(m) = &live.exec else {
            return Err(EngineError::NotResumable(format!(
                "Run {run_id} ({}) is a DAG; only state machines take events",
                live.def.name
            )));
        };
        let resting = m.resting();
        let id = match stored {
            Some(id) => {
                self.rt.delivered(key, id.clone());
                id
            }
            // Kept in the run's log, already taken.
            None => self.p.core.record_event(
                run_id,
                &event.event_type,
                data.clone(),
                event.queue,
                true,
            )?,
        };
        let Some(state) = self.runs.get_mut(&key) else {
            return Ok(id);
        };
        state.next_handle += 1;
        let handle = state.next_handle;
        // While a state runs, the snapshot keeps the context of its start: it runs again
        // after a restore, from there.
        let context = resting.then(|| lock(&state.context).to_string());
        let mut conditions = self.conditions(key, None, Some((handle, &event)));
        let guards: &mut dyn Guards = match conditions.as_mut() {
            Some(c) => c,
            None => &mut NoGuards,
        };
        self.apply(
            key,
            Command::Send {
                handle,
                event: &event.event_type,
                queue: event.queue,
            },
            data.as_deref(),
            context.as_deref(),
            guards,
        );
        Ok(id)
    }

    fn fire(&mut self, now: u64) {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        // Timers never ask conditions: a delay moves, a timeout leaves its state.
        for (key, timer) in self.rt.take_due(self.clock, now) {
            let mut guards = NoRetryOn {
                dag: self.rt.get(key).is_some_and(|l| l.def.dag().is_some()),
            };
            let _ = self.rt.apply(
                key,
                Command::TimerFired { timer },
                CommandValues::default(),
                &mut guards,
                &mut out,
            );
        }
        self.check_cancel.extend(out.iter().map(|(k, _)| *k));
        self.perform(&mut out);
        self.out = out;
    }

    fn fire_next(&mut self, upto: u64) -> bool {
        let Some(clock) = self.p.test_clock.clone() else {
            return false;
        };
        match self.rt.next_due(self.clock) {
            Some(at) if at <= upto => {
                clock.set(at);
                let now = self.rt.now(self.clock);
                self.fire(now);
                true
            }
            _ => false,
        }
    }

    fn ended(&mut self, key: RunKey, end: End) {
        let Some(live) = self.rt.get(key) else {
            return;
        };
        if let Some(s) = self.runs.get(&key) {
            self.p.core.let_go(&s.run_id);
        }
        if self.runs.get(&key).is_none_or(|s| s.settled) {
            return;
        }
        let tap = live.tap.as_deref();
        let result = match end {
            End::Finished => Ok(match (&live.exec, tap) {
                (Executor::Dag(_), Some(t)) => parse(t.dag_output(&live.def).as_deref()),
                (Executor::Machine(_), Some(t)) => match &t.values {
                    Values::Machine(m) => parse(m.output.as_ref().map(|r| r.get())),
                    Values::Dag { .. } => Value::Null,
                },
                _ => Value::Null,
            }),
            End::Failed => Err(RunError::failed(
                tap.and_then(|t| t.error_of(&live.exec)).as_deref(),
            )),
            End::Cancelled => Err(RunError::Cancelled),
        };
        if !live.is_durable() {
            self.settle(key, result);
            return;
        }
        // A stored run's records of its end are queued: it settles once they are
        // committed, waiting off this thread.
        let Some(state) = self.runs.get_mut(&key) else {
            return;
        };
        state.settled = true;
        let done = state.done.clone();
        let store = Arc::clone(&self.p.store);
        self.p.handle.spawn_blocking(move || {
            let result = match store.flush() {
                Ok(()) => result,
                Err(e) => Err(RunError::Storage(e.to_string())),
            };
            done.send_replace(Some(result));
        });
    }

    fn settle(&mut self, key: RunKey, result: Result<Value, RunError>) {
        if let Some(s) = self.runs.get_mut(&key) {
            if !s.settled {
                s.settled = true;
                s.done.send_replace(Some(result));
            }
        }
    }

    /// The end of a turn: batched runs write what they collected, steps that no longer
    /// count see it, runs that are done are let go, and `idle` waiters are answered.
    fn end_turn(&mut self) {
        let mut touched = Vec::new();
        self.rt.take_touched(&mut touched);
        touched.sort_unstable();
        touched.dedup();
        for key in touched {
            let Some(live) = self.rt.get(key) else {
                continue;
            };
            let dirty = live
                .tap
                .as_ref()
                .and_then(|t| t.writer.as_ref())
                .is_some_and(|w| !w.is_sync() && !w.ended() && w.dirty());
            if dirty {
                let context = match (&live.exec, self.runs.get(&key)) {
                    (Executor::Dag(_), Some(s)) => Some(lock(&s.context).to_string()),
                    _ => None,
                };
                if let Err(e) = self.rt.flush(key, context.as_deref()) {
                    self.settle(key, Err(RunError::Storage(e.to_string())));
                    self.apply(key, Command::Cancel, None, None, &mut NoGuards);
                }
            }
            self.sync_cancelled(key);
            self.release_if_done(key);
        }
        if self.in_flight.is_empty() && self.local.is_empty() && !self.rt.holds_steps() {
            for w in self.idle.drain(..) {
                let _ = w.send(());
            }
        }
    }

    /// Tell running steps of `key` that no longer count (its run ended or was cancelled,
    /// or a state timed out) so their `is_cancelled()` turns true.
    fn sync_cancelled(&mut self, key: RunKey) {
        if !self.check_cancel.remove(&key) {
            return;
        }
        let (Some(live), Some(steps)) = (self.rt.get(key), self.in_flight.get(&key)) else {
            return;
        };
        for (&slot, shared) in steps {
            if live.exec.is_cancelled(slot) {
                shared.cancel();
            }
        }
    }

    fn release_if_done(&mut self, key: RunKey) {
        let Some(live) = self.rt.get(key) else {
            return;
        };
        // A machine halted on a failure could be retried by a step, which this engine
        // never takes: its run is over.
        let halted = matches!(&live.exec, Executor::Machine(m) if m.halted());
        if !(live.is_done() || (halted && live.ended() == Some(End::Failed))) {
            return;
        }
        self.rt.release(key);
        // Steps still running stay counted (`idle` waits for them) until they return.
        if let Some(steps) = self.in_flight.get(&key) {
            for s in steps.values() {
                s.cancel();
            }
        }
        if let Some(s) = self.runs.remove(&key) {
            self.by_id.remove(&*s.run_id);
            self.p.watched.unwatch(&s.run_id);
            if !s.settled {
                s.done
                    .send_replace(Some(Err(RunError::Closed(s.run_id.to_string()))));
            }
        }
    }

    fn flush_all(&mut self) -> Result<(), EngineError> {
        let keys: Vec<RunKey> = self.runs.keys().copied().collect();
        for key in keys {
            let context = self.dag_context(key);
            self.rt.flush(key, context.as_deref())?;
        }
        Ok(self.p.store.flush()?)
    }

    fn dag_context(&self, key: RunKey) -> Option<String> {
        match (self.rt.get(key).map(|l| &l.exec), self.runs.get(&key)) {
            (Some(Executor::Dag(_)), Some(s)) => Some(lock(&s.context).to_string()),
            _ => None,
        }
    }

    /// Write what every live run collected and stop: their rows stay as they are, to be
    /// resumed.
    fn close(&mut self) -> Result<(), EngineError> {
        let keys: Vec<RunKey> = self.runs.keys().copied().collect();
        let mut first_error = None;
        for key in keys {
            let context = self.dag_context(key);
            if let Err(e) = self
                .rt
                .flush(key, context.as_deref())
                .and_then(|()| self.rt.detach(key))
            {
                first_error.get_or_insert(e);
            }
            if let Some(steps) = self.in_flight.remove(&key) {
                for s in steps.values() {
                    s.cancel();
                }
            }
            if let Some(s) = self.runs.get(&key) {
                let id = s.run_id.to_string();
                self.settle(key, Err(RunError::Closed(id)));
            }
        }
        for w in self.idle.drain(..) {
            let _ = w.send(());
        }
        // Handed back: another process may resume these runs at once.
        if let Err(e) = self.p.core.release_all() {
            first_error.get_or_insert(e);
        }
        let closed = self.p.store.close();
        match first_error {
            Some(e) => Err(e),
            None => Ok(closed?),
        }
    }
}
