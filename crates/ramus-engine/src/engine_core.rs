//! What an engine does with its store besides writing runs: definitions and their
//! versions, the plan that resumes a stored run, events sent to runs nobody runs.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use ramus_core::{DagRun, MachineSnapshot, RunPhase};
use ramus_store::{
    CurrentStep, Kind, LeaseAnswer, LeaseOp, PendingEvent, Record, Run, RunFilter, RunStatus,
    StepStatus, StepUpdate, Store,
};

use crate::clock::Clock;
use crate::def::{RunDef, RunnerRef};
use crate::error::EngineError;
use crate::ids::new_id;
use crate::runtime::{Continued, Durable, DurableRow, Restore, RunOptions};
use crate::sink::MachineValues;
use crate::writer::Fence;
use std::sync::atomic::{AtomicI64, Ordering};

/// Turns a stored config (JSON) into a definition; the engine's caller supplies it so the
/// engine does not depend on how configs are parsed.
pub type Parser = dyn Fn(Kind, &str) -> Result<RunDef, EngineError> + Send + Sync;

/// An engine's store and what it knows about it.
pub struct EngineCore {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    runners: Mutex<HashSet<String>>,
    loaded: Mutex<HashMap<(String, i64), Arc<RunDef>>>,
    parser: Box<Parser>,
    /// This engine as a lease holder: unique per engine, readable in messages.
    owner: String,
    lease_ms: AtomicI64,
    /// The top-level runs this engine holds, with their tokens.
    held: Mutex<HashMap<String, i64>>,
    /// Slots of limits this engine's steps hold now (renewed with its leases).
    slots: AtomicI64,
    /// Schedules whose definition this engine cannot load, until when it leaves them be.
    schedule_skip: Mutex<HashMap<String, i64>>,
}

/// How long a silent holder keeps its runs by default (ms).
pub const DEFAULT_LEASE_MS: i64 = 30_000;

/// This machine's name, as lease holders are described (`engine … (pid 7 on <host>)`).
fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Whether a lease holder was a process on this machine that no longer runs. Only where
/// that can be told (`/proc`); anywhere else a holder counts as alive until its lease
/// expires. A stopped process, or a new one that reuses the pid, counts as alive.
fn holder_is_gone(owner: &str) -> bool {
    let Some(rest) = owner.split(" (pid ").nth(1) else {
        return false;
    };
    let Some((pid, host_part)) = rest.split_once(" on ") else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    host_part.strip_suffix(')') == Some(host().as_str())
        && pid != std::process::id()
        && std::path::Path::new("/proc/self").exists()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Limits as `engine.limits` takes them: `{ key: { concurrency?, rate? } }`, where `rate`
/// is `'<count>/<unit>'` (unit `s`, `sec`, `second`, `m`, `min`, `minute`, `h`, `hour`,
/// `d`, `day`, optionally with a number: `'10/5s'`) or `{ count, per }` (ms). A key set
/// to `null` has no limit any more.
///
/// ```
/// let limits = ramus_engine::parse_limits(r#"{"llm":{"concurrency":4,"rate":"60/min"}}"#).unwrap();
/// assert_eq!(limits[0].rate, Some((60, 60_000)));
/// ```
pub fn parse_limits(json: &str) -> Result<Vec<ramus_store::Limit>, EngineError> {
    let bad = |m: String| EngineError::Invalid(format!("engine.limits: {m}"));
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| bad(format!("not JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("takes an object of limits by key".into()))?;
    let mut out = Vec::with_capacity(obj.len());
    for (key, spec) in obj {
        if key.is_empty() {
            return Err(bad("a key must be a non-empty string".into()));
        }
        if spec.is_null() {
            out.push(ramus_store::Limit {
                key: key.clone(),
                concurrency: None,
                rate: None,
            });
            continue;
        }
        let spec = spec.as_object().ok_or_else(|| {
            bad(format!(
                "'{key}' must be {{ concurrency?, rate? }} or null, got {spec}"
            ))
        })?;
        if let Some(other) = spec.keys().find(|k| *k != "concurrency" && *k != "rate") {
            return Err(bad(format!(
                "'{key}' has an unknown field '{other}' (limits take concurrency and rate)"
            )));
        }
        let concurrency = match spec.get("concurrency") {
            None | Some(serde_json::Value::Null) => None,
            Some(c) => Some(c.as_u64().map(|c| c as i64).ok_or_else(|| {
                bad(format!(
                    "'{key}'.concurrency must be a whole number >= 0, got {c}"
                ))
            })?),
        };
        let rate = match spec.get("rate") {
            None | Some(serde_json::Value::Null) => None,
            Some(r) => Some(parse_rate(r).ok_or_else(|| {
                bad(format!(
                    "'{key}'.rate must be like '60/min', '10/5s' or {{ count, per }} (ms), got {r}"
                ))
            })?),
        };
        out.push(ramus_store::Limit {
            key: key.clone(),
            concurrency,
            rate,
        });
    }
    Ok(out)
}

fn parse_rate(r: &serde_json::Value) -> Option<(i64, i64)> {
    if let Some(o) = r.as_object() {
        let count = o.get("count")?.as_u64().filter(|&c| c >= 1)?;
        let per = o.get("per")?.as_u64().filter(|&p| p >= 1)?;
        return Some((count as i64, per as i64));
    }
    let (count, per) = r.as_str()?.split_once('/')?;
    let count: i64 = count.trim().parse().ok().filter(|&c| c >= 1)?;
    let per = per.trim();
    let split = per
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(per.len());
    let (n, unit) = per.split_at(split);
    let n: f64 = if n.is_empty() { 1.0 } else { n.parse().ok()? };
    let ms = match unit.trim() {
        "ms" => 1.0,
        "s" | "sec" | "second" | "seconds" => 1_000.0,
        "m" | "min" | "minute" | "minutes" => 60_000.0,
        "h" | "hour" | "hours" => 3_600_000.0,
        "d" | "day" | "days" => 86_400_000.0,
        _ => return None,
    };
    let per_ms = (n * ms).round() as i64;
    (per_ms >= 1).then_some((count, per_ms))
}

/// A run to enqueue ([`EngineCore::enqueue`]); JSON values as text.
#[derive(Clone, Debug, Default)]
pub struct Enqueue {
    /// Its name (default: the definition's).
    pub name: Option<String>,
    /// Its input.
    pub input: Option<String>,
    /// Its context.
    pub context: Option<String>,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its info.
    pub info: Option<String>,
    /// Higher runs first (default 0).
    pub priority: i64,
    /// Not before this time (ms, on the engine's clock).
    pub run_at: Option<i64>,
    /// A second enqueue (or start) with this key returns the first run.
    pub idempotency_key: Option<String>,
    /// Runs with this key run one at a time.
    pub concurrency_key: Option<String>,
}

/// How a claimed queued run starts ([`EngineCore::queued_start`]); JSON values as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedStart {
    /// The stored definition and version it runs.
    pub definition: (String, Option<i64>),
    /// Its name.
    pub name: String,
    /// Its input.
    pub input: Option<String>,
    /// Its context.
    pub context: Option<String>,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its info.
    pub info: Option<String>,
}

/// What [`EngineCore::enqueue`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enqueued {
    /// The run (the existing one when `created` is false).
    pub run_id: String,
    /// Whether this call created it.
    pub created: bool,
}

/// How a stored run continues in this process.
pub struct ResumePlan {
    /// Its row.
    pub row: Run,
    /// Its definition.
    pub def: Arc<RunDef>,
    /// What it continues from.
    pub continuation: Continuation,
}

/// Stored runs waiting to be started again by the step of a node or state, oldest first.
pub type Nested = HashMap<String, VecDeque<Run>>;

/// What a stored run continues from: its restore, context, numbering, the events sent to
/// it, and the runs its interrupted steps had started.
pub struct Continuation {
    /// What the executor continues from.
    pub restore: Restore,
    /// The context (JSON text).
    pub context: Option<String>,
    /// Its highest step and transition numbers.
    pub seqs: (i64, i64),
    /// Events sent to it while nobody ran it, oldest first.
    pub pending: Vec<PendingEvent>,
    /// Runs started inside its interrupted steps, by node or state name, oldest first:
    /// the step that runs again continues them when it starts them again.
    pub nested: Nested,
    /// The lease its writes are fenced with: a top-level run's claim (a nested run's
    /// writer takes its parent's).
    pub fence: Option<Fence>,
}

impl Continuation {
    /// Make `opts` continue the stored run `row_id` from here, writing to `store` (`sync`
    /// or batched): its context, restored executor, nested runs and row numbering. With
    /// `face`, the values a face restores go along (`opts.continued`, events sent meanwhile
    /// included); otherwise those events are returned, for the caller to deliver.
    pub fn continue_run(
        self,
        row_id: &str,
        store: Arc<dyn Store>,
        sync: bool,
        face: bool,
        opts: &mut RunOptions,
    ) -> Vec<PendingEvent> {
        let mut pending = self.pending;
        if face {
            let to_face = std::mem::take(&mut pending);
            opts.continued = Some(Continued::of(
                row_id,
                &self.restore,
                self.context.clone(),
                to_face,
            ));
        }
        opts.context = self.context;
        opts.restore = Some(self.restore);
        opts.nested = self.nested;
        opts.durable = Some(Durable {
            store,
            sync,
            fence: self.fence,
            row: DurableRow::Resume {
                id: row_id.to_owned(),
                seqs: self.seqs,
            },
        });
        pending
    }
}

/// How an open step ends when its run resumes: `pending` is a fork's step standing for the
/// one it runs again (see [`EngineCore::fork`]); any other was interrupted.
fn interrupted_record(id: String, status: StepStatus, now: i64) -> Record {
    let error = if status == StepStatus::Pending {
        STANDS_FOR
    } else {
        INTERRUPTED
    };
    Record::StepUpdate(StepUpdate {
        id,
        status: StepStatus::Cancelled,
        output: None,
        error: Some(error.to_owned()),
        started_at: None,
        ended_at: Some(now),
        cached: false,
    })
}

/// A run's armed timers `(timer, due, row id)`, by the run's own timer ids.
fn armed_timers(store: &dyn Store, run_id: &str) -> Result<Vec<(u64, u64, String)>, EngineError> {
    Ok(store
        .timers(run_id)?
        .into_iter()
        .filter(|t| t.fired_at.is_none())
        .filter_map(|t| {
            let timer = t
                .payload
                .as_deref()
                .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
                .and_then(|p| p.get("timer").and_then(|v| v.as_u64()))?;
            Some((timer, t.due_at.max(0) as u64, t.id))
        })
        .collect())
}

/// Where a stored DAG's nodes are: finished (with outputs), failed for good (with errors),
/// or between attempts. A node whose last attempt failed and that has an armed retry timer
/// waits for it; one whose attempt was interrupted runs that attempt again (a crash does
/// not use up an attempt). The timeouts of interrupted attempts are disarmed: the attempt
/// that runs again has its own.
fn dag_restore(
    store: &dyn Store,
    run_id: &str,
    def: &RunDef,
    steps: Vec<CurrentStep>,
) -> Result<Restore, EngineError> {
    // Steps a rerun set aside are not among `steps`: their nodes run again. By node (dense:
    // a large DAG's restore is a pass over its rows, not a map per row): the last attempt's
    // row, how many attempts failed, whether one finished.
    let n = def.len();
    let ids: Vec<Option<u32>> = steps.iter().map(|s| def.node_id(&s.node)).collect();
    let mut last: Vec<Option<usize>> = vec![None; n];
    let mut errors = vec![0u32; n];
    let mut done = vec![false; n];
    for (i, s) in steps.iter().enumerate() {
        let Some(id) = ids[i] else {
            continue;
        };
        match s.status {
            StepStatus::Finished => done[id as usize] = true,
            StepStatus::Error => errors[id as usize] += 1,
            _ => {}
        }
        last[id as usize] = Some(i);
    }
    let last_of = |node: u32| last[node as usize].map(|i| &steps[i]);
    // A node cancelled with `cancelNode` stays cancelled (an interrupted step's
    // `Interrupted` cancel runs again).
    let cancelled: Vec<u32> = (0..n as u32)
        .filter(|&node| {
            last_of(node).is_some_and(|s| {
                s.status == StepStatus::Cancelled
                    && s.value.as_deref() == Some(crate::sink::NODE_CANCELLED)
            })
        })
        .collect();
    let dag = def.dag();
    let mut timers = Vec::new();
    let mut stale = Vec::new();
    let mut waiting: HashSet<u32> = HashSet::new();
    for (timer, due, row) in armed_timers(store, run_id)? {
        let node = dag.map(|d| DagRun::timer_node(d, timer));
        match node {
            Some(Some(node)) if DagRun::is_retry_timer(timer) && !done[node as usize] => {
                waiting.insert(node);
                timers.push((timer, due, row));
            }
            _ => stale.push(Record::TimerCancelled { id: row }),
        }
    }
    if !stale.is_empty() {
        store.submit(stale)?;
    }
    let mut attempts = Vec::new();
    let mut failed = Vec::new();
    for node in (0..n as u32).filter(|&k| errors[k as usize] > 0 && !done[k as usize]) {
        match last_of(node) {
            Some(s) if s.status == StepStatus::Error && !waiting.contains(&node) => {
                failed.push((node, s.value.clone()));
            }
            _ => attempts.push((node, errors[node as usize])),
        }
    }
    // The outputs, moved out of the rows rather than copied.
    let finished = steps
        .into_iter()
        .zip(ids)
        .filter(|(s, _)| s.status == StepStatus::Finished)
        .filter_map(|(s, id)| Some((id?, s.value)))
        .collect();
    Ok(Restore::Dag {
        finished,
        failed,
        attempts,
        timers,
        cancelled,
    })
}

/// Build a stored run's continuation from its records (`def` is its definition).
/// Interrupted steps are recorded as cancelled; runs started inside them are kept for the
/// step that runs again; runs left running inside steps that ended will never be started
/// again, and end (cancelled).
pub fn continuation(
    store: &dyn Store,
    row: &Run,
    def: &RunDef,
    now: i64,
) -> Result<Continuation, EngineError> {
    let run_id = row.id.as_str();
    // A DAG restore reads its current steps anyway, and its open steps are among them: one
    // pass over a large run's rows, not two.
    let current = match def.kind() {
        Kind::Dag => Some(store.current_steps(run_id)?),
        Kind::Machine => None,
    };
    let interrupted = match &current {
        Some(steps) => steps
            .iter()
            .filter(|s| matches!(s.status, StepStatus::Running | StepStatus::Pending))
            .map(|s| (s.id.clone(), s.node.clone(), s.status))
            .collect(),
        None => store.open_steps(run_id)?,
    };
    if !interrupted.is_empty() {
        store.submit(
            interrupted
                .iter()
                .map(|(id, _, status)| interrupted_record(id.clone(), *status, now))
                .collect(),
        )?;
    }
    let mut nested: Nested = HashMap::new();
    for child in store.children(run_id)? {
        let step = child.parent_step_id.as_deref().unwrap_or_default();
        match interrupted.iter().find(|(id, _, _)| id == step) {
            Some((_, node, _)) => nested.entry(node.clone()).or_default().push_back(child),
            None if !child.status.is_terminal() => end_tree(store, &child.id, now)?,
            None => {}
        }
    }
    let snapshot: Option<serde_json::Value> = row
        .snapshot
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok());
    let context = snapshot
        .as_ref()
        .and_then(|s| s.get("context"))
        .filter(|c| !c.is_null())
        .map(|c| c.to_string());
    let not_resumable =
        |why: String| EngineError::NotResumable(format!("Run {run_id} ({}) {why}", row.name));
    let restore = match current {
        Some(steps) => dag_restore(store, run_id, def, steps)?,
        None => {
            let snap = snapshot
                .as_ref()
                .ok_or_else(|| not_resumable("has no snapshot to resume from".into()))?;
            let core: MachineSnapshot = snap
                .get("core")
                .cloned()
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| {
                    not_resumable(format!("has a snapshot this version cannot read: {e}"))
                })?
                .ok_or_else(|| not_resumable("has no snapshot to resume from".into()))?;
            let values: MachineValues = serde_json::from_value(snap.clone()).unwrap_or_default();
            let timers = armed_timers(store, run_id)?;
            Restore::Machine {
                snapshot: core,
                values,
                context: context.clone(),
                timers,
            }
        }
    };
    Ok(Continuation {
        restore,
        context,
        seqs: store.max_seqs(run_id)?,
        pending: store.pending_events(run_id)?,
        nested,
        fence: None,
    })
}

/// End a stored run that will not continue, with the runs started inside it: its open
/// steps and itself are recorded as cancelled.
pub fn end_tree(store: &dyn Store, run_id: &str, now: i64) -> Result<(), EngineError> {
    for child in store.children(run_id)? {
        if !child.status.is_terminal() {
            end_tree(store, &child.id, now)?;
        }
    }
    let mut records: Vec<Record> = store
        .open_steps(run_id)?
        .into_iter()
        .map(|(id, _, status)| interrupted_record(id, status, now))
        .collect();
    let mut u = ramus_store::RunUpdate::status(run_id, RunStatus::Cancelled, now);
    u.error = Some(CHILD_INTERRUPTED.to_owned());
    u.ended_at = Some(now);
    records.push(Record::RunUpdate(u));
    store.submit(records)?;
    Ok(())
}

/// The error a fork's standing step ends with (the step that started the nested run forked).
const STANDS_FOR: &str = r#"{"name":"Forked","message":"stood for the step of the run forked from, which the fork ran again to continue the nested run forked inside it"}"#;
/// The error a step interrupted by a crash ends with.
const INTERRUPTED: &str = r#"{"name":"Interrupted","message":"the process stopped while this step ran; it runs again on resume"}"#;
const CHILD_INTERRUPTED: &str = r#"{"name":"Interrupted","message":"the process stopped while this run ran, and the step that started it did not start it again"}"#;

impl EngineCore {
    /// An engine on `store`, with `parser` for stored configs.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, parser: Box<Parser>) -> EngineCore {
        let id = new_id(clock.now_ms());
        EngineCore {
            store,
            clock,
            runners: Mutex::new(HashSet::new()),
            loaded: Mutex::new(HashMap::new()),
            parser,
            owner: format!(
                "engine {} (pid {} on {})",
                &id[id.len() - 12..],
                std::process::id(),
                host()
            ),
            lease_ms: AtomicI64::new(DEFAULT_LEASE_MS),
            held: Mutex::new(HashMap::new()),
            slots: AtomicI64::new(0),
            schedule_skip: Mutex::new(HashMap::new()),
        }
    }

    /// This engine as the holder of run leases.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// How long a lease lasts without renewal (ms).
    pub fn lease_ms(&self) -> i64 {
        self.lease_ms.load(Ordering::Relaxed)
    }

    /// Set how long a lease lasts without renewal; renew more often than that.
    pub fn set_lease_ms(&self, ms: i64) {
        self.lease_ms.store(ms.max(1), Ordering::Relaxed);
    }

    fn schedule_skip(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.schedule_skip.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The first lease of a top-level run this engine starts at `now` (see
    /// [`RunRow::lease`](crate::RunRow::lease)); it is held from then on.
    pub fn first_lease(&self, run_id: &str, now: i64) -> (String, i64) {
        self.held().insert(run_id.to_owned(), 1);
        (self.owner.clone(), now.saturating_add(self.lease_ms()))
    }

    /// Claim a stored run at `now`: its fence, or who holds it. A holder that was a
    /// process on this machine which no longer exists (killed, crashed) holds nothing: its
    /// runs are taken at once rather than when its lease expires.
    pub fn claim(&self, run_id: &str, now: i64) -> Result<Fence, EngineError> {
        let until = now.saturating_add(self.lease_ms());
        let op = |dead: Option<String>| LeaseOp::Claim {
            run_id: run_id.to_owned(),
            owner: self.owner.clone(),
            dead,
            now,
            until,
        };
        let mut answer = self.store.lease(op(None))?;
        if let LeaseAnswer::Held { owner, .. } = &answer {
            if holder_is_gone(owner) {
                answer = self.store.lease(op(Some(owner.clone())))?;
            }
        }
        match answer {
            LeaseAnswer::Claimed { token } => {
                self.held().insert(run_id.to_owned(), token);
                Ok(Fence {
                    run_id: run_id.to_owned(),
                    owner: self.owner.clone(),
                    token,
                })
            }
            LeaseAnswer::Held { owner, expires_at } => Err(EngineError::LeaseHeld {
                run_id: run_id.to_owned(),
                holder: owner,
                expires_at,
            }),
            _ => Err(EngineError::Invalid("unexpected answer to a claim".into())),
        }
    }

    /// Extend the leases of the runs this engine holds to `now` plus the lease; returns
    /// those another engine took over meanwhile (their writes are refused from now on).
    pub fn renew(&self, now: i64) -> Result<Vec<String>, EngineError> {
        let runs: Vec<String> = self.held().keys().cloned().collect();
        if runs.is_empty() && self.slots.load(Ordering::Relaxed) == 0 {
            return Ok(Vec::new());
        }
        let answer = self.store.lease(LeaseOp::Renew {
            owner: self.owner.clone(),
            runs,
            now,
            until: now.saturating_add(self.lease_ms()),
        })?;
        let LeaseAnswer::Renewed { lost } = answer else {
            return Ok(Vec::new());
        };
        let mut held = self.held();
        for r in &lost {
            held.remove(r);
        }
        Ok(lost)
    }

    /// Put a run of the stored definition `def` in the queue (see [`Enqueue`]), or find
    /// the run its idempotency key already names. With `claim`, a run it creates is held
    /// by this engine at once (`start` with an idempotency key): [`EngineCore::fence_of`]
    /// then gives its fence. `now`: the time on the run's clock (ms).
    pub fn enqueue(
        &self,
        def: &RunDef,
        e: Enqueue,
        claim: bool,
        now: i64,
    ) -> Result<Enqueued, EngineError> {
        let row = self.queued_row(def, e, claim, now)?;
        let answer = self.store.lease(LeaseOp::Enqueue(Box::new(row)))?;
        match answer {
            LeaseAnswer::Enqueued {
                run_id,
                created,
                token,
            } => {
                if let Some(token) = token {
                    self.held().insert(run_id.clone(), token);
                }
                Ok(Enqueued { run_id, created })
            }
            _ => Err(EngineError::Invalid(
                "unexpected answer to an enqueue".into(),
            )),
        }
    }

    /// The row that queues a run of `def` (`claim`: held by this engine from the start).
    fn queued_row(
        &self,
        def: &RunDef,
        e: Enqueue,
        claim: bool,
        now: i64,
    ) -> Result<ramus_store::QueuedRun, EngineError> {
        let Some(definition) = def.stored.clone() else {
            return Err(EngineError::DefinitionUse(format!(
                "Definition '{}' cannot be enqueued: a queued run is started by a worker from a stored definition; name registered runners instead of inline run functions",
                def.name
            )));
        };
        let until = now.saturating_add(self.lease_ms());
        Ok(ramus_store::QueuedRun {
            id: new_id(now.max(0) as u64),
            name: e.name.unwrap_or_else(|| def.name.clone()),
            kind: def.kind(),
            definition,
            input: e.input,
            context: e.context,
            tags: e.tags,
            info: e.info,
            priority: e.priority,
            run_at: e.run_at,
            idempotency_key: e.idempotency_key,
            concurrency_key: e.concurrency_key,
            created_at: now,
            claim: claim.then(|| (self.owner.clone(), until)),
        })
    }

    /// How a claimed queued run starts: its definition (name, version) and the options its
    /// row holds (JSON texts; the context sits in the row's snapshot until it starts).
    pub fn queued_start(&self, run_id: &str) -> Result<QueuedStart, EngineError> {
        let row = self.store.run(run_id)?.ok_or_else(|| {
            EngineError::NoRun(run_id.to_owned(), self.store.location().to_owned())
        })?;
        let definition = row.definition_name.clone().ok_or_else(|| {
            EngineError::NotResumable(format!(
                "Run {run_id} ({}) has no stored definition to start from",
                row.name
            ))
        })?;
        let context = row
            .snapshot
            .as_deref()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
            .and_then(|s| {
                s.get("context")
                    .filter(|c| !c.is_null())
                    .map(|c| c.to_string())
            });
        Ok(QueuedStart {
            definition: (definition, row.definition_version),
            name: row.name,
            input: row.input,
            context,
            tags: row.tags,
            info: row.info,
        })
    }

    /// Claim up to `limit` runs that need a worker at `now` (see
    /// [`LeaseOp::ClaimWork`]; `skip`: runs this engine could not start): stored runs to
    /// resume (`queued: false`) and queued runs to start. An idle store is looked at with a
    /// read, not a write transaction. They are held from here on; [`EngineCore::fence_of`] gives a queued run's
    /// fence for its start.
    pub fn claim_work(
        &self,
        names: Option<Vec<String>>,
        limit: u32,
        now: i64,
        aging_ms: i64,
        skip: Vec<String>,
    ) -> Result<Vec<ramus_store::Claimed>, EngineError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Never its own live runs: a claim would take them from under their steps.
        let mut skip = skip;
        skip.extend(self.held().keys().cloned());
        let ticked = self.tick_schedules(now, names.as_deref())?;
        if ticked == 0 && !self.store.work_ready(names.as_deref(), now, &skip)? {
            return Ok(Vec::new());
        }
        let answer = self.store.lease(LeaseOp::ClaimWork {
            owner: self.owner.clone(),
            names,
            limit,
            now,
            until: now.saturating_add(self.lease_ms()),
            aging_ms,
            skip,
        })?;
        let LeaseAnswer::Work(claimed) = answer else {
            return Err(EngineError::Invalid("unexpected answer to a claim".into()));
        };
        let mut held = self.held();
        for c in &claimed {
            held.insert(c.run_id.clone(), c.token);
        }
        Ok(claimed)
    }

    /// Create or replace the schedule `name`: a run of the stored definition `e` names
    /// (`definition`, its latest version at each tick) at every tick of `cron` in
    /// `timezone`, enqueued for a worker. The same cron and time zone keep its stored next
    /// tick (a due one still runs). Returns its next tick (ms), `None` when the expression
    /// has none.
    pub fn schedule(
        &self,
        name: &str,
        definition: &str,
        cron: &str,
        timezone: Option<String>,
        e: Enqueue,
        now: i64,
    ) -> Result<Option<i64>, EngineError> {
        let parsed = crate::cron::Cron::parse(cron, timezone.as_deref())?;
        // Checked now: a schedule of a definition that cannot run would fail every tick.
        self.load(definition, None)?;
        let next = parsed.next_after(now);
        let answer = self
            .store
            .lease(LeaseOp::Schedule(Box::new(ramus_store::ScheduleRow {
                name: name.to_owned(),
                definition_name: definition.to_owned(),
                cron: cron.to_owned(),
                timezone,
                input: e.input,
                context: e.context,
                tags: e.tags,
                priority: e.priority,
                next_at: next,
                created_at: now,
                updated_at: now,
            })))?;
        match answer {
            LeaseAnswer::Scheduled { next } => Ok(next),
            _ => Err(EngineError::Invalid(
                "unexpected answer to a schedule".into(),
            )),
        }
    }

    /// Remove the schedule `name`; the runs it started stay.
    pub fn unschedule(&self, name: &str) -> Result<(), EngineError> {
        self.store.lease(LeaseOp::Unschedule {
            name: name.to_owned(),
        })?;
        Ok(())
    }

    /// Enqueue the runs of the schedules (of the definitions `names`, or all) whose tick
    /// came by `now`, each tick once however many workers try (the first to move its
    /// `next_at` on enqueues it). Ticks missed while no worker ran are not made up: one
    /// run, then the next tick after `now`. Returns how many runs it enqueued.
    pub fn tick_schedules(&self, now: i64, names: Option<&[String]>) -> Result<usize, EngineError> {
        let mut made = 0;
        for s in self.store.schedules(Some(now))? {
            let Some(due) = s.next_at else { continue };
            if names.is_some_and(|n| !n.contains(&s.definition_name)) {
                continue;
            }
            if self
                .schedule_skip()
                .get(&s.name)
                .is_some_and(|&until| until > now)
            {
                continue;
            }
            let next = crate::cron::Cron::parse(&s.cron, s.timezone.as_deref())
                .ok()
                .and_then(|c| c.next_after(now));
            let def = match self.load(&s.definition_name, None) {
                Ok(def) => def,
                // Not loadable here (a runner this engine lacks): left to other workers,
                // and not looked at again here for a minute.
                Err(e) if !matches!(e, EngineError::NoDefinition(_)) => {
                    self.schedule_skip()
                        .insert(s.name.clone(), now.saturating_add(60_000));
                    continue;
                }
                // Its definition is gone: the tick passes without a run.
                Err(_) => {
                    self.store.lease(LeaseOp::Tick {
                        name: s.name.clone(),
                        due,
                        next,
                        run: None,
                    })?;
                    continue;
                }
            };
            let e = Enqueue {
                input: s.input,
                context: s.context,
                tags: s.tags,
                priority: s.priority,
                idempotency_key: Some(format!("schedule:{}:{due}", s.name)),
                ..Enqueue::default()
            };
            let Ok(run) = self.queued_row(&def, e, false, now) else {
                continue;
            };
            let answer = self.store.lease(LeaseOp::Tick {
                name: s.name.clone(),
                due,
                next,
                run: Some(Box::new(run)),
            })?;
            if matches!(answer, LeaseAnswer::Enqueued { created: true, .. }) {
                made += 1;
            }
        }
        Ok(made)
    }

    /// The fence of a run this engine holds.
    pub fn fence_of(&self, run_id: &str) -> Option<Fence> {
        self.held().get(run_id).map(|&token| Fence {
            run_id: run_id.to_owned(),
            owner: self.owner.clone(),
            token,
        })
    }

    /// Hand one held run back (a worker lets an idle run go, or stops): another process may
    /// take it at once. Its writes must have been committed before.
    pub fn hand_back(&self, run_id: &str) -> Result<(), EngineError> {
        self.held().remove(run_id);
        self.store.lease(LeaseOp::Release {
            owner: self.owner.clone(),
            runs: vec![run_id.to_owned()],
        })?;
        Ok(())
    }

    /// A claimed queued run that cannot start here (its definition no longer loads): it
    /// ends as failed with `error` (JSON text) at `now`, so no worker claims it again.
    pub fn fail_queued(&self, run_id: &str, error: String, now: i64) -> Result<(), EngineError> {
        let mut u = ramus_store::RunUpdate::status(run_id, RunStatus::Error, now);
        u.error = Some(error);
        u.ended_at = Some(now);
        let mut records = Vec::with_capacity(2);
        if let Some(f) = self.fence_of(run_id) {
            records.push(f.record());
        }
        records.push(Record::RunUpdate(u));
        self.store.submit_sync(records)?;
        self.let_go(run_id);
        Ok(())
    }

    /// Set limits shared by every process on the store (see [`ramus_store::Limit`]); keys
    /// not named keep theirs.
    pub fn set_limits(&self, limits: Vec<ramus_store::Limit>, now: i64) -> Result<(), EngineError> {
        self.store.lease(LeaseOp::SetLimits { limits, now })?;
        Ok(())
    }

    /// Take one slot of the limit `key` at `now` for a step waiting as `waiter` (one id
    /// per wait; higher `priority` waiters are granted first, then the longest waiting):
    /// `Ok(None)` when taken (give it back with [`EngineCore::release_slot`]), else
    /// `Ok(Some(retry_in))`: all slots are held or others wait before it (`None`: try when
    /// one is given back), or the rate allows the next in `retry_in` ms.
    pub fn acquire_slot(
        &self,
        key: &str,
        waiter: &str,
        priority: i64,
        now: i64,
    ) -> Result<Option<Option<i64>>, EngineError> {
        let answer = self.store.lease(LeaseOp::Acquire {
            key: key.to_owned(),
            owner: self.owner.clone(),
            waiter: waiter.to_owned(),
            priority,
            now,
            until: now.saturating_add(self.lease_ms()),
        })?;
        match answer {
            LeaseAnswer::Acquired { granted: true, .. } => {
                self.slots.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
            LeaseAnswer::Acquired { retry_in, .. } => Ok(Some(retry_in)),
            _ => Err(EngineError::Invalid(
                "unexpected answer to an acquire".into(),
            )),
        }
    }

    /// A step stopped waiting for a slot without taking one (it was cancelled).
    pub fn stop_waiting(&self, waiter: &str) -> Result<(), EngineError> {
        self.store.lease(LeaseOp::StopWaiting {
            waiter: waiter.to_owned(),
        })?;
        Ok(())
    }

    /// Give back a slot of `key` a step of this engine held.
    pub fn release_slot(&self, key: &str) -> Result<(), EngineError> {
        self.slots.fetch_sub(1, Ordering::Relaxed);
        self.store.lease(LeaseOp::ReleaseSlot {
            key: key.to_owned(),
            owner: self.owner.clone(),
        })?;
        Ok(())
    }

    /// Whether this engine holds the run (it is live here).
    pub fn holds(&self, run_id: &str) -> bool {
        self.held().contains_key(run_id)
    }

    /// A held run ended, or is no longer live here: its lease is not renewed any more.
    pub fn let_go(&self, run_id: &str) {
        self.held().remove(run_id);
    }

    /// Hand back every lease this engine holds (it closes).
    pub fn release_all(&self) -> Result<(), EngineError> {
        // Always: a step may stand in a limit's line without holding a slot.
        self.slots.store(0, Ordering::Relaxed);
        self.store.lease(LeaseOp::DropSlots {
            owner: self.owner.clone(),
        })?;
        let runs: Vec<String> = self.held().drain().map(|(r, _)| r).collect();
        if !runs.is_empty() {
            self.store.lease(LeaseOp::Release {
                owner: self.owner.clone(),
                runs,
            })?;
        }
        Ok(())
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The engine's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Runner (and condition) keys registered by the driver; definitions naming others
    /// are refused.
    pub fn register(&self, keys: impl IntoIterator<Item = String>) {
        let mut r = self.runners.lock().unwrap_or_else(|e| e.into_inner());
        r.extend(keys);
        // Loaded definitions were checked against the old registry.
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Check that every runner and condition a definition names is registered.
    pub fn check_runners(&self, def: &RunDef, what: &str) -> Result<(), EngineError> {
        let registered = self.runners.lock().unwrap_or_else(|e| e.into_inner());
        let known = || {
            let mut k: Vec<&str> = registered.iter().map(String::as_str).collect();
            k.sort_unstable();
            if k.is_empty() {
                "none".to_owned()
            } else {
                k.join(", ")
            }
        };
        // The DAGs of `map` nodes are checked once the registry is let go (each takes it).
        let mut maps = Vec::new();
        for (i, r) in def.runners.iter().enumerate() {
            let node = def.node_name(i as u32);
            match r {
                RunnerRef::Key { key, .. } if !registered.contains(key) => {
                    return Err(EngineError::UnknownRunner(format!(
                        "{what}: node '{node}' names runner '{key}', which is not registered in this engine (registered: {})",
                        known()
                    )))
                }
                RunnerRef::Inline => {
                    return Err(EngineError::DefinitionUse(format!(
                        "{what} cannot be stored: node '{node}' has an inline run function; name a registered runner instead (runner: 'key', args: {{…}})"
                    )))
                }
                RunnerRef::None if def.kind() == Kind::Dag => {
                    return Err(EngineError::UnknownRunner(format!(
                        "{what}: node '{node}' names runner 'undefined', which is not registered in this engine (registered: {})",
                        known()
                    )))
                }
                RunnerRef::Expand { key: Some(key) } if !registered.contains(key) => {
                    return Err(EngineError::UnknownRunner(format!(
                        "{what}: node '{node}' expands with runner '{key}', which is not registered in this engine (registered: {})",
                        known()
                    )))
                }
                RunnerRef::Expand { key: None } => {
                    return Err(EngineError::DefinitionUse(format!(
                        "{what} cannot be stored: node '{node}' has an inline expand function; name a registered runner that returns the definition instead (expand: 'key')"
                    )))
                }
                RunnerRef::Map { dag, .. } => maps.push((node, dag)),
                _ => {}
            }
        }
        if let Some(m) = def.machine() {
            for (t, key) in def.conditions.iter().enumerate() {
                if let Some(key) = key.as_ref().filter(|k| !registered.contains(*k)) {
                    let state = (0..m.len() as u32)
                        .find(|&s| m.transition_range(s).contains(&(t as u32)))
                        .map_or("", |s| m.state_name(s));
                    let event = m.event_name(m.transition(t as u32).event);
                    return Err(EngineError::UnknownRunner(format!(
                        "{what}: state '{state}' transition '{event}' condition names runner '{key}', which is not registered in this engine (registered: {})",
                        known()
                    )));
                }
            }
        }
        drop(registered);
        for (node, dag) in maps {
            let sub = RunDef::parse(dag, Some(Kind::Dag), true, None)?;
            self.check_runners(&sub, &format!("{what}, map of node '{node}'"))?;
        }
        Ok(())
    }

    /// Store a definition (checked by the caller's parser and against the registry);
    /// returns `(name, version, created)`.
    pub fn define(&self, kind: Kind, json: &str) -> Result<(String, i64, bool), EngineError> {
        let def = (self.parser)(kind, json)?;
        let what = format!("Definition '{}'", def.name);
        self.check_runners(&def, &what)?;
        let v = self
            .store
            .put_definition(&def.name, kind, json, self.clock.now_ms() as i64)?;
        Ok((v.name, v.version, v.created))
    }

    /// A stored definition, compiled once per version (and per registry change).
    pub fn load(&self, name: &str, version: Option<i64>) -> Result<Arc<RunDef>, EngineError> {
        let version = match version {
            Some(v) => v,
            None => self.store.latest_version(name)?.ok_or_else(|| {
                EngineError::NoDefinition(format!(
                    "No definition named '{name}' in {}",
                    self.store.location()
                ))
            })?,
        };
        let key = (name.to_owned(), version);
        if let Some(d) = self
            .loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(Arc::clone(d));
        }
        let stored = self.store.definition(name, Some(version))?.ok_or_else(|| {
            EngineError::NoDefinition(format!(
                "No version {version} of definition '{name}' in {}",
                self.store.location()
            ))
        })?;
        let mut def = (self.parser)(stored.kind, &stored.config)?;
        self.check_runners(&def, &format!("Definition '{name}' (version {version})"))?;
        def.stored = Some((name.to_owned(), version));
        let def = Arc::new(def);
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, Arc::clone(&def));
        Ok(def)
    }

    /// How a stored run continues here. Steps interrupted by the crash are recorded as
    /// cancelled (they run again); runs started inside them wait for the step that runs
    /// again to start them, and then continue from their own records.
    pub fn resume_plan(&self, run_id: &str, now: i64) -> Result<ResumePlan, EngineError> {
        let row = self.store.run(run_id)?.ok_or_else(|| {
            EngineError::NoRun(run_id.to_owned(), self.store.location().to_owned())
        })?;
        if row.status.is_terminal() {
            return Err(EngineError::NotResumable(format!(
                "Run {run_id} ({}) has already ended ({}); only runs that have not ended can be resumed",
                row.name, row.status
            )));
        }
        if row.status == RunStatus::Queued {
            return Err(EngineError::NotResumable(format!(
                "Run {run_id} ({}) is queued and has not started; a worker starts it (engine.work())",
                row.name
            )));
        }
        if let Some(parent) = &row.parent_run_id {
            return Err(EngineError::NotResumable(format!(
                "Run {run_id} ({}) was started inside run {parent}; resume that run, whose step starts it again",
                row.name
            )));
        }
        let (Some(name), Some(version)) = (&row.definition_name, row.definition_version) else {
            return Err(EngineError::NotResumable(format!(
                "Run {run_id} ({}) was started from a config with inline run functions, so it cannot be resumed; define it with registered runners (engine.define) to make its runs resumable",
                row.name
            )));
        };
        let def = self.load(name, Some(version))?;
        // Taken before anything is written: from here on no other engine runs it.
        let fence = self.claim(run_id, now)?;
        let mut continuation = continuation(self.store.as_ref(), &row, &def, now)?;
        continuation.fence = Some(fence);
        Ok(ResumePlan {
            row,
            def,
            continuation,
        })
    }

    /// The ids of the top-level runs that have not ended (optionally only those named
    /// `name`), in the order a process that starts resumes them: the earliest due timer
    /// first, then the oldest.
    pub fn resumable(&self, name: Option<&str>) -> Result<Vec<String>, EngineError> {
        let mut rows = Vec::new();
        for status in [
            RunStatus::Running,
            RunStatus::WaitingForEvent,
            RunStatus::Sleeping,
        ] {
            let filter = RunFilter {
                name: name.map(str::to_owned),
                status: Some(status),
                ..RunFilter::default()
            };
            rows.extend(
                self.store
                    .runs(&filter)?
                    .into_iter()
                    .filter(|r| r.parent_run_id.is_none()),
            );
        }
        let mut due = HashMap::new();
        for t in self.store.due_timers(i64::MAX)? {
            due.entry(t.run_id).or_insert(t.due_at);
        }
        rows.sort_by_key(|r| (due.get(&r.id).copied().unwrap_or(i64::MAX), r.created_at));
        Ok(rows.into_iter().map(|r| r.id).collect())
    }

    /// Store an event for a run nobody runs here (another process may, or a later
    /// `resume`). Returns the event id.
    pub fn send_stored(
        &self,
        run_id: &str,
        event_type: &str,
        data: Option<String>,
        queue: bool,
    ) -> Result<String, EngineError> {
        let row = self.store.run(run_id)?.ok_or_else(|| {
            EngineError::NoRun(run_id.to_owned(), self.store.location().to_owned())
        })?;
        if row.kind != Kind::Machine {
            return Err(EngineError::NotResumable(format!(
                "Run {run_id} ({}) is a DAG; only state machines take events",
                row.name
            )));
        }
        if row.status.is_terminal() {
            return Err(EngineError::NotResumable(format!(
                "Run {run_id} ({}) has already ended ({}); it takes no more events",
                row.name, row.status
            )));
        }
        self.record_event(run_id, event_type, data, queue, false)
    }

    /// Write an event sent to a run: pending, or already taken by a run live here (kept
    /// in the log). Waits for the commit, so another process polling the store sees it.
    pub fn record_event(
        &self,
        run_id: &str,
        event_type: &str,
        data: Option<String>,
        queue: bool,
        delivered: bool,
    ) -> Result<String, EngineError> {
        let now = self.clock.now_ms();
        let id = new_id(now);
        self.store
            .submit_sync(vec![Record::PendingEvent(PendingEvent {
                id: id.clone(),
                run_id: run_id.to_owned(),
                event_type: event_type.to_owned(),
                data,
                queue,
                created_at: now as i64,
                delivered_at: delivered.then_some(now as i64),
            })])?;
        Ok(id)
    }

    /// Write one event to many runs in one commit (`engine.sendWhere`): `(run, taken)`, where
    /// `taken` is a run live here that takes it at once (kept in the log); the others find
    /// it pending. Returns the event ids, in order.
    pub fn record_events(
        &self,
        runs: &[(String, bool)],
        event_type: &str,
        data: Option<String>,
        queue: bool,
    ) -> Result<Vec<String>, EngineError> {
        let now = self.clock.now_ms();
        let mut ids = Vec::with_capacity(runs.len());
        let records = runs
            .iter()
            .map(|(run_id, taken)| {
                let id = new_id(now);
                ids.push(id.clone());
                Record::PendingEvent(PendingEvent {
                    id,
                    run_id: run_id.clone(),
                    event_type: event_type.to_owned(),
                    data: data.clone(),
                    queue,
                    created_at: now as i64,
                    delivered_at: taken.then_some(now as i64),
                })
            })
            .collect();
        self.store.submit_sync(records)?;
        Ok(ids)
    }

    /// Whether a run's stored status says it ended.
    pub fn phase_ended(phase: RunPhase) -> bool {
        phase.is_terminal()
    }
}
