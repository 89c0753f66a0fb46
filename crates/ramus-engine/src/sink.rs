//! The sinks a run's events feed in Rust — the store ([`RunWriter`]) and spans
//! ([`RunSpans`]) — written once for both kinds of run. The values those sinks need
//! (outputs, errors, inputs, event data) arrive as JSON text with the commands that carry
//! them; the driver's own values (JS objects, `serde_json::Value`s) never cross.

use std::collections::{HashMap, VecDeque};

use opentelemetry::KeyValue;
use ramus_core::{Action, DataRef, End, Event, EventKind, Executor, InputRef, MachineStatus};
use ramus_store::{RunStatus, StepStatus};

use crate::def::RunDef;
use crate::trace::{error_message, RunSpans};
use crate::writer::{stored_status, RunWriter, StepStart};

/// The JSON texts a run keeps for its sinks.
#[derive(Debug)]
pub enum Values {
    /// A DAG: each node's output and error.
    Dag {
        /// Outputs by node.
        outputs: Vec<Option<String>>,
        /// Errors by node.
        errors: Vec<Option<String>>,
    },
    /// A machine: what its snapshot holds besides the core's part.
    Machine(MachineValues),
}

/// What a machine run holds besides the core's snapshot, as JSON texts.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineValues {
    /// The current state's input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Box<serde_json::value::RawValue>>,
    /// The last output of a state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Box<serde_json::value::RawValue>>,
    /// The current state's own output (none until it ran).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_output: Option<Box<serde_json::value::RawValue>>,
    /// The event that caused the move into the current state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<EventValue>,
    /// Events the core holds (queued, or the one that chose a pending delay), by handle.
    #[serde(default)]
    pub events: Vec<(u64, EventValue)>,
    /// The last error, JSON text (not stored in snapshots: the core re-creates it).
    #[serde(skip)]
    pub error: Option<String>,
    /// A fork's output for the state it starts in: that state's next step takes it
    /// instead of running (kept until a step ends, so a resume before then still does).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub given: Option<Box<serde_json::value::RawValue>>,
}

/// An event's type and data.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EventValue {
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Its data, JSON text.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub data: Option<Box<serde_json::value::RawValue>>,
}

pub(crate) fn raw(json: Option<&str>) -> Option<Box<serde_json::value::RawValue>> {
    json.and_then(|j| serde_json::value::RawValue::from_string(j.to_owned()).ok())
}

fn text(raw: &Option<Box<serde_json::value::RawValue>>) -> Option<String> {
    raw.as_ref().map(|r| r.get().to_owned())
}

impl MachineValues {
    fn take_event(&mut self, handle: u64) -> Option<EventValue> {
        let at = self.events.iter().position(|(h, _)| *h == handle)?;
        Some(self.events.swap_remove(at).1)
    }
}

/// The error of a DAG node cancelled with `cancelNode` while its run went on: a restore
/// keeps such a node cancelled (a rerun of it sets the step aside).
pub const NODE_CANCELLED: &str =
    r#"{"name":"CancelledError","message":"cancelled with cancelNode; rerun brings it back"}"#;

/// A `TimeoutError` as stored.
fn timeout_error(message: &str) -> String {
    serde_json::json!({ "name": "TimeoutError", "message": message }).to_string()
}

/// The sinks of one run and the values they need.
pub struct Tap {
    /// The store writer, when the run is durable.
    pub writer: Option<RunWriter>,
    /// The run's spans, when tracing is on.
    pub spans: Option<RunSpans>,
    /// Values as JSON text.
    pub values: Values,
    /// The context as JSON text: for a machine, as it was when the running state started.
    pub context: Option<String>,
    /// The data (JSON) of custom events recorded and not handled yet, in order, and
    /// whether each is stored (`emit(…, { store: false })` is for listeners only).
    custom: VecDeque<(Option<String>, bool)>,
    /// Events of the recorder already handled (a listener drains them later).
    cursor: usize,
    /// Whether the driver drains the recorder too; if not, handled events are dropped.
    listened: bool,
    /// Machines: moves of the current call, in the order of their transition events.
    moves: VecDeque<(u32, u32, Option<u64>, InputRef)>,
    /// Machines: the timeout message of each move out of a state that timed out.
    timeouts: HashMap<u32, String>,
    /// The events being handled come from a `cancelNode` (see [`NODE_CANCELLED`]).
    pub branch_cancel: bool,
}

impl Tap {
    /// Sinks for a run; `len` is its node count (DAGs), `machine` whether it is a machine.
    pub fn new(machine: bool, len: usize, listened: bool) -> Tap {
        Tap {
            writer: None,
            spans: None,
            values: if machine {
                Values::Machine(MachineValues::default())
            } else {
                Values::Dag {
                    outputs: vec![None; len],
                    errors: vec![None; len],
                }
            },
            context: None,
            custom: VecDeque::new(),
            cursor: 0,
            listened,
            moves: VecDeque::new(),
            timeouts: HashMap::new(),
            branch_cancel: false,
        }
    }

    /// Whether a value the driver holds must cross as JSON (a store or spans use it).
    pub fn wants_values(&self) -> bool {
        self.writer.is_some() || self.spans.is_some()
    }

    /// The driver starts or stops draining the events.
    pub fn set_listened(&mut self, on: bool) {
        self.listened = on;
    }

    /// The driver drained the recorder: every event is gone, handled or not.
    pub fn drained(&mut self) {
        self.cursor = 0;
    }

    /// A custom event is about to be recorded with this data (JSON); `store: false` keeps
    /// it out of the store and the spans.
    pub fn push_custom(&mut self, data: Option<String>, store: bool) {
        self.custom.push_back((data, store));
    }

    /// A step of `node` (a DAG's node; ignored for a machine) ended with `value` (an
    /// output, or an error when `error`).
    pub fn step_value(&mut self, node: u32, value: Option<String>, error: bool) {
        match &mut self.values {
            Values::Dag { outputs, errors } => {
                let list = if error { errors } else { outputs };
                if let Some(v) = list.get_mut(node as usize) {
                    *v = value;
                }
            }
            Values::Machine(m) => {
                m.given = None;
                if error {
                    m.error = value;
                } else {
                    m.output = raw(value.as_deref());
                    m.state_output = raw(value.as_deref());
                }
            }
        }
    }

    /// An event sent to a machine, kept by handle until the machine takes or drops it.
    pub fn event_sent(&mut self, handle: u64, event_type: &str, data: Option<String>) {
        if let Values::Machine(m) = &mut self.values {
            m.events.push((
                handle,
                EventValue {
                    event_type: event_type.to_owned(),
                    data: raw(data.as_deref()),
                },
            ));
        }
    }

    /// A DAG node's input as stored: `{ parent: output, … }`, like the object its runner
    /// gets (an undefined output is left out, as `JSON.stringify` does).
    fn dag_input(&self, def: &RunDef, node: u32) -> Option<String> {
        let (Values::Dag { outputs, .. }, Some(dag)) = (&self.values, def.dag()) else {
            return None;
        };
        let mut s = String::from("{");
        for &p in dag.parents(node) {
            if let Some(out) = &outputs[p as usize] {
                if s.len() > 1 {
                    s.push(',');
                }
                s.push_str(&serde_json::to_string(dag.node_name(p)).unwrap_or_default());
                s.push(':');
                s.push_str(out);
            }
        }
        s.push('}');
        Some(s)
    }

    /// A DAG's output as stored: the leaf's output, or an object of the leaves' outputs.
    pub fn dag_output(&self, def: &RunDef) -> Option<String> {
        let (Values::Dag { outputs, .. }, Some(dag)) = (&self.values, def.dag()) else {
            return None;
        };
        let leaves = dag.leaves();
        if leaves.len() == 1 {
            return outputs[leaves[0] as usize].clone();
        }
        let mut s = String::from("{");
        for &l in leaves {
            if let Some(out) = &outputs[l as usize] {
                if s.len() > 1 {
                    s.push(',');
                }
                s.push_str(&serde_json::to_string(dag.node_name(l)).unwrap_or_default());
                s.push(':');
                s.push_str(out);
            }
        }
        s.push('}');
        Some(s)
    }

    /// The last error the run holds, JSON text.
    pub fn error_of(&self, exec: &Executor) -> Option<String> {
        match (&self.values, exec) {
            (Values::Dag { errors, .. }, Executor::Dag(d)) => d
                .failed_node()
                .and_then(|n| errors.get(n as usize).cloned().flatten()),
            (Values::Machine(m), _) => m.error.clone(),
            _ => None,
        }
    }

    /// A machine's snapshot as stored: the core's part, the context, and the values.
    pub fn machine_snapshot(&self, exec: &Executor) -> Option<String> {
        let (Executor::Machine(run), Values::Machine(m)) = (exec, &self.values) else {
            return None;
        };
        let core = serde_json::to_string(&run.snapshot()).ok()?;
        let values = serde_json::to_string(m).ok()?;
        let context = self.context.as_deref().unwrap_or("{}");
        // `{"core":…,"context":…,<values>}`
        let mut s = String::with_capacity(core.len() + values.len() + context.len() + 24);
        s.push_str(r#"{"core":"#);
        s.push_str(&core);
        s.push_str(r#","context":"#);
        s.push_str(context);
        if values.len() > 2 {
            s.push(',');
            s.push_str(&values[1..]);
        } else {
            s.push('}');
        }
        Some(s)
    }

    /// What a machine was doing as the state of `slot` started, as a step stores it to
    /// be forked from: the core's part and the events it holds (the context and input
    /// are stored beside it). None unless that state is the one running now.
    fn step_snapshot(&self, exec: &Executor, slot: u32) -> Option<String> {
        let (Executor::Machine(run), Values::Machine(m)) = (exec, &self.values) else {
            return None;
        };
        if run.running_slot() != Some(slot) {
            return None;
        }
        #[derive(serde::Serialize)]
        struct AtStep<'a> {
            core: ramus_core::MachineSnapshot,
            #[serde(skip_serializing_if = "Option::is_none")]
            event: &'a Option<EventValue>,
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            events: &'a [(u64, EventValue)],
        }
        serde_json::to_string(&AtStep {
            core: run.snapshot(),
            event: &m.event,
            events: &m.events,
        })
        .ok()
    }

    /// The run's snapshot as stored (`runs.snapshot`).
    pub fn snapshot(&self, exec: &Executor) -> Option<String> {
        match exec {
            Executor::Machine(_) => self.machine_snapshot(exec),
            Executor::Dag(_) => self
                .context
                .as_ref()
                .map(|c| format!(r#"{{"context":{c}}}"#)),
        }
    }

    /// Note what the actions of the last call mean for the records and values.
    pub fn actions(&mut self, def: &RunDef, actions: &[Action], now: u64) {
        for a in actions {
            match a {
                Action::Moved {
                    from,
                    to,
                    event,
                    input,
                } => {
                    self.moves.push_back((*from, *to, *event, *input));
                    if *input == InputRef::Timeout {
                        if let Some(m) = def.machine() {
                            self.timeouts.insert(*from, m.timeout_message(*from));
                        }
                    }
                }
                Action::ArmTimer { timer, at, kind } => {
                    if let Some(w) = self.writer.as_mut() {
                        w.timer_armed(*timer, *at, *kind, now)
                    }
                }
                Action::TimedOut { node, .. } => {
                    let error = Some(timeout_error(&def.timeout_message(*node)));
                    match &mut self.values {
                        Values::Dag { errors, .. } => errors[*node as usize] = error,
                        Values::Machine(m) => m.error = error,
                    }
                }
                Action::ClearTimer { timer } => {
                    if let Some(w) = self.writer.as_mut() {
                        w.timer_cleared(*timer)
                    }
                }
                Action::DropEvent { handle } => {
                    if let Values::Machine(m) = &mut self.values {
                        m.take_event(*handle);
                    }
                }
                Action::Failed {
                    message: Some(msg), ..
                } => {
                    if let Values::Machine(m) = &mut self.values {
                        m.error = Some(
                            serde_json::json!({ "name": "Error", "message": msg }).to_string(),
                        );
                    }
                }
                _ => {}
            }
        }
    }

    /// Turn the events recorded since the last call into records and spans.
    pub fn events(&mut self, exec: &mut Executor, def: &RunDef) {
        let machine_status = match &*exec {
            Executor::Machine(m) => Some(m.status()),
            Executor::Dag(_) => None,
        };
        let failed_error = self.error_of(exec);
        let rec = exec.recorder();
        let events: Vec<Event> = rec.events()[self.cursor.min(rec.events().len())..].to_vec();
        for e in &events {
            self.event(
                e,
                &*exec,
                def,
                machine_status,
                failed_error.as_deref(),
                &events,
            );
        }
        let rec = exec.recorder();
        if self.listened {
            self.cursor = rec.events().len();
        } else {
            rec.clear_events();
            self.cursor = 0;
        }
    }

    fn event(
        &mut self,
        e: &Event,
        exec: &Executor,
        def: &RunDef,
        machine_status: Option<MachineStatus>,
        failed_error: Option<&str>,
        batch: &[Event],
    ) {
        let slot = e.node.unwrap_or(0);
        // A DAG node's value sits at the node; its attempts have slots of their own.
        let node = exec.slot_node(slot).unwrap_or(slot) as usize;
        let writing = self.writer.as_ref().is_some_and(|w| !w.ended());
        let node_name = || exec.slot_node(slot).map(|n| def.node_name(n).to_owned());
        match &e.kind {
            EventKind::DagNodeStart | EventKind::MachineNodeStart => {
                let name = node_name().unwrap_or_default();
                if let Some(s) = self.spans.as_mut() {
                    s.step_started(slot, &name, &e.step.to_string(), e.time);
                }
                if writing {
                    let (input, context, snapshot) = match &self.values {
                        Values::Dag { .. } => (self.dag_input(def, node as u32), None, None),
                        Values::Machine(m) => (
                            text(&m.input),
                            self.context.clone(),
                            self.step_snapshot(exec, slot),
                        ),
                    };
                    let step = StepStart {
                        id: e.step.to_string(),
                        node: name,
                        parent: e.parent_step.map(|p| p.to_string()),
                        input,
                        attempt: exec.slot_attempt(slot),
                        time: e.time,
                        context,
                        snapshot,
                    };
                    if let Some(w) = self.writer.as_mut() {
                        w.step_started(slot, step);
                    }
                }
            }
            EventKind::DagNodeFinish | EventKind::MachineNodeFinish => {
                if let Some(s) = self.spans.as_mut() {
                    s.step_ended(slot, "finished", None, e.time);
                }
                let output = match &self.values {
                    Values::Dag { outputs, .. } => outputs.get(node).cloned().flatten(),
                    Values::Machine(m) => text(&m.state_output),
                };
                if let Some(w) = self.writer.as_mut().filter(|_| writing) {
                    w.step_ended(
                        slot,
                        StepStatus::Finished,
                        output,
                        None,
                        e.time,
                        e.data == DataRef::CachedOutput,
                    );
                }
            }
            EventKind::DagNodeError
            | EventKind::MachineError
            | EventKind::DagNodeRetry
            | EventKind::MachineRetry
                if e.node.is_some() =>
            {
                let error = match &self.values {
                    Values::Dag { errors, .. } => errors.get(node).cloned().flatten(),
                    Values::Machine(m) => m.error.clone(),
                };
                if let Some(s) = self.spans.as_mut() {
                    s.step_ended(slot, "error", Some(error_message(error.as_deref())), e.time);
                }
                if let Some(w) = self.writer.as_mut().filter(|_| writing) {
                    w.step_ended(slot, StepStatus::Error, None, error, e.time, false);
                }
            }
            EventKind::DagNodeState if e.data == DataRef::State("rerun") => {
                if let (Some(w), Some(dag), Some(n)) = (
                    self.writer.as_mut().filter(|_| writing),
                    def.dag(),
                    exec.slot_node(slot),
                ) {
                    let nodes = dag.downstream([n]);
                    w.superseded(
                        nodes.iter().map(|&n| def.node_name(n).to_owned()).collect(),
                        e.time,
                    );
                }
            }
            EventKind::DagNodeState if e.data == DataRef::State("cancelled") => {
                if let Some(s) = self.spans.as_mut() {
                    s.step_ended(slot, "cancelled", None, e.time);
                }
                // A branch cancelled with `cancelNode` is recorded so a restore keeps it, on a
                // row of its own for a node that had not started. Other cancels (the run's, a
                // failed parent's) record none: a rerun runs what did not finish.
                let branch = self.branch_cancel;
                if let Some(w) = self.writer.as_mut().filter(|_| writing) {
                    let error = branch.then(|| NODE_CANCELLED.to_owned());
                    if w.open_step(slot).is_some() {
                        w.step_ended(slot, StepStatus::Cancelled, None, error, e.time, false);
                    } else if let (true, Some(name)) = (branch, node_name()) {
                        w.node_cancelled(e.step.to_string(), name, e.time);
                    }
                }
            }
            EventKind::MachineStart => {
                // The entry into the first state: a transition from nowhere, as the schema
                // has it. The state is the one the first step visits.
                let first = batch
                    .iter()
                    .find(|e| e.kind == EventKind::MachineNodeStart)
                    .and_then(|e| e.node)
                    .and_then(|slot| exec.slot_node(slot))
                    .or_else(|| match exec {
                        Executor::Machine(m) => Some(m.current()),
                        Executor::Dag(_) => None,
                    });
                if let (Some(w), Some(first)) = (self.writer.as_mut().filter(|_| writing), first) {
                    w.transition(None, None, def.node_name(first), None, e.time);
                }
            }
            EventKind::MachineTransition => {
                let Some((from, to, event, input)) = self.moves.pop_front() else {
                    return;
                };
                let Values::Machine(m) = &mut self.values else {
                    return;
                };
                let event = event.and_then(|h| m.take_event(h));
                if let Some(s) = self.spans.as_ref() {
                    let mut attrs = vec![
                        KeyValue::new(
                            "workflow.state_machine.from",
                            def.node_name(from).to_owned(),
                        ),
                        KeyValue::new("workflow.state_machine.to", def.node_name(to).to_owned()),
                    ];
                    if let Some(ev) = &event {
                        attrs.push(KeyValue::new(
                            "workflow.state_machine.event",
                            ev.event_type.clone(),
                        ));
                    }
                    s.event(None, "workflow.state_machine.transition", attrs, e.time);
                }
                if let Some(w) = self.writer.as_mut().filter(|_| writing) {
                    w.transition(
                        Some(e.step.to_string()),
                        Some(def.node_name(from)),
                        def.node_name(to),
                        event
                            .as_ref()
                            .map(|ev| (ev.event_type.clone(), text(&ev.data))),
                        e.time,
                    );
                }
                m.input = match input {
                    InputRef::Output => m.output.clone(),
                    InputRef::Error => raw(m.error.as_deref()),
                    InputRef::Timeout => raw(Some(&timeout_error(
                        &self.timeouts.remove(&from).unwrap_or_default(),
                    ))),
                };
                m.event = event;
                m.state_output = None;
                // A final state without a run passes its input on as the machine's output.
                if let Some(machine) = def.machine() {
                    if machine.is_final(to) && !machine.has_run(to) {
                        m.output = m.input.clone();
                        m.state_output = m.input.clone();
                    }
                }
            }
            EventKind::MachineStatus => {
                if let DataRef::Status(status, _) = e.data {
                    let stored = match status {
                        "waitingForEvent" => Some(RunStatus::WaitingForEvent),
                        "sleeping" => Some(RunStatus::Sleeping),
                        // How a run ends is written by its end record.
                        "final" | "cancelled" => None,
                        _ => Some(RunStatus::Running),
                    };
                    if let (Some(w), Some(stored)) = (self.writer.as_mut(), stored) {
                        w.status(stored);
                    }
                    if status == "cancelled" {
                        if let Some(s) = self.spans.as_mut() {
                            s.end("cancelled", None);
                        }
                    }
                }
            }
            EventKind::MachineFinish => {
                if let Some(s) = self.spans.as_mut() {
                    if machine_status == Some(MachineStatus::Error) {
                        s.end("error", Some(error_message(failed_error)));
                    } else {
                        s.end("finished", None);
                    }
                }
            }
            EventKind::DagFinish => {
                if let Some(s) = self.spans.as_mut() {
                    s.end("finished", None);
                }
            }
            EventKind::DagError => {
                if let Some(s) = self.spans.as_mut() {
                    s.end("error", Some(error_message(failed_error)));
                }
            }
            EventKind::Custom(t) => {
                let Some((data, true)) = self.custom.pop_front() else {
                    return;
                };
                if let Some(s) = self.spans.as_ref() {
                    let attrs = data
                        .iter()
                        .map(|d| KeyValue::new("event.data", d.clone()))
                        .collect();
                    s.event(e.node, t, attrs, e.time);
                }
                if let Some(w) = self.writer.as_mut().filter(|_| writing) {
                    w.custom(
                        e.step.to_string(),
                        e.parent_step.map(|p| p.to_string()),
                        t,
                        e.node.and_then(|_| node_name()),
                        data,
                        e.time,
                    );
                }
            }
            _ => {}
        }
    }

    /// The run ended: its record, and the end of its span (a halted machine's span ends
    /// here; other ends were seen in the events).
    pub fn ended(&mut self, exec: &Executor, def: &RunDef, end: End, now: u64) {
        if end == End::Failed {
            let msg = error_message(self.error_of(exec).as_deref());
            if let (Some(s), Executor::Machine(_)) = (self.spans.as_mut(), exec) {
                s.end("error", Some(msg));
            }
        }
        let Some(w) = self.writer.as_ref() else {
            return;
        };
        if w.ended() {
            return;
        }
        let status = stored_status(exec.phase());
        let (output, error) = match (end, exec) {
            (End::Finished, Executor::Dag(_)) => (self.dag_output(def), None),
            (End::Finished, Executor::Machine(_)) => {
                let Values::Machine(m) = &self.values else {
                    unreachable!()
                };
                // A machine resting in its error state keeps that state's output and the
                // error that led there.
                let error = (status == RunStatus::Error)
                    .then(|| m.error.clone())
                    .flatten();
                (text(&m.output), error)
            }
            (End::Failed, _) => (None, self.error_of(exec)),
            (End::Cancelled, _) => (None, None),
        };
        if let Some(w) = self.writer.as_mut() {
            w.end(status, output, error, now);
        }
    }

    /// The run failed because a value could not be stored: its record says so.
    pub fn failed_storage(&mut self, error: String, now: u64) {
        if let Some(w) = self.writer.as_mut() {
            w.end(RunStatus::Error, None, Some(error), now);
        }
        if let Some(s) = self.spans.as_mut() {
            s.end("error", Some(error_message(None)));
        }
    }
}
