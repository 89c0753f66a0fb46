//! The store binding: a `ramus_store::Store` shared by an engine's runs, its reads as JSON
//! for the JS face and the inspector, and the sinks that turn a run's events into records.
//!
//! Reads return JSON text (one `JSON.parse` in JS) rather than napi objects: a run with
//! 10k steps is one string, not 10k×12 property sets.

use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use ramus_store::{
    CustomEvent, Definition, Durability, Kind, PendingEvent, Record, Run, RunFilter, RunStatus,
    Step, Store, Timer, Transition,
};
use serde::de::IgnoredAny;
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
        let run = self.inner.run(&run_id).map_err(store_error)?;
        if run.is_none() {
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

    /// Flush and stop the writer; reads keep working.
    #[napi]
    pub fn close(&self) -> Result<()> {
        self.inner.close().map_err(store_error)
    }
}

/// What the face sends once per drain of a durable run: the run's events (with their data
/// already JSON-checked), its snapshot, timer changes, delivered events and its end.
#[derive(serde::Deserialize)]
struct Batch<'a> {
    #[serde(borrow, default)]
    e: Vec<WireEvent<'a>>,
    #[serde(borrow, default)]
    snap: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    timers: Vec<TimerOp>,
    #[serde(default)]
    delivered: Vec<String>,
    #[serde(borrow, default)]
    end: Option<End<'a>>,
}

/// `[type, stepId, parentStepId, node, time, data]`.
type WireEvent<'a> = (
    String,
    String,
    Option<String>,
    String,
    f64,
    Option<&'a serde_json::value::RawValue>,
);

/// The fields event data may have (`{ input }`, `{ output }`, `{ error }`, `{ status }`,
/// transitions' `{ from, to, event, eventData }`); each value is kept as JSON text.
#[derive(serde::Deserialize, Default)]
struct Data<'a> {
    #[serde(borrow, default)]
    input: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    output: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    event: Option<String>,
    #[serde(borrow, default, rename = "eventData")]
    event_data: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    state: Option<String>,
}

/// `["arm", id, kind, dueAt, payload]`, `["clear", id]`, `["fired", id, at]`.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum TimerOp {
    Arm(IgnoredAny, String, String, f64, serde_json::Value),
    Fired(IgnoredAny, String, f64),
    Clear(IgnoredAny, String),
}

#[derive(serde::Deserialize)]
struct End<'a> {
    status: String,
    #[serde(borrow, default)]
    output: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a serde_json::value::RawValue>,
    time: f64,
}

/// The run row a sink writes first (`engine.start`), camelCase from the face.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewRun<'a> {
    id: String,
    name: String,
    kind: String,
    definition_name: Option<String>,
    definition_version: Option<i64>,
    #[serde(borrow, default)]
    input: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(borrow, default)]
    info: Option<&'a serde_json::value::RawValue>,
    parent_run_id: Option<String>,
    parent_step_id: Option<String>,
}

fn text(v: Option<&serde_json::value::RawValue>) -> Option<String> {
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

/// One durable run's writer: turns the face's batches into store records. It numbers steps
/// and transitions (continuing after a restore) and remembers which steps are open, so a
/// cancelled node that never started writes nothing.
#[napi]
pub struct NativeSink {
    store: Arc<Store>,
    run_id: String,
    sync: bool,
    step_seq: i64,
    transition_seq: i64,
    status: RunStatus,
    open_steps: std::collections::HashSet<String>,
    last_step: Option<String>,
    source: &'static str,
    ended: bool,
}

fn sink_error(run: &str, e: ramus_store::Error) -> Error {
    Error::from_reason(format!("Could not store run {run}: {e}"))
}

#[napi]
impl NativeStore {
    /// A writer for a new run (`run_json`: its row) or, with `resume`, for a stored run
    /// that continues in this process. `sync`: wait for the commit of each batch.
    #[napi]
    pub fn sink(&self, run_json: String, resume: bool, sync: bool) -> Result<NativeSink> {
        let run: NewRun = serde_json::from_str(&run_json)
            .map_err(|e| Error::from_reason(format!("invalid run record: {e}")))?;
        let kind = parse_kind(&run.kind)?;
        let (step_seq, transition_seq) = if resume {
            self.inner.max_seqs(&run.id).map_err(store_error)?
        } else {
            (0, 0)
        };
        let sink = NativeSink {
            store: Arc::clone(&self.inner),
            run_id: run.id.clone(),
            sync,
            step_seq,
            transition_seq,
            status: RunStatus::Running,
            open_steps: Default::default(),
            last_step: None,
            source: if kind == Kind::Dag {
                "dag"
            } else {
                "state_machine"
            },
            ended: false,
        };
        let now = now_ms() as i64;
        let record = if resume {
            Record::RunUpdate(ramus_store::RunUpdate::status(
                &run.id,
                RunStatus::Running,
                now,
            ))
        } else {
            Record::Run(Run {
                id: run.id,
                name: run.name,
                kind,
                definition_name: run.definition_name,
                definition_version: run.definition_version,
                status: RunStatus::Running,
                input: text(run.input),
                output: None,
                error: None,
                tags: run.tags,
                info: text(run.info),
                trace_id: None,
                span_id: None,
                parent_run_id: run.parent_run_id,
                parent_step_id: run.parent_step_id,
                snapshot: None,
                created_at: now,
                updated_at: now,
                ended_at: None,
            })
        };
        sink.write(vec![record])?;
        Ok(sink)
    }
}

#[napi]
impl NativeSink {
    /// The store run id this sink writes.
    #[napi(getter)]
    pub fn run_id(&self) -> String {
        self.run_id.clone()
    }

    fn write(&self, records: Vec<Record>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let r = if self.sync {
            self.store.submit_sync(records)
        } else {
            self.store.submit(records)
        };
        r.map_err(|e| sink_error(&self.run_id, e))
    }

    /// Mark steps that were running when the process stopped (found on resume) as
    /// cancelled, with an error that says why; their nodes run again as new steps.
    #[napi]
    pub fn interrupt(&mut self, step_ids: Vec<String>) -> Result<()> {
        let now = now_ms() as i64;
        let error = json!({
            "name": "Interrupted",
            "message": "the process stopped while this step ran; it runs again on resume",
        })
        .to_string();
        self.write(
            step_ids
                .into_iter()
                .map(|id| {
                    Record::StepUpdate(ramus_store::StepUpdate {
                        id,
                        status: ramus_store::StepStatus::Cancelled,
                        output: None,
                        error: Some(error.clone()),
                        started_at: None,
                        ended_at: Some(now),
                    })
                })
                .collect(),
        )
    }

    /// Store one batch (see `Batch`). Returns the run's stored status.
    #[napi]
    pub fn persist(&mut self, batch_json: String) -> Result<String> {
        let batch: Batch = serde_json::from_str(&batch_json)
            .map_err(|e| Error::from_reason(format!("invalid durable batch: {e}")))?;
        let mut records = Vec::with_capacity(batch.e.len() + 2);
        let mut run_changed = false;
        for (kind, step, parent, node, time, data) in &batch.e {
            let time = *time as i64;
            let d: Data = match data {
                Some(raw) if raw.get().starts_with('{') => {
                    serde_json::from_str(raw.get()).unwrap_or_default()
                }
                _ => Data::default(),
            };
            match kind.as_str() {
                "dag:node_start" | "state_machine:node_start" => {
                    self.step_seq += 1;
                    self.open_steps.insert(step.clone());
                    self.last_step = Some(step.clone());
                    records.push(Record::Step(Step {
                        id: step.clone(),
                        run_id: self.run_id.clone(),
                        seq: self.step_seq,
                        node: node.clone(),
                        parent_step_id: parent.clone(),
                        input: text(d.input),
                        output: None,
                        error: None,
                        status: ramus_store::StepStatus::Running,
                        attempt: 1,
                        started_at: Some(time),
                        ended_at: None,
                    }));
                }
                "dag:node_finish" | "state_machine:node_finish" => {
                    if self.open_steps.remove(step) {
                        records.push(step_end(
                            step,
                            ramus_store::StepStatus::Finished,
                            text(d.output),
                            None,
                            time,
                        ));
                    }
                }
                "dag:node_error" => {
                    if self.open_steps.remove(step) {
                        records.push(step_end(
                            step,
                            ramus_store::StepStatus::Error,
                            None,
                            text(d.error),
                            time,
                        ));
                    }
                }
                "state_machine:error" => {
                    if self.open_steps.remove(step) {
                        records.push(step_end(
                            step,
                            ramus_store::StepStatus::Error,
                            None,
                            text(d.error),
                            time,
                        ));
                    }
                }
                "dag:node_state" => {
                    if d.state.as_deref() == Some("cancelled") && self.open_steps.remove(step) {
                        records.push(step_end(
                            step,
                            ramus_store::StepStatus::Cancelled,
                            None,
                            None,
                            time,
                        ));
                    }
                }
                "state_machine:transition" => {
                    self.transition_seq += 1;
                    records.push(Record::Transition(Transition {
                        id: crate::new_id(),
                        run_id: self.run_id.clone(),
                        step_id: self.last_step.clone().filter(|s| s == step),
                        seq: self.transition_seq,
                        from_state: d.from,
                        to_state: d.to.unwrap_or_default(),
                        event_type: d.event,
                        event_data: text(d.event_data),
                        time,
                    }));
                }
                "state_machine:status" => {
                    if let Some(s) = d.status.as_deref().and_then(run_status) {
                        if !s.is_terminal() && s != self.status {
                            self.status = s;
                            run_changed = true;
                        }
                    }
                }
                k if k.starts_with("dag:") || k.starts_with("state_machine:") => {}
                custom => records.push(Record::Event(CustomEvent {
                    id: crate::new_id(),
                    run_id: self.run_id.clone(),
                    step_id: Some(step.clone()),
                    parent_step_id: parent.clone(),
                    event_type: custom.to_owned(),
                    source: Some(self.source.to_owned()),
                    source_node: Some(node.clone()).filter(|n| !n.is_empty()),
                    data: data.map(|r| r.get().to_owned()),
                    time,
                })),
            }
        }
        for op in batch.timers {
            records.push(match op {
                TimerOp::Arm(_, id, kind, due, payload) => Record::Timer(Timer {
                    id,
                    run_id: self.run_id.clone(),
                    kind: if kind == "delay" {
                        ramus_store::TimerKind::Delay
                    } else {
                        ramus_store::TimerKind::Timeout
                    },
                    due_at: due as i64,
                    payload: Some(payload.to_string()),
                    fired_at: None,
                }),
                TimerOp::Fired(_, id, at) => Record::TimerFired { id, at: at as i64 },
                TimerOp::Clear(_, id) => Record::TimerCancelled { id },
            });
        }
        let now = now_ms() as i64;
        for id in batch.delivered {
            records.push(Record::EventDelivered { id, at: now });
        }
        let mut update = None;
        if run_changed || batch.snap.is_some() {
            let mut u = ramus_store::RunUpdate::status(&self.run_id, self.status, now);
            u.snapshot = text(batch.snap);
            update = Some(u);
        }
        if let Some(end) = batch.end {
            if !self.ended {
                self.ended = true;
                let status = run_status(&end.status).unwrap_or(RunStatus::Error);
                self.status = status;
                let mut u = update
                    .take()
                    .unwrap_or_else(|| ramus_store::RunUpdate::status(&self.run_id, status, now));
                u.status = status;
                u.output = text(end.output);
                u.error = text(end.error);
                u.ended_at = Some(end.time as i64);
                // Steps left open (cancelled with the run) end with it.
                for step in self.open_steps.drain() {
                    records.push(step_end(
                        &step,
                        ramus_store::StepStatus::Cancelled,
                        None,
                        None,
                        end.time as i64,
                    ));
                }
                update = Some(u);
            }
        }
        records.extend(update.map(Record::RunUpdate));
        self.write(records)?;
        Ok(self.status.as_str().to_owned())
    }
}

fn step_end(
    id: &str,
    status: ramus_store::StepStatus,
    output: Option<String>,
    error: Option<String>,
    at: i64,
) -> Record {
    Record::StepUpdate(ramus_store::StepUpdate {
        id: id.to_owned(),
        status,
        output,
        error,
        started_at: None,
        ended_at: Some(at),
    })
}
