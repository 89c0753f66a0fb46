//! Persistence of Ramus runs: an embedded SQLite log that any visualizer can read.
//!
//! The engine turns what it learns into [`Record`]s and hands them to a [`SqliteStore`]; a
//! writer thread commits them in groups (one transaction for everything queued), so the
//! engine's thread never waits on the disk unless it asks to ([`SqliteStore::submit_sync`],
//! for durable runs). Reads go through their own connection and see committed data.
//!
//! The schema, its JSON shapes and status values are documented in `docs/schema.md`
//! at the repository root; [`SCHEMA_VERSION`] is the version this build writes.
//!
//! ```no_run
//! use ramus_store::{Durability, Kind, Record, Run, RunStatus, SqliteStore};
//! # fn main() -> ramus_store::Result<()> {
//! let store = SqliteStore::open("./ramus.sqlite", Durability::Batched)?;
//! store.submit(vec![Record::Run(Run {
//!     id: "0190b6a4-1f00-7000-8000-000000000001".into(),
//!     name: "research".into(),
//!     kind: Kind::Dag,
//!     definition_name: None,
//!     definition_version: None,
//!     status: RunStatus::Running,
//!     input: Some(r#"{"q":"rust"}"#.into()),
//!     output: None,
//!     error: None,
//!     tags: vec!["demo".into()],
//!     info: None,
//!     trace_id: None,
//!     span_id: None,
//!     parent_run_id: None,
//!     parent_step_id: None,
//!     snapshot: None,
//!     created_at: 1_700_000_000_000,
//!     updated_at: 1_700_000_000_000,
//!     ended_at: None,
//!     forked_from_run_id: None,
//!     forked_from_step_id: None,
//! })])?;
//! store.close()?;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod cache;
mod checkpoint;
mod db;
mod error;
mod hash;
mod lease;
mod limits;
mod model;
#[cfg(feature = "postgres")]
mod pg;
mod read;
mod schema;
mod store;
mod traits;
mod write;

pub use cache::SqliteCache;
pub use db::DbError;
pub use error::{Error, Result};
pub use hash::content_hash;
pub use lease::{Claimed, LeaseAnswer, LeaseOp, QueuedRun, ScheduleRow};
pub use limits::{Limit, LimitUse};
pub use model::{
    CurrentStep, CustomEvent, Definition, DefinitionVersion, Kind, NewDefinition, PendingEvent,
    Record, Run, RunFilter, RunQuery, RunStatus, RunSummary, RunUpdate, Stats, Step, StepStatus,
    StepUpdate, Timer, TimerKind, Transition, UnknownValue, WHOLE_CONTEXT,
};
#[cfg(feature = "postgres")]
pub use pg::is_postgres;
pub use schema::SCHEMA_VERSION;
pub use store::{Durability, OnCommit, Options, SqliteStore, Synchronous};
pub use traits::Store;
