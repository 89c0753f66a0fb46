//! The engine of Ramus, without I/O.
//!
//! Definitions are validated and compiled once ([`CompiledDag`]); a run ([`DagRun`]) is
//! driven from outside: the driver calls [`DagRun::start`], [`DagRun::complete`],
//! [`DagRun::cancel`] and friends, and each call tells it which nodes to launch next and
//! records the events of what happened. The core never calls a runner, never sleeps,
//! never reads the clock (the driver passes `now` in milliseconds) and never touches a
//! file, so the same completions always produce the same actions: that is what makes runs
//! replayable and lets the Node binding drive it on the JS thread without thread hops.
//!
//! A definition as users write it (JSON from the JS face) is parsed and validated by
//! [`definition::parse`] into a [`Definition`], which converts into the compilers' specs.
//!
//! [`local`] holds a small driver for Rust programs whose nodes are Rust closures.

#![warn(missing_docs)]

pub mod dag;
pub mod dag_run;
pub mod definition;
pub mod error;
pub mod event;
pub mod ids;
pub mod local;
pub mod machine;
pub mod semaphore;

pub use dag::{analyze, Analysis, CompiledDag, NodeSpec};
pub use dag_run::{DagRun, DagRunOptions, Launch, NodeState, Outcome, RunStatus};
pub use definition::{
    compile as compile_definition, parse as parse_definition, CompiledDefinition, ConditionDef,
    ContextDef, DagDef, DagNodeDef, Definition, DefinitionError, ExpectKind, InvalidKind,
    MachineDef, ParseOptions, RunnerDef, StateDef, TransitionDef, DEFAULT_MAX_STEPS, FN_MARKER,
};
pub use error::DagError;
pub use event::{DataRef, Event, EventKind, Recorder};
pub use ids::{Id, IdGen};
pub use machine::{
    parse_duration, CompiledMachine, GuardFailed, Guards, InputRef, MachineAction, MachineError,
    MachineRun, MachineSnapshot, MachineSpec, MachineStatus, NoGuards, QueuedEvent, SleepSnapshot,
    StateOutcome, StateSpec, TransitionSpec,
};
pub use semaphore::SemaphoreTable;
