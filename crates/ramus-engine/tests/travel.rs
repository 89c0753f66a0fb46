//! Time travel with Rust runners: a machine's context at every step, and forks of machines
//! and DAGs that take another path from a step of an ended run.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ramus_engine::{
    Engine, EngineOptions, ForkOptions, RerunOptions, StartOptions, Step, StepError, TestClock,
};
use ramus_store::{RunStatus, StepStatus};
use serde_json::{json, Value};

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("timed out")
}

fn engine(dir: &tempfile::TempDir) -> Engine {
    let path = dir.path().join("travel.sqlite");
    Engine::open(
        EngineOptions::new(path.to_str().unwrap()).test_clock(Arc::new(TestClock::default())),
    )
    .unwrap()
}

/// A counter machine: `work` adds `step` to `n` until `n` reaches 5; then `done`, unless
/// the context says `big`, then `big`.
fn counter(engine: &Engine, seen: Arc<Mutex<Vec<Value>>>) {
    engine
        .register("work", move |step: Step| {
            let seen = Arc::clone(&seen);
            async move {
                let mut ctx = step.context();
                seen.lock().unwrap().push(ctx.clone());
                let n = ctx["n"].as_i64().unwrap_or(0) + ctx["step"].as_i64().unwrap_or(1);
                ctx["n"] = json!(n);
                ctx["log"].as_array_mut().unwrap().push(json!(n));
                Ok::<_, StepError>(json!(n))
            }
        })
        .register("end", |step: Step| async move {
            Ok::<_, StepError>(json!({ "n": step.context()["n"], "state": step.node() }))
        })
        .register_condition("more", |g| g.context["n"].as_i64().unwrap_or(0) < 5)
        .register_condition("big", |g| g.context["big"] == json!(true));
}

const COUNTER: &str = r#"{
    "name": "counter",
    "initial": "work",
    "context": { "n": 0, "step": 1, "log": [], "pad": "" },
    "nodes": {
        "work": { "runner": "work", "transition": { "": [
            { "state": "work", "condition": "more" },
            { "state": "big", "condition": "big" },
            { "state": "done" }
        ] } },
        "done": { "runner": "end", "final": true },
        "big": { "runner": "end", "final": true }
    }
}"#;

#[tokio::test]
async fn the_context_at_every_step_is_what_the_step_saw() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&dir);
    let seen = Arc::new(Mutex::new(Vec::new()));
    counter(&engine, Arc::clone(&seen));
    let config: Value = serde_json::from_str(COUNTER).unwrap();
    let run = engine
        .start(
            &config,
            StartOptions::new()
                .context(json!({ "n": 0, "step": 1, "log": [], "pad": "x".repeat(5000) })),
        )
        .await
        .unwrap();
    within(run.finished()).await.unwrap();
    let steps = engine.steps(run.run_id()).unwrap();
    let seen = seen.lock().unwrap().clone();
    let works: Vec<_> = steps.iter().filter(|s| s.node == "work").collect();
    assert_eq!(works.len(), seen.len());
    for (step, saw) in works.iter().zip(&seen) {
        assert_eq!(
            &engine.context_at(run.run_id(), &step.id).unwrap(),
            saw,
            "step {}",
            step.seq
        );
    }
    // Each patch after the first is a few bytes; the first holds the 5 KB context.
    let bytes: Vec<usize> = steps
        .iter()
        .map(|s| s.context.as_deref().map_or(0, str::len))
        .collect();
    assert!(bytes[0] > 5000, "{bytes:?}");
    assert!(bytes[1..].iter().all(|&b| b < 200), "{bytes:?}");
    let err = engine.context_at(run.run_id(), "nope").unwrap_err();
    assert_eq!(err.code(), "ERR_NO_STEP");
    engine.close().await.unwrap();
}

#[tokio::test]
async fn a_machine_forked_with_another_context_takes_another_path() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&dir);
    let seen = Arc::new(Mutex::new(Vec::new()));
    counter(&engine, Arc::clone(&seen));
    let config: Value = serde_json::from_str(COUNTER).unwrap();
    let run = engine.start(&config, StartOptions::new()).await.unwrap();
    assert_eq!(
        within(run.finished()).await.unwrap(),
        json!({ "n": 5, "state": "done" })
    );
    let steps = engine.steps(run.run_id()).unwrap();
    let third = &steps[2];
    assert_eq!(third.node, "work");
    // A small context changing each step is stored whole again now and then: each step's
    // context is rebuilt from the last whole one before it.
    let wholes = steps
        .iter()
        .filter(|s| {
            s.context
                .as_deref()
                .is_some_and(|c| c.starts_with(ramus_store::WHOLE_CONTEXT))
        })
        .count();
    assert!(wholes > 1, "{wholes} whole contexts");
    let saw = seen.lock().unwrap().clone();
    for (step, ctx) in steps.iter().filter(|s| s.node == "work").zip(&saw) {
        assert_eq!(
            &engine.context_at(run.run_id(), &step.id).unwrap(),
            ctx,
            "step {}",
            step.seq
        );
    }

    // As it was: the same path again from the third step.
    let again = engine
        .fork(
            run.run_id(),
            ForkOptions {
                at_step: third.id.clone(),
                ..ForkOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        within(again.finished()).await.unwrap(),
        json!({ "n": 5, "state": "done" })
    );

    // With an edited context: bigger steps and the `big` ending.
    let mut ctx = engine.context_at(run.run_id(), &third.id).unwrap();
    assert_eq!(ctx["n"], json!(2));
    ctx["step"] = json!(10);
    ctx["big"] = json!(true);
    let fork = engine
        .fork(
            run.run_id(),
            ForkOptions {
                at_step: third.id.clone(),
                context: Some(ctx.to_string()),
                ..ForkOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        within(fork.finished()).await.unwrap(),
        json!({ "n": 12, "state": "big" })
    );
    let row = engine.run(fork.run_id()).unwrap().unwrap();
    assert_eq!(row.forked_from_run_id.as_deref(), Some(run.run_id()));
    assert_eq!(row.forked_from_step_id.as_deref(), Some(third.id.as_str()));
    assert_eq!(row.status, RunStatus::Finished);
    let fork_steps: Vec<String> = engine
        .steps(fork.run_id())
        .unwrap()
        .into_iter()
        .map(|s| s.node)
        .collect();
    assert_eq!(fork_steps, ["work", "big"]);
    let log = engine
        .context_at(fork.run_id(), &engine.steps(fork.run_id()).unwrap()[1].id)
        .unwrap();
    assert_eq!(log["log"], json!([1, 2, 12]));
    // The old run is as it was.
    assert_eq!(engine.steps(run.run_id()).unwrap(), steps);
    engine.close().await.unwrap();
}

#[tokio::test]
async fn a_machine_forked_with_an_output_takes_it_for_that_step_instead_of_running() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&dir);
    let seen = Arc::new(Mutex::new(Vec::new()));
    counter(&engine, Arc::clone(&seen));
    let config: Value = serde_json::from_str(COUNTER).unwrap();
    let run = engine.start(&config, StartOptions::new()).await.unwrap();
    within(run.finished()).await.unwrap();
    let steps = engine.steps(run.run_id()).unwrap();
    let done = steps.iter().find(|s| s.node == "done").unwrap();
    let calls = seen.lock().unwrap().len();
    let fork = engine
        .fork(
            run.run_id(),
            ForkOptions {
                at_step: done.id.clone(),
                output: Some(r#"{"n":99,"state":"given"}"#.into()),
                ..ForkOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        within(fork.finished()).await.unwrap(),
        json!({ "n": 99, "state": "given" })
    );
    assert_eq!(seen.lock().unwrap().len(), calls, "no work step ran");
    let fork_steps = engine.steps(fork.run_id()).unwrap();
    assert_eq!(fork_steps.len(), 1);
    assert_eq!(fork_steps[0].node, "done");
    assert_eq!(
        fork_steps[0].output.as_deref(),
        Some(r#"{"n":99,"state":"given"}"#)
    );
    engine.close().await.unwrap();
}

#[tokio::test]
async fn a_dag_fork_keeps_the_outputs_before_the_step_and_can_set_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&dir);
    let (calls, _) = diamond(&engine);
    let node = |name: &str, parents: &[&str]| json!({ "runner": "node", "args": { "name": name }, "parents": parents });
    let config = json!({
        "name": "chain",
        "nodes": { "a": node("a", &[]), "b": node("b", &["a"]), "c": node("c", &["b"]) }
    });
    let run = engine.start(&config, StartOptions::new()).await.unwrap();
    assert_eq!(within(run.finished()).await.unwrap(), json!("c(b(a()))"));
    let steps = engine.steps(run.run_id()).unwrap();
    calls.lock().unwrap().clear();

    let fork = engine
        .fork(
            run.run_id(),
            ForkOptions {
                at_step: steps[1].id.clone(),
                ..ForkOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(within(fork.finished()).await.unwrap(), json!("c(b(a()))"));
    assert_eq!(*calls.lock().unwrap(), ["b", "c"], "a kept its output");
    calls.lock().unwrap().clear();

    let edited = engine
        .fork(
            run.run_id(),
            ForkOptions {
                at_step: steps[1].id.clone(),
                output: Some(json!("B!").to_string()),
                ..ForkOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(within(edited.finished()).await.unwrap(), json!("c(B!)"));
    assert_eq!(*calls.lock().unwrap(), ["c"]);
    let rows = engine.steps(edited.run_id()).unwrap();
    assert!(rows.iter().all(|s| s.status == StepStatus::Finished));
    assert_eq!(
        rows.iter().map(|s| s.node.as_str()).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );

    let err = engine
        .fork(
            run.run_id(),
            ForkOptions {
                at_step: "nope".into(),
                ..ForkOptions::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "ERR_NO_STEP", "{err}");
    engine.close().await.unwrap();
}

/// A diamond whose nodes log their runs; `c` reads the root input's `topic`.
fn diamond(engine: &Engine) -> (Arc<Mutex<Vec<String>>>, Value) {
    let calls = Arc::new(Mutex::new(Vec::<String>::new()));
    let c = Arc::clone(&calls);
    engine.register("node", move |step: Step| {
        let c = Arc::clone(&c);
        async move {
            let name = step.args()["name"].as_str().unwrap().to_owned();
            c.lock().unwrap().push(name.clone());
            let mut parts: Vec<String> = step
                .input()
                .as_object()
                .map(|o| {
                    o.values()
                        .map(|v| v.as_str().unwrap_or("").to_owned())
                        .collect()
                })
                .unwrap_or_default();
            parts.sort();
            if let Some(t) = step.root_input()["topic"].as_str().filter(|_| name == "c") {
                parts.push(t.to_owned());
            }
            Ok::<_, StepError>(json!(format!("{name}({})", parts.join(","))))
        }
    });
    let node = |name: &str, parents: &[&str]| json!({ "runner": "node", "args": { "name": name }, "parents": parents });
    let mut c = node("c", &["a"]);
    c["uses"] = json!(["topic"]);
    let config = json!({
        "name": "diamond",
        "nodes": { "a": node("a", &[]), "b": node("b", &["a"]), "c": c, "d": node("d", &["b", "c"]) }
    });
    (calls, config)
}

#[tokio::test]
async fn rerun_and_update_input_run_again_only_what_depends_on_the_change() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&dir);
    let (calls, config) = diamond(&engine);
    let run = engine
        .start(
            &config,
            StartOptions::new().input(json!({ "topic": "wasm", "other": 1 })),
        )
        .await
        .unwrap();
    assert_eq!(
        within(run.finished()).await.unwrap(),
        json!("d(b(a()),c(a(),wasm))")
    );
    let id = run.run_id().to_owned();
    calls.lock().unwrap().clear();

    let again = engine
        .rerun(
            &id,
            RerunOptions {
                node: "b".into(),
                output: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(again.run_id(), id, "a rerun continues the same run");
    assert_eq!(
        within(again.finished()).await.unwrap(),
        json!("d(b(a()),c(a(),wasm))")
    );
    assert_eq!(*calls.lock().unwrap(), ["b", "d"]);
    calls.lock().unwrap().clear();

    let edited = engine
        .rerun(
            &id,
            RerunOptions {
                node: "c".into(),
                output: Some(json!("C").to_string()),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        within(edited.finished()).await.unwrap(),
        json!("d(C,b(a()))")
    );
    assert_eq!(*calls.lock().unwrap(), ["d"]);
    calls.lock().unwrap().clear();

    // Only `c` uses `topic`; `other` is used by nobody.
    let updated = engine
        .update_input(&id, &json!({ "topic": "rust", "other": 1 }))
        .await
        .unwrap();
    assert_eq!(
        within(updated.finished()).await.unwrap(),
        json!("d(b(a()),c(a(),rust))")
    );
    assert_eq!(*calls.lock().unwrap(), ["c", "d"]);
    let row = engine.run(&id).unwrap().unwrap();
    assert_eq!(row.status, RunStatus::Finished);
    assert_eq!(
        serde_json::from_str::<Value>(row.input.as_deref().unwrap()).unwrap(),
        json!({ "topic": "rust", "other": 1 })
    );
    // Every attempt is kept; only the latest of each node is current.
    let steps = engine.steps(&id).unwrap();
    let current: Vec<&str> = steps
        .iter()
        .filter(|s| s.superseded_at.is_none())
        .map(|s| s.node.as_str())
        .collect();
    assert_eq!(current, ["a", "b", "c", "d"]);
    assert_eq!(steps.iter().filter(|s| s.node == "d").count(), 4);

    let err = engine
        .rerun(
            &id,
            RerunOptions {
                node: "bb".into(),
                output: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("rerun: run {id} (diamond) has no node 'bb' (did you mean 'b'?)")
    );
    engine.close().await.unwrap();
}

#[tokio::test]
async fn a_run_live_in_this_engine_is_not_rerun_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&dir);
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = Arc::clone(&gate);
    engine.register("wait", move |_step: Step| {
        let g = Arc::clone(&g);
        async move {
            g.notified().await;
            Ok::<_, StepError>(json!("done"))
        }
    });
    let config = json!({ "name": "gated", "nodes": { "a": { "runner": "wait" } } });
    let run = engine.start(&config, StartOptions::new()).await.unwrap();
    let err = engine
        .rerun(
            run.run_id(),
            RerunOptions {
                node: "a".into(),
                output: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "ERR_NOT_RESUMABLE");
    assert!(
        err.to_string().contains("is running in this engine"),
        "{err}"
    );
    gate.notify_one();
    assert_eq!(within(run.finished()).await.unwrap(), json!("done"));
    let again = engine
        .rerun(
            run.run_id(),
            RerunOptions {
                node: "a".into(),
                output: Some("\"set\"".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(within(again.finished()).await.unwrap(), json!("set"));
    engine.close().await.unwrap();
}

#[tokio::test]
async fn a_cancelled_branch_ends_while_the_rest_finishes_and_a_rerun_brings_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&dir);
    let slow_calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Arc::new(tokio::sync::Notify::new());
    let (s, st) = (Arc::clone(&slow_calls), Arc::clone(&started));
    engine
        .register("slow", move |step: Step| {
            let first = s.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
            let st = Arc::clone(&st);
            async move {
                if first {
                    st.notify_one();
                    while !step.is_cancelled() {
                        tokio::task::yield_now().await;
                    }
                    return Err(StepError::cancelled());
                }
                Ok::<_, StepError>(json!("slow"))
            }
        })
        .register("fast", |_step: Step| async move {
            Ok::<_, StepError>(json!("fast"))
        })
        .register("join", |step: Step| async move {
            Ok::<_, StepError>(json!(step.input().as_object().unwrap().len()))
        });
    let config = json!({
        "name": "branches",
        "nodes": {
            "slow": { "runner": "slow" },
            "after_slow": { "runner": "join", "parents": ["slow"] },
            "fast": { "runner": "fast" },
            "after_fast": { "runner": "join", "parents": ["fast"] }
        }
    });
    let run = engine.start(&config, StartOptions::new()).await.unwrap();
    within(started.notified()).await;
    run.cancel_node("slow");
    assert_eq!(
        within(run.finished()).await.unwrap(),
        json!({ "after_fast": 1 })
    );
    let status = |node: &str| {
        engine
            .steps(run.run_id())
            .unwrap()
            .into_iter()
            .filter(|s| s.node == node)
            .map(|s| s.status)
            .collect::<Vec<_>>()
    };
    assert_eq!(status("slow"), [StepStatus::Cancelled]);
    assert_eq!(
        status("after_slow"),
        [StepStatus::Cancelled],
        "its cancel is recorded"
    );
    assert_eq!(status("after_fast"), [StepStatus::Finished]);

    // A rerun of the other branch leaves the cancelled one cancelled.
    let other = engine
        .rerun(
            run.run_id(),
            RerunOptions {
                node: "after_fast".into(),
                output: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        within(other.finished()).await.unwrap(),
        json!({ "after_fast": 1 })
    );
    assert_eq!(slow_calls.load(std::sync::atomic::Ordering::SeqCst), 1);

    let back = engine
        .rerun(
            run.run_id(),
            RerunOptions {
                node: "slow".into(),
                output: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        within(back.finished()).await.unwrap(),
        json!({ "after_fast": 1, "after_slow": 1 })
    );
    assert_eq!(
        status("fast"),
        [StepStatus::Finished],
        "the other branch did not run again"
    );
    engine.close().await.unwrap();
}
