//! The engine of Ramus, without I/O.
//!
//! Definitions are validated and compiled once ([`CompiledDag`], [`CompiledMachine`]); a
//! run ([`Executor`]: a [`DagRun`] or a [`MachineRun`]) is driven from outside: the driver
//! applies [`Command`]s (start, complete, acquired, send, timer fired, cancel) and gets
//! back the [`Action`]s to perform (run this step, arm this timer, the run ended), while
//! the run records the events of what happened. The core never calls a runner, never sleeps,
//! never reads the clock (the driver passes `now` in milliseconds) and never touches a
//! file, so the same completions always produce the same actions: that is what makes runs
//! replayable and lets the Node binding drive it on the JS thread without thread hops.
//!
//! A definition as users write it (JSON from the JS face) is parsed and validated by
//! [`definition::parse`] into a [`Definition`], which converts into the compilers' specs.
//!
//! `ramus-engine` drives these executors for Rust programs (Rust runners, durable runs).

#![warn(missing_docs)]

pub mod dag;
pub mod dag_run;
pub mod definition;
pub mod error;
pub mod event;
pub mod ids;
pub mod machine;
pub mod retry;
pub mod run;
pub mod semaphore;

pub use dag::{analyze, Analysis, CompiledDag, DagGraph, NodeSpec};
pub use dag_run::{DagRun, DagRunOptions, GrowError, NodeState, RunStatus};
pub use definition::{
    compile as compile_definition, parse as parse_definition, suggest, CacheDef, CacheKey,
    CompiledDefinition, ConditionDef, ContextDef, DagDef, DagNodeDef, Definition, DefinitionError,
    ExpectKind, InvalidKind, MachineDef, MapDef, ParseOptions, RunnerDef, StateDef, TransitionDef,
    DEFAULT_MAX_STEPS, FN_MARKER,
};
pub use error::DagError;
pub use event::{DataRef, Event, EventKind, Recorder};
pub use ids::{Id, IdGen};
pub use machine::{
    parse_duration, CompiledMachine, GuardFailed, Guards, MachineError, MachineRun,
    MachineSnapshot, MachineSpec, MachineStatus, NoGuards, PhaseSnapshot, QueuedEvent, StateSpec,
    TransitionSpec,
};
pub use retry::{Backoff, RetryOn, RetryPolicy, StepPolicy, MAX_ATTEMPTS};
pub use run::{Action, Command, Delay, End, Executor, InputRef, Outcome, RunPhase, TimerKind};
pub use semaphore::SemaphoreTable;
