//! The Ramus runtime: live runs of DAGs and state machines on top of the sans-IO executors
//! of `ramus-core`, durable on a [`ramus_store::Store`], with timers driven by an injected
//! [`Clock`], spans, and the plan that resumes a stored run in another process.
//!
//! The same runtime serves the Node binding (whose runners are JS functions called on the
//! JS thread) and Rust programs (whose runners are Rust async functions): [`Engine`] is
//! the durable engine for the latter, on the same store and the same JSON definitions, so
//! a JS process and a Rust process can continue each other's runs. See
//! `examples/approval.rs` for an agent that waits for a person across processes.

#![warn(missing_docs)]

pub mod clock;
pub mod cron;
pub mod def;
pub mod delivery;
mod driver;
pub mod engine;
pub mod engine_core;
pub mod error;
pub mod ids;
pub mod runtime;
pub mod sink;
pub mod step;
pub mod timers;
pub mod trace;
pub mod travel;
pub mod worker;
pub mod writer;

pub use clock::{Clock, SystemClock, TestClock, TEST_CLOCK_START};
pub use def::{Compiled, RunDef, RunnerRef};
pub use engine::{
    Defined, Durability, Engine, EngineOptions, Resumed, RunHandle, StartOptions, Target,
};
pub use engine_core::{
    continuation, end_tree, parse_limits, Continuation, EngineCore, Enqueue, Enqueued, Nested,
    Parser, QueuedStart, ResumePlan,
};
pub use error::EngineError;
pub use runtime::{
    ClockId, CommandValues, Continued, Durable, DurableRow, Live, Restore, RunKey, RunOptions,
    Runtime, SYSTEM_CLOCK, YIELD_EVERY,
};
pub use sink::{EventValue, MachineValues, Tap, Values};
pub use step::{Event, Guard, RunError, Step, StepError};
pub use trace::{
    configure_tracing, flush_tracing, shutdown_tracing, tracing_enabled, TracingConfig,
};
pub use travel::{ContextDiffs, ForkOptions, RerunOptions};
pub use writer::{RunRow, RunWriter};
