//! Retries and DAG node timeouts, in both executors, driven by hand.

use std::sync::Arc;

use ramus_core::{
    Action, Backoff, Command, CompiledDag, CompiledMachine, DagGraph, DagRun, DagRunOptions, End,
    EventKind, Executor, MachineRun, MachineSpec, MachineStatus, NoGuards, NodeState, Outcome,
    Recorder, RetryPolicy, StateSpec, StepPolicy, TimerKind, TransitionSpec,
};

fn policy(attempts: u32, timeout: Option<u64>) -> StepPolicy {
    StepPolicy {
        retry: (attempts > 1).then(|| RetryPolicy {
            attempts,
            backoff: Backoff::Exponential,
            initial_ms: 100,
            ..RetryPolicy::default()
        }),
        timeout: timeout.map(|ms| (ms, format!("{ms}ms"))),
    }
}

/// `a -> b`, with `a`'s policy.
fn dag(a: StepPolicy) -> Arc<CompiledDag> {
    let mut g = DagGraph::default();
    g.add_node("a");
    g.set_policy(a);
    g.add_node("b");
    g.add_parent("a");
    Arc::new(CompiledDag::from_graph("d", g).unwrap())
}

fn apply(run: &mut Executor, c: Command, now: u64) -> Vec<Action> {
    let mut out = Vec::new();
    run.apply(c, &mut NoGuards, now, &mut out);
    out
}

fn dag_run(d: Arc<CompiledDag>) -> Executor {
    let mut rec = Recorder::new(3, d.len(), None, None);
    rec.set_observe(true);
    Executor::Dag(DagRun::new(d, DagRunOptions::default(), rec))
}

fn node_state(run: &Executor, node: u32) -> NodeState {
    match run {
        Executor::Dag(d) => d.node_state(node),
        Executor::Machine(_) => unreachable!(),
    }
}

#[test]
fn a_failed_dag_node_runs_again_in_a_slot_of_its_own_after_its_backoff() {
    let mut run = dag_run(dag(policy(3, None)));
    assert_eq!(
        apply(&mut run, Command::Start, 0),
        vec![Action::Run { slot: 0, node: 0 }]
    );
    let failed = |slot| Command::Complete {
        slot,
        outcome: Outcome::Error,
    };
    // Attempt 1 fails: a wait of `initial`, then attempt 2 in slot 0 + 2 nodes.
    let out = apply(&mut run, failed(0), 10);
    assert_eq!(
        out,
        vec![Action::ArmTimer {
            timer: 5,
            at: 110,
            kind: TimerKind::Retry
        }]
    );
    assert_eq!(node_state(&run, 0), NodeState::Retrying);
    assert!(run.is_cancelled(0), "the failed attempt is over");
    assert_eq!(
        apply(&mut run, Command::TimerFired { timer: 5 }, 110),
        vec![Action::Run { slot: 2, node: 0 }]
    );
    assert_eq!((run.slot_node(2), run.slot_attempt(2)), (Some(0), 2));
    // A late report of attempt 1 changes nothing.
    assert!(apply(&mut run, failed(0), 111).is_empty());
    // Attempt 2 fails: the wait doubles.
    let out = apply(&mut run, failed(2), 120);
    assert_eq!(
        out,
        vec![Action::ArmTimer {
            timer: 9,
            at: 320,
            kind: TimerKind::Retry
        }]
    );
    assert_eq!(
        apply(&mut run, Command::TimerFired { timer: 9 }, 320),
        vec![Action::Run { slot: 4, node: 0 }]
    );
    // Attempt 3 succeeds: no error is left, and `b` runs once.
    let out = apply(
        &mut run,
        Command::Complete {
            slot: 4,
            outcome: Outcome::Ok,
        },
        330,
    );
    assert_eq!(out, vec![Action::Run { slot: 1, node: 1 }]);
    assert_eq!(node_state(&run, 0), NodeState::Finished);
    let out = apply(
        &mut run,
        Command::Complete {
            slot: 1,
            outcome: Outcome::Ok,
        },
        340,
    );
    assert_eq!(out, vec![Action::Ended(End::Finished)]);
    // Each attempt is its own step, and each failed one says so.
    let events = run.recorder().drain();
    let retries: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::DagNodeRetry)
        .collect();
    assert_eq!(retries.len(), 2);
    assert_ne!(retries[0].step, retries[1].step);
    assert!(!events.iter().any(|e| e.kind == EventKind::DagNodeError));
}

#[test]
fn the_last_attempt_fails_the_node_and_a_fatal_error_is_never_retried() {
    let mut run = dag_run(dag(policy(2, None)));
    apply(&mut run, Command::Start, 0);
    apply(
        &mut run,
        Command::Complete {
            slot: 0,
            outcome: Outcome::Error,
        },
        0,
    );
    apply(&mut run, Command::TimerFired { timer: 5 }, 100);
    let out = apply(
        &mut run,
        Command::Complete {
            slot: 2,
            outcome: Outcome::Error,
        },
        100,
    );
    assert_eq!(out, vec![Action::Ended(End::Failed)]);
    assert_eq!(node_state(&run, 0), NodeState::Error);

    let mut run = dag_run(dag(policy(5, None)));
    apply(&mut run, Command::Start, 0);
    let out = apply(
        &mut run,
        Command::Complete {
            slot: 0,
            outcome: Outcome::Fatal,
        },
        0,
    );
    assert_eq!(out, vec![Action::Ended(End::Failed)]);
}

#[test]
fn a_dag_node_that_runs_too_long_times_out_and_is_retried() {
    let mut run = dag_run(dag(policy(2, Some(50))));
    let out = apply(&mut run, Command::Start, 0);
    assert_eq!(
        out,
        vec![
            Action::ArmTimer {
                timer: 2,
                at: 50,
                kind: TimerKind::Timeout
            },
            Action::Run { slot: 0, node: 0 }
        ]
    );
    let out = apply(&mut run, Command::TimerFired { timer: 2 }, 50);
    assert_eq!(
        out,
        vec![
            Action::TimedOut { slot: 0, node: 0 },
            Action::ArmTimer {
                timer: 5,
                at: 150,
                kind: TimerKind::Retry
            },
        ]
    );
    assert!(
        run.is_cancelled(0),
        "the attempt that timed out sees its cancellation"
    );
    // Its late success is ignored; the retry runs with a timeout of its own.
    assert!(apply(
        &mut run,
        Command::Complete {
            slot: 0,
            outcome: Outcome::Ok
        },
        60
    )
    .is_empty());
    let out = apply(&mut run, Command::TimerFired { timer: 5 }, 150);
    assert_eq!(
        out,
        vec![
            Action::ArmTimer {
                timer: 6,
                at: 200,
                kind: TimerKind::Timeout
            },
            Action::Run { slot: 2, node: 0 }
        ]
    );
    // Finishing in time disarms it.
    let out = apply(
        &mut run,
        Command::Complete {
            slot: 2,
            outcome: Outcome::Ok,
        },
        160,
    );
    assert_eq!(
        out,
        vec![
            Action::ClearTimer { timer: 6 },
            Action::Run { slot: 1, node: 1 }
        ]
    );
    // A stale timer does nothing.
    assert!(apply(&mut run, Command::TimerFired { timer: 6 }, 200).is_empty());
}

#[test]
fn cancelling_a_dag_clears_a_pending_retry() {
    let mut run = dag_run(dag(policy(3, None)));
    apply(&mut run, Command::Start, 0);
    apply(
        &mut run,
        Command::Complete {
            slot: 0,
            outcome: Outcome::Error,
        },
        0,
    );
    let out = apply(&mut run, Command::Cancel, 1);
    assert_eq!(
        out,
        vec![
            Action::ClearTimer { timer: 5 },
            Action::Ended(End::Cancelled)
        ]
    );
    assert!(apply(&mut run, Command::TimerFired { timer: 5 }, 100).is_empty());
}

#[test]
fn a_restored_dag_continues_a_retry_where_it_was() {
    let d = dag(policy(3, None));
    let mut r = DagRun::new(
        Arc::clone(&d),
        DagRunOptions::default(),
        Recorder::new(1, 2, None, None),
    );
    assert!(r.restore_attempts(0, 1));
    assert!(r.restore_retry(5));
    assert!(!DagRun::is_retry_timer(6));
    let mut run = Executor::Dag(r);
    // Nothing runs at the start: the node waits for its timer.
    assert!(apply(&mut run, Command::Start, 0).is_empty());
    assert_eq!(
        apply(&mut run, Command::TimerFired { timer: 5 }, 100),
        vec![Action::Run { slot: 2, node: 0 }]
    );
    assert_eq!(run.slot_attempt(2), 2);
}

fn machine_spec(attempts: u32) -> MachineSpec {
    MachineSpec {
        name: "m".into(),
        initial: Some("call".into()),
        states: vec![
            StateSpec {
                name: "call".into(),
                has_run: true,
                retry: Some(RetryPolicy {
                    attempts,
                    backoff: Backoff::Fixed,
                    initial_ms: 1000,
                    ..RetryPolicy::default()
                }),
                max_visits: Some(1),
                transitions: vec![TransitionSpec {
                    event: String::new(),
                    target: "done".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
            StateSpec {
                name: "done".into(),
                is_final: true,
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

#[test]
fn a_failed_state_sleeps_then_runs_again_as_the_same_visit() {
    let m = Arc::new(CompiledMachine::compile(&machine_spec(3)).unwrap());
    let mut run = MachineRun::new(m, Recorder::new(1, 0, None, None), false, None);
    let mut out = Vec::new();
    run.apply(Command::Start, &mut NoGuards, 0, &mut out);
    assert_eq!(out, vec![Action::Run { slot: 0, node: 0 }]);
    assert_eq!(run.slot_attempt(0), 1);
    out.clear();
    run.apply(
        Command::Complete {
            slot: 0,
            outcome: Outcome::Error,
        },
        &mut NoGuards,
        5,
        &mut out,
    );
    assert_eq!(
        out,
        vec![Action::ArmTimer {
            timer: 1,
            at: 1005,
            kind: TimerKind::Retry
        }]
    );
    assert_eq!(run.status(), MachineStatus::Sleeping);
    // An event waits for the attempt that ends the state.
    out.clear();
    run.apply(
        Command::Send {
            handle: 7,
            event: "go",
            queue: false,
        },
        &mut NoGuards,
        6,
        &mut out,
    );
    assert_eq!(run.queued(), 1);
    // The snapshot keeps the wait and the attempt.
    let snap = run.snapshot();
    assert_eq!(snap.attempt, 2);
    let mut restored = MachineRun::restore(
        Arc::clone(run.machine()),
        Recorder::new(2, 0, None, None),
        false,
        &snap,
    )
    .unwrap();
    assert_eq!(restored.status(), MachineStatus::Sleeping);
    restored.set_auto(true);
    for r in [&mut run, &mut restored] {
        out.clear();
        r.apply(
            Command::TimerFired { timer: 1 },
            &mut NoGuards,
            1005,
            &mut out,
        );
        // maxVisits 1 still lets the attempt run: it is the same visit.
        let [Action::Run { slot, node: 0 }] = out[..] else {
            panic!("{out:?}")
        };
        assert_eq!(r.slot_attempt(slot), 2);
    }
    out.clear();
    run.apply(
        Command::Complete {
            slot: 1,
            outcome: Outcome::Ok,
        },
        &mut NoGuards,
        1010,
        &mut out,
    );
    assert!(out.contains(&Action::Ended(End::Finished)), "{out:?}");
}

#[test]
fn a_state_out_of_attempts_fails_as_without_retry() {
    let m = Arc::new(CompiledMachine::compile(&machine_spec(2)).unwrap());
    let mut run = MachineRun::new(m, Recorder::new(1, 0, None, None), false, None);
    let mut out = Vec::new();
    run.apply(Command::Start, &mut NoGuards, 0, &mut out);
    run.apply(
        Command::Complete {
            slot: 0,
            outcome: Outcome::Error,
        },
        &mut NoGuards,
        0,
        &mut out,
    );
    run.apply(
        Command::TimerFired { timer: 1 },
        &mut NoGuards,
        1000,
        &mut out,
    );
    out.clear();
    run.apply(
        Command::Complete {
            slot: 1,
            outcome: Outcome::Error,
        },
        &mut NoGuards,
        1000,
        &mut out,
    );
    assert_eq!(
        out,
        vec![
            Action::Failed {
                message: None,
                halted: true
            },
            Action::Ended(End::Failed)
        ]
    );
    // A cancel during a wait clears its timer.
    let m = Arc::new(CompiledMachine::compile(&machine_spec(2)).unwrap());
    let mut run = MachineRun::new(m, Recorder::new(1, 0, None, None), false, None);
    run.apply(Command::Start, &mut NoGuards, 0, &mut out);
    run.apply(
        Command::Complete {
            slot: 0,
            outcome: Outcome::Fatal,
        },
        &mut NoGuards,
        0,
        &mut out,
    );
    assert_eq!(
        run.status(),
        MachineStatus::Error,
        "a fatal error is not retried"
    );
    let m = Arc::new(CompiledMachine::compile(&machine_spec(2)).unwrap());
    let mut run = MachineRun::new(m, Recorder::new(1, 0, None, None), false, None);
    run.apply(Command::Start, &mut NoGuards, 0, &mut out);
    run.apply(
        Command::Complete {
            slot: 0,
            outcome: Outcome::Error,
        },
        &mut NoGuards,
        0,
        &mut out,
    );
    out.clear();
    run.apply(Command::Cancel, &mut NoGuards, 1, &mut out);
    assert_eq!(
        out,
        vec![
            Action::ClearTimer { timer: 1 },
            Action::Ended(End::Cancelled)
        ]
    );
}

/// A `retryOn` oracle: answers `retry` and remembers what it was asked.
struct RetryOnTimeouts {
    retry: bool,
    asked: Vec<(u32, u32, String)>,
}

impl ramus_core::Guards for RetryOnTimeouts {
    fn holds(&mut self, _: u32, _: Option<u64>) -> Result<bool, ramus_core::GuardFailed> {
        Ok(true)
    }

    fn retries_timeout(&mut self, step: u32, slot: u32, message: &str) -> bool {
        self.asked.push((step, slot, message.to_owned()));
        self.retry
    }
}

/// `call` (run, `retry` with a `retryOn`, `timeout: { after: 50, state: 'late' }`) → `done`.
fn timed_machine() -> Arc<CompiledMachine> {
    let mut spec = machine_spec(2);
    let call = &mut spec.states[0];
    call.retry.as_mut().unwrap().retry_on = Some(ramus_core::RetryOn::Inline);
    call.timeout = Some((50, "late".into()));
    call.timeout_label = Some("50ms".into());
    spec.states.push(StateSpec {
        name: "late".into(),
        is_final: true,
        ..Default::default()
    });
    Arc::new(CompiledMachine::compile(&spec).unwrap())
}

#[test]
fn a_state_timeout_is_retried_only_when_its_retry_on_says_so() {
    for retry in [true, false] {
        let mut run = MachineRun::new(
            timed_machine(),
            Recorder::new(1, 0, None, None),
            false,
            None,
        );
        let mut oracle = RetryOnTimeouts {
            retry,
            asked: Vec::new(),
        };
        let mut out = Vec::new();
        run.apply(Command::Start, &mut oracle, 0, &mut out);
        let Some(&Action::ArmTimer { timer, .. }) = out.first() else {
            panic!("{out:?}")
        };
        out.clear();
        run.apply(Command::TimerFired { timer }, &mut oracle, 50, &mut out);
        assert_eq!(
            oracle.asked,
            vec![(0, 0, "State call timed out after 50ms".into())]
        );
        assert!(run.is_cancelled(0), "the timed-out attempt is cancelled");
        if retry {
            assert_eq!(out[0], Action::TimedOut { slot: 0, node: 0 });
            assert_eq!(run.status(), MachineStatus::Sleeping, "{out:?}");
            let Some(&Action::ArmTimer {
                timer: wait,
                at: 1050,
                kind: TimerKind::Retry,
            }) = out.get(1)
            else {
                panic!("{out:?}")
            };
            // The second attempt runs with a timeout of its own; it is the last, so when
            // it times out too the timeout is taken without asking.
            out.clear();
            run.apply(
                Command::TimerFired { timer: wait },
                &mut oracle,
                1050,
                &mut out,
            );
            let [Action::ArmTimer {
                timer: again,
                at: 1100,
                ..
            }, Action::Run { slot: 1, node: 0 }] = out[..]
            else {
                panic!("{out:?}")
            };
            assert_eq!(run.slot_attempt(1), 2);
            out.clear();
            run.apply(
                Command::TimerFired { timer: again },
                &mut oracle,
                1100,
                &mut out,
            );
            assert_eq!(oracle.asked.len(), 1);
        }
        assert_eq!(run.current(), 2, "the timeout's state: {out:?}");
        assert!(out.contains(&Action::Ended(End::Finished)), "{out:?}");
    }
    // Without a `retryOn`, a state's timeout is never retried and nothing is asked.
    let mut spec = machine_spec(3);
    spec.states[0].timeout = Some((50, "done".into()));
    let m = Arc::new(CompiledMachine::compile(&spec).unwrap());
    let mut run = MachineRun::new(m, Recorder::new(1, 0, None, None), false, None);
    let mut oracle = RetryOnTimeouts {
        retry: true,
        asked: Vec::new(),
    };
    let mut out = Vec::new();
    run.apply(Command::Start, &mut oracle, 0, &mut out);
    let Some(&Action::ArmTimer { timer, .. }) = out.first() else {
        panic!("{out:?}")
    };
    run.apply(Command::TimerFired { timer }, &mut oracle, 50, &mut out);
    assert!(oracle.asked.is_empty());
    assert_eq!(run.status(), MachineStatus::Final);
}

#[test]
fn a_dag_node_timeout_that_its_retry_on_declines_fails_the_node() {
    let mut p = policy(3, Some(50));
    p.retry.as_mut().unwrap().retry_on = Some(ramus_core::RetryOn::Inline);
    for retry in [false, true] {
        let Executor::Dag(mut run) = dag_run(dag(p.clone())) else {
            unreachable!()
        };
        let mut oracle = RetryOnTimeouts {
            retry,
            asked: Vec::new(),
        };
        let mut out = Vec::new();
        run.apply_asking(Command::Start, &mut oracle, 0, &mut out);
        out.clear();
        run.apply_asking(Command::TimerFired { timer: 2 }, &mut oracle, 50, &mut out);
        assert_eq!(
            oracle.asked,
            vec![(0, 0, "Node a timed out after 50ms".into())]
        );
        assert_eq!(out[0], Action::TimedOut { slot: 0, node: 0 });
        let expected = if retry {
            NodeState::Retrying
        } else {
            NodeState::Error
        };
        assert_eq!(run.node_state(0), expected, "{out:?}");
    }
}
