//! State machines: definitions compiled into integer tables, and the run executor.
//!
//! Like [`DagRun`](crate::DagRun), a [`MachineRun`] is driven from outside. The driver
//! calls [`MachineRun::step`], reports each state run with [`MachineRun::state_done`], and
//! forwards events ([`MachineRun::send`]) and timers ([`MachineRun::timer_fired`]); each call
//! appends [`MachineAction`]s. Transition guards are the driver's functions: the core asks an
//! injected [`Guards`] oracle, in declaration order, only for guarded candidates.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use thiserror::Error;

use crate::event::{DataRef, EventKind, Recorder};

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
    /// Rate-limiting key.
    pub semaphore_key: Option<String>,
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

#[derive(Debug)]
struct State {
    name: String,
    has_run: bool,
    is_final: bool,
    error_state: Option<u32>,
    max_visits: Option<u32>,
    timeout: Option<(u64, u32)>,
    semaphore: bool,
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
                timeout,
                semaphore: s.semaphore_key.is_some(),
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
            || self.states.iter().any(|s| s.timeout.is_some())
    }

    /// A state's timeout, `(after_ms, target)`.
    pub fn timeout(&self, state: u32) -> Option<(u64, u32)> {
        self.states[state as usize].timeout
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

/// A machine's status.
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
}

/// Which value the driver must make the next state's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputRef {
    /// The current state's output.
    Output,
    /// The error of the last failure.
    Error,
    /// A timeout error for the state that timed out.
    Timeout,
}

/// How a state run ended, as reported by the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateOutcome {
    /// It returned an output (held by the driver as the current output).
    Ok,
    /// It failed (the driver holds the error).
    Err,
    /// It stopped itself because the machine was cancelled (not a failure): no transition.
    Cancelled,
    /// It chose its next state (see [`CompiledMachine::resolve_choice`]); the driver holds
    /// the output it passes on.
    Chose {
        /// Target state id.
        target: u32,
        /// Delay before moving, in ms.
        delay_ms: Option<u64>,
    },
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MachineAction {
    /// Call the state's runner (or pass its input through when it has none), then report
    /// with [`MachineRun::state_done`].
    RunState {
        /// The state.
        state: u32,
        /// The step slot of this visit.
        slot: u32,
    },
    /// Acquire the state's semaphore slots, then call [`MachineRun::semaphore_acquired`].
    AcquireSemaphore {
        /// The state.
        state: u32,
        /// The step slot of this visit.
        slot: u32,
    },
    /// A state failed. `message` is set when the core itself made the error (a limit):
    /// the driver turns it into the error value first. `halted` when there is no error
    /// state to go to: `finished` rejects.
    Errored {
        /// The core's error message, if the error is the core's.
        message: Option<String>,
        /// No error state: the machine stopped on the failed state.
        halted: bool,
    },
    /// The machine moved; the new state's input is `input`, and `event` is the driver's
    /// handle of the event that caused the move.
    Transitioned {
        /// Previous state.
        from: u32,
        /// New state.
        to: u32,
        /// The event's handle, if an event fired the transition.
        event: Option<u64>,
        /// The new input.
        input: InputRef,
    },
    /// Arm a timer that calls [`MachineRun::timer_fired`] at `at` (ms since the epoch).
    ArmTimer {
        /// Timer id.
        timer: u64,
        /// When it is due.
        at: u64,
        /// A delayed transition (true) or a state timeout (false); a store keeps the kind.
        delay: bool,
    },
    /// Disarm a timer.
    ClearTimer {
        /// Timer id.
        timer: u64,
    },
    /// An event was dropped unhandled: the driver can forget its data.
    DropEvent {
        /// The event's handle.
        handle: u64,
    },
    /// The machine rests in a final state: `finished` resolves with the current output.
    Finished,
}

/// The oracle for transition conditions, implemented by the driver.
pub trait Guards {
    /// Whether the condition of `transition` holds for the event with handle `event`
    /// (`None` for `""` transitions). `Err` when the condition itself failed; the driver
    /// keeps the error and the core treats it as the current state's failure.
    fn holds(&mut self, transition: u32, event: Option<u64>) -> Result<bool, GuardFailed>;
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

#[derive(Clone, Copy, Debug)]
struct Queued {
    handle: u64,
    event: Option<u32>,
    queue: bool,
}

#[derive(Clone, Copy, Debug)]
struct Sleep {
    timer: u64,
    target: u32,
    event: Option<u64>,
    input: InputRef,
}

/// Where a transition leads, with its delay.
#[derive(Clone, Copy, Debug)]
struct Move {
    target: u32,
    delay_ms: Option<u64>,
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

/// A pending delayed transition in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SleepSnapshot {
    /// Its timer id.
    pub timer: u64,
    /// The state it moves to.
    pub target: String,
    /// The handle of the event that chose it, if one did.
    pub event: Option<u64>,
    /// Which value becomes the target's input: `output`, `error` or `timeout`.
    pub input: String,
}

/// Everything a machine run needs to continue in another process, by state *name* so a
/// snapshot reads well in the database. Taken at a step boundary: a state that was running
/// runs again after a restore. What the driver holds (context, the current input and
/// output, event data) is stored beside it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MachineSnapshot {
    /// The state the machine is in.
    pub current: String,
    /// The state before it.
    pub previous: Option<String>,
    /// The status to restore (`running` becomes `ready`: the state runs again).
    pub status: String,
    /// States run so far (for `maxSteps`).
    pub steps: u32,
    /// Visits per state name (for `maxVisits`); states never visited are left out.
    pub visits: Vec<(String, u32)>,
    /// Events waiting for the running state to end or for a state that handles them.
    pub queue: Vec<QueuedEvent>,
    /// A delayed transition waiting for its timer.
    pub sleep: Option<SleepSnapshot>,
    /// The armed timeout timer of the current state.
    pub timeout: Option<u64>,
    /// The last timer id handed out.
    pub next_timer: u64,
    /// Flags of the error path and limits (see the fields of `MachineRun`).
    pub errored: bool,
    /// A limit was already exceeded once.
    pub limit_hit: bool,
    /// Resting in a final state.
    pub at_rest: bool,
    /// Halted on a failure without an error state.
    pub halted: bool,
    /// The next step is exempt from the limits.
    pub exempt: bool,
    /// The current state was entered because of an error.
    pub by_error: bool,
    /// The run's start event was recorded.
    pub started: bool,
}

fn input_name(i: InputRef) -> &'static str {
    match i {
        InputRef::Output => "output",
        InputRef::Error => "error",
        InputRef::Timeout => "timeout",
    }
}

/// One run of a compiled machine.
#[derive(Debug)]
pub struct MachineRun {
    m: Arc<CompiledMachine>,
    rec: Recorder,
    status: MachineStatus,
    current: u32,
    previous: Option<u32>,
    slot: Option<u32>,
    last_slot: Option<u32>,
    /// Runs that timed out and still run: their late reports are ignored.
    abandoned: Vec<u32>,
    steps: u32,
    visits: Vec<u32>,
    queue: VecDeque<Queued>,
    sleep: Option<Sleep>,
    timeout: Option<u64>,
    next_timer: u64,
    errored: bool,
    /// A limit was exceeded once: the next breach halts instead of going to an error state
    /// again, so a loop through an error state cannot escape `maxSteps`.
    limit_hit: bool,
    /// Resting in a final state (status `final`, or `error` on the error path).
    at_rest: bool,
    halted: bool,
    exempt: bool,
    /// The current state was entered because of an error.
    by_error: bool,
    started: bool,
    semaphores: bool,
    auto: bool,
    /// The state running now was exempt from the limits (a snapshot taken while it runs
    /// gives the exemption back, since the state will run again).
    ran_exempt: bool,
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
            status: MachineStatus::Initial,
            current,
            previous: None,
            slot: None,
            last_slot: None,
            abandoned: Vec::new(),
            steps: 0,
            visits: vec![0; n],
            queue: VecDeque::new(),
            sleep: None,
            timeout: None,
            next_timer: 0,
            errored: false,
            limit_hit: false,
            at_rest: false,
            halted: false,
            exempt: false,
            by_error: false,
            started: false,
            semaphores,
            auto: false,
            ran_exempt: false,
        }
    }

    /// The run's restorable state (see [`MachineSnapshot`]).
    pub fn snapshot(&self) -> MachineSnapshot {
        let name = |s: u32| self.m.state_name(s).to_owned();
        // A state that runs now runs again after a restore: the snapshot is of the moment
        // before it started, so its visit and step are not counted yet.
        let running = matches!(
            self.status,
            MachineStatus::Running | MachineStatus::PendingSemaphore
        ) && self.slot.is_some();
        let status = match self.status {
            MachineStatus::Running | MachineStatus::PendingSemaphore if self.errored => {
                MachineStatus::Error
            }
            MachineStatus::Running | MachineStatus::PendingSemaphore => MachineStatus::Ready,
            s => s,
        };
        let mut visits = self.visits.clone();
        let mut steps = self.steps;
        if running {
            steps = steps.saturating_sub(1);
            let v = &mut visits[self.current as usize];
            *v = v.saturating_sub(1);
        }
        MachineSnapshot {
            current: name(self.current),
            previous: self.previous.map(name),
            status: status.as_str().to_owned(),
            steps,
            visits: visits
                .iter()
                .enumerate()
                .filter(|(_, &v)| v > 0)
                .map(|(i, &v)| (name(i as u32), v))
                .collect(),
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
            sleep: self.sleep.map(|s| SleepSnapshot {
                timer: s.timer,
                target: name(s.target),
                event: s.event,
                input: input_name(s.input).to_owned(),
            }),
            timeout: self.timeout,
            next_timer: self.next_timer,
            errored: self.errored,
            limit_hit: self.limit_hit,
            at_rest: self.at_rest,
            halted: self.halted,
            exempt: self.exempt || (running && self.ran_exempt),
            by_error: self.by_error,
            started: self.started,
        }
    }

    /// A run continued from a snapshot. Fails when the snapshot names a state or status
    /// the machine does not have (the definition changed under it).
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
        let status = match snap.status.as_str() {
            "initial" => MachineStatus::Initial,
            "ready" | "running" | "pendingSemaphore" => MachineStatus::Ready,
            "waitingForEvent" => MachineStatus::WaitingForEvent,
            "sleeping" => MachineStatus::Sleeping,
            "final" => MachineStatus::Final,
            "error" => MachineStatus::Error,
            "cancelled" => MachineStatus::Cancelled,
            other => {
                return Err(MachineError::Restore {
                    reason: format!("unknown machine status {other}"),
                })
            }
        };
        let mut run = MachineRun::new(Arc::clone(&m), rec, semaphores, Some(state(&snap.current)?));
        run.status = status;
        run.previous = snap.previous.as_deref().map(state).transpose()?;
        run.steps = snap.steps;
        for (name, v) in &snap.visits {
            run.visits[state(name)? as usize] = *v;
        }
        run.queue = snap
            .queue
            .iter()
            .map(|q| Queued {
                handle: q.handle,
                event: m.event_id(&q.event).filter(|&e| e != 0),
                queue: q.queue,
            })
            .collect();
        run.sleep = match &snap.sleep {
            Some(s) => Some(Sleep {
                timer: s.timer,
                target: state(&s.target)?,
                event: s.event,
                input: match s.input.as_str() {
                    "error" => InputRef::Error,
                    "timeout" => InputRef::Timeout,
                    _ => InputRef::Output,
                },
            }),
            None => None,
        };
        run.timeout = snap.timeout;
        run.next_timer = snap.next_timer;
        run.errored = snap.errored;
        run.limit_hit = snap.limit_hit;
        run.at_rest = snap.at_rest;
        run.halted = snap.halted;
        run.exempt = snap.exempt;
        run.by_error = snap.by_error;
        run.started = snap.started;
        Ok(run)
    }

    /// Auto mode (after `run()`): whenever the machine can step after a report, an event or
    /// a timer, it steps within the same call, so a loop costs one crossing per state.
    pub fn set_auto(&mut self, on: bool) {
        self.auto = on;
    }

    /// Step if auto mode is on and the machine can (not after a halt: that would retry forever).
    fn continue_auto(&mut self, now: u64, out: &mut Vec<MachineAction>) {
        if self.auto && !self.halted && self.can_step() {
            self.step(now, out);
        }
    }

    /// Whether nothing runs now: the machine waits for a step, an event or a timer.
    pub fn resting(&self) -> bool {
        !matches!(
            self.status,
            MachineStatus::Running | MachineStatus::PendingSemaphore
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

    /// The status.
    pub fn status(&self) -> MachineStatus {
        self.status
    }

    /// The current state.
    pub fn current(&self) -> u32 {
        self.current
    }

    /// The state before the current one.
    pub fn previous(&self) -> Option<u32> {
        self.previous
    }

    /// Whether the machine halted on a failure without an error state (a retry is a step).
    pub fn halted(&self) -> bool {
        self.halted
    }

    /// Whether [`step`](Self::step) would run a state now.
    pub fn can_step(&self) -> bool {
        match self.status {
            MachineStatus::Initial | MachineStatus::Ready => true,
            MachineStatus::Error => !self.at_rest,
            _ => false,
        }
    }

    /// Whether the run of `slot` should stop: the machine was cancelled, or the state
    /// timed out while it ran.
    pub fn is_cancelled(&self, slot: u32) -> bool {
        self.status == MachineStatus::Cancelled || self.abandoned.contains(&slot)
    }

    /// Run the current state once (or report the failure of a limit). False when it cannot step.
    pub fn step(&mut self, now: u64, out: &mut Vec<MachineAction>) -> bool {
        if !self.can_step() {
            return false;
        }
        self.halted = false;
        let state = self.current;
        if !self.exempt {
            if let Some(max) = self.m.max_steps.filter(|&max| self.steps >= max) {
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
            // error handler may be reached many times); `maxSteps` still bounds the loop.
            if let Some(max) = s
                .max_visits
                .filter(|&max| !self.by_error && self.visits[state as usize] >= max)
            {
                let msg = format!("State {} exceeded maxVisits ({max})", s.name);
                self.fail_limit(msg, now, out);
                self.continue_auto(now, out);
                return true;
            }
        }
        self.ran_exempt = std::mem::replace(&mut self.exempt, false);
        self.steps += 1;
        self.visits[state as usize] += 1;
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
            .copied()
            .chain(self.last_slot)
            .min()
            .unwrap_or(slot);
        self.rec.forget_before(keep);
        self.slot = Some(slot);
        if self.timeout.is_none() {
            if let Some((after, _)) = self.m.timeout(state) {
                self.timeout = Some(self.arm(now.saturating_add(after), false, out));
            }
        }
        if self.semaphores && self.m.states[state as usize].semaphore {
            self.set_status(MachineStatus::PendingSemaphore, now);
            out.push(MachineAction::AcquireSemaphore { state, slot });
        } else {
            self.begin(slot, now, out);
        }
        true
    }

    /// The state's semaphore slots were acquired. False when it must not run any more
    /// (cancelled or timed out meanwhile): the driver gives the slots back.
    pub fn semaphore_acquired(
        &mut self,
        slot: u32,
        now: u64,
        out: &mut Vec<MachineAction>,
    ) -> bool {
        if self.status != MachineStatus::PendingSemaphore || self.slot != Some(slot) {
            return false;
        }
        self.begin(slot, now, out);
        true
    }

    /// Report how the run of `slot` ended. Reports of runs that no longer count (timed
    /// out) are ignored.
    pub fn state_done(
        &mut self,
        slot: u32,
        outcome: StateOutcome,
        guards: &mut dyn Guards,
        now: u64,
        out: &mut Vec<MachineAction>,
    ) {
        if self.slot != Some(slot) {
            self.abandoned.retain(|&s| s != slot);
            return;
        }
        self.slot = None;
        self.last_slot = Some(slot);
        match outcome {
            StateOutcome::Err => self.fail(None, Some(slot), now, out),
            StateOutcome::Cancelled => {
                self.cancel(now, out);
            }
            StateOutcome::Ok => {
                self.rec
                    .step_event(slot, EventKind::MachineNodeFinish, DataRef::NodeOutput, now);
                self.after_run(None, guards, now, out);
            }
            StateOutcome::Chose { target, delay_ms } => {
                self.rec
                    .step_event(slot, EventKind::MachineNodeFinish, DataRef::NodeOutput, now);
                self.after_run(Some(Move { target, delay_ms }), guards, now, out);
            }
        }
        self.continue_auto(now, out);
    }

    /// An event arrived; `handle` is the driver's key for its data. Returns true when a
    /// transition was taken (or scheduled) for it now.
    pub fn send(
        &mut self,
        handle: u64,
        event: &str,
        queue: bool,
        guards: &mut dyn Guards,
        now: u64,
        out: &mut Vec<MachineAction>,
    ) -> bool {
        let event = self.m.event_id(event).filter(|&e| e != 0);
        let item = Queued {
            handle,
            event,
            queue,
        };
        match self.status {
            MachineStatus::Running | MachineStatus::PendingSemaphore => {
                self.queue.push_back(item);
                return false;
            }
            MachineStatus::Cancelled => {
                out.push(MachineAction::DropEvent { handle });
                return false;
            }
            _ => {}
        }
        if !self.m.handles(self.current, event) {
            if queue {
                self.queue.push_back(item);
            } else {
                out.push(MachineAction::DropEvent { handle });
            }
            return false;
        }
        match self.select(event, Some(handle), guards) {
            Ok(Some(mv)) => {
                if let Some(s) = self.sleep.take() {
                    self.clear_sleep(s, out);
                }
                self.take(mv, Some(handle), InputRef::Output, now, out);
                self.continue_auto(now, out);
                true
            }
            Ok(None) => {
                out.push(MachineAction::DropEvent { handle });
                false
            }
            Err(GuardFailed) => {
                out.push(MachineAction::DropEvent { handle });
                self.fail(None, self.last_slot, now, out);
                self.continue_auto(now, out);
                false
            }
        }
    }

    /// A timer armed by an [`MachineAction::ArmTimer`] fired.
    pub fn timer_fired(&mut self, timer: u64, now: u64, out: &mut Vec<MachineAction>) {
        if let Some(s) = self.sleep.filter(|s| s.timer == timer) {
            self.sleep = None;
            self.transition(s.target, s.event, s.input, now, out);
            self.continue_auto(now, out);
            return;
        }
        if self.timeout != Some(timer) {
            return;
        }
        self.timeout = None;
        match self.status {
            MachineStatus::Running | MachineStatus::PendingSemaphore => {
                self.abandoned.extend(self.slot.take());
            }
            MachineStatus::WaitingForEvent | MachineStatus::Sleeping => {}
            _ => return,
        }
        if let Some(s) = self.sleep.take() {
            self.clear_sleep(s, out);
        }
        let Some((_, target)) = self.m.timeout(self.current) else {
            return;
        };
        self.transition(target, None, InputRef::Timeout, now, out);
        self.continue_auto(now, out);
    }

    /// Cancel: nothing more runs after the running state (if any) takes its transition.
    /// False when already cancelled.
    pub fn cancel(&mut self, now: u64, out: &mut Vec<MachineAction>) -> bool {
        if self.status == MachineStatus::Cancelled {
            return false;
        }
        self.set_status(MachineStatus::Cancelled, now);
        if let Some(s) = self.sleep.take() {
            self.clear_sleep(s, out);
        }
        if let Some(timer) = self.timeout.take() {
            out.push(MachineAction::ClearTimer { timer });
        }
        for q in self.queue.drain(..) {
            out.push(MachineAction::DropEvent { handle: q.handle });
        }
        true
    }

    /// A delayed transition that will not happen: its timer, and the event that chose it.
    fn clear_sleep(&self, s: Sleep, out: &mut Vec<MachineAction>) {
        out.push(MachineAction::ClearTimer { timer: s.timer });
        if let Some(handle) = s.event {
            out.push(MachineAction::DropEvent { handle });
        }
    }

    fn arm(&mut self, at: u64, delay: bool, out: &mut Vec<MachineAction>) -> u64 {
        self.next_timer += 1;
        out.push(MachineAction::ArmTimer {
            timer: self.next_timer,
            at,
            delay,
        });
        self.next_timer
    }

    fn set_status(&mut self, status: MachineStatus, now: u64) {
        if self.status == status {
            return;
        }
        self.status = status;
        self.rec.run_event(
            EventKind::MachineStatus,
            DataRef::Status(status.as_str(), self.current),
            now,
        );
    }

    fn begin(&mut self, slot: u32, now: u64, out: &mut Vec<MachineAction>) {
        self.set_status(MachineStatus::Running, now);
        self.rec
            .step_event(slot, EventKind::MachineNodeStart, DataRef::NodeInput, now);
        out.push(MachineAction::RunState {
            state: self.current,
            slot,
        });
    }

    /// After a successful run: the state's own choice, then queued events in order, then
    /// `""` transitions; otherwise the machine rests.
    fn after_run(
        &mut self,
        chosen: Option<Move>,
        guards: &mut dyn Guards,
        now: u64,
        out: &mut Vec<MachineAction>,
    ) {
        let mut taken: Option<(Move, Option<u64>)> = chosen.map(|mv| (mv, None));
        let pending = std::mem::take(&mut self.queue);
        let mut failed = false;
        for q in pending {
            if taken.is_some() || failed {
                if q.queue || failed {
                    self.queue.push_back(q);
                } else {
                    out.push(MachineAction::DropEvent { handle: q.handle });
                }
                continue;
            }
            if !self.m.handles(self.current, q.event) {
                if q.queue {
                    self.queue.push_back(q);
                } else {
                    out.push(MachineAction::DropEvent { handle: q.handle });
                }
                continue;
            }
            match self.select(q.event, Some(q.handle), guards) {
                Ok(Some(mv)) => taken = Some((mv, Some(q.handle))),
                Ok(None) => out.push(MachineAction::DropEvent { handle: q.handle }),
                Err(GuardFailed) => {
                    out.push(MachineAction::DropEvent { handle: q.handle });
                    failed = true;
                }
            }
        }
        if failed {
            self.fail(None, self.last_slot, now, out);
            return;
        }
        if taken.is_none() {
            match self.select(Some(0), None, guards) {
                Ok(mv) => taken = mv.map(|mv| (mv, None)),
                Err(GuardFailed) => {
                    self.fail(None, self.last_slot, now, out);
                    return;
                }
            }
        }
        match taken {
            Some((mv, event)) => self.take(mv, event, InputRef::Output, now, out),
            None if self.m.is_final(self.current) => self.rest_final(now, out),
            None if self.status == MachineStatus::Cancelled => {}
            None => self.set_status(MachineStatus::WaitingForEvent, now),
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
        out: &mut Vec<MachineAction>,
    ) {
        match mv.delay_ms {
            Some(delay) if delay > 0 && self.status != MachineStatus::Cancelled => {
                let timer = self.arm(now.saturating_add(delay), true, out);
                self.sleep = Some(Sleep {
                    timer,
                    target: mv.target,
                    event,
                    input,
                });
                self.set_status(MachineStatus::Sleeping, now);
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
        out: &mut Vec<MachineAction>,
    ) {
        if let Some(timer) = self.timeout.take() {
            out.push(MachineAction::ClearTimer { timer });
        }
        let from = self.current;
        out.push(MachineAction::Transitioned {
            from,
            to,
            event,
            input,
        });
        match self.last_slot {
            Some(slot) => {
                self.rec
                    .step_event(slot, EventKind::MachineTransition, DataRef::Transition, now)
            }
            None => self
                .rec
                .run_event(EventKind::MachineTransition, DataRef::Transition, now),
        }
        self.previous = Some(from);
        self.current = to;
        self.at_rest = false;
        self.exempt = false;
        self.by_error = input == InputRef::Error;
        if input != InputRef::Error {
            self.errored = false;
        }
        if self.status == MachineStatus::Cancelled {
            return;
        }
        // A final state without run rests at once, unless a queued event waits for it: then
        // it steps like any state (passing its input on) and the queue is tried after it.
        let queued_for_it = self.queue.iter().any(|q| self.m.handles(to, q.event));
        if self.m.is_final(to) && !self.m.has_run(to) && !queued_for_it {
            self.rest_final(now, out);
        } else if self.errored {
            self.set_status(MachineStatus::Error, now);
        } else {
            self.set_status(MachineStatus::Ready, now);
        }
    }

    fn rest_final(&mut self, now: u64, out: &mut Vec<MachineAction>) {
        if self.status == MachineStatus::Cancelled {
            return;
        }
        let status = if self.errored {
            MachineStatus::Error
        } else {
            MachineStatus::Final
        };
        self.at_rest = true;
        self.set_status(status, now);
        self.rec
            .run_event(EventKind::MachineFinish, DataRef::RunOutput, now);
        out.push(MachineAction::Finished);
    }

    /// The current state failed: go to its error state, or halt. An error state that
    /// fails itself halts rather than loop.
    /// A limit was exceeded: handled like a state error the first time, a halt after that.
    fn fail_limit(&mut self, message: String, now: u64, out: &mut Vec<MachineAction>) {
        let again = std::mem::replace(&mut self.limit_hit, true);
        self.fail_to(Some(message), None, !again, now, out);
        // The error state this leads to may run once although the limit is reached.
        self.exempt = !again;
    }

    fn fail(
        &mut self,
        message: Option<String>,
        slot: Option<u32>,
        now: u64,
        out: &mut Vec<MachineAction>,
    ) {
        self.fail_to(message, slot, true, now, out);
    }

    fn fail_to(
        &mut self,
        message: Option<String>,
        slot: Option<u32>,
        use_error_state: bool,
        now: u64,
        out: &mut Vec<MachineAction>,
    ) {
        let target = self.m.states[self.current as usize]
            .error_state
            .filter(|&t| use_error_state && t != self.current);
        let halted = target.is_none();
        out.push(MachineAction::Errored { message, halted });
        match slot {
            Some(slot) => {
                self.rec
                    .step_event(slot, EventKind::MachineError, DataRef::NodeError, now)
            }
            None => self
                .rec
                .run_event(EventKind::MachineError, DataRef::RunError, now),
        }
        if let Some(sleep) = self.sleep.take() {
            self.clear_sleep(sleep, out);
        }
        match target {
            Some(target) => {
                self.errored = true;
                if self.status != MachineStatus::Cancelled {
                    self.set_status(MachineStatus::Error, now);
                }
                self.transition(target, None, InputRef::Error, now, out);
            }
            None => {
                self.halted = true;
                // A retry (a step) arms the timeout again.
                if let Some(timer) = self.timeout.take() {
                    out.push(MachineAction::ClearTimer { timer });
                }
                if self.status != MachineStatus::Cancelled {
                    self.set_status(MachineStatus::Error, now);
                }
            }
        }
    }
}
