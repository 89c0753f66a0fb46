//! Writes a database of runs shaped like the ones the engine records, for the inspector's
//! tests and for trying the inspector by hand until durable engine runs exist.
//!
//! ```text
//! cargo run -p ramus-store --example fixture -- <path>                 # write the runs
//! cargo run -p ramus-store --example fixture -- <path> resume <run>    # play the engine's part
//! ```
//!
//! The first form prints a JSON object naming the runs it wrote (`{"dag": "<id>", …}`).
//! The second takes the oldest pending event of a machine run waiting for one, as the
//! engine would: marks it delivered, follows the stored definition's transition for it
//! from the current state, records the new state's step and, when that state is final,
//! finishes the run. It prints the new state.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use ramus_store::{
    CustomEvent, Durability, Kind, Record, Run, RunStatus, RunUpdate, SqliteStore, Step,
    StepStatus, Transition,
};
use serde_json::{json, Value};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A UUIDv7-shaped id: `at` in the first 48 bits, then a counter salted with the clock's
/// nanoseconds so that a second invocation on the same file makes new ids.
fn new_id(at: i64) -> String {
    let salt = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let at = at as u64 & 0xffff_ffff_ffff;
    format!(
        "{:08x}-{:04x}-7{:03x}-{:04x}-{:012x}",
        at >> 16,
        at & 0xffff,
        salt & 0xfff,
        0x8000 | (n >> 48 & 0x3fff),
        n & 0xffff_ffff_ffff
    )
}

fn error_json(message: &str, at: &str) -> String {
    json!({
        "name": "Error",
        "message": message,
        "stack": format!("Error: {message}\n    at {at} (agents/{at}.js:12:11)\n    at async runNode (ramus/lib/dag.js:210:19)"),
    })
    .to_string()
}

/// What every run row shares; callers set the rest.
fn run(id: &str, name: &str, kind: Kind, status: RunStatus, created_at: i64) -> Run {
    Run {
        id: id.into(),
        name: name.into(),
        kind,
        definition_name: None,
        definition_version: None,
        status,
        input: None,
        output: None,
        error: None,
        tags: vec![],
        info: None,
        trace_id: None,
        span_id: None,
        parent_run_id: None,
        parent_step_id: None,
        snapshot: None,
        created_at,
        updated_at: created_at,
        ended_at: None,
        forked_from_run_id: None,
        forked_from_step_id: None,
    }
}

/// Writes a run's steps and keeps its `seq` count.
struct Steps {
    run_id: String,
    /// The run's own step: the parent of its top-level steps.
    run_step: String,
    seq: i64,
    records: Vec<Record>,
}

impl Steps {
    fn new(run_id: &str, at: i64) -> Self {
        Steps {
            run_id: run_id.into(),
            run_step: new_id(at),
            seq: 0,
            records: vec![],
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        node: &str,
        status: StepStatus,
        input: Option<Value>,
        output: Option<Value>,
        error: Option<String>,
        started_at: i64,
        ended_at: Option<i64>,
    ) -> String {
        self.seq += 1;
        let id = new_id(started_at);
        self.records.push(Record::Step(Step {
            id: id.clone(),
            run_id: self.run_id.clone(),
            seq: self.seq,
            node: node.into(),
            parent_step_id: Some(self.run_step.clone()),
            input: input.map(|v| v.to_string()),
            output: output.map(|v| v.to_string()),
            error,
            status,
            attempt: 1,
            started_at: Some(started_at),
            ended_at,
            cached: false,
            context: None,
            snapshot: None,
            superseded_at: None,
        }));
        id
    }

    fn event(
        &mut self,
        step_id: &str,
        node: &str,
        kind: &str,
        event_type: &str,
        data: Value,
        time: i64,
    ) {
        self.records.push(Record::Event(CustomEvent {
            id: new_id(time),
            run_id: self.run_id.clone(),
            step_id: Some(step_id.into()),
            parent_step_id: Some(self.run_step.clone()),
            event_type: event_type.into(),
            source: Some(kind.into()),
            source_node: Some(node.into()),
            data: Some(data.to_string()),
            time,
        }));
    }
}

fn research_config() -> Value {
    json!({
        "name": "research",
        "tolerateFailures": true,
        "nodes": {
            "plan": { "runner": "plan" },
            "web": { "parents": ["plan"], "semaphoreKey": "search", "runner": "search", "args": { "source": "web" } },
            "news": { "parents": ["plan"], "semaphoreKey": "search", "runner": "search", "args": { "source": "news" } },
            "slow": { "parents": ["plan"], "runner": "crawl" },
            "summarize": { "parents": ["web", "news", "slow"], "tolerateParentErrors": true, "runner": "summarize" }
        }
    })
}

fn approval_config() -> Value {
    json!({
        "name": "approval-agent",
        "initial": "research",
        "maxSteps": 20,
        "nodes": {
            "research": { "runner": "research", "transition": "draft" },
            "draft": {
                "runner": "draft",
                "transition": { "": [{ "state": "draft", "condition": "lowScore" }, { "state": "review" }] }
            },
            "review": {
                "timeout": { "after": "2d", "state": "escalate" },
                "transition": { "approve": "send", "reject": "draft" }
            },
            "send": { "final": true, "runner": "send" },
            "escalate": { "final": true }
        }
    })
}

/// The finished DAG: `news` fails (and waited for a `search` semaphore slot first),
/// `slow` is cancelled, `summarize` runs anyway.
fn research_dag(store: &SqliteStore, t0: i64) -> Result<String> {
    let def = store.put_definition("research", Kind::Dag, &research_config().to_string(), t0)?;
    let id = new_id(t0);
    let mut s = Steps::new(&id, t0);
    let input = json!({ "topic": "rust engines" });
    s.add(
        "plan",
        StepStatus::Finished,
        Some(input.clone()),
        Some(json!({ "query": "rust engines" })),
        None,
        t0 + 5,
        Some(t0 + 120),
    );
    let web = s.add(
        "web",
        StepStatus::Finished,
        Some(json!({ "query": "rust engines" })),
        Some(json!(["tokio", "napi-rs", "petgraph"])),
        None,
        t0 + 125,
        Some(t0 + 900),
    );
    s.event(
        &web,
        "web",
        "dag",
        "progress",
        json!({ "pct": 50, "note": "half the pages fetched" }),
        t0 + 500,
    );
    s.add(
        "slow",
        StepStatus::Cancelled,
        Some(json!({ "query": "rust engines" })),
        None,
        None,
        t0 + 126,
        Some(t0 + 950),
    );
    // Ready when `plan` ended (t0 + 120); the `search` semaphore let it start only at +400.
    s.add(
        "news",
        StepStatus::Error,
        Some(json!({ "query": "rust engines" })),
        None,
        Some(error_json("news API returned 503", "fetchNews")),
        t0 + 400,
        Some(t0 + 650),
    );
    s.add(
        "summarize",
        StepStatus::Finished,
        Some(json!({ "web": ["tokio", "napi-rs", "petgraph"] })),
        Some(json!({ "summary": "three hits", "sources": 1 })),
        None,
        t0 + 955,
        Some(t0 + 1200),
    );
    let mut records = vec![Record::Run(Run {
        definition_name: Some(def.name),
        definition_version: Some(def.version),
        input: Some(input.to_string()),
        output: Some(json!({ "summary": "three hits", "sources": 1 }).to_string()),
        tags: vec!["demo".into(), "search".into()],
        updated_at: t0 + 1200,
        ended_at: Some(t0 + 1200),
        ..run(&id, "research", Kind::Dag, RunStatus::Finished, t0)
    })];
    records.append(&mut s.records);
    store.submit_sync(records)?;
    Ok(id)
}

/// A machine run through `path` (state, event that left the previous state), each visit
/// `gap` ms after the last.
fn machine_run(
    store: &SqliteStore,
    t0: i64,
    status: RunStatus,
    path: &[(&str, Option<&str>)],
    tags: &[&str],
) -> Result<String> {
    let def = store.put_definition(
        "approval-agent",
        Kind::Machine,
        &approval_config().to_string(),
        t0,
    )?;
    let id = new_id(t0);
    let mut s = Steps::new(&id, t0);
    let mut records = vec![];
    let mut t = t0;
    let mut previous: Option<(&str, String)> = None;
    for (i, (state, event)) in path.iter().enumerate() {
        t += if event.is_some() { 1500 } else { 40 };
        let input = json!({ "visit": i + 1 });
        let output =
            json!({ "draft": format!("text {}", i + 1), "score": 0.35 * (i as f64 + 1.0) });
        records.push(Record::Transition(Transition {
            id: new_id(t),
            run_id: id.clone(),
            step_id: previous.as_ref().map(|(_, step)| step.clone()),
            seq: i as i64 + 1,
            from_state: previous.as_ref().map(|(from, _)| from.to_string()),
            to_state: state.to_string(),
            event_type: event.map(str::to_owned),
            event_data: event.map(|_| json!({ "by": "ana@example.com" }).to_string()),
            time: t,
        }));
        let step = s.add(
            state,
            StepStatus::Finished,
            Some(input),
            Some(output),
            None,
            t + 1,
            Some(t + 30),
        );
        if *state == "draft" {
            s.event(
                &step,
                state,
                "state_machine",
                "llm:tokens",
                json!({ "prompt": 812, "completion": 140 }),
                t + 20,
            );
        }
        t += 30;
        previous = Some((state, step));
    }
    let terminal = matches!(
        status,
        RunStatus::Finished | RunStatus::Error | RunStatus::Cancelled
    );
    records.insert(
        0,
        Record::Run(Run {
            definition_name: Some(def.name),
            definition_version: Some(def.version),
            input: Some(json!({ "question": "is the engine fast?" }).to_string()),
            output: terminal
                .then(|| json!({ "sent": "text", "approvedBy": "ana@example.com" }).to_string()),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            updated_at: t,
            ended_at: terminal.then_some(t),
            ..run(&id, "approval-agent", Kind::Machine, status, t0)
        }),
    );
    records.append(&mut s.records);
    store.submit_sync(records)?;
    Ok(id)
}

/// A DAG whose `fanout` step started two child DAG runs (one failed).
fn orchestrator(store: &SqliteStore, t0: i64) -> Result<String> {
    let id = new_id(t0);
    let mut s = Steps::new(&id, t0);
    let fanout = s.add(
        "fanout",
        StepStatus::Finished,
        Some(json!("question")),
        Some(json!({ "web": "ok", "news": null })),
        None,
        t0 + 5,
        Some(t0 + 700),
    );
    s.add(
        "merge",
        StepStatus::Finished,
        Some(json!({ "fanout": { "web": "ok" } })),
        Some(json!("merged")),
        None,
        t0 + 705,
        Some(t0 + 760),
    );
    let mut records = vec![Record::Run(Run {
        output: Some(json!("merged").to_string()),
        updated_at: t0 + 760,
        ended_at: Some(t0 + 760),
        ..run(&id, "orchestrator", Kind::Dag, RunStatus::Finished, t0)
    })];
    records.append(&mut s.records);
    for (n, (source, ok)) in [("web", true), ("news", false)].into_iter().enumerate() {
        let at = t0 + 10 + n as i64;
        let child = new_id(at);
        let mut c = Steps::new(&child, at);
        c.run_step = fanout.clone();
        let (status, output, error) = if ok {
            (
                StepStatus::Finished,
                Some(json!(format!("{source} says hi"))),
                None,
            )
        } else {
            (
                StepStatus::Error,
                None,
                Some(error_json("timed out", "fetch")),
            )
        };
        c.add(
            "fetch",
            status,
            Some(json!("question")),
            output.clone(),
            error.clone(),
            at + 2,
            Some(at + 600),
        );
        records.push(Record::Run(Run {
            parent_run_id: Some(id.clone()),
            parent_step_id: Some(fanout.clone()),
            output: output.map(|o| o.to_string()),
            error,
            updated_at: at + 600,
            ended_at: Some(at + 600),
            ..run(
                &child,
                &format!("search:{source}"),
                Kind::Dag,
                if ok {
                    RunStatus::Finished
                } else {
                    RunStatus::Error
                },
                at,
            )
        }));
        records.append(&mut c.records);
    }
    store.submit_sync(records)?;
    Ok(id)
}

/// Agent output that is markup: it must show as text.
fn xss(store: &SqliteStore, t0: i64) -> Result<String> {
    const PAYLOAD: &str = "<img src=x onerror=alert(1)>";
    let id = new_id(t0);
    let mut s = Steps::new(&id, t0);
    let step = s.add(
        "render",
        StepStatus::Finished,
        Some(json!({ "html": PAYLOAD })),
        Some(json!(PAYLOAD)),
        None,
        t0 + 5,
        Some(t0 + 50),
    );
    s.event(&step, "render", "dag", "html", json!(PAYLOAD), t0 + 20);
    s.add(
        "<b>bold</b>",
        StepStatus::Error,
        Some(json!(PAYLOAD)),
        None,
        Some(error_json("<script>alert(3)</script>", "render")),
        t0 + 55,
        Some(t0 + 80),
    );
    let mut records = vec![Record::Run(Run {
        input: Some(json!({ "page": PAYLOAD }).to_string()),
        error: Some(error_json("<script>alert(3)</script>", "render")),
        tags: vec!["<i>tag</i>".into()],
        updated_at: t0 + 80,
        ended_at: Some(t0 + 80),
        ..run(&id, "xss-probe", Kind::Dag, RunStatus::Error, t0)
    })];
    records.append(&mut s.records);
    store.submit_sync(records)?;
    Ok(id)
}

/// An agent loop of 10,000 state visits, without a stored definition: the inspector must
/// draw the machine from its transitions and stay responsive.
/// A DAG of `width` parallel nodes between a root and a join, with its definition: more
/// nodes than the inspector lays out as a graph.
fn wide(store: &SqliteStore, t0: i64, width: usize) -> Result<String> {
    let mut nodes = serde_json::Map::new();
    nodes.insert("root".into(), json!({ "runner": "split" }));
    let names: Vec<String> = (0..width).map(|i| format!("item{i}")).collect();
    for name in &names {
        nodes.insert(
            name.clone(),
            json!({ "runner": "work", "parents": ["root"] }),
        );
    }
    nodes.insert("join".into(), json!({ "runner": "join", "parents": names }));
    let config = json!({ "name": "wide", "nodes": nodes });
    let def = store.put_definition("wide", Kind::Dag, &config.to_string(), t0)?;
    let id = new_id(t0);
    let mut s = Steps::new(&id, t0);
    s.add(
        "root",
        StepStatus::Finished,
        None,
        Some(json!(width)),
        None,
        t0,
        Some(t0 + 5),
    );
    for (i, name) in names.iter().enumerate() {
        let start = t0 + 5 + (i as i64 / 8) * 3;
        s.add(
            name,
            StepStatus::Finished,
            Some(json!(i)),
            Some(json!(i * 2)),
            None,
            start,
            Some(start + 3),
        );
    }
    let end = t0 + 10 + (width as i64 / 8) * 3;
    s.add(
        "join",
        StepStatus::Finished,
        None,
        Some(json!("done")),
        None,
        end,
        Some(end + 1),
    );
    let mut records = vec![Record::Run(Run {
        definition_name: Some(def.name),
        definition_version: Some(def.version),
        output: Some(json!("done").to_string()),
        tags: vec!["load".into()],
        updated_at: end + 1,
        ended_at: Some(end + 1),
        ..run(&id, "wide", Kind::Dag, RunStatus::Finished, t0)
    })];
    records.append(&mut s.records);
    store.submit_sync(records)?;
    Ok(id)
}

fn big(store: &SqliteStore, t0: i64, visits: usize) -> Result<String> {
    let id = new_id(t0);
    let mut s = Steps::new(&id, t0);
    let mut transitions = vec![];
    let states = ["think", "act", "observe"];
    let mut previous: Option<(&str, String)> = None;
    let mut t = t0;
    for i in 0..visits {
        let state = if i + 1 == visits {
            "done"
        } else {
            states[i % 3]
        };
        transitions.push(Record::Transition(Transition {
            id: new_id(t),
            run_id: id.clone(),
            step_id: previous.as_ref().map(|(_, s)| s.clone()),
            seq: i as i64 + 1,
            from_state: previous.as_ref().map(|(f, _)| f.to_string()),
            to_state: state.into(),
            event_type: None,
            event_data: None,
            time: t,
        }));
        let step = s.add(
            state,
            StepStatus::Finished,
            Some(json!({ "turn": i / 3 })),
            Some(json!({ "turn": i / 3, "tokens": i % 97 })),
            None,
            t,
            Some(t + 1 + (i % 3) as i64),
        );
        t += 1 + (i % 3) as i64;
        previous = Some((state, step));
    }
    let mut records = vec![Record::Run(Run {
        output: Some(json!({ "turns": visits / 3 }).to_string()),
        tags: vec!["load".into()],
        updated_at: t,
        ended_at: Some(t),
        ..run(&id, "agent-loop", Kind::Machine, RunStatus::Finished, t0)
    })];
    records.append(&mut transitions);
    records.append(&mut s.records);
    store.submit_sync(records)?;
    Ok(id)
}

fn write_all(path: &str) -> Result<()> {
    let store = SqliteStore::open(path, Durability::Sync)?;
    let t0 = now_ms() - 3_600_000;
    let minute = 60_000;
    let ids = json!({
        "wide": wide(&store, t0 - minute, 2_000)?,
        "big": big(&store, t0, 10_000)?,
        "dag": research_dag(&store, t0 + minute)?,
        "machine": machine_run(
            &store,
            t0 + 2 * minute,
            RunStatus::Finished,
            &[("research", None), ("draft", None), ("draft", None), ("review", None),
              ("draft", Some("reject")), ("review", None), ("send", Some("approve"))],
            &["demo"],
        )?,
        "parent": orchestrator(&store, t0 + 3 * minute)?,
        "xss": xss(&store, t0 + 4 * minute)?,
        "waiting": machine_run(
            &store,
            t0 + 5 * minute,
            RunStatus::WaitingForEvent,
            &[("research", None), ("draft", None), ("draft", None), ("review", None)],
            &["hitl"],
        )?,
    });
    store.close()?;
    println!("{ids}");
    Ok(())
}

/// What the engine does when a waiting machine's process sees a pending event.
fn resume(path: &str, run_id: &str) -> Result<()> {
    let store = SqliteStore::open(path, Durability::Sync)?;
    let run = store
        .run(run_id)?
        .ok_or_else(|| format!("no run {run_id}"))?;
    let event = store
        .pending_events(run_id)?
        .into_iter()
        .next()
        .ok_or("no pending event")?;
    let transitions = store.transitions(run_id)?;
    let steps = store.steps(run_id)?;
    let last = transitions.last().ok_or("the run has no transitions")?;
    let def_name = run
        .definition_name
        .as_deref()
        .ok_or("the run has no definition")?;
    let def = store
        .definition(def_name, run.definition_version)?
        .ok_or("the definition is missing")?;
    let config: Value = serde_json::from_str(&def.config)?;
    let node = &config["nodes"][&last.to_state];
    let target = match &node["transition"][&event.event_type] {
        Value::String(s) => s.clone(),
        v => v["state"]
            .as_str()
            .ok_or("the current state does not take this event")?
            .to_owned(),
    };
    let is_final = config["nodes"][&target]["final"].as_bool().unwrap_or(false);
    let t = now_ms();
    let step_id = new_id(t);
    let last_step = steps.last();
    let data = event.data.clone().unwrap_or_else(|| "null".into());
    let output =
        json!({ "resumedBy": event.event_type, "data": serde_json::from_str::<Value>(&data)? });
    let mut records = vec![
        Record::EventDelivered {
            id: event.id.clone(),
            at: t,
        },
        Record::Transition(Transition {
            id: new_id(t),
            run_id: run_id.into(),
            step_id: last_step.map(|s| s.id.clone()),
            seq: last.seq + 1,
            from_state: Some(last.to_state.clone()),
            to_state: target.clone(),
            event_type: Some(event.event_type.clone()),
            event_data: event.data.clone(),
            time: t,
        }),
        Record::Step(Step {
            id: step_id,
            run_id: run_id.into(),
            seq: last_step.map_or(1, |s| s.seq + 1),
            node: target.clone(),
            parent_step_id: last_step.and_then(|s| s.parent_step_id.clone()),
            input: last_step.and_then(|s| s.output.clone()),
            output: Some(output.to_string()),
            error: None,
            status: StepStatus::Finished,
            attempt: 1,
            started_at: Some(t),
            ended_at: Some(t + 1),
            cached: false,
            context: None,
            snapshot: None,
            superseded_at: None,
        }),
    ];
    records.push(Record::RunUpdate(if is_final {
        RunUpdate {
            output: Some(output.to_string()),
            ended_at: Some(t + 1),
            ..RunUpdate::status(run_id, RunStatus::Finished, t + 1)
        }
    } else {
        RunUpdate::status(run_id, RunStatus::Running, t + 1)
    }));
    store.submit_sync(records)?;
    store.close()?;
    println!("{}", json!({ "state": target, "final": is_final }));
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [path] => write_all(path),
        [path, cmd, run] if cmd == "resume" => resume(path, run),
        _ => Err("usage: fixture <path> | fixture <path> resume <run-id>".into()),
    }
}
