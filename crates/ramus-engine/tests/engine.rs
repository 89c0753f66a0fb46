//! The Rust engine end to end: Rust runners driving DAGs and machines on a store, timers
//! on a test clock, runs continued across a close, a crash and another engine. No Node,
//! no sleeps as synchronization: time moves when a test advances its clock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ramus_engine::{
    Durability, Engine, EngineOptions, Event, RunError, StartOptions, Step, StepError, TestClock,
};
use ramus_store::{RunFilter, RunStatus, StepStatus};
use serde_json::{json, Value};

fn memory() -> (Engine, Arc<TestClock>) {
    let clock = Arc::new(TestClock::default());
    let engine = Engine::open(EngineOptions::memory().test_clock(Arc::clone(&clock))).unwrap();
    (engine, clock)
}

fn file_engine(path: &str, clock: &Arc<TestClock>, durability: Durability) -> Engine {
    Engine::open(
        EngineOptions::new(path)
            .durability(durability)
            .test_clock(Arc::clone(clock)),
    )
    .unwrap()
}

/// Fail a test that would hang instead of waiting forever.
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("timed out")
}

#[tokio::test]
async fn a_dag_runs_rust_runners_with_inputs_args_context_and_events() {
    let (engine, _) = memory();
    engine
        .register("plan", |step: Step| async move {
            step.context()["calls"] = json!(1);
            Ok::<_, StepError>(json!({ "query": step.root_input()["topic"] }))
        })
        .register("search", |step: Step| async move {
            let source = step.args()["source"].as_str().unwrap_or("?").to_owned();
            let query = step.input()["plan"]["query"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            {
                let mut ctx = step.context();
                ctx["calls"] = json!(ctx["calls"].as_i64().unwrap_or(0) + 1);
            }
            step.emit("found", json!({ "source": source }));
            Ok::<_, StepError>(json!(format!("{source}:{query}")))
        })
        .register("merge", |step: Step| async move {
            let mut hits: Vec<String> = step
                .input()
                .as_object()
                .unwrap()
                .values()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect();
            hits.sort();
            Ok::<_, StepError>(
                json!({ "hits": hits, "keys": step.input().as_object().unwrap().len() }),
            )
        });
    let config = json!({
        "name": "research",
        "nodes": {
            "plan": { "runner": "plan" },
            "web": { "runner": "search", "args": { "source": "web" }, "parents": ["plan"] },
            "papers": { "runner": "search", "args": { "source": "papers" }, "parents": ["plan"] },
            "merge": { "runner": "merge", "parents": ["web", "papers"] }
        }
    });
    let run = engine
        .start(
            &config,
            StartOptions::new()
                .input(json!({ "topic": "wasm" }))
                .tags(["t1"]),
        )
        .await
        .unwrap();
    let out = within(run.finished()).await.unwrap();
    assert_eq!(
        out,
        json!({ "hits": ["papers:wasm", "web:wasm"], "keys": 2 })
    );

    let row = engine.run(run.run_id()).unwrap().unwrap();
    assert_eq!(row.status, RunStatus::Finished);
    assert_eq!(row.tags, vec!["t1".to_owned()]);
    assert_eq!(row.definition_name.as_deref(), Some("research"));
    let snapshot: Value = serde_json::from_str(row.snapshot.as_deref().unwrap()).unwrap();
    assert_eq!(snapshot["context"]["calls"], json!(3));
    let steps = engine.steps(run.run_id()).unwrap();
    assert_eq!(steps.len(), 4);
    assert!(steps.iter().all(|s| s.status == StepStatus::Finished));
    let merge = steps.iter().find(|s| s.node == "merge").unwrap();
    let input: Value = serde_json::from_str(merge.input.as_deref().unwrap()).unwrap();
    assert_eq!(input, json!({ "web": "web:wasm", "papers": "papers:wasm" }));
    let events = engine.events(run.run_id()).unwrap();
    let mut sources: Vec<String> = events
        .iter()
        .map(|e| {
            assert_eq!(e.event_type, "found");
            let d: Value = serde_json::from_str(e.data.as_deref().unwrap()).unwrap();
            d["source"].as_str().unwrap().to_owned()
        })
        .collect();
    sources.sort();
    assert_eq!(sources, ["papers", "web"]);
    engine.close().await.unwrap();
}

#[tokio::test]
async fn a_failing_node_fails_the_dag_and_cancels_what_still_runs() {
    let (engine, _) = memory();
    let saw_cancel = Arc::new(AtomicUsize::new(0));
    let saw = Arc::clone(&saw_cancel);
    engine
        .register("boom", |_: Step| async move {
            Err::<Value, _>(
                StepError::new("the model refused")
                    .named("RefusalError")
                    .with_field("retryable", json!(false)),
            )
        })
        .register("slow", move |step: Step| {
            let saw = Arc::clone(&saw);
            async move {
                step.cancelled().await;
                saw.fetch_add(1, Ordering::SeqCst);
                step.exit_if_cancelled()?;
                Ok::<_, StepError>(json!("never"))
            }
        });
    let run = engine
        .start(
            json!({ "name": "fails", "nodes": { "a": { "runner": "boom" }, "b": { "runner": "slow" } } }),
            StartOptions::new(),
        )
        .await
        .unwrap();
    match within(run.finished()).await {
        Err(RunError::Failed {
            name,
            message,
            error,
        }) => {
            assert_eq!(name, "RefusalError");
            assert_eq!(message, "the model refused");
            assert_eq!(error["retryable"], json!(false));
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    engine.idle().await;
    assert_eq!(saw_cancel.load(Ordering::SeqCst), 1);
    let row = engine.run(run.run_id()).unwrap().unwrap();
    assert_eq!(row.status, RunStatus::Error);
    let steps = engine.steps(run.run_id()).unwrap();
    let b = steps.iter().find(|s| s.node == "b").unwrap();
    assert_eq!(b.status, StepStatus::Cancelled);
    engine.close().await.unwrap();
}

#[tokio::test]
async fn a_runner_that_panics_fails_its_step() {
    let (engine, _) = memory();
    engine.register("panics", |_: Step| async move {
        if true {
            panic!("bad state");
        }
        Ok::<_, StepError>(Value::Null)
    });
    let run = engine
        .start(
            json!({ "name": "p", "nodes": { "a": { "runner": "panics" } } }),
            StartOptions::new(),
        )
        .await
        .unwrap();
    match within(run.finished()).await {
        Err(RunError::Failed { name, message, .. }) => {
            assert_eq!(name, "Panic");
            assert!(message.contains("bad state"), "{message}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_machine_loops_on_a_registered_condition_then_finishes() {
    let (engine, _) = memory();
    engine
        .register("work", |step: Step| async move {
            let n = {
                let mut ctx = step.context();
                let n = ctx["n"].as_i64().unwrap_or(0) + 1;
                ctx["n"] = json!(n);
                n
            };
            Ok::<_, StepError>(json!({ "n": n, "got": step.input().clone() }))
        })
        .register("finish", |step: Step| async move {
            Ok::<_, StepError>(json!({
                "last": step.input().clone(),
                "previous": step.previous_state(),
                "n": step.context()["n"],
            }))
        })
        .register_condition("more", |g| g.context["n"].as_i64().unwrap_or(0) < 3);
    let run = engine
        .start(
            json!({
                "name": "loop",
                "initial": "work",
                "context": { "n": 0 },
                "nodes": {
                    "work": {
                        "runner": "work",
                        "transition": { "": [{ "state": "work", "condition": "more" }, { "state": "done" }] }
                    },
                    "done": { "runner": "finish", "final": true }
                }
            }),
            StartOptions::new().input(json!("seed")),
        )
        .await
        .unwrap();
    let out = within(run.finished()).await.unwrap();
    assert_eq!(out["n"], json!(3));
    assert_eq!(out["previous"], json!("work"));
    assert_eq!(out["last"]["n"], json!(3));
    assert_eq!(out["last"]["got"]["got"]["got"], json!("seed"));
    let transitions = engine.transitions(run.run_id()).unwrap();
    let moves: Vec<(Option<&str>, &str)> = transitions
        .iter()
        .map(|t| (t.from_state.as_deref(), t.to_state.as_str()))
        .collect();
    assert_eq!(
        moves,
        [
            (None, "work"),
            (Some("work"), "work"),
            (Some("work"), "work"),
            (Some("work"), "done")
        ]
    );
    let steps = engine.steps(run.run_id()).unwrap();
    assert_eq!(steps[0].input.as_deref(), Some("\"seed\""));
    engine.close().await.unwrap();
}

#[tokio::test]
async fn timers_fire_in_due_order_when_the_test_clock_advances() {
    let (engine, clock) = memory();
    let start = clock.now_ms_for_tests();
    let fired: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let log = Arc::clone(&fired);
    let clock_of_runner = Arc::clone(&clock);
    engine.register("mark", move |step: Step| {
        let log = Arc::clone(&log);
        let clock = Arc::clone(&clock_of_runner);
        async move {
            let label = format!("{}.{}", step.args()["m"].as_str().unwrap(), step.node());
            log.lock()
                .unwrap()
                .push((label, clock.now_ms_for_tests() - start));
            Ok::<_, StepError>(step.input().clone())
        }
    });
    let delayed = |name: &str, ms: u64| {
        json!({
            "name": name,
            "initial": "wait",
            "nodes": {
                "wait": { "transition": { "": { "state": "fire", "delay": ms } } },
                "fire": { "runner": "mark", "args": { "m": name }, "final": true }
            }
        })
    };
    let chained = json!({
        "name": "e",
        "initial": "wait",
        "nodes": {
            "wait": { "transition": { "": { "state": "again", "delay": 400 } } },
            "again": { "runner": "mark", "args": { "m": "e" }, "transition": { "": { "state": "fire", "delay": "400ms" } } },
            "fire": { "runner": "mark", "args": { "m": "e" }, "final": true }
        }
    });
    let timeout = json!({
        "name": "d",
        "initial": "review",
        "nodes": {
            "review": { "transition": { "approve": "fire" }, "timeout": { "after": "1500ms", "state": "late" } },
            "late": { "runner": "mark", "args": { "m": "d" }, "final": true },
            "fire": { "final": true }
        }
    });
    let mut runs = Vec::new();
    for config in [
        delayed("a", 3000),
        delayed("b", 1000),
        delayed("c", 2000),
        chained,
        timeout,
    ] {
        runs.push(engine.start(config, StartOptions::new()).await.unwrap());
    }
    engine.idle().await;
    assert!(
        fired.lock().unwrap().is_empty(),
        "nothing fires before the clock moves"
    );
    engine.flush().await.unwrap();
    assert_eq!(engine.timers(runs[0].run_id()).unwrap().len(), 1);
    assert_eq!(
        engine.run(runs[1].run_id()).unwrap().unwrap().status,
        RunStatus::Sleeping
    );

    within(engine.advance(Duration::from_secs(10)))
        .await
        .unwrap();
    let got: Vec<(String, u64)> = fired.lock().unwrap().clone();
    let expected: Vec<(String, u64)> = [
        ("e.again", 400),
        ("e.fire", 800),
        ("b.fire", 1000),
        ("d.late", 1500),
        ("c.fire", 2000),
        ("a.fire", 3000),
    ]
    .iter()
    .map(|(l, t)| (l.to_string(), *t))
    .collect();
    assert_eq!(got, expected);
    assert_eq!(clock.now_ms_for_tests() - start, 10_000);
    for run in &runs {
        within(run.finished()).await.unwrap();
    }
    let steps = engine.steps(runs[4].run_id()).unwrap();
    let late = steps.iter().find(|s| s.node == "late").unwrap();
    let input: Value = serde_json::from_str(late.input.as_deref().unwrap()).unwrap();
    assert_eq!(input["name"], json!("TimeoutError"));
    engine.close().await.unwrap();
}

#[tokio::test]
async fn a_state_that_times_out_sees_its_cancellation_and_the_machine_moves_on() {
    let (engine, _) = memory();
    let late_reports = Arc::new(AtomicUsize::new(0));
    let late = Arc::clone(&late_reports);
    engine
        .register("slow", move |step: Step| {
            let late = Arc::clone(&late);
            async move {
                step.cancelled().await;
                late.fetch_add(1, Ordering::SeqCst);
                Ok::<_, StepError>(json!("too late"))
            }
        })
        .register("recover", |step: Step| async move {
            Ok::<_, StepError>(
                json!({ "after": step.input()["name"], "from": step.previous_state() }),
            )
        });
    let run = engine
        .start(
            json!({
                "name": "timeouts",
                "initial": "call",
                "nodes": {
                    "call": { "runner": "slow", "transition": "done", "timeout": { "after": "5s", "state": "recover" } },
                    "recover": { "runner": "recover", "final": true },
                    "done": { "final": true }
                }
            }),
            StartOptions::new(),
        )
        .await
        .unwrap();
    within(engine.advance(Duration::from_secs(4)))
        .await
        .unwrap();
    assert!(run.outcome().is_none());
    within(engine.advance(Duration::from_secs(1)))
        .await
        .unwrap();
    let out = within(run.finished()).await.unwrap();
    assert_eq!(out, json!({ "after": "TimeoutError", "from": "call" }));
    engine.idle().await;
    assert_eq!(late_reports.load(Ordering::SeqCst), 1);
    engine.close().await.unwrap();
}

#[tokio::test]
async fn a_runner_chooses_its_next_state_with_a_delay() {
    let (engine, _) = memory();
    engine
        .register("pick", |step: Step| async move {
            step.transition_to("b", Some(Duration::from_secs(2)));
            Ok::<_, StepError>(json!("picked"))
        })
        .register("echo", |step: Step| async move {
            Ok::<_, StepError>(json!({ "got": step.input().clone() }))
        });
    let run = engine
        .start(
            json!({
                "name": "choose",
                "initial": "start",
                "nodes": {
                    "start": { "runner": "pick", "transition": { "skip": "a", "later": "b" } },
                    "a": { "final": true },
                    "b": { "runner": "echo", "final": true }
                }
            }),
            StartOptions::new(),
        )
        .await
        .unwrap();
    engine.idle().await;
    engine.flush().await.unwrap();
    assert_eq!(
        engine.run(run.run_id()).unwrap().unwrap().status,
        RunStatus::Sleeping
    );
    within(engine.advance(Duration::from_secs(2)))
        .await
        .unwrap();
    assert_eq!(
        within(run.finished()).await.unwrap(),
        json!({ "got": "picked" })
    );
}

#[tokio::test]
async fn cancel_reaches_the_running_step() {
    let (engine, _) = memory();
    engine.register("wait", |step: Step| async move {
        step.cancelled().await;
        Err::<Value, _>(StepError::cancelled())
    });
    let run = engine
        .start(
            json!({ "name": "c", "nodes": { "a": { "runner": "wait" } } }),
            StartOptions::new(),
        )
        .await
        .unwrap();
    run.cancel();
    assert_eq!(within(run.finished()).await, Err(RunError::Cancelled));
    engine.idle().await;
    engine.flush().await.unwrap();
    let row = engine.run(run.run_id()).unwrap().unwrap();
    assert_eq!(row.status, RunStatus::Cancelled);
    assert_eq!(
        engine.steps(run.run_id()).unwrap()[0].status,
        StepStatus::Cancelled
    );
}

/// The approval agent of the example, in small: draft, wait for a person, publish.
fn approval(engine: &Engine, drafted: &Arc<AtomicUsize>) -> Value {
    let drafted = Arc::clone(drafted);
    engine
        .register("draft", move |step: Step| {
            let drafted = Arc::clone(&drafted);
            async move {
                drafted.fetch_add(1, Ordering::SeqCst);
                Ok::<_, StepError>(json!(format!(
                    "post about {}",
                    step.root_input()["topic"].as_str().unwrap()
                )))
            }
        })
        .register("note", |step: Step| async move {
            let note = step.event().map(|e| e.data.clone()).unwrap_or(Value::Null);
            step.context()["notes"].as_array_mut().unwrap().push(note);
            Ok::<_, StepError>(step.input().clone())
        })
        .register("publish", |step: Step| async move {
            let event = step.event().cloned().unwrap();
            Ok::<_, StepError>(json!({
                "text": step.input().clone(),
                "by": event.data["by"],
                "event": event.event_type,
                "notes": step.context()["notes"].clone(),
            }))
        });
    json!({
        "name": "approval",
        "initial": "draft",
        "context": { "notes": [] },
        "nodes": {
            "draft": { "runner": "draft", "transition": "review" },
            "review": { "transition": { "approve": "publish", "comment": "note" } },
            "note": { "runner": "note", "transition": "review" },
            "publish": { "runner": "publish", "final": true }
        }
    })
}

#[tokio::test]
async fn a_waiting_machine_survives_close_and_reopen_and_takes_events_sent_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("approval.sqlite");
    let path = path.to_str().unwrap();
    let clock = Arc::new(TestClock::default());
    let drafted = Arc::new(AtomicUsize::new(0));

    let engine = file_engine(path, &clock, Durability::Batched);
    let config = approval(&engine, &drafted);
    engine.define(&config).unwrap();
    let run = engine
        .start(
            "approval",
            StartOptions::new()
                .input(json!({ "topic": "rust" }))
                .tags(["blog"]),
        )
        .await
        .unwrap();
    let run_id = run.run_id().to_owned();
    engine.idle().await;
    engine.close().await.unwrap();
    assert_eq!(
        within(run.finished()).await,
        Err(RunError::Closed(run_id.clone()))
    );

    let engine = file_engine(path, &clock, Durability::Batched);
    approval(&engine, &drafted);
    let waiting = engine
        .waiting(&RunFilter {
            tags: vec!["blog".into()],
            ..RunFilter::default()
        })
        .unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].id, run_id);
    // Nobody runs it: the events are stored, in order. Queued, each waits for a state
    // that handles it (the ones after the first arrive while `note` runs).
    engine
        .send(&run_id, Event::new("comment", json!("shorter")).queued())
        .await
        .unwrap();
    engine
        .send(
            &run_id,
            Event::new("comment", json!("add a picture")).queued(),
        )
        .await
        .unwrap();
    engine
        .send(
            &run_id,
            Event::new("approve", json!({ "by": "ann" })).queued(),
        )
        .await
        .unwrap();
    assert_eq!(engine.pending_events(&run_id).unwrap().len(), 3);
    engine.close().await.unwrap();

    let engine = file_engine(path, &clock, Durability::Batched);
    approval(&engine, &drafted);
    let again = engine.resume(&run_id).await.unwrap();
    let out = within(again.finished()).await.unwrap();
    assert_eq!(
        out,
        json!({
            "text": "post about rust",
            "by": "ann",
            "event": "approve",
            "notes": ["shorter", "add a picture"],
        })
    );
    assert_eq!(drafted.load(Ordering::SeqCst), 1, "the draft ran once");
    assert!(engine.pending_events(&run_id).unwrap().is_empty());
    let moves: Vec<(Option<String>, String, Option<String>)> = engine
        .transitions(&run_id)
        .unwrap()
        .into_iter()
        .map(|t| (t.from_state, t.to_state, t.event_type))
        .collect();
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(
        moves,
        vec![
            (None, "draft".into(), None),
            (s("draft"), "review".into(), None),
            (s("review"), "note".into(), s("comment")),
            (s("note"), "review".into(), None),
            (s("review"), "note".into(), s("comment")),
            (s("note"), "review".into(), None),
            (s("review"), "publish".into(), s("approve")),
        ]
    );
    assert_eq!(
        engine.run(&run_id).unwrap().unwrap().status,
        RunStatus::Finished
    );
    engine.close().await.unwrap();
}

#[tokio::test]
async fn a_crashed_dag_resumes_without_running_its_finished_nodes_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.sqlite");
    let path = path.to_str().unwrap();
    let clock = Arc::new(TestClock::default());
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();

    let register = |engine: &Engine, hang: bool| {
        let c = Arc::clone(&calls);
        engine.register("step", move |step: Step| {
            let c = Arc::clone(&c);
            async move {
                c.lock().unwrap().push(step.node().to_owned());
                if hang && step.node() == "b" {
                    // The process dies while this step runs.
                    std::future::pending::<()>().await;
                }
                let mut parts: Vec<String> = step
                    .input()
                    .as_object()
                    .unwrap()
                    .values()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect();
                parts.push(step.node().to_owned());
                Ok::<_, StepError>(json!(parts.join("+")))
            }
        });
    };
    let config = json!({
        "name": "chain",
        "nodes": {
            "a": { "runner": "step" },
            "b": { "runner": "step", "parents": ["a"] },
            "c": { "runner": "step", "parents": ["b"] }
        }
    });

    let engine = file_engine(path, &clock, Durability::Sync);
    register(&engine, true);
    let run = engine.start(&config, StartOptions::new()).await.unwrap();
    let run_id = run.run_id().to_owned();
    within(async {
        while calls.lock().unwrap().len() < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    drop(engine); // no close: a crash

    let engine = file_engine(path, &clock, Durability::Sync);
    register(&engine, false);
    // The crashed engine's lease still holds the run; once it expires the run is free.
    let held = engine.resume(&run_id).await.unwrap_err();
    assert_eq!(held.code(), "ERR_LEASE_HELD", "{held}");
    assert!(
        held.to_string().contains("until 2026-01-01T00:00:30.000Z"),
        "{held}"
    );
    clock.advance(30_000);
    let resumed = engine.resume_all(None).await.unwrap();
    assert!(resumed.errors.is_empty(), "{:?}", resumed.errors);
    assert_eq!(resumed.runs.len(), 1);
    assert_eq!(resumed.runs[0].run_id(), run_id);
    let out = within(resumed.runs[0].finished()).await.unwrap();
    assert_eq!(out, json!("a+b+c"));
    assert_eq!(*calls.lock().unwrap(), ["a", "b", "b", "c"]);
    let steps = engine.steps(&run_id).unwrap();
    let b: Vec<_> = steps.iter().filter(|s| s.node == "b").collect();
    assert_eq!(b.len(), 2);
    assert_eq!(b[0].status, StepStatus::Cancelled);
    assert!(b[0].error.as_deref().unwrap().contains("Interrupted"));
    assert_eq!(b[1].status, StepStatus::Finished);
    assert_eq!(steps.iter().filter(|s| s.node == "a").count(), 1);
    engine.close().await.unwrap();
}

#[tokio::test]
async fn a_crashed_machine_runs_its_interrupted_state_again_with_the_context_of_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash-machine.sqlite");
    let path = path.to_str().unwrap();
    let clock = Arc::new(TestClock::default());
    let calls = Arc::new(AtomicUsize::new(0));
    let register = |engine: &Engine, hang: bool| {
        let c = Arc::clone(&calls);
        engine.register("count", move |step: Step| {
            let c = Arc::clone(&c);
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                let n = {
                    let mut ctx = step.context();
                    let n = ctx["n"].as_i64().unwrap() + 1;
                    ctx["n"] = json!(n);
                    n
                };
                if hang && n == 2 {
                    std::future::pending::<()>().await;
                }
                Ok::<_, StepError>(json!(n))
            }
        });
    };
    let config = json!({
        "name": "counter",
        "initial": "one",
        "context": { "n": 0 },
        "nodes": {
            "one": { "runner": "count", "transition": "two" },
            "two": { "runner": "count", "transition": "end" },
            "end": { "final": true }
        }
    });
    let engine = file_engine(path, &clock, Durability::Sync);
    register(&engine, true);
    let run = engine.start(&config, StartOptions::new()).await.unwrap();
    let run_id = run.run_id().to_owned();
    within(async {
        while calls.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    drop(engine);

    let engine = file_engine(path, &clock, Durability::Sync);
    register(&engine, false);
    clock.advance(30_000); // the crashed engine's lease expires
    let again = engine.resume(&run_id).await.unwrap();
    // `two` runs again from the context it started with (n = 1), not the one it left.
    assert_eq!(within(again.finished()).await.unwrap(), json!(2));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    engine.close().await.unwrap();
}

#[tokio::test]
async fn events_another_process_stores_reach_a_run_live_here() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.sqlite");
    let path = path.to_str().unwrap();
    let clock = Arc::new(TestClock::default());
    let drafted = Arc::new(AtomicUsize::new(0));
    let runner = Engine::open(
        EngineOptions::new(path)
            .test_clock(Arc::clone(&clock))
            .poll_interval(Duration::from_millis(10)),
    )
    .unwrap();
    let config = approval(&runner, &drafted);
    let run = runner
        .start(
            &config,
            StartOptions::new().input(json!({ "topic": "polls" })),
        )
        .await
        .unwrap();
    runner.idle().await;

    // Another engine on the same file does not run it: its sends are stored.
    let other = file_engine(path, &clock, Durability::Batched);
    approval(&other, &drafted);
    other
        .send(run.run_id(), Event::new("approve", json!({ "by": "bob" })))
        .await
        .unwrap();
    let out = within(run.finished()).await.unwrap();
    assert_eq!(out["by"], json!("bob"));
    assert!(runner.pending_events(run.run_id()).unwrap().is_empty());
    other.close().await.unwrap();
    runner.close().await.unwrap();
}

#[tokio::test]
async fn send_to_a_live_machine_is_logged_and_bad_targets_are_refused() {
    let (engine, _) = memory();
    let drafted = Arc::new(AtomicUsize::new(0));
    let config = approval(&engine, &drafted);
    let run = engine
        .start(&config, StartOptions::new().input(json!({ "topic": "x" })))
        .await
        .unwrap();
    engine.idle().await;
    let id = engine
        .send(run.run_id(), Event::new("approve", json!({ "by": "cy" })))
        .await
        .unwrap();
    assert_eq!(within(run.finished()).await.unwrap()["by"], json!("cy"));
    assert!(!id.is_empty());
    // The run ended: it takes no more events.
    let err = engine
        .send(run.run_id(), Event::new("approve", Value::Null))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "ERR_NOT_RESUMABLE");
    let err = engine.start("nope", StartOptions::new()).await.unwrap_err();
    assert_eq!(err.code(), "ERR_NO_DEFINITION");
    let err = engine
        .define(&json!({ "name": "x", "nodes": { "a": { "runner": "unknown" } } }))
        .unwrap_err();
    assert_eq!(err.code(), "ERR_UNKNOWN_RUNNER");
    engine.close().await.unwrap();
    let err = engine
        .start("approval", StartOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "ERR_CLOSED");
}

/// `TestClock::now_ms` through the trait, named so the tests read.
trait NowForTests {
    fn now_ms_for_tests(&self) -> u64;
}

impl NowForTests for TestClock {
    fn now_ms_for_tests(&self) -> u64 {
        ramus_engine::Clock::now_ms(self)
    }
}

#[tokio::test]
async fn concurrent_sync_runs_wait_for_their_commits_and_all_end_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sync-many.sqlite");
    let clock = Arc::new(TestClock::default());
    let engine = file_engine(path.to_str().unwrap(), &clock, Durability::Sync);
    engine.register("step", |step: Step| async move {
        let n = step.input().as_object().map_or(0, |o| o.len());
        Ok::<_, StepError>(json!(n + 1))
    });
    let config = json!({
        "name": "sync-chain",
        "nodes": {
            "a": { "runner": "step" },
            "b": { "runner": "step", "parents": ["a"] },
            "c": { "runner": "step", "parents": ["b"] }
        }
    });
    let mut runs = Vec::new();
    for _ in 0..30 {
        runs.push(engine.start(&config, StartOptions::new()).await.unwrap());
    }
    for run in &runs {
        within(run.finished()).await.unwrap();
        // Finished means committed: the row and every step are stored as ended.
        let row = engine.run(run.run_id()).unwrap().unwrap();
        assert_eq!(row.status, RunStatus::Finished);
        let steps = engine.steps(run.run_id()).unwrap();
        assert_eq!(steps.len(), 3);
        assert!(steps.iter().all(|s| s.status == StepStatus::Finished));
    }
    within(engine.idle()).await;
    engine.close().await.unwrap();
}

#[tokio::test]
async fn a_dag_timeout_is_retried_here_though_its_stored_definition_names_a_retry_on() {
    // The predicate is the JS face's: a Rust process sharing the database runs such a
    // definition as without one (a node's timeout is retried).
    let (engine, _) = memory();
    engine.register("hangs-once", |step: Step| async move {
        if step.attempt() == 1 {
            step.cancelled().await;
            return Err(StepError::cancelled());
        }
        Ok::<_, StepError>(json!(step.attempt()))
    });
    let run = engine
        .start(
            json!({
                "name": "retry-on-key",
                "nodes": { "a": { "runner": "hangs-once", "timeout": "5s",
                    "retry": { "attempts": 2, "backoff": "fixed", "initial": "1s", "retryOn": "transient" } } }
            }),
            StartOptions::new(),
        )
        .await
        .unwrap();
    within(engine.advance(Duration::from_secs(5)))
        .await
        .unwrap();
    within(engine.advance(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(within(run.finished()).await.unwrap(), json!(2));
    engine.close().await.unwrap();
}

#[tokio::test]
async fn a_node_retries_after_its_backoff_and_a_timed_out_attempt_is_cancelled() {
    let (engine, _) = memory();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&attempts);
    engine.register("flaky", move |step: Step| {
        let seen = Arc::clone(&seen);
        async move {
            seen.lock().unwrap().push(step.attempt());
            match step.attempt() {
                // The first attempt hangs until its timeout cancels it.
                1 => {
                    step.cancelled().await;
                    Err(StepError::cancelled())
                }
                2 => Err(StepError::new("flaky")),
                _ => Ok::<_, StepError>(json!("third time")),
            }
        }
    });
    engine.register("fatal", |_step: Step| async move {
        Err::<Value, _>(StepError::new("bad request").no_retry())
    });
    let config = |runner: &str| {
        json!({
            "name": format!("retry-{runner}"),
            "nodes": { "a": { "runner": runner, "timeout": "5s", "retry": { "attempts": 3, "backoff": "fixed", "initial": "1s" } } }
        })
    };
    let run = engine
        .start(config("flaky"), StartOptions::new())
        .await
        .unwrap();
    // Timeout at 5s, retry at 6s; attempt 2 fails at once, attempt 3 at 7s.
    within(engine.advance(Duration::from_secs(5)))
        .await
        .unwrap();
    within(engine.advance(Duration::from_secs(1)))
        .await
        .unwrap();
    assert!(run.outcome().is_none());
    within(engine.advance(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(within(run.finished()).await.unwrap(), json!("third time"));
    assert_eq!(*attempts.lock().unwrap(), vec![1, 2, 3]);
    let steps = engine.steps(run.run_id()).unwrap();
    let rows: Vec<_> = steps
        .iter()
        .map(|s| {
            (
                s.attempt,
                s.status,
                s.error.as_deref().map(|e| e.contains("timed out after 5s")),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (1, StepStatus::Error, Some(true)),
            (2, StepStatus::Error, Some(false)),
            (3, StepStatus::Finished, None),
        ]
    );

    // An error the runner marks as not worth retrying fails the node at once.
    let run = engine
        .start(config("fatal"), StartOptions::new())
        .await
        .unwrap();
    assert!(matches!(
        within(run.finished()).await,
        Err(RunError::Failed { .. })
    ));
    assert_eq!(engine.steps(run.run_id()).unwrap().len(), 1);
    engine.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_one_store_run_each_queued_run_once() {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("runs.sqlite");
    let path = path.to_str().unwrap();
    let clock = Arc::new(TestClock::default());
    let calls = Arc::new(Mutex::new(Vec::<(usize, i64)>::new()));
    let engines: Vec<Engine> = (0..2)
        .map(|i| {
            let e = file_engine(path, &clock, Durability::Sync);
            let calls = Arc::clone(&calls);
            e.register("double", move |step: Step| {
                let calls = Arc::clone(&calls);
                async move {
                    let n = step.root_input()["n"].as_i64().unwrap_or(0);
                    calls.lock().unwrap().push((i, n));
                    tokio::task::yield_now().await;
                    Ok::<_, StepError>(json!(n * 2))
                }
            });
            e
        })
        .collect();
    engines[0]
        .define(&json!({ "name": "double", "nodes": { "d": { "runner": "double" } } }))
        .unwrap();
    let mut ids = Vec::new();
    for n in 0..20 {
        let q = engines[0]
            .enqueue(
                "double",
                ramus_engine::Enqueue {
                    input: Some(json!({ "n": n }).to_string()),
                    idempotency_key: Some(format!("job-{n}")),
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(q.created);
        ids.push(q.run_id);
    }
    // The same key again finds the first run.
    let again = engines[1]
        .enqueue(
            "double",
            ramus_engine::Enqueue {
                idempotency_key: Some("job-3".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        (again.run_id.as_str(), again.created),
        (ids[3].as_str(), false)
    );
    let options = ramus_engine::worker::WorkOptions {
        concurrency: 4,
        poll_interval: Duration::from_millis(5),
        ..Default::default()
    };
    let workers: Vec<_> = engines
        .iter()
        .map(|e| e.work(options.clone()).unwrap())
        .collect();
    within(async {
        while !ids.iter().all(|id| {
            engines[0]
                .runs(&RunFilter::default())
                .unwrap()
                .iter()
                .any(|r| &r.id == id && r.status == RunStatus::Finished)
        }) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    for w in workers {
        w.stop().await;
    }
    let mut ns: Vec<i64> = calls.lock().unwrap().iter().map(|(_, n)| *n).collect();
    ns.sort_unstable();
    assert_eq!(ns, (0..20).collect::<Vec<_>>(), "each run's step ran once");
    for (n, id) in ids.iter().enumerate() {
        let run = engines[0].run(id).unwrap().unwrap();
        assert_eq!(
            run.output.as_deref(),
            Some((n as i64 * 2).to_string().as_str())
        );
        let steps = engines[0].steps(id).unwrap();
        assert_eq!(
            steps
                .iter()
                .filter(|s| s.status == StepStatus::Finished)
                .count(),
            1
        );
    }
    for e in &engines {
        e.close().await.unwrap();
    }
}
