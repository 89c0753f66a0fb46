//! What a Rust runner receives ([`Step`]), what a transition condition sees ([`Guard`]),
//! and how steps and runs fail ([`StepError`], [`RunError`]).
//!
//! A Rust runner gets what a JS runner gets: its input, the root input, its `args`, the
//! run's context, the event that led to a machine state, `is_cancelled()` and `emit`. The
//! values are `serde_json::Value`s because that is what the store keeps: a run started by
//! a JS process and resumed here (or the other way round) hands its runners the same data.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::driver::Msg;
use crate::runtime::RunKey;

/// An event sent to a machine run, or the one that led to a machine state.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The event type (`"approve"`).
    pub event_type: String,
    /// Its data (`Value::Null` when it has none).
    pub data: Value,
    /// When sent: wait for a state that handles it instead of being dropped when the
    /// current state does not (`send({ …, queue: true })` in JS). Events a runner receives
    /// always say `false`: the store does not keep how they were sent.
    pub queue: bool,
}

impl Event {
    /// An event of `event_type` with `data`.
    ///
    /// ```
    /// use ramus_engine::Event;
    /// let e = Event::new("approve", serde_json::json!({ "by": "ann" }));
    /// assert_eq!(e.event_type, "approve");
    /// ```
    pub fn new(event_type: impl Into<String>, data: Value) -> Event {
        Event {
            event_type: event_type.into(),
            data,
            queue: false,
        }
    }

    /// The same event, held until a state handles it rather than dropped.
    pub fn queued(mut self) -> Event {
        self.queue = true;
        self
    }
}

/// What a registered transition condition sees (`condition: 'key'` in a stored machine).
#[derive(Debug)]
pub struct Guard<'a> {
    /// The run's context now.
    pub context: &'a Value,
    /// The input of the state the transition leaves.
    pub input: &'a Value,
    /// That state's output (the one it just returned, for `""` transitions).
    pub output: &'a Value,
    /// The run's input.
    pub root_input: &'a Value,
    /// The event whose transition is being tried, if an event's is.
    pub event: Option<&'a Event>,
}

/// Why a step failed, as a runner reports it. Any error converts into one (its message is
/// kept, its name is `Error`); build one directly to choose the name, or to stop a step
/// that saw its cancellation ([`StepError::cancelled`]) without failing it.
///
/// It is stored as JS stores errors, `{ "name", "message", …fields }`, so a JS process
/// reading the run sees an ordinary error.
#[derive(Clone, Debug, PartialEq)]
pub struct StepError {
    name: String,
    message: String,
    fields: Map<String, Value>,
    cancelled: bool,
    no_retry: bool,
}

impl StepError {
    /// An error named `Error` with `message`.
    pub fn new(message: impl Into<String>) -> StepError {
        StepError {
            name: "Error".to_owned(),
            message: message.into(),
            fields: Map::new(),
            cancelled: false,
            no_retry: false,
        }
    }

    /// The same error with another name (`TypeError`, `RateLimited`…).
    pub fn named(mut self, name: impl Into<String>) -> StepError {
        self.name = name.into();
        self
    }

    /// The same error with an extra field stored beside its name and message.
    pub fn with_field(mut self, key: impl Into<String>, value: Value) -> StepError {
        self.fields.insert(key.into(), value);
        self
    }

    /// The step stopped because it saw its cancellation: not a failure (JS's
    /// `CancelledError`).
    pub fn cancelled() -> StepError {
        StepError {
            name: "CancelledError".to_owned(),
            message: "The step was cancelled".to_owned(),
            fields: Map::new(),
            cancelled: true,
            no_retry: false,
        }
    }

    /// The same error, marked as one another attempt would not cure (a bad request, not a
    /// flaky network): the step's `retry` does not apply to it. (A registered `retryOn`
    /// predicate is the JS face's; a Rust runner says it here.)
    ///
    /// ```
    /// use ramus_engine::StepError;
    /// let e = StepError::new("invalid API key").no_retry();
    /// assert!(e.is_no_retry());
    /// ```
    pub fn no_retry(mut self) -> StepError {
        self.no_retry = true;
        self
    }

    /// Whether this error is not to be retried (see [`no_retry`](Self::no_retry)).
    pub fn is_no_retry(&self) -> bool {
        self.no_retry
    }

    /// The error's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The error's message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether this is [`StepError::cancelled`].
    pub fn is_cancelled(&self) -> bool {
        self.cancelled
    }

    /// The error as stored: `{ "name", "message", …fields }`.
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("name".into(), Value::String(self.name.clone()));
        out.insert("message".into(), Value::String(self.message.clone()));
        for (k, v) in &self.fields {
            out.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Value::Object(out)
    }

    /// The step error a runner's own error becomes.
    pub(crate) fn from_boxed(e: Box<dyn std::error::Error + Send + Sync>) -> StepError {
        match e.downcast::<StepError>() {
            Ok(s) => *s,
            Err(e) => StepError::new(e.to_string()),
        }
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

impl std::error::Error for StepError {}

/// How a run ended when it did not finish ([`crate::RunHandle::finished`]).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RunError {
    /// A DAG node failed (and the DAG does not tolerate failures), or a machine halted on
    /// a failed state that has no error state. `error` is the error as stored.
    #[error("{message}")]
    Failed {
        /// The error's name (`Error`, `TimeoutError`…).
        name: String,
        /// The error's message.
        message: String,
        /// The error as stored (`{ "name", "message", … }`).
        error: Value,
    },
    /// The run was cancelled.
    #[error("The run was cancelled")]
    Cancelled,
    /// The engine closed (or was dropped) before the run ended. Its row stays as it was:
    /// it can be resumed.
    #[error("The engine closed before run {0} ended; resume it to continue")]
    Closed(String),
    /// The run's records could not be written; the run stopped.
    #[error("{0}")]
    Storage(String),
}

impl RunError {
    /// The stable code of the error, as [`crate::EngineError::code`] has them.
    pub fn code(&self) -> &'static str {
        match self {
            RunError::Failed { .. } => "ERR_RUN_FAILED",
            RunError::Cancelled => "ERR_CANCELLED",
            RunError::Closed(_) => "ERR_CLOSED",
            RunError::Storage(_) => "ERR_STORE",
        }
    }

    /// A failure from the error as stored (JSON text).
    pub(crate) fn failed(error: Option<&str>) -> RunError {
        let error: Value = error
            .and_then(|e| serde_json::from_str(e).ok())
            .unwrap_or_else(|| json!({ "name": "Error", "message": "the run failed" }));
        let field = |k: &str| error.get(k).and_then(Value::as_str).map(str::to_owned);
        RunError::Failed {
            name: field("name").unwrap_or_else(|| "Error".to_owned()),
            message: field("message").unwrap_or_else(|| error.to_string()),
            error,
        }
    }
}

/// What the driver and a running step share.
#[derive(Debug, Default)]
pub(crate) struct StepShared {
    cancelled: AtomicBool,
    notify: tokio::sync::Notify,
    /// A machine state's own choice of next state: `(state, delay in ms)`.
    pub(crate) choice: Mutex<Option<(String, Option<u64>)>>,
}

impl StepShared {
    /// The step no longer counts (its run was cancelled or failed, or its state timed out).
    pub(crate) fn cancel(&self) {
        if !self.cancelled.swap(true, Ordering::AcqRel) {
            self.notify.notify_waiters();
        }
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }
}

/// One call of a registered runner: a DAG node's run or a machine state's visit.
///
/// ```no_run
/// # async fn demo(engine: ramus_engine::Engine) {
/// use serde_json::json;
/// engine.register("count", |step: ramus_engine::Step| async move {
///     step.context()["count"] = json!(step.context()["count"].as_i64().unwrap_or(0) + 1);
///     step.emit("counted", json!({ "node": step.node() }));
///     Ok::<_, ramus_engine::StepError>(json!({ "seen": step.input().clone() }))
/// });
/// # }
/// ```
pub struct Step {
    pub(crate) input: Value,
    pub(crate) root_input: Arc<Value>,
    pub(crate) args: Value,
    pub(crate) context: Arc<Mutex<Value>>,
    pub(crate) event: Option<Event>,
    pub(crate) previous_state: Option<String>,
    pub(crate) node: String,
    pub(crate) run_id: Arc<str>,
    pub(crate) machine: bool,
    pub(crate) shared: Arc<StepShared>,
    pub(crate) key: RunKey,
    pub(crate) slot: u32,
    pub(crate) attempt: u32,
    pub(crate) tx: Sender<Msg>,
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Step")
            .field("run_id", &self.run_id)
            .field("node", &self.node)
            .field("input", &self.input)
            .finish_non_exhaustive()
    }
}

impl Step {
    /// The step's input. A DAG node: its parents' outputs keyed by parent name (a parent
    /// without output, such as a failed one it tolerates, is left out). A machine state:
    /// the previous state's output, the error that failed it (going to an error state),
    /// the timeout error (after a `timeout`), or the run's input for the first state.
    pub fn input(&self) -> &Value {
        &self.input
    }

    /// The input, taken.
    pub fn take_input(&mut self) -> Value {
        std::mem::take(&mut self.input)
    }

    /// The run's input.
    pub fn root_input(&self) -> &Value {
        &self.root_input
    }

    /// The node's or state's `args` in the definition (`Value::Null` when it has none).
    pub fn args(&self) -> &Value {
        &self.args
    }

    /// The run's context, locked: read it or change it in place. Changes are written with
    /// the run's snapshot and seen by later steps and conditions. Do not hold the guard
    /// across an `.await` (it is not `Send`, so a spawned runner cannot).
    pub fn context(&self) -> MutexGuard<'_, Value> {
        self.context.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Machines: the event that caused the move into this state, if one did.
    pub fn event(&self) -> Option<&Event> {
        self.event.as_ref()
    }

    /// Machines: the state before this one.
    pub fn previous_state(&self) -> Option<&str> {
        self.previous_state.as_deref()
    }

    /// The node's or state's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Which attempt of the node or state this is: 1, or more when it has a `retry` and
    /// failed before.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The run id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Whether the step should stop: the run was cancelled or failed, or (machines) the
    /// state's timeout fired while it ran.
    pub fn is_cancelled(&self) -> bool {
        self.shared.is_cancelled()
    }

    /// `Err(StepError::cancelled())` once the step should stop, for `?`.
    pub fn exit_if_cancelled(&self) -> Result<(), StepError> {
        if self.is_cancelled() {
            Err(StepError::cancelled())
        } else {
            Ok(())
        }
    }

    /// Resolves once the step should stop, for `tokio::select!` against long work.
    pub async fn cancelled(&self) {
        loop {
            // Created before the flag is read, so a cancel between the two still wakes it.
            let notified = self.shared.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }

    /// Record a custom event of this step (`emit(type, data)` in JS): it is stored in the
    /// run's `events` and exported with its span. An empty `event_type` is ignored.
    pub fn emit(&self, event_type: &str, data: Value) {
        if event_type.is_empty() {
            return;
        }
        let _ = self.tx.send(Msg::Emit {
            key: self.key,
            slot: self.slot,
            event_type: event_type.to_owned(),
            data: data.to_string(),
        });
    }

    /// Machines: choose the next state instead of the configured transitions
    /// (`transitionTo(state, output, { delay })` in JS); the output is what the runner
    /// returns. The engine checks the choice against the machine: a state it does not
    /// have fails the step. Ignored for DAG nodes.
    pub fn transition_to(&self, state: impl Into<String>, delay: Option<Duration>) {
        if !self.machine {
            return;
        }
        let ms = delay.map(|d| d.as_millis().min(u64::MAX as u128) as u64);
        *self.shared.choice.lock().unwrap_or_else(|e| e.into_inner()) = Some((state.into(), ms));
    }
}
