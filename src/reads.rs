//! The store from JS: an engine's database, its reads as JSON for the face and the
//! inspector, and the few writes that are not a run's (events sent to a run, prune).
//!
//! Reads return JSON text (one `JSON.parse` in JS) rather than napi objects: a run with
//! 10k steps is one string, not 10k×12 property sets.

use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use ramus_store::{
    CustomEvent, Definition, Durability, Kind, PendingEvent, Record, Run, RunFilter, RunQuery,
    RunStatus, SqliteStore, Step, Timer, Transition,
};
use serde_json::{json, Map, Value};

use crate::{coded, JsResult as Result};

fn now_ms() -> u64 {
    ramus_engine::Clock::now_ms(&ramus_engine::SystemClock)
}

pub(crate) fn store_error(e: ramus_store::Error) -> crate::JsError {
    crate::js_error(e.into())
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
        "forkedFrom": r.forked_from_run_id.as_ref().map(|run| json!({
            "runId": run, "stepId": r.forked_from_step_id,
        })),
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
        "error": value(&s.error), "status": s.status.as_str(), "attempt": s.attempt, "cached": s.cached,
        "startedAt": s.started_at, "endedAt": s.ended_at, "supersededAt": s.superseded_at,
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
        .map_err(|e| coded("ERR_INVALID_ARGUMENT", format!("invalid run filter: {e}")))?;
    let status = match v.get("status").and_then(Value::as_str) {
        Some(s) => Some(s.parse::<RunStatus>().map_err(|_| {
            coded(
                "ERR_INVALID_ARGUMENT",
                format!(
                    "Unknown run status '{s}' (expected one of {})",
                    RunStatus::ALL
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
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
        .map_err(|e| coded("ERR_INVALID_ARGUMENT", format!("invalid run query: {e}")))?;
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
        other => Err(coded(
            "ERR_INVALID_ARGUMENT",
            format!("Unknown durability '{other}' (expected 'sync', 'batched' or 'off')"),
        )),
    }
}

pub(crate) fn parse_kind(s: &str) -> Result<Kind> {
    s.parse().map_err(|_| {
        coded(
            "ERR_INVALID_ARGUMENT",
            format!("Unknown definition kind '{s}'"),
        )
    })
}

/// A limit and its use, as JS reads it: `{ key, concurrency, rate: { count, per } | null,
/// running, waiting }`.
pub(crate) fn limit_json(l: ramus_store::LimitUse) -> Value {
    let (key, concurrency, rate, running, waiting) = l;
    json!({
        "key": key,
        "concurrency": concurrency,
        "rate": rate.map(|(count, per)| json!({ "count": count, "per": per })),
        "running": running,
        "waiting": waiting,
    })
}

/// A schedule as JS reads it: `{ name, definition, cron, timezone, input, tags, priority,
/// next }`.
pub(crate) fn schedule_json(s: ramus_store::ScheduleRow) -> Value {
    json!({
        "name": s.name,
        "definition": s.definition_name,
        "cron": s.cron,
        "timezone": s.timezone,
        "input": s.input.as_deref().and_then(|i| serde_json::from_str::<Value>(i).ok()),
        "tags": s.tags,
        "priority": s.priority,
        "next": s.next_at,
    })
}

/// Waits for a store's commit off the JS thread.
pub struct FlushStore(pub(crate) Arc<SqliteStore>);

impl Task for FlushStore {
    type Output = ();
    type JsValue = ();

    fn compute(&mut self) -> napi::Result<()> {
        match self.0.flush() {
            // Closing commits everything queued before it: nothing was lost.
            Err(ramus_store::Error::Closed) | Ok(()) => Ok(()),
            Err(e) => Err(Error::from_reason(e.to_string())),
        }
    }

    fn resolve(&mut self, _: Env, _: ()) -> napi::Result<()> {
        Ok(())
    }
}

/// An open run database: what `Engine` and the inspector hold.
#[napi]
pub struct NativeStore {
    pub(crate) inner: Arc<SqliteStore>,
}

#[napi]
impl NativeStore {
    /// Open (creating and migrating if needed) the database at `path` (or `:memory:`).
    #[napi(constructor)]
    pub fn new(path: String, durability: String) -> Result<Self> {
        let durability = parse_durability(&durability)?;
        let inner = SqliteStore::open(&path, durability).map_err(store_error)?;
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

    /// Who holds a run's lease: JSON `{ owner, expiresAt }`, or null.
    #[napi]
    pub fn lease(&self, run_id: String) -> Result<Option<String>> {
        let lease = self.inner.lease_of(&run_id).map_err(store_error)?;
        Ok(lease.map(|(owner, expires_at)| {
            json!({ "owner": owner, "expiresAt": expires_at }).to_string()
        }))
    }

    /// A run's steps in `seq` order (JSON array).
    #[napi]
    pub fn steps(&self, run_id: String) -> Result<String> {
        let steps = self.inner.steps(&run_id).map_err(store_error)?;
        Ok(list(&steps, step_json))
    }

    /// A machine run's context when one of its steps started (JSON), rebuilt from the
    /// patches its steps store.
    #[napi]
    pub fn context_at(&self, run_id: String, step_id: String) -> Result<String> {
        ramus_engine::travel::context_at(self.inner.as_ref(), &run_id, &step_id)
            .map(|v| v.to_string())
            .map_err(crate::js_error)
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

    /// The ids of a run's steps still running or pending (interrupted by a crash).
    #[napi]
    pub fn open_steps(&self, run_id: String) -> Result<Vec<String>> {
        let steps = self.inner.open_steps(&run_id).map_err(store_error)?;
        Ok(steps.into_iter().map(|(id, _, _)| id).collect())
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
            return Err(coded(
                "ERR_NO_RUN",
                format!("No run with id '{run_id}' in the database"),
            ));
        }
        let id = ramus_engine::ids::new_id(now_ms());
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
        SqliteStore::probe(&path).map_err(store_error)
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

    /// The limits on the store with the slots held and steps waiting at `now_ms`, and the
    /// schedules: JSON `{ limits: [{ key, concurrency, rate, running, waiting }],
    /// schedules: [{ name, definition, cron, timezone, next }] }`.
    #[napi]
    pub fn queue_state(&self, now_ms: f64) -> Result<String> {
        let limits: Vec<Value> = self
            .inner
            .limits(now_ms as i64)
            .map_err(store_error)?
            .into_iter()
            .map(limit_json)
            .collect();
        let schedules: Vec<Value> = self
            .inner
            .schedules(None)
            .map_err(store_error)?
            .into_iter()
            .map(schedule_json)
            .collect();
        Ok(json!({ "limits": limits, "schedules": schedules }).to_string())
    }

    /// A number that changes whenever anything was committed to the database since it was
    /// last read (by this store or another process): pollers compare it to skip re-reads.
    #[napi]
    pub fn data_version(&self) -> Result<i64> {
        self.inner.data_version().map_err(store_error)
    }
}
