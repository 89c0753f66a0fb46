//! The [`Store`] trait: what the engine needs from a database of runs. [`SqliteStore`] is
//! the embedded implementation; a server-backed one (PostgreSQL) implements the same trait
//! and the same schema (`docs/schema.md`), so the engine above never knows which it has.

use crate::error::Result;
use crate::model::{
    CustomEvent, Definition, DefinitionVersion, Kind, PendingEvent, Record, Run, RunFilter,
    RunQuery, RunStatus, RunSummary, Step, Timer, Transition,
};
use crate::store::OnCommit;
use crate::SqliteStore;

/// A database of runs: records go in through a writer that commits in groups, reads see
/// what was committed. Shared across threads (`Arc<dyn Store>`).
pub trait Store: Send + Sync {
    /// Where the store lives (a file path, `:memory:`, a connection URL).
    fn location(&self) -> &str;
    /// Queue records; they are committed with the next group commit. A failure is
    /// reported by the next [`flush`](Store::flush).
    fn submit(&self, records: Vec<Record>) -> Result<()>;
    /// Queue records and wait until they are committed.
    fn submit_sync(&self, records: Vec<Record>) -> Result<()>;
    /// Queue records and return; `done` is called (on any thread) once they are committed
    /// or failed. Many runs' submissions then share a commit without a thread each.
    fn submit_then(&self, records: Vec<Record>, done: OnCommit) {
        done(self.submit_sync(records))
    }
    /// Claim, renew or release run leases, atomically with respect to other writers.
    fn lease(&self, op: crate::LeaseOp) -> Result<crate::LeaseAnswer>;
    /// Whether a worker would find a run to claim at `now` (see
    /// [`LeaseOp::ClaimWork`](crate::LeaseOp::ClaimWork)), without taking the write lock.
    fn work_ready(&self, names: Option<&[String]>, now: i64, skip: &[String]) -> Result<bool>;
    /// Every limit with the slots held at `now`.
    fn limits(&self, now: i64) -> Result<Vec<crate::LimitUse>>;
    /// Schedules by name; `due`: only those whose next tick came by then.
    fn schedules(&self, due: Option<i64>) -> Result<Vec<crate::ScheduleRow>>;
    /// Wait until everything submitted before is committed.
    fn flush(&self) -> Result<()>;
    /// Store a definition as a new version unless its content equals the latest's.
    fn put_definition(
        &self,
        name: &str,
        kind: Kind,
        config: &str,
        now_ms: i64,
    ) -> Result<DefinitionVersion>;
    /// Delete ended runs created before `older_than_ms` (or only those with `status`).
    fn prune(&self, older_than_ms: i64, status: Option<RunStatus>) -> Result<usize>;
    /// Flush and stop writing; reads keep working.
    fn close(&self) -> Result<()>;
    /// Runs matching a filter, newest first (without snapshots).
    fn runs(&self, filter: &RunFilter) -> Result<Vec<Run>>;
    /// One run, with its snapshot.
    fn run(&self, id: &str) -> Result<Option<Run>>;
    /// The highest step and transition `seq` of a run.
    fn max_seqs(&self, run_id: &str) -> Result<(i64, i64)>;
    /// `(id, node)` of a run's steps still `running` or `pending` (interrupted by a
    /// crash), in order.
    fn open_steps(&self, run_id: &str) -> Result<Vec<(String, String, crate::StepStatus)>>;
    /// `(node, finished, output or error)` of a run's settled steps, latest per node.
    fn settled_steps(&self, run_id: &str) -> Result<Vec<(String, bool, Option<String>)>>;
    /// Runs started inside steps of `run_id`, oldest first.
    fn children(&self, run_id: &str) -> Result<Vec<Run>>;
    /// A run's steps in order.
    fn steps(&self, run_id: &str) -> Result<Vec<Step>>;
    /// A run's steps that count (not set aside by a rerun), in order: its open ones
    /// among them (a rerun closes the open steps it sets aside).
    fn current_steps(&self, run_id: &str) -> Result<Vec<crate::CurrentStep>>;
    /// One step, by id.
    fn step(&self, id: &str) -> Result<Option<Step>>;
    /// `(seq, context)` of a run's machine steps up to `seq`, latest first.
    fn step_contexts(&self, run_id: &str, seq: i64) -> Result<Vec<(i64, String)>>;
    /// A run's transitions in order.
    fn transitions(&self, run_id: &str) -> Result<Vec<Transition>>;
    /// A run's custom events, oldest first.
    fn events(&self, run_id: &str) -> Result<Vec<CustomEvent>>;
    /// Machine runs waiting for an event, newest first.
    fn waiting(&self, filter: &RunFilter) -> Result<Vec<Run>>;
    /// Armed timers of every run due at or before `now_ms`, in due order.
    fn due_timers(&self, now_ms: i64) -> Result<Vec<Timer>>;
    /// A run's timers, armed and fired, in due order.
    fn timers(&self, run_id: &str) -> Result<Vec<Timer>>;
    /// Events sent to a run and not taken yet, oldest first.
    fn pending_events(&self, run_id: &str) -> Result<Vec<PendingEvent>>;
    /// The latest version of a definition.
    fn latest_version(&self, name: &str) -> Result<Option<i64>>;
    /// A stored definition (the latest version unless one is given).
    fn definition(&self, name: &str, version: Option<i64>) -> Result<Option<Definition>>;
    /// A run browser's list: runs with their step counts.
    fn run_list(&self, query: &RunQuery) -> Result<Vec<RunSummary>>;
    /// A number that changes whenever anything was committed, by this store or another
    /// process: pollers compare it to skip re-reads.
    fn data_version(&self) -> Result<i64>;
}

impl Store for SqliteStore {
    fn location(&self) -> &str {
        self.path()
    }
    fn submit(&self, records: Vec<Record>) -> Result<()> {
        SqliteStore::submit(self, records)
    }
    fn submit_sync(&self, records: Vec<Record>) -> Result<()> {
        SqliteStore::submit_sync(self, records)
    }
    fn submit_then(&self, records: Vec<Record>, done: OnCommit) {
        SqliteStore::submit_then(self, records, done)
    }
    fn lease(&self, op: crate::LeaseOp) -> Result<crate::LeaseAnswer> {
        SqliteStore::lease(self, op)
    }
    fn work_ready(&self, names: Option<&[String]>, now: i64, skip: &[String]) -> Result<bool> {
        SqliteStore::work_ready(self, names, now, skip)
    }
    fn limits(&self, now: i64) -> Result<Vec<crate::LimitUse>> {
        SqliteStore::limits(self, now)
    }
    fn schedules(&self, due: Option<i64>) -> Result<Vec<crate::ScheduleRow>> {
        SqliteStore::schedules(self, due)
    }
    fn flush(&self) -> Result<()> {
        SqliteStore::flush(self)
    }
    fn put_definition(
        &self,
        name: &str,
        kind: Kind,
        config: &str,
        now_ms: i64,
    ) -> Result<DefinitionVersion> {
        SqliteStore::put_definition(self, name, kind, config, now_ms)
    }
    fn prune(&self, older_than_ms: i64, status: Option<RunStatus>) -> Result<usize> {
        SqliteStore::prune(self, older_than_ms, status)
    }
    fn close(&self) -> Result<()> {
        SqliteStore::close(self)
    }
    fn runs(&self, filter: &RunFilter) -> Result<Vec<Run>> {
        SqliteStore::runs(self, filter)
    }
    fn run(&self, id: &str) -> Result<Option<Run>> {
        SqliteStore::run(self, id)
    }
    fn max_seqs(&self, run_id: &str) -> Result<(i64, i64)> {
        SqliteStore::max_seqs(self, run_id)
    }
    fn open_steps(&self, run_id: &str) -> Result<Vec<(String, String, crate::StepStatus)>> {
        SqliteStore::open_steps(self, run_id)
    }
    fn settled_steps(&self, run_id: &str) -> Result<Vec<(String, bool, Option<String>)>> {
        SqliteStore::settled_steps(self, run_id)
    }
    fn children(&self, run_id: &str) -> Result<Vec<Run>> {
        SqliteStore::children(self, run_id)
    }
    fn steps(&self, run_id: &str) -> Result<Vec<Step>> {
        SqliteStore::steps(self, run_id)
    }
    fn current_steps(&self, run_id: &str) -> Result<Vec<crate::CurrentStep>> {
        SqliteStore::current_steps(self, run_id)
    }
    fn step(&self, id: &str) -> Result<Option<Step>> {
        SqliteStore::step(self, id)
    }
    fn step_contexts(&self, run_id: &str, seq: i64) -> Result<Vec<(i64, String)>> {
        SqliteStore::step_contexts(self, run_id, seq)
    }
    fn transitions(&self, run_id: &str) -> Result<Vec<Transition>> {
        SqliteStore::transitions(self, run_id)
    }
    fn events(&self, run_id: &str) -> Result<Vec<CustomEvent>> {
        SqliteStore::events(self, run_id)
    }
    fn waiting(&self, filter: &RunFilter) -> Result<Vec<Run>> {
        SqliteStore::waiting(self, filter)
    }
    fn due_timers(&self, now_ms: i64) -> Result<Vec<Timer>> {
        SqliteStore::due_timers(self, now_ms)
    }
    fn timers(&self, run_id: &str) -> Result<Vec<Timer>> {
        SqliteStore::timers(self, run_id)
    }
    fn pending_events(&self, run_id: &str) -> Result<Vec<PendingEvent>> {
        SqliteStore::pending_events(self, run_id)
    }
    fn latest_version(&self, name: &str) -> Result<Option<i64>> {
        SqliteStore::latest_version(self, name)
    }
    fn definition(&self, name: &str, version: Option<i64>) -> Result<Option<Definition>> {
        SqliteStore::definition(self, name, version)
    }
    fn run_list(&self, query: &RunQuery) -> Result<Vec<RunSummary>> {
        SqliteStore::run_list(self, query)
    }
    fn data_version(&self) -> Result<i64> {
        SqliteStore::data_version(self)
    }
}
