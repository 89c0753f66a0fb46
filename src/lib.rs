//! The Node.js binding of Ramus: JS values in and out of `ramus-engine`, nothing more.
//!
//! Runs live in a [`Runtime`] owned by the JS thread. The face (ts/) drives them through
//! one shared `Int32Array` and a few argument-free functions: it writes a request (an op
//! and its integers) into the buffer, calls [`call`], and reads back the records of what
//! to do (run this step, the machine moved, the run ended…). A napi call without
//! arguments costs about 25 ns here, one with a single integer about 110 ns (napi-rs
//! converts and checks each argument), so the hot path of an agent loop — report a
//! step, learn the next — is one argument-free crossing. JSON crosses only for runs that
//! are stored or traced, and strings only on the slow paths (events, errors, reads).

#![deny(clippy::all)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use ramus_core::{Action, Command, Delay, End, Executor, GuardFailed, Guards, InputRef, Outcome};
use ramus_engine::{CommandValues, RunKey, Runtime};

pub mod cache;
pub mod clock;
pub mod defs;
pub mod engine;
mod events;
pub mod reads;
pub mod semaphore;
pub mod trace;

pub use defs::NativeDefinition;

/// What the face asks in `io[0]` before [`call`] (the run's key is in `io[1]`).
#[napi]
pub enum Op {
    /// Start a run (a machine steps by itself from then on).
    Start = 1,
    /// Machines: run the current state once.
    Step = 2,
    /// A step ended: `io[2]` slot, `io[3]` outcome (see [`StepOutcome`]), `io[4]` the
    /// results of the eventless conditions the face evaluated (see the face's
    /// `evaluateGuards`).
    Complete = 3,
    /// The semaphore slots of step `io[2]` are held.
    Acquired = 4,
    /// DAGs in stepwise mode: start node `io[2]`.
    RunNode = 5,
    /// Cancel the run.
    Cancel = 6,
    /// Machines: the face ran `io[2]` steps by itself after the running one, within the
    /// budget of its `Run` record; `io[5..]` holds, per step, the results of its eventless
    /// conditions (as in [`Op::Complete`]). The core applies them as the completions they
    /// were, so it stands where the face does: at the step running now.
    Local = 7,
    /// DAGs: cancel node `io[2]` and its downstream; the rest of the run goes on.
    CancelNode = 8,
    /// DAGs: take the graph staged with `stageGraph` (nodes added while it runs).
    Grow = 9,
    /// DAGs: run node `io[2]` and its downstream again while the run goes on; `io[3]` 1
    /// when the value passed along is the node's new output (it does not run).
    Rerun = 10,
}

/// How a step ended, in `io[3]` of [`Op::Complete`].
#[napi]
pub enum StepOutcome {
    /// It returned an output.
    Ok = 0,
    /// It threw.
    Error = 1,
    /// It stopped itself after seeing the cancellation.
    Cancelled = 2,
    /// It threw an error its `retryOn` does not retry.
    Fatal = 3,
    /// Its output came from the cache (the runner did not run).
    Cached = 4,
}

/// What the binding writes back, one record each: the code, the run's index, then the
/// code's own numbers.
#[napi]
pub enum Rec {
    /// `[Run, run, slot, node, budget, attempt]`: call the runner of `node` for step
    /// `slot`, its attempt number `attempt` (1 unless it retries). A machine's `budget` is
    /// how many steps after it the face may run by itself, taking the moves of
    /// `NativeDefinition.localMoves` (see [`Op::Local`]).
    Run = 1,
    /// `[Acquire, run, slot, node]`: take the step's semaphore slots.
    Acquire = 2,
    /// `[Ready, run, slot, node]`: stepwise DAGs: the node is ready.
    Ready = 3,
    /// `[Moved, run, from, to, eventHandle | -1, input]` (input: [`MoveInput`]).
    Moved = 4,
    /// `[Failed, run, halted, hasMessage]`: a machine state failed; the core's message
    /// (a limit, a choice that does not hold) is read with `message(run)`.
    Failed = 5,
    /// `[Drop, run, handle]`: forget an event's data.
    Drop = 6,
    /// `[Ended, run, end, failedNode]` (end: [`RunEnd`]; the DAG node whose failure
    /// failed the run, or -1).
    Ended = 7,
    /// `[Status, run, status, current, flags]`: a machine's status code, current state,
    /// and [`StatusFlag`]s.
    Status = 8,
    /// `[Events, run]`: an observed run recorded events: drain them.
    Events = 9,
    /// `[StorageFailed, run]`: the run's records could not be written; it was cancelled
    /// and fails with `message(run)`.
    StorageFailed = 10,
    /// `[Flush, run]`: a batched durable run collected records: flush it at the end of
    /// the turn.
    Flush = 11,
    /// `[TimedOut, run, slot, node]`: a DAG node's attempt ran past its `timeout` (or a
    /// state's, when its `retryOn` retries that); its error is a `TimeoutError` with the
    /// message `message(run)`.
    TimedOut = 12,
}

/// What a moved machine's new input is, in [`Rec::Moved`].
#[napi]
pub enum MoveInput {
    /// The output of the state left.
    Output = 0,
    /// The error that failed it.
    Error = 1,
    /// A timeout error (its message: `message(run)`).
    Timeout = 2,
}

/// How a run ended, in [`Rec::Ended`].
#[napi]
pub enum RunEnd {
    /// Finished (a DAG), resting in a final state (a machine).
    Finished = 0,
    /// Failed, or halted.
    Failed = 1,
    /// Cancelled.
    Cancelled = 2,
}

/// Bits of a [`Rec::Status`] record's flags.
#[napi]
pub enum StatusFlag {
    /// A step would run a state now.
    CanStep = 1,
    /// Nothing runs: the machine waits for a step, an event or a timer.
    Resting = 2,
    /// Events wait in its queue (the face then leaves conditions to the core).
    Queued = 4,
    /// It ended and nothing of it runs any more: the face may release it.
    Done = 8,
}

/// Bits of the response header `io[1]`.
#[napi]
pub enum ResponseFlag {
    /// Let the event loop run before launching the steps of this response.
    Yield = 1,
    /// More records wait: call `more()`.
    More = 2,
    /// The command did not apply (a step that no longer counts, a run that ended).
    Ignored = 4,
}

/// Layout of the shared buffer.
#[napi]
pub enum Io {
    /// Where the response's records start (`io[0]` holds their length, `io[1]` flags).
    Records = 2,
    /// Ints in the buffer.
    Size = 16384,
}

/// Flags of [`create_run`].
#[napi]
pub enum RunFlag {
    /// Record events for listeners.
    Observe = 1,
    /// Steps with a semaphore key acquire first.
    Semaphores = 2,
    /// DAGs: ready nodes wait for `runNode`.
    Stepwise = 4,
    /// Its timers keep the process alive.
    KeepAlive = 8,
}

/// A record's first int: its code, and its length in ints above the low byte (so the face
/// skips records it does not know).
fn tag(code: Rec, len: i32) -> i32 {
    code as i32 | len << 8
}

/// Run keys cross as one integer: the runtime's slot index and its generation.
const INDEX_BITS: u32 = 24;
const INDEX_MASK: u32 = (1 << INDEX_BITS) - 1;

pub(crate) fn pack(key: RunKey) -> i32 {
    (key.index | ((key.gen & 0x7f) << INDEX_BITS)) as i32
}

pub(crate) fn unpack(key: i32) -> RunKey {
    let k = key as u32;
    RunKey {
        index: k & INDEX_MASK,
        gen: k >> INDEX_BITS,
    }
}

/// The face's condition evaluator: `(run, transition, eventHandle) => 0 | 1 | 2`.
type GuardFn = FunctionRef<FnArgs<(u32, u32, f64)>, u32>;
/// The face's `retryOn` for a timeout: `(run, step, message) => 0 | 1` (retry).
type RetryFn = FunctionRef<FnArgs<(u32, u32, String)>, u32>;

/// What the JS thread keeps for the binding.
pub(crate) struct Ctx {
    pub(crate) rt: Runtime,
    io: Option<(*mut i32, usize, Reference)>,
    guard: Option<GuardFn>,
    retry: Option<RetryFn>,
    out: Vec<(RunKey, Action)>,
    touched: Vec<RunKey>,
    /// Records that did not fit the buffer, for `more()`.
    overflow: Vec<i32>,
    overflow_at: usize,
    /// The last core message of each run (limits, choices, timeouts, storage failures).
    messages: HashMap<u32, String>,
}

/// A `Reference` to a JS object the binding holds (the io buffer), kept for its lifetime.
pub(crate) struct Reference(#[allow(dead_code)] napi::bindgen_prelude::ObjectRef<false>);

thread_local! {
    pub(crate) static CTX: RefCell<Ctx> = RefCell::new(Ctx {
        rt: Runtime::new(),
        io: None,
        guard: None,
        retry: None,
        out: Vec::new(),
        touched: Vec::new(),
        overflow: Vec::new(),
        overflow_at: 0,
        messages: HashMap::new(),
    });
}

/// The binding's state, for a call from JS. A transition condition runs while a call holds
/// it: a condition that calls into the binding again gets `None` (see [`ctx`]), never a panic.
pub(crate) fn with_ctx<T: Default>(f: impl FnOnce(&mut Ctx) -> T) -> T {
    CTX.with(|c| match c.try_borrow_mut() {
        Ok(mut c) => f(&mut c),
        Err(_) => T::default(),
    })
}

/// [`with_ctx`] for calls that report why they could not run.
pub(crate) fn ctx<T>(f: impl FnOnce(&mut Ctx) -> Result<T>) -> Result<T> {
    CTX.with(|c| match c.try_borrow_mut() {
        Ok(mut c) => f(&mut c),
        Err(_) => Err(coded(
            "ERR_REENTRANT",
            "ramus: a transition condition or a retryOn predicate cannot call into the engine (send, cancel, emit or start runs after it returns)",
        )),
    })
}

/// Errors thrown to JS carry a stable code (`err.code`, e.g. `ERR_DEFINITION`).
pub(crate) type JsError = napi::Error<String>;
/// The result of a binding call.
pub(crate) type JsResult<T> = std::result::Result<T, JsError>;
// `#[napi]` recognizes a fallible function by the name `Result`.
use JsResult as Result;

/// A JS error with the engine error's code.
pub(crate) fn js_error(e: ramus_engine::EngineError) -> JsError {
    napi::Error::new(e.code().to_owned(), e.to_string())
}

/// A JS error from a napi failure (a bad argument, a JS callback that threw).
pub(crate) fn napi_error(e: Error) -> JsError {
    napi::Error::new("ERR_NAPI".to_owned(), e.reason.clone())
}

/// A JS error with `code`.
pub(crate) fn coded(code: &str, message: impl Into<String>) -> JsError {
    napi::Error::new(code.to_owned(), message.into())
}

/// Hand the binding the shared buffer (an `Int32Array` of [`Io::Size`] ints), the face's
/// condition evaluator `(run, transition, eventHandle) => 0 | 1 | 2` (holds, does not,
/// threw) and its `retryOn` for timeouts `(run, step, message) => 0 | 1` (retry).
#[napi]
pub fn init(
    env: Env,
    io: Int32Array,
    guard: Function<FnArgs<(u32, u32, f64)>, u32>,
    retry: Function<FnArgs<(u32, u32, String)>, u32>,
) -> Result<()> {
    init_inner(env, io, guard, retry).map_err(napi_error)
}

fn init_inner(
    env: Env,
    io: Int32Array,
    guard: Function<FnArgs<(u32, u32, f64)>, u32>,
    retry: Function<FnArgs<(u32, u32, String)>, u32>,
) -> napi::Result<()> {
    let mut io = io;
    // SAFETY: the ArrayBuffer behind `io` is kept alive by the reference below and is
    // never detached or resized by the face; only the JS thread touches it, and only
    // while it is blocked in a call into this binding or between calls.
    let slice = unsafe { io.as_mut() };
    let (ptr, len) = (slice.as_mut_ptr(), slice.len());
    let object = io.into_unknown(&env)?.coerce_to_object()?;
    let reference = object.create_ref::<false>()?;
    let guard = guard.create_ref()?;
    let retry = retry.create_ref()?;
    with_ctx(|c| {
        c.io = Some((ptr, len, Reference(reference)));
        c.guard = Some(guard);
        c.retry = Some(retry);
    });
    Ok(())
}

/// The condition oracle of one call: the face's answers for the eventless conditions it
/// evaluated before reporting the step, then a call back into JS for any other.
struct FaceGuards<'a> {
    env: &'a Env,
    guard: Option<&'a GuardFn>,
    retry: Option<&'a RetryFn>,
    machine: Option<Arc<ramus_core::CompiledMachine>>,
    state: u32,
    answer: i32,
    run: u32,
    error: Option<Error>,
}

impl Guards for FaceGuards<'_> {
    fn holds(
        &mut self,
        transition: u32,
        event: Option<u64>,
    ) -> std::result::Result<bool, GuardFailed> {
        if event.is_none() && self.answer != -1 {
            if let Some(m) = &self.machine {
                if let Some(p) = m.eventless_guards(self.state).position(|t| t == transition) {
                    let p = p as i32;
                    return match self.answer {
                        a if a >= 0 => Ok(p == a),
                        -2 => Ok(false),
                        a if p == -3 - a => Err(GuardFailed),
                        _ => Ok(false),
                    };
                }
            }
        }
        let Some(guard) = self.guard else {
            return Ok(true);
        };
        let handle = event.map_or(-1.0, |h| h as f64);
        let answer = guard
            .borrow_back(self.env)
            .and_then(|f| f.call((self.run, transition, handle).into()));
        match answer {
            Ok(1) => Ok(true),
            Ok(0) => Ok(false),
            Ok(_) => Err(GuardFailed),
            Err(e) => {
                self.error = Some(e);
                Err(GuardFailed)
            }
        }
    }

    fn retries_timeout(&mut self, step: u32, _slot: u32, message: &str) -> bool {
        let Some(retry) = self.retry else {
            return false;
        };
        // A `retryOn` that throws declines, as it does for a runner's error.
        retry
            .borrow_back(self.env)
            .and_then(|f| f.call((self.run, step, message.to_owned()).into()))
            .is_ok_and(|r| r == 1)
    }
}

impl Ctx {
    fn io(&mut self) -> Result<&mut [i32]> {
        match &self.io {
            // SAFETY: see `init`.
            Some((ptr, len, _)) => Ok(unsafe { std::slice::from_raw_parts_mut(*ptr, *len) }),
            None => Err(coded("ERR_NAPI", "ramus: the binding was not initialized")),
        }
    }

    /// Apply the request in the buffer, with the JSON values the face passed.
    fn call(&mut self, env: &Env, value: Option<&str>, context: Option<&str>) -> Result<i32> {
        let io = self.io()?;
        let (op, key, a, b, c) = (io[0], unpack(io[1]), io[2], io[3], io[4]);
        let command = match op {
            1 => Command::Start,
            2 => Command::Step,
            3 => Command::Complete {
                slot: a as u32,
                outcome: match b {
                    0 => Outcome::Ok,
                    1 => Outcome::Error,
                    3 => Outcome::Fatal,
                    4 => Outcome::Cached,
                    _ => Outcome::Cancelled,
                },
            },
            4 => Command::Acquired { slot: a as u32 },
            5 => Command::RunNode { node: a as u32 },
            6 => Command::Cancel,
            8 => Command::CancelNode { node: a as u32 },
            9 => Command::Grow,
            10 => Command::Rerun {
                node: a as u32,
                given: b != 0,
            },
            7 => {
                let n = (a.max(0) as usize).min(io.len().saturating_sub(5));
                let answers = io[5..5 + n].to_vec();
                return self.local(key, &answers);
            }
            _ => return Err(coded("ERR_NAPI", format!("ramus: unknown op {op}"))),
        };
        let answer = if op == 3 { c } else { -1 };
        self.apply(env, key, command, answer, CommandValues { value, context })
    }

    pub(crate) fn apply(
        &mut self,
        env: &Env,
        key: RunKey,
        command: Command,
        answer: i32,
        values: CommandValues,
    ) -> Result<i32> {
        let (machine, state) = match self.rt.get(key).map(|l| &l.exec) {
            Some(Executor::Machine(m)) => (Some(Arc::clone(m.machine())), m.current()),
            _ => (None, 0),
        };
        let mut guards = FaceGuards {
            env,
            guard: self.guard.as_ref(),
            retry: self.retry.as_ref(),
            machine,
            state,
            answer,
            run: key.index,
            error: None,
        };
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let r = self.rt.apply(key, command, values, &mut guards, &mut out);
        let error = guards.error.take();
        self.out = out;
        if let Some(e) = error {
            return Err(napi_error(e));
        }
        let applied = r.map_err(js_error)?;
        let n = self.respond()?;
        if !applied {
            self.io()?[1] |= 4;
        }
        Ok(n)
    }

    /// Apply the completions of the steps the face ran by itself ([`Op::Local`]): it moved
    /// and launched as they say already. A step the core would not have taken is a bug,
    /// reported as such rather than left to corrupt the run.
    fn local(&mut self, key: RunKey, answers: &[i32]) -> Result<i32> {
        self.rt.apply_local(key, answers).map_err(js_error)?;
        self.respond_yielding(false)
    }

    /// Fire the timers of `clock` due at `now`, and write their records.
    pub(crate) fn fire(&mut self, env: &Env, clock: u32, now: u64) -> Result<i32> {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        self.rt.release_committed(&mut out);
        for (key, timer) in self.rt.take_due(clock, now) {
            // Per run: a condition or `retryOn` the timer leads to is the run's own.
            let mut guards = FaceGuards {
                env,
                guard: self.guard.as_ref(),
                retry: self.retry.as_ref(),
                machine: None,
                state: 0,
                answer: -1,
                run: key.index,
                error: None,
            };
            let _ = self.rt.apply(
                key,
                Command::TimerFired { timer },
                Default::default(),
                &mut guards,
                &mut out,
            );
        }
        self.out = out;
        self.respond()
    }

    /// Write the records of what the last call did into the buffer.
    pub(crate) fn respond(&mut self) -> Result<i32> {
        self.respond_yielding(true)
    }

    /// [`respond`](Self::respond); `yielding: false` leaves a pending yield for the next
    /// response (one that launches steps, as the yield is for them).
    fn respond_yielding(&mut self, yielding: bool) -> Result<i32> {
        let mut recs = std::mem::take(&mut self.overflow);
        recs.clear();
        self.overflow_at = 0;
        let out = std::mem::take(&mut self.out);
        for (key, action) in &out {
            let run = key.index as i32;
            match action {
                Action::Run { slot, node } => {
                    let (budget, attempt) = self
                        .rt
                        .get(*key)
                        .map_or((0, 1), |l| (l.local_budget(), l.exec.slot_attempt(*slot)));
                    recs.extend([
                        tag(Rec::Run, 6),
                        run,
                        *slot as i32,
                        *node as i32,
                        budget as i32,
                        attempt as i32,
                    ])
                }
                Action::Acquire { slot, node } => {
                    recs.extend([tag(Rec::Acquire, 4), run, *slot as i32, *node as i32])
                }
                Action::Ready { slot, node } => {
                    recs.extend([tag(Rec::Ready, 4), run, *slot as i32, *node as i32])
                }
                Action::Moved {
                    from,
                    to,
                    event,
                    input,
                } => {
                    if *input == InputRef::Timeout {
                        if let Some(m) = self.rt.get(*key).and_then(|l| l.def.machine()) {
                            self.messages.insert(key.index, m.timeout_message(*from));
                        }
                    }
                    recs.extend([
                        tag(Rec::Moved, 6),
                        run,
                        *from as i32,
                        *to as i32,
                        event.map_or(-1, |h| h as i32),
                        match input {
                            InputRef::Output => MoveInput::Output,
                            InputRef::Error => MoveInput::Error,
                            InputRef::Timeout => MoveInput::Timeout,
                        } as i32,
                    ])
                }
                Action::Failed { message, halted } => {
                    if let Some(m) = message {
                        self.messages.insert(key.index, m.clone());
                    }
                    recs.extend([
                        tag(Rec::Failed, 4),
                        run,
                        *halted as i32,
                        message.is_some() as i32,
                    ])
                }
                Action::DropEvent { handle } => {
                    recs.extend([tag(Rec::Drop, 3), run, *handle as i32])
                }
                Action::Ended(end) => {
                    let failed = match self.rt.get(*key).map(|l| &l.exec) {
                        Some(Executor::Dag(d)) => d.failed_node().map_or(-1, |n| n as i32),
                        _ => -1,
                    };
                    recs.extend([
                        tag(Rec::Ended, 4),
                        run,
                        match end {
                            End::Finished => RunEnd::Finished,
                            End::Failed => RunEnd::Failed,
                            End::Cancelled => RunEnd::Cancelled,
                        } as i32,
                        failed,
                    ])
                }
                Action::TimedOut { slot, node } => {
                    if let Some(l) = self.rt.get(*key) {
                        self.messages
                            .insert(key.index, l.def.timeout_message(*node));
                    }
                    recs.extend([tag(Rec::TimedOut, 4), run, *slot as i32, *node as i32])
                }
                Action::ArmTimer { .. } | Action::ClearTimer { .. } => {}
            }
        }
        let mut out = out;
        out.clear();
        self.out = out;
        for (key, e) in self.rt.take_failures() {
            self.messages.insert(key.index, e.to_string());
            recs.extend([tag(Rec::StorageFailed, 2), key.index as i32]);
        }
        let mut touched = std::mem::take(&mut self.touched);
        touched.clear();
        self.rt.take_touched(&mut touched);
        touched.sort_unstable();
        touched.dedup();
        for key in &touched {
            let Some(live) = self.rt.get_mut(*key) else {
                continue;
            };
            let run = key.index as i32;
            if let Executor::Machine(m) = &live.exec {
                let flag = |on: bool, f: StatusFlag| if on { f as i32 } else { 0 };
                let flags = flag(m.can_step(), StatusFlag::CanStep)
                    | flag(m.resting(), StatusFlag::Resting)
                    | flag(m.queued() > 0, StatusFlag::Queued)
                    | flag(live.is_done(), StatusFlag::Done);
                let status = m.status().code() as i32;
                let current = m.current() as i32;
                // The face keeps the last one: an agent loop that steps back into the same
                // state ends each call as it began, and needs no record for it.
                let mark = (status as u64) | (current as u64) << 8 | (flags as u64) << 40;
                if live.driver_mark != mark {
                    live.driver_mark = mark;
                    recs.extend([tag(Rec::Status, 5), run, status, current, flags]);
                }
            }
            if live.exec.recorder().has_events() && live_observed(live) {
                recs.extend([tag(Rec::Events, 2), run]);
            }
            if live
                .tap
                .as_ref()
                .and_then(|t| t.writer.as_ref())
                .is_some_and(|w| !w.is_sync() && !w.ended() && w.dirty())
            {
                recs.extend([tag(Rec::Flush, 2), run]);
            }
        }
        self.touched = touched;
        crate::clock::after_call(&mut self.rt);
        let yield_now = yielding && self.rt.take_yield();
        self.write(recs, yield_now)
    }

    fn write(&mut self, recs: Vec<i32>, yield_now: bool) -> Result<i32> {
        let io = self.io()?;
        let room = io.len() - 2;
        let n = recs.len().min(room);
        // Never split a record: cut at the last record boundary that fits.
        let n = if n < recs.len() {
            record_cut(&recs, n)
        } else {
            n
        };
        io[2..2 + n].copy_from_slice(&recs[..n]);
        io[0] = n as i32;
        io[1] = yield_now as i32 | ((n < recs.len()) as i32) << 1;
        self.overflow_at = n;
        self.overflow = recs;
        Ok(n as i32)
    }

    /// The next chunk of records that did not fit.
    fn more(&mut self) -> Result<i32> {
        let recs = std::mem::take(&mut self.overflow);
        let at = self.overflow_at;
        let rest = recs[at.min(recs.len())..].to_vec();
        self.write(rest, false)
    }
}

/// Whether a run's events go to the face (it listens), as opposed to only its sinks.
fn live_observed(live: &ramus_engine::Live) -> bool {
    live.observed()
}

/// The length of a record from its first int (the code, with the length above the low
/// byte: the face reads it from there, so lengths are written once, here).
fn record_len(head: i32) -> usize {
    (head >> 8) as usize
}

/// The largest prefix of whole records within `limit` ints.
fn record_cut(recs: &[i32], limit: usize) -> usize {
    let mut at = 0;
    while at < recs.len() {
        let next = at + record_len(recs[at]);
        if next > limit {
            break;
        }
        at = next;
    }
    at
}

/// Apply the request in the shared buffer. Returns how many ints of records were written
/// (they start at `io[Io.Records]`).
#[napi]
pub fn call(env: Env) -> Result<i32> {
    ctx(|c| c.call(&env, None, None))
}

/// [`call`] with the JSON values a stored or traced run's sinks need: the step's output
/// or error, and the context now.
#[napi]
pub fn call_with(env: Env, value: Option<String>, context: Option<String>) -> Result<i32> {
    ctx(|c| c.call(&env, value.as_deref(), context.as_deref()))
}

/// The records of the last call that did not fit the buffer.
#[napi]
pub fn more() -> Result<i32> {
    ctx(|c| c.more())
}

/// A machine state chose its next state (`transitionTo`): `target` as the runner named
/// it, `delay` in ms or as a duration text.
#[napi]
#[allow(clippy::too_many_arguments)]
pub fn choose(
    env: Env,
    run: i32,
    slot: u32,
    target: String,
    delay_ms: Option<f64>,
    delay_text: Option<String>,
    value: Option<String>,
    context: Option<String>,
) -> Result<i32> {
    let delay = match (&delay_text, delay_ms) {
        (Some(t), _) => Some(Delay::Text(t)),
        (None, Some(ms)) => Some(Delay::Ms(ms)),
        (None, None) => None,
    };
    let command = Command::Complete {
        slot,
        outcome: Outcome::Choose {
            target: &target,
            delay,
        },
    };
    ctx(|c| {
        c.apply(
            &env,
            unpack(run),
            command,
            -1,
            CommandValues {
                value: value.as_deref(),
                context: context.as_deref(),
            },
        )
    })
}

/// A live DAG run takes a larger definition (its nodes, then new ones); `Op.Grow` then
/// starts what can start.
#[napi]
pub fn stage_graph(run: i32, definition: &NativeDefinition) -> Result<()> {
    ctx(|c| {
        c.rt.stage_graph(unpack(run), Arc::clone(&definition.inner))
            .map_err(js_error)
    })
}

/// Send an event to a machine run; `handle` is the face's key for its data.
#[napi]
pub fn send(
    env: Env,
    run: i32,
    handle: u32,
    event_type: String,
    queue: bool,
    data: Option<String>,
    context: Option<String>,
) -> Result<i32> {
    let command = Command::Send {
        handle: handle as u64,
        event: &event_type,
        queue,
    };
    ctx(|c| {
        c.apply(
            &env,
            unpack(run),
            command,
            -1,
            CommandValues {
                value: data.as_deref(),
                context: context.as_deref(),
            },
        )
    })
}

/// The last message the core made for a run (a limit, a choice that does not hold, a
/// timeout, a storage failure).
#[napi]
pub fn message(run: u32) -> Option<String> {
    with_ctx(|c| c.messages.remove(&(run & INDEX_MASK)))
}

/// Create a run of `definition` (see [`RunFlag`]); `parent` is the packed key of the run
/// whose step `slot` starts it, or -1. `options` (JSON, optional): `name`, `traceparent`,
/// `input`/`context` (JSON texts, for a run nested in a stored one), `initial`.
#[napi]
pub fn create_run(
    definition: &NativeDefinition,
    flags: u32,
    parent: i32,
    slot: u32,
    clock: u32,
    options: Option<String>,
) -> Result<i32> {
    let opts = defs::run_options(definition, flags, parent, slot, clock, options.as_deref())?;
    ctx(|c| {
        c.rt.create(Arc::clone(&definition.inner), opts)
            .map(pack)
            .map_err(js_error)
    })
}

/// Let a run go once the face has what it needs: its memory is freed now. Returns the run
/// id and, for a DAG, its node states (one char each, `'0' + code`), so the face still
/// answers `runId` and `nodeState` afterwards.
#[napi]
pub fn release(run: i32) -> Option<String> {
    with_ctx(|c| {
        let key = unpack(run);
        let id = c.rt.run_id(key)?;
        let live = c.rt.release(key)?;
        c.messages.remove(&key.index);
        let mut s = id.to_string();
        if let Executor::Dag(d) = &live.exec {
            s.reserve(d.dag().len());
            for n in 0..d.dag().len() as u32 {
                s.push((b'0' + d.node_state(n) as u8) as char);
            }
        }
        Some(s)
    })
}

/// How many runs the binding holds live now (tests check that ended runs were let go).
/// The names of the status codes of [`Rec::Status`] records, by code.
#[napi]
pub fn machine_statuses() -> Vec<&'static str> {
    ramus_core::MachineStatus::ALL.map(|s| s.as_str()).to_vec()
}

/// The names of the node state codes of `nodeState` (and of a released run's states), by code.
#[napi]
pub fn node_states() -> Vec<&'static str> {
    ramus_core::NodeState::ALL.map(|s| s.as_str()).to_vec()
}

#[napi]
pub fn live_runs() -> u32 {
    with_ctx(|c| c.rt.len() as u32)
}

/// Whether steps of sync runs wait for their commits (a test clock lets them land).
#[napi]
pub fn held_steps() -> bool {
    with_ctx(|c| c.rt.holds_steps())
}

/// Whether the step of `slot` should stop (what `isCancelled()` reads).
#[napi]
pub fn is_cancelled(run: i32, slot: u32) -> bool {
    with_ctx(|c| {
        c.rt.get(unpack(run))
            .is_none_or(|l| l.exec.is_cancelled(slot))
    })
}

/// Whether the run ended in the core (a sync run's end may still wait for its commit
/// before the face hears of it).
#[napi]
pub fn has_ended(run: i32) -> bool {
    with_ctx(|c| c.rt.get(unpack(run)).is_none_or(|l| l.ended().is_some()))
}

/// A DAG node's state code (the position in `NodeState`), or -1.
#[napi]
pub fn node_state(run: i32, node: u32) -> i32 {
    with_ctx(|c| match c.rt.get(unpack(run)).map(|l| &l.exec) {
        Some(Executor::Dag(d)) if (node as usize) < d.dag().len() => d.node_state(node) as i32,
        _ => -1,
    })
}

/// The run id (shared with the enclosing run when nested).
#[napi]
pub fn run_id(run: i32) -> Option<String> {
    with_ctx(|c| c.rt.run_id(unpack(run)).map(|id| id.to_string()))
}

/// The id of a step.
#[napi]
pub fn step_id(run: i32, slot: u32) -> Option<String> {
    with_ctx(|c| c.rt.step_id(unpack(run), slot).map(|id| id.to_string()))
}

/// The `traceparent` of a step's span (or the run's), for runs started inside it.
#[napi]
pub fn traceparent(run: i32, slot: Option<u32>) -> Option<String> {
    with_ctx(|c| c.rt.traceparent(unpack(run), slot))
}

/// Turn event recording for listeners on or off.
#[napi]
pub fn set_observe(run: i32, on: bool) {
    with_ctx(|c| c.rt.set_observe(unpack(run), on))
}

/// The events recorded since the last drain (see `events::wire`), or null.
#[napi]
pub fn drain_events(run: i32) -> Option<String> {
    with_ctx(|c| {
        let key = unpack(run);
        let events = c.rt.drain(key);
        if events.is_empty() {
            return None;
        }
        let id = c.rt.run_id(key)?;
        let live = c.rt.get(key)?;
        Some(events::wire(&events, id, &live.exec))
    })
}

/// Record a custom event of a step; `data` is its JSON when the run is stored or traced.
#[napi]
pub fn custom_event(
    run: i32,
    slot: u32,
    event_type: String,
    data: Option<String>,
    store: Option<bool>,
) -> Result<i32> {
    ctx(|c| {
        c.rt.custom_event(unpack(run), slot, &event_type, data, store != Some(false))
            .map_err(js_error)?;
        c.respond()
    })
}

/// End of a turn of a batched stored run: write what it collected, with the context now.
#[napi]
pub fn flush_run(run: i32, context: Option<String>) -> Result<()> {
    ctx(|c| {
        c.rt.flush(unpack(run), context.as_deref())
            .map_err(js_error)
    })
}

/// A value of the run cannot be stored (`error`, JSON, names its path): the run ends as
/// failed with it.
#[napi]
pub fn fail_storage(run: i32, error: String) -> Result<i32> {
    ctx(|c| {
        let mut out = std::mem::take(&mut c.out);
        out.clear();
        let r = c.rt.fail_storage(unpack(run), error, &mut out);
        c.out = out;
        r.map_err(js_error)?;
        c.respond()
    })
}

/// Milliseconds of a duration (a number of ms, or `'90s'`, `'15m'`, `'2h'`, `'30d'`).
#[napi]
pub fn parse_duration_ms(text: String) -> Result<f64> {
    ramus_core::parse_duration(&text)
        .map(|ms| ms as f64)
        .ok_or_else(|| coded("ERR_INVALID_ARGUMENT", format!("Invalid duration: {text}")))
}

/// A fresh UUIDv7.
#[napi]
pub fn new_run_id() -> String {
    ramus_engine::ids::new_id(ramus_engine::Clock::now_ms(&ramus_engine::SystemClock))
}

/// [`call`] as a plain C callback: the hot path of every step skips napi-rs's wrapper
/// (argument conversion, borrow scopes), which costs more than the call itself.
unsafe extern "C" fn raw_call(
    env: napi::sys::napi_env,
    _info: napi::sys::napi_callback_info,
) -> napi::sys::napi_value {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let e = Env::from_raw(env);
        ctx(|c| c.call(&e, None, None))
    }));
    let mut out = std::ptr::null_mut();
    match outcome {
        Ok(Ok(n)) => {
            napi::sys::napi_create_int32(env, n, &mut out);
        }
        Ok(Err(err)) => throw(env, &err.status, &err.reason),
        Err(_) => throw(
            env,
            "ERR_PANIC",
            "ramus: the engine panicked (a bug: please report it)",
        ),
    }
    out
}

unsafe fn throw(env: napi::sys::napi_env, code: &str, message: &str) {
    let code = std::ffi::CString::new(code).unwrap_or_default();
    let message = std::ffi::CString::new(message.replace('\0', " ")).unwrap_or_default();
    napi::sys::napi_throw_error(env, code.as_ptr(), message.as_ptr());
}

/// The function the face calls on every step: [`call`] without napi-rs's wrapper.
#[napi]
pub fn fast_call(env: &Env) -> Result<Unknown<'_>> {
    let mut f = std::ptr::null_mut();
    // SAFETY: a plain function with no data, created on the JS thread.
    let status = unsafe {
        napi::sys::napi_create_function(
            env.raw(),
            c"call".as_ptr(),
            4,
            Some(raw_call),
            std::ptr::null_mut(),
            &mut f,
        )
    };
    if status != napi::sys::Status::napi_ok {
        return Err(coded(
            "ERR_NAPI",
            "ramus: could not create the call function",
        ));
    }
    // SAFETY: `f` is a function value just created in this scope.
    unsafe { Unknown::from_napi_value(env.raw(), f) }.map_err(napi_error)
}
