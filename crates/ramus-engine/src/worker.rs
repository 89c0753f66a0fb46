//! A worker of the Rust engine ([`Engine::work`](crate::Engine::work)): it claims what
//! needs a holder on the store (queued runs by aged priority, stored runs whose holder
//! stopped, whose timer fell due or that received an event; the claims are
//! [`EngineCore::claim_work`]) and runs them in its engine, as a Node worker does.
//!
//! ```no_run
//! # async fn demo(engine: &ramus_engine::Engine) -> Result<(), ramus_engine::EngineError> {
//! use ramus_engine::worker::WorkOptions;
//! let worker = engine.work(WorkOptions { concurrency: 50, ..WorkOptions::default() })?;
//! // … until the process should stop taking work:
//! worker.stop().await;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{oneshot, Notify};

use crate::driver::Msg;
use crate::engine::{RunHandle, StartOptions, Target};
use crate::engine_core::EngineCore;
use crate::error::EngineError;

/// How a worker takes work.
#[derive(Clone, Debug)]
pub struct WorkOptions {
    /// How many runs it holds at once.
    pub concurrency: usize,
    /// Only runs of these definitions (all when `None`).
    pub names: Option<Vec<String>>,
    /// How often it looks for work while it has free slots.
    pub poll_interval: Duration,
    /// Waiting this long raises a queued run's priority by one.
    pub aging: Duration,
}

impl Default for WorkOptions {
    fn default() -> WorkOptions {
        WorkOptions {
            concurrency: 10,
            names: None,
            poll_interval: Duration::from_millis(200),
            aging: Duration::from_secs(60),
        }
    }
}

/// What a worker needs of its engine.
pub(crate) struct Host {
    pub(crate) tx: Sender<Msg>,
    pub(crate) core: Arc<EngineCore>,
    pub(crate) closed: Arc<AtomicBool>,
}

/// A running worker; [`Worker::stop`] ends it.
#[derive(Debug)]
pub struct Worker {
    stopping: Arc<AtomicBool>,
    wake: Arc<Notify>,
    running: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

/// How long a run this worker could not start is left to others.
const SKIP: Duration = Duration::from_secs(60);

impl Worker {
    pub(crate) fn spawn(host: Host, options: WorkOptions) -> Worker {
        let stopping = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(Notify::new());
        let running = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(work(
            host,
            options,
            Arc::clone(&stopping),
            Arc::clone(&wake),
            Arc::clone(&running),
        ));
        Worker {
            stopping,
            wake,
            running,
            task,
        }
    }

    /// How many runs it holds now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// Look for work now rather than at the next poll.
    pub fn poll(&self) {
        self.wake.notify_one();
    }

    /// Stop taking work. The runs it took go on in the engine (until they end, or the
    /// engine closes and hands them back); this returns once it no longer claims.
    ///
    /// Unlike a Node worker, a Rust worker does not hand resting machines back yet: a
    /// machine waiting for an event keeps its slot until it ends, so give it a
    /// `concurrency` above the machines that may rest at once. Claim and start errors are
    /// not reported; a run it could not start is left to other workers for a minute.
    pub async fn stop(self) {
        self.stopping.store(true, Ordering::Release);
        self.wake.notify_one();
        let _ = self.task.await;
    }
}

async fn request<T>(
    tx: &Sender<Msg>,
    msg: impl FnOnce(oneshot::Sender<Result<T, EngineError>>) -> Msg,
) -> Result<T, EngineError> {
    let (reply, rx) = oneshot::channel();
    tx.send(msg(reply))
        .map_err(|_| EngineError::Invalid("the engine is closed".into()))?;
    rx.await
        .map_err(|_| EngineError::Invalid("the engine is closed".into()))?
}

/// Whether a queued run's start failed for good (its input or definition), not for want
/// of something another worker may have (a runner) or for a passing store error.
fn fails_queued(e: &EngineError) -> bool {
    matches!(
        e.code(),
        "ERR_INPUT_SCHEMA" | "ERR_NO_DEFINITION" | "ERR_DEFINITION_NOT_STORABLE" | "ERR_STORAGE"
    )
}

/// A claimed queued run's start, from its row ([`EngineCore::queued_start`]).
fn start_of(core: &EngineCore, run_id: &str) -> Result<(Target, StartOptions), EngineError> {
    let q = core.queued_start(run_id)?;
    let json = |t: Option<String>| t.and_then(|t| serde_json::from_str::<Value>(&t).ok());
    let options = StartOptions {
        input: json(q.input),
        context: json(q.context),
        tags: Some(q.tags),
        name: Some(q.name),
        info: json(q.info),
        version: q.definition.1,
        durability: None,
    };
    Ok((Target::Name(q.definition.0), options))
}

async fn work(
    host: Host,
    o: WorkOptions,
    stopping: Arc<AtomicBool>,
    wake: Arc<Notify>,
    running: Arc<AtomicUsize>,
) {
    let mut held: HashMap<String, RunHandle> = HashMap::new();
    let mut skip: HashMap<String, u64> = HashMap::new();
    while !stopping.load(Ordering::Acquire) && !host.closed.load(Ordering::Acquire) {
        held.retain(|_, h| h.outcome().is_none());
        let now = host.core.clock().now_ms();
        skip.retain(|_, until| *until > now);
        let free = o.concurrency.saturating_sub(held.len());
        if free > 0 {
            let core = Arc::clone(&host.core);
            let names = o.names.clone();
            let skipped: Vec<String> = skip.keys().cloned().collect();
            let aging = o.aging.as_millis() as i64;
            // A claim waits for the store's writer: off the runtime's threads.
            let claimed = tokio::task::spawn_blocking(move || {
                core.claim_work(names, free as u32, now as i64, aging, skipped)
            })
            .await
            .unwrap_or_else(|e| Err(EngineError::Invalid(format!("the claim panicked: {e}"))));
            for c in claimed.unwrap_or_default() {
                let started = if c.queued {
                    match start_of(&host.core, &c.run_id) {
                        Ok((target, options)) => {
                            let claimed = Some(c.run_id.clone());
                            request(&host.tx, |reply| Msg::Start {
                                target,
                                options,
                                claimed,
                                reply,
                            })
                            .await
                        }
                        Err(e) => Err(e),
                    }
                } else {
                    let run_id = c.run_id.clone();
                    request(&host.tx, |reply| Msg::Resume { run_id, reply }).await
                };
                match started {
                    Ok(h) => {
                        held.insert(c.run_id, h);
                    }
                    // What its row or definition makes impossible: it fails, as in Node,
                    // rather than coming back to every worker.
                    Err(e) if c.queued && fails_queued(&e) => {
                        let error =
                            serde_json::json!({ "name": "Error", "message": e.to_string() });
                        let _ = host
                            .core
                            .fail_queued(&c.run_id, error.to_string(), now as i64);
                    }
                    Err(_) => {
                        let _ = host.core.hand_back(&c.run_id);
                        skip.insert(c.run_id, now + SKIP.as_millis() as u64);
                    }
                }
            }
        }
        running.store(held.len(), Ordering::Relaxed);
        // Wake at the poll interval, when asked, or when a held run ends (a slot frees).
        let ends: Vec<RunHandle> = held.values().cloned().collect();
        let any_end = async move {
            if ends.is_empty() {
                std::future::pending::<()>().await;
            }
            let waits = ends.iter().map(|h| Box::pin(h.finished()));
            futures_select_any(waits).await;
        };
        tokio::select! {
            _ = tokio::time::sleep(o.poll_interval) => {}
            _ = wake.notified() => {}
            _ = any_end => {}
        }
    }
}

/// Resolve when the first of `futures` does.
async fn futures_select_any<F: std::future::Future + Unpin>(futures: impl Iterator<Item = F>) {
    let mut all: Vec<F> = futures.collect();
    std::future::poll_fn(|cx| {
        for f in all.iter_mut() {
            if std::pin::Pin::new(f).poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await
}
