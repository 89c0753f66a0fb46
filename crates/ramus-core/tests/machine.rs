//! Transition logic of the state machine executor, driven with a simulated clock.

use std::collections::HashMap;
use std::sync::Arc;

use ramus_core::{
    parse_duration, Action, Command, CompiledMachine, End, GuardFailed, Guards, InputRef,
    MachineRun, MachineSpec, MachineStatus, NoGuards, Outcome, Recorder, StateSpec, TimerKind,
    TransitionSpec,
};

fn t(event: &str, target: &str) -> TransitionSpec {
    TransitionSpec {
        event: event.into(),
        target: target.into(),
        ..Default::default()
    }
}

fn state(name: &str, transitions: Vec<TransitionSpec>) -> StateSpec {
    StateSpec {
        name: name.into(),
        has_run: true,
        transitions,
        ..Default::default()
    }
}

fn machine(initial: &str, states: Vec<StateSpec>) -> MachineSpec {
    MachineSpec {
        name: "m".into(),
        initial: Some(initial.into()),
        states,
        ..Default::default()
    }
}

/// Guards answered from a table: transition id -> answer; unlisted ids hold.
struct Table(HashMap<u32, Result<bool, GuardFailed>>);

impl Guards for Table {
    fn holds(&mut self, transition: u32, _: Option<u64>) -> Result<bool, GuardFailed> {
        self.0.get(&transition).copied().unwrap_or(Ok(true))
    }
}

struct Sim {
    run: MachineRun,
    now: u64,
    out: Vec<Action>,
}

impl Sim {
    fn new(spec: MachineSpec) -> Sim {
        let m = Arc::new(CompiledMachine::compile(&spec).unwrap());
        Sim {
            run: MachineRun::new(m, Recorder::new(1, 0, None, None), false, None),
            now: 1_000,
            out: Vec::new(),
        }
    }

    fn name(&self, state: u32) -> &str {
        self.run.machine().state_name(state)
    }

    fn state(&self) -> &str {
        self.name(self.run.current())
    }

    /// Step and return the slot of the state run it asked for.
    fn step(&mut self) -> u32 {
        self.out.clear();
        assert!(self
            .run
            .apply(Command::Step, &mut NoGuards, self.now, &mut self.out));
        self.out
            .iter()
            .find_map(|a| match a {
                Action::Run { slot, .. } => Some(*slot),
                _ => None,
            })
            .expect("a state run")
    }

    fn done(&mut self, slot: u32, outcome: Outcome<'_>, guards: &mut dyn Guards) -> Vec<Action> {
        self.out.clear();
        self.run.apply(
            Command::Complete { slot, outcome },
            guards,
            self.now,
            &mut self.out,
        );
        std::mem::take(&mut self.out)
    }

    fn send(&mut self, handle: u64, event: &str, queue: bool) -> Vec<Action> {
        self.out.clear();
        self.run.apply(
            Command::Send {
                handle,
                event,
                queue,
            },
            &mut NoGuards,
            self.now,
            &mut self.out,
        );
        std::mem::take(&mut self.out)
    }
}

#[test]
fn validation_messages() {
    let cases: Vec<(MachineSpec, &str)> = vec![
        (
            MachineSpec {
                name: "m".into(),
                states: vec![state("a", vec![])],
                ..Default::default()
            },
            "No initial state",
        ),
        (
            machine("zz", vec![state("a", vec![])]),
            "Initial state zz does not exist",
        ),
        (
            MachineSpec {
                error_state: Some("oops".into()),
                ..machine("a", vec![state("a", vec![])])
            },
            "Error state oops does not exist",
        ),
        (
            machine(
                "a",
                vec![StateSpec {
                    error_state: Some("nope".into()),
                    ..state("a", vec![])
                }],
            ),
            "Error state nope does not exist",
        ),
        (
            machine("a", vec![state("a", vec![t("go", "b")])]),
            "State a Transition target b does not exist",
        ),
        (
            machine(
                "a",
                vec![StateSpec {
                    timeout: Some((5, "late".into())),
                    ..state("a", vec![])
                }],
            ),
            "State a timeout target late does not exist",
        ),
        (machine("a", vec![]), "Machine m has no states"),
    ];
    for (spec, msg) in cases {
        assert_eq!(
            CompiledMachine::compile(&spec).unwrap_err().to_string(),
            msg
        );
    }
}

#[test]
fn guarded_loop_then_event_then_final() {
    let mut think = state(
        "think",
        vec![
            TransitionSpec {
                guarded: true,
                ..t("", "think")
            },
            t("", "ask"),
        ],
    );
    think.has_run = true;
    let ask = StateSpec {
        has_run: false,
        ..state("ask", vec![t("approve", "done"), t("reject", "think")])
    };
    let done = StateSpec {
        is_final: true,
        has_run: false,
        ..state("done", vec![])
    };
    let mut sim = Sim::new(machine("think", vec![think, ask, done]));
    assert_eq!(sim.run.status(), MachineStatus::Initial);

    // The guard (transition 0) holds twice, then fails: the unguarded fallback wins.
    for holds in [true, true, false] {
        let slot = sim.step();
        assert_eq!(sim.run.status(), MachineStatus::Running);
        let acts = sim.done(
            slot,
            Outcome::Ok,
            &mut Table(HashMap::from([(0, Ok(holds))])),
        );
        let to = if holds { "think" } else { "ask" };
        assert!(matches!(
            acts[0],
            Action::Moved {
                input: InputRef::Output,
                event: None,
                ..
            }
        ));
        assert_eq!(sim.state(), to);
        assert_eq!(sim.run.status(), MachineStatus::Ready);
    }
    // A state without run still steps (the driver passes its input through), then waits.
    let slot = sim.step();
    assert!(sim.done(slot, Outcome::Ok, &mut NoGuards).is_empty());
    assert_eq!(sim.run.status(), MachineStatus::WaitingForEvent);
    assert!(!sim.run.can_step());
    assert_eq!(
        sim.run.machine().available_events(sim.run.current()),
        vec!["approve", "reject"]
    );

    // An unknown event without queue is dropped; approve moves to the final state.
    assert_eq!(
        sim.send(7, "nonsense", false),
        vec![Action::DropEvent { handle: 7 }]
    );
    let acts = sim.send(8, "approve", false);
    assert_eq!(acts.last(), Some(&Action::Ended(End::Finished)));
    assert!(matches!(acts[0], Action::Moved { event: Some(8), .. }));
    assert_eq!(sim.run.status(), MachineStatus::Final);
}

#[test]
fn events_during_a_run_wait_their_turn() {
    let a = state("a", vec![t("go", "b"), t("", "c")]);
    let b = state("b", vec![t("later", "c")]);
    let c = StateSpec {
        is_final: true,
        ..state("c", vec![])
    };
    let mut sim = Sim::new(machine("a", vec![a, b, c]));
    let slot = sim.step();
    // Sent while a runs: all queued. `later` (queue) waits for b; `noise` is dropped.
    assert!(sim.send(1, "later", true).is_empty());
    assert!(sim.send(2, "noise", false).is_empty());
    assert!(sim.send(3, "go", false).is_empty());
    let acts = sim.done(slot, Outcome::Ok, &mut NoGuards);
    assert!(acts.contains(&Action::DropEvent { handle: 2 }));
    assert!(acts.contains(&Action::Moved {
        from: 0,
        to: 1,
        event: Some(3),
        input: InputRef::Output
    }));
    assert_eq!(sim.state(), "b");
    // b runs; the queued `later` now fires its transition before any '' transition.
    let slot = sim.step();
    let acts = sim.done(slot, Outcome::Ok, &mut NoGuards);
    assert!(matches!(acts[0], Action::Moved { event: Some(1), .. }));
    assert_eq!(sim.state(), "c");
}

#[test]
fn errors_go_to_error_state_or_halt_for_retry() {
    let spec = MachineSpec {
        error_state: Some("recover".into()),
        ..machine(
            "work",
            vec![
                state("work", vec![t("", "end")]),
                StateSpec {
                    is_final: true,
                    ..state("recover", vec![])
                },
                StateSpec {
                    is_final: true,
                    has_run: false,
                    ..state("end", vec![])
                },
            ],
        )
    };
    let mut sim = Sim::new(spec);
    let slot = sim.step();
    let acts = sim.done(slot, Outcome::Error, &mut NoGuards);
    assert_eq!(
        acts[0],
        Action::Failed {
            message: None,
            halted: false
        }
    );
    assert!(matches!(
        acts[1],
        Action::Moved {
            input: InputRef::Error,
            ..
        }
    ));
    assert_eq!(
        (sim.state(), sim.run.status()),
        ("recover", MachineStatus::Error)
    );
    let slot = sim.step();
    let acts = sim.done(slot, Outcome::Ok, &mut NoGuards);
    assert_eq!(acts, vec![Action::Ended(End::Finished)]);
    assert_eq!(
        sim.run.status(),
        MachineStatus::Error,
        "resting in a final error state"
    );

    // Without an error state the machine halts on the failing state and can retry.
    let mut sim = Sim::new(machine(
        "work",
        vec![state("work", vec![t("", "end")]), state("end", vec![])],
    ));
    let slot = sim.step();
    let acts = sim.done(slot, Outcome::Error, &mut NoGuards);
    assert_eq!(
        acts,
        vec![
            Action::Failed {
                message: None,
                halted: true
            },
            Action::Ended(End::Failed)
        ]
    );
    assert!(sim.run.halted() && sim.run.can_step());
    let slot = sim.step();
    sim.done(slot, Outcome::Ok, &mut NoGuards);
    assert_eq!(sim.state(), "end");

    // A throwing guard fails the state like its run would.
    let mut sim = Sim::new(machine(
        "a",
        vec![
            state(
                "a",
                vec![TransitionSpec {
                    guarded: true,
                    ..t("", "b")
                }],
            ),
            state("b", vec![]),
        ],
    ));
    let slot = sim.step();
    let acts = sim.done(
        slot,
        Outcome::Ok,
        &mut Table(HashMap::from([(0, Err(GuardFailed))])),
    );
    assert!(matches!(acts[0], Action::Failed { halted: true, .. }));
}

#[test]
fn limits_fail_with_messages_and_error_states_are_exempt() {
    let spec = MachineSpec {
        max_steps: Some(3),
        error_state: Some("stop".into()),
        ..machine(
            "loop",
            vec![
                state("loop", vec![t("", "loop")]),
                StateSpec {
                    is_final: true,
                    ..state("stop", vec![])
                },
            ],
        )
    };
    let mut sim = Sim::new(spec);
    for _ in 0..3 {
        let slot = sim.step();
        sim.done(slot, Outcome::Ok, &mut NoGuards);
    }
    sim.out.clear();
    assert!(sim
        .run
        .apply(Command::Step, &mut NoGuards, sim.now, &mut sim.out));
    assert_eq!(
        sim.out[0],
        Action::Failed {
            message: Some("Machine m exceeded maxSteps (3) at state loop".into()),
            halted: false
        }
    );
    assert_eq!(sim.state(), "stop");
    let slot = sim.step(); // the error state runs although the limit is reached
    assert_eq!(
        sim.done(slot, Outcome::Ok, &mut NoGuards),
        vec![Action::Ended(End::Finished)]
    );

    let mut sim = Sim::new(machine(
        "a",
        vec![StateSpec {
            max_visits: Some(1),
            ..state("a", vec![t("", "a")])
        }],
    ));
    let slot = sim.step();
    sim.done(slot, Outcome::Ok, &mut NoGuards);
    sim.out.clear();
    sim.run
        .apply(Command::Step, &mut NoGuards, sim.now, &mut sim.out);
    assert_eq!(
        sim.out[0],
        Action::Failed {
            message: Some("State a exceeded maxVisits (1)".into()),
            halted: true
        }
    );
}

#[test]
fn delays_sleep_and_events_preempt_them() {
    let a = state(
        "a",
        vec![
            TransitionSpec {
                delay_ms: Some(90_000),
                ..t("", "b")
            },
            t("hurry", "c"),
        ],
    );
    let mut sim = Sim::new(machine(
        "a",
        vec![a, state("b", vec![]), state("c", vec![])],
    ));
    let slot = sim.step();
    let acts = sim.done(slot, Outcome::Ok, &mut NoGuards);
    let Action::ArmTimer { timer, at, kind } = acts[0] else {
        panic!("expected a timer, got {acts:?}")
    };
    assert_eq!(kind, TimerKind::Delay);
    assert_eq!(at, sim.now + 90_000);
    assert_eq!(sim.run.status(), MachineStatus::Sleeping);
    assert_eq!(sim.state(), "a");

    // The delay fires: the machine moves.
    let mut fired = Sim::new(machine(
        "a",
        vec![
            state(
                "a",
                vec![TransitionSpec {
                    delay_ms: Some(5),
                    ..t("", "b")
                }],
            ),
            state("b", vec![]),
        ],
    ));
    let s = fired.step();
    fired.done(s, Outcome::Ok, &mut NoGuards);
    fired.out.clear();
    fired.run.apply(
        Command::TimerFired { timer: 1 },
        &mut NoGuards,
        1_005,
        &mut fired.out,
    );
    assert_eq!(fired.state(), "b");
    assert_eq!(fired.run.status(), MachineStatus::Ready);

    // An event that another transition takes pre-empts the sleep.
    let acts = sim.send(1, "hurry", false);
    assert_eq!(acts[0], Action::ClearTimer { timer });
    assert_eq!(sim.state(), "c");
    sim.out.clear();
    sim.run.apply(
        Command::TimerFired { timer },
        &mut NoGuards,
        sim.now + 90_000,
        &mut sim.out,
    );
    assert_eq!(sim.state(), "c", "a cleared timer does nothing");
}

#[test]
fn timeouts_abandon_the_run_and_cover_the_wait() {
    let a = StateSpec {
        timeout: Some((1_000, "late".into())),
        ..state("a", vec![t("answer", "ok")])
    };
    let mut sim = Sim::new(machine(
        "a",
        vec![a, state("late", vec![]), state("ok", vec![])],
    ));
    let slot = sim.step();
    let Action::ArmTimer { timer, at, kind } = sim.out[0] else {
        panic!("timeout armed first")
    };
    assert_eq!(kind, TimerKind::Timeout);
    assert_eq!(at, 2_000);
    sim.out.clear();
    sim.run.apply(
        Command::TimerFired { timer },
        &mut NoGuards,
        at,
        &mut sim.out,
    );
    assert!(sim.run.is_cancelled(slot), "the run sees isCancelled()");
    assert!(matches!(
        sim.out[0],
        Action::Moved {
            input: InputRef::Timeout,
            ..
        }
    ));
    assert_eq!(sim.state(), "late");
    assert!(
        sim.done(slot, Outcome::Ok, &mut NoGuards).is_empty(),
        "the late result is ignored"
    );

    // While waiting for an event.
    let a = StateSpec {
        timeout: Some((1_000, "late".into())),
        ..state("a", vec![t("answer", "ok")])
    };
    let mut sim = Sim::new(machine(
        "a",
        vec![a, state("late", vec![]), state("ok", vec![])],
    ));
    let slot = sim.step();
    let Action::ArmTimer { timer, .. } = sim.out[0] else {
        panic!()
    };
    sim.done(slot, Outcome::Ok, &mut NoGuards);
    assert_eq!(sim.run.status(), MachineStatus::WaitingForEvent);
    sim.out.clear();
    sim.run.apply(
        Command::TimerFired { timer },
        &mut NoGuards,
        2_000,
        &mut sim.out,
    );
    assert_eq!(sim.state(), "late");
}

#[test]
fn cancel_lets_the_running_state_take_its_transition_then_stops() {
    let mut sim = Sim::new(machine(
        "a",
        vec![state("a", vec![t("", "b")]), state("b", vec![t("", "a")])],
    ));
    let slot = sim.step();
    sim.out.clear();
    assert!(sim
        .run
        .apply(Command::Cancel, &mut NoGuards, sim.now, &mut sim.out));
    assert!(sim.run.is_cancelled(slot));
    // Cancelled, but the state still runs: nothing may report the machine at rest yet.
    assert_eq!(sim.run.status(), MachineStatus::Cancelled);
    assert!(!sim.run.resting());
    assert!(!sim.run.is_done());
    let acts = sim.done(slot, Outcome::Ok, &mut NoGuards);
    assert!(matches!(acts[0], Action::Moved { .. }));
    assert_eq!(
        (sim.state(), sim.run.status()),
        ("b", MachineStatus::Cancelled)
    );
    assert!(sim.run.resting(), "at rest once the transition is taken");
    assert!(sim.run.is_done());
    assert!(!sim.run.can_step());
    assert_eq!(
        sim.send(4, "x", true),
        vec![Action::DropEvent { handle: 4 }]
    );
}

#[test]
fn chosen_targets_are_validated() {
    let sim = Sim::new(machine(
        "a",
        vec![
            state("a", vec![t("", "b")]),
            state("b", vec![]),
            state("c", vec![]),
        ],
    ));
    let m = sim.run.machine();
    assert_eq!(m.resolve_choice(0, "b"), Ok(1));
    assert_eq!(
        m.resolve_choice(0, "zz").unwrap_err().to_string(),
        "State a chose transition target zz, which does not exist"
    );
    assert_eq!(
        m.resolve_choice(0, "c").unwrap_err().to_string(),
        "State a chose transition target c, which is not among its transitions"
    );
    // A state without declared transitions may go anywhere.
    assert_eq!(m.resolve_choice(2, "a"), Ok(0));
}

#[test]
fn durations() {
    let cases = [
        ("250", Some(250)),
        ("250ms", Some(250)),
        ("90s", Some(90_000)),
        ("15m", Some(900_000)),
        ("1.5h", Some(5_400_000)),
        ("30d", Some(2_592_000_000)),
        (" 2s ", Some(2_000)),
        ("", None),
        ("s", None),
        ("10 weeks", None),
        ("-5s", None),
    ];
    for (text, ms) in cases {
        assert_eq!(parse_duration(text), ms, "{text:?}");
    }
}

#[test]
fn max_steps_bounds_a_loop_through_error_states() {
    // work fails into retry, retry fails into work: only maxSteps can stop this loop.
    let spec = MachineSpec {
        max_steps: Some(4),
        ..machine(
            "work",
            vec![
                StateSpec {
                    error_state: Some("retry".into()),
                    ..state("work", vec![])
                },
                StateSpec {
                    error_state: Some("work".into()),
                    ..state("retry", vec![])
                },
            ],
        )
    };
    let mut sim = Sim::new(spec);
    let mut runs = 0;
    while sim.run.can_step() && !sim.run.halted() {
        sim.out.clear();
        sim.run
            .apply(Command::Step, &mut NoGuards, sim.now, &mut sim.out);
        if let Some(slot) = sim.out.iter().find_map(|a| match a {
            Action::Run { slot, .. } => Some(*slot),
            _ => None,
        }) {
            runs += 1;
            sim.done(slot, Outcome::Error, &mut NoGuards);
        }
        assert!(runs < 10, "the loop escaped maxSteps");
    }
    // Four runs, one exempt run of the error state after the first breach, then a halt.
    assert_eq!(runs, 5);
    assert!(sim.run.halted());
}

#[test]
fn every_timed_out_run_stays_cancelled_and_a_halt_clears_the_timeout() {
    let a = StateSpec {
        timeout: Some((10, "a".into())),
        ..state("a", vec![t("", "a")])
    };
    let mut sim = Sim::new(machine("a", vec![a]));
    let first = sim.step();
    let Action::ArmTimer { timer, .. } = sim.out[0] else {
        panic!()
    };
    sim.out.clear();
    sim.run.apply(
        Command::TimerFired { timer },
        &mut NoGuards,
        1_010,
        &mut sim.out,
    );
    let second = sim.step();
    let Action::ArmTimer { timer, .. } = sim.out[0] else {
        panic!()
    };
    sim.out.clear();
    sim.run.apply(
        Command::TimerFired { timer },
        &mut NoGuards,
        1_020,
        &mut sim.out,
    );
    assert!(sim.run.is_cancelled(first) && sim.run.is_cancelled(second));
    assert!(sim.done(first, Outcome::Ok, &mut NoGuards).is_empty());

    // A failure without an error state halts and disarms the state's timeout.
    let a = StateSpec {
        timeout: Some((10, "b".into())),
        ..state("a", vec![])
    };
    let mut sim = Sim::new(machine("a", vec![a, state("b", vec![])]));
    let slot = sim.step();
    let Action::ArmTimer { timer, .. } = sim.out[0] else {
        panic!()
    };
    let acts = sim.done(slot, Outcome::Error, &mut NoGuards);
    assert!(acts.contains(&Action::ClearTimer { timer }));
}

#[test]
fn a_queued_event_moves_a_final_state_without_run_on() {
    let a = state("a", vec![t("", "parked")]);
    let parked = StateSpec {
        is_final: true,
        has_run: false,
        ..state("parked", vec![t("restart", "again")])
    };
    let mut sim = Sim::new(machine("a", vec![a, parked, state("again", vec![])]));
    let slot = sim.step();
    assert!(
        sim.send(1, "restart", true).is_empty(),
        "queued while a runs"
    );
    let acts = sim.done(slot, Outcome::Ok, &mut NoGuards);
    assert!(
        !acts.contains(&Action::Ended(End::Finished)),
        "the queued event keeps it from resting"
    );
    assert_eq!(sim.run.status(), MachineStatus::Ready);
    let slot = sim.step();
    let acts = sim.done(slot, Outcome::Ok, &mut NoGuards);
    assert!(matches!(acts[0], Action::Moved { event: Some(1), .. }));
    assert_eq!(sim.state(), "again");
}

#[test]
fn a_snapshot_restores_the_run_in_a_new_process() {
    let a = StateSpec {
        transitions: vec![TransitionSpec {
            delay_ms: Some(1_000),
            ..t("", "b")
        }],
        ..state("a", vec![])
    };
    let spec = machine(
        "a",
        vec![
            a,
            state("b", vec![t("go", "c")]),
            StateSpec {
                is_final: true,
                ..state("c", vec![])
            },
        ],
    );
    let mut sim = Sim::new(spec.clone());
    let slot = sim.step();
    let acts = sim.done(slot, Outcome::Ok, &mut NoGuards);
    let Action::ArmTimer { timer, .. } = acts[0] else {
        panic!("a delay timer, got {acts:?}")
    };
    assert_eq!(sim.run.status(), MachineStatus::Sleeping);
    // An event the sleeping state does not handle, queued for a state that does.
    assert!(sim.send(7, "go", true).is_empty());

    // Through JSON, as the store keeps it, into a new run of a freshly compiled machine.
    let json = serde_json::to_string(&sim.run.snapshot()).unwrap();
    let snap: ramus_core::MachineSnapshot = serde_json::from_str(&json).unwrap();
    let m = Arc::new(CompiledMachine::compile(&spec).unwrap());
    let mut restored = Sim {
        run: MachineRun::restore(m, Recorder::new(2, 0, None, None), false, &snap).unwrap(),
        now: sim.now + 5_000,
        out: Vec::new(),
    };
    assert_eq!(restored.run.status(), MachineStatus::Sleeping);
    assert_eq!(restored.state(), "a");
    restored.run.apply(
        Command::TimerFired { timer },
        &mut NoGuards,
        restored.now,
        &mut restored.out,
    );
    assert_eq!(restored.state(), "b");
    let slot = restored.step();
    // b's run ends, the queued `go` fires, and c (final, no run of its own here) is reached.
    let acts = restored.done(slot, Outcome::Ok, &mut NoGuards);
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::Moved { event: Some(7), .. })),
        "the queued event survived the restore: {acts:?}"
    );
    assert_eq!(restored.state(), "c");
    let snap = restored.run.snapshot();
    assert_eq!(snap.steps, 2, "steps counted across the restore");
    assert_eq!(
        snap.visits,
        vec![("a".to_string(), 1), ("b".to_string(), 1)]
    );
}

#[test]
fn a_snapshot_of_another_machine_is_refused() {
    let mut sim = Sim::new(machine(
        "a",
        vec![state("a", vec![t("go", "b")]), state("b", vec![])],
    ));
    sim.step();
    let snap = sim.run.snapshot();
    let other =
        Arc::new(CompiledMachine::compile(&machine("x", vec![state("x", vec![])])).unwrap());
    let err =
        MachineRun::restore(other, Recorder::new(1, 0, None, None), false, &snap).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Cannot restore the machine: the snapshot names state a, which the machine does not have"
    );
}

/// Where a driver may go by itself, and for how long: plain moves only, and only while
/// nothing else can reach the run.
#[test]
fn local_steps_cover_plain_moves_only() {
    let guarded = |target: &str| TransitionSpec {
        guarded: true,
        ..t("", target)
    };
    let mut spec = machine(
        "a",
        vec![
            state(
                "a",
                vec![guarded("b"), guarded("timed"), guarded("done"), t("", "a")],
            ),
            state("b", vec![t("go", "a"), t("", "a")]),
            StateSpec {
                timeout: Some((50, "a".into())),
                ..state("timed", vec![t("", "a")])
            },
            StateSpec {
                is_final: true,
                ..state("done", vec![])
            },
        ],
    );
    spec.max_steps = Some(10);
    let m = Arc::new(CompiledMachine::compile(&spec).unwrap());
    let id = |name: &str| m.state_id(name).unwrap();
    // One entry per condition, then the fall-through; a timeout or a final state is the core's.
    assert_eq!(
        m.local_moves(id("a")),
        vec![Some(id("b")), None, None, Some(id("a"))]
    );
    assert_eq!(m.local_moves(id("b")), vec![Some(id("a"))]);
    assert_eq!(m.local_moves(id("done")), vec![None]);

    let mut run = MachineRun::new(Arc::clone(&m), Recorder::new(1, 0, None, None), false, None);
    let mut out = Vec::new();
    assert_eq!(run.local_budget(), 0, "nothing runs yet");
    run.apply(Command::Start, &mut NoGuards, 0, &mut out);
    // The first step counts against maxSteps: nine more may run by themselves.
    assert_eq!(run.local_budget(), 9);
    let slot = run.running_slot().unwrap();
    out.clear();
    run.apply(
        Command::Send {
            handle: 1,
            event: "go",
            queue: true,
        },
        &mut NoGuards,
        0,
        &mut out,
    );
    assert_eq!(
        run.local_budget(),
        0,
        "a queued event decides the next move"
    );
    out.clear();
    run.apply(
        Command::Complete {
            slot,
            outcome: Outcome::Ok,
        },
        &mut NoGuards,
        0,
        &mut out,
    );
    out.clear();
    run.apply(Command::Cancel, &mut NoGuards, 0, &mut out);
    assert_eq!(run.local_budget(), 0, "cancelled");

    // Stepping by hand (not auto): the driver reports every step.
    let mut manual = MachineRun::new(m, Recorder::new(1, 0, None, None), false, None);
    manual.apply(Command::Step, &mut NoGuards, 0, &mut out);
    assert_eq!(manual.local_budget(), 0);
}

/// Guards answered as a driver answers in a completion: the `answer`-th of the state's
/// eventless conditions held (those before it did not), or none did.
struct Answer {
    m: Arc<CompiledMachine>,
    state: u32,
    answer: i32,
}

impl Guards for Answer {
    fn holds(&mut self, transition: u32, event: Option<u64>) -> Result<bool, GuardFailed> {
        assert!(event.is_none(), "no events in these runs");
        let p = self
            .m
            .eventless_guards(self.state)
            .position(|t| t == transition)
            .expect("only eventless conditions are asked") as i32;
        Ok(p == self.answer)
    }
}

mod local {
    use super::*;
    use proptest::prelude::*;

    /// Machines of plain and not so plain states: conditions, loops, a final state, a
    /// timeout, a visit limit, a delay.
    fn spec() -> impl Strategy<Value = MachineSpec> {
        let names = ["a", "b", "c", "d", "e"];
        let transition = (
            0..5usize,
            any::<bool>(),
            prop::option::weighted(0.1, 0..3u64),
        );
        let state = (
            prop::collection::vec(transition, 0..4),
            prop::option::weighted(0.15, 1..4u32),
            prop::option::weighted(0.15, 10..100u64),
        );
        (
            prop::collection::vec(state, 5),
            0..5usize,
            prop::option::of(5..60u32),
        )
            .prop_map(move |(states, final_state, max_steps)| MachineSpec {
                name: "m".into(),
                initial: Some("a".into()),
                max_steps,
                states: states
                    .into_iter()
                    .enumerate()
                    .map(|(i, (ts, max_visits, timeout))| StateSpec {
                        name: names[i].into(),
                        has_run: true,
                        is_final: i == final_state && i != 0,
                        max_visits,
                        timeout: timeout.map(|ms| (ms, "a".into())),
                        transitions: ts
                            .into_iter()
                            .map(|(to, guarded, delay)| TransitionSpec {
                                event: String::new(),
                                target: names[to].into(),
                                guarded,
                                delay_ms: delay,
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
    }

    proptest! {
        /// Steps the face ran by itself, applied in one batch, leave the run exactly where
        /// the same completions applied one by one leave it.
        #[test]
        fn local_steps_land_where_completions_do(
            spec in spec(),
            truths in prop::collection::vec(prop::collection::vec(any::<bool>(), 4), 80),
            batch in 1..6usize,
        ) {
            let m = Arc::new(CompiledMachine::compile(&spec).unwrap());
            let new = || MachineRun::new(Arc::clone(&m), Recorder::new(1, 0, None, None), false, None);
            let (mut one, mut batched) = (new(), new());
            let mut out = Vec::new();
            one.apply(Command::Start, &mut NoGuards, 0, &mut out);
            batched.apply(Command::Start, &mut NoGuards, 0, &mut out);
            let mut pending: Vec<i32> = Vec::new();
            let mut budget = batched.local_budget();
            for truth in &truths {
                let Some(slot) = one.running_slot() else { break };
                let state = one.current();
                let guards = m.eventless_guards(state).count();
                let answer = match truth[..guards.min(4)].iter().position(|&h| h) {
                    Some(k) => k as i32,
                    None if guards == 0 => -1,
                    None => -2,
                };
                out.clear();
                let mut g = Answer { m: Arc::clone(&m), state, answer };
                one.apply(Command::Complete { slot, outcome: Outcome::Ok }, &mut g, 0, &mut out);
                if budget > 0 && m.local_move(state, answer).is_some() {
                    // The face moves by itself and reports later.
                    pending.push(answer);
                    budget -= 1;
                    if pending.len() < batch {
                        continue;
                    }
                }
                prop_assert_eq!(batched.complete_local(&pending), Ok(()));
                let local = !pending.is_empty() && pending.len() == batch;
                pending.clear();
                if !local {
                    // This step went through the core: as a completion.
                    let slot = batched.running_slot().unwrap();
                    let mut g = Answer { m: Arc::clone(&m), state, answer };
                    out.clear();
                    batched.apply(Command::Complete { slot, outcome: Outcome::Ok }, &mut g, 0, &mut out);
                }
                budget = batched.local_budget();
                prop_assert_eq!(batched.snapshot(), one.snapshot());
                prop_assert_eq!(batched.running_slot(), one.running_slot());
                prop_assert_eq!(batched.status(), one.status());
                prop_assert_eq!(batched.previous(), one.previous());
            }
        }
    }
}
