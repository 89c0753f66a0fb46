//! The DAG run executor: a deterministic state machine over one run of a [`CompiledDag`].
//!
//! The driver applies [`Command`]s ([`DagRun::apply`]): it starts the run, launches what it
//! is told to launch, and reports each launched node's outcome. Every call appends
//! [`Action`]s and records events in the run's [`Recorder`]. A node's step slot is its id.

use std::sync::Arc;

use crate::dag::CompiledDag;
use crate::event::{DataRef, EventKind, Recorder};
use crate::ids::Id;
use crate::run::{Action, Command, End, Outcome, RunPhase, TimerKind};

/// The state of one node in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum NodeState {
    /// Some parent has not settled yet.
    Waiting,
    /// Runnable, waiting for the driver to start it (stepwise mode).
    Ready,
    /// Waiting for semaphore slots.
    PendingSemaphore,
    /// Its runner is executing.
    Running,
    /// It will not run, or its result will be ignored: the run was cancelled or failed, a
    /// parent it does not tolerate failed, or it cancelled itself.
    Cancelled,
    /// Its runner failed.
    Error,
    /// Its runner returned an output.
    Finished,
    /// An attempt failed; the next one starts when its wait ends (see `retry`).
    Retrying,
}

impl NodeState {
    /// Every state, in the order of their codes (`state as u8`).
    pub const ALL: [NodeState; 8] = [
        NodeState::Waiting,
        NodeState::Ready,
        NodeState::PendingSemaphore,
        NodeState::Running,
        NodeState::Cancelled,
        NodeState::Error,
        NodeState::Finished,
        NodeState::Retrying,
    ];

    /// The public name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Waiting => "waiting",
            NodeState::Ready => "ready",
            NodeState::PendingSemaphore => "pendingSemaphore",
            NodeState::Running => "running",
            NodeState::Cancelled => "cancelled",
            NodeState::Error => "error",
            NodeState::Finished => "finished",
            NodeState::Retrying => "retrying",
        }
    }

    /// Whether the node is done for this run.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            NodeState::Cancelled | NodeState::Error | NodeState::Finished
        )
    }
}

/// The state of the run as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunStatus {
    /// Not started.
    Pending,
    /// Started, not settled.
    Running,
    /// Every node settled without a fatal failure; the output is the leaves' outputs.
    Finished,
    /// A node failed and failures are not tolerated; see [`DagRun::failed_node`].
    Failed,
    /// Cancelled from outside.
    Cancelled,
}

/// Options of one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DagRunOptions {
    /// Keep running what can run when a node fails; the run then finishes normally.
    pub tolerate_failures: bool,
    /// Stepwise: ready nodes are reported as [`Action::Ready`] instead of starting.
    pub manual: bool,
    /// The run has semaphores, so nodes with a semaphore key must acquire before running.
    pub semaphores: bool,
}

/// One run of a compiled DAG.
#[derive(Debug)]
pub struct DagRun {
    dag: Arc<CompiledDag>,
    opts: DagRunOptions,
    state: Vec<NodeState>,
    remaining: Vec<u32>,
    unsettled: usize,
    status: RunStatus,
    failed: Option<u32>,
    rec: Recorder,
    worklist: Vec<u32>,
    /// Nodes were restored as finished: `start` must look past the roots.
    restored: bool,
    /// Attempts and timers, for DAGs whose nodes retry or time out.
    tries: Option<Box<Tries>>,
    /// A larger graph that [`Command::Grow`] takes.
    staged: Option<Arc<CompiledDag>>,
}

/// Why a run cannot take a larger graph.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GrowError {
    /// The run ended.
    #[error("the run has ended; nodes can be added only while it runs")]
    Ended,
    /// The new graph does not start with the run's nodes, in their order.
    #[error("the new graph does not keep the run's nodes (node {0} differs)")]
    Mismatch(String),
    /// Attempts are numbered by the node count: a DAG whose nodes retry or time out keeps it.
    #[error("its nodes retry, time out or were rerun, and attempts are numbered by the node count; add nodes to a DAG without retry or timeout, before any rerun")]
    Timed,
}

/// Which attempt each node is at, and the timer armed for it. Attempt `k` (0-based) of
/// node `n` runs in step slot `k * nodes + n`, so every attempt has its own step (its own
/// row), and the late report of an attempt that timed out is told apart from the next
/// attempt's. A node's timers are named after the slot they belong to: `2 * slot + 1` is
/// the wait before attempt `slot`, `2 * slot + 2` the timeout of attempt `slot`, so a
/// restored run knows a stored timer's node and attempt from its id alone.
#[derive(Debug)]
struct Tries {
    /// Failed attempts per node: the current attempt is number `failed + 1`.
    failed: Vec<u32>,
    /// The timer armed for each node, 0 for none.
    timer: Vec<u64>,
    /// Per node, the slots its reruns set aside: attempts are counted from there.
    base: Vec<u32>,
}

fn retry_timer(slot: u32) -> u64 {
    2 * u64::from(slot) + 1
}

fn timeout_timer(slot: u32) -> u64 {
    2 * u64::from(slot) + 2
}

/// The slot a timer belongs to, and whether it is a retry wait (else a timeout).
fn timer_slot(timer: u64) -> Option<(u32, bool)> {
    let t = timer.checked_sub(1)?;
    Some(((t / 2) as u32, t % 2 == 0))
}

impl DagRun {
    /// A new run of `dag`; `rec` holds its identity and records its events.
    pub fn new(dag: Arc<CompiledDag>, opts: DagRunOptions, rec: Recorder) -> DagRun {
        let n = dag.len();
        let remaining = (0..n as u32).map(|i| dag.parents(i).len() as u32).collect();
        DagRun {
            dag,
            opts,
            state: vec![NodeState::Waiting; n],
            remaining,
            unsettled: n,
            status: RunStatus::Pending,
            failed: None,
            rec,
            worklist: Vec::new(),
            restored: false,
            tries: None,
            staged: None,
        }
    }

    /// Stage a larger graph for [`Command::Grow`]: the run's nodes first (the same names in
    /// the same order, with the same parents), then the new ones.
    pub fn stage(&mut self, dag: Arc<CompiledDag>) -> Result<(), GrowError> {
        if !matches!(self.status, RunStatus::Pending | RunStatus::Running) {
            return Err(GrowError::Ended);
        }
        if self.tries.is_some() || self.dag.uses_timers() || dag.uses_timers() {
            return Err(GrowError::Timed);
        }
        for n in 0..self.state.len() as u32 {
            if n as usize >= dag.len()
                || dag.node_name(n) != self.dag.node_name(n)
                || dag.parents(n) != self.dag.parents(n)
            {
                return Err(GrowError::Mismatch(self.dag.node_name(n).to_owned()));
            }
        }
        self.staged = Some(dag);
        Ok(())
    }

    /// Take the staged graph: each new node settles against parents that settled already.
    fn grow(&mut self, now: u64, out: &mut Vec<Action>) -> bool {
        let Some(dag) = self.staged.take() else {
            return false;
        };
        let old = self.state.len();
        if !matches!(self.status, RunStatus::Pending | RunStatus::Running) || dag.len() <= old {
            return false;
        }
        self.state.resize(dag.len(), NodeState::Waiting);
        self.remaining
            .extend((old..dag.len()).map(|i| dag.parents(i as u32).len() as u32));
        self.unsettled += dag.len() - old;
        self.dag = Arc::clone(&dag);
        let started = self.status == RunStatus::Running;
        for &n in dag.topological_order() {
            if (n as usize) < old {
                continue;
            }
            self.join_parents(n, now);
            if started
                && self.state[n as usize] == NodeState::Waiting
                && self.remaining[n as usize] == 0
            {
                self.make_ready(n, now, out);
            }
        }
        self.check_finished(now);
        true
    }

    fn tries_mut(&mut self) -> &mut Tries {
        let n = self.state.len();
        self.tries.get_or_insert_with(|| {
            Box::new(Tries {
                failed: vec![0; n],
                timer: vec![0; n],
                base: vec![0; n],
            })
        })
    }

    /// The step slot of a node's current attempt.
    pub fn node_slot(&self, node: u32) -> u32 {
        match &self.tries {
            Some(t) => t.failed[node as usize] * self.state.len() as u32 + node,
            None => node,
        }
    }

    /// The node a step slot belongs to.
    pub fn slot_node(&self, slot: u32) -> u32 {
        if self.tries.is_some() {
            slot % self.state.len() as u32
        } else {
            slot
        }
    }

    /// Which attempt (1-based) a step slot is.
    pub fn slot_attempt(&self, slot: u32) -> u32 {
        let base = self
            .tries
            .as_ref()
            .map_or(0, |t| t.base[self.slot_node(slot) as usize]);
        (slot / self.state.len() as u32).saturating_sub(base) + 1
    }

    /// Before [`start`](Self::start): a node failed `failed` attempts in an earlier
    /// process; its next attempt is number `failed + 1`.
    pub fn restore_attempts(&mut self, node: u32, failed: u32) -> bool {
        if self.status != RunStatus::Pending || node as usize >= self.state.len() || failed == 0 {
            return false;
        }
        let len = self.state.len() as u64;
        if u64::from(failed.min(crate::retry::MAX_ATTEMPTS)) * len + u64::from(node)
            > u64::from(u32::MAX)
        {
            return false;
        }
        self.tries_mut().failed[node as usize] = failed.min(crate::retry::MAX_ATTEMPTS);
        true
    }

    /// Before [`start`](Self::start), after [`restore_attempts`](Self::restore_attempts):
    /// a node waits for the retry timer `timer` (armed in an earlier process; the driver
    /// arms it again). It starts its next attempt when the timer fires. False when the
    /// timer is no retry wait of a waiting node's current attempt.
    pub fn restore_retry(&mut self, timer: u64) -> bool {
        let Some((slot, true)) = timer_slot(timer) else {
            return false;
        };
        let node = self.slot_node(slot);
        if self.status != RunStatus::Pending
            || node as usize >= self.state.len()
            || self.state[node as usize] != NodeState::Waiting
            || self.tries.is_none()
            || self.node_slot(node) != slot
        {
            return false;
        }
        self.state[node as usize] = NodeState::Retrying;
        self.tries_mut().timer[node as usize] = timer;
        self.restored = true;
        true
    }

    /// Whether a stored timer of this DAG's kind is a retry wait (see
    /// [`restore_retry`](Self::restore_retry)); timeouts of interrupted attempts are not
    /// restored (the attempt runs again, with a timeout of its own).
    pub fn is_retry_timer(timer: u64) -> bool {
        matches!(timer_slot(timer), Some((_, true)))
    }

    /// The node a timer of a run of `dag` belongs to.
    pub fn timer_node(dag: &CompiledDag, timer: u64) -> Option<u32> {
        let (slot, _) = timer_slot(timer)?;
        Some(slot % dag.len().max(1) as u32)
    }

    /// Before [`start`](Self::start): mark a node as finished in an earlier process (its
    /// output is the driver's, read back from the store). It will not run; its children
    /// count it as settled. False when the node is unknown or already marked.
    pub fn restore_finished(&mut self, node: u32) -> bool {
        if self.status != RunStatus::Pending
            || node as usize >= self.state.len()
            || self.state[node as usize] != NodeState::Waiting
        {
            return false;
        }
        self.state[node as usize] = NodeState::Finished;
        self.unsettled -= 1;
        self.restored = true;
        let dag = Arc::clone(&self.dag);
        for &child in dag.children(node) {
            self.remaining[child as usize] -= 1;
        }
        true
    }

    /// Apply a command (see [`crate::Executor::apply`]), with no `retryOn` predicate to
    /// ask (see [`apply_asking`](Self::apply_asking)).
    pub fn apply(&mut self, command: Command, now: u64, out: &mut Vec<Action>) -> bool {
        self.apply_asking(command, &mut crate::NoGuards, now, out)
    }

    /// Apply a command; a timed-out attempt of a node whose `retry` has a `retryOn` is
    /// retried when `guards` says so ([`Guards::retries_timeout`](crate::Guards::retries_timeout)).
    pub fn apply_asking(
        &mut self,
        command: Command,
        guards: &mut dyn crate::Guards,
        now: u64,
        out: &mut Vec<Action>,
    ) -> bool {
        let before = self.status;
        let applied = match command {
            Command::Start => {
                let pending = self.status == RunStatus::Pending;
                self.start(now, out);
                pending
            }
            Command::Complete { slot, outcome } => self.complete(slot, outcome, now, out),
            Command::Acquired { slot } => self.semaphore_acquired(slot, now, out),
            Command::RunNode { node } => self.run_node(node, now, out),
            Command::CancelNode { node } => self.cancel_branch(node, now, out),
            Command::Rerun { node, given } => self.rerun(node, given, now, out),
            Command::Grow => self.grow(now, out),
            Command::Cancel => self.cancel(now, out),
            Command::TimerFired { timer } => self.timer_fired(timer, guards, now, out),
            Command::Step | Command::Send { .. } => false,
        };
        if self.status != before {
            match self.status {
                RunStatus::Finished => out.push(Action::Ended(End::Finished)),
                RunStatus::Failed => out.push(Action::Ended(End::Failed)),
                RunStatus::Cancelled => out.push(Action::Ended(End::Cancelled)),
                RunStatus::Pending | RunStatus::Running => {}
            }
        }
        applied
    }

    /// The run's status as stored.
    pub fn phase(&self) -> RunPhase {
        match self.status {
            RunStatus::Pending | RunStatus::Running => RunPhase::Running,
            RunStatus::Finished => RunPhase::Finished,
            RunStatus::Failed => RunPhase::Error,
            RunStatus::Cancelled => RunPhase::Cancelled,
        }
    }

    /// The compiled DAG.
    pub fn dag(&self) -> &Arc<CompiledDag> {
        &self.dag
    }

    /// The run's recorder (ids and events).
    pub fn recorder(&mut self) -> &mut Recorder {
        &mut self.rec
    }

    /// The run's status.
    pub fn status(&self) -> RunStatus {
        self.status
    }

    /// The node whose failure failed the run.
    pub fn failed_node(&self) -> Option<u32> {
        self.failed
    }

    /// A node's state.
    pub fn node_state(&self, node: u32) -> NodeState {
        self.state[node as usize]
    }

    /// Whether the step of `slot` should stop: its node is cancelled (the run was
    /// cancelled or failed while it ran), or this attempt timed out.
    pub fn is_cancelled(&self, slot: u32) -> bool {
        let node = self.slot_node(slot);
        match self.state.get(node as usize) {
            None | Some(NodeState::Cancelled | NodeState::Error) => true,
            Some(_) => self.node_slot(node) != slot,
        }
    }

    /// The id of the step of a node's current attempt.
    pub fn step_id(&mut self, node: u32, now: u64) -> Id {
        let slot = self.node_slot(node);
        self.rec.step(slot, now)
    }

    /// Before [`start`](Self::start), in a run that tolerates failures: mark a node that
    /// failed in an earlier process. It will not run again; its children treat it as a
    /// failed parent (those that tolerate it count it as settled, the others are cancelled,
    /// and so on down). False when the node is unknown or already marked.
    pub fn restore_failed(&mut self, node: u32) -> bool {
        self.restore_unfinished(node, NodeState::Error)
    }

    /// Before [`start`](Self::start): mark a node cancelled in an earlier process (with
    /// [`Command::CancelNode`]): it will not run, and its children that do not tolerate it
    /// are cancelled too. False when the node is unknown or already marked.
    pub fn restore_cancelled(&mut self, node: u32) -> bool {
        self.restore_unfinished(node, NodeState::Cancelled)
    }

    /// A node that ended without an output in an earlier process, as `state`, and its
    /// children as a failed parent leaves them.
    fn restore_unfinished(&mut self, node: u32, state: NodeState) -> bool {
        if self.status != RunStatus::Pending
            || node as usize >= self.state.len()
            || self.state[node as usize] != NodeState::Waiting
        {
            return false;
        }
        self.state[node as usize] = state;
        self.unsettled -= 1;
        self.restored = true;
        let dag = Arc::clone(&self.dag);
        let mut gone = vec![node];
        while let Some(f) = gone.pop() {
            for &child in dag.children(f) {
                if self.state[child as usize] != NodeState::Waiting {
                    continue;
                }
                if dag.tolerates_parent_errors(child) {
                    self.remaining[child as usize] -= 1;
                } else {
                    self.state[child as usize] = NodeState::Cancelled;
                    self.unsettled -= 1;
                    gone.push(child);
                }
            }
        }
        true
    }

    /// Start the run: the roots become ready (and start, unless stepwise).
    fn start(&mut self, now: u64, out: &mut Vec<Action>) {
        if self.status != RunStatus::Pending {
            return;
        }
        self.status = RunStatus::Running;
        self.rec
            .run_event(EventKind::DagStart, DataRef::RunInput, now);
        let dag = Arc::clone(&self.dag);
        if self.restored {
            // Nodes whose parents all finished before the restore are ready now.
            for node in 0..self.state.len() as u32 {
                if self.state[node as usize] == NodeState::Waiting
                    && self.remaining[node as usize] == 0
                {
                    self.make_ready(node, now, out);
                }
            }
            self.check_finished(now);
        } else {
            for &root in dag.roots() {
                self.make_ready(root, now, out);
            }
        }
    }

    /// Report how a launched node ended. Reports for attempts that are not running (the
    /// run was cancelled or failed meanwhile, or the attempt timed out) are ignored.
    fn complete(&mut self, slot: u32, outcome: Outcome, now: u64, out: &mut Vec<Action>) -> bool {
        let node = self.slot_node(slot);
        if self.state.get(node as usize) != Some(&NodeState::Running)
            || self.node_slot(node) != slot
        {
            return false;
        }
        self.clear_timer(node, out);
        match outcome {
            // A DAG node has no next state to choose: its `transitionTo` is an output.
            Outcome::Ok | Outcome::Cached | Outcome::Choose { .. } => {
                let data = if outcome == Outcome::Cached {
                    DataRef::CachedOutput
                } else {
                    DataRef::NodeOutput
                };
                self.rec
                    .step_event(slot, EventKind::DagNodeFinish, data, now);
                self.set_state(node, NodeState::Finished, now);
                let dag = Arc::clone(&self.dag);
                for &child in dag.children(node) {
                    self.parent_settled(child, now, out);
                }
            }
            Outcome::Error | Outcome::Fatal => {
                self.failed(node, slot, outcome == Outcome::Error, now, out);
            }
            Outcome::Cancelled => {
                self.set_state(node, NodeState::Cancelled, now);
                self.parent_failed(node, now, out);
            }
        }
        self.check_finished(now);
        true
    }

    /// Attempt `slot` of `node` failed: another attempt after a wait if its `retry` allows
    /// (and `retryable`), else the node fails.
    fn failed(&mut self, node: u32, slot: u32, retryable: bool, now: u64, out: &mut Vec<Action>) {
        let attempt = self.slot_attempt(slot);
        let retry = self
            .dag
            .policy(node)
            .and_then(|p| p.retry.as_ref())
            .filter(|r| retryable && r.retries_after(attempt))
            .map(|r| r.delay_ms(attempt, self.rec.seed() ^ u64::from(slot)));
        let next = u64::from(slot) + self.state.len() as u64;
        if let (Some(delay), true) = (retry, next <= u64::from(u32::MAX)) {
            self.rec.step_event(
                slot,
                EventKind::DagNodeRetry,
                DataRef::Retry { attempt, delay },
                now,
            );
            self.set_state(node, NodeState::Retrying, now);
            let tries = self.tries_mut();
            tries.failed[node as usize] += 1;
            let timer = retry_timer(next as u32);
            tries.timer[node as usize] = timer;
            out.push(Action::ArmTimer {
                timer,
                at: now.saturating_add(delay),
                kind: TimerKind::Retry,
            });
            return;
        }
        self.set_state(node, NodeState::Error, now);
        self.rec
            .step_event(slot, EventKind::DagNodeError, DataRef::NodeError, now);
        if self.opts.tolerate_failures {
            self.parent_failed(node, now, out);
        } else {
            self.failed = Some(node);
            self.status = RunStatus::Failed;
            self.rec
                .run_event(EventKind::DagError, DataRef::RunError, now);
            self.cancel_nodes(now, out);
        }
    }

    /// A node's timer fell due: its retry wait ended, or its attempt ran out of time.
    fn timer_fired(
        &mut self,
        timer: u64,
        guards: &mut dyn crate::Guards,
        now: u64,
        out: &mut Vec<Action>,
    ) -> bool {
        let Some((slot, retry)) = timer_slot(timer) else {
            return false;
        };
        let node = self.slot_node(slot);
        let armed = self
            .tries
            .as_ref()
            .and_then(|t| t.timer.get(node as usize))
            .copied();
        if armed != Some(timer) || self.status != RunStatus::Running {
            return false;
        }
        self.tries_mut().timer[node as usize] = 0;
        if retry {
            if self.state[node as usize] != NodeState::Retrying {
                return false;
            }
            self.launch(node, now, out);
            return true;
        }
        if self.state[node as usize] != NodeState::Running || self.node_slot(node) != slot {
            return false;
        }
        // The driver makes the node's error first: the failure's events refer to it. From
        // here the attempt is over (a retry takes the node's slot, or the node is in error),
        // so its `is_cancelled` is true and what it reports later is ignored.
        out.push(Action::TimedOut { slot, node });
        let retryable = match self.dag.policy(node).and_then(|p| p.retry.as_ref()) {
            Some(r) if r.asks_on_timeout(self.slot_attempt(slot)) => {
                guards.retries_timeout(node, slot, &self.dag.timeout_message(node))
            }
            _ => true,
        };
        self.failed(node, slot, retryable, now, out);
        self.check_finished(now);
        true
    }

    /// A node's semaphore slots were acquired. Returns false when the node should not run
    /// any more (the run ended meanwhile): the driver then gives the slots back.
    fn semaphore_acquired(&mut self, slot: u32, now: u64, out: &mut Vec<Action>) -> bool {
        let node = self.slot_node(slot);
        if self.state.get(node as usize) != Some(&NodeState::PendingSemaphore)
            || self.node_slot(node) != slot
        {
            return false;
        }
        self.begin(node, now, out);
        true
    }

    /// Stepwise mode: start a ready node. False when it is not ready.
    fn run_node(&mut self, node: u32, now: u64, out: &mut Vec<Action>) -> bool {
        if self.status != RunStatus::Running
            || self.state.get(node as usize) != Some(&NodeState::Ready)
        {
            return false;
        }
        self.launch(node, now, out);
        true
    }

    /// Cancel the run: nodes that have not started never will, running nodes see
    /// [`DagRun::is_cancelled`]. Returns false when the run had already ended.
    fn cancel(&mut self, now: u64, out: &mut Vec<Action>) -> bool {
        if !matches!(self.status, RunStatus::Pending | RunStatus::Running) {
            return false;
        }
        self.status = RunStatus::Cancelled;
        self.cancel_nodes(now, out);
        true
    }

    /// Cancel `node` and every node downstream of it that has not settled; the others go
    /// on, and the run finishes once they settle (the cancelled leaves give no output).
    /// False when the run is not running or none of those nodes was left to cancel.
    fn cancel_branch(&mut self, node: u32, now: u64, out: &mut Vec<Action>) -> bool {
        if self.status != RunStatus::Running || node as usize >= self.state.len() {
            return false;
        }
        let mut any = false;
        for n in self.dag.downstream([node]) {
            if !self.state[n as usize].is_terminal() {
                self.clear_timer(n, out);
                self.set_state(n, NodeState::Cancelled, now);
                any = true;
            }
        }
        self.check_finished(now);
        any
    }

    /// Run `node` and its downstream again while the run goes on (see [`Command::Rerun`]).
    /// Each gets a new slot (a new attempt, numbered from 1 again), so an abandoned
    /// attempt's late report is told apart. False when the run is not running, or a node
    /// has no slot left.
    fn rerun(&mut self, node: u32, given: bool, now: u64, out: &mut Vec<Action>) -> bool {
        if self.status != RunStatus::Running || node as usize >= self.state.len() {
            return false;
        }
        let dag = Arc::clone(&self.dag);
        let len = self.state.len() as u64;
        let nodes = dag.downstream([node]);
        if nodes
            .iter()
            .any(|&n| u64::from(self.node_slot(n)) + len > u64::from(u32::MAX))
        {
            return false;
        }
        for &n in &nodes {
            let state = self.state[n as usize];
            if !state.is_terminal() && state != NodeState::Waiting {
                // Abandoned: its step ends cancelled before the new attempt has one.
                self.clear_timer(n, out);
                self.set_state(n, NodeState::Cancelled, now);
            }
        }
        // One event for the whole rerun, before any new attempt: a store sets the old
        // steps of these nodes aside here.
        self.rec.step_event(
            self.node_slot(node),
            EventKind::DagNodeState,
            DataRef::State("rerun"),
            now,
        );
        for &n in &nodes {
            let tries = self.tries_mut();
            tries.failed[n as usize] += 1;
            tries.base[n as usize] = tries.failed[n as usize];
            if self.state[n as usize].is_terminal() {
                self.unsettled += 1;
            }
            self.state[n as usize] = NodeState::Waiting;
        }
        // In topological order: a node settles against parents outside the rerun as a
        // fresh node would; the others wait for the nodes rerun before them.
        for &n in dag.topological_order() {
            if nodes.binary_search(&n).is_err() {
                continue;
            }
            self.join_parents(n, now);
            if self.state[n as usize] != NodeState::Waiting {
                continue;
            }
            if n == node && given {
                let slot = self.node_slot(node);
                self.rec
                    .step_event(slot, EventKind::DagNodeStart, DataRef::NodeInput, now);
                self.rec
                    .step_event(slot, EventKind::DagNodeFinish, DataRef::NodeOutput, now);
                self.set_state(node, NodeState::Finished, now);
            } else if self.remaining[n as usize] == 0 {
                self.make_ready(n, now, out);
            }
        }
        self.check_finished(now);
        true
    }

    /// A node that is new, or set to run again, against its parents as they stand: it
    /// waits for those that have not settled; a failed or cancelled parent it does not
    /// tolerate cancels it.
    fn join_parents(&mut self, n: u32, now: u64) {
        let dag = Arc::clone(&self.dag);
        let mut remaining = 0;
        for &p in dag.parents(n) {
            match self.state[p as usize] {
                NodeState::Finished => {}
                NodeState::Error | NodeState::Cancelled if dag.tolerates_parent_errors(n) => {}
                NodeState::Error | NodeState::Cancelled => {
                    self.set_state(n, NodeState::Cancelled, now);
                    return;
                }
                _ => remaining += 1,
            }
        }
        self.remaining[n as usize] = remaining;
    }

    fn cancel_nodes(&mut self, now: u64, out: &mut Vec<Action>) {
        for i in 0..self.state.len() as u32 {
            if !self.state[i as usize].is_terminal() {
                self.clear_timer(i, out);
                self.set_state(i, NodeState::Cancelled, now);
            }
        }
    }

    /// Disarm the timer of a node, if it has one.
    fn clear_timer(&mut self, node: u32, out: &mut Vec<Action>) {
        if let Some(t) = self.tries.as_mut() {
            let timer = std::mem::take(&mut t.timer[node as usize]);
            if timer != 0 {
                out.push(Action::ClearTimer { timer });
            }
        }
    }

    fn set_state(&mut self, node: u32, state: NodeState, now: u64) {
        let slot = &mut self.state[node as usize];
        if *slot == state {
            return;
        }
        if !slot.is_terminal() && state.is_terminal() {
            self.unsettled -= 1;
        }
        *slot = state;
        let step = self.node_slot(node);
        self.rec.step_event(
            step,
            EventKind::DagNodeState,
            DataRef::State(state.as_str()),
            now,
        );
    }

    fn make_ready(&mut self, node: u32, now: u64, out: &mut Vec<Action>) {
        if self.opts.manual {
            self.set_state(node, NodeState::Ready, now);
            let slot = self.node_slot(node);
            out.push(Action::Ready { slot, node });
        } else {
            self.launch(node, now, out);
        }
    }

    fn launch(&mut self, node: u32, now: u64, out: &mut Vec<Action>) {
        if self.opts.semaphores && self.dag.semaphore_key(node).is_some() {
            self.set_state(node, NodeState::PendingSemaphore, now);
            let slot = self.node_slot(node);
            out.push(Action::Acquire { slot, node });
        } else {
            self.begin(node, now, out);
        }
    }

    fn begin(&mut self, node: u32, now: u64, out: &mut Vec<Action>) {
        self.set_state(node, NodeState::Running, now);
        let slot = self.node_slot(node);
        self.rec
            .step_event(slot, EventKind::DagNodeStart, DataRef::NodeInput, now);
        if let Some(&(ms, _)) = self.dag.policy(node).and_then(|p| p.timeout.as_ref()) {
            let timer = timeout_timer(slot);
            self.tries_mut().timer[node as usize] = timer;
            out.push(Action::ArmTimer {
                timer,
                at: now.saturating_add(ms),
                kind: TimerKind::Timeout,
            });
        }
        out.push(Action::Run { slot, node });
    }

    /// One parent of `child` settled in a way the child can use.
    fn parent_settled(&mut self, child: u32, now: u64, out: &mut Vec<Action>) {
        if self.state[child as usize] != NodeState::Waiting {
            return;
        }
        let r = &mut self.remaining[child as usize];
        *r -= 1;
        if *r == 0 {
            self.make_ready(child, now, out);
        }
    }

    /// `node` ended without an output: children that tolerate it treat it as settled, the
    /// others are cancelled and pass the failure on. A worklist, not recursion, because a
    /// failure at the head of a long chain reaches every node below it.
    fn parent_failed(&mut self, node: u32, now: u64, out: &mut Vec<Action>) {
        let dag = Arc::clone(&self.dag);
        self.worklist.clear();
        self.worklist.push(node);
        while let Some(failed) = self.worklist.pop() {
            for &child in dag.children(failed) {
                if self.state[child as usize] != NodeState::Waiting {
                    continue;
                }
                if dag.tolerates_parent_errors(child) {
                    self.parent_settled(child, now, out);
                } else {
                    self.set_state(child, NodeState::Cancelled, now);
                    self.worklist.push(child);
                }
            }
        }
    }

    fn check_finished(&mut self, now: u64) {
        if self.status == RunStatus::Running && self.unsettled == 0 {
            self.status = RunStatus::Finished;
            self.rec
                .run_event(EventKind::DagFinish, DataRef::RunOutput, now);
        }
    }
}
