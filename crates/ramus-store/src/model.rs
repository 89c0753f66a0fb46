//! The rows of the store, used both to write (inside a [`Record`]) and to read back.
//!
//! Ids are UUIDv7 text (the engine formats its `Id(u128)` once, when a record is made) and
//! times are milliseconds since the Unix epoch passed in by the caller, so the store never
//! reads the clock and a replayed run writes the same rows. Values (inputs, outputs,
//! errors, snapshots, payloads) are JSON *text*: the binding already has the string from
//! `JSON.stringify`, and the store writes it as it is rather than parsing and re-encoding.
//! `docs/schema.md` describes every column.

use std::fmt;
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

/// Declares a string-valued enum stored as TEXT: its `as_str`, `FromStr`, `Display`,
/// `ToSql` and `FromSql`, all from one table of variants and their stored strings.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The value as stored in the database.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownValue { what: stringify!($name), value: s.to_owned() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::Borrowed(ValueRef::Text(self.as_str().as_bytes())))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                value.as_str()?.parse().map_err(FromSqlError::other)
            }
        }
    };
}

/// A stored string that is not one of an enum's values (a database written by a newer
/// build, or edited by hand).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} value {value:?}")]
pub struct UnknownValue {
    /// The enum's name.
    pub what: &'static str,
    /// The value found.
    pub value: String,
}

text_enum! {
    /// What a definition or run is: a DAG or a state machine.
    Kind {
        /// A DAG (`runDag`, `DagRunner`).
        Dag = "dag",
        /// A state machine (`StateMachineRunner`).
        Machine = "machine",
    }
}

text_enum! {
    /// Where a run is in its life. Stored in `runs.status`.
    RunStatus {
        /// Created, not started yet.
        Pending = "pending",
        /// Enqueued (`engine.enqueue`): waits for a worker to claim and start it.
        Queued = "queued",
        /// Steps are running or ready to run.
        Running = "running",
        /// A machine rests in a state that waits for an event (`engine.send`).
        WaitingForEvent = "waitingForEvent",
        /// A machine waits for a delayed transition (a `delay` timer).
        Sleeping = "sleeping",
        /// Finished with an output (a DAG's output, a machine's final state).
        Finished = "finished",
        /// Failed: `runs.error` holds the error.
        Error = "error",
        /// Cancelled before it finished.
        Cancelled = "cancelled",
    }
}

impl RunStatus {
    /// Whether the run has ended: `finished`, `error` or `cancelled`.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Finished | RunStatus::Error | RunStatus::Cancelled
        )
    }
}

text_enum! {
    /// Where a step (one DAG node run, or one visit of a machine state) is. Stored in
    /// `steps.status`.
    StepStatus {
        /// Ready but not started (waiting for a semaphore).
        Pending = "pending",
        /// Started; a step still `running` after a crash is run again on resume.
        Running = "running",
        /// Finished with an output.
        Finished = "finished",
        /// Failed: `steps.error` holds the error.
        Error = "error",
        /// Cancelled before it finished.
        Cancelled = "cancelled",
    }
}

text_enum! {
    /// Why a timer exists. Stored in `timers.kind`.
    TimerKind {
        /// A delayed transition (`transitionTo(state, output, { delay })`).
        Delay = "delay",
        /// A state timeout (`timeout: { after, state }`) or a DAG node's (`timeout: '5s'`).
        Timeout = "timeout",
        /// The wait before a step's next attempt (`retry`).
        Retry = "retry",
    }
}

/// One run: a row of `runs`. Written whole by [`Record::Run`] (an upsert), changed in
/// place by [`Record::RunUpdate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// The run id (UUIDv7).
    pub id: String,
    /// The run's name (the definition name unless the caller chose another).
    pub name: String,
    /// DAG or machine.
    pub kind: Kind,
    /// The stored definition it runs, if it was started from one.
    pub definition_name: Option<String>,
    /// The version of that definition.
    pub definition_version: Option<i64>,
    /// Where the run is.
    pub status: RunStatus,
    /// The run's input, JSON text.
    pub input: Option<String>,
    /// The run's output once finished, JSON text.
    pub output: Option<String>,
    /// The error that failed the run, JSON text.
    pub error: Option<String>,
    /// Tags given at start; `waiting` and `runs` filter on them.
    pub tags: Vec<String>,
    /// Free-form info given at start, JSON text.
    pub info: Option<String>,
    /// The W3C trace id (32 hex digits) of the run's span.
    pub trace_id: Option<String>,
    /// The W3C span id (16 hex digits) of the run's span.
    pub span_id: Option<String>,
    /// The run whose step started this run.
    pub parent_run_id: Option<String>,
    /// The step that started this run.
    pub parent_step_id: Option<String>,
    /// The current restorable snapshot, JSON text (its shape belongs to the engine).
    pub snapshot: Option<String>,
    /// When the run was created (kept from the first write).
    pub created_at: i64,
    /// When the run was last written.
    pub updated_at: i64,
    /// When the run reached a terminal status.
    pub ended_at: Option<i64>,
    /// The run this one was forked from (`engine.fork`), if it was.
    pub forked_from_run_id: Option<String>,
    /// The step of that run it was forked at.
    pub forked_from_step_id: Option<String>,
}

/// A change to an existing run: the status and time always, and each `Some` field. `None`
/// keeps the stored value, so a step boundary writes only what changed (usually the status
/// and the snapshot) instead of the whole run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunUpdate {
    /// The run to change.
    pub id: String,
    /// The new status.
    pub status: RunStatus,
    /// The time of the change (`runs.updated_at`).
    pub updated_at: i64,
    /// The output, JSON text.
    pub output: Option<String>,
    /// The error, JSON text.
    pub error: Option<String>,
    /// The new snapshot, JSON text.
    pub snapshot: Option<String>,
    /// New info, JSON text.
    pub info: Option<String>,
    /// When the run ended.
    pub ended_at: Option<i64>,
    /// The step that started it, when a run nested in a step continues under the step
    /// that ran again after a restart.
    pub parent_step_id: Option<String>,
}

impl RunUpdate {
    /// An update that sets only the status and time.
    pub fn status(id: impl Into<String>, status: RunStatus, at: i64) -> Self {
        RunUpdate {
            id: id.into(),
            status,
            updated_at: at,
            output: None,
            error: None,
            snapshot: None,
            info: None,
            ended_at: None,
            parent_step_id: None,
        }
    }
}

/// A step that counts (not set aside by a rerun), with only what a DAG restore reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrentStep {
    /// The step's id.
    pub id: String,
    /// Its node.
    pub node: String,
    /// Its status.
    pub status: StepStatus,
    /// Its error when it failed or was cancelled, else its output.
    pub value: Option<String>,
}

/// One step: a DAG node run or a visit of a machine state. A row of `steps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The step id (UUIDv7).
    pub id: String,
    /// The run it belongs to.
    pub run_id: String,
    /// Its position in the run, from 1, unique per run. Assigned by the engine, so a
    /// replay gives the same numbers. A retry keeps its step (same id and `seq`,
    /// `attempt + 1`); a node run again after a crash gets either that or a new `seq`.
    pub seq: i64,
    /// The DAG node or machine state name.
    pub node: String,
    /// The parent step (the run's own step, or the step that started a nested run).
    pub parent_step_id: Option<String>,
    /// The step's input, JSON text.
    pub input: Option<String>,
    /// The step's output, JSON text.
    pub output: Option<String>,
    /// The step's error, JSON text.
    pub error: Option<String>,
    /// Where the step is.
    pub status: StepStatus,
    /// Which try this is, from 1.
    pub attempt: i64,
    /// Its output came from a cache (the runner did not run).
    pub cached: bool,
    /// When it started running.
    pub started_at: Option<i64>,
    /// When it finished, failed or was cancelled.
    pub ended_at: Option<i64>,
    /// A machine step: the run's context as the state started, as a JSON Patch (RFC 6902)
    /// from the context of the run's previous step, or a whole document (a patch that
    /// replaces the root) after a resume or when the patches since the last whole one
    /// outgrow the context.
    pub context: Option<String>,
    /// A machine step: what the machine was doing as the state started (its state,
    /// limits, queued events), to fork from; the engine's JSON, without the context and
    /// input that `context` and `input` hold.
    pub snapshot: Option<String>,
    /// When a rerun (`engine.rerun`, `engine.updateInput`) set this step's result aside:
    /// its node runs again in a new step, and a restore no longer counts this one.
    pub superseded_at: Option<i64>,
}

/// How a [`Step::context`] that holds the whole document begins: a JSON Patch replacing
/// the root (`[{"op":"replace","path":"","value":…}]`). Writers store whole contexts so,
/// and readers start rebuilding a context at the last one.
pub const WHOLE_CONTEXT: &str = r#"[{"op":"replace","path":"","value":"#;

/// A change to an existing step; `None` keeps the stored value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepUpdate {
    /// The step to change.
    pub id: String,
    /// The new status.
    pub status: StepStatus,
    /// The output, JSON text.
    pub output: Option<String>,
    /// The error, JSON text.
    pub error: Option<String>,
    /// When it started (a `pending` step that began running).
    pub started_at: Option<i64>,
    /// When it ended.
    pub ended_at: Option<i64>,
    /// Its output came from a cache (the runner did not run).
    pub cached: bool,
}

/// A state machine transition. A row of `transitions`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The transition id (UUIDv7).
    pub id: String,
    /// The run it belongs to.
    pub run_id: String,
    /// The step of the state being left (the visit whose outcome chose the transition).
    pub step_id: Option<String>,
    /// Its position among the run's transitions, from 1, unique per run.
    pub seq: i64,
    /// The state left; `None` for the entry into the initial state.
    pub from_state: Option<String>,
    /// The state entered.
    pub to_state: String,
    /// The type of the event that caused it, if an event did.
    pub event_type: Option<String>,
    /// That event's data, JSON text.
    pub event_data: Option<String>,
    /// When it happened.
    pub time: i64,
}

/// A custom event a runner emitted. A row of `events`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomEvent {
    /// The event id (UUIDv7).
    pub id: String,
    /// The run it belongs to.
    pub run_id: String,
    /// The step that emitted it.
    pub step_id: Option<String>,
    /// The parent of that step.
    pub parent_step_id: Option<String>,
    /// The event type the runner chose.
    pub event_type: String,
    /// The event source (`dag` or `state_machine`), as in the JS event.
    pub source: Option<String>,
    /// The node or state that emitted it.
    pub source_node: Option<String>,
    /// The data given to `emit`, JSON text.
    pub data: Option<String>,
    /// When it was emitted.
    pub time: i64,
}

/// An event sent to a run (`engine.send`), kept until the run takes it. A row of
/// `pending_events`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingEvent {
    /// The event id (UUIDv7).
    pub id: String,
    /// The run it was sent to.
    pub run_id: String,
    /// The event type.
    pub event_type: String,
    /// The event data, JSON text.
    pub data: Option<String>,
    /// `send(..., { queue: true })`: wait for a state that handles it instead of being
    /// dropped when the current state does not.
    pub queue: bool,
    /// When it was sent.
    pub created_at: i64,
    /// When the run took it; `None` while it waits.
    pub delivered_at: Option<i64>,
}

/// A durable timer: a delay or a timeout is a row, not a sleeping promise. A row of
/// `timers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timer {
    /// The timer id (UUIDv7).
    pub id: String,
    /// The run it belongs to.
    pub run_id: String,
    /// Delay or timeout.
    pub kind: TimerKind,
    /// When it falls due.
    pub due_at: i64,
    /// What the engine needs when it fires, JSON text (its shape belongs to the engine).
    pub payload: Option<String>,
    /// When it fired; `None` while armed.
    pub fired_at: Option<i64>,
}

/// A definition to store: [`SqliteStore::put_definition`](crate::SqliteStore::put_definition) or
/// [`Record::Definition`] give it the next version unless its content equals the latest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDefinition {
    /// The definition name.
    pub name: String,
    /// DAG or machine.
    pub kind: Kind,
    /// The definition config, JSON text.
    pub config: String,
    /// When it is stored.
    pub created_at: i64,
}

/// A stored definition version. A row of `definitions`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Definition {
    /// The definition name.
    pub name: String,
    /// The version, from 1.
    pub version: i64,
    /// DAG or machine.
    pub kind: Kind,
    /// SHA-256 (lowercase hex) of the config's canonical JSON; see `docs/schema.md`.
    pub hash: String,
    /// The config as it was given, JSON text.
    pub config: String,
    /// When this version was stored.
    pub created_at: i64,
}

/// What storing a definition did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefinitionVersion {
    /// The definition name.
    pub name: String,
    /// The version that holds this content.
    pub version: i64,
    /// The content hash.
    pub hash: String,
    /// Whether a new version was stored (`false`: the latest version had this content).
    pub created: bool,
}

/// One write. Records are applied in the order submitted; each submission is atomic (all
/// of its records or none) and commits with the others queued at the same time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// Insert a run, or replace every column but `created_at` of an existing one.
    Run(Run),
    /// Change an existing run.
    RunUpdate(RunUpdate),
    /// Insert a step, or replace an existing one.
    Step(Step),
    /// Change an existing step.
    StepUpdate(StepUpdate),
    /// Insert a transition.
    Transition(Transition),
    /// Insert a custom event.
    Event(CustomEvent),
    /// Insert an event sent to a run.
    PendingEvent(PendingEvent),
    /// Mark an event sent to a run as taken.
    EventDelivered {
        /// The pending event id.
        id: String,
        /// When it was delivered.
        at: i64,
    },
    /// Insert (arm) a timer.
    Timer(Timer),
    /// Mark a timer as fired.
    TimerFired {
        /// The timer id.
        id: String,
        /// When it fired.
        at: i64,
    },
    /// Delete a timer that will never fire (its state was left before the timeout).
    TimerCancelled {
        /// The timer id.
        id: String,
    },
    /// Store a definition version (when the version is needed back, use
    /// [`SqliteStore::put_definition`](crate::SqliteStore::put_definition)).
    Definition(NewDefinition),
    /// An ended (or interrupted) run runs again: status `running`, no output, error or
    /// end; its input replaced when given.
    RunReopened {
        /// The run.
        id: String,
        /// Its new input, JSON text.
        input: Option<String>,
        /// When.
        at: i64,
    },
    /// A run goes on under another stored definition (nodes were added to it).
    RunRedefined {
        /// The run.
        id: String,
        /// The definition's name.
        name: String,
        /// Its version.
        version: i64,
    },
    /// The current steps of these nodes of a run are set aside (`steps.superseded_at`):
    /// the nodes run again.
    StepsSuperseded {
        /// The run.
        run_id: String,
        /// The nodes.
        nodes: Vec<String>,
        /// When.
        at: i64,
    },
    /// A new run is held by `owner` until `until` (its first lease: token 1).
    Lease {
        /// The run.
        run_id: String,
        /// Its holder.
        owner: String,
        /// The lease's expiry.
        until: i64,
    },
    /// The rest of the submission is written only if `owner` still holds `run_id` with
    /// `token`; otherwise none of it is, and the submission fails with
    /// [`Error::LeaseLost`](crate::Error::LeaseLost).
    Fence {
        /// The run whose lease guards the writes (the top-level run of a nested one).
        run_id: String,
        /// The holder the writer is.
        owner: String,
        /// The token its claim returned.
        token: i64,
    },
}

impl Record {
    /// The record kind and id, for error messages.
    pub(crate) fn describe(&self) -> (&'static str, &str) {
        match self {
            Record::Run(r) => ("run", &r.id),
            Record::RunUpdate(r) => ("run", &r.id),
            Record::RunReopened { id, .. } | Record::RunRedefined { id, .. } => ("run", id),
            Record::StepsSuperseded { run_id, .. } => ("steps of run", run_id),
            Record::Step(s) => ("step", &s.id),
            Record::StepUpdate(s) => ("step", &s.id),
            Record::Transition(t) => ("transition", &t.id),
            Record::Event(e) => ("event", &e.id),
            Record::PendingEvent(e) => ("pending event", &e.id),
            Record::EventDelivered { id, .. } => ("pending event", id),
            Record::Lease { run_id, .. } | Record::Fence { run_id, .. } => ("lease of run", run_id),
            Record::Timer(t) => ("timer", &t.id),
            Record::TimerFired { id, .. } | Record::TimerCancelled { id } => ("timer", id),
            Record::Definition(d) => ("definition", &d.name),
        }
    }
}

/// Which runs to list. Empty fields do not filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Only runs with this name.
    pub name: Option<String>,
    /// Only runs with this status (ignored by [`SqliteStore::waiting`](crate::SqliteStore::waiting)).
    pub status: Option<RunStatus>,
    /// Only runs that carry every one of these tags.
    pub tags: Vec<String>,
    /// At most this many runs (newest first).
    pub limit: Option<u32>,
}

/// Counters of the writer, for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Transactions committed.
    pub commits: u64,
    /// Submissions (calls to `submit`, `submit_sync`, `put_definition`, `prune`) applied.
    pub submissions: u64,
    /// Records applied.
    pub records: u64,
    /// WAL checkpoint cycles finished (see `Options::checkpoint_pages`).
    pub checkpoints: u64,
    /// Pages in the WAL after the last commit (0 when the store runs no checkpoint
    /// thread: `:memory:`, `Off`, `checkpoint_pages` 0).
    pub wal_pages: u64,
}

/// Which runs to list in a run browser (the inspector): [`RunFilter`] plus a name
/// search, a creation-time window and a top-level-only switch. Empty fields do not filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunQuery {
    /// Only runs whose name contains this text (ASCII case-insensitive).
    pub name_contains: Option<String>,
    /// Only runs with this status.
    pub status: Option<RunStatus>,
    /// Only runs that carry every one of these tags.
    pub tags: Vec<String>,
    /// Only runs created at or after this time (ms).
    pub since: Option<i64>,
    /// Only runs created before this time (ms).
    pub until: Option<i64>,
    /// Only runs that no step started (`parent_run_id IS NULL`).
    pub top_level: bool,
    /// At most this many runs (newest first).
    pub limit: Option<u32>,
}

/// A run as a run browser lists it: the run (without its snapshot, which a list never
/// shows and which can be large) and how many steps it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSummary {
    /// The run; `snapshot` is always `None`.
    pub run: Run,
    /// The number of rows in `steps` for this run.
    pub steps: i64,
}
