//! The [`SqliteStore`]: a writer thread doing group commit, and a read connection.
//!
//! Writes never run on the caller's thread. Submissions queue on a bounded channel; the
//! writer thread takes everything queued, applies it in one transaction and commits once,
//! so N callers submitting together pay for one commit (group commit). Each submission
//! runs in its own savepoint, so a bad record (an update of a missing row) fails only its
//! own submission, never the unrelated records committed beside it.
//!
//! SQLite runs in WAL mode with `synchronous = NORMAL` by default: a commit is a `write()`
//! to the WAL, durable against a crash of the process (`kill -9`) but not against a power
//! loss, which needs `synchronous = FULL` ([`Synchronous::Full`]) and costs an `fsync`
//! per group commit.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

use crate::checkpoint::{self, Checkpointer};
use crate::db::{Backend, Db, DbError, DbResult};
use crate::error::{Error, Result};
use crate::model::{
    CustomEvent, Definition, DefinitionVersion, Kind, NewDefinition, PendingEvent, Record, Run,
    RunFilter, RunQuery, RunStatus, RunSummary, Stats, Step, Timer, Transition,
};
use crate::{read, schema, write};

/// How much the store writes and when a write counts as done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// The writer commits as soon as anything is queued, and [`SqliteStore::submit_sync`] returns
    /// once its records are committed: a run that waits for it never starts a step before
    /// the record of the last one is on disk.
    Sync,
    /// The writer waits up to [`Options::flush_interval`] to gather records into one
    /// commit. For observability writes, whose loss in a crash costs only the last few
    /// milliseconds of log.
    Batched,
    /// Nothing is written: submissions are dropped. Reads still see what the database held.
    Off,
}

/// How SQLite makes a commit durable (`PRAGMA synchronous`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Synchronous {
    /// A commit survives a crash of the process, not always a power loss. No `fsync` per
    /// commit in WAL mode; the default.
    Normal,
    /// A commit survives a power loss: one `fsync` per group commit.
    Full,
}

/// Options of [`SqliteStore::open_with`].
#[derive(Clone, Debug)]
pub struct Options {
    /// See [`Durability`].
    pub durability: Durability,
    /// In [`Durability::Batched`], how long the first queued record may wait for others
    /// before the writer commits. 20 ms by default.
    pub flush_interval: Duration,
    /// See [`Synchronous`].
    pub synchronous: Synchronous,
    /// How long a write or read waits for a lock held by another process before failing.
    /// 5 s by default.
    pub busy_timeout: Duration,
    /// How many submissions may wait for the writer before `submit` blocks: backpressure
    /// instead of unbounded memory when callers outrun the disk. 65 536 by default.
    pub queue_capacity: usize,
    /// The writer commits once a group holds this many records, even before the flush
    /// interval ends, so one transaction stays bounded. 8 192 by default.
    pub max_group_records: usize,
    /// How many records may wait for the writer before `submit` waits for their commit:
    /// a producer that outruns the disk is slowed to its pace rather than letting the
    /// backlog (what a crash would lose, and memory) grow. 65 536 by default.
    pub max_backlog_records: usize,
    /// Once the WAL holds this many pages, a background thread checkpoints it (copies it
    /// into the database) so commits never pay for that copy and its `fsync`s. 0 leaves
    /// checkpoints to SQLite, which runs them inside a commit. 1000 by default.
    pub checkpoint_pages: u32,
}

impl Options {
    /// The defaults with `durability`.
    pub fn new(durability: Durability) -> Self {
        Options {
            durability,
            flush_interval: Duration::from_millis(20),
            synchronous: Synchronous::Normal,
            busy_timeout: Duration::from_secs(5),
            queue_capacity: 65_536,
            max_group_records: 8_192,
            max_backlog_records: 65_536,
            checkpoint_pages: 1000,
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options::new(Durability::Batched)
    }
}

type Reply<T> = SyncSender<Result<T>>;

/// A connection of the store: the writer's, or the reader's.
pub(crate) type Conn = Box<dyn Backend>;

/// What the writer thread calls once a [`SqliteStore::submit_then`] submission committed
/// (or failed).
pub type OnCommit = Box<dyn FnOnce(Result<()>) + Send>;

/// An [`OnCommit`] called exactly once: with the commit's result, or with
/// [`Error::Closed`] when its message is dropped unanswered (the writer stopped, or the
/// queue was gone), so no caller waits for an answer that cannot come.
struct Answer(Option<OnCommit>);

impl Answer {
    fn call(mut self, result: Result<()>) {
        if let Some(done) = self.0.take() {
            done(result)
        }
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if let Some(done) = self.0.take() {
            done(Err(Error::Closed))
        }
    }
}

/// What the writer thread is asked to do.
enum Msg {
    Records(Vec<Record>),
    Then(Vec<Record>, Answer),
    Flush(Reply<()>),
    Definition(NewDefinition, Reply<DefinitionVersion>),
    Lease(crate::LeaseOp, Reply<crate::LeaseAnswer>),
    Prune {
        older_than: i64,
        status: Option<RunStatus>,
        reply: Reply<usize>,
    },
    Close(Reply<()>),
}

impl Msg {
    /// Whether a caller waits on this message, so the writer must not hold it back for
    /// the flush interval.
    fn urgent(&self) -> bool {
        !matches!(self, Msg::Records(_))
    }

    fn record_count(&self) -> usize {
        match self {
            Msg::Records(r) | Msg::Then(r, _) => r.len(),
            Msg::Definition(..) | Msg::Lease(..) | Msg::Prune { .. } => 1,
            Msg::Flush(_) | Msg::Close(_) => 0,
        }
    }
}

/// State shared by the store and its writer thread.
#[derive(Default)]
struct Shared {
    commits: AtomicU64,
    submissions: AtomicU64,
    records: AtomicU64,
    /// The first failure of a [`SqliteStore::submit`] since the last flush: nobody waited for
    /// that submission, so the next `flush` or `close` reports it.
    deferred: Mutex<Option<Error>>,
    /// Set (with an unpark) when a caller waits, to end a `Batched` gathering window.
    urgent: AtomicBool,
    /// Records queued and not yet taken by the writer; a window also ends when they fill
    /// a group, so a fast producer never stalls on a full queue for a whole interval.
    queued: AtomicUsize,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a connection leaves it usable (SQLite state is not torn by a
    // Rust panic between calls), so poisoning is not a reason to fail every later call.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An open database: submit records, read them back.
///
/// `SqliteStore` is `Send + Sync`; share it in an `Arc`. Dropping it closes it (flushing what is
/// queued); call [`SqliteStore::close`] to see the errors of that last flush.
pub struct SqliteStore {
    path: String,
    durability: Durability,
    /// `None` in [`Durability::Off`]: there is no writer.
    queue: Option<SyncSender<Msg>>,
    /// The writer thread, to wake it from a `Batched` gathering window; `None` in `Sync`,
    /// whose writer never waits for more.
    gathering: Option<std::thread::Thread>,
    max_group_records: usize,
    max_backlog_records: usize,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// The read connection. For `:memory:` it is the writer's own connection, because a
    /// second connection to `:memory:` would open a different, empty database.
    reader: Arc<Mutex<Conn>>,
    shared: Arc<Shared>,
    /// Runs WAL checkpoints off the commit path; `None` for `:memory:`, in `Off`, or with
    /// `checkpoint_pages` 0.
    checkpointer: Mutex<Option<Checkpointer>>,
    /// Commits announced by the database (PostgreSQL `NOTIFY`); `None` on SQLite, whose
    /// `data_version` tells the same.
    version: Option<Arc<AtomicI64>>,
    /// What else lives as long as the store (PostgreSQL's listener thread).
    companion: Mutex<Option<Box<dyn Send>>>,
}

fn thread_error(path: &str, which: &str, e: std::io::Error) -> Error {
    Error::open(
        path,
        rusqlite::Error::InvalidParameterName(format!("cannot start the {which} thread: {e}")),
    )
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn connect(path: &str, options: &Options, memory: bool) -> Result<Connection> {
    let err = |e| Error::open(path, e);
    let conn = if memory {
        Connection::open_in_memory()
    } else {
        Connection::open(path)
    }
    .map_err(err)?;
    conn.busy_timeout(options.busy_timeout).map_err(err)?;
    if !memory {
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(err(rusqlite::Error::InvalidParameterName(format!(
                "journal_mode is {mode}, WAL could not be enabled"
            ))));
        }
    }
    let synchronous = match options.synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(err)?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(err)?;
    // Every write and read shape stays prepared (the default cache of 16 is smaller
    // than the number of statements).
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path`, or a private in-memory one for
    /// `":memory:"`, or the PostgreSQL database of a `postgres://` URL (see
    /// [`open_postgres`](SqliteStore::open_postgres)), with the default [`Options`] and
    /// `durability`. Applies the missing schema migrations.
    pub fn open(path: &str, durability: Durability) -> Result<SqliteStore> {
        SqliteStore::open_with(path, Options::new(durability))
    }

    /// Open with explicit options.
    ///
    /// In [`Durability::Off`] the schema is still created or migrated (reads need it), but
    /// no record is ever written.
    pub fn open_with(path: &str, options: Options) -> Result<SqliteStore> {
        #[cfg(feature = "postgres")]
        if crate::pg::is_postgres(path) {
            return SqliteStore::open_postgres(path, options);
        }
        let memory = path == ":memory:";
        let mut conn = connect(path, &options, memory)?;
        schema::migrate(&conn, now_ms())?;
        if options.durability == Durability::Off {
            return SqliteStore::assemble(path, &options, None, Box::new(conn), None, None);
        }
        let mut checkpointer = None;
        if !memory && options.checkpoint_pages > 0 {
            let started =
                Checkpointer::start(connect(path, &options, false)?, options.checkpoint_pages)
                    .map_err(|e| thread_error(path, "checkpoint", e))?;
            let wal_pages = Arc::clone(&started.signal.wal_pages);
            // Replaces SQLite's automatic checkpoint (itself a WAL hook): only note the
            // size; the writer acts on it between groups, after answering its callers.
            conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: i32| {
                wal_pages.store(pages, Ordering::Relaxed);
                Ok(())
            }))
            .map_err(|e| Error::open(path, e))?;
            checkpointer = Some(started);
        }
        let reader = if memory {
            None
        } else {
            let reader = connect(path, &options, false)?;
            reader
                .pragma_update(None, "query_only", true)
                .map_err(|e| Error::open(path, e))?;
            Some(Box::new(reader) as Conn)
        };
        SqliteStore::assemble(path, &options, reader, Box::new(conn), checkpointer, None)
    }

    /// A store on open connections: `writer` (which also reads when there is no `reader`),
    /// with its writer thread started unless nothing is written. `version` counts commits
    /// seen by a database that announces them (PostgreSQL's notifications).
    pub(crate) fn assemble(
        path: &str,
        options: &Options,
        reader: Option<Conn>,
        writer: Conn,
        checkpointer: Option<Checkpointer>,
        version: Option<Arc<AtomicI64>>,
    ) -> Result<SqliteStore> {
        let shared = Arc::new(Shared::default());
        let conn = Arc::new(Mutex::new(writer));
        let reader = match reader {
            Some(reader) => Arc::new(Mutex::new(reader)),
            None => Arc::clone(&conn),
        };
        if options.durability == Durability::Off {
            return Ok(SqliteStore {
                path: path.to_owned(),
                durability: options.durability,
                queue: None,
                gathering: None,
                max_group_records: options.max_group_records,
                max_backlog_records: options.max_backlog_records,
                writer: Mutex::new(None),
                reader,
                shared,
                checkpointer: Mutex::new(None),
                version,
                companion: Mutex::new(None),
            });
        }
        let (queue, rx) = mpsc::sync_channel(options.queue_capacity.max(1));
        let writer = Writer {
            conn,
            checkpoint: checkpointer.as_ref().map(|c| Arc::clone(&c.signal)),
            rx,
            shared: Arc::clone(&shared),
            wait: (options.durability == Durability::Batched).then_some(options.flush_interval),
            max_group_records: options.max_group_records.max(1),
        };
        let handle = std::thread::Builder::new()
            .name("ramus-store-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| thread_error(path, "writer", e))?;
        Ok(SqliteStore {
            path: path.to_owned(),
            durability: options.durability,
            queue: Some(queue),
            gathering: (options.durability == Durability::Batched).then(|| handle.thread().clone()),
            max_group_records: options.max_group_records.max(1),
            max_backlog_records: options.max_backlog_records,
            writer: Mutex::new(Some(handle)),
            reader,
            shared,
            checkpointer: Mutex::new(checkpointer),
            version,
            companion: Mutex::new(None),
        })
    }

    /// Keep `companion` alive until the store closes.
    pub(crate) fn set_listener(&mut self, companion: impl Send + 'static) {
        *lock(&self.companion) = Some(Box::new(companion));
    }

    /// The path the store was opened with.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The store's durability.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The writer's counters: commits, submissions and records applied so far.
    pub fn stats(&self) -> Stats {
        let checkpointer = lock(&self.checkpointer);
        let checkpoint = checkpointer.as_ref().map(|c| &c.signal);
        Stats {
            commits: self.shared.commits.load(Ordering::Relaxed),
            submissions: self.shared.submissions.load(Ordering::Relaxed),
            records: self.shared.records.load(Ordering::Relaxed),
            checkpoints: checkpoint.map_or(0, |s| s.done.load(Ordering::Relaxed)),
            wal_pages: checkpoint.map_or(0, |s| s.wal_pages.load(Ordering::Relaxed) as u64),
        }
    }

    /// Queue `msg`. In `Batched`, end the writer's gathering window when a caller waits
    /// for the answer or when a group's worth of records is queued; otherwise the writer is
    /// not woken, which keeps the caller's cost to a queue push (no syscall per submit).
    fn send(&self, msg: Msg) -> Result<()> {
        let Some(queue) = &self.queue else {
            return Ok(());
        };
        let urgent = msg.urgent();
        let records = msg.record_count();
        let before = self.shared.queued.fetch_add(records, Ordering::Relaxed);
        let full = before < self.max_group_records && before + records >= self.max_group_records;
        match queue.try_send(msg) {
            Ok(()) => {
                if urgent || full {
                    self.wake_writer();
                }
                Ok(())
            }
            Err(TrySendError::Full(msg)) => {
                // The writer must drain before this caller can go on: no window may hold
                // it back.
                self.wake_writer();
                queue.send(msg).map_err(|_| Error::Closed)
            }
            Err(TrySendError::Disconnected(_)) => Err(Error::Closed),
        }
    }

    /// End the writer's `Batched` gathering window, if it is in one.
    fn wake_writer(&self) {
        if let Some(writer) = &self.gathering {
            self.shared.urgent.store(true, Ordering::Release);
            writer.unpark();
        }
    }

    /// Send `make(reply)` to the writer and wait for its answer. `None` in `Off`.
    fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Msg) -> Option<Result<T>> {
        self.queue.as_ref()?;
        let (reply, answer) = mpsc::sync_channel(1);
        if let Err(e) = self.send(make(reply)) {
            return Some(Err(e));
        }
        // A dropped reply sender means the writer exited without answering (closed, or
        // it panicked).
        Some(answer.recv().unwrap_or(Err(Error::Closed)))
    }

    /// Queue `records` and return at once. They are applied in order and atomically, and
    /// committed with the next group commit (at once in `Sync`, within the flush interval
    /// in `Batched`). A failure is reported by the next [`flush`](SqliteStore::flush) or
    /// [`close`](SqliteStore::close). Blocks only while the queue is full.
    pub fn submit(&self, records: Vec<Record>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if self.shared.queued.load(Ordering::Relaxed) > self.max_backlog_records {
            // Far behind: this submission waits for its commit, which drains the backlog.
            return self.submit_sync(records);
        }
        self.send(Msg::Records(records))
    }

    /// Queue `records` and wait until they are committed, or until their submission
    /// failed. Callers submitting at the same time share one commit.
    pub fn submit_sync(&self, records: Vec<Record>) -> Result<()> {
        // A submission whose commit answers through a channel this thread waits on.
        self.ask(|reply| {
            Msg::Then(
                records,
                Answer(Some(Box::new(move |r| {
                    let _ = reply.send(r);
                }))),
            )
        })
        .unwrap_or(Ok(()))
    }

    /// Queue `records` and return at once; `done` is called on the writer thread once they
    /// are committed (or their submission failed). Submissions from many runs share one
    /// commit, without a thread waiting for each (what [`submit_sync`](Self::submit_sync)
    /// costs its caller). In `Off` (no writer), `done` is called now.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use ramus_store::{Durability, SqliteStore};
    /// let store = SqliteStore::open(":memory:", Durability::Sync).unwrap();
    /// let (tx, rx) = mpsc::channel();
    /// store.submit_then(Vec::new(), Box::new(move |r| tx.send(r.is_ok()).unwrap()));
    /// assert!(rx.recv().unwrap());
    /// ```
    pub fn submit_then(&self, records: Vec<Record>, done: OnCommit) {
        if self.queue.is_none() {
            done(Ok(()));
            return;
        }
        // A message that goes nowhere, or that a stopped writer drops, answers `Closed`.
        let _ = self.send(Msg::Then(records, Answer(Some(done))));
    }

    /// Wait until everything submitted before this call is committed. Returns the first
    /// failure of a [`submit`](SqliteStore::submit) since the last flush, if any.
    pub fn flush(&self) -> Result<()> {
        self.ask(Msg::Flush).unwrap_or(Ok(()))
    }

    /// Store a definition, as version 1 if the name is new, as the latest version's
    /// number if its content (see `docs/schema.md`: canonical JSON) equals the latest
    /// version's, else as the next version. Waits for the commit.
    ///
    /// In `Off` nothing is stored and the answer is the version the content would get.
    pub fn put_definition(
        &self,
        name: &str,
        kind: Kind,
        config: &str,
        now_ms: i64,
    ) -> Result<DefinitionVersion> {
        let def = NewDefinition {
            name: name.to_owned(),
            kind,
            config: config.to_owned(),
            created_at: now_ms,
        };
        if self.queue.is_none() {
            return write::resolve_definition(&**lock(&self.reader), &def).map(|(v, _)| v);
        }
        self.ask(|reply| Msg::Definition(def, reply))
            .unwrap_or(Err(Error::Closed))
    }

    /// Claim, renew or release run leases (see [`LeaseOp`](crate::LeaseOp)), in a write
    /// transaction of its own.
    pub fn lease(&self, op: crate::LeaseOp) -> Result<crate::LeaseAnswer> {
        if self.queue.is_none() {
            return crate::lease::apply(&**lock(&self.reader), &op);
        }
        self.ask(|reply| Msg::Lease(op, reply))
            .unwrap_or(Err(Error::Closed))
    }

    /// Delete the runs created before `older_than_ms` that have ended (`finished`, `error`,
    /// `cancelled`; or only those with `status`, if given, which may be one that has not
    /// ended), the runs started inside them, and all their steps, transitions, events,
    /// pending events and timers, in one transaction. Returns how many runs were deleted
    /// (0 in `Off`).
    pub fn prune(&self, older_than_ms: i64, status: Option<RunStatus>) -> Result<usize> {
        self.ask(|reply| Msg::Prune {
            older_than: older_than_ms,
            status,
            reply,
        })
        .unwrap_or(Ok(0))
    }

    /// Flush, stop the writer thread and wait for it. Returns the first failure of a
    /// [`submit`](SqliteStore::submit) since the last flush. Later writes fail with
    /// [`Error::Closed`]; reads keep working. Calling it again does nothing.
    pub fn close(&self) -> Result<()> {
        let Some(handle) = lock(&self.writer).take() else {
            self.give_back();
            return Ok(());
        };
        let result = self.ask(Msg::Close).unwrap_or(Ok(()));
        let joined = handle.join();
        // After the writer: its last commits may have asked for a checkpoint. Closing the
        // last connection checkpoints whatever is left.
        if let Some(checkpointer) = lock(&self.checkpointer).as_mut() {
            checkpointer.stop();
        }
        self.give_back();
        match (result, joined) {
            (Err(e), _) => Err(e),
            // The writer panicked after answering: later writes are lost, say so.
            (Ok(()), Err(_)) => Err(Error::Closed),
            (Ok(()), Ok(())) => Ok(()),
        }
    }

    /// A server's connections are few: a closed store gives its own back (reads connect
    /// again if they come). Also for a store that never wrote (`Off`).
    fn give_back(&self) {
        lock(&self.companion).take();
        lock(&self.reader).disconnect();
    }

    fn reader(&self) -> MutexGuard<'_, Conn> {
        lock(&self.reader)
    }

    /// Runs matching `filter`, newest first.
    pub fn runs(&self, filter: &RunFilter) -> Result<Vec<Run>> {
        read::runs(&**self.reader(), filter)
    }

    /// One run.
    pub fn run(&self, id: &str) -> Result<Option<Run>> {
        read::run(&**self.reader(), id)
    }

    /// Whether a worker would find a run to claim at `now` (see
    /// [`LeaseOp::ClaimWork`](crate::LeaseOp::ClaimWork)); a read, without the write lock.
    /// Schedules are not looked at (see `schedules`).
    pub fn work_ready(&self, names: Option<&[String]>, now: i64, skip: &[String]) -> Result<bool> {
        crate::lease::work_ready(&**self.reader(), names, now, skip)
    }

    /// Schedules (`engine.schedule`) by name; `due`: only those whose next tick came by
    /// then.
    pub fn schedules(&self, due: Option<i64>) -> Result<Vec<crate::ScheduleRow>> {
        crate::lease::schedules(&**self.reader(), due)
    }

    /// Every limit (`engine.limits`) with the slots held at `now`.
    pub fn limits(&self, now: i64) -> Result<Vec<crate::LimitUse>> {
        crate::limits::all(&**self.reader(), now)
    }

    /// Who holds a run's lease, and until when (ms), if anyone does (see `LeaseOp`). An
    /// expired lease is still shown: its holder stopped renewing it.
    pub fn lease_of(&self, id: &str) -> Result<Option<(String, i64)>> {
        read::lease(&**self.reader(), id)
    }

    /// The highest step and transition `seq` of a run (0 when none): where a restored run
    /// continues numbering.
    pub fn max_seqs(&self, run_id: &str) -> Result<(i64, i64)> {
        read::max_seqs(&**self.reader(), run_id)
    }

    /// The ids of a run's steps still `running` or `pending` (interrupted, after a crash).
    pub fn open_steps(&self, run_id: &str) -> Result<Vec<(String, String, crate::StepStatus)>> {
        read::open_steps(&**self.reader(), run_id)
    }

    /// Each finished or failed step of a run, in `seq` order: its node, whether it
    /// finished, and its output (or error). What a DAG restore keeps.
    pub fn settled_steps(&self, run_id: &str) -> Result<Vec<(String, bool, Option<String>)>> {
        read::settled_steps(&**self.reader(), run_id)
    }

    /// The runs started inside steps of `run_id` (child DAGs and machines), oldest first.
    pub fn children(&self, run_id: &str) -> Result<Vec<Run>> {
        read::children(&**self.reader(), run_id)
    }

    /// The steps of a run, in `seq` order.
    pub fn steps(&self, run_id: &str) -> Result<Vec<Step>> {
        read::steps(&**self.reader(), run_id)
    }

    /// The steps of a run that count (not set aside by a rerun), in `seq` order.
    pub fn current_steps(&self, run_id: &str) -> Result<Vec<crate::CurrentStep>> {
        read::current_steps(&**self.reader(), run_id)
    }

    /// One step, by id.
    pub fn step(&self, id: &str) -> Result<Option<Step>> {
        read::step(&**self.reader(), id)
    }

    /// `(seq, context)` of a run's machine steps up to `seq`, latest first (see
    /// [`Step::context`]).
    pub fn step_contexts(&self, run_id: &str, seq: i64) -> Result<Vec<(i64, String)>> {
        read::step_contexts(&**self.reader(), run_id, seq)
    }

    /// The transitions of a run, in `seq` order.
    pub fn transitions(&self, run_id: &str) -> Result<Vec<Transition>> {
        read::transitions(&**self.reader(), run_id)
    }

    /// The custom events of a run, oldest first.
    pub fn events(&self, run_id: &str) -> Result<Vec<CustomEvent>> {
        read::events(&**self.reader(), run_id)
    }

    /// Runs waiting for an event (status `waitingForEvent`) matching `filter`'s name, tags
    /// and limit, newest first. `filter.status` is ignored.
    pub fn waiting(&self, filter: &RunFilter) -> Result<Vec<Run>> {
        let filter = RunFilter {
            status: Some(RunStatus::WaitingForEvent),
            ..filter.clone()
        };
        read::runs(&**self.reader(), &filter)
    }

    /// Armed timers due at or before `now_ms`, in due order: what an engine that starts
    /// must fire first.
    pub fn due_timers(&self, now_ms: i64) -> Result<Vec<Timer>> {
        read::due_timers(&**self.reader(), now_ms)
    }

    /// Every timer of a run (armed and fired), in due order: what a restore re-arms.
    pub fn timers(&self, run_id: &str) -> Result<Vec<Timer>> {
        read::timers(&**self.reader(), run_id)
    }

    /// Events sent to a run and not delivered yet, oldest first.
    pub fn pending_events(&self, run_id: &str) -> Result<Vec<PendingEvent>> {
        read::pending_events(&**self.reader(), run_id)
    }

    /// The latest version of a definition, without reading its config.
    pub fn latest_version(&self, name: &str) -> Result<Option<i64>> {
        read::latest_version(&**self.reader(), name)
    }

    /// A definition: the given version, or the latest.
    pub fn definition(&self, name: &str, version: Option<i64>) -> Result<Option<Definition>> {
        read::definition(&**self.reader(), name, version)
    }

    /// The schema version of the database.
    pub fn schema_version(&self) -> Result<u32> {
        read::schema_version(&**self.reader())
    }

    /// The schema version of the Ramus database at `path`, read without opening it for
    /// writing; `None` when the file is not a Ramus database (no `meta` table). Lets a
    /// reader refuse a foreign SQLite file instead of migrating it into a Ramus one.
    pub fn probe(path: &str) -> Result<Option<u32>> {
        #[cfg(feature = "postgres")]
        if crate::pg::is_postgres(path) {
            return crate::pg::probe(path);
        }
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| Error::open(path, e))?;
        read::probe(&conn)
    }

    /// Runs matching `query`, newest first, with their step counts (the inspector's list).
    pub fn run_list(&self, query: &RunQuery) -> Result<Vec<RunSummary>> {
        read::run_list(&**self.reader(), query)
    }

    /// A number that changes whenever anything has been committed to the database since
    /// the last call saw it, by this store or by another process (SQLite's
    /// `PRAGMA data_version` on the read connection). Pollers compare it to skip work.
    pub fn data_version(&self) -> Result<i64> {
        if let Some(version) = &self.version {
            return Ok(version.load(Ordering::Acquire));
        }
        match self.reader().sqlite() {
            Some(conn) => read::data_version(conn),
            None => Ok(0),
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Whatever was queued is committed; nobody is left to hear about a failure.
        let _ = self.close();
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("durability", &self.durability)
            .field("stats", &self.stats())
            .finish()
    }
}

/// The writer thread: owns the write connection.
struct Writer {
    conn: Arc<Mutex<Conn>>,
    checkpoint: Option<Arc<checkpoint::Signal>>,
    rx: Receiver<Msg>,
    shared: Arc<Shared>,
    /// `Some(interval)` in `Batched`: how long to gather a group.
    wait: Option<Duration>,
    max_group_records: usize,
}

/// The answer owed to a caller once the group's fate is known.
enum Owed {
    Then(Answer, Result<()>),
    Definition(Reply<DefinitionVersion>, Result<DefinitionVersion>),
    Lease(Reply<crate::LeaseAnswer>, Result<crate::LeaseAnswer>),
    Count(Reply<usize>, Result<usize>),
    /// Flush and close answer with the deferred error, read after the commit.
    Flush(Reply<()>),
}

impl Owed {
    /// Turn a success into `err`: the transaction that held it did not commit.
    fn fail(&mut self, err: &Error) {
        match self {
            Owed::Then(_, r @ Ok(_)) => *r = Err(err.clone()),
            Owed::Definition(_, r @ Ok(_)) => *r = Err(err.clone()),
            Owed::Count(_, r @ Ok(_)) => *r = Err(err.clone()),
            Owed::Lease(_, r @ Ok(_)) => *r = Err(err.clone()),
            _ => {}
        }
    }
}

impl Writer {
    fn run(self) {
        // Whether the last group was cut at `max_group_records`: the writer is behind.
        let mut behind = false;
        loop {
            let Some(first) = self.first() else {
                return;
            };
            let mut records = self.took(&first);
            let mut group = vec![first];
            // Wait for company unless the writer is behind: then it is the bottleneck and
            // every pause would only grow the queue.
            if let (Some(interval), false, false) = (self.wait, group[0].urgent(), behind) {
                self.gather(interval);
            }
            // Whatever queued meanwhile (during the window, or while the last group
            // committed) joins this group: this is what turns concurrent `submit_sync` and
            // `submit_then` calls into one commit.
            while records < self.max_group_records {
                match self.rx.try_recv() {
                    Ok(msg) => {
                        records += self.took(&msg);
                        group.push(msg);
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            behind = records >= self.max_group_records;
            if self.commit_group(group) {
                return;
            }
            if let Some(signal) = &self.checkpoint {
                if let Some(conn) = lock(&self.conn).sqlite() {
                    signal.after_commit(conn);
                }
            }
        }
    }

    /// The first message of the next group. `None` once every `SqliteStore` handle is gone
    /// without a close message.
    fn first(&self) -> Option<Msg> {
        loop {
            match &self.checkpoint {
                // A checkpoint cycle waits for a pause to finish in (see `checkpoint`).
                Some(signal) if signal.finish_pending() => {
                    match self.rx.recv_timeout(checkpoint::IDLE) {
                        Ok(msg) => return Some(msg),
                        Err(RecvTimeoutError::Timeout) => {
                            if let Some(conn) = lock(&self.conn).sqlite() {
                                signal.finish(conn);
                            }
                        }
                        Err(RecvTimeoutError::Disconnected) => return None,
                    }
                }
                _ => return self.rx.recv().ok(),
            }
        }
    }

    /// Note that `msg` left the queue; returns its record count.
    fn took(&self, msg: &Msg) -> usize {
        let records = msg.record_count();
        self.shared.queued.fetch_sub(records, Ordering::Relaxed);
        records
    }

    /// The `Batched` window: sleep until `interval` has passed or a caller ends it (see
    /// `SqliteStore::send`). Parking rather than waiting on the queue is what spares submitters
    /// a wake-up syscall per record.
    fn gather(&self, interval: Duration) {
        let deadline = Instant::now() + interval;
        loop {
            if self.shared.urgent.swap(false, Ordering::Acquire) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::park_timeout(left);
        }
    }

    fn defer(&self, err: Error) {
        let mut deferred = lock(&self.shared.deferred);
        if deferred.is_none() {
            *deferred = Some(err);
        }
    }

    /// Apply and commit one group, then answer its callers. Returns whether a close was
    /// in it.
    fn commit_group(&self, group: Vec<Msg>) -> bool {
        let guard = lock(&self.conn);
        let conn: &dyn Backend = &**guard;
        let writes = group
            .iter()
            .filter(|m| !matches!(m, Msg::Flush(_) | Msg::Close(_)))
            .count();
        let records: usize = group.iter().map(Msg::record_count).sum();
        let commit_error = |source| Error::commit(records, source);
        // Set when the group as a whole failed: BEGIN or COMMIT failed, or an error made
        // SQLite roll the transaction back by itself (disk full, I/O error).
        let mut group_error: Option<Error> = None;
        if writes > 0 {
            if let Err(e) = conn.begin() {
                group_error = Some(commit_error(e));
            }
        }

        let mut owed = Vec::with_capacity(group.len());
        let mut close = None;
        let mut batched_failure = None;
        // Counted into `Stats` only once the commit succeeded.
        let (mut applied_submissions, mut applied_records) = (0u64, 0u64);
        for msg in group {
            let failed = |e: &Option<Error>| e.clone().map_or(Ok(()), Err);
            match msg {
                Msg::Records(recs) => {
                    match failed(&group_error).and_then(|()| apply_submission(conn, &recs)) {
                        Ok(()) => {
                            applied_submissions += 1;
                            applied_records += recs.len() as u64;
                        }
                        Err(e) => {
                            batched_failure.get_or_insert(e);
                        }
                    }
                }
                Msg::Then(recs, done) => {
                    let result = failed(&group_error).and_then(|()| apply_submission(conn, &recs));
                    if result.is_ok() {
                        applied_submissions += 1;
                        applied_records += recs.len() as u64;
                    }
                    owed.push(Owed::Then(done, result));
                }
                Msg::Definition(def, reply) => {
                    let result = failed(&group_error)
                        .and_then(|()| atomic(conn, false, 1, |c| write::put_definition(c, &def)));
                    if result.is_ok() {
                        applied_submissions += 1;
                        applied_records += 1;
                    }
                    owed.push(Owed::Definition(reply, result));
                }
                Msg::Lease(op, reply) => {
                    let result = failed(&group_error)
                        .and_then(|()| atomic(conn, false, 1, |c| crate::lease::apply(c, &op)));
                    if result.is_ok() {
                        applied_submissions += 1;
                        applied_records += 1;
                    }
                    owed.push(Owed::Lease(reply, result));
                }
                Msg::Prune {
                    older_than,
                    status,
                    reply,
                } => {
                    let result = failed(&group_error).and_then(|()| {
                        atomic(conn, false, 1, |c| write::prune(c, older_than, status))
                    });
                    if result.is_ok() {
                        applied_submissions += 1;
                        applied_records += 1;
                    }
                    owed.push(Owed::Count(reply, result));
                }
                Msg::Flush(reply) => owed.push(Owed::Flush(reply)),
                Msg::Close(reply) => close = Some(reply),
            }
            // A failed statement normally undoes only itself (or its savepoint), but some
            // errors make SQLite roll back the whole transaction; what follows would then
            // run outside any transaction, one autocommit at a time, so the group stops.
            if writes > 0 && group_error.is_none() && !conn.in_transaction() {
                group_error = Some(commit_error(DbError::from(
                    rusqlite::Error::InvalidParameterName(
                        "the database rolled the transaction back after an error".into(),
                    ),
                )));
            }
        }

        if writes > 0 {
            if group_error.is_none() {
                if let Err(e) = conn.commit() {
                    group_error = Some(commit_error(e));
                }
            }
            if group_error.is_some() && conn.in_transaction() {
                let _ = conn.rollback();
            }
        }
        drop(guard);

        match &group_error {
            None if writes > 0 => {
                self.shared.commits.fetch_add(1, Ordering::Relaxed);
                self.shared
                    .submissions
                    .fetch_add(applied_submissions, Ordering::Relaxed);
                self.shared
                    .records
                    .fetch_add(applied_records, Ordering::Relaxed);
            }
            None => {}
            Some(err) => {
                for o in &mut owed {
                    o.fail(err);
                }
                batched_failure.get_or_insert_with(|| err.clone());
            }
        }
        if let Some(err) = batched_failure {
            self.defer(err);
        }
        for o in owed {
            // A caller that gave up waiting (its thread ended) is not an error here.
            let _ = match o {
                Owed::Then(answer, result) => {
                    answer.call(result);
                    true
                }
                Owed::Definition(reply, result) => reply.send(result).is_ok(),
                Owed::Lease(reply, result) => reply.send(result).is_ok(),
                Owed::Count(reply, result) => reply.send(result).is_ok(),
                Owed::Flush(reply) => reply.send(self.take_deferred()).is_ok(),
            };
        }
        match close {
            Some(reply) => {
                let _ = reply.send(self.take_deferred());
                true
            }
            None => false,
        }
    }

    fn take_deferred(&self) -> Result<()> {
        match lock(&self.shared.deferred).take() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

/// Run a statement without parameters from the statement cache: the transaction and
/// savepoint statements run once or twice per group, so parsing them each time would be
/// measurable.
fn exec(conn: &dyn Db, sql: &str) -> DbResult<()> {
    conn.execute(sql, &[]).map(|_| ())
}

/// Apply one submission atomically: all of its records or none.
fn apply_submission(conn: &dyn Backend, records: &[Record]) -> Result<()> {
    atomic(conn, records.len() > 1, records.len(), |c| {
        records
            .iter()
            .try_for_each(|record| write::apply(c, record))
    })
}

/// Run `f` in a savepoint when it writes `several` statements that must all hold, or on a
/// database whose failed statement spoils the transaction: on failure only what it did is
/// undone and the group's transaction goes on. A deadlock PostgreSQL broke by failing this
/// part is retried a few times before it counts as a failure.
fn atomic<T>(
    conn: &dyn Backend,
    several: bool,
    records: usize,
    f: impl Fn(&dyn Db) -> Result<T>,
) -> Result<T> {
    if !(several || conn.savepoint_always()) {
        return f(conn);
    }
    let mut tries = 0;
    loop {
        exec(conn, "SAVEPOINT submission").map_err(|e| Error::commit(records, e))?;
        match f(conn) {
            Ok(v) => {
                let _ = exec(conn, "RELEASE submission");
                return Ok(v);
            }
            Err(e) => {
                let _ = exec(conn, "ROLLBACK TO submission");
                let _ = exec(conn, "RELEASE submission");
                tries += 1;
                if !(e.is_retryable() && tries < 5) {
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `fsync: true` in the engines is this option: a connection opened with it runs
    /// with that level.
    #[test]
    fn synchronous_option_reaches_the_connection() {
        let dir = std::env::temp_dir().join(format!("ramus-sync-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (level, expected) in [(Synchronous::Normal, 1), (Synchronous::Full, 2)] {
            let path = dir.join(format!("{expected}.sqlite"));
            let mut options = Options::new(Durability::Batched);
            options.synchronous = level;
            let conn = connect(path.to_str().unwrap(), &options, false).unwrap();
            let got: i64 = conn
                .pragma_query_value(None, "synchronous", |r| r.get(0))
                .unwrap();
            assert_eq!(got, expected, "{level:?}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
