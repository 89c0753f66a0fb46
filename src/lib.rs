//! The Node.js binding of Ramus: JS values in and out of `ramus-core`, nothing more.
//!
//! The JS face (ts/) drives runs on the JS thread: it calls runners and reports each
//! outcome here synchronously. Calls pass integers and a reusable `Uint32Array`; structured
//! data crosses as JSON, which V8 and serde both handle far faster than napi property
//! access (see ARCHITECTURE.md).

#![deny(clippy::all)]

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use napi::bindgen_prelude::*;
use napi_derive::napi;
use ramus_core::{
    CompiledDag, DagRun, DagRunOptions, DataRef, Event, EventKind, Id, Launch, NodeSpec, Outcome,
    Recorder, RunStatus, SemaphoreTable,
};
use ramus_store::StepStatus;
use sinks::Sinks;
use store::{NativeStore, RunWriter};
use trace::{error_message, RunKind, RunSpans};

pub mod machine;
mod sinks;
pub mod store;
pub mod trace;

/// A fresh UUIDv7 for a stored run.
#[napi]
pub fn new_run_id() -> String {
    new_id()
}

/// A fresh UUIDv7 (runs of an engine, stored events, timers).
pub(crate) fn new_id() -> String {
    // One generator per process keeps ids minted in the same millisecond ordered.
    static IDS: std::sync::LazyLock<std::sync::Mutex<ramus_core::IdGen>> =
        std::sync::LazyLock::new(|| std::sync::Mutex::new(ramus_core::IdGen::new(seed())));
    let mut ids = IDS.lock().unwrap_or_else(|e| e.into_inner());
    ids.next(now_ms()).to_string()
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A fresh seed per run: the OS-seeded keys of `RandomState`, so ids of runs in different
/// processes never share their random bits.
pub(crate) fn seed() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(now_ms());
    h.finish()
}

pub(crate) fn parse_id(what: &str, s: &str) -> Result<Id> {
    s.parse()
        .map_err(|_| Error::from_reason(format!("{what} is not a UUID: {s}")))
}

/// Node specs arrive as one JSON array of `[name, parents, tolerateParentErrors, semaphoreKey]`.
fn parse_specs(json: &str) -> Result<Vec<NodeSpec>> {
    type Row = (String, Option<Vec<String>>, bool, Option<String>);
    let rows: Vec<Row> = serde_json::from_str(json)
        .map_err(|e| Error::from_reason(format!("invalid DAG node list: {e}")))?;
    Ok(rows
        .into_iter()
        .map(|(name, parents, tolerate, key)| NodeSpec {
            name,
            parents: parents.unwrap_or_default(),
            tolerate_parent_errors: tolerate,
            semaphore_key: key,
        })
        .collect())
}

/// Roots and leaves of a DAG, by name.
#[napi(object)]
pub struct DagAnalysis {
    /// Nodes without parents.
    pub root_nodes: Vec<String>,
    /// Nodes that are nobody's parent.
    pub leaf_nodes: Vec<String>,
}

/// Validate a node list (JSON rows) and return its roots and leaves.
#[napi]
pub fn analyze_dag_specs(spec_json: String) -> Result<DagAnalysis> {
    let a = ramus_core::analyze(&parse_specs(&spec_json)?)
        .map_err(|e| Error::from_reason(e.to_string()))?;
    Ok(DagAnalysis {
        root_nodes: a.root_nodes,
        leaf_nodes: a.leaf_nodes,
    })
}

/// A compiled DAG, shared by its runs.
#[napi]
pub struct NativeDag {
    inner: Arc<CompiledDag>,
}

#[napi]
impl NativeDag {
    /// Validate and compile; throws with the contract's messages.
    #[napi(constructor)]
    pub fn new(name: String, spec_json: String) -> Result<Self> {
        let specs = parse_specs(&spec_json)?;
        let inner =
            CompiledDag::compile(name, &specs).map_err(|e| Error::from_reason(e.to_string()))?;
        Ok(NativeDag {
            inner: Arc::new(inner),
        })
    }

    /// Leaf node ids, in declaration order.
    #[napi]
    pub fn leaves(&self) -> Uint32Array {
        Uint32Array::new(self.inner.leaves().to_vec())
    }

    /// Root node ids, in declaration order.
    #[napi]
    pub fn roots(&self) -> Uint32Array {
        Uint32Array::new(self.inner.roots().to_vec())
    }

    /// Parents of every node as a compressed table: entries `[n+1 .. ]` hold the parent ids
    /// and entry `i` the offset of node `i`'s parents in it, so JS builds inputs with
    /// integer loops.
    #[napi]
    pub fn parent_table(&self) -> Uint32Array {
        let n = self.inner.len();
        let mut table = Vec::with_capacity(n + 1 + n);
        let mut off = n as u32 + 1;
        for i in 0..n as u32 {
            table.push(off);
            off += self.inner.parents(i).len() as u32;
        }
        table.push(off);
        for i in 0..n as u32 {
            table.extend_from_slice(self.inner.parents(i));
        }
        Uint32Array::new(table)
    }
}

const STATUS_SHIFT: u32 = 24;
const KIND_ACQUIRE: u32 = 1 << 30;
const KIND_READY: u32 = 2 << 30;

fn status_code(s: RunStatus) -> u32 {
    match s {
        RunStatus::Pending => 0,
        RunStatus::Running => 1,
        RunStatus::Finished => 2,
        RunStatus::Failed => 3,
        RunStatus::Cancelled => 4,
    }
}

/// One DAG run, driven by the JS face.
///
/// Every driving call writes the nodes to launch into `buf` (node id, with the kind in the
/// top two bits: run now, acquire semaphores first, or ready in stepwise mode) and returns
/// `count | status << 24`, so one crossing tells the driver both what to do and whether
/// the run ended.
#[napi]
pub struct NativeDagRun {
    run: DagRun,
    launches: Vec<Launch>,
    /// Set when the run is stored or traced: what those sinks need from its events.
    tap: Option<DagTap>,
}

/// What a DAG run keeps for the sinks fed in Rust (the store, spans): the sinks, and the
/// JSON of outputs (a node's stored input is built from its parents' outputs) and errors.
struct DagTap {
    sinks: Sinks,
    outputs: Vec<Option<String>>,
    errors: Vec<Option<String>>,
}

impl DagTap {
    /// A node's input as stored: `{ parent: output, … }`, like the object its runner gets
    /// (an undefined output is left out, as `JSON.stringify` does).
    fn input(&self, dag: &CompiledDag, node: u32) -> String {
        let mut s = String::from("{");
        for &p in dag.parents(node) {
            if let Some(out) = &self.outputs[p as usize] {
                if s.len() > 1 {
                    s.push(',');
                }
                s.push_str(&serde_json::to_string(dag.node_name(p)).unwrap_or_default());
                s.push(':');
                s.push_str(out);
            }
        }
        s.push('}');
        s
    }
}

#[napi]
impl NativeDagRun {
    /// `flags`: 1 tolerate failures, 2 stepwise, 4 has semaphores. `run_id` and
    /// `parent_step_id` are given when the run is nested in another run's step.
    #[napi(constructor)]
    pub fn new(
        dag: &NativeDag,
        flags: u32,
        run_id: Option<String>,
        parent_step_id: Option<String>,
    ) -> Result<Self> {
        let run_id = run_id.map(|s| parse_id("runId", &s)).transpose()?;
        let parent = parent_step_id
            .map(|s| parse_id("parentStepId", &s))
            .transpose()?;
        let opts = DagRunOptions {
            tolerate_failures: flags & 1 != 0,
            manual: flags & 2 != 0,
            semaphores: flags & 4 != 0,
        };
        let rec = Recorder::new(seed(), dag.inner.len(), run_id, parent);
        Ok(NativeDagRun {
            run: DagRun::new(Arc::clone(&dag.inner), opts, rec),
            launches: Vec::new(),
            tap: None,
        })
    }

    fn tap(&mut self) -> &mut DagTap {
        let n = self.run.dag().len();
        if self.tap.is_none() {
            self.tap = Some(DagTap {
                sinks: Sinks::new(self.run.recorder()),
                outputs: Vec::new(),
                errors: vec![None; n],
            });
        }
        self.tap.as_mut().expect("set above")
    }

    /// Record spans of this run (tracing is configured): `traceparent` is the caller's
    /// active span or the step the run is nested in; `attributes` (JSON) extra attributes
    /// per node. Call before `start` or `attach_store`.
    #[napi]
    pub fn trace(&mut self, name: String, traceparent: Option<String>, attributes: Option<String>) {
        let run_id = self.run.recorder().run_id(now_ms()).to_string();
        if let Some(spans) = RunSpans::start(
            RunKind::Dag,
            &name,
            &run_id,
            traceparent.as_deref(),
            attributes.as_deref(),
        ) {
            self.tap().sinks.spans = Some(spans);
        }
    }

    /// The `traceparent` of a node's span (or the run's), for runs started inside it.
    #[napi]
    pub fn traceparent(&self, node: Option<u32>) -> Option<String> {
        self.tap
            .as_ref()?
            .sinks
            .spans
            .as_ref()
            .map(|s| s.traceparent(node))
    }

    /// Make the run durable: `run_json` describes its row (see `RunWriter::open`).
    #[napi]
    pub fn attach_store(
        &mut self,
        store: &NativeStore,
        run_json: String,
        resume: bool,
        sync: bool,
    ) -> Result<()> {
        let ids = self
            .tap
            .as_ref()
            .and_then(|t| t.sinks.spans.as_ref())
            .map(|s| s.ids());
        let (writer, _) = RunWriter::open(store, &run_json, resume, sync, ids)?;
        let n = self.run.dag().len();
        let tap = self.tap();
        tap.outputs = vec![None; n];
        tap.sinks.writer = Some(writer);
        Ok(())
    }

    /// Hand the events of the last call to the store writer and the spans.
    fn persist(&mut self) {
        let Some(d) = self.tap.as_mut() else {
            return;
        };
        let dag = Arc::clone(self.run.dag());
        let failed = self.run.failed_node();
        let rec = self.run.recorder();
        let events = rec.events();
        for e in d.sinks.unhandled(events) {
            let node = e.node.unwrap_or(0);
            let step = || e.step.to_string();
            match &e.kind {
                EventKind::DagNodeStart => {
                    if let Some(s) = d.sinks.spans.as_mut() {
                        s.step_started(node, dag.node_name(node), &step(), e.time);
                    }
                    if d.sinks.writer.is_some() {
                        let input = d.input(&dag, node);
                        if let Some(w) = d.sinks.writer.as_mut() {
                            w.step_started(
                                node,
                                step(),
                                dag.node_name(node).to_owned(),
                                e.parent_step.map(|p| p.to_string()),
                                Some(input),
                                e.time,
                            );
                        }
                    }
                }
                EventKind::DagNodeFinish => {
                    if let Some(s) = d.sinks.spans.as_mut() {
                        s.step_ended(node, "finished", None, e.time);
                    }
                    if let Some(w) = d.sinks.writer.as_mut() {
                        let output = d.outputs[node as usize].clone();
                        w.step_ended(node, StepStatus::Finished, output, None, e.time);
                    }
                }
                EventKind::DagNodeError => {
                    let error = d.errors[node as usize].clone();
                    if let Some(s) = d.sinks.spans.as_mut() {
                        s.step_ended(node, "error", Some(error_message(error.as_deref())), e.time);
                    }
                    if let Some(w) = d.sinks.writer.as_mut() {
                        w.step_ended(node, StepStatus::Error, None, error, e.time);
                    }
                }
                EventKind::DagNodeState if e.data == DataRef::State("cancelled") => {
                    if let Some(s) = d.sinks.spans.as_mut() {
                        s.step_ended(node, "cancelled", None, e.time);
                    }
                    if let Some(w) = d.sinks.writer.as_mut() {
                        w.step_ended(node, StepStatus::Cancelled, None, None, e.time);
                    }
                }
                EventKind::DagFinish => d.sinks.end_spans("finished", None),
                EventKind::DagError => {
                    let failed = failed.and_then(|n| d.errors[n as usize].as_deref());
                    d.sinks.end_spans("error", Some(error_message(failed)));
                }
                EventKind::Custom(t) => {
                    d.sinks
                        .custom(e, t, e.node.map(|n| dag.node_name(n).to_owned()))
                }
                _ => {}
            }
        }
        d.sinks.handled(rec);
    }

    /// Write what the run collected (with its snapshot, JSON) to the store: committed
    /// before this returns in `sync`.
    #[napi]
    pub fn store_flush(&mut self, snapshot: Option<String>) -> Result<()> {
        self.tap
            .as_mut()
            .map_or(Ok(()), |t| t.sinks.flush(snapshot))
    }

    /// Record how the run ended (`finished` with the output, `error`, `cancelled`), JSON.
    #[napi]
    pub fn store_end(&mut self, status: String, output: Option<String>, error: Option<String>) {
        if let Some(t) = self.tap.as_mut() {
            t.sinks.end(&status, output, error);
        }
    }

    fn now(&mut self) -> u64 {
        if self.run.recorder().observing() {
            now_ms()
        } else {
            0
        }
    }

    fn flush(&mut self, mut buf: Uint32ArraySlice) -> u32 {
        // SAFETY: the buffer is only touched by JS on this same thread, which is blocked in
        // this call; nothing else aliases it while we write.
        let out: &mut [u32] = unsafe { buf.as_mut() };
        let mut count = 0u32;
        for launch in self.launches.drain(..) {
            out[count as usize] = match launch {
                Launch::Run(n) => n,
                Launch::AcquireSemaphore(n) => n | KIND_ACQUIRE,
                Launch::Ready(n) => n | KIND_READY,
            };
            count += 1;
        }
        count | status_code(self.run.status()) << STATUS_SHIFT
    }

    /// Start the run.
    #[napi]
    pub fn start(&mut self, buf: Uint32ArraySlice) -> u32 {
        let now = self.now();
        self.run.start(now, &mut self.launches);
        self.persist();
        self.flush(buf)
    }

    /// Report a node's outcome: 0 ok, 1 error, 2 cancelled itself. A durable run passes
    /// the output (or error) as JSON.
    #[napi]
    pub fn complete(
        &mut self,
        node: u32,
        outcome: u32,
        buf: Uint32ArraySlice,
        value: Option<String>,
    ) -> u32 {
        let outcome = match outcome {
            0 => Outcome::Ok,
            1 => Outcome::Error,
            _ => Outcome::Cancelled,
        };
        if let Some(d) = self.tap.as_mut() {
            match outcome {
                Outcome::Ok if (node as usize) < d.outputs.len() => {
                    d.outputs[node as usize] = value
                }
                Outcome::Error if (node as usize) < d.errors.len() => {
                    d.errors[node as usize] = value
                }
                _ => {}
            }
        }
        let now = self.now();
        self.run.complete(node, outcome, now, &mut self.launches);
        self.persist();
        self.flush(buf)
    }

    /// A node's semaphores were acquired; a count of 0 means it must not run (release).
    #[napi]
    pub fn acquired(&mut self, node: u32, buf: Uint32ArraySlice) -> u32 {
        let now = self.now();
        self.run.semaphore_acquired(node, now, &mut self.launches);
        self.persist();
        self.flush(buf)
    }

    /// Stepwise: start a ready node; a count of 0 means it was not ready.
    #[napi]
    pub fn run_node(&mut self, node: u32, buf: Uint32ArraySlice) -> u32 {
        let now = self.now();
        self.run.run_node(node, now, &mut self.launches);
        self.persist();
        self.flush(buf)
    }

    /// Before `start`: a node that finished in an earlier process (restore); false when
    /// it is unknown or already marked.
    #[napi]
    pub fn restore_finished(&mut self, node: u32, output: Option<String>) -> bool {
        let restored = self.run.restore_finished(node);
        if let Some(d) = self
            .tap
            .as_mut()
            .filter(|d| restored && !d.outputs.is_empty())
        {
            d.outputs[node as usize] = output;
        }
        restored
    }

    /// Before `start`: restore every node with a finished (or, when failures are
    /// tolerated, failed) step of stored run `run_id`. Returns `{"ok": [[node, output], …],
    /// "err": [[node, error], …]}` (JSON; `[node]` when the output was undefined) for the
    /// face's copy of the values.
    #[napi]
    pub fn restore_from_store(&mut self, store: &NativeStore, run_id: String) -> Result<String> {
        use std::fmt::Write;
        let rows = store
            .inner
            .settled_steps(&run_id)
            .map_err(store::store_error)?;
        let dag = Arc::clone(self.run.dag());
        let (mut ok, mut err) = (String::new(), String::new());
        for (name, finished, value) in rows {
            let Some(node) = dag.node_id(&name) else {
                continue;
            };
            let restored = if finished {
                self.run.restore_finished(node)
            } else {
                self.run.restore_failed(node)
            };
            if !restored {
                continue;
            }
            let out = if finished { &mut ok } else { &mut err };
            if !out.is_empty() {
                out.push(',');
            }
            // `[node]` for an undefined value (stored as NULL), so it comes back undefined.
            let _ = match value.as_deref() {
                Some(json) => write!(out, "[{node},{json}]"),
                None => write!(out, "[{node}]"),
            };
            if let Some(d) = self.tap.as_mut().filter(|d| !d.outputs.is_empty()) {
                if finished {
                    d.outputs[node as usize] = value;
                } else {
                    d.errors[node as usize] = value;
                }
            }
        }
        Ok(format!(r#"{{"ok":[{ok}],"err":[{err}]}}"#))
    }

    /// Cancel the run; false when it had already ended.
    #[napi]
    pub fn cancel(&mut self) -> bool {
        let now = self.now();
        let cancelled = self.run.cancel(now);
        self.persist();
        if let Some(t) = self.tap.as_mut().filter(|_| cancelled) {
            t.sinks.end_spans("cancelled", None);
        }
        cancelled
    }

    /// The run's status code (0 pending, 1 running, 2 finished, 3 failed, 4 cancelled).
    #[napi(getter)]
    pub fn status(&self) -> u32 {
        status_code(self.run.status())
    }

    /// The node whose failure failed the run, or -1.
    #[napi(getter)]
    pub fn failed_node(&self) -> i32 {
        self.run.failed_node().map_or(-1, |n| n as i32)
    }

    /// A node's state name.
    #[napi]
    pub fn node_state(&self, node: u32) -> &'static str {
        self.run.node_state(node).as_str()
    }

    /// Whether a node was cancelled (what `isCancelled()` reads).
    #[napi]
    pub fn is_cancelled(&self, node: u32) -> bool {
        self.run.is_cancelled(node)
    }

    /// The run id (shared with the enclosing run when nested).
    #[napi]
    pub fn run_id(&mut self) -> String {
        self.run.recorder().run_id(now_ms()).to_string()
    }

    /// A node's step id.
    #[napi]
    pub fn step_id(&mut self, node: u32) -> String {
        self.run.step_id(node, now_ms()).to_string()
    }

    /// Turn event delivery to JS on or off (a durable run records events anyway).
    #[napi]
    pub fn set_observe(&mut self, on: bool) {
        match self.tap.as_mut() {
            Some(d) => d.sinks.set_listened(on),
            None => self.run.recorder().set_observe(on),
        }
    }

    /// Record a custom event of a node's step; the JS face keeps its data, and passes it
    /// as JSON when the run is durable.
    #[napi]
    pub fn custom_event(&mut self, node: u32, event_type: String, data: Option<String>) {
        let now = self.now();
        if let Some(d) = self.tap.as_mut() {
            d.sinks.push_custom(data);
        }
        self.run.recorder().custom_event(node, &event_type, now);
        self.persist();
    }

    /// The events recorded since the last call, as a JSON array (null when none).
    #[napi]
    pub fn drain_events(&mut self) -> Option<String> {
        if let Some(d) = self.tap.as_mut() {
            d.sinks.drained();
        }
        drain_json(self.run.recorder())
    }
}

/// Drain a recorder's events into the JSON the JS face reads (None when empty).
pub(crate) fn drain_json(rec: &mut Recorder) -> Option<String> {
    if !rec.has_events() {
        return None;
    }
    let events = rec.drain();
    let run_id = rec.run_id(now_ms());
    Some(events_json(&events, run_id))
}

/// `(code, state name, argument)`; the argument is the machine's state id for status events.
fn data_code(d: DataRef) -> (u8, &'static str, i64) {
    match d {
        DataRef::RunInput => (1, "", -1),
        DataRef::RunOutput => (2, "", -1),
        DataRef::RunError => (3, "", -1),
        DataRef::NodeInput => (4, "", -1),
        DataRef::NodeOutput => (5, "", -1),
        DataRef::NodeError => (6, "", -1),
        DataRef::State(s) => (7, s, -1),
        DataRef::Custom => (8, "", -1),
        DataRef::Status(s, state) => (9, s, state as i64),
        DataRef::Transition => (10, "", -1),
    }
}

/// Events as compact JSON: `{"r": runId, "s": [stepId, …], "e": [[id, type, step, parentStep,
/// node, time, data, state, arg], …]}` where `step`/`parentStep` index the `s` table (-1 for
/// none). Step ids repeat across a step's events and the run id across all of them, so each
/// is formatted and parsed once per drain; the source and node names are the face's to add.
pub(crate) fn events_json(events: &[Event], run_id: Id) -> String {
    use std::fmt::Write;
    let mut steps: Vec<Id> = Vec::new();
    let mut seen: HashMap<Id, usize> = HashMap::new();
    let mut index = |id: Id, steps: &mut Vec<Id>| {
        *seen.entry(id).or_insert_with(|| {
            steps.push(id);
            steps.len() - 1
        })
    };
    let mut body = String::with_capacity(events.len() * 100);
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        let step = index(e.step, &mut steps);
        let parent = e.parent_step.map_or(-1, |p| index(p, &mut steps) as i64);
        let (code, state, arg) = data_code(e.data);
        let _ = write!(
            body,
            r#"["{}",{},{},{},{},{},{},"{}",{}]"#,
            e.id,
            serde_json::to_string(e.kind.as_str()).unwrap_or_default(),
            step,
            parent,
            e.node.map_or(-1, |n| n as i64),
            e.time,
            code,
            state,
            arg
        );
    }
    let mut s = String::with_capacity(body.len() + steps.len() * 40 + 64);
    let _ = write!(s, r#"{{"r":"{run_id}","s":["#);
    for (i, id) in steps.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "\"{id}\"");
    }
    s.push_str("],\"e\":[");
    s.push_str(&body);
    s.push_str("]}");
    s
}

/// Keyed counting semaphores for `LocalSemaphore`; the JS face keeps the promise
/// resolvers, keyed by the waiter ids this hands out.
#[napi]
pub struct NativeSemaphore {
    table: SemaphoreTable,
    next_waiter: u32,
}

fn limit_value(key: &str, limit: f64) -> Result<u32> {
    if limit.is_finite() && limit >= 0.0 && limit.fract() == 0.0 && limit <= u32::MAX as f64 {
        Ok(limit as u32)
    } else {
        Err(Error::from_reason(format!(
            "Semaphore limit for '{key}' must be a non-negative integer, got {limit}"
        )))
    }
}

#[napi]
impl NativeSemaphore {
    /// Limits per key.
    #[napi(constructor)]
    pub fn new(limits: HashMap<String, f64>) -> Result<Self> {
        let limits = limits
            .into_iter()
            .map(|(k, v)| limit_value(&k, v).map(|l| (k, l)))
            .collect::<Result<Vec<_>>>()?;
        Ok(NativeSemaphore {
            table: SemaphoreTable::new(limits),
            next_waiter: 0,
        })
    }

    /// 0 when a slot was taken now, else the waiter id that a later release will return.
    #[napi]
    pub fn acquire(&mut self, key: String) -> u32 {
        self.next_waiter = self.next_waiter.wrapping_add(1).max(1);
        if self.table.acquire(&key, self.next_waiter as u64) {
            0
        } else {
            self.next_waiter
        }
    }

    /// Give a slot back; returns the waiter that now holds it, or 0.
    #[napi]
    pub fn release(&mut self, key: String) -> u32 {
        self.table.release(&key).map_or(0, |w| w as u32)
    }

    /// Change or create a key's limit; returns the waiters that now hold slots.
    #[napi]
    pub fn set_limit(&mut self, key: String, limit: f64) -> Result<Vec<u32>> {
        let limit = limit_value(&key, limit)?;
        Ok(self
            .table
            .set_limit(&key, limit)
            .into_iter()
            .map(|w| w as u32)
            .collect())
    }

    /// Slots of `key` held now.
    #[napi]
    pub fn current(&self, key: String) -> u32 {
        self.table.current(&key)
    }
}
