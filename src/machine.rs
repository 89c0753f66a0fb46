//! The state machine half of the binding: the same shape as the DAG half. Actions come
//! back as a flat array of numbers, five per action, so one crossing carries a whole step.

use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use ramus_core::{
    parse_duration, CompiledMachine, GuardFailed, Guards, InputRef, MachineAction, MachineRun,
    MachineSnapshot, MachineSpec, MachineStatus, Recorder, StateOutcome, StateSpec, TransitionSpec,
};

use std::collections::{HashMap, VecDeque};

use ramus_core::{DataRef, EventKind};
use ramus_store::StepStatus;

use crate::sinks::Sinks;
use crate::store::{NativeStore, RunWriter};
use crate::trace::{error_message, RunKind, RunSpans};
use crate::{drain_json, now_ms, parse_id, seed};
use opentelemetry::KeyValue;

type TransitionRow = (String, String, bool, Option<String>);
type StateRow = (
    String,
    bool,
    bool,
    Option<String>,
    Option<u32>,
    Option<(String, String)>,
    Option<String>,
    Vec<TransitionRow>,
);
type MachineRow = (
    String,
    Option<String>,
    Option<String>,
    Option<u32>,
    Vec<StateRow>,
);

fn duration(state: &str, what: &str, text: &str) -> Result<u64> {
    parse_duration(text)
        .ok_or_else(|| Error::from_reason(format!("State {state} has an invalid {what}: {text}")))
}

fn parse_machine(json: &str) -> Result<MachineSpec> {
    let (name, initial, error_state, max_steps, rows): MachineRow = serde_json::from_str(json)
        .map_err(|e| Error::from_reason(format!("invalid state machine: {e}")))?;
    let mut states = Vec::with_capacity(rows.len());
    for (state, has_run, is_final, error_state, max_visits, timeout, semaphore_key, transitions) in
        rows
    {
        let timeout = match timeout {
            Some((after, target)) => Some((duration(&state, "timeout", &after)?, target)),
            None => None,
        };
        let transitions = transitions
            .into_iter()
            .map(|(event, target, guarded, delay)| {
                let delay_ms = delay.map(|d| duration(&state, "delay", &d)).transpose()?;
                Ok(TransitionSpec {
                    event,
                    target,
                    guarded,
                    delay_ms,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        states.push(StateSpec {
            name: state,
            has_run,
            is_final,
            error_state,
            max_visits,
            timeout,
            semaphore_key,
            transitions,
        });
    }
    Ok(MachineSpec {
        name,
        initial,
        error_state,
        max_steps,
        states,
    })
}

/// Milliseconds of a duration (a number of ms, or `'90s'`, `'15m'`, `'2h'`, `'30d'`).
#[napi]
pub fn parse_duration_ms(text: String) -> Result<f64> {
    parse_duration(&text)
        .map(|ms| ms as f64)
        .ok_or_else(|| Error::from_reason(format!("Invalid duration: {text}")))
}

/// A compiled state machine, shared by its runs.
#[napi]
pub struct NativeMachine {
    inner: Arc<CompiledMachine>,
}

#[napi]
impl NativeMachine {
    /// Validate and compile; throws with the contract's messages.
    #[napi(constructor)]
    pub fn new(spec_json: String) -> Result<Self> {
        let spec = parse_machine(&spec_json)?;
        let inner =
            CompiledMachine::compile(&spec).map_err(|e| Error::from_reason(e.to_string()))?;
        Ok(NativeMachine {
            inner: Arc::new(inner),
        })
    }

    /// A state's id by name, or -1.
    #[napi]
    pub fn state_id(&self, name: String) -> i32 {
        self.inner.state_id(&name).map_or(-1, |i| i as i32)
    }
}

/// Numbers before the actions in the buffer: status code, current state.
const HEADER: usize = 2;

/// Status codes, in the order of `MACHINE_STATUSES` in ts/machine.ts.
fn status_code(s: MachineStatus) -> f64 {
    match s {
        MachineStatus::Initial => 0.0,
        MachineStatus::Ready => 1.0,
        MachineStatus::PendingSemaphore => 2.0,
        MachineStatus::Running => 3.0,
        MachineStatus::WaitingForEvent => 4.0,
        MachineStatus::Sleeping => 5.0,
        MachineStatus::Final => 6.0,
        MachineStatus::Error => 7.0,
        MachineStatus::Cancelled => 8.0,
    }
}

const ACT_RUN: f64 = 1.0;
const ACT_ACQUIRE: f64 = 2.0;
const ACT_ERRORED: f64 = 3.0;
const ACT_TRANSITIONED: f64 = 4.0;
const ACT_ARM: f64 = 5.0;
const ACT_CLEAR: f64 = 6.0;
const ACT_DROP: f64 = 7.0;
const ACT_FINISHED: f64 = 8.0;

fn input_code(i: InputRef) -> f64 {
    match i {
        InputRef::Output => 0.0,
        InputRef::Error => 1.0,
        InputRef::Timeout => 2.0,
    }
}

/// Calls the JS face's guard evaluator: it answers 1 (holds), 0 (does not) or 2 (the
/// condition threw; the face keeps the error).
struct JsGuards<'a, 'env> {
    f: &'a Function<'env, FnArgs<(u32, f64)>, u32>,
    error: Option<Error>,
}

impl Guards for JsGuards<'_, '_> {
    fn holds(
        &mut self,
        transition: u32,
        event: Option<u64>,
    ) -> std::result::Result<bool, GuardFailed> {
        let event = event.map_or(-1.0, |e| e as f64);
        match self.f.call((transition, event).into()) {
            Ok(1) => Ok(true),
            Ok(0) => Ok(false),
            Ok(_) => Err(GuardFailed),
            Err(e) => {
                self.error = Some(e);
                Err(GuardFailed)
            }
        }
    }
}

/// One state machine run, driven by the JS face.
#[napi]
pub struct NativeMachineRun {
    run: MachineRun,
    actions: Vec<MachineAction>,
    message: Option<String>,
    uses_timers: bool,
    tap: Option<MachineTap>,
}

/// What a machine run keeps for the sinks fed in Rust (the store, spans): the sinks, the
/// JSON of the last output and error and of the current state's input, sent events' data
/// by handle, which state each recent slot visits, and the transitions of the last call
/// (in the order of their events).
struct MachineTap {
    sinks: Sinks,
    output: Option<String>,
    error: Option<String>,
    input: Option<String>,
    events: HashMap<u64, (String, Option<String>)>,
    slots: HashMap<u32, u32>,
    moves: VecDeque<(u32, u32, Option<u64>, InputRef)>,
}

#[napi]
impl NativeMachineRun {
    /// `flags`: 1 has semaphores. `run_id`/`parent_step_id` when nested; `initial`
    /// overrides the machine's initial state.
    #[napi(constructor)]
    pub fn new(
        machine: &NativeMachine,
        flags: u32,
        run_id: Option<String>,
        parent_step_id: Option<String>,
        initial: Option<String>,
        snapshot: Option<String>,
    ) -> Result<Self> {
        let run_id = run_id.map(|s| parse_id("runId", &s)).transpose()?;
        let parent = parent_step_id
            .map(|s| parse_id("parentStepId", &s))
            .transpose()?;
        let initial = match initial {
            Some(name) => Some(machine.inner.state_id(&name).ok_or_else(|| {
                Error::from_reason(format!("Initial state {name} does not exist"))
            })?),
            None => None,
        };
        let rec = Recorder::new(seed(), 0, run_id, parent);
        let uses_timers = machine.inner.uses_timers();
        let semaphores = flags & 1 != 0;
        let run = match snapshot {
            Some(json) => {
                let snap: MachineSnapshot = serde_json::from_str(&json)
                    .map_err(|e| Error::from_reason(format!("invalid machine snapshot: {e}")))?;
                MachineRun::restore(Arc::clone(&machine.inner), rec, semaphores, &snap)
                    .map_err(|e| Error::from_reason(e.to_string()))?
            }
            None => MachineRun::new(Arc::clone(&machine.inner), rec, semaphores, initial),
        };
        Ok(NativeMachineRun {
            uses_timers,
            run,
            actions: Vec::new(),
            message: None,
            tap: None,
        })
    }

    fn tap(&mut self) -> &mut MachineTap {
        if self.tap.is_none() {
            self.tap = Some(MachineTap {
                sinks: Sinks::new(self.run.recorder()),
                output: None,
                error: None,
                input: None,
                events: HashMap::new(),
                slots: HashMap::new(),
                moves: VecDeque::new(),
            });
        }
        self.tap.as_mut().expect("set above")
    }

    /// Record spans of this run (tracing is configured): `traceparent` is the caller's
    /// active span or the step the run is nested in; `attributes` (JSON) extra attributes
    /// per state. Call before `step` or `attach_store`.
    #[napi]
    pub fn trace(&mut self, name: String, traceparent: Option<String>, attributes: Option<String>) {
        let run_id = self.run.recorder().run_id(now_ms()).to_string();
        if let Some(spans) = RunSpans::start(
            RunKind::Machine,
            &name,
            &run_id,
            traceparent.as_deref(),
            attributes.as_deref(),
        ) {
            self.tap().sinks.spans = Some(spans);
        }
    }

    /// The `traceparent` of a state visit's span (or the run's), for runs started inside it.
    #[napi]
    pub fn traceparent(&self, slot: Option<u32>) -> Option<String> {
        self.tap
            .as_ref()?
            .sinks
            .spans
            .as_ref()
            .map(|s| s.traceparent(slot))
    }

    /// Make the run durable: `run_json` describes its row (see `RunWriter::open`); its
    /// `input` is the current state's input. `output` is the last output and `events` the
    /// events the machine holds (a restore).
    #[napi]
    pub fn attach_store(
        &mut self,
        store: &NativeStore,
        run_json: String,
        resume: bool,
        sync: bool,
        output: Option<String>,
        events: Option<String>,
    ) -> Result<()> {
        let ids = self
            .tap
            .as_ref()
            .and_then(|t| t.sinks.spans.as_ref())
            .map(|s| s.ids());
        let (mut writer, input) = RunWriter::open(store, &run_json, resume, sync, ids)?;
        if resume {
            // A restored machine may rest (waiting for an event, sleeping): that is its status.
            writer.status(self.run.status().as_str());
        }
        let tap = self.tap();
        tap.sinks.writer = Some(writer);
        tap.output = output;
        tap.input = input;
        // A restored machine's events (queued, or the one that chose a pending delay):
        // `[[handle, type, data JSON or null], …]`, so their transitions keep type and data.
        if let Some(json) = events {
            let held: Vec<(u64, String, Option<String>)> = serde_json::from_str(&json)
                .map_err(|e| Error::from_reason(format!("invalid restored events: {e}")))?;
            for (handle, event_type, data) in held {
                tap.events.insert(handle, (event_type, data));
            }
        }
        Ok(())
    }

    /// Note what the actions of the last call mean for the records, then write its events.
    fn persist(&mut self, from: usize) {
        let Some(d) = self.tap.as_mut() else {
            return;
        };
        let m = Arc::clone(self.run.machine());
        let current = self.run.current();
        let resting_error = self.run.status() == MachineStatus::Error;
        for a in &self.actions[from.min(self.actions.len())..] {
            match a {
                MachineAction::RunState { state, slot }
                | MachineAction::AcquireSemaphore { state, slot } => {
                    d.slots.insert(*slot, *state);
                }
                MachineAction::Transitioned {
                    from,
                    to,
                    event,
                    input,
                } => d.moves.push_back((*from, *to, *event, *input)),
                MachineAction::ArmTimer { timer, at, delay } => {
                    if let Some(w) = d.sinks.writer.as_mut() {
                        w.timer_armed(*timer, *at, *delay)
                    }
                }
                MachineAction::ClearTimer { timer } => {
                    if let Some(w) = d.sinks.writer.as_mut() {
                        w.timer_cleared(*timer)
                    }
                }
                MachineAction::DropEvent { handle } => {
                    d.events.remove(handle);
                }
                MachineAction::Errored { message, halted } => {
                    if let Some(msg) = message {
                        d.error = Some(
                            serde_json::json!({ "name": "Error", "message": msg }).to_string(),
                        );
                    }
                    if *halted {
                        let msg = error_message(d.error.as_deref());
                        d.sinks.end_spans("error", Some(msg));
                    }
                }
                _ => {}
            }
        }
        let rec = self.run.recorder();
        let events = rec.events();
        for e in d.sinks.unhandled(events) {
            let slot = e.node.unwrap_or(0);
            let state = d.slots.get(&slot).map(|&s| m.state_name(s));
            match &e.kind {
                EventKind::MachineNodeStart => {
                    let name = state.unwrap_or_default();
                    if let Some(s) = d.sinks.spans.as_mut() {
                        s.step_started(slot, name, &e.step.to_string(), e.time);
                    }
                    if let Some(w) = d.sinks.writer.as_mut() {
                        w.step_started(
                            slot,
                            e.step.to_string(),
                            name.to_owned(),
                            e.parent_step.map(|p| p.to_string()),
                            d.input.clone(),
                            e.time,
                        );
                    }
                }
                EventKind::MachineNodeFinish => {
                    if let Some(s) = d.sinks.spans.as_mut() {
                        s.step_ended(slot, "finished", None, e.time);
                    }
                    if let Some(w) = d.sinks.writer.as_mut() {
                        w.step_ended(slot, StepStatus::Finished, d.output.clone(), None, e.time);
                    }
                    d.slots.remove(&slot);
                }
                EventKind::MachineError if e.node.is_some() => {
                    if let Some(s) = d.sinks.spans.as_mut() {
                        s.step_ended(
                            slot,
                            "error",
                            Some(error_message(d.error.as_deref())),
                            e.time,
                        );
                    }
                    if let Some(w) = d.sinks.writer.as_mut() {
                        w.step_ended(slot, StepStatus::Error, None, d.error.clone(), e.time);
                    }
                    d.slots.remove(&slot);
                }
                EventKind::MachineStart => {
                    // The entry into the first state: a transition from nowhere, as the
                    // schema has it. The state is the one the next step visits.
                    let first = events
                        .iter()
                        .find(|e| e.kind == EventKind::MachineNodeStart)
                        .and_then(|e| e.node)
                        .and_then(|slot| d.slots.get(&slot))
                        .map_or_else(|| m.state_name(current), |&s| m.state_name(s));
                    if let Some(w) = d.sinks.writer.as_mut() {
                        w.transition(None, None, first, None, e.time);
                    }
                }
                EventKind::MachineTransition => {
                    let Some((from, to, event, input)) = d.moves.pop_front() else {
                        continue;
                    };
                    let event = event.and_then(|h| d.events.remove(&h));
                    if let Some(s) = d.sinks.spans.as_ref() {
                        let mut attrs = vec![
                            KeyValue::new(
                                "workflow.state_machine.from",
                                m.state_name(from).to_owned(),
                            ),
                            KeyValue::new("workflow.state_machine.to", m.state_name(to).to_owned()),
                        ];
                        if let Some((t, _)) = &event {
                            attrs.push(KeyValue::new("workflow.state_machine.event", t.clone()));
                        }
                        s.event(None, "workflow.state_machine.transition", attrs, e.time);
                    }
                    if let Some(w) = d.sinks.writer.as_mut() {
                        w.transition(
                            Some(e.step.to_string()),
                            Some(m.state_name(from)),
                            m.state_name(to),
                            event,
                            e.time,
                        );
                    }
                    d.input = match input {
                        InputRef::Output => d.output.clone(),
                        InputRef::Error => d.error.clone(),
                        InputRef::Timeout => Some(
                            serde_json::json!({
                                "name": "TimeoutError",
                                "message": format!("State {} timed out", m.state_name(from)),
                            })
                            .to_string(),
                        ),
                    };
                }
                EventKind::MachineStatus => {
                    if let (DataRef::Status(status, _), Some(w)) = (e.data, d.sinks.writer.as_mut())
                    {
                        w.status(status);
                    }
                    // However it was cancelled (cancel(), or a state that stopped itself).
                    if matches!(e.data, DataRef::Status("cancelled", _)) {
                        d.sinks.end_spans("cancelled", None);
                    }
                }
                EventKind::MachineFinish if resting_error => {
                    let msg = error_message(d.error.as_deref());
                    d.sinks.end_spans("error", Some(msg));
                }
                EventKind::MachineFinish => d.sinks.end_spans("finished", None),
                EventKind::Custom(t) => d.sinks.custom(e, t, state.map(str::to_owned)),
                _ => {}
            }
        }
        d.sinks.handled(rec);
    }

    /// Write what the run collected (with its snapshot, JSON): committed before this
    /// returns in `sync`.
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

    /// A stored timer re-armed after a restore: its row, for when it fires or is cleared.
    #[napi]
    pub fn store_timer_row(&mut self, timer: f64, id: String) {
        if let Some(w) = self.tap.as_mut().and_then(|t| t.sinks.writer.as_mut()) {
            w.timer_row(timer as u64, id);
        }
    }

    /// A stored event (`engine.send`) was taken by the run.
    #[napi]
    pub fn store_delivered(&mut self, id: String) {
        if let Some(w) = self.tap.as_mut().and_then(|t| t.sinks.writer.as_mut()) {
            w.delivered(id);
        }
    }

    /// The clock is read only when something needs it: events being recorded, or timers
    /// (configured ones, or `force` for a delay a runner chose).
    fn now_if_needed(&mut self, force: bool) -> u64 {
        if force || self.uses_timers || self.run.recorder().observing() {
            now_ms()
        } else {
            0
        }
    }

    /// Write the machine's status code and current state into `buf[0..2]`, then the
    /// pending actions, five numbers each. Returns `count * 8 + 4 * can_step + 2 * resting +
    /// more`: how many actions were written, whether a step would run a state, whether the
    /// machine rests (nothing runs), and whether more actions are pending (the face then
    /// calls `more`). The buffer is the face's, reused for every call, so no array is built
    /// per crossing, and the face can answer `state`/`machineStatus` without calling in
    /// (a transition condition runs while this object is borrowed).
    fn flush(&mut self, mut buf: Float64ArraySlice) -> u32 {
        // SAFETY: the buffer is only touched by JS on this same thread, which is blocked in
        // this call; nothing else aliases it while we write.
        let out: &mut [f64] = unsafe { buf.as_mut() };
        out[0] = status_code(self.run.status());
        out[1] = self.run.current() as f64;
        let fit = ((out.len() - HEADER) / 5).min(self.actions.len());
        for (i, a) in self.actions.drain(..fit).enumerate() {
            let row = match a {
                MachineAction::RunState { state, slot } => {
                    [ACT_RUN, state as f64, slot as f64, 0.0, 0.0]
                }
                MachineAction::AcquireSemaphore { state, slot } => {
                    [ACT_ACQUIRE, state as f64, slot as f64, 0.0, 0.0]
                }
                MachineAction::Errored { message, halted } => {
                    let has_message = message.is_some();
                    self.message = message;
                    [
                        ACT_ERRORED,
                        halted as u8 as f64,
                        has_message as u8 as f64,
                        0.0,
                        0.0,
                    ]
                }
                MachineAction::Transitioned {
                    from,
                    to,
                    event,
                    input,
                } => [
                    ACT_TRANSITIONED,
                    from as f64,
                    to as f64,
                    event.map_or(-1.0, |e| e as f64),
                    input_code(input),
                ],
                MachineAction::ArmTimer { timer, at, delay } => {
                    [ACT_ARM, timer as f64, at as f64, delay as u8 as f64, 0.0]
                }
                MachineAction::ClearTimer { timer } => [ACT_CLEAR, timer as f64, 0.0, 0.0, 0.0],
                MachineAction::DropEvent { handle } => [ACT_DROP, handle as f64, 0.0, 0.0, 0.0],
                MachineAction::Finished => [ACT_FINISHED, 0.0, 0.0, 0.0, 0.0],
            };
            let at = HEADER + i * 5;
            out[at..at + 5].copy_from_slice(&row);
        }
        fit as u32 * 8
            + 4 * self.run.can_step() as u32
            + 2 * self.run.resting() as u32
            + !self.actions.is_empty() as u32
    }

    /// The run's restorable state as JSON (a `MachineSnapshot`), for durable runs.
    #[napi]
    pub fn snapshot(&self) -> String {
        serde_json::to_string(&self.run.snapshot()).unwrap_or_default()
    }

    /// Actions left over when the last call's buffer was full.
    #[napi]
    pub fn more(&mut self, buf: Float64ArraySlice) -> u32 {
        self.flush(buf)
    }

    fn guarded<T>(
        &mut self,
        guards: &Function<FnArgs<(u32, f64)>, u32>,
        force_clock: bool,
        f: impl FnOnce(&mut MachineRun, &mut dyn Guards, u64, &mut Vec<MachineAction>) -> T,
    ) -> Result<T> {
        let now = self.now_if_needed(force_clock);
        let mut g = JsGuards {
            f: guards,
            error: None,
        };
        let result = f(&mut self.run, &mut g, now, &mut self.actions);
        match g.error {
            Some(e) => Err(e),
            None => Ok(result),
        }
    }

    /// The message of the last core-made error (limits).
    #[napi(getter)]
    pub fn message(&self) -> Option<String> {
        self.message.clone()
    }

    /// Run the current state once, if it can step.
    #[napi]
    pub fn step(&mut self, buf: Float64ArraySlice) -> u32 {
        let now = self.now_if_needed(false);
        let from = self.actions.len();
        self.run.step(now, &mut self.actions);
        self.persist(from);
        self.flush(buf)
    }

    /// Report a state run: outcome 0 ok, 1 error, 2 chose `target` (with `delay_ms` >= 0),
    /// 3 stopped itself on cancellation.
    #[napi]
    // One crossing carries the whole report, with the value a durable run stores.
    #[allow(clippy::too_many_arguments)]
    pub fn state_done(
        &mut self,
        slot: u32,
        outcome: u32,
        target: u32,
        delay_ms: f64,
        guards: Function<FnArgs<(u32, f64)>, u32>,
        buf: Float64ArraySlice,
        value: Option<String>,
    ) -> Result<u32> {
        if let Some(d) = self.tap.as_mut() {
            if outcome == 1 {
                d.error = value;
            } else if outcome != 3 {
                d.output = value;
            }
        }
        let outcome = match outcome {
            0 => StateOutcome::Ok,
            1 => StateOutcome::Err,
            3 => StateOutcome::Cancelled,
            _ => StateOutcome::Chose {
                target,
                delay_ms: (delay_ms >= 0.0)
                    .then_some(delay_ms.min(ramus_core::machine::MAX_DURATION_MS as f64) as u64),
            },
        };
        let chose_delay = matches!(
            outcome,
            StateOutcome::Chose {
                delay_ms: Some(_),
                ..
            }
        );
        let from = self.actions.len();
        let r = self.guarded(&guards, chose_delay, |run, g, now, out| {
            run.state_done(slot, outcome, g, now, out)
        });
        self.persist(from);
        r?;
        Ok(self.flush(buf))
    }

    /// Deliver an event; `handle` is the face's key for its data.
    #[napi]
    pub fn send(
        &mut self,
        handle: f64,
        event_type: String,
        queue: bool,
        guards: Function<FnArgs<(u32, f64)>, u32>,
        buf: Float64ArraySlice,
        data: Option<String>,
    ) -> Result<u32> {
        if let Some(d) = self.tap.as_mut() {
            d.events.insert(handle as u64, (event_type.clone(), data));
        }
        let from = self.actions.len();
        let r = self.guarded(&guards, false, |run, g, now, out| {
            run.send(handle as u64, &event_type, queue, g, now, out)
        });
        self.persist(from);
        r?;
        Ok(self.flush(buf))
    }

    /// A timer fired.
    #[napi]
    pub fn timer_fired(&mut self, timer: f64, buf: Float64ArraySlice) -> u32 {
        let now = self.now_if_needed(false);
        if let Some(w) = self.tap.as_mut().and_then(|t| t.sinks.writer.as_mut()) {
            w.timer_fired(timer as u64, now_ms());
        }
        let from = self.actions.len();
        self.run.timer_fired(timer as u64, now, &mut self.actions);
        self.persist(from);
        self.flush(buf)
    }

    /// Semaphore slots acquired for `slot`; `false` means the state must not run any
    /// more and the face gives the slots back.
    #[napi]
    pub fn semaphore_acquired(&mut self, slot: u32) -> bool {
        let now = self.now_if_needed(false);
        let from = self.actions.len();
        let acquired = self.run.semaphore_acquired(slot, now, &mut self.actions);
        self.persist(from);
        acquired
    }

    /// Cancel the machine; false when it already was.
    #[napi]
    pub fn cancel(&mut self) -> bool {
        let now = self.now_if_needed(false);
        let from = self.actions.len();
        // The `cancelled` status event ends the run's span (see `persist`).
        let cancelled = self.run.cancel(now, &mut self.actions);
        self.persist(from);
        cancelled
    }

    /// Validate a runner's `transitionTo` target; returns the state id.
    #[napi]
    pub fn resolve_choice(&self, target: String) -> Result<u32> {
        self.run
            .machine()
            .resolve_choice(self.run.current(), &target)
            .map_err(|e| Error::from_reason(e.to_string()))
    }

    /// Auto mode: the machine steps by itself whenever it can (see `MachineRun::set_auto`).
    #[napi]
    pub fn set_auto(&mut self, on: bool) {
        self.run.set_auto(on);
    }

    /// Whether the run of `slot` should stop.
    #[napi]
    pub fn is_cancelled(&self, slot: u32) -> bool {
        self.run.is_cancelled(slot)
    }

    /// The run id.
    #[napi]
    pub fn run_id(&mut self) -> String {
        self.run.recorder().run_id(now_ms()).to_string()
    }

    /// A step's id.
    #[napi]
    pub fn step_id(&mut self, slot: u32) -> String {
        self.run.recorder().step(slot, now_ms()).to_string()
    }

    /// Turn event delivery to JS on or off (a durable run records events anyway).
    #[napi]
    pub fn set_observe(&mut self, on: bool) {
        match self.tap.as_mut() {
            Some(d) => d.sinks.set_listened(on),
            None => self.run.recorder().set_observe(on),
        }
    }

    /// Record a custom event of a step; the face keeps its data, and passes it as JSON
    /// when the run is durable.
    #[napi]
    pub fn custom_event(&mut self, slot: u32, event_type: String, data: Option<String>) {
        let now = self.now_if_needed(false);
        if let Some(d) = self.tap.as_mut() {
            d.sinks.push_custom(data);
        }
        self.run.recorder().custom_event(slot, &event_type, now);
        self.persist(self.actions.len());
    }

    /// The events recorded since the last call, as a JSON array (null when none). An
    /// event's `node` is its step slot; the face knows which state that visit was.
    #[napi]
    pub fn drain_events(&mut self) -> Option<String> {
        if let Some(d) = self.tap.as_mut() {
            d.sinks.drained();
        }
        drain_json(self.run.recorder())
    }
}
