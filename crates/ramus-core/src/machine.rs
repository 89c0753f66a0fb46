//! State machines: definitions compiled into integer tables, and the run executor.
//!
//! Like [`DagRun`](crate::DagRun), a [`MachineRun`] is driven from outside with the
//! [`Command`]s of [`crate::run`] and answers with [`Action`]s. Transition guards are the
//! driver's functions: the core asks an injected [`Guards`] oracle, in declaration order,
//! only for guarded candidates.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use thiserror::Error;

use crate::event::{DataRef, EventKind, Recorder};
use crate::retry::RetryPolicy;
use crate::run::{Action, Command, Delay, End, InputRef, Outcome, RunPhase, TimerKind};

/// Why a machine definition, or a state's choice of next state, was rejected. Messages
/// are part of the public contract.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MachineError {
    /// The machine declares no states.
    #[error("Machine {0} has no states")]
    NoStates(String),
    /// No initial state was given.
    #[error("No initial state")]
    NoInitial,
    /// The initial state is not a state.
    #[error("Initial state {0} does not exist")]
    InitialMissing(String),
    /// An error state is not a state.
    #[error("Error state {0} does not exist")]
    ErrorStateMissing(String),
    /// A transition names a state that does not exist.
    #[error("State {state} Transition target {target} does not exist")]
    TargetMissing {
        /// The state declaring the transition.
        state: String,
        /// The unknown target.
        target: String,
    },
    /// A timeout names a state that does not exist.
    #[error("State {state} timeout target {target} does not exist")]
    TimeoutTargetMissing {
        /// The state declaring the timeout.
        state: String,
        /// The unknown target.
        target: String,
    },
    /// A state's run chose a next state that does not exist.
    #[error("State {state} chose transition target {target}, which does not exist")]
    ChoiceMissing {
        /// The choosing state.
        state: String,
        /// The unknown target.
        target: String,
    },
    /// A state's run chose a next state outside its declared transitions.
    #[error("State {state} chose transition target {target}, which is not among its transitions")]
    ChoiceNotAllowed {
        /// The choosing state.
        state: String,
        /// The target it may not take.
        target: String,
    },
    /// Two states share a name.
    #[error("State {0} is declared twice")]
    DuplicateState(String),
    /// A runner's `transitionTo` delay is not a duration.
    #[error("Invalid duration: {0}")]
    InvalidDuration(String),
    /// A snapshot does not fit the machine it is restored into.
    #[error("Cannot restore the machine: {reason}")]
    Restore {
        /// What does not fit.
        reason: String,
    },
}

/// The longest duration accepted, in ms: 2^53, the largest integer JS numbers hold exactly.
pub const MAX_DURATION_MS: u64 = 1 << 53;

/// Parse a duration: a number of milliseconds, or a number with a unit `ms`, `s`, `m`, `h`
/// or `d` (`'90s'`, `'15m'`, `'1.5h'`, `'30d'`).
pub fn parse_duration(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().ok()?;
    let factor = match unit.trim() {
        "" | "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => return None,
    };
    let ms = value * factor;
    // Beyond 2^53 ms (285,000 years) JS numbers lose integer precision: no real delay.
    (ms.is_finite() && ms >= 0.0 && ms <= MAX_DURATION_MS as f64).then(|| ms.round() as u64)
}

/// A transition as declared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransitionSpec {
    /// The event type that fires it; `""` fires without an event.
    pub event: String,
    /// The state it leads to.
    pub target: String,
    /// It has a condition the driver evaluates.
    pub guarded: bool,
    /// Wait this long (ms) before moving; another event's transition pre-empts the wait.
    pub delay_ms: Option<u64>,
}

/// A state as declared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateSpec {
    /// The state's name.
    pub name: String,
    /// Whether it has a runner (without one it passes its input on as its output).
    pub has_run: bool,
    /// Resting here finishes the machine.
    pub is_final: bool,
    /// Where it goes when its run fails (overrides the machine's).
    pub error_state: Option<String>,
    /// How often it may run in one machine run.
    pub max_visits: Option<u32>,
    /// `(after_ms, state)`: move to `state` when the run or the wait lasts longer.
    pub timeout: Option<(u64, String)>,
    /// How the timeout's `after` was written (`'5s'`), for the timeout error's message;
    /// `None` names it in milliseconds.
    pub timeout_label: Option<String>,
    /// Rate-limiting key.
    pub semaphore_key: Option<String>,
    /// Run again after a failure (see [`RetryPolicy`]).
    pub retry: Option<RetryPolicy>,
    /// Transitions in declaration order.
    pub transitions: Vec<TransitionSpec>,
}

/// A machine as declared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineSpec {
    /// The machine's name.
    pub name: String,
    /// The state it starts in.
    pub initial: Option<String>,
    /// Where any state goes when its run fails.
    pub error_state: Option<String>,
    /// How many state runs one machine run may make.
    pub max_steps: Option<u32>,
    /// The states.
    pub states: Vec<StateSpec>,
}

/// The most steps a driver runs by itself between two reports (a sync loop still yields to
/// the event loop every few thousand steps, as the runtime counts the reported ones).
pub const LOCAL_STEPS: u32 = 4096;

#[derive(Debug)]
struct State {
    name: String,
    has_run: bool,
    is_final: bool,
    error_state: Option<u32>,
    max_visits: Option<u32>,
    timeout: Option<(u64, u32)>,
    timeout_label: String,
    semaphore: bool,
    retry: Option<RetryPolicy>,
    has_transitions: bool,
    first: u32,
    end: u32,
}

/// One compiled transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Interned event id (0 is `""`).
    pub event: u32,
    /// Target state id.
    pub target: u32,
    /// Whether the driver must evaluate a condition.
    pub guarded: bool,
    /// Delay before moving, in ms.
    pub delay_ms: Option<u64>,
}

/// A validated machine. Transition ids are positions in the declaration order across all
/// states (state by state), which is how the driver indexes its conditions.
#[derive(Debug)]
pub struct CompiledMachine {
    name: String,
    states: Vec<State>,
    index: HashMap<String, u32>,
    initial: u32,
    max_steps: Option<u32>,
    transitions: Vec<Transition>,
    events: HashMap<String, u32>,
    event_names: Vec<String>,
}

impl CompiledMachine {
    /// Validate and compile, with the contract's messages and in its order.
    pub fn compile(spec: &MachineSpec) -> Result<CompiledMachine, MachineError> {
        if spec.states.is_empty() {
            return Err(MachineError::NoStates(spec.name.clone()));
        }
        let mut index = HashMap::with_capacity(spec.states.len());
        for (i, s) in spec.states.iter().enumerate() {
            if index.insert(s.name.clone(), i as u32).is_some() {
                return Err(MachineError::DuplicateState(s.name.clone()));
            }
        }
        let initial = match spec.initial.as_deref() {
            None | Some("") => return Err(MachineError::NoInitial),
            Some(name) => *index
                .get(name)
                .ok_or_else(|| MachineError::InitialMissing(name.to_string()))?,
        };
        let lookup_error_state = |name: &String| {
            index
                .get(name.as_str())
                .copied()
                .ok_or_else(|| MachineError::ErrorStateMissing(name.clone()))
        };
        let machine_error = spec
            .error_state
            .as_ref()
            .map(lookup_error_state)
            .transpose()?;
        let mut events: HashMap<String, u32> = HashMap::from([(String::new(), 0)]);
        let mut event_names = vec![String::new()];
        let mut transitions = Vec::new();
        let mut states = Vec::with_capacity(spec.states.len());
        for s in &spec.states {
            let own_error = s.error_state.as_ref().map(lookup_error_state).transpose()?;
            let first = transitions.len() as u32;
            for t in &s.transitions {
                let target = *index
                    .get(&t.target)
                    .ok_or_else(|| MachineError::TargetMissing {
                        state: s.name.clone(),
                        target: t.target.clone(),
                    })?;
                let next = event_names.len() as u32;
                let event = *events.entry(t.event.clone()).or_insert_with(|| {
                    event_names.push(t.event.clone());
                    next
                });
                transitions.push(Transition {
                    event,
                    target,
                    guarded: t.guarded,
                    delay_ms: t.delay_ms,
                });
            }
            let timeout = match &s.timeout {
                None => None,
                Some((after, target)) => Some((
                    *after,
                    *index
                        .get(target)
                        .ok_or_else(|| MachineError::TimeoutTargetMissing {
                            state: s.name.clone(),
                            target: target.clone(),
                        })?,
                )),
            };
            states.push(State {
                name: s.name.clone(),
                has_run: s.has_run,
                is_final: s.is_final,
                error_state: own_error.or(machine_error),
                max_visits: s.max_visits,
                timeout_label: match (&s.timeout, &s.timeout_label) {
                    (_, Some(label)) => label.clone(),
                    (Some((after, _)), None) => format!("{after}ms"),
                    (None, None) => String::new(),
                },
                timeout,
                semaphore: s.semaphore_key.is_some(),
                retry: s.retry.clone(),
                has_transitions: !s.transitions.is_empty(),
                first,
                end: transitions.len() as u32,
            });
        }
        Ok(CompiledMachine {
            name: spec.name.clone(),
            states,
            index,
            initial,
            max_steps: spec.max_steps,
            transitions,
            events,
            event_names,
        })
    }

    /// The machine's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of states.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Always false: a compiled machine has states.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// The declared initial state.
    pub fn initial(&self) -> u32 {
        self.initial
    }

    /// A state's id by name.
    pub fn state_id(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }

    /// A state's name.
    pub fn state_name(&self, state: u32) -> &str {
        &self.states[state as usize].name
    }

    /// Whether a state has a runner.
    pub fn has_run(&self, state: u32) -> bool {
        self.states[state as usize].has_run
    }

    /// Whether a state is final.
    pub fn is_final(&self, state: u32) -> bool {
        self.states[state as usize].is_final
    }

    /// Whether any transition has a delay or any state a timeout: only then does a run need
    /// the clock when nobody observes it.
    pub fn uses_timers(&self) -> bool {
        self.transitions.iter().any(|t| t.delay_ms.is_some())
            || self
                .states
                .iter()
                .any(|s| s.timeout.is_some() || s.retry.is_some())
    }

    /// A state's timeout, `(after_ms, target)`.
    pub fn timeout(&self, state: u32) -> Option<(u64, u32)> {
        self.states[state as usize].timeout
    }

    /// The message of the error a state's timeout gives its target as input.
    pub fn timeout_message(&self, state: u32) -> String {
        let s = &self.states[state as usize];
        format!("State {} timed out after {}", s.name, s.timeout_label)
    }

    /// The guarded `""` transitions of a state that are tried before its first unguarded
    /// one, in declaration order: after a run with no event queued, a driver may evaluate
    /// their conditions in this order, stopping at the first that holds, and answer the
    /// core's questions from those results (one call per step instead of a call back per
    /// condition).
    pub fn eventless_guards(&self, state: u32) -> impl Iterator<Item = u32> + '_ {
        self.state_transitions(state)
            .filter(|(_, t)| t.event == 0)
            .take_while(|(_, t)| t.guarded)
            .map(|(id, _)| id)
    }

    /// Where a driver running a batch of local steps (see [`MachineRun::local_budget`]) may
    /// move by itself after `state` ran and no event was queued: entry `k` for the `k`-th
    /// condition of [`eventless_guards`](Self::eventless_guards) holding, then one entry for
    /// none of them holding. `None` where the core must decide (the move arms a timer, or
    /// enters a state that is final, has a timeout or a `maxVisits`: those need the core's
    /// bookkeeping), or where the machine rests.
    ///
    /// ```
    /// use ramus_core::machine::{CompiledMachine, MachineSpec, StateSpec, TransitionSpec};
    /// let to = |target: &str, guarded| TransitionSpec {
    ///     event: String::new(),
    ///     target: target.into(),
    ///     guarded,
    ///     delay_ms: None,
    /// };
    /// let spec = MachineSpec {
    ///     name: "loop".into(),
    ///     initial: Some("think".into()),
    ///     states: vec![
    ///         StateSpec {
    ///             name: "think".into(),
    ///             has_run: true,
    ///             // Think again while a condition holds, else finish.
    ///             transitions: vec![to("think", true), to("done", false)],
    ///             ..Default::default()
    ///         },
    ///         StateSpec { name: "done".into(), is_final: true, ..Default::default() },
    ///     ],
    ///     ..Default::default()
    /// };
    /// let m = CompiledMachine::compile(&spec).unwrap();
    /// let think = m.state_id("think").unwrap();
    /// // Looping is local; finishing is the core's.
    /// assert_eq!(m.local_moves(think), vec![Some(think), None]);
    /// ```
    pub fn local_moves(&self, state: u32) -> Vec<Option<u32>> {
        let guards = self.eventless_guards(state).count() as i32;
        let none = if guards == 0 { -1 } else { -2 };
        (0..guards)
            .chain([none])
            .map(|answer| self.local_move(state, answer))
            .collect()
    }

    /// One entry of [`local_moves`](Self::local_moves), by the answer a driver gives in a
    /// step's completion: `k ≥ 0` the `k`-th condition held; -2 none did; -1 the state has
    /// none. `None` also for an answer that does not fit the state.
    pub fn local_move(&self, state: u32, answer: i32) -> Option<u32> {
        let eventless = self
            .state_transitions(state)
            .filter(|(_, t)| t.event == 0)
            .map(|(_, t)| *t);
        for (k, t) in (0i32..).zip(eventless) {
            if !t.guarded {
                // The first unguarded one is taken when no condition before it held.
                let fits = if k == 0 { answer == -1 } else { answer == -2 };
                return if fits { self.local_target(t) } else { None };
            }
            if answer == k {
                return self.local_target(t);
            }
        }
        None
    }

    fn local_target(&self, t: Transition) -> Option<u32> {
        let s = &self.states[t.target as usize];
        let plain = t.delay_ms.is_none_or(|d| d == 0)
            && !s.is_final
            && s.timeout.is_none()
            && s.max_visits.is_none();
        plain.then_some(t.target)
    }

    /// The ids of a state's transitions.
    pub fn transition_range(&self, state: u32) -> std::ops::Range<u32> {
        let s = &self.states[state as usize];
        s.first..s.end
    }

    /// Number of transitions (ids are `0..transition_count()`).
    pub fn transition_count(&self) -> usize {
        self.transitions.len()
    }

    /// A transition by id.
    pub fn transition(&self, id: u32) -> Transition {
        self.transitions[id as usize]
    }

    /// The interned id of an event type, if any transition uses it.
    pub fn event_id(&self, event: &str) -> Option<u32> {
        self.events.get(event).copied()
    }

    /// An interned event type's name.
    pub fn event_name(&self, event: u32) -> &str {
        &self.event_names[event as usize]
    }

    /// Event types a state has transitions for (without `""`), in declaration order.
    pub fn available_events(&self, state: u32) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for t in self.state_transitions(state) {
            let name = self.event_name(t.1.event);
            if !name.is_empty() && !out.contains(&name) {
                out.push(name);
            }
        }
        out
    }

    /// Validate a runner's own choice of next state (`transitionTo`).
    pub fn resolve_choice(&self, state: u32, target: &str) -> Result<u32, MachineError> {
        let s = &self.states[state as usize];
        let id = self
            .state_id(target)
            .ok_or_else(|| MachineError::ChoiceMissing {
                state: s.name.clone(),
                target: target.to_string(),
            })?;
        if s.has_transitions && !self.state_transitions(state).any(|(_, t)| t.target == id) {
            return Err(MachineError::ChoiceNotAllowed {
                state: s.name.clone(),
                target: target.to_string(),
            });
        }
        Ok(id)
    }

    fn state_transitions(&self, state: u32) -> impl Iterator<Item = (u32, &Transition)> {
        let s = &self.states[state as usize];
        (s.first..s.end).map(move |i| (i, &self.transitions[i as usize]))
    }

    fn handles(&self, state: u32, event: Option<u32>) -> bool {
        event.is_some_and(|e| self.state_transitions(state).any(|(_, t)| t.event == e))
    }
}

/// A machine's status, as `machineStatus` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MachineStatus {
    /// Not stepped yet.
    Initial,
    /// Can step.
    Ready,
    /// Waiting for semaphore slots.
    PendingSemaphore,
    /// A state's run is executing.
    Running,
    /// Resting until an event fires a transition.
    WaitingForEvent,
    /// Waiting for a delayed transition.
    Sleeping,
    /// Resting in a final state.
    Final,
    /// A state failed (moving to an error state, resting in one, or halted for a retry).
    Error,
    /// Cancelled.
    Cancelled,
}

impl MachineStatus {
    /// Every status, in the order of their codes (see [`MachineStatus::code`]).
    pub const ALL: [MachineStatus; 9] = [
        MachineStatus::Initial,
        MachineStatus::Ready,
        MachineStatus::PendingSemaphore,
        MachineStatus::Running,
        MachineStatus::WaitingForEvent,
        MachineStatus::Sleeping,
        MachineStatus::Final,
        MachineStatus::Error,
        MachineStatus::Cancelled,
    ];

    /// The public name of the status.
    pub fn as_str(self) -> &'static str {
        match self {
            MachineStatus::Initial => "initial",
            MachineStatus::Ready => "ready",
            MachineStatus::PendingSemaphore => "pendingSemaphore",
            MachineStatus::Running => "running",
            MachineStatus::WaitingForEvent => "waitingForEvent",
            MachineStatus::Sleeping => "sleeping",
            MachineStatus::Final => "final",
            MachineStatus::Error => "error",
            MachineStatus::Cancelled => "cancelled",
        }
    }

    /// A small integer for the binding's action buffer: the position in [`Self::ALL`].
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// A delayed transition waiting for its timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sleep {
    timer: u64,
    target: u32,
    event: Option<u64>,
    input: InputRef,
}

/// Where a machine run is. Each phase carries what only it has (the running step, the
/// pending delayed move), so no combination of fields can contradict another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Not stepped yet.
    Initial,
    /// In a state that has not run yet (entered by a transition): a step runs it.
    Ready,
    /// Waiting for the semaphore slots of step `slot`.
    Acquiring { slot: u32, exempt: bool },
    /// Step `slot` runs the current state. `exempt`: it was let past a limit, so a
    /// snapshot taken now gives the exemption back (the state runs again after a restore).
    Running { slot: u32, exempt: bool },
    /// The state ran and rests until an event fires a transition.
    Waiting,
    /// A delayed transition waits for its timer.
    Sleeping(Sleep),
    /// The state failed and runs again when `timer` fires (its `retry`).
    Backoff { timer: u64 },
    /// Resting in a final state.
    Final,
    /// A state failed and there was no error state: a step retries it.
    Halted,
    /// Cancelled; `draining` is the step still running, which takes its transition when it
    /// ends, after which nothing more runs.
    Cancelled { draining: Option<u32> },
}

/// An event waiting for the running state to end, or for a state that handles it.
#[derive(Clone, Copy, Debug)]
struct Queued {
    handle: u64,
    event: Option<u32>,
    queue: bool,
}

/// Where a transition leads, with its delay.
#[derive(Clone, Copy, Debug)]
struct Move {
    target: u32,
    delay_ms: Option<u64>,
}

/// Step and visit counts for `maxSteps` / `maxVisits`.
#[derive(Clone, Debug, Default)]
struct Limits {
    steps: u32,
    visits: Vec<u32>,
    /// A limit was exceeded once: the next breach halts instead of going to an error state
    /// again, so a loop through an error state cannot escape `maxSteps`.
    breached: bool,
    /// The next step may run although a limit is reached (the error state of a breach).
    exempt: bool,
}

/// The oracle for transition conditions, implemented by the driver.
pub trait Guards {
    /// Whether the condition of `transition` holds for the event with handle `event`
    /// (`None` for `""` transitions). `Err` when the condition itself failed; the driver
    /// keeps the error and the core treats it as the current state's failure.
    fn holds(&mut self, transition: u32, event: Option<u64>) -> Result<bool, GuardFailed>;

    /// Whether the `retryOn` of `step` (a DAG node or a machine state) retries the
    /// `TimeoutError` with `message` that its timeout gives the attempt of `slot`. The core
    /// asks only when the step's `retry` names a `retryOn` and allows another attempt;
    /// without one, a DAG node's timeout is retried and a state's timeout is taken.
    /// Answering false (the default: a driver with no predicates to ask) keeps a step with a
    /// `retryOn` from retrying its timeouts.
    fn retries_timeout(&mut self, step: u32, slot: u32, message: &str) -> bool {
        let _ = (step, slot, message);
        false
    }
}

/// A condition threw; the driver holds the error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardFailed;

/// Guards for machines whose transitions have no conditions.
pub struct NoGuards;

impl Guards for NoGuards {
    fn holds(&mut self, _: u32, _: Option<u64>) -> Result<bool, GuardFailed> {
        Ok(true)
    }
}

/// An event waiting in a snapshot's queue: the driver's handle, its type, and whether it
/// waits for a state that handles it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueuedEvent {
    /// The driver's handle of the event (its data is the driver's to keep).
    pub handle: u64,
    /// The event type.
    pub event: String,
    /// `queue: true` when sent.
    pub queue: bool,
}

/// Where a restored machine is, in a snapshot. A state that was running (or waiting for
/// its semaphores) when the snapshot was taken is `ready`: it runs again.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "phase", rename_all = "camelCase")]
pub enum PhaseSnapshot {
    /// Not stepped yet.
    Initial,
    /// A step runs the current state.
    Ready,
    /// Resting until an event fires a transition.
    Waiting,
    /// A delayed transition waits for its timer.
    #[serde(rename_all = "camelCase")]
    Sleeping {
        /// Its timer id.
        timer: u64,
        /// The state it moves to.
        target: String,
        /// The handle of the event that chose it, if one did.
        event: Option<u64>,
        /// Which value becomes the target's input.
        input: InputRef,
    },
    /// The state failed and runs again when the timer fires.
    Retrying {
        /// Its timer id.
        timer: u64,
    },
    /// Resting in a final state.
    Final,
    /// Halted on a failure without an error state.
    Halted,
    /// Cancelled.
    Cancelled,
}

/// Everything a machine run needs to continue in another process, by state *name* so a
/// snapshot reads well in the database. What the driver holds (context, the current input
/// and output, event data) is stored beside it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineSnapshot {
    /// The state the machine is in.
    pub current: String,
    /// The state before it.
    pub previous: Option<String>,
    /// What the machine is doing there.
    #[serde(flatten)]
    pub phase: PhaseSnapshot,
    /// The current state was entered because of an error (the machine shows `error`, and
    /// the visit does not count against the state's `maxVisits`).
    pub by_error: bool,
    /// States run so far (for `maxSteps`).
    pub steps: u32,
    /// Visits per state name (for `maxVisits`); states never visited are left out.
    pub visits: Vec<(String, u32)>,
    /// A limit was exceeded once already.
    pub breached: bool,
    /// The next step may run although a limit is reached.
    pub exempt: bool,
    /// Events waiting for a state that handles them.
    pub queue: Vec<QueuedEvent>,
    /// The armed timeout timer of the current state.
    pub timeout: Option<u64>,
    /// The last timer id handed out.
    pub next_timer: u64,
    /// The run's start event was recorded.
    pub started: bool,
    /// Which attempt of the current state runs next (or runs now); 1 unless it retries.
    #[serde(default = "first_attempt", skip_serializing_if = "is_first_attempt")]
    pub attempt: u32,
}

fn first_attempt() -> u32 {
    1
}

fn is_first_attempt(a: &u32) -> bool {
    *a == 1
}

/// One run of a compiled machine.
#[derive(Debug)]
pub struct MachineRun {
    m: Arc<CompiledMachine>,
    rec: Recorder,
    phase: Phase,
    /// The status last recorded, so a status event is recorded only when it changes.
    reported: MachineStatus,
    current: u32,
    previous: Option<u32>,
    by_error: bool,
    /// The last visit that ran, and its state: its step carries the transition it chose.
    last: Option<(u32, u32)>,
    /// Visits that timed out and still run, with their states: their late reports are
    /// ignored and their `isCancelled()` is true.
    abandoned: Vec<(u32, u32)>,
    limits: Limits,
    queue: VecDeque<Queued>,
    /// The armed timeout of the current state (it covers the run and the wait after it).
    timeout: Option<u64>,
    next_timer: u64,
    started: bool,
    semaphores: bool,
    auto: bool,
    /// The attempt of the current state that runs next (or runs now).
    attempt: u32,
}

impl MachineRun {
    /// A new run starting in `initial` (the machine's own initial state when `None`).
    pub fn new(
        m: Arc<CompiledMachine>,
        rec: Recorder,
        semaphores: bool,
        initial: Option<u32>,
    ) -> MachineRun {
        let current = initial.unwrap_or(m.initial);
        let n = m.len();
        MachineRun {
            m,
            rec,
            phase: Phase::Initial,
            reported: MachineStatus::Initial,
            current,
            previous: None,
            by_error: false,
            last: None,
            abandoned: Vec::new(),
            limits: Limits {
                visits: vec![0; n],
                ..Limits::default()
            },
            queue: VecDeque::new(),
            timeout: None,
            next_timer: 0,
            started: false,
            semaphores,
            auto: false,
            attempt: 1,
        }
    }

    /// The run's restorable state (see [`MachineSnapshot`]).
    pub fn snapshot(&self) -> MachineSnapshot {
        let name = |s: u32| self.m.state_name(s).to_owned();
        let mut limits = self.limits.clone();
        // A state that runs now runs again after a restore: the snapshot is of the moment
        // before it started, so its visit and step are not counted yet.
        let phase = match self.phase {
            Phase::Initial => PhaseSnapshot::Initial,
            Phase::Ready => PhaseSnapshot::Ready,
            Phase::Acquiring { exempt, .. } | Phase::Running { exempt, .. } => {
                limits.steps = limits.steps.saturating_sub(1);
                let v = &mut limits.visits[self.current as usize];
                *v = v.saturating_sub(1);
                limits.exempt |= exempt;
                PhaseSnapshot::Ready
            }
            Phase::Waiting => PhaseSnapshot::Waiting,
            Phase::Sleeping(s) => PhaseSnapshot::Sleeping {
                timer: s.timer,
                target: name(s.target),
                event: s.event,
                input: s.input,
            },
            Phase::Backoff { timer } => PhaseSnapshot::Retrying { timer },
            Phase::Final => PhaseSnapshot::Final,
            Phase::Halted => PhaseSnapshot::Halted,
            Phase::Cancelled { .. } => PhaseSnapshot::Cancelled,
        };
        MachineSnapshot {
            current: name(self.current),
            previous: self.previous.map(name),
            phase,
            by_error: self.by_error,
            steps: limits.steps,
            visits: limits
                .visits
                .iter()
                .enumerate()
                .filter(|(_, &v)| v > 0)
                .map(|(i, &v)| (name(i as u32), v))
                .collect(),
            breached: limits.breached,
            exempt: limits.exempt,
            queue: self
                .queue
                .iter()
                .map(|q| QueuedEvent {
                    handle: q.handle,
                    event: q
                        .event
                        .map_or(String::new(), |e| self.m.event_name(e).to_owned()),
                    queue: q.queue,
                })
                .collect(),
            timeout: self.timeout,
            next_timer: self.next_timer,
            started: self.started,
            attempt: self.attempt,
        }
    }

    /// A run continued from a snapshot. Fails when the snapshot names a state the machine
    /// does not have (the definition changed under it).
    pub fn restore(
        m: Arc<CompiledMachine>,
        rec: Recorder,
        semaphores: bool,
        snap: &MachineSnapshot,
    ) -> Result<MachineRun, MachineError> {
        let state = |name: &str| {
            m.state_id(name).ok_or_else(|| MachineError::Restore {
                reason: format!("the snapshot names state {name}, which the machine does not have"),
            })
        };
        let mut run = MachineRun::new(Arc::clone(&m), rec, semaphores, Some(state(&snap.current)?));
        run.phase = match &snap.phase {
            PhaseSnapshot::Initial => Phase::Initial,
            PhaseSnapshot::Ready => Phase::Ready,
            PhaseSnapshot::Waiting => Phase::Waiting,
            PhaseSnapshot::Sleeping {
                timer,
                target,
                event,
                input,
            } => Phase::Sleeping(Sleep {
                timer: *timer,
                target: state(target)?,
                event: *event,
                input: *input,
            }),
            PhaseSnapshot::Retrying { timer } => Phase::Backoff { timer: *timer },
            PhaseSnapshot::Final => Phase::Final,
            PhaseSnapshot::Halted => Phase::Halted,
            PhaseSnapshot::Cancelled => Phase::Cancelled { draining: None },
        };
        run.by_error = snap.by_error;
        run.reported = run.status();
        run.previous = snap.previous.as_deref().map(state).transpose()?;
        run.limits.steps = snap.steps;
        for (name, v) in &snap.visits {
            run.limits.visits[state(name)? as usize] = *v;
        }
        run.limits.breached = snap.breached;
        run.limits.exempt = snap.exempt;
        run.queue = snap
            .queue
            .iter()
            .map(|q| Queued {
                handle: q.handle,
                event: m.event_id(&q.event).filter(|&e| e != 0),
                queue: q.queue,
            })
            .collect();
        run.timeout = snap.timeout;
        run.next_timer = snap.next_timer;
        run.started = snap.started;
        run.attempt = snap.attempt.max(1);
        Ok(run)
    }

    /// Apply a command (see [`crate::Executor::apply`]).
    pub fn apply(
        &mut self,
        command: Command,
        guards: &mut dyn Guards,
        now: u64,
        out: &mut Vec<Action>,
    ) -> bool {
        match command {
            Command::Start => {
                self.auto = true;
                let stepped = self.step(now, out);
                stepped || !self.can_step()
            }
            Command::Step => self.step(now, out),
            Command::Complete { slot, outcome } => self.state_done(slot, outcome, guards, now, out),
            Command::Acquired { slot } => self.semaphore_acquired(slot, now, out),
            Command::Send {
                handle,
                event,
                queue,
            } => self.send(handle, event, queue, guards, now, out),
            Command::TimerFired { timer } => self.timer_fired(timer, guards, now, out),
            Command::Cancel => self.cancel(now, out),
            Command::RunNode { .. }
            | Command::CancelNode { .. }
            | Command::Rerun { .. }
            | Command::Grow => false,
        }
    }

    /// The status, derived from the phase.
    pub fn status(&self) -> MachineStatus {
        match self.phase {
            Phase::Initial => MachineStatus::Initial,
            Phase::Ready | Phase::Final if self.by_error => MachineStatus::Error,
            Phase::Ready => MachineStatus::Ready,
            Phase::Final => MachineStatus::Final,
            Phase::Acquiring { .. } => MachineStatus::PendingSemaphore,
            Phase::Running { .. } => MachineStatus::Running,
            Phase::Waiting => MachineStatus::WaitingForEvent,
            Phase::Sleeping(_) | Phase::Backoff { .. } => MachineStatus::Sleeping,
            Phase::Halted => MachineStatus::Error,
            Phase::Cancelled { .. } => MachineStatus::Cancelled,
        }
    }

    /// The run's status as stored.
    pub fn phase(&self) -> RunPhase {
        match self.phase {
            Phase::Waiting => RunPhase::WaitingForEvent,
            Phase::Sleeping(_) | Phase::Backoff { .. } => RunPhase::Sleeping,
            Phase::Final if self.by_error => RunPhase::Error,
            Phase::Final => RunPhase::Finished,
            Phase::Halted => RunPhase::Error,
            Phase::Cancelled { .. } => RunPhase::Cancelled,
            _ => RunPhase::Running,
        }
    }

    /// Whether nothing can move the run any more: cancelled, or resting in a final state
    /// that no event leaves, with nothing of it still running. (A halted machine can be
    /// retried with a step, and a final state with transitions woken by an event.)
    pub fn is_done(&self) -> bool {
        let idle = self.abandoned.is_empty() && self.timeout.is_none();
        match self.phase {
            Phase::Final => idle && !self.m.states[self.current as usize].has_transitions,
            Phase::Cancelled { draining } => draining.is_none() && self.abandoned.is_empty(),
            _ => false,
        }
    }

    /// Auto mode (after `run()`): whenever the machine can step after a report, an event or
    /// a timer, it steps within the same call, so a loop costs one call per state.
    pub fn set_auto(&mut self, on: bool) {
        self.auto = on;
    }

    /// Whether auto mode is on.
    pub fn auto(&self) -> bool {
        self.auto
    }

    /// Whether nothing runs now: the machine waits for a step, an event or a timer. A
    /// machine cancelled while a state runs is not resting until that state has reported
    /// and taken its transition: `run()` and `step()` settle only then, on the state it
    /// moved to, as the original's did.
    pub fn resting(&self) -> bool {
        !matches!(
            self.phase,
            Phase::Running { .. }
                | Phase::Acquiring { .. }
                | Phase::Cancelled { draining: Some(_) }
        )
    }

    /// The compiled machine.
    pub fn machine(&self) -> &Arc<CompiledMachine> {
        &self.m
    }

    /// The run's recorder (ids and events).
    pub fn recorder(&mut self) -> &mut Recorder {
        &mut self.rec
    }

    /// The current state.
    pub fn current(&self) -> u32 {
        self.current
    }

    /// The state before the current one.
    pub fn previous(&self) -> Option<u32> {
        self.previous
    }

    /// Events waiting in the queue.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// How many steps after the running one a driver may run by itself, taking only the
    /// moves of [`CompiledMachine::local_moves`], before it reports them (applying one
    /// [`Command::Complete`] per step, with the conditions' answers it saw). Zero unless the
    /// machine runs by itself with nothing that could change the course of those steps
    /// meanwhile: no queued event, no armed timer, no semaphores, no limit breached, and at
    /// most what `maxSteps` leaves. A driver that lets anything else reach the run (an
    /// event, a cancel, a nested run) reports its local steps first.
    pub fn local_budget(&self) -> u32 {
        let Phase::Running { exempt: false, .. } = self.phase else {
            return 0;
        };
        if !self.auto
            || self.semaphores
            || self.limits.breached
            || self.timeout.is_some()
            || !self.queue.is_empty()
            || !self.abandoned.is_empty()
        {
            return 0;
        }
        let left = self
            .m
            .max_steps
            .map_or(u32::MAX, |max| max.saturating_sub(self.limits.steps));
        left.min(LOCAL_STEPS)
    }

    /// Apply the completions of steps a driver ran by itself within [`local_budget`]
    /// (Self::local_budget): `answers[i]` is what the conditions said after step `i`, as in
    /// a completion (see [`CompiledMachine::local_move`]). The same as one
    /// [`Command::Complete`] with [`Outcome::Ok`] per step, whose actions (a move, the next
    /// step) the driver took already, without them: a run nobody observes records nothing
    /// on the way, and a plain move leaves no timer, queue or limit to look at. Stops with
    /// the index of the first step that was not such a move, having applied those before.
    pub fn complete_local(&mut self, answers: &[i32]) -> Result<(), usize> {
        if (self.local_budget() as usize) < answers.len() || self.rec.observing() {
            return Err(0);
        }
        for (i, &answer) in answers.iter().enumerate() {
            let Phase::Running { slot, .. } = self.phase else {
                return Err(i);
            };
            let Some(to) = self.m.local_move(self.current, answer) else {
                return Err(i);
            };
            // What `state_done`, `after_run`, `transition` and `step` do for such a move.
            self.last = Some((slot, self.current));
            self.previous = Some(self.current);
            self.current = to;
            self.by_error = false;
            self.limits.steps += 1;
            self.limits.visits[to as usize] += 1;
            let next = self.rec.new_slot();
            self.rec.forget_before(slot);
            self.phase = Phase::Running {
                slot: next,
                exempt: false,
            };
        }
        Ok(())
    }

    /// The step slot running now (or waiting for its semaphores), if any.
    pub fn running_slot(&self) -> Option<u32> {
        match self.phase {
            Phase::Running { slot, .. } | Phase::Acquiring { slot, .. } => Some(slot),
            Phase::Cancelled { draining } => draining,
            _ => None,
        }
    }

    /// The state a recent step slot visits (the running one, the last one, or one that
    /// timed out and still runs).
    pub fn slot_state(&self, slot: u32) -> Option<u32> {
        if self.running_slot() == Some(slot) {
            return Some(self.current);
        }
        self.last
            .iter()
            .chain(&self.abandoned)
            .find(|(s, _)| *s == slot)
            .map(|&(_, state)| state)
    }

    /// Which attempt of its state a step slot is: the running one's, else 1.
    pub fn slot_attempt(&self, slot: u32) -> u32 {
        if self.running_slot() == Some(slot) {
            self.attempt
        } else {
            1
        }
    }

    /// Whether the machine halted on a failure without an error state (a retry is a step).
    pub fn halted(&self) -> bool {
        self.phase == Phase::Halted
    }

    /// Whether a step would run a state now.
    pub fn can_step(&self) -> bool {
        matches!(self.phase, Phase::Initial | Phase::Ready | Phase::Halted)
    }

    /// Whether the run of `slot` should stop: the machine was cancelled, or the state
    /// timed out while it ran.
    pub fn is_cancelled(&self, slot: u32) -> bool {
        matches!(self.phase, Phase::Cancelled { .. })
            || self.abandoned.iter().any(|&(s, _)| s == slot)
    }

    fn cancelled(&self) -> bool {
        matches!(self.phase, Phase::Cancelled { .. })
    }

    /// Move to `phase`, recording a status event when the status it shows changes.
    // Inlined: called with a phase built in place, a copy through memory stalls on reading
    // back what was just written (it was ~40% of a step).
    #[inline(always)]
    fn set_phase(&mut self, phase: Phase, now: u64) {
        self.phase = phase;
        self.report(now);
    }

    fn report(&mut self, now: u64) {
        let status = self.status();
        if status != self.reported {
            self.reported = status;
            self.rec.run_event(
                EventKind::MachineStatus,
                DataRef::Status(status.as_str(), self.current),
                now,
            );
        }
    }

    /// Step if auto mode is on and the machine can (not after a halt: that would retry forever).
    fn continue_auto(&mut self, now: u64, out: &mut Vec<Action>) {
        if self.auto && self.phase != Phase::Halted && self.can_step() {
            self.step(now, out);
        }
    }

    /// Run the current state once (or report the failure of a limit). False when it cannot step.
    fn step(&mut self, now: u64, out: &mut Vec<Action>) -> bool {
        if !self.can_step() {
            return false;
        }
        let state = self.current;
        if !self.limits.exempt {
            if let Some(max) = self.m.max_steps.filter(|&max| self.limits.steps >= max) {
                let msg = format!(
                    "Machine {} exceeded maxSteps ({max}) at state {}",
                    self.m.name,
                    self.m.state_name(state)
                );
                self.fail_limit(msg, now, out);
                self.continue_auto(now, out);
                return true;
            }
            let s = &self.m.states[state as usize];
            // A visit caused by an error does not count against the state's own limit (an
            // error handler may be reached many times), nor does another attempt of the
            // same visit; `maxSteps` still bounds the loop.
            if let Some(max) = s.max_visits.filter(|&max| {
                !self.by_error && self.attempt == 1 && self.limits.visits[state as usize] >= max
            }) {
                let msg = format!("State {} exceeded maxVisits ({max})", s.name);
                self.fail_limit(msg, now, out);
                self.continue_auto(now, out);
                return true;
            }
        }
        let exempt = std::mem::replace(&mut self.limits.exempt, false);
        self.limits.steps += 1;
        // Another attempt is the same visit.
        if self.attempt == 1 {
            self.limits.visits[state as usize] += 1;
        }
        if !self.started {
            self.started = true;
            self.rec
                .run_event(EventKind::MachineStart, DataRef::RunInput, now);
        }
        let slot = self.rec.new_slot();
        // Keep the ids of the previous visit (its transition event) and of runs that timed
        // out but may still emit; forget older ones.
        let keep = self
            .abandoned
            .iter()
            .map(|&(s, _)| s)
            .chain(self.last.map(|(s, _)| s))
            .min()
            .unwrap_or(slot);
        self.rec.forget_before(keep);
        if self.timeout.is_none() {
            if let Some((after, _)) = self.m.timeout(state) {
                self.timeout = Some(self.arm(now.saturating_add(after), TimerKind::Timeout, out));
            }
        }
        if self.semaphores && self.m.states[state as usize].semaphore {
            self.set_phase(Phase::Acquiring { slot, exempt }, now);
            out.push(Action::Acquire { slot, node: state });
        } else {
            self.begin(slot, exempt, now, out);
        }
        true
    }

    fn semaphore_acquired(&mut self, slot: u32, now: u64, out: &mut Vec<Action>) -> bool {
        match self.phase {
            Phase::Acquiring { slot: s, exempt } if s == slot => {
                self.begin(slot, exempt, now, out);
                true
            }
            _ => false,
        }
    }

    fn begin(&mut self, slot: u32, exempt: bool, now: u64, out: &mut Vec<Action>) {
        self.set_phase(Phase::Running { slot, exempt }, now);
        self.rec
            .step_event(slot, EventKind::MachineNodeStart, DataRef::NodeInput, now);
        out.push(Action::Run {
            slot,
            node: self.current,
        });
    }

    /// Report how the run of `slot` ended. Reports of runs that no longer count (timed
    /// out) are ignored.
    fn state_done(
        &mut self,
        slot: u32,
        outcome: Outcome,
        guards: &mut dyn Guards,
        now: u64,
        out: &mut Vec<Action>,
    ) -> bool {
        if self.running_slot() != Some(slot) || matches!(self.phase, Phase::Acquiring { .. }) {
            self.abandoned.retain(|&(s, _)| s != slot);
            return false;
        }
        if self.cancelled() {
            self.phase = Phase::Cancelled { draining: None };
        } else {
            // Not a status change: the outcome decides the next phase below.
            self.phase = Phase::Ready;
        }
        self.last = Some((slot, self.current));
        match outcome {
            Outcome::Error if !self.cancelled() && self.retry(slot, now, out) => {}
            Outcome::Error | Outcome::Fatal => self.fail(None, Some(slot), now, out),
            Outcome::Cancelled => {
                self.cancel(now, out);
            }
            Outcome::Ok | Outcome::Cached => {
                let data = if outcome == Outcome::Cached {
                    DataRef::CachedOutput
                } else {
                    DataRef::NodeOutput
                };
                self.rec
                    .step_event(slot, EventKind::MachineNodeFinish, data, now);
                self.after_run(None, guards, now, out);
            }
            Outcome::Choose { target, delay } => {
                let choice = self.m.resolve_choice(self.current, target).and_then(|t| {
                    let delay_ms = match delay {
                        None => None,
                        Some(Delay::Ms(ms)) => Some(
                            duration_ms(ms)
                                .ok_or_else(|| MachineError::InvalidDuration(format_ms(ms)))?,
                        ),
                        Some(Delay::Text(text)) => Some(
                            parse_duration(text)
                                .ok_or_else(|| MachineError::InvalidDuration(text.to_owned()))?,
                        ),
                    };
                    Ok(Move {
                        target: t,
                        delay_ms,
                    })
                });
                match choice {
                    Ok(mv) => {
                        self.rec.step_event(
                            slot,
                            EventKind::MachineNodeFinish,
                            DataRef::NodeOutput,
                            now,
                        );
                        self.after_run(Some(mv), guards, now, out);
                    }
                    Err(e) => self.fail(Some(e.to_string()), Some(slot), now, out),
                }
            }
        }
        self.continue_auto(now, out);
        true
    }

    /// An event arrived; `handle` is the driver's key for its data. Returns true when a
    /// transition was taken (or scheduled) for it now.
    fn send(
        &mut self,
        handle: u64,
        event: &str,
        queue: bool,
        guards: &mut dyn Guards,
        now: u64,
        out: &mut Vec<Action>,
    ) -> bool {
        let event = self.m.event_id(event).filter(|&e| e != 0);
        let item = Queued {
            handle,
            event,
            queue,
        };
        match self.phase {
            // A failed attempt is not the state's end: events wait for the attempt that ends it.
            Phase::Running { .. } | Phase::Acquiring { .. } | Phase::Backoff { .. } => {
                self.queue.push_back(item);
                return false;
            }
            Phase::Cancelled { .. } => {
                out.push(Action::DropEvent { handle });
                return false;
            }
            _ => {}
        }
        if !self.m.handles(self.current, event) {
            if queue {
                self.queue.push_back(item);
            } else {
                out.push(Action::DropEvent { handle });
            }
            return false;
        }
        match self.select(event, Some(handle), guards) {
            Ok(Some(mv)) => {
                if let Phase::Sleeping(s) = self.phase {
                    self.clear_sleep(s, out);
                }
                self.take(mv, Some(handle), InputRef::Output, now, out);
                self.continue_auto(now, out);
                true
            }
            Ok(None) => {
                out.push(Action::DropEvent { handle });
                false
            }
            Err(GuardFailed) => {
                out.push(Action::DropEvent { handle });
                let last = self.last.map(|(s, _)| s);
                self.fail(None, last, now, out);
                self.continue_auto(now, out);
                false
            }
        }
    }

    /// A timer armed by an [`Action::ArmTimer`] fired.
    fn timer_fired(
        &mut self,
        timer: u64,
        guards: &mut dyn Guards,
        now: u64,
        out: &mut Vec<Action>,
    ) -> bool {
        if let Phase::Sleeping(s) = self.phase {
            if s.timer == timer {
                self.transition(s.target, s.event, s.input, now, out);
                self.continue_auto(now, out);
                return true;
            }
        }
        if self.phase == (Phase::Backoff { timer }) {
            self.set_phase(Phase::Ready, now);
            if self.auto {
                self.step(now, out);
            }
            return true;
        }
        if self.timeout != Some(timer) {
            return false;
        }
        self.timeout = None;
        match self.phase {
            Phase::Running { slot, .. } | Phase::Acquiring { slot, .. } => {
                self.abandoned.push((slot, self.current));
                // An attempt still waiting for its semaphores never ran: not one to retry.
                let ran = matches!(self.phase, Phase::Running { .. });
                if ran && self.retries_timeout(slot, guards) {
                    // The attempt failed with the timeout's error (the driver makes it),
                    // and the next one, after the wait, has a timeout of its own.
                    out.push(Action::TimedOut {
                        slot,
                        node: self.current,
                    });
                    self.phase = Phase::Ready;
                    self.last = Some((slot, self.current));
                    return self.retry(slot, now, out);
                }
            }
            Phase::Waiting => {}
            Phase::Sleeping(s) => self.clear_sleep(s, out),
            Phase::Backoff { timer } => out.push(Action::ClearTimer { timer }),
            _ => return false,
        }
        let Some((_, target)) = self.m.timeout(self.current) else {
            return false;
        };
        self.transition(target, None, InputRef::Timeout, now, out);
        self.continue_auto(now, out);
        true
    }

    /// Cancel: nothing more runs after the running state (if any) takes its transition.
    /// False when already cancelled.
    fn cancel(&mut self, now: u64, out: &mut Vec<Action>) -> bool {
        if self.cancelled() {
            return false;
        }
        let draining = match self.phase {
            Phase::Running { slot, .. } => Some(slot),
            Phase::Sleeping(s) => {
                self.clear_sleep(s, out);
                None
            }
            Phase::Backoff { timer } => {
                out.push(Action::ClearTimer { timer });
                None
            }
            _ => None,
        };
        self.set_phase(Phase::Cancelled { draining }, now);
        if let Some(timer) = self.timeout.take() {
            out.push(Action::ClearTimer { timer });
        }
        for q in self.queue.drain(..) {
            out.push(Action::DropEvent { handle: q.handle });
        }
        out.push(Action::Ended(End::Cancelled));
        true
    }

    /// A delayed transition that will not happen: its timer, and the event that chose it.
    fn clear_sleep(&self, s: Sleep, out: &mut Vec<Action>) {
        out.push(Action::ClearTimer { timer: s.timer });
        if let Some(handle) = s.event {
            out.push(Action::DropEvent { handle });
        }
    }

    fn arm(&mut self, at: u64, kind: TimerKind, out: &mut Vec<Action>) -> u64 {
        self.next_timer += 1;
        out.push(Action::ArmTimer {
            timer: self.next_timer,
            at,
            kind,
        });
        self.next_timer
    }

    /// After a successful run: the state's own choice, then queued events in order, then
    /// `""` transitions; otherwise the machine rests.
    fn after_run(
        &mut self,
        chosen: Option<Move>,
        guards: &mut dyn Guards,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        let mut taken: Option<(Move, Option<u64>)> = chosen.map(|mv| (mv, None));
        let pending = std::mem::take(&mut self.queue);
        let mut failed = false;
        for q in pending {
            if taken.is_some() || failed {
                if q.queue || failed {
                    self.queue.push_back(q);
                } else {
                    out.push(Action::DropEvent { handle: q.handle });
                }
                continue;
            }
            if !self.m.handles(self.current, q.event) {
                if q.queue {
                    self.queue.push_back(q);
                } else {
                    out.push(Action::DropEvent { handle: q.handle });
                }
                continue;
            }
            match self.select(q.event, Some(q.handle), guards) {
                Ok(Some(mv)) => taken = Some((mv, Some(q.handle))),
                Ok(None) => out.push(Action::DropEvent { handle: q.handle }),
                Err(GuardFailed) => {
                    out.push(Action::DropEvent { handle: q.handle });
                    failed = true;
                }
            }
        }
        let last = self.last.map(|(s, _)| s);
        if failed {
            self.fail(None, last, now, out);
            return;
        }
        if taken.is_none() {
            match self.select(Some(0), None, guards) {
                Ok(mv) => taken = mv.map(|mv| (mv, None)),
                Err(GuardFailed) => {
                    self.fail(None, last, now, out);
                    return;
                }
            }
        }
        match taken {
            Some((mv, event)) => self.take(mv, event, InputRef::Output, now, out),
            None if self.m.is_final(self.current) => self.rest_final(now, out),
            None if self.cancelled() => {}
            None => self.set_phase(Phase::Waiting, now),
        }
    }

    /// The first transition of the current state for `event` whose condition holds.
    fn select(
        &self,
        event: Option<u32>,
        handle: Option<u64>,
        guards: &mut dyn Guards,
    ) -> Result<Option<Move>, GuardFailed> {
        let Some(event) = event else { return Ok(None) };
        for (id, t) in self.m.state_transitions(self.current) {
            if t.event == event && (!t.guarded || guards.holds(id, handle)?) {
                return Ok(Some(Move {
                    target: t.target,
                    delay_ms: t.delay_ms,
                }));
            }
        }
        Ok(None)
    }

    fn take(
        &mut self,
        mv: Move,
        event: Option<u64>,
        input: InputRef,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        match mv.delay_ms {
            Some(delay) if delay > 0 && !self.cancelled() => {
                let timer = self.arm(now.saturating_add(delay), TimerKind::Delay, out);
                let sleep = Sleep {
                    timer,
                    target: mv.target,
                    event,
                    input,
                };
                self.set_phase(Phase::Sleeping(sleep), now);
            }
            _ => self.transition(mv.target, event, input, now, out),
        }
    }

    fn transition(
        &mut self,
        to: u32,
        event: Option<u64>,
        input: InputRef,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        if let Some(timer) = self.timeout.take() {
            out.push(Action::ClearTimer { timer });
        }
        let from = self.current;
        out.push(Action::Moved {
            from,
            to,
            event,
            input,
        });
        match self.last {
            Some((slot, _)) => {
                self.rec
                    .step_event(slot, EventKind::MachineTransition, DataRef::Transition, now)
            }
            None => self
                .rec
                .run_event(EventKind::MachineTransition, DataRef::Transition, now),
        }
        self.previous = Some(from);
        self.current = to;
        self.attempt = 1;
        self.by_error = input == InputRef::Error;
        if self.cancelled() {
            return;
        }
        // A final state without run rests at once, unless a queued event waits for it: then
        // it steps like any state (passing its input on) and the queue is tried after it.
        let queued_for_it = self.queue.iter().any(|q| self.m.handles(to, q.event));
        if self.m.is_final(to) && !self.m.has_run(to) && !queued_for_it {
            self.rest_final(now, out);
        } else {
            self.set_phase(Phase::Ready, now);
        }
    }

    fn rest_final(&mut self, now: u64, out: &mut Vec<Action>) {
        if self.cancelled() {
            return;
        }
        self.set_phase(Phase::Final, now);
        self.rec
            .run_event(EventKind::MachineFinish, DataRef::RunOutput, now);
        out.push(Action::Ended(End::Finished));
    }

    /// Whether the timed-out attempt of `slot` is retried rather than the timeout taken:
    /// only when the state's `retryOn` says so and another attempt is allowed.
    fn retries_timeout(&self, slot: u32, guards: &mut dyn Guards) -> bool {
        let state = self.current;
        match &self.m.states[state as usize].retry {
            Some(r) if r.asks_on_timeout(self.attempt) => {
                guards.retries_timeout(state, slot, &self.m.timeout_message(state))
            }
            _ => false,
        }
    }

    /// The attempt of `slot` failed: when the state's `retry` allows another, wait for it.
    fn retry(&mut self, slot: u32, now: u64, out: &mut Vec<Action>) -> bool {
        let Some(r) = &self.m.states[self.current as usize].retry else {
            return false;
        };
        if !r.retries_after(self.attempt) {
            return false;
        }
        let delay = r.delay_ms(self.attempt, self.rec.seed() ^ u64::from(slot));
        self.rec.step_event(
            slot,
            EventKind::MachineRetry,
            DataRef::Retry {
                attempt: self.attempt,
                delay,
            },
            now,
        );
        self.attempt += 1;
        let timer = self.arm(now.saturating_add(delay), TimerKind::Retry, out);
        self.set_phase(Phase::Backoff { timer }, now);
        true
    }

    /// A limit was exceeded: handled like a state error the first time, a halt after that.
    fn fail_limit(&mut self, message: String, now: u64, out: &mut Vec<Action>) {
        let again = std::mem::replace(&mut self.limits.breached, true);
        self.fail_to(Some(message), None, !again, now, out);
        // The error state this leads to may run once although the limit is reached.
        self.limits.exempt = !again;
    }

    /// The current state failed: go to its error state, or halt. An error state that
    /// fails itself halts rather than loop.
    fn fail(
        &mut self,
        message: Option<String>,
        slot: Option<u32>,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        self.fail_to(message, slot, true, now, out);
    }

    fn fail_to(
        &mut self,
        message: Option<String>,
        slot: Option<u32>,
        use_error_state: bool,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        let target = self.m.states[self.current as usize]
            .error_state
            .filter(|&t| use_error_state && t != self.current);
        let halted = target.is_none();
        out.push(Action::Failed { message, halted });
        match slot {
            Some(slot) => {
                self.rec
                    .step_event(slot, EventKind::MachineError, DataRef::NodeError, now)
            }
            None => self
                .rec
                .run_event(EventKind::MachineError, DataRef::RunError, now),
        }
        if let Phase::Sleeping(s) = self.phase {
            self.clear_sleep(s, out);
            self.phase = Phase::Ready;
        }
        match target {
            Some(target) => {
                if !self.cancelled() {
                    self.by_error = true;
                    self.set_phase(Phase::Ready, now);
                }
                self.transition(target, None, InputRef::Error, now, out);
            }
            None => {
                // A step after the halt is the user's retry: it gets the state's own again.
                self.attempt = 1;
                // A retry (a step) arms the timeout again.
                if let Some(timer) = self.timeout.take() {
                    out.push(Action::ClearTimer { timer });
                }
                if !self.cancelled() {
                    self.set_phase(Phase::Halted, now);
                    out.push(Action::Ended(End::Failed));
                }
            }
        }
    }
}

/// Milliseconds of a delay a runner gave as a number, or `None` when it is no duration.
fn duration_ms(ms: f64) -> Option<u64> {
    (ms.is_finite() && ms >= 0.0 && ms <= MAX_DURATION_MS as f64).then(|| ms.round() as u64)
}

/// A number as JS prints it in a message.
fn format_ms(ms: f64) -> String {
    if ms.is_nan() {
        "NaN".into()
    } else if ms.is_infinite() {
        if ms > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        ms.to_string()
    }
}
