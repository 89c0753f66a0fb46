//! One command/action vocabulary for both executors.
//!
//! A driver applies a [`Command`] to a run ([`Executor::apply`]) and performs the
//! [`Action`]s that come back: call this step's runner, acquire its semaphores, arm or
//! clear a timer, forget an event, the run ended. DAG runs and state machine runs take
//! the same commands and return the same actions, so everything above the core (the
//! engine's store and span sinks, timers, the Node binding, the Rust driver) is written
//! once for both.
//!
//! ```
//! use std::sync::Arc;
//! use ramus_core::{Action, Command, CompiledDag, DagRun, DagRunOptions, End, Executor,
//!                  NoGuards, NodeSpec, Outcome, Recorder};
//!
//! let dag = Arc::new(CompiledDag::compile("d", &[NodeSpec::new("a", &[]), NodeSpec::new("b", &["a"])]).unwrap());
//! let mut run = Executor::Dag(DagRun::new(dag, DagRunOptions::default(), Recorder::new(1, 2, None, None)));
//! let mut out = Vec::new();
//! run.apply(Command::Start, &mut NoGuards, 0, &mut out);
//! assert_eq!(out, vec![Action::Run { slot: 0, node: 0 }]);
//! out.clear();
//! run.apply(Command::Complete { slot: 0, outcome: Outcome::Ok }, &mut NoGuards, 0, &mut out);
//! assert_eq!(out, vec![Action::Run { slot: 1, node: 1 }]);
//! out.clear();
//! run.apply(Command::Complete { slot: 1, outcome: Outcome::Ok }, &mut NoGuards, 0, &mut out);
//! assert_eq!(out, vec![Action::Ended(End::Finished)]);
//! ```

use crate::dag_run::DagRun;
use crate::event::Recorder;
use crate::machine::{Guards, MachineRun};

/// What a driver tells a run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Command<'a> {
    /// Start the run: a DAG's roots become ready; a machine is put in auto mode and
    /// steps (it then keeps going by itself whenever it can).
    Start,
    /// Machines only: run the current state once (`step()`), without auto mode.
    Step,
    /// A launched step ended.
    Complete {
        /// The step slot of the [`Action::Run`].
        slot: u32,
        /// How it ended.
        outcome: Outcome<'a>,
    },
    /// The semaphore slots of an [`Action::Acquire`] are held.
    Acquired {
        /// The step slot.
        slot: u32,
    },
    /// DAGs in stepwise mode: start a ready node.
    RunNode {
        /// The node.
        node: u32,
    },
    /// DAGs: take the larger graph staged with [`DagRun::stage`](crate::DagRun::stage) (the
    /// run's nodes and new ones): new nodes whose parents finished start now, the others
    /// when their parents settle.
    Grow,
    /// DAGs: cancel one node and everything downstream of it; the rest of the run goes on.
    /// A running step of those nodes sees its cancellation and its report is ignored.
    CancelNode {
        /// The node.
        node: u32,
    },
    /// DAGs, while the run goes on: run a node again, and everything downstream of it,
    /// each as a new attempt with a step of its own (a running attempt of those nodes is
    /// abandoned: it sees its cancellation and its report is ignored). Every other node
    /// keeps its state and output. A cancelled node comes back this way.
    Rerun {
        /// The node.
        node: u32,
        /// The driver holds the node's new output: it finishes with it instead of running.
        given: bool,
    },
    /// Machines: an event arrived; `handle` is the driver's key for its data.
    Send {
        /// The driver's handle of the event.
        handle: u64,
        /// The event type.
        event: &'a str,
        /// Wait for a state that handles it instead of being dropped.
        queue: bool,
    },
    /// A timer armed by an [`Action::ArmTimer`] fell due.
    TimerFired {
        /// The timer.
        timer: u64,
    },
    /// Cancel the run.
    Cancel,
}

/// How a step ended, as the driver saw it. Values (outputs, errors) stay with the driver.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Outcome<'a> {
    /// It returned an output.
    Ok,
    /// Its output came from a cache: the runner did not run. Like [`Outcome::Ok`], and
    /// its step says so.
    Cached,
    /// It failed (its `retry`, if any, applies).
    Error,
    /// It failed, and must not be retried: its `retryOn` said so.
    Fatal,
    /// It stopped itself because it saw the cancellation (not a failure).
    Cancelled,
    /// Machines: the state chose its next state (`transitionTo`); the core checks the
    /// choice, and a choice that does not hold fails the state with the core's message.
    Choose {
        /// The state's name as the runner gave it.
        target: &'a str,
        /// Wait this long before moving.
        delay: Option<Delay<'a>>,
    },
}

/// A delay as a runner gave it: milliseconds, or a duration text (`'90s'`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Delay<'a> {
    /// Milliseconds.
    Ms(f64),
    /// A duration text, see [`parse_duration`](crate::parse_duration).
    Text(&'a str),
}

/// Why a timer exists; the store keeps the kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TimerKind {
    /// A delayed transition.
    Delay,
    /// A state's or a DAG node's timeout.
    Timeout,
    /// The wait before a step's next attempt.
    Retry,
}

/// Which value the driver must make the next state's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum InputRef {
    /// The current state's output.
    Output,
    /// The error of the last failure.
    Error,
    /// A timeout error for the state that timed out.
    Timeout,
}

/// How a run ended (for a machine: how `finished` settles; an event may still wake a
/// machine resting in a final state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// A DAG's nodes all settled; a machine rests in a final state.
    Finished,
    /// A DAG node failed (see [`DagRun::failed_node`]); a machine halted on a failure
    /// without an error state.
    Failed,
    /// Cancelled.
    Cancelled,
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Call the runner of `node` (a DAG node, or a machine state) for step `slot`, then
    /// report with [`Command::Complete`]. A machine state without a runner passes its
    /// input on: report it `Ok` with the input as output.
    Run {
        /// The step slot (a DAG's node id; a machine's visit).
        slot: u32,
        /// The node or state.
        node: u32,
    },
    /// Acquire the step's semaphore slots, then report [`Command::Acquired`].
    Acquire {
        /// The step slot.
        slot: u32,
        /// The node or state.
        node: u32,
    },
    /// DAGs in stepwise mode: the node is ready; start it with [`Command::RunNode`].
    Ready {
        /// The step slot.
        slot: u32,
        /// The node.
        node: u32,
    },
    /// A machine moved; the new state's input is `input`, and `event` is the handle of
    /// the event that caused the move.
    Moved {
        /// The state left.
        from: u32,
        /// The state entered.
        to: u32,
        /// The event's handle, if an event fired the transition.
        event: Option<u64>,
        /// The new input.
        input: InputRef,
    },
    /// A machine state failed. `message` is set when the core made the error (a limit, a
    /// choice that does not hold); otherwise the error is the driver's. `halted` when
    /// there is no error state to go to (an [`Action::Ended`] follows).
    Failed {
        /// The core's error message, if the error is the core's.
        message: Option<String>,
        /// The machine stopped on the failed state.
        halted: bool,
    },
    /// Arm a timer that fires [`Command::TimerFired`] at `at` (ms since the epoch).
    ArmTimer {
        /// Timer id, unique in the run.
        timer: u64,
        /// When it is due.
        at: u64,
        /// Delay or timeout.
        kind: TimerKind,
    },
    /// A DAG node's attempt ran past its `timeout`, or a machine state's attempt past the
    /// state's timeout when its `retryOn` retries that: it counts as failed with a
    /// `TimeoutError` (see [`CompiledDag::timeout_message`](crate::CompiledDag::timeout_message),
    /// [`CompiledMachine::timeout_message`](crate::CompiledMachine::timeout_message)) and is
    /// cancelled; what it reports later is ignored. The failure follows as usual (a retry,
    /// or the node's error).
    TimedOut {
        /// The attempt's step slot.
        slot: u32,
        /// The node.
        node: u32,
    },
    /// Disarm a timer.
    ClearTimer {
        /// Timer id.
        timer: u64,
    },
    /// An event was dropped (unhandled, or pre-empted): the driver can forget its data.
    DropEvent {
        /// The event's handle.
        handle: u64,
    },
    /// The run ended (see [`End`]).
    Ended(End),
}

/// The public status of a run as a whole, shared by both kinds; stored in `runs.status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunPhase {
    /// Steps are running or ready to run.
    Running,
    /// A machine rests until an event fires a transition.
    WaitingForEvent,
    /// A machine waits for a delayed transition.
    Sleeping,
    /// Finished (a DAG), resting in a final state (a machine).
    Finished,
    /// Failed, halted, or resting in a final error state.
    Error,
    /// Cancelled.
    Cancelled,
}

impl RunPhase {
    /// The value stored in `runs.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunPhase::Running => "running",
            RunPhase::WaitingForEvent => "waitingForEvent",
            RunPhase::Sleeping => "sleeping",
            RunPhase::Finished => "finished",
            RunPhase::Error => "error",
            RunPhase::Cancelled => "cancelled",
        }
    }

    /// Whether the run has ended for good (a finished machine may still be woken, but its
    /// record says it ended).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunPhase::Finished | RunPhase::Error | RunPhase::Cancelled
        )
    }
}

/// A run of either kind, driven through one interface.
#[derive(Debug)]
pub enum Executor {
    /// A DAG run.
    Dag(DagRun),
    /// A state machine run.
    Machine(MachineRun),
}

impl Executor {
    /// Apply a command at time `now` (ms), appending what the driver must do to `out`.
    /// Transition conditions are asked through `guards`. Returns false when the command
    /// did not apply (a step that cannot step, a completion of a step that no longer
    /// counts, a cancel of an ended run, a command of the other kind).
    pub fn apply(
        &mut self,
        command: Command,
        guards: &mut dyn Guards,
        now: u64,
        out: &mut Vec<Action>,
    ) -> bool {
        match self {
            Executor::Dag(d) => d.apply_asking(command, guards, now, out),
            Executor::Machine(m) => m.apply(command, guards, now, out),
        }
    }

    /// The run's recorder (ids and events).
    pub fn recorder(&mut self) -> &mut Recorder {
        match self {
            Executor::Dag(d) => d.recorder(),
            Executor::Machine(m) => m.recorder(),
        }
    }

    /// Whether the step of `slot` should stop (its run was cancelled, failed, or timed out).
    pub fn is_cancelled(&self, slot: u32) -> bool {
        match self {
            Executor::Dag(d) => d.is_cancelled(slot),
            Executor::Machine(m) => m.is_cancelled(slot),
        }
    }

    /// The run's status as stored.
    pub fn phase(&self) -> RunPhase {
        match self {
            Executor::Dag(d) => d.phase(),
            Executor::Machine(m) => m.phase(),
        }
    }

    /// Whether the run will never act again by itself: a DAG that ended, or a machine that
    /// ended and holds no timers (a final machine may still take an event).
    pub fn is_done(&self) -> bool {
        match self {
            Executor::Dag(d) => d.phase().is_terminal(),
            Executor::Machine(m) => m.is_done(),
        }
    }

    /// The node or state a step slot runs, when the executor still knows it.
    pub fn slot_node(&self, slot: u32) -> Option<u32> {
        match self {
            Executor::Dag(d) => Some(d.slot_node(slot)),
            Executor::Machine(m) => m.slot_state(slot),
        }
    }

    /// Which attempt of its step a slot is (1-based; see `retry`).
    pub fn slot_attempt(&self, slot: u32) -> u32 {
        match self {
            Executor::Dag(d) => d.slot_attempt(slot),
            Executor::Machine(m) => m.slot_attempt(slot),
        }
    }
}
