//! µs per record for each durability mode, on a real file in the temp directory.
//!
//! `cargo run -p ramus-store --release --example bench [steps] [checkpoint_pages]`
//!
//! Each "step" is what a durable engine writes at a step boundary: the finished step
//! (one `Step` upsert) and the run's new status and snapshot (one `RunUpdate`), submitted
//! together. "caller" is the time the submitting thread spends inside the store's calls
//! (the cost to the engine's thread); "end to end" is the wall time until everything is
//! committed, divided by the records. Each case runs three times and the
//! fastest run is shown.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ramus_store::{
    Durability, Kind, Options, Record, Run, RunStatus, RunUpdate, SqliteStore, Step, StepStatus,
    Synchronous,
};

const T0: i64 = 1_700_000_000_000;

fn run_record(run: u32) -> Record {
    Record::Run(Run {
        id: format!("0190b6a4-1f00-7000-8000-{run:012x}"),
        name: "bench".into(),
        kind: Kind::Dag,
        definition_name: None,
        definition_version: None,
        status: RunStatus::Running,
        input: Some(r#"{"question":"what is the weather in Paris?"}"#.into()),
        output: None,
        error: None,
        tags: vec!["bench".into()],
        info: None,
        trace_id: None,
        span_id: None,
        parent_run_id: None,
        parent_step_id: None,
        snapshot: None,
        created_at: T0,
        updated_at: T0,
        ended_at: None,
        forked_from_run_id: None,
        forked_from_step_id: None,
    })
}

/// The two records of one step boundary.
fn step_records(run: u32, seq: u32) -> Vec<Record> {
    let run_id = format!("0190b6a4-1f00-7000-8000-{run:012x}");
    vec![
        Record::Step(Step {
            id: format!(
                "0190b6a4-1f00-7001-8000-{:012x}",
                (u64::from(run) << 24) | u64::from(seq)
            ),
            run_id: run_id.clone(),
            seq: i64::from(seq) + 1,
            node: "llm".into(),
            parent_step_id: None,
            input: Some(r#"{"messages":[{"role":"user","content":"hi"}]}"#.into()),
            output: Some(r#"{"role":"assistant","content":"hello there"}"#.into()),
            error: None,
            status: StepStatus::Finished,
            attempt: 1,
            started_at: Some(T0 + i64::from(seq)),
            ended_at: Some(T0 + i64::from(seq)),
            cached: false,
            context: None,
            snapshot: None,
            superseded_at: None,
        }),
        Record::RunUpdate(RunUpdate {
            snapshot: Some(format!(
                r#"{{"state":"llm","visits":{seq},"context":{{"turns":{seq}}}}}"#
            )),
            ..RunUpdate::status(run_id, RunStatus::Running, T0 + i64::from(seq))
        }),
    ]
}

struct Outcome {
    caller: Duration,
    total: Duration,
    commits: u64,
}

/// How a case submits: `pace` is the engine's own work between two steps (spun, so the
/// writer sees the gaps a real run leaves).
#[derive(Clone, Copy)]
struct Load {
    threads: u32,
    sync: bool,
    pace: Duration,
}

fn spin(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

fn measure(options: Options, steps: u32, load: Load) -> Outcome {
    let Load {
        threads,
        sync,
        pace,
    } = load;
    static CASE: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ramus-store-bench-{}-{}",
        std::process::id(),
        CASE.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bench.sqlite");
    let store = Arc::new(SqliteStore::open_with(path.to_str().unwrap(), options).unwrap());
    store
        .submit_sync((0..threads).map(run_record).collect())
        .unwrap();
    let before = store.stats().commits;
    // Records are made before the clock starts: this measures the store, not `format!`.
    let work: Vec<Vec<Vec<Record>>> = (0..threads)
        .map(|t| (0..steps / threads).map(|s| step_records(t, s)).collect())
        .collect();
    let start = Instant::now();
    let callers: Vec<_> = work
        .into_iter()
        .map(|batches| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                // Time inside the store's calls only: what the engine's thread pays.
                let mut inside = Duration::ZERO;
                for records in batches {
                    spin(pace);
                    let start = Instant::now();
                    if sync {
                        store.submit_sync(records).unwrap();
                    } else {
                        store.submit(records).unwrap();
                    }
                    inside += start.elapsed();
                }
                inside
            })
        })
        .collect();
    let caller = callers
        .into_iter()
        .map(|h| h.join().unwrap())
        .max()
        .unwrap();
    store.flush().unwrap();
    let total = start.elapsed();
    let commits = store.stats().commits - before;
    store.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    Outcome {
        caller,
        total,
        commits,
    }
}

/// The floor of a durable step: the same two writes and one commit per step on the
/// calling thread through a bare connection, with no writer thread to hand over to.
fn measure_bare(steps: u32) -> Duration {
    let dir = std::env::temp_dir().join(format!("ramus-store-bench-bare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The schema comes from opening a store once.
    let path = dir.join("bare.sqlite");
    let path = path.to_str().unwrap();
    let store = SqliteStore::open(path, Durability::Sync).unwrap();
    store.submit_sync(vec![run_record(0)]).unwrap();
    store.close().unwrap();
    drop(store);
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON")
        .unwrap();
    let run_id = "0190b6a4-1f00-7000-8000-000000000000";
    let start = Instant::now();
    for seq in 0..steps {
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        conn.prepare_cached(
            "INSERT INTO steps (id, run_id, seq, node, input, output, status, attempt, \
             started_at, ended_at) VALUES (?1, ?2, ?3, 'llm', ?4, ?5, 'finished', 1, ?6, ?6)",
        )
        .unwrap()
        .execute(rusqlite::params![
            format!("0190b6a4-1f00-7001-8000-{seq:012x}"),
            run_id,
            seq + 1,
            r#"{"messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"role":"assistant","content":"hello there"}"#,
            T0 + i64::from(seq),
        ])
        .unwrap();
        conn.prepare_cached(
            "UPDATE runs SET status = 'running', updated_at = ?2, snapshot = ?3 WHERE id = ?1",
        )
        .unwrap()
        .execute(rusqlite::params![
            run_id,
            T0 + i64::from(seq),
            format!(r#"{{"state":"llm","visits":{seq},"context":{{"turns":{seq}}}}}"#),
        ])
        .unwrap();
        conn.execute_batch("COMMIT").unwrap();
    }
    let elapsed = start.elapsed();
    drop(conn);
    let _ = std::fs::remove_dir_all(&dir);
    elapsed
}

/// What a restore reads: a run with `steps` steps, its steps, timers and pending events.
fn measure_restore(steps: u32) -> Duration {
    let dir =
        std::env::temp_dir().join(format!("ramus-store-bench-restore-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("restore.sqlite");
    let path = path.to_str().unwrap();
    {
        let store = SqliteStore::open(path, Durability::Batched).unwrap();
        store.submit(vec![run_record(0)]).unwrap();
        for seq in 0..steps {
            store.submit(step_records(0, seq)).unwrap();
        }
        store.close().unwrap();
    }
    // A fresh process would open the file first; that is part of resuming.
    let start = Instant::now();
    let store = SqliteStore::open(path, Durability::Batched).unwrap();
    let run_id = format!("0190b6a4-1f00-7000-8000-{:012x}", 0);
    let run = store.run(&run_id).unwrap().unwrap();
    let read = store.steps(&run_id).unwrap();
    store.timers(&run_id).unwrap();
    store.pending_events(&run_id).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(read.len(), steps as usize);
    assert!(run.snapshot.is_some());
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    elapsed
}

fn main() {
    let steps: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let checkpoint_pages: u32 = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(Options::default().checkpoint_pages);
    let with = |durability, synchronous| Options {
        synchronous,
        checkpoint_pages,
        ..Options::new(durability)
    };
    let normal = |d| with(d, Synchronous::Normal);
    let free = |threads, sync| Load {
        threads,
        sync,
        pace: Duration::ZERO,
    };
    let paced = |sync| Load {
        threads: 1,
        sync,
        pace: Duration::from_micros(20),
    };
    let cases: [(&str, Options, u32, Load); 8] = [
        ("off", normal(Durability::Off), steps, free(1, false)),
        (
            "batched",
            normal(Durability::Batched),
            steps,
            free(1, false),
        ),
        (
            "batched, 20 µs work per step",
            normal(Durability::Batched),
            steps,
            paced(false),
        ),
        (
            "sync, submit (no wait)",
            normal(Durability::Sync),
            steps,
            free(1, false),
        ),
        (
            "sync, submit_sync",
            normal(Durability::Sync),
            steps / 5,
            free(1, true),
        ),
        (
            "sync, submit_sync, 20 µs work",
            normal(Durability::Sync),
            steps / 5,
            paced(true),
        ),
        (
            "sync, submit_sync, 4 threads",
            normal(Durability::Sync),
            steps / 5,
            free(4, true),
        ),
        (
            "sync + fsync (FULL)",
            with(Durability::Sync, Synchronous::Full),
            steps / 50,
            free(1, true),
        ),
    ];
    println!("{steps} steps, 2 records each (step upsert + run snapshot update)");
    println!(
        "{:<32} {:>8} {:>14} {:>14} {:>14} {:>9}",
        "mode", "steps", "caller µs/rec", "e2e µs/rec", "e2e µs/step", "commits"
    );
    let restore = (0..3).map(|_| measure_restore(10_000)).min().unwrap();
    println!(
        "restore (open + run + 10 000 steps + timers + events): {:.2} ms",
        restore.as_secs_f64() * 1e3
    );
    let bare_steps = (steps / 5).max(1);
    let bare = (0..3).map(|_| measure_bare(bare_steps)).min().unwrap();
    let bare = bare.as_secs_f64() * 1e6 / f64::from(bare_steps);
    println!(
        "{:<32} {:>8} {:>14.2} {:>14.2} {:>14.2} {:>9}",
        "bare conn, inline checkpoints",
        bare_steps,
        bare / 2.0,
        bare / 2.0,
        bare,
        bare_steps
    );
    for (name, options, n, load) in cases {
        let threads = load.threads;
        let n = n.max(threads);
        // Best of three: the machine is shared, and the slow runs measure the neighbours.
        let o = (0..3)
            .map(|_| measure(options.clone(), n, load))
            .min_by_key(|o| o.total)
            .unwrap();
        let n = (n / threads * threads) as f64;
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "{:<32} {:>8} {:>14.2} {:>14.2} {:>14.2} {:>9}",
            name,
            n,
            us(o.caller) / (2.0 * n),
            us(o.total) / (2.0 * n),
            us(o.total) / n,
            o.commits
        );
    }
}
