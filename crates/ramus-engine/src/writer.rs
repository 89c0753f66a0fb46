//! The store side of one durable run: records made from what the run learns, handed to the
//! store's writer in batches (each call in `sync`, once per turn in `batched`).

use std::collections::HashMap;
use std::sync::Arc;

use ramus_store::{
    CustomEvent, Kind, Record, Run, RunStatus, RunUpdate, Step, StepStatus, StepUpdate, Store,
    Timer, TimerKind as StoredTimerKind, Transition,
};

use crate::error::EngineError;
use crate::ids::new_id;

/// The row of a run that starts now.
#[derive(Clone, Debug, Default)]
pub struct RunRow {
    /// The run id (its own row id; nested runs share their events' run id with the parent
    /// but have their own row).
    pub id: String,
    /// The run's name.
    pub name: String,
    /// DAG or machine.
    pub kind: Option<Kind>,
    /// The stored definition it runs.
    pub definition: Option<(String, i64)>,
    /// Its input, JSON text.
    pub input: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Free-form info, JSON text.
    pub info: Option<String>,
    /// The run and step that started it.
    pub parent: Option<(String, String)>,
    /// Its first snapshot (the context it starts with), so a crash before its first step
    /// is written never loses what the caller passed.
    pub snapshot: Option<String>,
    /// A top-level run's first lease: its holder, and until when (ms).
    pub lease: Option<(String, i64)>,
}

/// The lease a durable run's writes are fenced with: each batch is written only if `owner`
/// still holds `run_id` (the top-level run) with `token`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    /// The top-level run the lease is on.
    pub run_id: String,
    /// This engine.
    pub owner: String,
    /// The token of its claim.
    pub token: i64,
}

impl Fence {
    /// The record that makes a submission conditional on this lease (see
    /// [`Record::Fence`]).
    pub fn record(&self) -> Record {
        Record::Fence {
            run_id: self.run_id.clone(),
            owner: self.owner.clone(),
            token: self.token,
        }
    }
}

/// A step that starts: what its row holds.
#[derive(Debug)]
pub struct StepStart {
    /// The step id.
    pub id: String,
    /// The node or state name.
    pub node: String,
    /// The run's own step.
    pub parent: Option<String>,
    /// Its input, JSON text.
    pub input: Option<String>,
    /// Which attempt it is, from 1.
    pub attempt: u32,
    /// When it started (ms).
    pub time: u64,
    /// A machine step: the context it starts with, JSON text.
    pub context: Option<String>,
    /// A machine step: what the machine was doing as it started (see
    /// [`ramus_store::Step::snapshot`]).
    pub snapshot: Option<String>,
}

fn step_end(
    id: String,
    status: StepStatus,
    output: Option<String>,
    error: Option<String>,
    at: i64,
    cached: bool,
) -> Record {
    Record::StepUpdate(StepUpdate {
        id,
        status,
        output,
        error,
        started_at: None,
        ended_at: Some(at),
        cached,
    })
}

/// An open step: its id, and the position of its insert while that is not written yet (an
/// end in the same batch then completes the insert: one row write per step, not two).
struct OpenStep {
    id: String,
    pending: Option<usize>,
}

/// Records of one run on their way to the store.
pub struct RunWriter {
    store: Arc<dyn Store>,
    run_id: String,
    sync: bool,
    source: &'static str,
    step_seq: i64,
    transition_seq: i64,
    status: RunStatus,
    status_changed: bool,
    open: HashMap<u32, OpenStep>,
    last_step: Option<String>,
    records: Vec<Record>,
    /// Timer rows by the run's timer id.
    timers: HashMap<u64, String>,
    last_snapshot: Option<String>,
    ended: bool,
    /// A run nested in a step continues under the step that ran again.
    reparent: Option<String>,
    fence: Option<Fence>,
    /// The contexts of the run's machine steps, as stored.
    contexts: crate::travel::ContextDiffs,
}

impl RunWriter {
    /// A new run: its row is written at once (runs nested in it, and its own steps, refer
    /// to it), committed before this returns in `sync`. `fence`: the lease its writes are
    /// fenced with when it is not the row's own first lease (`RunRow::lease`).
    pub fn create(
        store: Arc<dyn Store>,
        row: RunRow,
        sync: bool,
        trace: Option<(String, String)>,
        fence: Option<Fence>,
        now: u64,
    ) -> Result<RunWriter, EngineError> {
        let kind = row.kind.unwrap_or(Kind::Dag);
        let now = now as i64;
        let record = Record::Run(Run {
            id: row.id.clone(),
            name: row.name,
            kind,
            definition_name: row.definition.as_ref().map(|d| d.0.clone()),
            definition_version: row.definition.map(|d| d.1),
            status: RunStatus::Running,
            input: row.input,
            output: None,
            error: None,
            tags: row.tags,
            info: row.info,
            trace_id: trace.as_ref().map(|t| t.0.clone()),
            span_id: trace.map(|t| t.1),
            parent_run_id: row.parent.as_ref().map(|p| p.0.clone()),
            parent_step_id: row.parent.map(|p| p.1),
            snapshot: row.snapshot.clone(),
            created_at: now,
            updated_at: now,
            ended_at: None,
            forked_from_run_id: None,
            forked_from_step_id: None,
        });
        // A run given a fence (claimed from the queue, or nested in a fenced run) is fenced
        // from its first write: a holder that lost the lease while it stalled must not
        // overwrite the row of the one that took it.
        let claimed = fence.is_some();
        let fence = fence.or_else(|| {
            row.lease.as_ref().map(|(owner, _)| Fence {
                run_id: row.id.clone(),
                owner: owner.clone(),
                token: 1,
            })
        });
        let mut records = vec![record];
        if let (true, Some(f)) = (claimed, &fence) {
            records.insert(0, f.record());
        }
        if let Some((owner, until)) = row.lease {
            records.push(Record::Lease {
                run_id: row.id.clone(),
                owner,
                until,
            });
        }
        let submitted = if sync {
            store.submit_sync(records)
        } else {
            store.submit(records)
        };
        submitted.map_err(|source| EngineError::Write {
            run: row.id.clone(),
            source,
        })?;
        let mut w = RunWriter::new(store, row.id, kind, sync, (0, 0));
        w.last_snapshot = row.snapshot;
        w.fence = fence;
        Ok(w)
    }

    /// A stored run continuing here; `seqs` are its highest step and transition numbers.
    pub fn resume(
        store: Arc<dyn Store>,
        run_id: String,
        kind: Kind,
        sync: bool,
        seqs: (i64, i64),
    ) -> RunWriter {
        let mut w = RunWriter::new(store, run_id, kind, sync, seqs);
        // The status is written with the first batch: the restored run knows it.
        w.status_changed = true;
        w
    }

    fn new(
        store: Arc<dyn Store>,
        run_id: String,
        kind: Kind,
        sync: bool,
        seqs: (i64, i64),
    ) -> Self {
        RunWriter {
            store,
            run_id,
            sync,
            source: if kind == Kind::Dag {
                "dag"
            } else {
                "state_machine"
            },
            step_seq: seqs.0,
            transition_seq: seqs.1,
            status: RunStatus::Running,
            status_changed: false,
            open: HashMap::new(),
            last_step: None,
            records: Vec::new(),
            timers: HashMap::new(),
            last_snapshot: None,
            ended: false,
            reparent: None,
            fence: None,
            contexts: Default::default(),
        }
    }

    /// Fence the run's writes with a lease (a resumed run's claim, or the lease of the run
    /// a nested run runs in).
    pub fn set_fence(&mut self, fence: Option<Fence>) {
        self.fence = fence;
    }

    /// The lease the run's writes are fenced with.
    pub fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }

    /// The run continues under another step of its parent (the one that ran again after a
    /// restart); written with the next batch.
    pub fn reparent(&mut self, step: String) {
        self.reparent = Some(step);
        self.status_changed = true;
    }

    /// The run's row id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The store it writes to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Whether each batch waits for its commit.
    pub fn is_sync(&self) -> bool {
        self.sync
    }

    /// Whether the run's end was recorded.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The step of `slot` started.
    pub fn step_started(&mut self, slot: u32, step: StepStart) {
        self.step_seq += 1;
        self.last_step = Some(step.id.clone());
        let at = self.records.len();
        let context = step.context.map(|c| self.contexts.next(c));
        self.records.push(Record::Step(Step {
            id: step.id.clone(),
            run_id: self.run_id.clone(),
            seq: self.step_seq,
            node: step.node,
            parent_step_id: step.parent,
            input: step.input,
            output: None,
            error: None,
            status: StepStatus::Running,
            attempt: i64::from(step.attempt),
            started_at: Some(step.time as i64),
            ended_at: None,
            cached: false,
            context,
            snapshot: step.snapshot,
            superseded_at: None,
        }));
        self.open.insert(
            slot,
            OpenStep {
                id: step.id,
                pending: Some(at),
            },
        );
    }

    /// A node that had not started was cancelled while the run went on: a row of its own
    /// records it (see [`crate::sink::NODE_CANCELLED`]).
    pub fn node_cancelled(&mut self, id: String, node: String, time: u64) {
        self.step_seq += 1;
        self.records.push(Record::Step(Step {
            id,
            run_id: self.run_id.clone(),
            seq: self.step_seq,
            node,
            parent_step_id: None,
            input: None,
            output: None,
            error: Some(crate::sink::NODE_CANCELLED.to_owned()),
            status: StepStatus::Cancelled,
            attempt: 1,
            started_at: None,
            ended_at: Some(time as i64),
            cached: false,
            context: None,
            snapshot: None,
            superseded_at: None,
        }));
    }

    /// A step ended (`cached`: its output came from a cache).
    pub fn step_ended(
        &mut self,
        slot: u32,
        status: StepStatus,
        output: Option<String>,
        error: Option<String>,
        time: u64,
        cached: bool,
    ) {
        let Some(open) = self.open.remove(&slot) else {
            return;
        };
        if let Some(Record::Step(step)) = open.pending.and_then(|at| self.records.get_mut(at)) {
            step.status = status;
            step.output = output;
            step.error = error;
            step.ended_at = Some(time as i64);
            step.cached = cached;
            return;
        }
        self.records.push(step_end(
            open.id,
            status,
            output,
            error,
            time as i64,
            cached,
        ));
    }

    /// The id of the open step of `slot`, if any.
    pub fn open_step(&self, slot: u32) -> Option<&str> {
        self.open.get(&slot).map(|o| o.id.as_str())
    }

    /// A machine transition; `step` is the step of the state left (none for the entry into
    /// the first state).
    pub fn transition(
        &mut self,
        step: Option<String>,
        from: Option<&str>,
        to: &str,
        event: Option<(String, Option<String>)>,
        time: u64,
    ) {
        self.transition_seq += 1;
        let (event_type, event_data) = event.map_or((None, None), |(t, d)| (Some(t), d));
        self.records.push(Record::Transition(Transition {
            id: new_id(time),
            run_id: self.run_id.clone(),
            step_id: step.filter(|s| self.last_step.as_ref() == Some(s)),
            seq: self.transition_seq,
            from_state: from.map(str::to_owned),
            to_state: to.to_owned(),
            event_type,
            event_data,
            time: time as i64,
        }));
    }

    /// The run's status changed (only the statuses of a run that has not ended).
    pub fn status(&mut self, status: RunStatus) {
        if status.is_terminal() || self.ended {
            return;
        }
        if status != self.status {
            self.status = status;
            self.status_changed = true;
        }
    }

    /// A custom event a runner emitted.
    #[allow(clippy::too_many_arguments)]
    pub fn custom(
        &mut self,
        step: String,
        parent: Option<String>,
        event_type: &str,
        node: Option<String>,
        data: Option<String>,
        time: u64,
    ) {
        self.records.push(Record::Event(CustomEvent {
            id: new_id(time),
            run_id: self.run_id.clone(),
            step_id: Some(step),
            parent_step_id: parent,
            event_type: event_type.to_owned(),
            source: Some(self.source.to_owned()),
            source_node: node.filter(|n| !n.is_empty()),
            data,
            time: time as i64,
        }));
    }

    /// A timer was armed.
    pub fn timer_armed(&mut self, timer: u64, at: u64, kind: ramus_core::TimerKind, now: u64) {
        let id = new_id(now);
        self.records.push(Record::Timer(Timer {
            id: id.clone(),
            run_id: self.run_id.clone(),
            kind: match kind {
                ramus_core::TimerKind::Delay => StoredTimerKind::Delay,
                ramus_core::TimerKind::Timeout => StoredTimerKind::Timeout,
                ramus_core::TimerKind::Retry => StoredTimerKind::Retry,
            },
            due_at: at as i64,
            payload: Some(format!(r#"{{"timer":{timer}}}"#)),
            fired_at: None,
        }));
        self.timers.insert(timer, id);
    }

    /// A stored timer armed again after a restore.
    pub fn timer_row(&mut self, timer: u64, id: String) {
        self.timers.insert(timer, id);
    }

    /// A timer was disarmed before it fired.
    pub fn timer_cleared(&mut self, timer: u64) {
        if let Some(id) = self.timers.remove(&timer) {
            self.records.push(Record::TimerCancelled { id });
        }
    }

    /// A timer fired.
    pub fn timer_fired(&mut self, timer: u64, at: u64) {
        if let Some(id) = self.timers.remove(&timer) {
            self.records.push(Record::TimerFired { id, at: at as i64 });
        }
    }

    /// These nodes run again while the run goes on: their current steps are set aside.
    pub fn superseded(&mut self, nodes: Vec<String>, at: u64) {
        self.records.push(Record::StepsSuperseded {
            run_id: self.run_id.clone(),
            nodes,
            at: at as i64,
        });
    }

    /// The run goes on under another stored definition.
    pub fn redefined(&mut self, name: &str, version: i64) {
        self.records.push(Record::RunRedefined {
            id: self.run_id.clone(),
            name: name.to_owned(),
            version,
        });
    }

    /// An event sent to the run (stored) was taken.
    pub fn delivered(&mut self, id: String, at: u64) {
        self.records
            .push(Record::EventDelivered { id, at: at as i64 });
    }

    /// How the run ended; steps left open end with it (cancelled).
    pub fn end(
        &mut self,
        status: RunStatus,
        output: Option<String>,
        error: Option<String>,
        now: u64,
    ) {
        if self.ended {
            return;
        }
        self.ended = true;
        let now = now as i64;
        for (_, open) in self.open.drain() {
            self.records.push(step_end(
                open.id,
                StepStatus::Cancelled,
                None,
                None,
                now,
                false,
            ));
        }
        for (_, id) in self.timers.drain() {
            self.records.push(Record::TimerCancelled { id });
        }
        self.status = status;
        self.status_changed = false;
        let mut u = RunUpdate::status(&self.run_id, status, now);
        u.output = output;
        u.error = error;
        u.ended_at = Some(now);
        self.records.push(Record::RunUpdate(u));
    }

    /// Whether records wait to be written.
    pub fn dirty(&self) -> bool {
        !self.records.is_empty() || self.status_changed
    }

    /// Hand what was collected to the store (waiting for the commit in `sync`), with the
    /// run's snapshot when given.
    pub fn flush(&mut self, snapshot: Option<String>, now: u64) -> Result<(), EngineError> {
        let Some(records) = self.take(snapshot, now) else {
            return Ok(());
        };
        let r = if self.sync {
            self.store.submit_sync(records)
        } else {
            self.store.submit(records)
        };
        r.map_err(|source| EngineError::Write {
            run: self.run_id.clone(),
            source,
        })
    }

    /// Hand what was collected to the store and return at once: `done` hears of the
    /// commit. False (and `done` dropped) when there was nothing to write.
    pub fn flush_then(
        &mut self,
        snapshot: Option<String>,
        now: u64,
        done: Box<dyn FnOnce(Result<(), EngineError>) + Send>,
    ) -> bool {
        let Some(records) = self.take(snapshot, now) else {
            return false;
        };
        let run = self.run_id.clone();
        self.store.submit_then(
            records,
            Box::new(move |r| done(r.map_err(|source| EngineError::Write { run, source }))),
        );
        true
    }

    /// What a flush writes, with the run's row when its status or snapshot changed.
    fn take(&mut self, snapshot: Option<String>, now: u64) -> Option<Vec<Record>> {
        // A snapshot equal to the last one written is not written again (a DAG whose
        // context did not change): one table fewer per commit.
        let snapshot = snapshot.filter(|s| self.last_snapshot.as_deref() != Some(s.as_str()));
        if let Some(s) = &snapshot {
            self.last_snapshot = Some(s.clone());
        }
        if self.status_changed || snapshot.is_some() {
            self.status_changed = false;
            let mut u = RunUpdate::status(&self.run_id, self.status, now as i64);
            u.snapshot = snapshot;
            u.parent_step_id = self.reparent.take();
            // Before an end written in the same batch, so the end is what stays.
            let at = self
                .records
                .iter()
                .rposition(|r| matches!(r, Record::RunUpdate(u) if u.ended_at.is_some()))
                .unwrap_or(self.records.len());
            self.records.insert(at, Record::RunUpdate(u));
        }
        if self.records.is_empty() {
            return None;
        }
        for open in self.open.values_mut() {
            open.pending = None;
        }
        if let Some(f) = &self.fence {
            self.records.insert(0, f.record());
        }
        Some(std::mem::take(&mut self.records))
    }

    /// Enough collected that a batched run should write before the end of its turn.
    pub fn full(&self) -> bool {
        self.records.len() >= 4096
    }
}

/// The stored status of a run in a phase.
pub fn stored_status(phase: ramus_core::RunPhase) -> RunStatus {
    match phase {
        ramus_core::RunPhase::Running => RunStatus::Running,
        ramus_core::RunPhase::WaitingForEvent => RunStatus::WaitingForEvent,
        ramus_core::RunPhase::Sleeping => RunStatus::Sleeping,
        ramus_core::RunPhase::Finished => RunStatus::Finished,
        ramus_core::RunPhase::Error => RunStatus::Error,
        ramus_core::RunPhase::Cancelled => RunStatus::Cancelled,
    }
}
