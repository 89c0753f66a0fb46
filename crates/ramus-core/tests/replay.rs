//! Replay: the commands a run received (with their times and the answers its conditions
//! gave), applied to a fresh run of the same definition and seed, give the same actions
//! and the same events — kinds, steps, nodes, data refs and ids, which come from the
//! seeded generator. This is what lets a driver rebuild a run from its log, and what a
//! hidden source of nondeterminism (a hash map's order, a clock read) would break.

use std::sync::Arc;

use proptest::prelude::*;
use ramus_core::{
    Action, Command, CompiledDag, CompiledMachine, DagRun, DagRunOptions, Delay, Event, Executor,
    GuardFailed, Guards, MachineRun, MachineSpec, NodeSpec, Outcome, Recorder, StateSpec,
    TransitionSpec,
};

/// A command as recorded: owned, so the log outlives the run that received it.
#[derive(Clone, Debug, PartialEq)]
enum Cmd {
    Start,
    Step,
    Complete {
        slot: u32,
        outcome: Out,
    },
    Send {
        handle: u64,
        event: String,
        queue: bool,
    },
    TimerFired {
        timer: u64,
    },
    Cancel,
}

#[derive(Clone, Debug, PartialEq)]
enum Out {
    Ok,
    Error,
    Cancelled,
    Choose { target: String, delay: Option<u64> },
}

impl Cmd {
    fn command(&self) -> Command<'_> {
        match self {
            Cmd::Start => Command::Start,
            Cmd::Step => Command::Step,
            Cmd::Complete { slot, outcome } => Command::Complete {
                slot: *slot,
                outcome: match outcome {
                    Out::Ok => Outcome::Ok,
                    Out::Error => Outcome::Error,
                    Out::Cancelled => Outcome::Cancelled,
                    Out::Choose { target, delay } => Outcome::Choose {
                        target,
                        delay: delay.map(|ms| Delay::Ms(ms as f64)),
                    },
                },
            },
            Cmd::Send {
                handle,
                event,
                queue,
            } => Command::Send {
                handle: *handle,
                event,
                queue: *queue,
            },
            Cmd::TimerFired { timer } => Command::TimerFired { timer: *timer },
            Cmd::Cancel => Command::Cancel,
        }
    }
}

/// One entry of a run's log, and what applying it produced.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    cmd: Cmd,
    now: u64,
    /// The conditions' answers, in the order the core asked.
    answers: Vec<Result<bool, GuardFailed>>,
    applied: bool,
    actions: Vec<Action>,
    events: Vec<Event>,
}

/// Conditions answered from a stream of bits; every answer is kept for the log.
struct Recording<'a> {
    bits: &'a [u8],
    at: usize,
    answers: Vec<Result<bool, GuardFailed>>,
}

impl Guards for Recording<'_> {
    fn holds(&mut self, _: u32, _: Option<u64>) -> Result<bool, GuardFailed> {
        let b = self
            .bits
            .get(self.at % self.bits.len().max(1))
            .copied()
            .unwrap_or(0);
        self.at += 1;
        let answer = match b % 8 {
            0 => Err(GuardFailed),
            1..=3 => Ok(false),
            _ => Ok(true),
        };
        self.answers.push(answer);
        answer
    }
}

/// Conditions answered from a log.
struct Replaying {
    answers: std::vec::IntoIter<Result<bool, GuardFailed>>,
}

impl Guards for Replaying {
    fn holds(&mut self, _: u32, _: Option<u64>) -> Result<bool, GuardFailed> {
        self.answers
            .next()
            .expect("the replay asked more conditions than the run did")
    }
}

/// Apply a recorded command to `run` and note what it produced.
fn apply(
    run: &mut Executor,
    cmd: Cmd,
    now: u64,
    guards: &mut dyn Guards,
) -> (bool, Vec<Action>, Vec<Event>) {
    let mut actions = Vec::new();
    let applied = run.apply(cmd.command(), guards, now, &mut actions);
    (applied, actions, run.recorder().drain())
}

/// Apply the log to a fresh run and check each command gives what it gave.
fn replay(mut run: Executor, log: &[Entry]) -> Result<Executor, TestCaseError> {
    for (i, e) in log.iter().enumerate() {
        let mut guards = Replaying {
            answers: e.answers.clone().into_iter(),
        };
        let (applied, actions, events) = apply(&mut run, e.cmd.clone(), e.now, &mut guards);
        prop_assert!(
            guards.answers.next().is_none(),
            "command {i}: fewer conditions asked"
        );
        prop_assert_eq!(applied, e.applied, "command {} {:?}", i, e.cmd);
        prop_assert_eq!(&actions, &e.actions, "command {} {:?}", i, e.cmd);
        prop_assert_eq!(&events, &e.events, "command {} {:?}", i, e.cmd);
    }
    Ok(run)
}

fn recorder(seed: u64, slots: usize) -> Recorder {
    let mut rec = Recorder::new(seed, slots, None, None);
    rec.set_observe(true);
    rec
}

// ---- DAGs ----

/// A random DAG (node `i` takes parents among `0..i`), in shuffled declaration order, some
/// nodes tolerating their parents' failures.
fn random_dag() -> impl Strategy<Value = Vec<NodeSpec>> {
    (1usize..24)
        .prop_flat_map(|n| {
            let nodes = (0..n)
                .map(|i| {
                    (
                        proptest::collection::vec(0..i.max(1), 0..=i.min(3)),
                        any::<bool>(),
                    )
                })
                .collect::<Vec<_>>();
            (nodes, Just((0..n).collect::<Vec<_>>()).prop_shuffle())
        })
        .prop_map(|(nodes, order)| {
            order
                .iter()
                .map(|&i| {
                    let mut parents: Vec<String> = nodes[i]
                        .0
                        .iter()
                        .filter(|&&p| p < i)
                        .map(|p| format!("n{p}"))
                        .collect();
                    parents.sort();
                    parents.dedup();
                    NodeSpec {
                        name: format!("n{i}"),
                        parents,
                        tolerate_parent_errors: nodes[i].1,
                        ..NodeSpec::default()
                    }
                })
                .collect()
        })
}

/// Drive a DAG run: each pick completes one running node (which one, and how), or
/// cancels the run; time moves on with each.
fn drive_dag(run: &mut Executor, picks: &[(usize, u8, u16)]) -> Vec<Entry> {
    let mut log = Vec::new();
    let mut now = 1_000;
    let mut running: Vec<u32> = Vec::new();
    let mut record = |run: &mut Executor, cmd: Cmd, now: u64, running: &mut Vec<u32>| {
        let mut guards = Recording {
            bits: &[],
            at: 0,
            answers: Vec::new(),
        };
        let (applied, actions, events) = apply(run, cmd.clone(), now, &mut guards);
        for a in &actions {
            if let Action::Run { slot, .. } = a {
                running.push(*slot);
            }
        }
        log.push(Entry {
            cmd,
            now,
            answers: guards.answers,
            applied,
            actions,
            events,
        });
    };
    record(run, Cmd::Start, now, &mut running);
    for &(pick, how, dt) in picks {
        now += u64::from(dt);
        if how == 255 {
            record(run, Cmd::Cancel, now, &mut running);
            continue;
        }
        if running.is_empty() {
            break;
        }
        let slot = running.remove(pick % running.len());
        let outcome = match how % 10 {
            0 | 1 => Out::Error,
            2 => Out::Cancelled,
            _ => Out::Ok,
        };
        record(run, Cmd::Complete { slot, outcome }, now, &mut running);
    }
    log
}

fn dag_run(dag: &Arc<CompiledDag>, tolerate: bool, seed: u64) -> Executor {
    Executor::Dag(DagRun::new(
        Arc::clone(dag),
        DagRunOptions {
            tolerate_failures: tolerate,
            ..DagRunOptions::default()
        },
        recorder(seed, dag.len()),
    ))
}

// ---- machines ----

const EVENTS: [&str; 4] = ["", "go", "back", "stop"];

/// A random machine over `n` states: runners or not, finals, error states, visit limits,
/// timeouts, and transitions (eventless or on an event, guarded or not, delayed or not).
fn random_machine() -> impl Strategy<Value = MachineSpec> {
    (2usize..7)
        .prop_flat_map(|n| {
            let transition = (
                0..EVENTS.len(),
                0..n,
                any::<bool>(),
                proptest::option::weighted(0.3, 1u64..5_000),
            )
                .prop_map(|(e, target, guarded, delay_ms)| TransitionSpec {
                    event: EVENTS[e].to_owned(),
                    target: format!("s{target}"),
                    guarded,
                    delay_ms,
                });
            let state = (
                any::<bool>(),
                proptest::bool::weighted(0.25),
                proptest::option::weighted(0.3, 0..n),
                proptest::option::weighted(0.2, 1u32..4),
                proptest::option::weighted(0.3, (1u64..10_000, 0..n)),
                proptest::collection::vec(transition, 0..4),
            );
            (
                proptest::collection::vec(state, n),
                proptest::option::weighted(0.4, 0..n),
                proptest::option::weighted(0.5, 3u32..30),
            )
        })
        .prop_map(|(states, error_state, max_steps)| MachineSpec {
            name: "m".into(),
            initial: Some("s0".into()),
            error_state: error_state.map(|s| format!("s{s}")),
            max_steps,
            states: states
                .into_iter()
                .enumerate()
                .map(
                    |(i, (has_run, is_final, error_state, max_visits, timeout, transitions))| {
                        StateSpec {
                            name: format!("s{i}"),
                            has_run,
                            is_final,
                            error_state: error_state.map(|s| format!("s{s}")),
                            max_visits,
                            timeout: timeout.map(|(ms, s)| (ms, format!("s{s}"))),
                            transitions,
                            ..StateSpec::default()
                        }
                    },
                )
                .collect(),
        })
}

/// What a machine driver does next.
#[derive(Clone, Debug)]
enum Op {
    /// Complete the running state: how (ok, error, cancelled, a choice), with bits for
    /// the conditions its report asks.
    Complete(u8, Vec<u8>),
    /// Send an event (an index into [`EVENTS`] and one the machine does not know), queued
    /// or not, with bits for its conditions.
    Send(usize, bool, Vec<u8>),
    /// Fire the earliest armed timer (time moves to it).
    Fire,
    /// Step (what a driver without auto mode does).
    Step,
    /// Cancel the run.
    Cancel,
    /// Let time pass.
    Wait(u16),
}

fn random_ops() -> impl Strategy<Value = Vec<Op>> {
    let bits = || proptest::collection::vec(any::<u8>(), 1..4);
    let op = prop_oneof![
        6 => (any::<u8>(), bits()).prop_map(|(h, b)| Op::Complete(h, b)),
        4 => (0..EVENTS.len() + 1, any::<bool>(), bits()).prop_map(|(e, q, b)| Op::Send(e, q, b)),
        3 => Just(Op::Fire),
        1 => Just(Op::Step),
        1 => Just(Op::Cancel),
        2 => any::<u16>().prop_map(Op::Wait),
    ];
    proptest::collection::vec(op, 0..60)
}

/// Drive a machine run through `ops`, as a driver would: it completes the steps the run
/// launched, fires the timers it armed (earliest first), sends events and cancels.
fn drive_machine(run: &mut Executor, states: usize, ops: &[Op], auto: bool) -> Vec<Entry> {
    let mut log = Vec::new();
    let mut now = 1_000u64;
    let mut running: Vec<u32> = Vec::new();
    let mut timers: Vec<(u64, u64)> = Vec::new();
    let mut handle = 0u64;
    let mut record = |run: &mut Executor,
                      cmd: Cmd,
                      now: u64,
                      bits: &[u8],
                      running: &mut Vec<u32>,
                      timers: &mut Vec<(u64, u64)>| {
        let mut guards = Recording {
            bits,
            at: 0,
            answers: Vec::new(),
        };
        let (applied, actions, events) = apply(run, cmd.clone(), now, &mut guards);
        for a in &actions {
            match a {
                Action::Run { slot, .. } => running.push(*slot),
                Action::ArmTimer { timer, at, .. } => {
                    timers.retain(|(t, _)| t != timer);
                    timers.push((*timer, *at));
                }
                Action::ClearTimer { timer } => timers.retain(|(t, _)| t != timer),
                _ => {}
            }
        }
        log.push(Entry {
            cmd,
            now,
            answers: guards.answers,
            applied,
            actions,
            events,
        });
    };
    record(
        run,
        if auto { Cmd::Start } else { Cmd::Step },
        now,
        &[],
        &mut running,
        &mut timers,
    );
    for op in ops {
        match op {
            Op::Complete(how, bits) => {
                // The oldest launched visit first; a visit abandoned by a timeout reports
                // late, and the run must ignore it the same way both times.
                let Some(slot) = (!running.is_empty()).then(|| running.remove(0)) else {
                    continue;
                };
                let outcome = match how % 12 {
                    0 | 1 => Out::Error,
                    2 => Out::Cancelled,
                    3 | 4 => Out::Choose {
                        // Sometimes a state the machine does not have.
                        target: format!("s{}", *how as usize % (states + 1)),
                        delay: (how % 2 == 0).then_some(u64::from(*how) * 10),
                    },
                    _ => Out::Ok,
                };
                record(
                    run,
                    Cmd::Complete { slot, outcome },
                    now,
                    bits,
                    &mut running,
                    &mut timers,
                );
            }
            Op::Send(e, queue, bits) => {
                handle += 1;
                let event = EVENTS.get(*e).copied().unwrap_or("unknown").to_owned();
                let cmd = Cmd::Send {
                    handle,
                    event,
                    queue: *queue,
                };
                record(run, cmd, now, bits, &mut running, &mut timers);
            }
            Op::Fire => {
                let Some(&(timer, at)) = timers.iter().min_by_key(|(t, at)| (*at, *t)) else {
                    continue;
                };
                timers.retain(|(t, _)| *t != timer);
                now = now.max(at);
                record(
                    run,
                    Cmd::TimerFired { timer },
                    now,
                    &[],
                    &mut running,
                    &mut timers,
                );
            }
            Op::Step => record(run, Cmd::Step, now, &[], &mut running, &mut timers),
            Op::Cancel => record(run, Cmd::Cancel, now, &[], &mut running, &mut timers),
            Op::Wait(ms) => now += u64::from(*ms),
        }
    }
    log
}

fn machine_run(m: &Arc<CompiledMachine>, seed: u64) -> Executor {
    Executor::Machine(MachineRun::new(
        Arc::clone(m),
        recorder(seed, 0),
        false,
        None,
    ))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_dag_run_replays_to_the_same_actions_and_events(
        nodes in random_dag(),
        tolerate in any::<bool>(),
        picks in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u16..50), 0..80),
        seed in any::<u64>(),
    ) {
        let dag = Arc::new(CompiledDag::compile("d", &nodes).unwrap());
        let mut run = dag_run(&dag, tolerate, seed);
        let log = drive_dag(&mut run, &picks);
        prop_assert!(log.iter().any(|e| !e.events.is_empty()), "the run recorded events");
        let again = replay(dag_run(&dag, tolerate, seed), &log)?;
        prop_assert_eq!(run.phase(), again.phase());
        if let (Executor::Dag(a), Executor::Dag(b)) = (&run, &again) {
            for n in 0..dag.len() as u32 {
                prop_assert_eq!(a.node_state(n), b.node_state(n));
            }
        }
    }

    #[test]
    fn a_machine_run_replays_to_the_same_actions_events_and_snapshot(
        spec in random_machine(),
        ops in random_ops(),
        auto in proptest::bool::weighted(0.8),
        seed in any::<u64>(),
    ) {
        // Random specs may be invalid (an error state that is its own, a limit below
        // one…): those are the compiler's business, not the replay's.
        let Ok(m) = CompiledMachine::compile(&spec) else { return Ok(()) };
        let m = Arc::new(m);
        let mut run = machine_run(&m, seed);
        let log = drive_machine(&mut run, spec.states.len(), &ops, auto);
        let again = replay(machine_run(&m, seed), &log)?;
        prop_assert_eq!(run.phase(), again.phase());
        if let (Executor::Machine(a), Executor::Machine(b)) = (&run, &again) {
            prop_assert_eq!(a.snapshot(), b.snapshot());
            prop_assert_eq!(a.status(), b.status());
        }
    }
}

#[test]
fn a_different_seed_gives_other_ids_but_the_same_actions() {
    let dag = Arc::new(
        CompiledDag::compile("d", &[NodeSpec::new("a", &[]), NodeSpec::new("b", &["a"])]).unwrap(),
    );
    let picks = [(0, 5, 1), (0, 5, 1)];
    let mut one = dag_run(&dag, false, 1);
    let log = drive_dag(&mut one, &picks);
    let mut two = dag_run(&dag, false, 2);
    let other = drive_dag(&mut two, &picks);
    let actions = |l: &[Entry]| l.iter().map(|e| e.actions.clone()).collect::<Vec<_>>();
    let ids = |l: &[Entry]| {
        l.iter()
            .flat_map(|e| e.events.iter().map(|ev| ev.id))
            .collect::<Vec<_>>()
    };
    assert_eq!(actions(&log), actions(&other));
    assert_ne!(ids(&log), ids(&other));
}
