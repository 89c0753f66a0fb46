//! The one run/step/event model shared by every executor.
//!
//! Every fact a run learns is an [`Event`] with a UUIDv7 id, tied to a step. The values
//! that belong in an event (inputs, outputs, errors) live with the driver (in Node they are
//! JS values), so an event carries a [`DataRef`] naming which value it refers to; each sink
//! (JS listeners, later the store and tracing) resolves it against what the driver holds.

use std::collections::VecDeque;

use crate::ids::{Id, IdGen};

/// What kind of fact an event records. The string forms are the public event types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A DAG run started.
    DagStart,
    /// A DAG node started running.
    DagNodeStart,
    /// A DAG node finished with an output.
    DagNodeFinish,
    /// A DAG node failed.
    DagNodeError,
    /// A DAG node changed state.
    DagNodeState,
    /// An attempt of a DAG node failed and the node will run again.
    DagNodeRetry,
    /// A DAG run finished with an output.
    DagFinish,
    /// A DAG run failed.
    DagError,
    /// A state machine run started.
    MachineStart,
    /// A state started running.
    MachineNodeStart,
    /// A state finished running.
    MachineNodeFinish,
    /// The machine moved from one state to another.
    MachineTransition,
    /// The machine's status changed.
    MachineStatus,
    /// The machine rests in a final state.
    MachineFinish,
    /// A state failed.
    MachineError,
    /// An attempt of a state failed and the state will run again.
    MachineRetry,
    /// A custom event emitted by a runner; the type is chosen by the runner.
    Custom(Box<str>),
}

impl EventKind {
    /// The event's `type` as listeners see it.
    pub fn as_str(&self) -> &str {
        match self {
            EventKind::DagStart => "dag:start",
            EventKind::DagNodeStart => "dag:node_start",
            EventKind::DagNodeFinish => "dag:node_finish",
            EventKind::DagNodeError => "dag:node_error",
            EventKind::DagNodeState => "dag:node_state",
            EventKind::DagNodeRetry => "dag:node_retry",
            EventKind::DagFinish => "dag:finish",
            EventKind::DagError => "dag:error",
            EventKind::MachineStart => "state_machine:start",
            EventKind::MachineNodeStart => "state_machine:node_start",
            EventKind::MachineNodeFinish => "state_machine:node_finish",
            EventKind::MachineTransition => "state_machine:transition",
            EventKind::MachineStatus => "state_machine:status",
            EventKind::MachineFinish => "state_machine:finish",
            EventKind::MachineError => "state_machine:error",
            EventKind::MachineRetry => "state_machine:retry",
            EventKind::Custom(t) => t,
        }
    }
}

/// Which value an event's `data` refers to. The driver holds the values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataRef {
    /// `{ input }`: the run's root input.
    RunInput,
    /// `{ output }`: the run's output.
    RunOutput,
    /// `{ error }`: the error that failed the run (the failing node's error).
    RunError,
    /// `{ input }`: the input of the event's node.
    NodeInput,
    /// `{ output }`: the output of the event's node.
    NodeOutput,
    /// `{ output, cached: true }`: the output of the event's node, from a cache.
    CachedOutput,
    /// `{ error }`: the error of the event's node.
    NodeError,
    /// `{ state }`: a node state, known to the core.
    State(&'static str),
    /// The data a runner passed to `emit`.
    Custom,
    /// `{ status }`: a machine status, known to the core, and the state the machine is in.
    Status(&'static str, u32),
    /// `{ from, to, event, input, output, final }` of the transition the driver just applied.
    Transition,
    /// `{ error, attempt, delay }`: attempt `attempt` failed with the step's error, and the
    /// next one starts after `delay` ms.
    Retry {
        /// The attempt that failed (1-based).
        attempt: u32,
        /// The wait before the next attempt, in ms.
        delay: u64,
    },
}

/// One recorded fact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The event's own id.
    pub id: Id,
    /// What happened.
    pub kind: EventKind,
    /// The step the event belongs to (a node's step, or the run's own step).
    pub step: Id,
    /// The parent of `step`: the run's step for node events, the step that started the
    /// run (if any) for run events.
    pub parent_step: Option<Id>,
    /// The node the event is about, if any.
    pub node: Option<u32>,
    /// Milliseconds since the Unix epoch, as passed in by the driver.
    pub time: u64,
    /// Which value the event's data refers to.
    pub data: DataRef,
}

/// Ids and events of one run: its run id, its own step, one step per slot (a DAG node, or
/// a state visit), and the event buffer that sinks drain.
///
/// Ids are minted lazily: a run nobody observes never formats or even generates a step id
/// unless someone (a nested run, a listener) asks for it.
#[derive(Debug)]
pub struct Recorder {
    ids: IdGen,
    seed: u64,
    run_id: Option<Id>,
    run_step: Option<Id>,
    parent_step: Option<Id>,
    /// Step ids of slots `base..`; a machine forgets the slots of visits long past so a
    /// run of millions of steps keeps a constant footprint.
    steps: VecDeque<Option<Id>>,
    base: u32,
    /// Step ids of slots past the table: the later attempts of a DAG's nodes (slot
    /// `attempt * nodes + node`), few, so not worth a table row per node each.
    extra: Vec<(u32, Id)>,
    observe: bool,
    events: Vec<Event>,
}

impl Recorder {
    /// A recorder for a run with `slots` steps. `run_id` and `parent_step` are given when
    /// the run is nested in a step of another run, whose run id it shares.
    pub fn new(seed: u64, slots: usize, run_id: Option<Id>, parent_step: Option<Id>) -> Self {
        Recorder {
            ids: IdGen::new(seed),
            seed,
            run_id,
            run_step: None,
            parent_step,
            steps: std::iter::repeat_n(None, slots).collect(),
            base: 0,
            extra: Vec::new(),
            observe: false,
            events: Vec::new(),
        }
    }

    /// The seed the recorder was made with: random bits a run may use (retry jitter).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Whether events are being recorded.
    pub fn observing(&self) -> bool {
        self.observe
    }

    /// Turn event recording on or off; off drops nothing already recorded.
    pub fn set_observe(&mut self, on: bool) {
        self.observe = on;
    }

    /// The run id, minted on first use.
    pub fn run_id(&mut self, now: u64) -> Id {
        match self.run_id {
            Some(id) => id,
            None => {
                let id = self.ids.next(now);
                self.run_id = Some(id);
                id
            }
        }
    }

    /// The run's own step, minted on first use.
    pub fn run_step(&mut self, now: u64) -> Id {
        match self.run_step {
            Some(id) => id,
            None => {
                let id = self.ids.next(now);
                self.run_step = Some(id);
                id
            }
        }
    }

    /// The step that started this run, if it is nested.
    pub fn parent_step(&self) -> Option<Id> {
        self.parent_step
    }

    /// The step of `slot`, minted on first use. A forgotten slot gets a fresh id each time.
    pub fn step(&mut self, slot: u32, now: u64) -> Id {
        let Some(i) = slot.checked_sub(self.base) else {
            return self.ids.next(now);
        };
        let Some(entry) = self.steps.get_mut(i as usize) else {
            if let Some(&(_, id)) = self.extra.iter().find(|(s, _)| *s == slot) {
                return id;
            }
            let id = self.ids.next(now);
            self.extra.push((slot, id));
            return id;
        };
        match *entry {
            Some(id) => id,
            None => {
                let id = self.ids.next(now);
                *entry = Some(id);
                id
            }
        }
    }

    /// Record a run-level event (on the run's own step).
    #[inline]
    pub fn run_event(&mut self, kind: EventKind, data: DataRef, now: u64) {
        // Inlined so that a run nobody observes pays one test of a flag per event.
        if self.observe {
            self.record_run(kind, data, now);
        }
    }

    #[inline(never)]
    fn record_run(&mut self, kind: EventKind, data: DataRef, now: u64) {
        let step = self.run_step(now);
        let id = self.ids.next(now);
        self.events.push(Event {
            id,
            kind,
            step,
            parent_step: self.parent_step,
            node: None,
            time: now,
            data,
        });
    }

    /// Record an event of a slot's step.
    #[inline]
    pub fn step_event(&mut self, slot: u32, kind: EventKind, data: DataRef, now: u64) {
        // Inlined so that a run nobody observes pays one test of a flag per event.
        if self.observe {
            self.record_step(slot, kind, data, now);
        }
    }

    #[inline(never)]
    fn record_step(&mut self, slot: u32, kind: EventKind, data: DataRef, now: u64) {
        let step = self.step(slot, now);
        let parent = self.run_step(now);
        let id = self.ids.next(now);
        self.events.push(Event {
            id,
            kind,
            step,
            parent_step: Some(parent),
            node: Some(slot),
            time: now,
            data,
        });
    }

    /// Add a step slot (a state machine allocates one per state visit) and return it.
    pub fn new_slot(&mut self) -> u32 {
        self.steps.push_back(None);
        self.base + self.steps.len() as u32 - 1
    }

    /// Forget the step ids of slots before `slot`.
    pub fn forget_before(&mut self, slot: u32) {
        while self.base < slot && !self.steps.is_empty() {
            self.steps.pop_front();
            self.base += 1;
        }
    }

    /// Record a custom event a runner emitted on the step of `slot`; its data stays with the
    /// driver.
    pub fn custom_event(&mut self, slot: u32, event_type: &str, now: u64) {
        self.step_event(
            slot,
            EventKind::Custom(event_type.into()),
            DataRef::Custom,
            now,
        );
    }

    /// Take the events recorded since the last drain, oldest first.
    pub fn drain(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// The events recorded since the last drain, oldest first, without taking them (a
    /// store writes them while a listener may still drain them).
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Drop the recorded events (written to a store, and nobody listens).
    pub fn clear_events(&mut self) {
        self.events.clear();
    }

    /// Whether events wait to be drained.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }
}
