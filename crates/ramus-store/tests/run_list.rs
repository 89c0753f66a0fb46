//! The inspector's reads: the run list with step counts, and the change counter.

use ramus_store::{
    Durability, Kind, Record, Run, RunQuery, RunStatus, SqliteStore, Step, StepStatus,
};
use tempfile::TempDir;

const T0: i64 = 1_700_000_000_000;

fn id(kind: u8, n: u32) -> String {
    format!("0190b6a4-1f00-7{kind:03x}-8000-{n:012x}")
}

fn run(n: u32, name: &str, status: RunStatus, tags: &[&str]) -> Run {
    Run {
        id: id(1, n),
        name: name.into(),
        kind: Kind::Dag,
        definition_name: None,
        definition_version: None,
        status,
        input: None,
        output: None,
        error: None,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        info: None,
        trace_id: None,
        span_id: None,
        parent_run_id: None,
        parent_step_id: None,
        snapshot: Some(r#"{"big":"snapshot"}"#.into()),
        created_at: T0 + i64::from(n) * 1000,
        updated_at: T0 + i64::from(n) * 1000,
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
        node: "a".into(),
        parent_step_id: None,
        input: None,
        output: None,
        error: None,
        status: StepStatus::Finished,
        attempt: 1,
        started_at: Some(T0),
        ended_at: Some(T0),
        cached: false,
        context: None,
        snapshot: None,
        superseded_at: None,
    }
}

#[test]
fn run_list_filters_counts_steps_and_skips_snapshots() {
    let store = SqliteStore::open(":memory:", Durability::Sync).unwrap();
    let child = Run {
        parent_run_id: Some(id(1, 1)),
        parent_step_id: Some(id(2, 1)),
        ..run(4, "Research child", RunStatus::Running, &[])
    };
    store
        .submit_sync(vec![
            Record::Run(run(1, "Research", RunStatus::Finished, &["a", "b"])),
            Record::Run(run(2, "it's \"quoted\"", RunStatus::Error, &["a"])),
            Record::Run(run(3, "other", RunStatus::WaitingForEvent, &["b"])),
            Record::Run(child),
            Record::Step(step(&id(1, 1), 1, 1)),
            Record::Step(step(&id(1, 1), 2, 2)),
            Record::Step(step(&id(1, 3), 3, 1)),
        ])
        .unwrap();
    let list = |q: RunQuery| -> Vec<(String, i64)> {
        store
            .run_list(&q)
            .unwrap()
            .into_iter()
            .map(|s| {
                assert_eq!(s.run.snapshot, None, "the list never reads snapshots");
                (s.run.id, s.steps)
            })
            .collect()
    };

    assert_eq!(
        list(RunQuery::default()),
        [(id(1, 4), 0), (id(1, 3), 1), (id(1, 2), 0), (id(1, 1), 2)],
        "newest first, with step counts"
    );
    let search = |text: &str| RunQuery {
        name_contains: Some(text.into()),
        ..RunQuery::default()
    };
    assert_eq!(
        list(search("research")),
        [(id(1, 4), 0), (id(1, 1), 2)],
        "the name search ignores case"
    );
    assert_eq!(
        list(search("it's \"q")),
        [(id(1, 2), 0)],
        "quotes are data, not SQL"
    );
    assert_eq!(list(search("' OR 1=1 --")), []);
    assert_eq!(
        list(RunQuery {
            top_level: true,
            ..RunQuery::default()
        })
        .len(),
        3
    );
    assert_eq!(
        list(RunQuery {
            status: Some(RunStatus::WaitingForEvent),
            ..RunQuery::default()
        }),
        [(id(1, 3), 1)]
    );
    assert_eq!(
        list(RunQuery {
            tags: vec!["a".into(), "b".into()],
            ..RunQuery::default()
        }),
        [(id(1, 1), 2)]
    );
    assert_eq!(
        list(RunQuery {
            since: Some(T0 + 2000),
            until: Some(T0 + 4000),
            ..RunQuery::default()
        }),
        [(id(1, 3), 1), (id(1, 2), 0)],
        "since is inclusive, until exclusive"
    );
    assert_eq!(
        list(RunQuery {
            limit: Some(1),
            ..RunQuery::default()
        }),
        [(id(1, 4), 0)]
    );
}

#[test]
fn data_version_changes_when_another_connection_commits() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("ramus.sqlite");
    let path = path.to_str().unwrap();
    let reader = SqliteStore::open(path, Durability::Sync).unwrap();
    let writer = SqliteStore::open(path, Durability::Sync).unwrap();
    let v0 = reader.data_version().unwrap();
    assert_eq!(reader.data_version().unwrap(), v0, "nothing committed");
    writer
        .submit_sync(vec![Record::Run(run(1, "x", RunStatus::Running, &[]))])
        .unwrap();
    let v1 = reader.data_version().unwrap();
    assert_ne!(v1, v0, "another store committed");
    reader
        .submit_sync(vec![Record::Run(run(2, "y", RunStatus::Running, &[]))])
        .unwrap();
    assert_ne!(
        reader.data_version().unwrap(),
        v1,
        "the store's own writer is another connection than its reader"
    );
}

#[test]
fn probe_tells_a_ramus_database_from_another_sqlite_file() {
    let dir = TempDir::new().unwrap();
    let ours = dir.path().join("ramus.sqlite");
    let ours = ours.to_str().unwrap();
    SqliteStore::open(ours, Durability::Sync)
        .unwrap()
        .close()
        .unwrap();
    assert_eq!(
        SqliteStore::probe(ours).unwrap(),
        Some(ramus_store::SCHEMA_VERSION)
    );

    let other = dir.path().join("other.sqlite");
    let other = other.to_str().unwrap();
    rusqlite::Connection::open(other)
        .unwrap()
        .execute_batch("CREATE TABLE notes (body TEXT)")
        .unwrap();
    assert_eq!(SqliteStore::probe(other).unwrap(), None);
    assert!(
        SqliteStore::probe(dir.path().join("missing.sqlite").to_str().unwrap()).is_err(),
        "a missing file is an error, not created"
    );
    assert!(!dir.path().join("missing.sqlite").exists());
}
