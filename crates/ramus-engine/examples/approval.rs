//! An agent that asks a person before it publishes, durable across processes, written
//! only in Rust.
//!
//! The agent is a state machine: `draft` (a Rust runner writes a post), `review` (waits
//! for an `approve` or `reject` event, with a reminder if nobody answers within a day),
//! and `publish`, two seconds after the approval (a durable delay: a row in `timers`, not
//! a sleeping task). Nothing has to stay running while it waits:
//!
//! ```text
//! cargo run -p ramus-engine --example approval -- start          # drafts, then exits while review waits
//! cargo run -p ramus-engine --example approval -- reject "more examples"   # optional: redraft with feedback
//! cargo run -p ramus-engine --example approval -- approve        # another process: approves, publishes 2 s later
//! cargo run -p ramus-engine --example approval -- resume         # continue what a killed process left (e.g. during the 2 s)
//! ```
//!
//! `approve` and `reject` take the newest run waiting for review, or the run id given as
//! `--run <id>`. The database is `./approval.sqlite` unless `RAMUS_DB` names another; a
//! JS process with runners registered under the same keys (`draft`, `remind`, `publish`)
//! can continue these runs, and this one can continue its.

use std::time::Duration;

use ramus_engine::{Engine, EngineOptions, Event, StartOptions, Step, StepError};
use ramus_store::{RunFilter, RunStatus};
use serde_json::{json, Value};

/// The agent, as a JS process would `define` it.
fn definition() -> Value {
    json!({
        "name": "approval",
        "initial": "draft",
        "context": { "drafts": 0 },
        "nodes": {
            "draft": { "runner": "draft", "args": { "words": 12 }, "transition": "review" },
            "review": {
                "transition": {
                    "approve": { "state": "publish", "delay": "2s" },
                    "reject": "draft"
                },
                "timeout": { "after": "1d", "state": "remind" }
            },
            "remind": { "runner": "remind", "transition": "review" },
            "publish": { "runner": "publish", "final": true }
        }
    })
}

fn register(engine: &Engine) {
    engine
        .register("draft", |step: Step| async move {
            let drafts = {
                let mut ctx = step.context();
                let n = ctx["drafts"].as_i64().unwrap_or(0) + 1;
                ctx["drafts"] = json!(n);
                n
            };
            let topic = step.root_input()["topic"].as_str().unwrap_or("something");
            let feedback = step.event().and_then(|e| e.data["feedback"].as_str());
            let text = match feedback {
                Some(f) => format!("Draft {drafts} on {topic}, now with {f}."),
                None => format!(
                    "Draft {drafts} on {topic}: why it matters, in {} words.",
                    step.args()["words"]
                ),
            };
            println!("  [draft]   {text}");
            Ok::<_, StepError>(json!(text))
        })
        .register("remind", |step: Step| async move {
            println!("  [remind]  nobody reviewed the draft in a day");
            step.emit("reminder", json!({ "draft": step.input().clone() }));
            // The reviewer sees the same draft again.
            Ok::<_, StepError>(step.input()["draft"].clone())
        })
        .register("publish", |step: Step| async move {
            let by = step
                .event()
                .map(|e| e.data["by"].clone())
                .unwrap_or(Value::Null);
            println!(
                "  [publish] published, approved by {}",
                by.as_str().unwrap_or("nobody")
            );
            Ok::<_, StepError>(json!({
                "text": step.input().clone(),
                "approvedBy": by,
                "drafts": step.context()["drafts"],
            }))
        });
}

fn database() -> String {
    std::env::var("RAMUS_DB").unwrap_or_else(|_| "./approval.sqlite".to_owned())
}

/// The run a command is about: `--run <id>`, or the newest run waiting for review.
fn target(engine: &Engine, args: &[String]) -> Result<String, Box<dyn std::error::Error>> {
    if let Some(at) = args.iter().position(|a| a == "--run") {
        return Ok(args.get(at + 1).ok_or("--run needs a run id")?.clone());
    }
    let waiting = engine.waiting(&RunFilter {
        name: Some("approval".into()),
        limit: Some(1),
        ..RunFilter::default()
    })?;
    Ok(waiting
        .first()
        .ok_or("no approval run is waiting for review: run `start` first")?
        .id
        .clone())
}

/// Continue a run here until it finishes, then print its output.
async fn run_to_end(engine: &Engine, run_id: &str) -> Result<(), Box<dyn std::error::Error>> {
    let run = engine.resume(run_id).await?;
    println!("resumed run {run_id}: it publishes 2 s after the approval");
    let out = run.finished().await?;
    println!(
        "run {run_id} finished:\n{}",
        serde_json::to_string_pretty(&out)?
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = args.first().map(String::as_str).unwrap_or("");
    let engine = Engine::open(EngineOptions::new(database()))?;
    register(&engine);
    let defined = engine.define(&definition())?;
    match command {
        "start" => {
            let topic = args
                .get(1)
                .cloned()
                .unwrap_or_else(|| "durable agents".into());
            let run = engine
                .start(
                    "approval",
                    StartOptions::new()
                        .input(json!({ "topic": topic }))
                        .tags(["example"]),
                )
                .await?;
            println!(
                "started run {} (approval v{})",
                run.run_id(),
                defined.version
            );
            // Let the draft run and the machine come to rest in `review`.
            engine.idle().await;
            engine.flush().await?;
            let status = engine.run(run.run_id())?.map(|r| r.status);
            println!(
                "status: {}; this process exits now. Next: `-- approve` or `-- reject <feedback>`",
                status.map_or("unknown", |s| s.as_str())
            );
        }
        "approve" | "reject" => {
            let run_id = target(&engine, &args)?;
            let event = if command == "approve" {
                let by = std::env::var("USER").unwrap_or_else(|_| "ann".into());
                Event::new("approve", json!({ "by": by }))
            } else {
                let feedback = args
                    .get(1)
                    .filter(|a| *a != "--run")
                    .cloned()
                    .unwrap_or_else(|| "a worked example".into());
                Event::new("reject", json!({ "feedback": feedback }))
            };
            // Nobody runs the run now: the event is stored, and taken on resume.
            let id = engine.send(&run_id, event).await?;
            println!("sent {command} ({id}) to run {run_id}");
            if command == "approve" {
                run_to_end(&engine, &run_id).await?;
            } else {
                engine.resume(&run_id).await?;
                engine.idle().await;
                println!("redrafted; the run waits for review again");
            }
        }
        "resume" => {
            let resumed = engine.resume_all(Some("approval")).await?;
            for (id, e) in &resumed.errors {
                eprintln!("could not resume {id}: {e}");
            }
            if resumed.runs.is_empty() {
                println!("nothing to resume");
            }
            for run in &resumed.runs {
                let status = engine.run(run.run_id())?.map(|r| r.status);
                if status == Some(RunStatus::WaitingForEvent) {
                    println!("run {} waits for review", run.run_id());
                    continue;
                }
                println!(
                    "continuing run {} ({})",
                    run.run_id(),
                    status.map_or("unknown", |s| s.as_str())
                );
                match tokio::time::timeout(Duration::from_secs(60), run.finished()).await {
                    Ok(out) => println!("run {} finished: {}", run.run_id(), out?),
                    Err(_) => println!("run {} still runs after a minute", run.run_id()),
                }
            }
        }
        _ => {
            eprintln!("usage: approval start [topic] | approve [--run <id>] | reject [feedback] [--run <id>] | resume");
            engine.close().await?;
            std::process::exit(2);
        }
    }
    engine.close().await?;
    Ok(())
}
