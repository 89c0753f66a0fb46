//! The queue in the store: enqueue (idempotency keys), and the claims workers make —
//! queued runs by aged priority, held back by `run_at` and concurrency keys, and stored
//! runs nobody holds that have something to do.

use ramus_store::{
    Claimed, Durability, Kind, LeaseAnswer, LeaseOp, PendingEvent, QueuedRun, Record, Run,
    RunStatus, SqliteStore, Timer, TimerKind,
};
use tempfile::TempDir;

mod common;

const T0: i64 = 1_700_000_000_000;
const MINUTE: i64 = 60_000;

fn open(dir: &TempDir) -> SqliteStore {
    SqliteStore::open(&common::location(dir, "queue.sqlite"), Durability::Sync).unwrap()
}

fn queued(n: u32, priority: i64, created_at: i64) -> QueuedRun {
    QueuedRun {
        id: format!("0190b6a4-1f00-7000-8000-{n:012x}"),
        name: "research".into(),
        kind: Kind::Dag,
        definition: ("research".into(), 1),
        input: Some(format!("{n}")),
        context: Some(r#"{"k":1}"#.into()),
        tags: vec!["user:7".into()],
        info: None,
        priority,
        run_at: None,
        idempotency_key: None,
        concurrency_key: None,
        created_at,
        claim: None,
    }
}

/// A top-level run of a stored definition, as an engine writes it.
fn stored_run(id: &str, kind: Kind, status: RunStatus, updated_at: i64) -> Run {
    Run {
        id: id.into(),
        name: "research".into(),
        kind,
        definition_name: Some("research".into()),
        definition_version: Some(1),
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
        created_at: T0,
        updated_at,
        ended_at: None,
        forked_from_run_id: None,
        forked_from_step_id: None,
    }
}

/// Cap `key` at `concurrency` slots, from T0.
fn cap(store: &SqliteStore, key: &str, concurrency: i64) {
    let limits = vec![ramus_store::Limit {
        key: key.into(),
        concurrency: Some(concurrency),
        rate: None,
    }];
    store.lease(LeaseOp::SetLimits { limits, now: T0 }).unwrap();
}

fn enqueue(store: &SqliteStore, q: QueuedRun) -> (String, bool) {
    match store.lease(LeaseOp::Enqueue(Box::new(q))).unwrap() {
        LeaseAnswer::Enqueued {
            run_id, created, ..
        } => (run_id, created),
        other => panic!("{other:?}"),
    }
}

fn claim(store: &SqliteStore, owner: &str, limit: u32, now: i64) -> Vec<Claimed> {
    let op = LeaseOp::ClaimWork {
        owner: owner.into(),
        names: None,
        limit,
        now,
        until: now + MINUTE,
        aging_ms: MINUTE,
        skip: vec![],
    };
    match store.lease(op).unwrap() {
        LeaseAnswer::Work(w) => w,
        other => panic!("{other:?}"),
    }
}

fn ids(claimed: &[Claimed]) -> Vec<String> {
    claimed.iter().map(|c| c.run_id.clone()).collect()
}

#[test]
fn an_idempotency_key_names_one_run() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let mut a = queued(1, 0, T0);
    a.idempotency_key = Some("ticket-42".into());
    let mut b = queued(2, 0, T0 + 1);
    b.idempotency_key = Some("ticket-42".into());
    let (first, created) = enqueue(&store, a.clone());
    assert!(created);
    assert_eq!(enqueue(&store, b), (first.clone(), false));
    let row = store.run(&first).unwrap().unwrap();
    assert_eq!(row.status, RunStatus::Queued);
    assert_eq!(row.snapshot.as_deref(), Some(r#"{"context":{"k":1}}"#));
    assert_eq!(row.definition_name.as_deref(), Some("research"));
    assert_eq!(store.runs(&Default::default()).unwrap().len(), 1);
}

#[test]
fn queued_runs_are_claimed_by_aged_priority_once() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    // Waited ten minutes at priority 0: effective 10 by the time the others come.
    let (old, _) = enqueue(&store, queued(1, 0, T0));
    let now = T0 + 10 * MINUTE;
    let (low, _) = enqueue(&store, queued(2, 1, now));
    let (high, _) = enqueue(&store, queued(3, 20, now));
    let (mid, _) = enqueue(&store, queued(4, 5, now));
    let mut later = queued(5, 100, now);
    later.run_at = Some(now + 30_000);
    let (later, _) = enqueue(&store, later);
    let first = claim(&store, "a", 2, now);
    assert_eq!(ids(&first), vec![high.clone(), old.clone()]);
    assert!(first.iter().all(|c| c.queued && c.token == 1));
    // Held by A: B gets the rest, never the same run.
    assert_eq!(
        ids(&claim(&store, "b", 10, now)),
        vec![mid.clone(), low.clone()]
    );
    assert!(claim(&store, "b", 10, now).is_empty());
    // `run_at` has come.
    assert_eq!(
        ids(&claim(&store, "b", 10, now + 30_000)),
        vec![later.clone()]
    );
    // Claims that lapsed (their workers died before starting them) are taken again, with
    // the next token.
    let again = claim(&store, "c", 10, now + 2 * MINUTE);
    assert_eq!(ids(&again), vec![later, high, old, mid, low]);
    assert!(again.iter().all(|c| c.token == 2));
}

#[test]
fn runs_sharing_a_concurrency_key_are_claimed_one_at_a_time() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let keyed = |n, key: &str| {
        let mut q = queued(n, 0, T0 + i64::from(n));
        q.concurrency_key = Some(key.into());
        q
    };
    let (a, _) = enqueue(&store, keyed(1, "user:1"));
    let (b, _) = enqueue(&store, keyed(2, "user:1"));
    let (c, _) = enqueue(&store, keyed(3, "user:2"));
    assert_eq!(ids(&claim(&store, "w", 10, T0 + 10)), vec![a.clone(), c]);
    // `a` started and now runs: `b` still waits for it.
    let mut started = stored_run(&a, Kind::Dag, RunStatus::Running, T0 + 20);
    store
        .submit_sync(vec![Record::Run(started.clone())])
        .unwrap();
    assert!(claim(&store, "w2", 10, T0 + 30).is_empty());
    started.status = RunStatus::Finished;
    started.ended_at = Some(T0 + 40);
    store.submit_sync(vec![Record::Run(started)]).unwrap();
    assert_eq!(ids(&claim(&store, "w2", 10, T0 + 50)), vec![b]);
}

#[test]
fn stored_runs_nobody_holds_are_claimed_when_they_have_something_to_do() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let row = |n: u32, status: RunStatus, owner: Option<&str>| {
        let id = format!("0190b6a4-1f00-7001-8000-{n:012x}");
        let run = stored_run(&id, Kind::Machine, status, T0 + i64::from(n));
        let mut records = vec![Record::Run(run)];
        if let Some(owner) = owner {
            records.push(Record::Lease {
                run_id: id.clone(),
                owner: owner.into(),
                until: T0 + MINUTE,
            });
        }
        store.submit_sync(records).unwrap();
        id
    };
    // Its holder closed mid-run.
    let running = row(1, RunStatus::Running, None);
    // Waits for an event that came.
    let evented = row(2, RunStatus::WaitingForEvent, None);
    // Waits for an event that did not come: nothing to do.
    let idle = row(3, RunStatus::WaitingForEvent, None);
    // Sleeps until T0 + 5 minutes.
    let sleeping = row(4, RunStatus::Sleeping, None);
    // Has an event, but a live holder.
    let held = row(5, RunStatus::WaitingForEvent, Some("other"));
    let event = |run_id: &str, n: u32| {
        Record::PendingEvent(PendingEvent {
            id: format!("0190b6a4-1f00-7002-8000-{n:012x}"),
            run_id: run_id.into(),
            event_type: "go".into(),
            data: None,
            queue: false,
            created_at: T0,
            delivered_at: None,
        })
    };
    store
        .submit_sync(vec![
            event(&evented, 1),
            event(&held, 2),
            Record::Timer(Timer {
                id: "0190b6a4-1f00-7003-8000-000000000001".into(),
                run_id: sleeping.clone(),
                kind: TimerKind::Delay,
                due_at: T0 + 5 * MINUTE,
                payload: Some(r#"{"timer":1}"#.into()),
                fired_at: None,
            }),
        ])
        .unwrap();
    assert!(store.work_ready(None, T0 + 10, &[]).unwrap());
    let now = T0 + 10;
    assert!(store
        .work_ready(None, now, &[running.clone(), evented.clone()])
        .unwrap()
        .eq(&false));
    let first = claim(&store, "w", 10, now);
    assert_eq!(ids(&first), vec![running, evented]);
    assert!(first.iter().all(|c| !c.queued));
    assert!(claim(&store, "w2", 10, now).is_empty());
    // The timer falls due; the held run's holder lets its lease lapse, W renews its own.
    let later = T0 + 5 * MINUTE;
    store
        .lease(LeaseOp::Renew {
            owner: "w".into(),
            runs: ids(&first),
            now: later,
            until: later + MINUTE,
        })
        .unwrap();
    assert_eq!(ids(&claim(&store, "w2", 10, later)), vec![sleeping, held]);
    assert!(store.run(&idle).unwrap().unwrap().status == RunStatus::WaitingForEvent);
    assert!(!store.work_ready(None, later, &[]).unwrap());
}

fn acquire(store: &SqliteStore, key: &str, owner: &str, now: i64) -> (bool, Option<i64>) {
    acquire_as(store, key, owner, &format!("{owner}/{key}"), 0, now)
}

/// One step's tries: the same `waiter` each time it looks.
fn acquire_as(
    store: &SqliteStore,
    key: &str,
    owner: &str,
    waiter: &str,
    priority: i64,
    now: i64,
) -> (bool, Option<i64>) {
    let op = LeaseOp::Acquire {
        key: key.into(),
        owner: owner.into(),
        waiter: waiter.into(),
        priority,
        now,
        until: now + MINUTE,
    };
    match store.lease(op).unwrap() {
        LeaseAnswer::Acquired { granted, retry_in } => (granted, retry_in),
        other => panic!("{other:?}"),
    }
}

#[test]
fn limit_slots_are_shared_by_owners_refilled_by_rate_and_lapse_with_their_holder() {
    use ramus_store::Limit;
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let limits = vec![
        Limit {
            key: "llm".into(),
            concurrency: Some(2),
            rate: None,
        },
        Limit {
            key: "api".into(),
            concurrency: None,
            rate: Some((2, MINUTE)),
        },
    ];
    store.lease(LeaseOp::SetLimits { limits, now: T0 }).unwrap();
    // Two slots, whoever takes them.
    assert_eq!(acquire(&store, "llm", "a", T0), (true, None));
    assert_eq!(acquire(&store, "llm", "b", T0), (true, None));
    assert_eq!(acquire(&store, "llm", "c", T0), (false, None));
    // Keys without a limit always pass.
    assert_eq!(acquire(&store, "free", "c", T0), (true, None));
    store
        .lease(LeaseOp::ReleaseSlot {
            key: "llm".into(),
            owner: "a".into(),
        })
        .unwrap();
    assert_eq!(acquire(&store, "llm", "c", T0 + 1), (true, None));
    // B stops renewing: its slot comes back when its lease would have ended.
    store
        .lease(LeaseOp::Renew {
            owner: "c".into(),
            runs: vec![],
            now: T0 + 1,
            until: T0 + 10 * MINUTE,
        })
        .unwrap();
    assert_eq!(acquire(&store, "llm", "d", T0 + MINUTE - 1), (false, None));
    assert_eq!(acquire(&store, "llm", "d", T0 + MINUTE), (true, None));
    // A rate: a burst of two, then one per half minute.
    assert_eq!(acquire(&store, "api", "a", T0), (true, None));
    assert_eq!(acquire(&store, "api", "a", T0), (true, None));
    assert_eq!(acquire(&store, "api", "a", T0), (false, Some(30_000)));
    assert_eq!(
        acquire(&store, "api", "a", T0 + 20_000),
        (false, Some(10_000))
    );
    assert_eq!(acquire(&store, "api", "a", T0 + 30_000), (true, None));
    let all = store.limits(T0 + MINUTE).unwrap();
    assert_eq!(
        all,
        vec![
            ("api".into(), None, Some((2, MINUTE)), 1, 0),
            ("llm".into(), Some(2), None, 2, 0),
        ]
    );
}

#[test]
fn waiters_are_granted_by_priority_then_by_how_long_they_waited() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    cap(&store, "llm", 1);
    assert_eq!(
        acquire_as(&store, "llm", "a", "holder", 0, T0),
        (true, None)
    );
    // Three wait: an early low one, then a high one, then another low one.
    assert!(!acquire_as(&store, "llm", "a", "low-1", 0, T0 + 1).0);
    assert!(!acquire_as(&store, "llm", "b", "high", 5, T0 + 2).0);
    assert!(!acquire_as(&store, "llm", "b", "low-2", 0, T0 + 3).0);
    let waiting = |now| store.limits(now).unwrap()[0].4;
    assert_eq!(waiting(T0 + 4), 3);
    store
        .lease(LeaseOp::ReleaseSlot {
            key: "llm".into(),
            owner: "a".into(),
        })
        .unwrap();
    // The slot is free, but only the head of the line takes it.
    assert!(!acquire_as(&store, "llm", "b", "low-2", 0, T0 + 5).0);
    assert!(!acquire_as(&store, "llm", "a", "low-1", 0, T0 + 5).0);
    assert!(acquire_as(&store, "llm", "b", "high", 5, T0 + 5).0);
    store
        .lease(LeaseOp::ReleaseSlot {
            key: "llm".into(),
            owner: "b".into(),
        })
        .unwrap();
    assert!(!acquire_as(&store, "llm", "b", "low-2", 0, T0 + 6).0);
    assert!(acquire_as(&store, "llm", "a", "low-1", 0, T0 + 6).0);
    assert_eq!(waiting(T0 + 7), 1);
    // A waiter whose process died stops holding the line once its row expires.
    store
        .lease(LeaseOp::ReleaseSlot {
            key: "llm".into(),
            owner: "a".into(),
        })
        .unwrap();
    assert!(acquire_as(&store, "llm", "c", "late", 0, T0 + 6 + MINUTE).0);
}

#[test]
fn a_definition_at_its_run_limit_does_not_stand_in_front_of_others() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    cap(&store, "workflow:a", 1);
    let of = |n: u32, name: &str, at: i64| {
        let mut q = queued(n, 0, at);
        q.definition = (name.into(), 1);
        enqueue(&store, q).0
    };
    let first_a = of(1, "a", T0);
    for n in 2..42 {
        of(n, "a", T0 + i64::from(n));
    }
    let b = of(100, "b", T0 + 100);
    // Three slots: one `a` (its limit), then `b`, though forty `a`s queued before it.
    assert_eq!(ids(&claim(&store, "w", 3, T0 + 200)), vec![first_a, b]);
}

#[test]
fn a_slot_that_expired_is_not_renewed_back() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    cap(&store, "llm", 1);
    assert!(acquire(&store, "llm", "a", T0).0);
    // A stalls past its lease; B takes the slot; A's late heartbeat must not revive its own.
    assert!(acquire(&store, "llm", "b", T0 + MINUTE).0);
    store
        .lease(LeaseOp::Renew {
            owner: "a".into(),
            runs: vec![],
            now: T0 + MINUTE + 1,
            until: T0 + 5 * MINUTE,
        })
        .unwrap();
    assert_eq!(store.limits(T0 + MINUTE + 2).unwrap()[0].3, 1);
}
