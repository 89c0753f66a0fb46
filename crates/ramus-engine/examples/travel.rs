//! What time travel costs: bytes stored per machine step (contexts as JSON Patches) against
//! storing the whole context each step, and how long `fork` and `context_at` take on a
//! 10,000-step run. Prints Markdown.
//!
//!     cargo run --release -p ramus-engine --example travel [steps]     (npm run bench:travel)
//!
//! Runs on a SQLite file in the OS temp dir, durability batched, system clock.

use std::time::Instant;

use ramus_engine::{Durability, Engine, EngineOptions, ForkOptions, StartOptions, Step, StepError};
use serde_json::{json, Value};

fn machine(name: &str, max_steps: u64) -> Value {
    json!({
        "name": name,
        "initial": "step",
        "maxSteps": max_steps + 10,
        "nodes": {
            "step": { "runner": "step", "transition": { "": [
                { "state": "step", "condition": "more" }, { "state": "done" }
            ] } },
            "done": { "final": true }
        }
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let long: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let dir = std::env::temp_dir().join(format!("ramus-travel-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("travel.sqlite");
    let engine =
        Engine::open(EngineOptions::new(db.to_str().unwrap()).durability(Durability::Batched))
            .unwrap();
    engine
        .register("step", |step: Step| async move {
            let mut ctx = step.context();
            let n = ctx["n"].as_u64().unwrap_or(0) + 1;
            ctx["n"] = json!(n);
            Ok::<_, StepError>(json!(n))
        })
        .register_condition("more", |g| {
            g.context["n"].as_u64().unwrap_or(0) < g.context["limit"].as_u64().unwrap_or(0)
        });

    // 1. A 100 KB context that changes one field per step.
    let steps = 500u64;
    engine.define(&machine("big-context", steps)).unwrap();
    let big = "x".repeat(100 * 1024);
    let run = engine
        .start(
            "big-context",
            StartOptions::new().context(json!({ "n": 0, "limit": steps, "big": big })),
        )
        .await
        .unwrap();
    run.finished().await.unwrap();
    let rows = engine.steps(run.run_id()).unwrap();
    let stored: usize = rows
        .iter()
        .map(|s| {
            s.context.as_deref().map_or(0, str::len) + s.snapshot.as_deref().map_or(0, str::len)
        })
        .sum();
    let mut whole = 0usize;
    for s in &rows {
        let ctx = engine.context_at(run.run_id(), &s.id).unwrap();
        whole += ctx.to_string().len() + s.snapshot.as_deref().map_or(0, str::len);
    }
    let per = |b: usize| b as f64 / rows.len() as f64;
    println!("## Bytes stored per machine step: a 100 KB context, one field changing per step ({} steps)\n", rows.len());
    println!("| stored as | bytes/step (context + state) | ratio |");
    println!("|---|---:|---:|");
    println!("| whole context each step | {:.0} | 1× |", per(whole));
    println!(
        "| JSON Patch from the previous step (Ramus) | {:.0} | {:.0}× smaller |\n",
        per(stored),
        whole as f64 / stored as f64
    );

    // 2. Fork and contextAt on a long run.
    engine.define(&machine("long", long)).unwrap();
    let run = engine
        .start(
            "long",
            StartOptions::new()
                .context(json!({ "n": 0, "limit": long, "note": "a small context" })),
        )
        .await
        .unwrap();
    run.finished().await.unwrap();
    engine.flush().await.unwrap();
    let rows = engine.steps(run.run_id()).unwrap();
    let last = rows
        .iter()
        .rev()
        .find(|s| s.node == "step")
        .unwrap()
        .clone();
    let middle = rows[rows.len() / 2].clone();
    let mut results = Vec::new();
    for (label, step) in [("last step", &last), ("middle step", &middle)] {
        let mut ctx_ms = Vec::new();
        let mut fork_ms = Vec::new();
        for _ in 0..7 {
            let t = Instant::now();
            let ctx = engine.context_at(run.run_id(), &step.id).unwrap();
            ctx_ms.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(ctx["n"], json!(step.seq - 1));
            let t = Instant::now();
            let fork = engine
                .fork(
                    run.run_id(),
                    ForkOptions {
                        at_step: step.id.clone(),
                        ..ForkOptions::default()
                    },
                )
                .await
                .unwrap();
            fork_ms.push(t.elapsed().as_secs_f64() * 1e3);
            fork.finished().await.unwrap();
        }
        results.push((label, step.seq, median(ctx_ms), median(fork_ms)));
    }
    println!(
        "## Fork and contextAt on a run of {} steps (median of 7)\n",
        rows.len()
    );
    println!("| at | step seq | contextAt (ms) | fork until the new run is live (ms) |");
    println!("|---|---:|---:|---:|");
    for (label, seq, ctx, fork) in results {
        println!("| {label} | {seq} | {ctx:.2} | {fork:.2} |");
    }

    // 3. updateInput on a 10,000-node DAG where 1% of the nodes use the changed key.
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = std::sync::Arc::clone(&calls);
    engine.register("leaf", move |step: Step| {
        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out = json!([step.args()["i"], step.root_input()["topic"]]);
        async move { Ok::<_, StepError>(out) }
    });
    let nodes: serde_json::Map<String, Value> = (0..long)
        .map(|i| {
            let mut n = json!({ "runner": "leaf", "args": { "i": i } });
            if i % 100 == 0 {
                n["uses"] = json!(["topic"]);
            }
            (format!("n{i}"), n)
        })
        .collect();
    engine
        .define(&json!({ "name": "wide", "nodes": nodes }))
        .unwrap();
    let t = Instant::now();
    let run = engine
        .start(
            "wide",
            StartOptions::new().input(json!({ "topic": "a", "other": 1 })),
        )
        .await
        .unwrap();
    run.finished().await.unwrap();
    let full_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut update_ms = Vec::new();
    let mut ran = 0;
    for k in 0..5 {
        calls.store(0, std::sync::atomic::Ordering::Relaxed);
        let t = Instant::now();
        let again = engine
            .update_input(run.run_id(), &json!({ "topic": format!("t{k}") }))
            .await
            .unwrap();
        again.finished().await.unwrap();
        update_ms.push(t.elapsed().as_secs_f64() * 1e3);
        ran = calls.load(std::sync::atomic::Ordering::Relaxed);
    }
    // What running those nodes costs anyway: a new run of a DAG of as many nodes, same
    // runner, same store; the rest of updateInput's time is its own.
    let small: serde_json::Map<String, Value> = (0..ran)
        .map(|i| {
            (
                format!("n{i}"),
                json!({ "runner": "leaf", "args": { "i": i } }),
            )
        })
        .collect();
    engine
        .define(&json!({ "name": "small", "nodes": small }))
        .unwrap();
    let mut fresh_ms = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let run = engine
            .start("small", StartOptions::new().input(json!({ "topic": "a" })))
            .await
            .unwrap();
        run.finished().await.unwrap();
        fresh_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (update, fresh) = (median(update_ms), median(fresh_ms));
    println!("\n## updateInput on a DAG of {long} nodes, 1% of which use the changed key (median of 5)\n");
    println!("| what | nodes run | ms |");
    println!("|---|---:|---:|");
    println!("| the first run (every node) | {long} | {full_ms:.1} |");
    println!("| updateInput until finished | {ran} | {update:.1} |");
    println!("| a new run of a {ran}-node DAG (the same runner) | {ran} | {fresh:.1} |");
    println!(
        "| updateInput's own time (the difference) | | {:.1} |",
        update - fresh
    );
    engine.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
