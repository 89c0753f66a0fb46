//! WAL checkpoints, moved (mostly) off the commit path.
//!
//! SQLite's default runs a checkpoint inside the commit that pushes the WAL past 1000
//! pages: that commit copies the WAL into the database and `fsync`s both files. On this
//! shared 2-core VM an `fsync` takes 0.1 to 2 ms depending on the neighbours, and spread
//! over the commits in between, inline checkpoints made a durable step (one commit) cost
//! ~100 µs instead of ~30 when the machine was busy (the bench example's `bare` line
//! against a run with checkpoints disabled).
//!
//! Here a checkpoint cycle has two parts:
//!
//! 1. The bulk: once the WAL holds `threshold` pages, this thread runs a `PASSIVE`
//!    checkpoint on its own connection, copying and syncing what the WAL holds while the
//!    writer keeps committing (a passive checkpoint never blocks the writer). It runs
//!    again each time another `threshold` pages were committed meanwhile.
//! 2. The finish: the writer thread runs a last passive checkpoint itself, with no commit
//!    beside it, so the WAL ends fully copied and the next commit starts it over instead
//!    of growing it. Without this step a busy writer always stays ahead of a background
//!    checkpoint and the WAL grows without bound (measured: 8.6 MB after 400 commits with
//!    a threshold of 8 pages). The finish still pays two `fsync`s, so the
//!    writer does it when it has been idle for [`IDLE`], or at once when the WAL reaches
//!    `16 × threshold` pages under a load that never pauses.

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::wal::CheckpointMode;
use rusqlite::Connection;

use crate::store::lock;

/// How long the writer must have had nothing to do before it finishes a cycle.
pub(crate) const IDLE: Duration = Duration::from_millis(5);

/// The WAL size, in thresholds, at which the writer finishes a cycle without waiting to be
/// idle: bounds the WAL (16 000 pages, 64 MB with the defaults) under a load that never
/// pauses.
const HARD_CAP: i32 = 16;

/// Where the current cycle is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The WAL is below the threshold, or nobody asked yet.
    Idle,
    /// The bulk is asked for or running.
    Bulk,
    /// A bulk is done; the writer should finish when idle.
    Finish,
}

struct Flags {
    phase: Phase,
    stop: bool,
}

/// State shared by the writer and the checkpoint thread.
pub(crate) struct Signal {
    flags: Mutex<Flags>,
    wake: Condvar,
    /// Pages in the WAL after the writer's last commit, from its WAL hook.
    pub(crate) wal_pages: Arc<AtomicI32>,
    threshold: i32,
    /// How many WAL frames the last bulk had copied.
    backfilled: AtomicI32,
    /// Checkpoint cycles finished.
    pub(crate) done: AtomicU64,
}

impl Signal {
    /// Called by the writer after each group: start a bulk when the WAL is big enough,
    /// another when it grew by `threshold` since the last, and finish at the hard cap.
    pub(crate) fn after_commit(&self, writer: &Connection) {
        let pages = self.wal_pages.load(Ordering::Relaxed);
        if pages < self.threshold {
            return;
        }
        let mut flags = lock(&self.flags);
        match flags.phase {
            Phase::Idle => {
                flags.phase = Phase::Bulk;
                self.wake.notify_one();
            }
            Phase::Bulk => {}
            Phase::Finish if pages >= self.threshold.saturating_mul(HARD_CAP) => {
                drop(flags);
                self.finish(writer);
            }
            Phase::Finish => {
                let backfilled = self.backfilled.load(Ordering::Relaxed);
                if pages >= backfilled.saturating_add(self.threshold) {
                    flags.phase = Phase::Bulk;
                    self.wake.notify_one();
                }
            }
        }
    }

    /// Whether a bulk is done and the writer should finish the cycle when idle.
    pub(crate) fn finish_pending(&self) -> bool {
        lock(&self.flags).phase == Phase::Finish
    }

    /// Finish the cycle on the writer's connection (between two groups).
    pub(crate) fn finish(&self, writer: &Connection) {
        lock(&self.flags).phase = Phase::Idle;
        // On failure (another process's checkpoint holds the lock) the frames stay in the
        // WAL, where reads find them; the next commit starts a new cycle.
        if writer
            .wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE)
            .is_ok()
        {
            self.done.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The checkpoint thread and its signal.
pub(crate) struct Checkpointer {
    pub(crate) signal: Arc<Signal>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Start the thread on `conn`, a connection of its own to the database, for cycles
    /// that begin when the WAL holds `threshold` pages.
    pub(crate) fn start(conn: Connection, threshold: u32) -> std::io::Result<Checkpointer> {
        let signal = Arc::new(Signal {
            flags: Mutex::new(Flags {
                phase: Phase::Idle,
                stop: false,
            }),
            wake: Condvar::new(),
            wal_pages: Arc::new(AtomicI32::new(0)),
            threshold: i32::try_from(threshold).unwrap_or(i32::MAX),
            backfilled: AtomicI32::new(0),
            done: AtomicU64::new(0),
        });
        let shared = Arc::clone(&signal);
        let thread = std::thread::Builder::new()
            .name("ramus-store-checkpoint".into())
            .spawn(move || run(conn, &shared))?;
        Ok(Checkpointer {
            signal,
            thread: Some(thread),
        })
    }

    /// Stop the thread and wait for it (a checkpoint in progress finishes first).
    pub(crate) fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            lock(&self.signal.flags).stop = true;
            self.signal.wake.notify_one();
            let _ = thread.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(conn: Connection, signal: &Signal) {
    loop {
        {
            let mut flags = lock(&signal.flags);
            while flags.phase != Phase::Bulk && !flags.stop {
                flags = signal
                    .wake
                    .wait(flags)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if flags.stop {
                return;
            }
        }
        let result = conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE);
        let mut flags = lock(&signal.flags);
        match result {
            Ok((_, copied)) => {
                signal.backfilled.store(copied, Ordering::Relaxed);
                flags.phase = Phase::Finish;
            }
            // Back to idle: the writer's next commit asks again.
            Err(_) => flags.phase = Phase::Idle,
        }
    }
}
