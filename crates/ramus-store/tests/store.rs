//! The store against real SQLite files in a temporary directory.

use std::sync::Arc;
use std::time::Duration;

use ramus_store::{
    CustomEvent, Durability, Error, Kind, Options, PendingEvent, Record, Run, RunFilter, RunStatus,
    RunUpdate, SqliteStore, Step, StepStatus, StepUpdate, Timer, TimerKind, Transition,
    SCHEMA_VERSION,
};
use tempfile::TempDir;

const T0: i64 = 1_700_000_000_000;

mod common;

/// The test's store: SQLite, or PostgreSQL when the run asks for it (see `common`).
fn db(dir: &TempDir) -> String {
    common::location(dir, "ramus.sqlite")
}

/// A SQLite file, for tests that look into the file itself.
fn file(dir: &TempDir) -> String {
    dir.path().join("ramus.sqlite").to_str().unwrap().to_owned()
}

fn id(kind: u8, n: u32) -> String {
    // Shaped like a UUIDv7; the store only needs unique text.
    format!("0190b6a4-1f00-7{kind:03x}-8000-{n:012x}")
}

fn run(n: u32, name: &str, status: RunStatus, created_at: i64) -> Run {
    Run {
        id: id(1, n),
        name: name.into(),
        kind: Kind::Dag,
        definition_name: None,
        definition_version: None,
        status,
        input: Some(format!(r#"{{"n":{n}}}"#)),
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

fn step(run_id: &str, n: u32, seq: i64) -> Step {
    Step {
        id: id(2, n),
        run_id: run_id.into(),
        seq,
        node: format!("node{seq}"),
        parent_step_id: None,
        input: Some("1".into()),
        output: None,
        error: None,
        status: StepStatus::Running,
        attempt: 1,
        started_at: Some(T0 + seq),
        ended_at: None,
        cached: false,
        context: None,
        snapshot: None,
        superseded_at: None,
    }
}

fn timer(run_id: &str, n: u32, due_at: i64) -> Timer {
    Timer {
        id: id(3, n),
        run_id: run_id.into(),
        kind: TimerKind::Delay,
        due_at,
        payload: Some(r#"{"to":"next"}"#.into()),
        fired_at: None,
    }
}

fn event(run_id: &str, n: u32) -> CustomEvent {
    CustomEvent {
        id: id(4, n),
        run_id: run_id.into(),
        step_id: None,
        parent_step_id: None,
        event_type: "progress".into(),
        source: Some("dag".into()),
        source_node: Some("a".into()),
        data: Some(r#"{"pct":50}"#.into()),
        time: T0,
    }
}

/// Open a connection of our own, to look at what the store wrote.
fn raw(path: &str) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

fn count(path: &str, table: &str) -> i64 {
    raw(path)
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[test]
fn migrations_are_idempotent_on_reopen() {
    let dir = TempDir::new().unwrap();
    let path = file(&dir);
    {
        let store = SqliteStore::open(&path, Durability::Sync).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        store
            .submit_sync(vec![Record::Run(run(1, "a", RunStatus::Running, T0))])
            .unwrap();
        store.close().unwrap();
    }
    for _ in 0..3 {
        let store = SqliteStore::open(&path, Durability::Batched).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert!(store.run(&id(1, 1)).unwrap().is_some());
    }
    let conn = raw(&path);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let versions: i64 = conn
        .query_row(
            "SELECT count(*) FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(versions, 1);
    let mut tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    tables.sort();
    assert_eq!(
        tables,
        [
            "cache",
            "definitions",
            "events",
            "limit_holds",
            "limit_waits",
            "limits",
            "meta",
            "pending_events",
            "runs",
            "schedules",
            "steps",
            "timers",
            "transitions"
        ]
    );
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = TempDir::new().unwrap();
    let path = file(&dir);
    SqliteStore::open(&path, Durability::Batched)
        .unwrap()
        .close()
        .unwrap();
    raw(&path)
        .execute(
            "UPDATE meta SET value = ?1 WHERE key = 'schema_version'",
            [(SCHEMA_VERSION + 1).to_string()],
        )
        .unwrap();
    let err = SqliteStore::open(&path, Durability::Batched).unwrap_err();
    assert!(
        matches!(err, Error::SchemaTooNew { found, supported }
            if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
        "{err}"
    );
}

#[test]
fn definitions_get_a_new_version_only_when_content_changes() {
    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open(&db(&dir), Durability::Batched).unwrap();
    let a = r#"{"nodes":{"x":{"runner":"search","args":{"q":1}},"y":{"parents":["x"]}}}"#;
    let a_reordered = r#"{ "nodes": { "y": { "parents": ["x"] }, "x": { "args": { "q": 1 }, "runner": "search" } } }"#;
    let b = r#"{"nodes":{"x":{"runner":"search","args":{"q":2}}}}"#;

    let v1 = store.put_definition("research", Kind::Dag, a, T0).unwrap();
    assert_eq!((v1.version, v1.created), (1, true));
    let same = store
        .put_definition("research", Kind::Dag, a_reordered, T0 + 1)
        .unwrap();
    assert_eq!((same.version, same.created), (1, false));
    assert_eq!(same.hash, v1.hash);
    let v2 = store
        .put_definition("research", Kind::Dag, b, T0 + 2)
        .unwrap();
    assert_eq!((v2.version, v2.created), (2, true));
    // Back to the first content: it differs from the latest, so it is a new version.
    let v3 = store
        .put_definition("research", Kind::Dag, a, T0 + 3)
        .unwrap();
    assert_eq!((v3.version, v3.created), (3, true));
    // Other names have their own versions.
    let other = store.put_definition("other", Kind::Machine, b, T0).unwrap();
    assert_eq!(other.version, 1);

    let latest = store.definition("research", None).unwrap().unwrap();
    assert_eq!((latest.version, latest.config.as_str()), (3, a));
    let second = store.definition("research", Some(2)).unwrap().unwrap();
    assert_eq!(second.config, b);
    assert_eq!(second.created_at, T0 + 2);
    assert_eq!(second.kind, Kind::Dag);
    assert!(store.definition("research", Some(9)).unwrap().is_none());
    assert!(store.definition("missing", None).unwrap().is_none());

    let err = store
        .put_definition("broken", Kind::Dag, "{nodes", T0)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidJson { .. }), "{err}");
    assert!(err.to_string().contains("broken"), "{err}");

    // The record form stores versions the same way.
    store
        .submit(vec![Record::Definition(ramus_store::NewDefinition {
            name: "research".into(),
            kind: Kind::Dag,
            config: b.into(),
            created_at: T0 + 4,
        })])
        .unwrap();
    store.flush().unwrap();
    assert_eq!(
        store.definition("research", None).unwrap().unwrap().version,
        4
    );
}

#[test]
fn every_record_kind_round_trips() {
    let dir = TempDir::new().unwrap();
    let path = file(&dir);
    let store = SqliteStore::open(&path, Durability::Batched).unwrap();
    let parent = run(9, "parent", RunStatus::Running, T0 - 5);
    let full = Run {
        id: id(1, 1),
        name: "research".into(),
        kind: Kind::Machine,
        definition_name: Some("research".into()),
        definition_version: Some(3),
        status: RunStatus::Running,
        input: Some(r#"{"q":"rust \"quoted\" ü"}"#.into()),
        output: None,
        error: None,
        tags: vec!["a".into(), "b c".into()],
        info: Some(r#"{"owner":"me"}"#.into()),
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        span_id: Some("00f067aa0ba902b7".into()),
        parent_run_id: Some(parent.id.clone()),
        parent_step_id: Some(id(2, 99)),
        snapshot: Some(r#"{"state":"start"}"#.into()),
        created_at: T0,
        updated_at: T0,
        ended_at: None,
        forked_from_run_id: None,
        forked_from_step_id: None,
    };
    let s = Step {
        parent_step_id: Some(id(2, 0)),
        ..step(&full.id, 1, 1)
    };
    let tr = Transition {
        id: id(5, 1),
        run_id: full.id.clone(),
        step_id: Some(s.id.clone()),
        seq: 2,
        from_state: Some("start".into()),
        to_state: "review".into(),
        event_type: Some("approve".into()),
        event_data: Some(r#"{"by":"ann"}"#.into()),
        time: T0 + 3,
    };
    let initial = Transition {
        id: id(5, 0),
        seq: 1,
        from_state: None,
        event_type: None,
        event_data: None,
        to_state: "start".into(),
        ..tr.clone()
    };
    let ev = CustomEvent {
        step_id: Some(s.id.clone()),
        parent_step_id: Some(id(2, 0)),
        ..event(&full.id, 1)
    };
    let pending = PendingEvent {
        id: id(6, 1),
        run_id: full.id.clone(),
        event_type: "approve".into(),
        data: Some("true".into()),
        queue: true,
        created_at: T0 + 4,
        delivered_at: None,
    };
    let t = timer(&full.id, 1, T0 + 1000);
    let cancelled = Timer {
        kind: TimerKind::Timeout,
        ..timer(&full.id, 2, T0 + 2000)
    };
    store
        .submit(vec![
            Record::Run(parent.clone()),
            Record::Run(full.clone()),
            Record::Step(s.clone()),
            Record::Transition(initial.clone()),
            Record::Transition(tr.clone()),
            Record::Event(ev.clone()),
            Record::PendingEvent(pending.clone()),
            Record::Timer(t.clone()),
            Record::Timer(cancelled.clone()),
        ])
        .unwrap();
    store.flush().unwrap();

    assert_eq!(store.run(&full.id).unwrap().unwrap(), full);
    assert_eq!(store.steps(&full.id).unwrap(), vec![s.clone()]);
    assert_eq!(
        store.transitions(&full.id).unwrap(),
        vec![initial.clone(), tr.clone()]
    );
    assert_eq!(store.events(&full.id).unwrap(), vec![ev.clone()]);
    assert_eq!(
        store.pending_events(&full.id).unwrap(),
        vec![pending.clone()]
    );
    assert_eq!(
        store.timers(&full.id).unwrap(),
        vec![t.clone(), cancelled.clone()]
    );

    // The updates.
    store
        .submit_sync(vec![
            Record::RunUpdate(RunUpdate {
                output: Some(r#"{"answer":42}"#.into()),
                snapshot: Some(r#"{"state":"done"}"#.into()),
                ended_at: Some(T0 + 10),
                ..RunUpdate::status(&full.id, RunStatus::Finished, T0 + 10)
            }),
            Record::StepUpdate(StepUpdate {
                id: s.id.clone(),
                status: StepStatus::Finished,
                output: Some("2".into()),
                error: None,
                started_at: None,
                ended_at: Some(T0 + 9),
                cached: false,
            }),
            Record::EventDelivered {
                id: pending.id.clone(),
                at: T0 + 5,
            },
            Record::TimerFired {
                id: t.id.clone(),
                at: T0 + 1001,
            },
            Record::TimerCancelled {
                id: cancelled.id.clone(),
            },
        ])
        .unwrap();
    let updated = store.run(&full.id).unwrap().unwrap();
    assert_eq!(
        updated,
        Run {
            status: RunStatus::Finished,
            output: Some(r#"{"answer":42}"#.into()),
            snapshot: Some(r#"{"state":"done"}"#.into()),
            updated_at: T0 + 10,
            ended_at: Some(T0 + 10),
            ..full.clone()
        }
    );
    let steps = store.steps(&full.id).unwrap();
    assert_eq!(
        steps,
        vec![Step {
            status: StepStatus::Finished,
            output: Some("2".into()),
            ended_at: Some(T0 + 9),
            cached: false,
            ..s.clone()
        }]
    );
    assert!(store.pending_events(&full.id).unwrap().is_empty());
    assert_eq!(
        store.timers(&full.id).unwrap(),
        vec![Timer {
            fired_at: Some(T0 + 1001),
            ..t.clone()
        }]
    );

    // An upsert of an existing run replaces it but keeps created_at.
    store
        .submit_sync(vec![Record::Run(Run {
            created_at: T0 + 100,
            status: RunStatus::Error,
            error: Some(r#"{"message":"boom"}"#.into()),
            ..full.clone()
        })])
        .unwrap();
    let replaced = store.run(&full.id).unwrap().unwrap();
    assert_eq!(replaced.created_at, T0);
    assert_eq!(replaced.status, RunStatus::Error);

    // An upsert of an existing step (a retry) replaces it.
    store
        .submit_sync(vec![Record::Step(Step {
            attempt: 2,
            status: StepStatus::Running,
            ..s.clone()
        })])
        .unwrap();
    assert_eq!(store.steps(&full.id).unwrap()[0].attempt, 2);

    // What a reader without this crate sees: JSON columns are JSON.
    let conn = raw(&path);
    let (tags, q): (String, String) = conn
        .query_row(
            "SELECT tags, json_extract(input, '$.q') FROM runs WHERE id = ?1",
            [&full.id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(tags, r#"["a","b c"]"#);
    assert_eq!(q, "rust \"quoted\" ü");
    store.close().unwrap();
}

#[test]
fn batched_writes_are_visible_after_flush_and_after_reopen() {
    let dir = TempDir::new().unwrap();
    let path = file(&dir);
    let options = Options {
        flush_interval: Duration::from_secs(30),
        ..Options::new(Durability::Batched)
    };
    let store = SqliteStore::open_with(&path, options.clone()).unwrap();
    store
        .submit(vec![Record::Run(run(1, "a", RunStatus::Running, T0))])
        .unwrap();
    // The interval is long: nothing is committed until a flush.
    std::thread::sleep(Duration::from_millis(50));
    assert!(store.run(&id(1, 1)).unwrap().is_none());
    assert_eq!(store.stats().commits, 0);
    store.flush().unwrap();
    assert!(store.run(&id(1, 1)).unwrap().is_some());
    assert_eq!(store.stats().commits, 1);

    // Submitted and never flushed: close commits it.
    for n in 2..=50 {
        store
            .submit(vec![Record::Run(run(n, "a", RunStatus::Running, T0))])
            .unwrap();
    }
    store.close().unwrap();
    assert_eq!(store.stats().commits, 2, "one group for 49 submissions");
    // Reads still work after close, writes do not.
    assert_eq!(store.runs(&RunFilter::default()).unwrap().len(), 50);
    let err = store
        .submit(vec![Record::Run(run(99, "a", RunStatus::Running, T0))])
        .unwrap_err();
    assert!(matches!(err, Error::Closed), "{err}");
    drop(store);

    let reopened = SqliteStore::open_with(&path, options).unwrap();
    assert_eq!(reopened.runs(&RunFilter::default()).unwrap().len(), 50);

    // Dropping without close also commits what was queued.
    reopened
        .submit(vec![Record::Run(run(51, "a", RunStatus::Running, T0))])
        .unwrap();
    drop(reopened);
    assert_eq!(count(&path, "runs"), 51);
}

#[test]
fn the_flush_interval_commits_without_a_flush() {
    let dir = TempDir::new().unwrap();
    let options = Options {
        flush_interval: Duration::from_millis(10),
        ..Options::new(Durability::Batched)
    };
    let store = SqliteStore::open_with(&db(&dir), options).unwrap();
    store
        .submit(vec![Record::Run(run(1, "a", RunStatus::Running, T0))])
        .unwrap();
    let mut waited = 0;
    while store.run(&id(1, 1)).unwrap().is_none() {
        assert!(waited < 5_000, "not committed after 5 s");
        std::thread::sleep(Duration::from_millis(5));
        waited += 5;
    }
}

#[test]
fn sync_writes_are_visible_when_submit_sync_returns() {
    let dir = TempDir::new().unwrap();
    let path = file(&dir);
    for durability in [Durability::Sync, Durability::Batched] {
        let options = Options {
            // In Batched, submit_sync must not wait for the interval.
            flush_interval: Duration::from_secs(30),
            ..Options::new(durability)
        };
        let store = SqliteStore::open_with(&path, options).unwrap();
        let r = run(durability as u32, "a", RunStatus::Running, T0);
        let started = std::time::Instant::now();
        store
            .submit_sync(vec![
                Record::Run(r.clone()),
                Record::Step(step(&r.id, durability as u32, 1)),
            ])
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(store.run(&r.id).unwrap().is_some());
        assert_eq!(store.steps(&r.id).unwrap().len(), 1);
        // Another process (connection) sees it too.
        let seen: i64 = raw(&path)
            .query_row(
                "SELECT count(*) FROM steps WHERE run_id = ?1",
                [&r.id],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(seen, 1);
    }
}

#[test]
fn concurrent_sync_submitters_share_commits() {
    let dir = TempDir::new().unwrap();
    let store = Arc::new(SqliteStore::open(&db(&dir), Durability::Sync).unwrap());
    let r = run(1, "a", RunStatus::Running, T0);
    store.submit_sync(vec![Record::Run(r.clone())]).unwrap();
    let before = store.stats();
    const THREADS: u32 = 8;
    const EACH: u32 = 100;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = Arc::clone(&store);
            let run_id = r.id.clone();
            std::thread::spawn(move || {
                for i in 0..EACH {
                    let n = t * EACH + i;
                    store
                        .submit_sync(vec![Record::Step(step(&run_id, n, n as i64 + 1))])
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let after = store.stats();
    let submits = u64::from(THREADS * EACH);
    let commits = after.commits - before.commits;
    assert_eq!(after.records - before.records, submits);
    assert_eq!(store.steps(&r.id).unwrap().len(), submits as usize);
    println!("{submits} concurrent submit_sync calls, {commits} commits");
    assert!(commits < submits, "{commits} commits for {submits} submits");
}

#[test]
fn prune_removes_old_runs_and_their_children_only() {
    let dir = TempDir::new().unwrap();
    let path = file(&dir);
    let store = SqliteStore::open(&path, Durability::Batched).unwrap();
    let cutoff = T0 + 1_000;
    let old_done = run(1, "a", RunStatus::Finished, T0);
    let old_failed = run(2, "a", RunStatus::Error, T0);
    let new_done = run(3, "a", RunStatus::Finished, cutoff + 1);
    // Started inside old_done, after the cutoff and still running: goes with its parent.
    let child = Run {
        parent_run_id: Some(old_done.id.clone()),
        ..run(4, "child", RunStatus::Running, cutoff + 5)
    };
    let grandchild = Run {
        parent_run_id: Some(child.id.clone()),
        ..run(5, "grandchild", RunStatus::Running, cutoff + 6)
    };
    let mut records = Vec::new();
    for (k, r) in [&old_done, &old_failed, &new_done, &child, &grandchild]
        .into_iter()
        .enumerate()
    {
        let k = k as u32;
        records.push(Record::Run(r.clone()));
        records.push(Record::Step(step(&r.id, k, 1)));
        records.push(Record::Event(event(&r.id, k)));
        records.push(Record::Timer(timer(&r.id, k, T0)));
        records.push(Record::PendingEvent(PendingEvent {
            id: id(6, k),
            run_id: r.id.clone(),
            event_type: "go".into(),
            data: None,
            queue: false,
            created_at: T0,
            delivered_at: None,
        }));
        records.push(Record::Transition(Transition {
            id: id(5, k),
            run_id: r.id.clone(),
            step_id: None,
            seq: 1,
            from_state: None,
            to_state: "s".into(),
            event_type: None,
            event_data: None,
            time: T0,
        }));
    }
    store.submit(records).unwrap();
    store.flush().unwrap();
    for table in ["steps", "events", "timers", "pending_events", "transitions"] {
        assert_eq!(count(&path, table), 5, "{table}");
    }

    // Only finished runs: old_done and, with it, its child and grandchild.
    assert_eq!(store.prune(cutoff, Some(RunStatus::Finished)).unwrap(), 3);
    let left: Vec<String> = store
        .runs(&RunFilter::default())
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, vec![new_done.id.clone(), old_failed.id.clone()]);
    for table in ["steps", "events", "timers", "pending_events", "transitions"] {
        assert_eq!(count(&path, table), 2, "{table}");
    }
    assert!(store.steps(&old_done.id).unwrap().is_empty());
    assert_eq!(store.steps(&new_done.id).unwrap().len(), 1);

    // Any status: the old failed run goes, the new one stays.
    assert_eq!(store.prune(cutoff, None).unwrap(), 1);
    assert_eq!(store.runs(&RunFilter::default()).unwrap().len(), 1);
    assert_eq!(store.prune(cutoff, None).unwrap(), 0);
    for table in ["steps", "events", "timers", "pending_events", "transitions"] {
        assert_eq!(count(&path, table), 1, "{table}");
    }
}

#[test]
fn off_writes_nothing() {
    let dir = TempDir::new().unwrap();
    let path = file(&dir);
    let store = SqliteStore::open(&path, Durability::Off).unwrap();
    let r = run(1, "a", RunStatus::Running, T0);
    store.submit(vec![Record::Run(r.clone())]).unwrap();
    store
        .submit_sync(vec![Record::Step(step(&r.id, 1, 1))])
        .unwrap();
    let v = store.put_definition("d", Kind::Dag, "{}", T0).unwrap();
    assert_eq!((v.version, v.created), (1, true));
    assert_eq!(store.prune(i64::MAX, None).unwrap(), 0);
    store.flush().unwrap();
    assert!(store.run(&r.id).unwrap().is_none());
    assert_eq!(store.stats(), Default::default());
    store.close().unwrap();
    drop(store);
    for table in ["runs", "steps", "definitions"] {
        assert_eq!(count(&path, table), 0, "{table}");
    }
}

#[test]
fn a_failed_submission_does_not_spoil_its_group() {
    let dir = TempDir::new().unwrap();
    let options = Options {
        flush_interval: Duration::from_secs(30),
        ..Options::new(Durability::Batched)
    };
    let store = SqliteStore::open_with(&db(&dir), options).unwrap();
    let good = run(1, "a", RunStatus::Running, T0);
    let orphan_run = run(2, "a", RunStatus::Running, T0);
    store.submit(vec![Record::Run(good.clone())]).unwrap();
    // An update of a step that does not exist.
    store
        .submit(vec![Record::StepUpdate(StepUpdate {
            id: id(2, 77),
            status: StepStatus::Finished,
            output: None,
            error: None,
            started_at: None,
            ended_at: None,
            cached: false,
        })])
        .unwrap();
    // A submission whose second record breaks a foreign key: its first record is undone.
    store
        .submit(vec![
            Record::Run(orphan_run.clone()),
            Record::Step(step("no-such-run", 5, 1)),
        ])
        .unwrap();
    store
        .submit(vec![Record::Step(step(&good.id, 1, 1))])
        .unwrap();
    let err = store.flush().unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { what: "step", id: missing } if *missing == id(2, 77)),
        "{err}"
    );
    // Reported once.
    store.flush().unwrap();
    assert!(store.run(&good.id).unwrap().is_some());
    assert_eq!(store.steps(&good.id).unwrap().len(), 1);
    assert!(store.run(&orphan_run.id).unwrap().is_none());

    // A waiting caller hears about its own failure, naming the record.
    let err = store
        .submit_sync(vec![Record::Step(step("no-such-run", 6, 1))])
        .unwrap_err();
    assert!(matches!(&err, Error::Write { what: "step", .. }), "{err}");
    assert!(err.to_string().contains(&id(2, 6)), "{err}");
    let err = store
        .submit_sync(vec![Record::RunUpdate(RunUpdate::status(
            "nope",
            RunStatus::Finished,
            T0,
        ))])
        .unwrap_err();
    assert_eq!(err.to_string(), "cannot update run nope: no such run");
}

#[test]
fn runs_waiting_and_due_timers_filter_and_order() {
    let store = SqliteStore::open(":memory:", Durability::Sync).unwrap();
    let tagged = |n, name: &str, status, tags: &[&str]| Run {
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ..run(n, name, status, T0 + i64::from(n))
    };
    let runs = [
        tagged(1, "review", RunStatus::WaitingForEvent, &["hr", "urgent"]),
        tagged(2, "review", RunStatus::WaitingForEvent, &["hr"]),
        tagged(3, "review", RunStatus::Finished, &["hr", "urgent"]),
        tagged(4, "other", RunStatus::WaitingForEvent, &["urgent"]),
    ];
    store
        .submit_sync(runs.iter().cloned().map(Record::Run).collect())
        .unwrap();
    let ids = |rs: Vec<Run>| rs.into_iter().map(|r| r.id).collect::<Vec<_>>();

    assert_eq!(
        ids(store.runs(&RunFilter::default()).unwrap()),
        [id(1, 4), id(1, 3), id(1, 2), id(1, 1)],
        "newest first"
    );
    let filter = |name: Option<&str>, status, tags: &[&str], limit| RunFilter {
        name: name.map(Into::into),
        status,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        limit,
    };
    assert_eq!(
        ids(store
            .runs(&filter(Some("review"), None, &[], None))
            .unwrap()),
        [id(1, 3), id(1, 2), id(1, 1)]
    );
    assert_eq!(
        ids(store
            .runs(&filter(None, Some(RunStatus::Finished), &[], None))
            .unwrap()),
        [id(1, 3)]
    );
    assert_eq!(
        ids(store
            .runs(&filter(None, None, &["hr", "urgent"], None))
            .unwrap()),
        [id(1, 3), id(1, 1)]
    );
    assert_eq!(
        ids(store.runs(&filter(None, None, &[], Some(2))).unwrap()),
        [id(1, 4), id(1, 3)]
    );
    assert_eq!(
        ids(store.waiting(&RunFilter::default()).unwrap()),
        [id(1, 4), id(1, 2), id(1, 1)]
    );
    assert_eq!(
        ids(store
            .waiting(&filter(
                Some("review"),
                Some(RunStatus::Finished),
                &["urgent"],
                None
            ))
            .unwrap()),
        [id(1, 1)],
        "waiting ignores the status filter"
    );

    let r = &runs[0].id;
    store
        .submit_sync(vec![
            Record::Timer(timer(r, 1, T0 + 300)),
            Record::Timer(timer(r, 2, T0 + 100)),
            Record::Timer(timer(r, 3, T0 + 200)),
            Record::Timer(timer(r, 4, T0 + 900)),
            Record::TimerFired {
                id: id(3, 3),
                at: T0 + 200,
            },
        ])
        .unwrap();
    let due: Vec<String> = store
        .due_timers(T0 + 300)
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(
        due,
        [id(3, 2), id(3, 1)],
        "due order, fired and future left out"
    );
}

#[test]
fn two_stores_on_one_file_both_write() {
    // Two engines (or processes) on one file take turns on the write lock.
    let dir = TempDir::new().unwrap();
    let path = db(&dir);
    let a = SqliteStore::open(&path, Durability::Sync).unwrap();
    let b = SqliteStore::open(&path, Durability::Sync).unwrap();
    std::thread::scope(|s| {
        for (store, base) in [(&a, 0u32), (&b, 1000)] {
            s.spawn(move || {
                for n in base..base + 100 {
                    store
                        .submit_sync(vec![Record::Run(run(n, "x", RunStatus::Running, T0))])
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(a.runs(&RunFilter::default()).unwrap().len(), 200);
    assert_eq!(b.runs(&RunFilter::default()).unwrap().len(), 200);
}

#[test]
fn memory_stores_are_private() {
    let a = SqliteStore::open(":memory:", Durability::Batched).unwrap();
    let b = SqliteStore::open(":memory:", Durability::Batched).unwrap();
    a.submit(vec![Record::Run(run(1, "a", RunStatus::Running, T0))])
        .unwrap();
    a.flush().unwrap();
    assert_eq!(a.runs(&RunFilter::default()).unwrap().len(), 1);
    assert!(b.runs(&RunFilter::default()).unwrap().is_empty());
}

#[test]
fn checkpoints_start_the_wal_over() {
    let dir = TempDir::new().unwrap();
    let path = file(&dir);
    let options = Options {
        checkpoint_pages: 8,
        ..Options::new(Durability::Sync)
    };
    let store = SqliteStore::open_with(&path, options).unwrap();
    let r = run(1, "a", RunStatus::Running, T0);
    store.submit_sync(vec![Record::Run(r.clone())]).unwrap();
    let big = format!("\"{}\"", "x".repeat(2000));
    let mut n = 0u32;
    let mut commit = || {
        n += 1;
        store
            .submit_sync(vec![Record::Step(Step {
                output: Some(big.clone()),
                ..step(&r.id, n, i64::from(n))
            })])
            .unwrap();
    };
    // Commit until a cycle (background bulk, then the writer's finish) is done.
    let started = std::time::Instant::now();
    let mut most = 0;
    while store.stats().checkpoints == 0 {
        assert!(started.elapsed() < Duration::from_secs(20), "no checkpoint");
        commit();
        most = most.max(store.stats().wal_pages);
    }
    // The WAL was fully copied, so the commits since wrote from its start again instead
    // of appending: it holds fewer pages than it did before.
    commit();
    let stats = store.stats();
    assert!(stats.wal_pages < most, "{stats:?}, {most} pages before");
    store.close().unwrap();
    assert_eq!(count(&path, "steps"), i64::from(n));
}

#[test]
fn a_store_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<SqliteStore>();
    shareable::<Error>();
}

#[test]
fn a_full_queue_does_not_wait_for_the_window() {
    // A queue of 4 and a 30 s window: submitting 100 records one by one must not take
    // 25 windows.
    let options = Options {
        queue_capacity: 4,
        flush_interval: Duration::from_secs(30),
        ..Options::new(Durability::Batched)
    };
    let store = SqliteStore::open_with(":memory:", options).unwrap();
    let started = std::time::Instant::now();
    for n in 0..100 {
        store
            .submit(vec![Record::Run(run(n, "a", RunStatus::Running, T0))])
            .unwrap();
    }
    store.flush().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(store.runs(&RunFilter::default()).unwrap().len(), 100);
}

/// `docs/schema.md` is the contract for other readers: every column of every table is in
/// it, and its example queries run.
#[test]
fn the_schema_document_matches_the_schema() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/schema.md"))
        .unwrap();
    assert!(doc.contains(&format!("schema version **{SCHEMA_VERSION}**")));
    let dir = TempDir::new().unwrap();
    let path = file(&dir);
    let store = SqliteStore::open(&path, Durability::Sync).unwrap();
    let r = run(1, "a", RunStatus::WaitingForEvent, T0);
    store
        .submit_sync(vec![
            Record::Run(r.clone()),
            Record::Step(step(&r.id, 1, 1)),
            Record::Event(event(&r.id, 1)),
            Record::Timer(timer(&r.id, 1, T0 + 10)),
        ])
        .unwrap();
    let conn = raw(&path);
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for table in tables {
        let heading = format!("### `{table}`");
        let start = doc
            .find(&heading)
            .unwrap_or_else(|| panic!("docs/schema.md has no section {heading}"));
        let section = &doc[start + heading.len()..];
        let section = &section[..section.find("\n### ").unwrap_or(section.len())];
        let columns: Vec<String> = conn
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for column in columns {
            assert!(
                section.contains(&format!("| `{column}` |")),
                "docs/schema.md does not describe {table}.{column}"
            );
        }
    }
    let sql_start = doc.find("```sql\n").unwrap() + "```sql\n".len();
    let sql = &doc[sql_start..sql_start + doc[sql_start..].find("```").unwrap()];
    let mut ran = 0;
    for statement in sql.split(";\n").filter(|s| s.contains("SELECT")) {
        let mut stmt = conn
            .prepare(statement)
            .unwrap_or_else(|e| panic!("{e}: {statement}"));
        if let Some(i) = stmt.parameter_index(":run").unwrap() {
            stmt.raw_bind_parameter(i, &r.id).unwrap();
        }
        if let Some(i) = stmt.parameter_index(":now").unwrap() {
            stmt.raw_bind_parameter(i, T0).unwrap();
        }
        let mut rows = stmt.raw_query();
        let mut n = 0;
        while rows.next().unwrap().is_some() {
            n += 1;
        }
        assert!(n > 0, "no rows from: {statement}");
        ran += 1;
    }
    assert_eq!(ran, 5);
}

#[test]
fn opening_an_impossible_path_names_it() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("no/such/dir/ramus.sqlite");
    let path = path.to_str().unwrap();
    let err = SqliteStore::open(path, Durability::Batched).unwrap_err();
    assert!(matches!(err, Error::Open { .. }), "{err}");
    assert!(err.to_string().contains(path), "{err}");
}

/// `submit_then` answers every submission exactly once: committed ones with `Ok` (the rows are
/// readable then), and those sent after `close` with `Closed` instead of never.
#[test]
fn submit_then_answers_once_committed_or_closed() {
    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open(&db(&dir), Durability::Sync).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    for n in 0..20 {
        let tx = tx.clone();
        let row = run(n, "then", RunStatus::Running, T0);
        store.submit_then(
            vec![Record::Run(row)],
            Box::new(move |r| tx.send((n, r.is_ok())).unwrap()),
        );
    }
    let mut answers: Vec<(u32, bool)> = (0..20)
        .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    answers.sort_unstable();
    assert_eq!(answers, (0..20).map(|n| (n, true)).collect::<Vec<_>>());
    assert_eq!(store.runs(&RunFilter::default()).unwrap().len(), 20);

    store.close().unwrap();
    let tx2 = tx.clone();
    store.submit_then(
        Vec::new(),
        Box::new(move |r| tx2.send((99, r.is_ok())).unwrap()),
    );
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        (99, false)
    );
}

#[test]
fn a_lease_is_held_by_one_owner_until_it_expires_and_fences_the_writes_of_the_last_holder() {
    use ramus_store::{LeaseAnswer, LeaseOp};
    let dir = TempDir::new().unwrap();
    let path = db(&dir);
    let a = SqliteStore::open(&path, Durability::Sync).unwrap();
    let b = SqliteStore::open(&path, Durability::Sync).unwrap();
    let r = run(1, "leased", RunStatus::Running, T0);
    let claim = |owner: &str, now: i64| LeaseOp::Claim {
        run_id: r.id.clone(),
        owner: owner.into(),
        dead: None,
        now,
        until: now + 100,
    };
    a.submit_sync(vec![
        Record::Run(r.clone()),
        Record::Lease {
            run_id: r.id.clone(),
            owner: "a".into(),
            until: T0 + 100,
        },
    ])
    .unwrap();
    // B cannot take it while A's lease lasts.
    assert_eq!(
        b.lease(claim("b", T0 + 50)).unwrap(),
        LeaseAnswer::Held {
            owner: "a".into(),
            expires_at: T0 + 100
        }
    );
    // A renews; B's later try still fails.
    assert_eq!(
        a.lease(LeaseOp::Renew {
            owner: "a".into(),
            runs: vec![r.id.clone()],
            now: T0 + 60,
            until: T0 + 200
        })
        .unwrap(),
        LeaseAnswer::Renewed { lost: vec![] }
    );
    assert!(matches!(
        b.lease(claim("b", T0 + 150)).unwrap(),
        LeaseAnswer::Held { .. }
    ));
    // Expired: B takes it over with the next token.
    assert_eq!(
        b.lease(claim("b", T0 + 200)).unwrap(),
        LeaseAnswer::Claimed { token: 2 }
    );
    // A's fenced writes are refused, B's go through.
    let fenced = |owner: &str, token: i64, n: u32| {
        vec![
            Record::Fence {
                run_id: r.id.clone(),
                owner: owner.into(),
                token,
            },
            Record::Step(step(&r.id, n, i64::from(n))),
        ]
    };
    let err = a.submit_sync(fenced("a", 1, 1)).unwrap_err();
    assert!(
        matches!(&err, ramus_store::Error::LeaseLost { holder: Some(h), .. } if h == "b"),
        "{err}"
    );
    b.submit_sync(fenced("b", 2, 2)).unwrap();
    assert_eq!(
        a.steps(&r.id)
            .unwrap()
            .iter()
            .map(|s| s.seq)
            .collect::<Vec<_>>(),
        vec![2]
    );
    // A learns of the loss when it renews.
    assert_eq!(
        a.lease(LeaseOp::Renew {
            owner: "a".into(),
            runs: vec![r.id.clone()],
            now: T0 + 250,
            until: T0 + 300
        })
        .unwrap(),
        LeaseAnswer::Renewed {
            lost: vec![r.id.clone()]
        }
    );
    // Released, anyone may take it at once.
    b.lease(LeaseOp::Release {
        owner: "b".into(),
        runs: vec![r.id.clone()],
    })
    .unwrap();
    assert_eq!(
        a.lease(claim("a", T0 + 210)).unwrap(),
        LeaseAnswer::Claimed { token: 3 }
    );
}

#[test]
fn a_store_opens_reads_writes_and_closes_from_inside_a_tokio_runtime() {
    // The engine's timers and pollers read the store from tokio tasks, and a Rust program
    // may open it from `#[tokio::main]`: the PostgreSQL client's own runtime must not be
    // started inside theirs (it panicked: "Cannot start a runtime from within a runtime").
    let dir = TempDir::new().unwrap();
    let location = db(&dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let runs = rt.block_on(async {
        let store = SqliteStore::open(&location, Durability::Sync).unwrap();
        store
            .submit_sync(vec![Record::Run(run(
                1,
                "in-tokio",
                RunStatus::Running,
                T0,
            ))])
            .unwrap();
        let runs = store.runs(&RunFilter::default()).unwrap().len();
        store.close().unwrap();
        assert_eq!(store.runs(&RunFilter::default()).unwrap().len(), 1);
        drop(store);
        runs
    });
    assert_eq!(runs, 1);
}
