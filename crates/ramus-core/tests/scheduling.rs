//! Scheduling invariants of the DAG executor, for random DAGs and random completion orders.

use std::sync::Arc;

use proptest::prelude::*;
use ramus_core::{
    analyze, Action, Command, CompiledDag, DagRun, DagRunOptions, End, NodeSpec, NodeState,
    Outcome, Recorder, RunStatus,
};

fn run_(n: u32) -> Action {
    Action::Run { slot: n, node: n }
}

fn run_at(slot: u32, node: u32) -> Action {
    Action::Run { slot, node }
}

fn spec(name: &str, parents: &[&str]) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        parents: parents.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    }
}

/// A random DAG: node `i` may only take parents among nodes `< i` (so it is acyclic), and
/// the declaration order is shuffled so parents are not always declared first.
fn random_dag() -> impl Strategy<Value = Vec<NodeSpec>> {
    (1usize..40)
        .prop_flat_map(|n| {
            let parents = (0..n)
                .map(|i| proptest::collection::vec(0..i.max(1), 0..=i.min(3)))
                .collect::<Vec<_>>();
            (parents, Just(n)).prop_flat_map(|(parents, n)| {
                (
                    Just(parents),
                    Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
                )
            })
        })
        .prop_map(|(parents, order)| {
            order
                .iter()
                .map(|&i| {
                    let mut ps: Vec<String> = parents[i]
                        .iter()
                        .filter(|&&p| p < i)
                        .map(|p| format!("n{p}"))
                        .collect();
                    ps.dedup();
                    NodeSpec {
                        name: format!("n{i}"),
                        parents: ps,
                        ..Default::default()
                    }
                })
                .collect()
        })
}

/// Drive a run, completing in-flight nodes in the order picked by `picks`; each node's
/// output is a hash of its name and its parents' outputs.
fn drive(dag: &Arc<CompiledDag>, picks: &[usize]) -> (Vec<u64>, Vec<u32>) {
    let (outputs, order, finished) = drive_from(dag, &[], picks, usize::MAX);
    assert!(finished);
    (outputs, order)
}

/// Like `drive`, for a run restored with `done` (node, output) finished before, stopping
/// (a crash) after `stop_after` completions. Returns whether the run finished.
fn drive_from(
    dag: &Arc<CompiledDag>,
    done: &[(u32, u64)],
    picks: &[usize],
    stop_after: usize,
) -> (Vec<u64>, Vec<u32>, bool) {
    let mut run = DagRun::new(
        Arc::clone(dag),
        DagRunOptions::default(),
        Recorder::new(7, dag.len(), None, None),
    );
    let mut outputs = vec![0u64; dag.len()];
    for &(node, output) in done {
        assert!(run.restore_finished(node));
        outputs[node as usize] = output;
    }
    let mut launches = Vec::new();
    let mut in_flight: Vec<u32> = Vec::new();
    let mut order = Vec::new();
    run.apply(Command::Start, 0, &mut launches);
    let mut k = 0;
    loop {
        if order.len() >= stop_after {
            return (outputs, order, false);
        }
        for l in launches.drain(..) {
            match l {
                Action::Run { node, .. } => in_flight.push(node),
                Action::Ended(End::Finished) => {}
                other => panic!("unexpected action {other:?}"),
            }
        }
        if in_flight.is_empty() {
            break;
        }
        let pick = picks.get(k).copied().unwrap_or(0) % in_flight.len();
        k += 1;
        let node = in_flight.swap_remove(pick);
        for &p in dag.parents(node) {
            assert_eq!(
                run.node_state(p),
                NodeState::Finished,
                "a node ran before its parent"
            );
        }
        let mut h: u64 = 1469598103934665603;
        for b in dag.node_name(node).bytes() {
            h = (h ^ b as u64).wrapping_mul(1099511628211);
        }
        for &p in dag.parents(node) {
            h = (h ^ outputs[p as usize]).wrapping_mul(1099511628211);
        }
        outputs[node as usize] = h;
        order.push(node);
        run.apply(
            Command::Complete {
                slot: node,
                outcome: Outcome::Ok,
            },
            0,
            &mut launches,
        );
    }
    assert_eq!(run.status(), RunStatus::Finished);
    (outputs, order, true)
}

proptest! {
    #[test]
    fn every_node_runs_once_after_its_parents_with_the_same_output(
        specs in random_dag(),
        picks_a in proptest::collection::vec(any::<usize>(), 0..64),
        picks_b in proptest::collection::vec(any::<usize>(), 0..64),
    ) {
        let dag = Arc::new(CompiledDag::compile("random", &specs).unwrap());
        let (out_a, order_a) = drive(&dag, &picks_a);
        let (out_b, order_b) = drive(&dag, &picks_b);
        for order in [&order_a, &order_b] {
            let mut seen = vec![0; dag.len()];
            for &n in order.iter() { seen[n as usize] += 1; }
            prop_assert!(seen.iter().all(|&c| c == 1), "each node runs exactly once");
        }
        let leaves: Vec<u64> = dag.leaves().iter().map(|&l| out_a[l as usize]).collect();
        let leaves_b: Vec<u64> = dag.leaves().iter().map(|&l| out_b[l as usize]).collect();
        prop_assert_eq!(leaves, leaves_b);
    }

    #[test]
    fn a_run_restored_after_a_crash_runs_only_what_had_not_finished(
        specs in random_dag(),
        crash_after in 0usize..40,
        picks_a in proptest::collection::vec(any::<usize>(), 0..64),
        picks_b in proptest::collection::vec(any::<usize>(), 0..64),
    ) {
        let dag = Arc::new(CompiledDag::compile("random", &specs).unwrap());
        let (whole, _) = drive(&dag, &picks_a);
        let (before, ran_before, _) = drive_from(&dag, &[], &picks_a, crash_after);
        let done: Vec<(u32, u64)> = ran_before.iter().map(|&n| (n, before[n as usize])).collect();
        let (after, ran_after, finished) = drive_from(&dag, &done, &picks_b, usize::MAX);
        prop_assert!(finished);
        let mut seen = vec![0; dag.len()];
        for &n in ran_before.iter().chain(&ran_after) { seen[n as usize] += 1; }
        prop_assert!(seen.iter().all(|&c| c == 1), "each node runs once across the crash");
        for &l in dag.leaves() {
            prop_assert_eq!(after[l as usize], whole[l as usize]);
        }
    }

    #[test]
    fn cycle_detection_agrees_with_petgraph(
        n in 1usize..25,
        edges in proptest::collection::vec((0usize..25, 0usize..25), 0..60),
    ) {
        let specs: Vec<NodeSpec> = (0..n).map(|i| NodeSpec {
            name: format!("n{i}"),
            parents: edges.iter().filter(|(c, p)| *c == i && *p < n).map(|(_, p)| format!("n{p}")).collect(),
            ..Default::default()
        }).collect();
        let mut g = petgraph::graph::DiGraph::<(), ()>::new();
        let ids: Vec<_> = (0..n).map(|_| g.add_node(())).collect();
        for (c, p) in &edges {
            if *c < n && *p < n { g.add_edge(ids[*p], ids[*c], ()); }
        }
        let cyclic = petgraph::algo::is_cyclic_directed(&g);
        match analyze(&specs) {
            Ok(_) => prop_assert!(!cyclic),
            Err(e) => {
                prop_assert!(cyclic);
                let msg = e.to_string();
                prop_assert!(msg.starts_with("Cycle detected: "));
                // The reported path is a real walk over parents that closes a loop.
                let path: Vec<&str> = msg["Cycle detected: ".len()..].split(" -> ").collect();
                let last = *path.last().unwrap();
                prop_assert!(path[..path.len() - 1].contains(&last));
                for w in path.windows(2) {
                    let child = specs.iter().find(|s| s.name == w[0]).unwrap();
                    prop_assert!(child.parents.iter().any(|p| p == w[1]));
                }
            }
        }
    }
}

fn chain(n: usize) -> Arc<CompiledDag> {
    let specs: Vec<NodeSpec> = (0..n)
        .map(|i| NodeSpec {
            name: format!("n{i}"),
            parents: if i == 0 {
                vec![]
            } else {
                vec![format!("n{}", i - 1)]
            },
            ..Default::default()
        })
        .collect();
    Arc::new(CompiledDag::compile("chain", &specs).unwrap())
}

#[test]
fn failure_cancels_the_rest_unless_tolerated() {
    let specs = vec![
        NodeSpec::new("root", &[]),
        NodeSpec::new("bad", &["root"]),
        NodeSpec::new("good", &["root"]),
        NodeSpec {
            tolerate_parent_errors: true,
            ..NodeSpec::new("after", &["bad", "good"])
        },
        NodeSpec::new("strict", &["bad"]),
    ];
    let dag = Arc::new(CompiledDag::compile("d", &specs).unwrap());
    let id = |n: &str| dag.node_id(n).unwrap();

    // Not tolerated: the run fails with the failing node and nothing else starts.
    let mut run = DagRun::new(
        Arc::clone(&dag),
        DagRunOptions::default(),
        Recorder::new(1, dag.len(), None, None),
    );
    let mut l = Vec::new();
    run.apply(Command::Start, 0, &mut l);
    assert_eq!(l, vec![run_(id("root"))]);
    l.clear();
    run.apply(
        Command::Complete {
            slot: id("root"),
            outcome: Outcome::Ok,
        },
        0,
        &mut l,
    );
    assert_eq!(l, vec![run_(id("bad")), run_(id("good"))]);
    l.clear();
    run.apply(
        Command::Complete {
            slot: id("bad"),
            outcome: Outcome::Error,
        },
        0,
        &mut l,
    );
    assert_eq!(l, vec![Action::Ended(End::Failed)]);
    l.clear();
    assert_eq!(run.status(), RunStatus::Failed);
    assert_eq!(run.failed_node(), Some(id("bad")));
    assert!(
        run.is_cancelled(id("good")),
        "a running sibling sees the cancellation"
    );
    run.apply(
        Command::Complete {
            slot: id("good"),
            outcome: Outcome::Ok,
        },
        0,
        &mut l,
    );
    assert!(l.is_empty());
    assert_eq!(run.node_state(id("after")), NodeState::Cancelled);

    // Tolerated: the tolerant child runs, the strict one is cancelled, the run finishes.
    let opts = DagRunOptions {
        tolerate_failures: true,
        ..Default::default()
    };
    let mut run = DagRun::new(
        Arc::clone(&dag),
        opts,
        Recorder::new(1, dag.len(), None, None),
    );
    run.apply(Command::Start, 0, &mut l);
    l.clear();
    run.apply(
        Command::Complete {
            slot: id("root"),
            outcome: Outcome::Ok,
        },
        0,
        &mut l,
    );
    l.clear();
    run.apply(
        Command::Complete {
            slot: id("bad"),
            outcome: Outcome::Error,
        },
        0,
        &mut l,
    );
    assert!(l.is_empty());
    assert_eq!(run.node_state(id("strict")), NodeState::Cancelled);
    run.apply(
        Command::Complete {
            slot: id("good"),
            outcome: Outcome::Ok,
        },
        0,
        &mut l,
    );
    assert_eq!(l, vec![run_(id("after"))]);
    l.clear();
    run.apply(
        Command::Complete {
            slot: id("after"),
            outcome: Outcome::Ok,
        },
        0,
        &mut l,
    );
    assert_eq!(run.status(), RunStatus::Finished);
}

#[test]
fn stepwise_and_semaphores_and_cancel() {
    let dag = chain(3);
    let opts = DagRunOptions {
        manual: true,
        ..Default::default()
    };
    let mut run = DagRun::new(Arc::clone(&dag), opts, Recorder::new(1, 3, None, None));
    let mut l = Vec::new();
    run.apply(Command::Start, 0, &mut l);
    assert_eq!(l, vec![Action::Ready { slot: 0, node: 0 }]);
    assert!(
        !run.apply(Command::RunNode { node: 1 }, 0, &mut l),
        "node 1 still waits for its parent"
    );
    l.clear();
    assert!(run.apply(Command::RunNode { node: 0 }, 0, &mut l));
    assert_eq!(l, vec![run_(0)]);
    assert!(
        !run.apply(Command::RunNode { node: 0 }, 0, &mut l),
        "a running node is not ready"
    );
    l.clear();
    run.apply(
        Command::Complete {
            slot: 0,
            outcome: Outcome::Ok,
        },
        0,
        &mut l,
    );
    assert_eq!(l, vec![Action::Ready { slot: 1, node: 1 }]);
    assert!(run.apply(Command::Cancel, 0, &mut l));
    assert!(!run.apply(Command::Cancel, 0, &mut l));
    assert_eq!(run.node_state(1), NodeState::Cancelled);
    assert_eq!(run.status(), RunStatus::Cancelled);

    let specs = vec![NodeSpec {
        semaphore_key: Some("llm".into()),
        ..NodeSpec::new("a", &[])
    }];
    let dag = Arc::new(CompiledDag::compile("s", &specs).unwrap());
    let opts = DagRunOptions {
        semaphores: true,
        ..Default::default()
    };
    let mut run = DagRun::new(Arc::clone(&dag), opts, Recorder::new(1, 1, None, None));
    l.clear();
    run.apply(Command::Start, 0, &mut l);
    assert_eq!(l, vec![Action::Acquire { slot: 0, node: 0 }]);
    assert_eq!(run.node_state(0), NodeState::PendingSemaphore);
    l.clear();
    assert!(run.apply(Command::Acquired { slot: 0 }, 0, &mut l));
    assert_eq!(l, vec![run_(0)]);
}

#[test]
fn events_follow_the_run_and_nest() {
    let dag = chain(2);
    let mut rec = Recorder::new(3, 2, None, None);
    rec.set_observe(true);
    let mut run = DagRun::new(Arc::clone(&dag), DagRunOptions::default(), rec);
    let mut l = Vec::new();
    run.apply(Command::Start, 10, &mut l);
    run.apply(
        Command::Complete {
            slot: 0,
            outcome: Outcome::Ok,
        },
        11,
        &mut l,
    );
    run.apply(
        Command::Complete {
            slot: 1,
            outcome: Outcome::Ok,
        },
        12,
        &mut l,
    );
    let outer_step = run.step_id(1, 12);
    let run_id = run.recorder().run_id(12);
    let events = run.recorder().drain();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "dag:start",
            "dag:node_state",
            "dag:node_start",
            "dag:node_finish",
            "dag:node_state",
            "dag:node_state",
            "dag:node_start",
            "dag:node_finish",
            "dag:node_state",
            "dag:finish"
        ]
    );
    assert!(
        events.windows(2).all(|w| w[0].id < w[1].id),
        "event ids increase"
    );
    let run_step = events[0].step;
    assert_eq!(events[0].parent_step, None);
    assert!(events[1..9].iter().all(|e| e.parent_step == Some(run_step)));

    // A run nested in node 1's step shares the run id and hangs under that step.
    let mut inner_rec = Recorder::new(4, 2, Some(run_id), Some(outer_step));
    inner_rec.set_observe(true);
    let mut inner = DagRun::new(Arc::clone(&dag), DagRunOptions::default(), inner_rec);
    inner.apply(Command::Start, 13, &mut l);
    assert_eq!(inner.recorder().run_id(13), run_id);
    let first = &inner.recorder().drain()[0];
    assert_eq!(first.parent_step, Some(outer_step));
}

/// The binding sends states and statuses as codes and the face names them from these
/// lists: a code must be the position of its value in the list.
#[test]
fn state_and_status_codes_are_positions_in_all() {
    for (i, s) in ramus_core::NodeState::ALL.iter().enumerate() {
        assert_eq!(*s as usize, i, "{}", s.as_str());
    }
    for (i, s) in ramus_core::MachineStatus::ALL.iter().enumerate() {
        assert_eq!(s.code() as usize, i, "{}", s.as_str());
    }
}

#[test]
fn a_run_grows_and_cancels_a_branch() {
    let small = Arc::new(CompiledDag::compile("g", &[spec("a", &[]), spec("b", &[])]).unwrap());
    let mut run = DagRun::new(
        Arc::clone(&small),
        DagRunOptions::default(),
        Recorder::new(1, 2, None, None),
    );
    let mut l = Vec::new();
    run.apply(Command::Start, 0, &mut l);
    assert_eq!(l, vec![run_(0), run_(1)]);
    l.clear();
    run.apply(
        Command::Complete {
            slot: 0,
            outcome: Outcome::Ok,
        },
        0,
        &mut l,
    );
    // A graph that changes the run's nodes is refused.
    let wrong = Arc::new(CompiledDag::compile("g", &[spec("b", &[]), spec("a", &[])]).unwrap());
    assert!(run.stage(wrong).is_err());
    // c's parent finished: it starts at once; d waits for b and c.
    let big = Arc::new(
        CompiledDag::compile(
            "g",
            &[
                spec("a", &[]),
                spec("b", &[]),
                spec("c", &["a"]),
                spec("d", &["b", "c"]),
            ],
        )
        .unwrap(),
    );
    run.stage(big).unwrap();
    assert!(run.apply(Command::Grow, 0, &mut l));
    assert_eq!(l, vec![run_(2)]);
    assert_eq!(run.node_state(3), NodeState::Waiting);
    l.clear();
    // Cancelling b takes d with it; c finishes and the run ends without them.
    assert!(run.apply(Command::CancelNode { node: 1 }, 0, &mut l));
    assert_eq!(run.node_state(3), NodeState::Cancelled);
    assert!(run.is_cancelled(1));
    run.apply(
        Command::Complete {
            slot: 2,
            outcome: Outcome::Ok,
        },
        0,
        &mut l,
    );
    assert_eq!(run.status(), RunStatus::Finished);
    assert!(
        !run.apply(
            Command::Complete {
                slot: 1,
                outcome: Outcome::Ok
            },
            0,
            &mut l
        ),
        "the cancelled step's late report is ignored"
    );
}

/// A node of a live run runs again with its downstream (a diamond's middle node): the
/// running attempt is abandoned, each node gets a new slot numbered from attempt 1, the
/// other nodes keep their states, and a cancelled node comes back.
#[test]
fn a_rerun_while_the_run_goes_on_runs_only_the_downstream_again() {
    let dag = Arc::new(
        CompiledDag::compile(
            "g",
            &[
                spec("a", &[]),
                spec("b", &["a"]),
                spec("c", &["a"]),
                spec("d", &["b", "c"]),
            ],
        )
        .unwrap(),
    );
    let mut run = DagRun::new(
        Arc::clone(&dag),
        DagRunOptions::default(),
        Recorder::new(1, 2, None, None),
    );
    let ok = |slot| Command::Complete {
        slot,
        outcome: Outcome::Ok,
    };
    let mut l = Vec::new();
    run.apply(Command::Start, 0, &mut l);
    run.apply(ok(0), 0, &mut l);
    l.clear();
    // b and c run; b finishes; c is rerun while it runs.
    run.apply(ok(1), 0, &mut l);
    assert!(l.is_empty(), "d waits for c");
    let b_step = run.step_id(1, 0);
    assert!(run.apply(
        Command::Rerun {
            node: 2,
            given: false
        },
        0,
        &mut l
    ));
    let c = run.node_slot(2);
    assert_ne!(c, 2, "a new slot for c's new attempt");
    assert_eq!(
        run.slot_attempt(c),
        1,
        "a rerun's attempt is numbered from 1"
    );
    assert_eq!(l, vec![run_at(c, 2)], "only c starts again");
    assert!(
        run.is_cancelled(2),
        "the abandoned attempt sees its cancellation"
    );
    assert!(
        !run.apply(ok(2), 0, &mut l),
        "and its late report is ignored"
    );
    assert_eq!(run.node_state(1), NodeState::Finished, "b keeps its output");
    assert_eq!(run.step_id(1, 0), b_step, "and its step");
    l.clear();
    run.apply(ok(c), 0, &mut l);
    let d = run.node_slot(3);
    assert_eq!(l, vec![run_at(d, 3)], "d runs once, after c's new attempt");
    // d cancelled, then brought back with a given output: the run finishes.
    l.clear();
    assert!(run.apply(Command::CancelNode { node: 3 }, 0, &mut l));
    assert_eq!(run.status(), RunStatus::Finished, "every node settled");
    assert!(
        !run.apply(
            Command::Rerun {
                node: 3,
                given: true
            },
            0,
            &mut l
        ),
        "a run that ended is rerun through the store"
    );

    let mut run = DagRun::new(
        Arc::clone(&dag),
        DagRunOptions::default(),
        Recorder::new(1, 2, None, None),
    );
    run.apply(Command::Start, 0, &mut l);
    run.apply(ok(0), 0, &mut l);
    assert!(run.apply(Command::CancelNode { node: 1 }, 0, &mut l));
    assert_eq!(run.node_state(3), NodeState::Cancelled);
    l.clear();
    assert!(run.apply(
        Command::Rerun {
            node: 1,
            given: true
        },
        0,
        &mut l
    ));
    assert_eq!(
        run.node_state(1),
        NodeState::Finished,
        "b takes the given output"
    );
    assert!(l.is_empty(), "d still waits for c");
    run.apply(ok(2), 0, &mut l);
    let d = run.node_slot(3);
    assert_eq!(l, vec![run_at(d, 3)]);
    run.apply(ok(d), 0, &mut l);
    assert_eq!(run.status(), RunStatus::Finished);
}
