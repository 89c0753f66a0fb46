//! The store binding: a `ramus_store::Store` shared by an engine's runs, its reads as JSON
//! for the JS face and the inspector, and the sinks that turn a run's events into records.
//!
//! Reads return JSON text (one `JSON.parse` in JS) rather than napi objects: a run with
//! 10k steps is one string, not 10k×12 property sets.

use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use ramus_store::{
    CustomEvent, Definition, Durability, Kind, PendingEvent, Record, Run, RunFilter, RunQuery,
    RunStatus, Step, Store, Timer, Transition,
};
use serde_json::{json, Map, Value};

use crate::now_ms;

pub(crate) fn store_error(e: ramus_store::Error) -> Error {
    Error::from_reason(e.to_string())
}

/// A stored JSON text as a value (a column the store wrote from `JSON.stringify`). Text
/// that does not parse (a row edited by hand) is kept as a string rather than lost.
fn value(text: &Option<String>) -> Value {
    match text {
        None => Value::Null,
        Some(t) => serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.clone())),
    }
}

fn run_json(r: &Run, with_snapshot: bool) -> Value {
    let mut v = json!({
        "id": r.id, "name": r.name, "kind": r.kind.as_str(),
        "definitionName": r.definition_name, "definitionVersion": r.definition_version,
        "status": r.status.as_str(), "input": value(&r.input), "output": value(&r.output),
        "error": value(&r.error), "tags": r.tags, "info": value(&r.info),
        "traceId": r.trace_id, "spanId": r.span_id,
        "parentRunId": r.parent_run_id, "parentStepId": r.parent_step_id,
        "createdAt": r.created_at, "updatedAt": r.updated_at, "endedAt": r.ended_at,
    });
    if with_snapshot {
        v["snapshot"] = value(&r.snapshot);
    }
    v
}

fn step_json(s: &Step) -> Value {
    json!({
        "id": s.id, "runId": s.run_id, "seq": s.seq, "node": s.node,
        "parentStepId": s.parent_step_id, "input": value(&s.input), "output": value(&s.output),
        "error": value(&s.error), "status": s.status.as_str(), "attempt": s.attempt,
        "startedAt": s.started_at, "endedAt": s.ended_at,
    })
}

fn transition_json(t: &Transition) -> Value {
    json!({
        "id": t.id, "runId": t.run_id, "stepId": t.step_id, "seq": t.seq,
        "from": t.from_state, "to": t.to_state, "eventType": t.event_type,
        "eventData": value(&t.event_data), "time": t.time,
    })
}

fn event_json(e: &CustomEvent) -> Value {
    json!({
        "id": e.id, "runId": e.run_id, "stepId": e.step_id, "parentStepId": e.parent_step_id,
        "type": e.event_type, "source": e.source, "sourceNode": e.source_node,
        "data": value(&e.data), "time": e.time,
    })
}

fn pending_json(e: &PendingEvent) -> Value {
    json!({
        "id": e.id, "runId": e.run_id, "type": e.event_type, "data": value(&e.data),
        "queue": e.queue, "createdAt": e.created_at, "deliveredAt": e.delivered_at,
    })
}

fn timer_json(t: &Timer) -> Value {
    json!({
        "id": t.id, "runId": t.run_id, "kind": t.kind.as_str(), "dueAt": t.due_at,
        "payload": value(&t.payload), "firedAt": t.fired_at,
    })
}

/// The config is written into the answer as the stored text: a large DAG's definition is
/// not parsed and re-encoded on every read.
fn definition_json(d: &Definition) -> String {
    let head = json!({
        "name": d.name, "version": d.version, "kind": d.kind.as_str(), "hash": d.hash,
        "createdAt": d.created_at,
    })
    .to_string();
    format!("{},\"config\":{}}}", &head[..head.len() - 1], d.config)
}

fn list<T>(items: &[T], f: impl Fn(&T) -> Value) -> String {
    Value::Array(items.iter().map(f).collect()).to_string()
}

/// `{ name?, status?, tags?, limit? }` from the JS face (already checked there).
fn parse_filter(json: Option<String>) -> Result<RunFilter> {
    let Some(json) = json else {
        return Ok(RunFilter::default());
    };
    let v: Map<String, Value> = serde_json::from_str(&json)
        .map_err(|e| Error::from_reason(format!("invalid run filter: {e}")))?;
    let status = match v.get("status").and_then(Value::as_str) {
        Some(s) => Some(s.parse::<RunStatus>().map_err(|_| {
            Error::from_reason(format!(
                "Unknown run status '{s}' (expected one of {})",
                RunStatus::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?),
        None => None,
    };
    Ok(RunFilter {
        name: v.get("name").and_then(Value::as_str).map(str::to_owned),
        status,
        tags: v
            .get("tags")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        limit: v.get("limit").and_then(Value::as_u64).map(|l| l as u32),
    })
}

/// The inspector's run query; the same status check as [`parse_filter`].
fn parse_query(json: Option<String>) -> Result<RunQuery> {
    let Some(json) = json else {
        return Ok(RunQuery::default());
    };
    let v: Map<String, Value> = serde_json::from_str(&json)
        .map_err(|e| Error::from_reason(format!("invalid run query: {e}")))?;
    let filter = parse_filter(Some(json))?;
    let time = |key: &str| v.get(key).and_then(Value::as_f64).map(|t| t as i64);
    Ok(RunQuery {
        name_contains: v
            .get("nameContains")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        status: filter.status,
        tags: filter.tags,
        since: time("since"),
        until: time("until"),
        top_level: v.get("topLevel").and_then(Value::as_bool).unwrap_or(false),
        limit: filter.limit,
    })
}

pub(crate) fn parse_durability(s: &str) -> Result<Durability> {
    match s {
        "sync" => Ok(Durability::Sync),
        "batched" => Ok(Durability::Batched),
        "off" => Ok(Durability::Off),
        other => Err(Error::from_reason(format!(
            "Unknown durability '{other}' (expected 'sync', 'batched' or 'off')"
        ))),
    }
}

pub(crate) fn parse_kind(s: &str) -> Result<Kind> {
    s.parse()
        .map_err(|_| Error::from_reason(format!("Unknown definition kind '{s}'")))
}

/// Waits for a store's commit off the JS thread.
pub struct FlushStore(Arc<Store>);

impl Task for FlushStore {
    type Output = ();
    type JsValue = ();

    fn compute(&mut self) -> Result<()> {
        match self.0.flush() {
            // Closing commits everything queued before it: nothing was lost.
            Err(ramus_store::Error::Closed) | Ok(()) => Ok(()),
            Err(e) => Err(store_error(e)),
        }
    }

    fn resolve(&mut self, _: Env, _: ()) -> Result<()> {
        Ok(())
    }
}

/// An open run database: what `Engine` and the inspector hold.
#[napi]
pub struct NativeStore {
    pub(crate) inner: Arc<Store>,
}

#[napi]
impl NativeStore {
    /// Open (creating and migrating if needed) the database at `path` (or `:memory:`).
    #[napi(constructor)]
    pub fn new(path: String, durability: String) -> Result<Self> {
        let durability = parse_durability(&durability)?;
        let inner = Store::open(&path, durability).map_err(store_error)?;
        Ok(NativeStore {
            inner: Arc::new(inner),
        })
    }

    /// The path it was opened with.
    #[napi(getter)]
    pub fn path(&self) -> String {
        self.inner.path().to_owned()
    }

    /// Runs matching a filter (JSON `{ name?, status?, tags?, limit? }`), newest first, as
    /// a JSON array without snapshots.
    #[napi]
    pub fn runs(&self, filter_json: Option<String>) -> Result<String> {
        let runs = self
            .inner
            .runs(&parse_filter(filter_json)?)
            .map_err(store_error)?;
        Ok(list(&runs, |r| run_json(r, false)))
    }

    /// Runs waiting for an event, newest first (JSON array).
    #[napi]
    pub fn waiting(&self, filter_json: Option<String>) -> Result<String> {
        let runs = self
            .inner
            .waiting(&parse_filter(filter_json)?)
            .map_err(store_error)?;
        Ok(list(&runs, |r| run_json(r, false)))
    }

    /// One run with its snapshot (JSON), or null.
    #[napi]
    pub fn run(&self, id: String) -> Result<Option<String>> {
        let run = self.inner.run(&id).map_err(store_error)?;
        Ok(run.map(|r| run_json(&r, true).to_string()))
    }

    /// A run's steps in `seq` order (JSON array).
    #[napi]
    pub fn steps(&self, run_id: String) -> Result<String> {
        let steps = self.inner.steps(&run_id).map_err(store_error)?;
        Ok(list(&steps, step_json))
    }

    /// A run's transitions in order (JSON array).
    #[napi]
    pub fn transitions(&self, run_id: String) -> Result<String> {
        let t = self.inner.transitions(&run_id).map_err(store_error)?;
        Ok(list(&t, transition_json))
    }

    /// A run's custom events, oldest first (JSON array).
    #[napi]
    pub fn events(&self, run_id: String) -> Result<String> {
        let e = self.inner.events(&run_id).map_err(store_error)?;
        Ok(list(&e, event_json))
    }

    /// Events sent to a run and not taken yet, oldest first (JSON array).
    #[napi]
    pub fn pending_events(&self, run_id: String) -> Result<String> {
        let e = self.inner.pending_events(&run_id).map_err(store_error)?;
        Ok(list(&e, pending_json))
    }

    /// A run's timers, armed and fired, in due order (JSON array).
    #[napi]
    pub fn timers(&self, run_id: String) -> Result<String> {
        let t = self.inner.timers(&run_id).map_err(store_error)?;
        Ok(list(&t, timer_json))
    }

    /// Armed timers of every run due at or before `now` (ms), in due order (JSON array).
    #[napi]
    pub fn due_timers(&self, now: f64) -> Result<String> {
        let t = self.inner.due_timers(now as i64).map_err(store_error)?;
        Ok(list(&t, timer_json))
    }

    /// The ids of a run's steps still running or pending (interrupted by a crash).
    #[napi]
    pub fn open_steps(&self, run_id: String) -> Result<Vec<String>> {
        self.inner.open_steps(&run_id).map_err(store_error)
    }

    /// Runs started inside steps of `run_id` (JSON array, oldest first).
    #[napi]
    pub fn children(&self, run_id: String) -> Result<String> {
        let runs = self.inner.children(&run_id).map_err(store_error)?;
        Ok(list(&runs, |r| run_json(r, false)))
    }

    /// A stored definition (the latest version unless one is given), or null.
    #[napi]
    pub fn definition(&self, name: String, version: Option<f64>) -> Result<Option<String>> {
        let d = self
            .inner
            .definition(&name, version.map(|v| v as i64))
            .map_err(store_error)?;
        Ok(d.map(|d| definition_json(&d)))
    }

    /// The latest version of a definition, or null when there is none.
    #[napi]
    pub fn latest_version(&self, name: String) -> Result<Option<f64>> {
        let v = self.inner.latest_version(&name).map_err(store_error)?;
        Ok(v.map(|v| v as f64))
    }

    /// Store a definition; returns `{ name, version, hash, created }` as JSON.
    #[napi]
    pub fn put_definition(
        &self,
        name: String,
        kind: String,
        config_json: String,
    ) -> Result<String> {
        let v = self
            .inner
            .put_definition(&name, parse_kind(&kind)?, &config_json, now_ms() as i64)
            .map_err(store_error)?;
        Ok(
            json!({ "name": v.name, "version": v.version, "hash": v.hash, "created": v.created })
                .to_string(),
        )
    }

    /// Store an event for a run (`engine.send`, the inspector's buttons) and wait for the
    /// commit, so another process polling the database sees it. Returns the event id.
    #[napi]
    pub fn send_event(
        &self,
        run_id: String,
        event_type: String,
        data_json: Option<String>,
        queue: bool,
        delivered: bool,
    ) -> Result<String> {
        // An event already taken belongs to a run live in this process, whose row may still
        // be queued behind this write (it reaches the writer first): no lookup then.
        if !delivered && self.inner.run(&run_id).map_err(store_error)?.is_none() {
            return Err(Error::from_reason(format!(
                "No run with id '{run_id}' in the database"
            )));
        }
        let id = crate::new_id();
        let now = now_ms() as i64;
        self.inner
            .submit_sync(vec![Record::PendingEvent(PendingEvent {
                id: id.clone(),
                run_id,
                event_type,
                data: data_json,
                queue,
                created_at: now,
                delivered_at: delivered.then_some(now),
            })])
            .map_err(store_error)?;
        Ok(id)
    }

    /// Mark events sent to a run as taken.
    #[napi]
    pub fn mark_delivered(&self, ids: Vec<String>) -> Result<()> {
        let now = now_ms() as i64;
        self.inner
            .submit(
                ids.into_iter()
                    .map(|id| Record::EventDelivered { id, at: now })
                    .collect(),
            )
            .map_err(store_error)
    }

    /// Delete runs created before `older_than` (ms), optionally only with `status`.
    /// Returns how many runs were deleted.
    #[napi]
    pub fn prune(&self, older_than: f64, status: Option<String>) -> Result<u32> {
        let status = status
            .map(|s| parse_filter(Some(json!({ "status": s }).to_string())).map(|f| f.status))
            .transpose()?
            .flatten();
        let n = self
            .inner
            .prune(older_than as i64, status)
            .map_err(store_error)?;
        Ok(n as u32)
    }

    /// Wait until everything submitted so far is committed.
    #[napi]
    pub fn flush(&self) -> Result<()> {
        self.inner.flush().map_err(store_error)
    }

    /// `flush` on a worker thread: resolves once committed, without blocking the JS thread.
    #[napi]
    pub fn flush_async(&self) -> AsyncTask<FlushStore> {
        AsyncTask::new(FlushStore(Arc::clone(&self.inner)))
    }

    /// Flush and stop the writer; reads keep working.
    #[napi]
    pub fn close(&self) -> Result<()> {
        self.inner.close().map_err(store_error)
    }

    /// The schema version of the Ramus database at `path` without opening it for writing,
    /// or null when the file is not one (the inspector refuses to migrate a foreign file).
    #[napi]
    pub fn probe(path: String) -> Result<Option<u32>> {
        Store::probe(&path).map_err(store_error)
    }

    /// The inspector's run list: JSON `{ nameContains?, status?, tags?, since?, until?,
    /// topLevel?, limit? }` in, a JSON array of runs (without snapshots) each with `steps`,
    /// its step count, out. Newest first.
    #[napi]
    pub fn run_list(&self, query_json: Option<String>) -> Result<String> {
        let query = parse_query(query_json)?;
        let runs = self.inner.run_list(&query).map_err(store_error)?;
        Ok(list(&runs, |s| {
            let mut v = run_json(&s.run, false);
            v["steps"] = json!(s.steps);
            v
        }))
    }

    /// A number that changes whenever anything was committed to the database since it was
    /// last read (by this store or another process): pollers compare it to skip re-reads.
    #[napi]
    pub fn data_version(&self) -> Result<i64> {
        self.inner.data_version().map_err(store_error)
    }
}

/// The run row the face describes when a run is attached to the store, camelCase.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewRun<'a> {
    id: String,
    name: String,
    kind: String,
    #[serde(default)]
    definition_name: Option<String>,
    #[serde(default)]
    definition_version: Option<i64>,
    #[serde(borrow, default)]
    input: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(borrow, default)]
    info: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    parent_run_id: Option<String>,
    #[serde(default)]
    parent_step_id: Option<String>,
}

fn raw(v: Option<&serde_json::value::RawValue>) -> Option<String> {
    v.map(|r| r.get().to_owned())
}

fn run_status(status: &str) -> Option<RunStatus> {
    Some(match status {
        "waitingForEvent" => RunStatus::WaitingForEvent,
        "sleeping" => RunStatus::Sleeping,
        "running" | "ready" | "pendingSemaphore" | "initial" => RunStatus::Running,
        "finished" | "final" => RunStatus::Finished,
        "error" => RunStatus::Error,
        "cancelled" => RunStatus::Cancelled,
        _ => return None,
    })
}

fn write_error(run: &str, e: ramus_store::Error) -> Error {
    Error::from_reason(format!("Could not store run {run}: {e}"))
}

fn step_end(
    id: String,
    status: ramus_store::StepStatus,
    output: Option<String>,
    error: Option<String>,
    at: i64,
) -> Record {
    Record::StepUpdate(ramus_store::StepUpdate {
        id,
        status,
        output,
        error,
        started_at: None,
        ended_at: Some(at),
    })
}

/// The store side of one durable run, owned by its native run object: it turns the events
/// the core records into records, with the values the face passed in its calls (outputs,
/// errors, event data as JSON text), and hands them to the store's writer when the face
/// flushes (every call in `sync`, once per event-loop turn in `batched`). Nothing about
/// a durable run crosses to JS unless a listener asks for events.
pub(crate) struct RunWriter {
    store: Arc<Store>,
    run_id: String,
    sync: bool,
    source: &'static str,
    step_seq: i64,
    transition_seq: i64,
    status: RunStatus,
    status_changed: bool,
    /// Open steps by slot: step id, node name, and the position of the step's insert in
    /// `records` while it is not written yet (an end in the same batch then completes the
    /// insert instead of adding an update: one row write per step instead of two).
    open: std::collections::HashMap<u32, (String, String, Option<usize>)>,
    last_step: Option<String>,
    records: Vec<Record>,
    /// Timer rows by core timer id.
    timers: std::collections::HashMap<u64, String>,
    /// The snapshot last written.
    last_snapshot: Option<String>,
}

impl RunWriter {
    /// Attach a run: a new row (`resume` false), or a stored run continuing here. Returns
    /// the writer and the `input` the face described (a machine's current input).
    pub(crate) fn open(
        store: &NativeStore,
        run_json: &str,
        resume: bool,
        sync: bool,
        trace: Option<(String, String)>,
    ) -> Result<(RunWriter, Option<String>)> {
        let run: NewRun = serde_json::from_str(run_json)
            .map_err(|e| Error::from_reason(format!("invalid run record: {e}")))?;
        let kind = parse_kind(&run.kind)?;
        let (step_seq, transition_seq) = if resume {
            store.inner.max_seqs(&run.id).map_err(store_error)?
        } else {
            (0, 0)
        };
        let now = now_ms() as i64;
        let input = raw(run.input);
        let first = if resume {
            // The status is written with the first batch: the restored run knows it.
            None
        } else {
            Some(Record::Run(Run {
                id: run.id.clone(),
                name: run.name,
                kind,
                definition_name: run.definition_name,
                definition_version: run.definition_version,
                status: RunStatus::Running,
                input: input.clone(),
                output: None,
                error: None,
                tags: run.tags,
                info: raw(run.info),
                trace_id: trace.as_ref().map(|t| t.0.clone()),
                span_id: trace.map(|t| t.1),
                parent_run_id: run.parent_run_id,
                parent_step_id: run.parent_step_id,
                snapshot: None,
                created_at: now,
                updated_at: now,
                ended_at: None,
            }))
        };
        // The row goes out at once: runs nested in this one, and its own steps, refer to it.
        if let Some(first) = first {
            let submitted = if sync {
                store.inner.submit_sync(vec![first])
            } else {
                store.inner.submit(vec![first])
            };
            submitted.map_err(|e| write_error(&run.id, e))?;
        }
        let writer = RunWriter {
            store: Arc::clone(&store.inner),
            run_id: run.id,
            sync,
            source: if kind == Kind::Dag {
                "dag"
            } else {
                "state_machine"
            },
            step_seq,
            transition_seq,
            status: RunStatus::Running,
            status_changed: resume,
            open: Default::default(),
            last_step: None,
            records: Vec::new(),
            timers: Default::default(),
            last_snapshot: None,
        };
        Ok((writer, input))
    }

    pub(crate) fn step_started(
        &mut self,
        slot: u32,
        step: String,
        node: String,
        parent: Option<String>,
        input: Option<String>,
        time: u64,
    ) {
        self.step_seq += 1;
        self.last_step = Some(step.clone());
        let at = self.records.len();
        self.records.push(Record::Step(Step {
            id: step.clone(),
            run_id: self.run_id.clone(),
            seq: self.step_seq,
            node: node.clone(),
            parent_step_id: parent,
            input,
            output: None,
            error: None,
            status: ramus_store::StepStatus::Running,
            attempt: 1,
            started_at: Some(time as i64),
            ended_at: None,
        }));
        self.open.insert(slot, (step, node, Some(at)));
    }

    pub(crate) fn step_ended(
        &mut self,
        slot: u32,
        status: ramus_store::StepStatus,
        output: Option<String>,
        error: Option<String>,
        time: u64,
    ) {
        let Some((id, _, pending)) = self.open.remove(&slot) else {
            return;
        };
        if let Some(Record::Step(step)) = pending.and_then(|at| self.records.get_mut(at)) {
            step.status = status;
            step.output = output;
            step.error = error;
            step.ended_at = Some(time as i64);
            return;
        }
        self.records
            .push(step_end(id, status, output, error, time as i64));
    }

    pub(crate) fn transition(
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
            id: crate::new_id(),
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

    pub(crate) fn status(&mut self, status: &str) {
        if let Some(s) = run_status(status).filter(|s| !s.is_terminal()) {
            if s != self.status || self.status_changed {
                self.status = s;
                self.status_changed = true;
            }
        }
    }

    pub(crate) fn custom(
        &mut self,
        step: String,
        parent: Option<String>,
        event_type: &str,
        node: Option<String>,
        data: Option<String>,
        time: u64,
    ) {
        self.records.push(Record::Event(CustomEvent {
            id: crate::new_id(),
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

    pub(crate) fn timer_armed(&mut self, timer: u64, at: u64, delay: bool) {
        let id = crate::new_id();
        self.records.push(Record::Timer(Timer {
            id: id.clone(),
            run_id: self.run_id.clone(),
            kind: if delay {
                ramus_store::TimerKind::Delay
            } else {
                ramus_store::TimerKind::Timeout
            },
            due_at: at as i64,
            payload: Some(json!({ "timer": timer }).to_string()),
            fired_at: None,
        }));
        self.timers.insert(timer, id);
    }

    /// A stored timer re-armed after a restore.
    pub(crate) fn timer_row(&mut self, timer: u64, id: String) {
        self.timers.insert(timer, id);
    }

    pub(crate) fn timer_cleared(&mut self, timer: u64) {
        if let Some(id) = self.timers.remove(&timer) {
            self.records.push(Record::TimerCancelled { id });
        }
    }

    pub(crate) fn timer_fired(&mut self, timer: u64, at: u64) {
        if let Some(id) = self.timers.remove(&timer) {
            self.records.push(Record::TimerFired { id, at: at as i64 });
        }
    }

    pub(crate) fn delivered(&mut self, id: String) {
        self.records.push(Record::EventDelivered {
            id,
            at: now_ms() as i64,
        });
    }

    /// How the run ended; steps left open end with it (cancelled).
    pub(crate) fn end(&mut self, status: &str, output: Option<String>, error: Option<String>) {
        let status = run_status(status).unwrap_or(RunStatus::Error);
        let now = now_ms() as i64;
        for (_, (id, _, _)) in self.open.drain() {
            self.records.push(step_end(
                id,
                ramus_store::StepStatus::Cancelled,
                None,
                None,
                now,
            ));
        }
        self.status = status;
        self.status_changed = false;
        let mut u = ramus_store::RunUpdate::status(&self.run_id, status, now);
        u.output = output;
        u.error = error;
        u.ended_at = Some(now);
        self.records.push(Record::RunUpdate(u));
    }

    /// Hand what was collected to the writer (waiting for the commit in `sync`), with the
    /// run's snapshot when given.
    pub(crate) fn flush(&mut self, snapshot: Option<String>) -> Result<()> {
        // A snapshot equal to the last one written is not written again (a DAG whose
        // context did not change): one table fewer per commit.
        let snapshot = snapshot.filter(|s| self.last_snapshot.as_deref() != Some(s.as_str()));
        if let Some(s) = &snapshot {
            self.last_snapshot = Some(s.clone());
        }
        if self.status_changed || snapshot.is_some() {
            self.status_changed = false;
            let mut u = ramus_store::RunUpdate::status(&self.run_id, self.status, now_ms() as i64);
            u.snapshot = snapshot;
            // Before an end written in the same batch, so the end is what stays.
            let at = self
                .records
                .iter()
                .rposition(|r| matches!(r, Record::RunUpdate(u) if u.ended_at.is_some()))
                .unwrap_or(self.records.len());
            self.records.insert(at, Record::RunUpdate(u));
        }
        if self.records.is_empty() {
            return Ok(());
        }
        for (_, _, pending) in self.open.values_mut() {
            *pending = None;
        }
        let records = std::mem::take(&mut self.records);
        let r = if self.sync {
            self.store.submit_sync(records)
        } else {
            self.store.submit(records)
        };
        r.map_err(|e| write_error(&self.run_id, e))
    }

    /// Enough collected that a batched run should write before the end of its turn.
    pub(crate) fn full(&self) -> bool {
        self.records.len() >= 4096
    }
}

#[napi]
impl NativeStore {
    /// Mark steps that were running when the process stopped (found on resume) as
    /// cancelled with an error that says why; their nodes run again as new steps.
    #[napi]
    pub fn interrupt_steps(&self, step_ids: Vec<String>) -> Result<()> {
        let now = now_ms() as i64;
        let error = json!({
            "name": "Interrupted",
            "message": "the process stopped while this step ran; it runs again on resume",
        })
        .to_string();
        self.inner
            .submit(
                step_ids
                    .into_iter()
                    .map(|id| {
                        step_end(
                            id,
                            ramus_store::StepStatus::Cancelled,
                            None,
                            Some(error.clone()),
                            now,
                        )
                    })
                    .collect(),
            )
            .map_err(store_error)
    }

    /// Mark a stored run that will not continue (a child run whose parent step runs
    /// again) as ended with `status` and an error (JSON).
    #[napi]
    pub fn end_run(
        &self,
        run_id: String,
        status: String,
        error_json: Option<String>,
    ) -> Result<()> {
        let status = run_status(&status)
            .ok_or_else(|| Error::from_reason(format!("Unknown run status '{status}'")))?;
        let now = now_ms() as i64;
        let mut u = ramus_store::RunUpdate::status(&run_id, status, now);
        u.error = error_json;
        u.ended_at = Some(now);
        self.inner
            .submit(vec![Record::RunUpdate(u)])
            .map_err(store_error)
    }
}
