//! The durable engine for Rust programs: Rust runners (async functions or closures), the
//! same store, the same JSON definitions and the same records as the Node binding's
//! `Engine`, so a JS process and a Rust process can share one database and continue each
//! other's runs.
//!
//! ```no_run
//! use ramus_engine::{Engine, EngineOptions, Event, StartOptions, Step, StepError};
//! use serde_json::json;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::open(EngineOptions::new("./ramus.sqlite"))?;
//! engine.register("draft", |step: Step| async move {
//!     Ok::<_, StepError>(json!(format!("a post about {}", step.root_input()["topic"])))
//! });
//! engine.register("publish", |step: Step| async move {
//!     Ok::<_, StepError>(json!({ "text": step.input().clone(), "by": step.event().map(|e| e.data["by"].clone()) }))
//! });
//! engine.define(&json!({
//!     "name": "approval",
//!     "initial": "draft",
//!     "nodes": {
//!         "draft": { "runner": "draft", "transition": "review" },
//!         "review": { "transition": { "approve": "publish" } },
//!         "publish": { "runner": "publish", "final": true }
//!     }
//! }))?;
//! let run = engine.start("approval", StartOptions::new().input(json!({ "topic": "rust" }))).await?;
//! engine.send(run.run_id(), Event::new("approve", json!({ "by": "ann" }))).await?;
//! println!("{}", run.finished().await?);
//! engine.close().await?;
//! # Ok(()) }
//! ```
//!
//! An engine must be opened inside a tokio runtime: runners run on it. Its runs are
//! driven by a thread of its own (see the `driver` module), which also fires timers on
//! the system clock; on a [`TestClock`] they fire when [`Engine::advance`] reaches them.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use ramus_store::{
    CustomEvent, Options, PendingEvent, Run, RunFilter, SqliteStore, Step as StepRow, Store,
    Synchronous, Timer, Transition,
};
use serde_json::Value;
use tokio::sync::{oneshot, watch};

use crate::clock::{Clock, SystemClock, TestClock};
use crate::delivery::Watched;
use crate::driver::{self, BoxError, Driver, Msg, Parts, Registry};
use crate::engine_core::EngineCore;
use crate::error::EngineError;
use crate::runtime::RunKey;
use crate::step::{Event, Guard, RunError, Step};

/// When a run's records count as written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// A run's records of one turn are handed to the store's writer together and
    /// committed within a few milliseconds (group commit); a crash loses at most those.
    /// A run's `finished` settles once its last records are committed.
    #[default]
    Batched,
    /// Every step is committed before the next one starts: a runner is never called
    /// before its step's start is on disk.
    Sync,
}

/// How to open an [`Engine`].
#[derive(Clone, Debug)]
pub struct EngineOptions {
    path: String,
    durability: Durability,
    fsync: bool,
    test_clock: Option<Arc<TestClock>>,
    poll_interval: Duration,
}

impl EngineOptions {
    /// The SQLite file at `path` (created if missing), batched, on the system clock,
    /// looking for events other processes store every 500 ms.
    pub fn new(path: impl Into<String>) -> EngineOptions {
        EngineOptions {
            path: path.into(),
            durability: Durability::Batched,
            fsync: false,
            test_clock: None,
            poll_interval: Duration::from_millis(500),
        }
    }

    /// A private in-memory database (`":memory:"`): nothing outlives the engine.
    pub fn memory() -> EngineOptions {
        EngineOptions::new(":memory:")
    }

    /// The durability of the runs this engine starts and resumes (a run may override it
    /// with [`StartOptions::durability`]).
    pub fn durability(mut self, durability: Durability) -> EngineOptions {
        self.durability = durability;
        self
    }

    /// Commits survive a power loss, not only a crash of the process (SQLite
    /// `synchronous = FULL`: an fsync per group commit).
    pub fn fsync(mut self, on: bool) -> EngineOptions {
        self.fsync = on;
        self
    }

    /// Take time from `clock`: timers fire only when [`Engine::advance`] reaches them.
    pub fn test_clock(mut self, clock: Arc<TestClock>) -> EngineOptions {
        self.test_clock = Some(clock);
        self
    }

    /// How often live machine runs look for events other processes stored for them (wall
    /// time, also on a test clock: another process's write is not simulated time).
    pub fn poll_interval(mut self, every: Duration) -> EngineOptions {
        self.poll_interval = every.max(Duration::from_millis(1));
        self
    }
}

/// What to start: a stored definition by name, or a definition (JSON), which is stored
/// first (as `define` does) so the run can be resumed anywhere.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// The latest version of a stored definition (or [`StartOptions::version`]).
    Name(String),
    /// A definition, as a JS process would `define` it.
    Config(Value),
}

impl From<&str> for Target {
    fn from(name: &str) -> Target {
        Target::Name(name.to_owned())
    }
}

impl From<String> for Target {
    fn from(name: String) -> Target {
        Target::Name(name)
    }
}

impl From<Value> for Target {
    fn from(config: Value) -> Target {
        Target::Config(config)
    }
}

impl From<&Value> for Target {
    fn from(config: &Value) -> Target {
        Target::Config(config.clone())
    }
}

/// Options of [`Engine::start`].
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// The run's input (the root input of its steps).
    pub input: Option<Value>,
    /// The run's context; the definition's `context` (or `{}`) when none.
    pub context: Option<Value>,
    /// Tags to find the run by; the definition's when none.
    pub tags: Option<Vec<String>>,
    /// The run's name; the definition's when none.
    pub name: Option<String>,
    /// Free-form info stored with the run; the definition's when none.
    pub info: Option<Value>,
    /// A stored definition's version; the latest when none.
    pub version: Option<i64>,
    /// This run's durability; the engine's when none.
    pub durability: Option<Durability>,
}

impl StartOptions {
    /// No options.
    pub fn new() -> StartOptions {
        StartOptions::default()
    }

    /// With this input.
    pub fn input(mut self, input: Value) -> StartOptions {
        self.input = Some(input);
        self
    }

    /// With this context.
    pub fn context(mut self, context: Value) -> StartOptions {
        self.context = Some(context);
        self
    }

    /// With these tags.
    pub fn tags<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tags: I) -> StartOptions {
        self.tags = Some(tags.into_iter().map(Into::into).collect());
        self
    }

    /// With this name.
    pub fn name(mut self, name: impl Into<String>) -> StartOptions {
        self.name = Some(name.into());
        self
    }

    /// With this info.
    pub fn info(mut self, info: Value) -> StartOptions {
        self.info = Some(info);
        self
    }

    /// Of this version of a stored definition.
    pub fn version(mut self, version: i64) -> StartOptions {
        self.version = Some(version);
        self
    }

    /// With this durability.
    pub fn durability(mut self, durability: Durability) -> StartOptions {
        self.durability = Some(durability);
        self
    }
}

/// What [`Engine::define`] stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Defined {
    /// The definition's name.
    pub name: String,
    /// The version holding this content.
    pub version: i64,
    /// Whether a new version was stored (`false`: the latest had this content).
    pub created: bool,
}

/// What [`Engine::resume_all`] did.
#[derive(Debug, Default)]
pub struct Resumed {
    /// The runs now live here, those with the earliest due timers first.
    pub runs: Vec<RunHandle>,
    /// The runs that could not be resumed, with why.
    pub errors: Vec<(String, EngineError)>,
}

/// A run live in an engine.
#[derive(Clone)]
pub struct RunHandle {
    pub(crate) run_id: Arc<str>,
    pub(crate) key: RunKey,
    pub(crate) tx: Sender<Msg>,
    pub(crate) done: watch::Receiver<Option<Result<Value, RunError>>>,
}

impl std::fmt::Debug for RunHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunHandle")
            .field("run_id", &self.run_id)
            .finish_non_exhaustive()
    }
}

impl RunHandle {
    /// The run id (its row in the store).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// How the run ended: its output (a DAG's leaf output, or an object of its leaves'
    /// outputs; a machine's final state's output), or why it did not finish. A batched
    /// run settles once its records are committed. Can be awaited any number of times.
    pub async fn finished(&self) -> Result<Value, RunError> {
        let mut rx = self.done.clone();
        let outcome = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone(),
            Err(_) => None,
        };
        outcome.unwrap_or_else(|| Err(RunError::Closed(self.run_id.to_string())))
    }

    /// How the run ended, if it has.
    pub fn outcome(&self) -> Option<Result<Value, RunError>> {
        self.done.borrow().clone()
    }

    /// Cancel the run: running steps see `is_cancelled()`, nothing more starts, and
    /// `finished` ends with [`RunError::Cancelled`]. Nothing once it ended.
    pub fn cancel(&self) {
        let _ = self.tx.send(Msg::Cancel { key: self.key });
    }

    /// A DAG run: cancel one node and everything downstream of it; the other nodes go on
    /// and the run finishes without the cancelled leaves' outputs. Nothing for an unknown
    /// node, a machine, or a run that ended. [`Engine::rerun`] brings the node back.
    ///
    /// ```no_run
    /// # async fn f(run: &ramus_engine::RunHandle) {
    /// run.cancel_node("slow-branch");
    /// let output = run.finished().await; // without the slow branch's leaves
    /// # }
    /// ```
    pub fn cancel_node(&self, node: &str) {
        let _ = self.tx.send(Msg::CancelNode {
            key: self.key,
            node: node.to_owned(),
        });
    }
}

/// The durable engine for Rust programs. See the [module documentation](self).
pub struct Engine {
    tx: Sender<Msg>,
    core: Arc<EngineCore>,
    store: Arc<SqliteStore>,
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
    test_clock: Option<Arc<TestClock>>,
    closed: Arc<AtomicBool>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("db", &self.store.path())
            .finish_non_exhaustive()
    }
}

fn parser() -> Box<crate::engine_core::Parser> {
    Box::new(|kind, json: &str| crate::RunDef::parse(json, Some(kind), true, None))
}

impl Engine {
    /// Open (creating and migrating) the database, and start the engine's thread. Must be
    /// called inside a tokio runtime: runners and the event poller run on it.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), ramus_engine::EngineError> {
    /// # let rt = tokio::runtime::Runtime::new().unwrap(); let _g = rt.enter();
    /// use ramus_engine::{Durability, Engine, EngineOptions};
    /// let engine = Engine::open(EngineOptions::new("./ramus.sqlite").durability(Durability::Sync))?;
    /// # Ok(()) }
    /// ```
    pub fn open(options: EngineOptions) -> Result<Engine, EngineError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            EngineError::Invalid(
                "Engine::open must be called inside a tokio runtime (its runners run on it)".into(),
            )
        })?;
        let mut store_options = Options::new(ramus_store::Durability::Batched);
        if options.fsync {
            store_options.synchronous = Synchronous::Full;
        }
        let store = Arc::new(SqliteStore::open_with(&options.path, store_options)?);
        let clock: Arc<dyn Clock> = match &options.test_clock {
            Some(c) => Arc::clone(c) as Arc<dyn Clock>,
            None => Arc::new(SystemClock),
        };
        let core = Arc::new(EngineCore::new(
            Arc::clone(&store) as Arc<dyn Store>,
            Arc::clone(&clock),
            parser(),
        ));
        let registry = Arc::new(Registry::default());
        let watched = Arc::new(Watched::default());
        let closed = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let parts = Parts {
            core: Arc::clone(&core),
            store: Arc::clone(&store),
            registry: Arc::clone(&registry),
            test_clock: options.test_clock.clone(),
            sync: options.durability == Durability::Sync,
            handle: handle.clone(),
            tx: tx.clone(),
            watched: Arc::clone(&watched),
        };
        std::thread::Builder::new()
            .name("ramus-engine".into())
            .spawn(move || Driver::new(parts).run(rx))
            .map_err(|e| EngineError::Invalid(format!("cannot start the engine thread: {e}")))?;
        handle.spawn(poll(
            watched,
            Arc::clone(&store),
            tx.clone(),
            options.poll_interval,
            Arc::clone(&closed),
        ));
        Ok(Engine {
            tx,
            core,
            store,
            registry,
            clock,
            test_clock: options.test_clock,
            closed,
        })
    }

    /// Register a runner under `key`: stored definitions name it (`"runner": "key"`), in
    /// this process or any other that registered the same key. It is called with the
    /// [`Step`] and returns the step's output; an error fails the step (any error type
    /// that converts into `Box<dyn Error>`, or a [`crate::StepError`] to choose its name).
    /// A runner registered again under the same key replaces the old one.
    ///
    /// ```no_run
    /// # fn demo(engine: &ramus_engine::Engine) {
    /// engine.register("search", |step: ramus_engine::Step| async move {
    ///     let q = step.args()["query"].as_str().unwrap_or("").to_owned();
    ///     if q.is_empty() {
    ///         return Err("no query".into());
    ///     }
    ///     Ok::<_, Box<dyn std::error::Error + Send + Sync>>(serde_json::json!([q]))
    /// });
    /// # }
    /// ```
    pub fn register<F, Fut, E>(&self, key: &str, runner: F) -> &Engine
    where
        F: Fn(Step) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let f: Arc<driver::RunnerFn> = Arc::new(move |step| {
            let fut = runner(step);
            Box::pin(async move { fut.await.map_err(Into::into) })
        });
        self.registry
            .runners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_owned(), f);
        self.core.register([key.to_owned()]);
        self
    }

    /// Register a transition condition under `key` (`"condition": "key"` on a transition
    /// of a stored machine): the transition is taken only when it returns true.
    ///
    /// ```no_run
    /// # fn demo(engine: &ramus_engine::Engine) {
    /// engine.register_condition("long-enough", |g| g.output.as_str().is_some_and(|s| s.len() > 100));
    /// # }
    /// ```
    pub fn register_condition<F>(&self, key: &str, condition: F) -> &Engine
    where
        F: Fn(&Guard) -> bool + Send + Sync + 'static,
    {
        self.registry
            .conditions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_owned(), Arc::new(condition));
        self.core.register([key.to_owned()]);
        self
    }

    /// Store a definition: the same JSON a JS process defines (`runner: 'key', args`),
    /// validated, its runners and conditions checked against this engine's registry. A
    /// new version only when its content differs from the latest.
    pub fn define(&self, config: &Value) -> Result<Defined, EngineError> {
        self.check_open()?;
        driver::define(&self.core, config)
    }

    /// Start a run of a stored definition (by name) or of a definition (stored first).
    pub async fn start(
        &self,
        definition: impl Into<Target>,
        options: StartOptions,
    ) -> Result<RunHandle, EngineError> {
        let target = definition.into();
        self.request(|reply| Msg::Start {
            target,
            options,
            claimed: None,
            reply,
        })
        .await
    }

    /// Continue a stored run here, whichever process started it: a DAG keeps its finished
    /// nodes' outputs (nodes interrupted by a crash run again); a machine continues from
    /// its snapshot with its context, queue and timers, then takes the events sent while
    /// nobody ran it. A run already live here is returned as it is.
    pub async fn resume(&self, run_id: &str) -> Result<RunHandle, EngineError> {
        let run_id = run_id.to_owned();
        self.request(|reply| Msg::Resume { run_id, reply }).await
    }

    /// Fork a stored run at one of its steps: a new run, recorded as forked from that run
    /// and step, starts from the state the old one was in when the step started (see
    /// [`EngineCore::fork`](crate::EngineCore::fork)) and runs here. The old run is not
    /// touched, whether it ended or not.
    ///
    /// ```no_run
    /// # async fn f(engine: &ramus_engine::Engine, run_id: &str, step_id: &str) -> Result<(), ramus_engine::EngineError> {
    /// use ramus_engine::ForkOptions;
    /// let fork = engine
    ///     .fork(run_id, ForkOptions {
    ///         at_step: step_id.to_owned(),
    ///         context: Some(r#"{"approved":false}"#.to_owned()),
    ///         ..ForkOptions::default()
    ///     })
    ///     .await?;
    /// let output = fork.finished().await;
    /// # Ok(()) }
    /// ```
    pub async fn fork(
        &self,
        run_id: &str,
        options: crate::ForkOptions,
    ) -> Result<RunHandle, EngineError> {
        self.check_open()?;
        let id = self.core.fork(run_id, &options, self.now() as i64)?;
        self.resume_claimed(&id).await
    }

    /// Run a node of a stored DAG run again (or set its output with `output`) and what
    /// depends on it, keeping every other output; the run continues here, in place (see
    /// [`EngineCore::rerun`](crate::EngineCore::rerun)).
    ///
    /// ```no_run
    /// # async fn f(engine: &ramus_engine::Engine, run_id: &str) -> Result<(), ramus_engine::EngineError> {
    /// use ramus_engine::RerunOptions;
    /// // `search` gave a poor answer: give it a better one; what depends on it runs again.
    /// let run = engine
    ///     .rerun(run_id, RerunOptions { node: "search".into(), output: Some(r#"["a better source"]"#.into()) })
    ///     .await?;
    /// let output = run.finished().await;
    /// # Ok(()) }
    /// ```
    pub async fn rerun(
        &self,
        run_id: &str,
        options: crate::RerunOptions,
    ) -> Result<RunHandle, EngineError> {
        self.check_open()?;
        self.core.rerun(run_id, &options, self.now() as i64)?;
        self.resume_claimed(run_id).await
    }

    /// Merge `patch` into a stored DAG run's root input and run again only the nodes whose
    /// `uses` names a key that changed, and their downstream (see
    /// [`EngineCore::update_input`](crate::EngineCore::update_input)).
    ///
    /// ```no_run
    /// # async fn f(engine: &ramus_engine::Engine, run_id: &str) -> Result<(), ramus_engine::EngineError> {
    /// // Only the nodes declared with `"uses": ["topic"]` (and what follows them) run again.
    /// let run = engine.update_input(run_id, &serde_json::json!({ "topic": "rust" })).await?;
    /// run.finished().await.ok();
    /// # Ok(()) }
    /// ```
    pub async fn update_input(
        &self,
        run_id: &str,
        patch: &Value,
    ) -> Result<RunHandle, EngineError> {
        self.check_open()?;
        self.core
            .update_input(run_id, &patch.to_string(), self.now() as i64)?;
        self.resume_claimed(run_id).await
    }

    /// Resume a run this engine just claimed and rewrote; one that cannot run here is
    /// handed back for any engine to take.
    async fn resume_claimed(&self, run_id: &str) -> Result<RunHandle, EngineError> {
        let resumed = self.resume(run_id).await;
        if resumed.is_err() {
            let _ = self.core.hand_back(run_id);
        }
        resumed
    }

    /// A machine run's context as it was when one of its steps started (rebuilt from the
    /// patches its steps store).
    pub fn context_at(&self, run_id: &str, step_id: &str) -> Result<Value, EngineError> {
        self.core.context_at(run_id, step_id)
    }

    /// Resume every run that has not ended (of definition `name` only, if given), those
    /// whose timers fall due first in due order: what a process calls when it starts.
    pub async fn resume_all(&self, name: Option<&str>) -> Result<Resumed, EngineError> {
        self.check_open()?;
        let ids = self.core.resumable(name)?;
        let mut out = Resumed::default();
        for id in ids {
            match self.resume(&id).await {
                Ok(h) => out.runs.push(h),
                Err(e) => out.errors.push((id, e)),
            }
        }
        Ok(out)
    }

    /// Send an event to a machine run: a run live here takes it now (it is kept in the
    /// run's log); otherwise it is stored, and the run takes it when it is resumed, or
    /// within a poll interval when another process runs it. Returns the event's id.
    pub async fn send(&self, run_id: &str, event: Event) -> Result<String, EngineError> {
        let run_id = run_id.to_owned();
        self.request(|reply| Msg::Send {
            run_id,
            event,
            reply,
        })
        .await
    }

    /// Wait until no step runs (and nothing that finished is still to be applied).
    pub async fn idle(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Msg::Idle { reply }).is_ok() {
            let _ = rx.await;
        }
    }

    /// Test clocks: move forward by `by`, firing every timer that falls due on the way,
    /// earliest first; after each, what it started runs before the next fires: steps run
    /// until the engine is idle, or until none made progress while the caller's task
    /// yielded (a step that awaits its own cancellation, a timeout or real I/O does not
    /// hold the advance up, or a state timeout could never fire).
    ///
    /// ```no_run
    /// # async fn demo(engine: ramus_engine::Engine) -> Result<(), ramus_engine::EngineError> {
    /// engine.advance(std::time::Duration::from_secs(30 * 24 * 3600)).await?; // a month, at once
    /// # Ok(()) }
    /// ```
    pub async fn advance(&self, by: Duration) -> Result<(), EngineError> {
        let clock = self.test_clock.clone().ok_or_else(|| {
            EngineError::Invalid("advance() needs an engine opened with a test clock".into())
        })?;
        self.check_open()?;
        let target = clock
            .now_ms()
            .saturating_add(by.as_millis().min(u64::MAX as u128) as u64);
        self.settle().await;
        loop {
            let (reply, rx) = oneshot::channel();
            self.tx
                .send(Msg::FireNext {
                    upto: target,
                    reply,
                })
                .map_err(|_| self.closed_error())?;
            if !rx.await.unwrap_or(false) {
                break;
            }
            self.settle().await;
        }
        clock.set(target);
        self.settle().await;
        Ok(())
    }

    /// Let steps run until none is left, or none made progress while this task yielded.
    async fn settle(&self) {
        let mut last = None;
        loop {
            let (reply, rx) = oneshot::channel();
            if self.tx.send(Msg::Probe { reply }).is_err() {
                return;
            }
            let Ok((running, handled, held)) = rx.await else {
                return;
            };
            // A step waiting for its commit makes progress off the driver's thread.
            if !held && (running == 0 || last == Some(handled)) {
                return;
            }
            last = Some(handled);
            for _ in 0..32 {
                tokio::task::yield_now().await;
            }
        }
    }

    /// Queue a run of the stored definition `definition` for a worker ([`Engine::work`],
    /// in this process or any other on the store) to start; with an idempotency key, a
    /// second enqueue finds the first run (`created: false`).
    pub fn enqueue(
        &self,
        definition: &str,
        e: crate::Enqueue,
    ) -> Result<crate::Enqueued, EngineError> {
        self.check_open()?;
        let def = self.core.load(definition, None)?;
        self.core.enqueue(&def, e, false, self.now() as i64)
    }

    /// Work on the store: claim queued runs and stored runs nobody holds that have
    /// something to do (their holder stopped, a timer fell due, an event came), up to
    /// `concurrency` at a time, and run them here. See [`crate::worker`].
    pub fn work(
        &self,
        options: crate::worker::WorkOptions,
    ) -> Result<crate::worker::Worker, EngineError> {
        self.check_open()?;
        Ok(crate::worker::Worker::spawn(
            crate::worker::Host {
                tx: self.tx.clone(),
                core: Arc::clone(&self.core),
                closed: Arc::clone(&self.closed),
            },
            options,
        ))
    }

    /// The engine's time (ms since the epoch).
    pub fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Write what live runs collected and wait until everything written is committed.
    pub async fn flush(&self) -> Result<(), EngineError> {
        self.request(|reply| Msg::Flush { reply }).await
    }

    /// Write what live runs collected, commit, and release the database. Live runs stop
    /// here (their `finished` ends with [`RunError::Closed`]) and stay stored as they are,
    /// to be resumed. Reads keep working; everything else fails with `ERR_CLOSED`.
    pub async fn close(&self) -> Result<(), EngineError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Close { reply })
            .map_err(|_| self.closed_error())?;
        rx.await.map_err(|_| self.closed_error())?
    }

    // ---- reading the log ----

    /// Runs, newest first.
    pub fn runs(&self, filter: &RunFilter) -> Result<Vec<Run>, EngineError> {
        Ok(self.store.runs(filter)?)
    }

    /// One run, with its snapshot.
    pub fn run(&self, run_id: &str) -> Result<Option<Run>, EngineError> {
        Ok(self.store.run(run_id)?)
    }

    /// A run's steps in order.
    pub fn steps(&self, run_id: &str) -> Result<Vec<StepRow>, EngineError> {
        Ok(self.store.steps(run_id)?)
    }

    /// A machine run's transitions in order.
    pub fn transitions(&self, run_id: &str) -> Result<Vec<Transition>, EngineError> {
        Ok(self.store.transitions(run_id)?)
    }

    /// The custom events a run's runners emitted, oldest first.
    pub fn events(&self, run_id: &str) -> Result<Vec<CustomEvent>, EngineError> {
        Ok(self.store.events(run_id)?)
    }

    /// Machine runs waiting for an event, newest first.
    pub fn waiting(&self, filter: &RunFilter) -> Result<Vec<Run>, EngineError> {
        Ok(self.store.waiting(filter)?)
    }

    /// A machine run's durable timers (delays and timeouts), armed and fired, in due order.
    pub fn timers(&self, run_id: &str) -> Result<Vec<Timer>, EngineError> {
        Ok(self.store.timers(run_id)?)
    }

    /// Events sent to a run that it has not taken yet, oldest first.
    pub fn pending_events(&self, run_id: &str) -> Result<Vec<PendingEvent>, EngineError> {
        Ok(self.store.pending_events(run_id)?)
    }

    /// Runs started inside a run's steps.
    pub fn children(&self, run_id: &str) -> Result<Vec<Run>, EngineError> {
        Ok(self.store.children(run_id)?)
    }

    /// The engine's store, for reads this type does not wrap.
    pub fn store(&self) -> &Arc<SqliteStore> {
        &self.store
    }

    fn check_open(&self) -> Result<(), EngineError> {
        if self.closed.load(Ordering::Acquire) {
            Err(self.closed_error())
        } else {
            Ok(())
        }
    }

    fn closed_error(&self) -> EngineError {
        EngineError::Closed(self.store.path().to_owned())
    }

    async fn request<T>(
        &self,
        msg: impl FnOnce(oneshot::Sender<Result<T, EngineError>>) -> Msg,
    ) -> Result<T, EngineError> {
        self.check_open()?;
        let (reply, rx) = oneshot::channel();
        self.tx.send(msg(reply)).map_err(|_| self.closed_error())?;
        rx.await.map_err(|_| self.closed_error())?
    }
}

impl Drop for Engine {
    /// An engine dropped without [`Engine::close`] stops as a crashed process would: what
    /// its runs collected and did not hand to the store is lost, and their steps that
    /// were running run again on resume.
    fn drop(&mut self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            let _ = self.tx.send(Msg::Abandon);
        }
    }
}

/// Look for events other processes store for the machine runs live here, as the Node
/// binding does: only when the database's `data_version` moved.
async fn poll(
    watched: Arc<Watched<()>>,
    store: Arc<SqliteStore>,
    tx: Sender<Msg>,
    every: Duration,
    closed: Arc<AtomicBool>,
) {
    loop {
        tokio::time::sleep(every).await;
        if closed.load(Ordering::Acquire) {
            return;
        }
        let (w, s) = (Arc::clone(&watched), Arc::clone(&store));
        let Ok(batch) = tokio::task::spawn_blocking(move || w.poll(&*s)).await else {
            return;
        };
        for ((), e) in batch {
            let mut event = Event::new(e.event_type, driver::parse(e.data.as_deref()));
            event.queue = e.queue;
            let (run_id, id) = (e.run_id, e.id);
            if tx.send(Msg::Deliver { run_id, id, event }).is_err() {
                return;
            }
        }
    }
}
