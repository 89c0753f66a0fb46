//! Run ownership: a live run is held by one engine through a lease on its row (owner,
//! expiry, fencing token). Claims, renewals and fences run in the writer's transactions, so
//! two processes claiming one run are serialized by the database (SQLite's write lock, a
//! PostgreSQL row lock): exactly one wins.
//!
//! The queue is ownership too: an enqueued run is a row nobody holds yet (status
//! `queued`), and a worker takes work by claiming rows, queued or left by their holders.

use rusqlite::params;

use crate::db::Db;

use crate::error::{Error, Result};
use crate::limits::Check;

/// A change to leases, applied by the store's writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseOp {
    /// Take `run_id` for `owner` until `until`, unless another owner holds it past `now`.
    Claim {
        /// The run.
        run_id: String,
        /// Who takes it.
        owner: String,
        /// A holder known to be gone (a crashed process on this machine): its lease is free
        /// before it expires.
        dead: Option<String>,
        /// The time now (ms): a lease that expired by then is free.
        now: i64,
        /// The new expiry.
        until: i64,
    },
    /// Extend the leases `owner` holds on `runs`, and its limit slots that have not
    /// expired by `now`, to `until`.
    Renew {
        /// Who holds them.
        owner: String,
        /// The runs it believes it holds.
        runs: Vec<String>,
        /// The time now (ms): a slot that expired by then stays expired (another process
        /// may hold it now).
        now: i64,
        /// The new expiry.
        until: i64,
    },
    /// Give `runs` back (another process may take them at once).
    Release {
        /// Who holds them.
        owner: String,
        /// The runs.
        runs: Vec<String>,
    },
    /// Add a run to the queue, unless its idempotency key names a run already there.
    Enqueue(Box<QueuedRun>),
    /// Claim up to `limit` runs that need a worker, for `owner` until `until`: first
    /// top-level runs nobody holds that have something to do (they were running when their
    /// holder stopped, a timer of theirs fell due, or an event waits for them), oldest
    /// first; then queued runs whose `run_at` has come, by effective priority (`priority`
    /// plus one per `aging_ms` waited, so a low priority never starves), skipping those
    /// whose concurrency key another live run has.
    ClaimWork {
        /// Who takes them.
        owner: String,
        /// Only runs of these definitions (all when `None`).
        names: Option<Vec<String>>,
        /// At most this many.
        limit: u32,
        /// The time now (ms).
        now: i64,
        /// The new leases' expiry.
        until: i64,
        /// Waiting this long (ms) raises a queued run's priority by one.
        aging_ms: i64,
        /// Runs not to take (this worker could not start them).
        skip: Vec<String>,
    },
    /// Set limits shared by every process on the store; keys not named keep theirs.
    SetLimits {
        /// The limits.
        limits: Vec<crate::Limit>,
        /// The time now (ms): a new rate's bucket starts full then.
        now: i64,
    },
    /// Take one slot of the limit `key` for `owner` until `until` (renewed with its
    /// leases), if the limit lets one more in now and no waiter ranks before `waiter`;
    /// otherwise `waiter` keeps (or takes) its place in the line.
    Acquire {
        /// The limit.
        key: String,
        /// Who takes it.
        owner: String,
        /// This wait (one per step waiting): its place in the line of waiters.
        waiter: String,
        /// Higher waiters are granted first.
        priority: i64,
        /// The time now (ms).
        now: i64,
        /// When the slot comes back unless renewed.
        until: i64,
    },
    /// Give back one slot of `key` that `owner` holds.
    ReleaseSlot {
        /// The limit.
        key: String,
        /// Who holds it.
        owner: String,
    },
    /// A wait for a slot ended without one (its step no longer wants it): it leaves the
    /// line at once rather than when its row expires.
    StopWaiting {
        /// The wait.
        waiter: String,
    },
    /// Give back every slot `owner` holds (it closes).
    DropSlots {
        /// Who holds them.
        owner: String,
    },
    /// Create or replace a schedule.
    Schedule(Box<crate::ScheduleRow>),
    /// Remove a schedule (its runs stay).
    Unschedule {
        /// The schedule.
        name: String,
    },
    /// A schedule's tick `due` came: if its `next_at` is still `due`, move it to `next`
    /// and enqueue `run` (keyed `schedule:<name>:<due>`); otherwise another worker did.
    Tick {
        /// The schedule.
        name: String,
        /// The tick that came.
        due: i64,
        /// The one after it (`None`: the expression has no more).
        next: Option<i64>,
        /// The tick's run (`None`: the tick passes without one, its definition is gone).
        run: Option<Box<QueuedRun>>,
    },
}

/// A cron schedule (`engine.schedule`), a row of `schedules`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleRow {
    /// Its name.
    pub name: String,
    /// The stored definition each tick runs (its latest version then).
    pub definition_name: String,
    /// The cron expression.
    pub cron: String,
    /// The IANA time zone it is read in (UTC when `None`).
    pub timezone: Option<String>,
    /// Each run's input (JSON text).
    pub input: Option<String>,
    /// Each run's context (JSON text).
    pub context: Option<String>,
    /// Each run's tags.
    pub tags: Vec<String>,
    /// Each run's priority.
    pub priority: i64,
    /// The next tick (ms), `None` when there is none.
    pub next_at: Option<i64>,
    /// When it was first made.
    pub created_at: i64,
    /// When it was last set.
    pub updated_at: i64,
}

/// A run to enqueue (`engine.enqueue`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedRun {
    /// Its id (UUIDv7).
    pub id: String,
    /// Its name (the definition's, unless one was given).
    pub name: String,
    /// What it runs.
    pub kind: crate::Kind,
    /// The stored definition it runs.
    pub definition: (String, i64),
    /// Its input (JSON text).
    pub input: Option<String>,
    /// Its context (JSON text): the row's snapshot holds it until the run starts.
    pub context: Option<String>,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its info (JSON text).
    pub info: Option<String>,
    /// Higher runs first.
    pub priority: i64,
    /// Not before this time (ms).
    pub run_at: Option<i64>,
    /// A second enqueue with this key returns this run.
    pub idempotency_key: Option<String>,
    /// Runs with this key run one at a time.
    pub concurrency_key: Option<String>,
    /// When it was enqueued (ms).
    pub created_at: i64,
    /// Claim it at once for this owner until this time (`start` with an idempotency key).
    pub claim: Option<(String, i64)>,
}

/// A run [`LeaseOp::ClaimWork`] took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    /// The run.
    pub run_id: String,
    /// Its fencing token.
    pub token: i64,
    /// A queued run, to start; otherwise a stored run, to resume.
    pub queued: bool,
    /// Its priority (its steps wait for limits in this order).
    pub priority: i64,
}

/// What a [`LeaseOp`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseAnswer {
    /// The claim succeeded: writes of the run carry this fencing token.
    Claimed {
        /// The token, one more than the last holder's.
        token: i64,
    },
    /// Another live owner holds the run.
    Held {
        /// The holder.
        owner: String,
        /// When its lease expires (ms).
        expires_at: i64,
    },
    /// Renewed; the runs that were no longer this owner's (another took them over).
    Renewed {
        /// The runs lost.
        lost: Vec<String>,
    },
    /// Released.
    Released,
    /// Enqueued, or found by its idempotency key (`created: false`).
    Enqueued {
        /// The run.
        run_id: String,
        /// Whether this enqueue created it.
        created: bool,
        /// Its fencing token, when it was claimed on creation.
        token: Option<i64>,
    },
    /// The runs claimed, resumable ones first.
    Work(Vec<Claimed>),
    /// Done (limits set, a slot given back).
    Done,
    /// A schedule was set: its next tick (kept when its cron and time zone did not
    /// change, so setting a schedule again at each start does not skip a due tick).
    Scheduled {
        /// The next tick (ms).
        next: Option<i64>,
    },
    /// A slot was taken, or not: then `retry_in` says when the limit's rate allows the
    /// next (ms), or is `None` when all its slots are held.
    Acquired {
        /// Whether the slot was taken.
        granted: bool,
        /// When to try again, for a rate.
        retry_in: Option<i64>,
    },
}

pub(crate) fn apply(conn: &dyn Db, op: &LeaseOp) -> Result<LeaseAnswer> {
    let read = |e| Error::read("leases", e);
    match op {
        LeaseOp::Claim {
            run_id,
            owner,
            dead,
            now,
            until,
        } => {
            let token: Option<i64> = conn
                .row(
                    "UPDATE runs SET lease_owner = ?2, lease_expires_at = ?4, lease_token = lease_token + 1 \
                     WHERE id = ?1 AND (lease_owner IS NULL OR lease_owner = ?2 OR lease_owner = ?5 \
                         OR lease_expires_at <= ?3) \
                     RETURNING lease_token",
                    params![run_id, owner, now, until, dead],
                    |r| r.get(0),
                )
                .map_err(read)?;
            if let Some(token) = token {
                return Ok(LeaseAnswer::Claimed { token });
            }
            let held: Option<(Option<String>, Option<i64>)> = conn
                .row(
                    "SELECT lease_owner, lease_expires_at FROM runs WHERE id = ?1",
                    params![run_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(read)?;
            match held {
                Some((Some(owner), Some(expires_at))) => {
                    Ok(LeaseAnswer::Held { owner, expires_at })
                }
                _ => Err(Error::NotFound {
                    what: "run",
                    id: run_id.clone(),
                }),
            }
        }
        LeaseOp::Renew {
            owner,
            runs,
            now,
            until,
        } => {
            let ids = serde_json::to_string(runs).unwrap_or_default();
            conn.execute(
                "UPDATE runs SET lease_expires_at = ?3 \
                 WHERE lease_owner = ?1 AND id IN (SELECT value FROM json_each(?2))",
                params![owner, ids, until],
            )
            .map_err(read)?;
            crate::limits::renew(conn, owner, Some((*now, *until)))?;
            let lost = conn
                .rows(
                    "SELECT value FROM json_each(?2) WHERE value NOT IN \
                     (SELECT id FROM runs WHERE lease_owner = ?1 AND id IN (SELECT value FROM json_each(?2)))",
                    params![owner, ids],
                    |r| r.get::<String>(0),
                )
                .map_err(read)?;
            Ok(LeaseAnswer::Renewed { lost })
        }
        LeaseOp::Enqueue(q) => enqueue(conn, q),
        LeaseOp::SetLimits { limits, now } => {
            crate::limits::set(conn, limits, *now)?;
            Ok(LeaseAnswer::Done)
        }
        LeaseOp::Acquire {
            key,
            owner,
            waiter,
            priority,
            now,
            until,
        } => Ok(
            match crate::limits::acquire(conn, key, owner, waiter, *priority, *now, *until)? {
                Check::Allowed(_) => LeaseAnswer::Acquired {
                    granted: true,
                    retry_in: None,
                },
                Check::Full => LeaseAnswer::Acquired {
                    granted: false,
                    retry_in: None,
                },
                Check::Wait(ms) => LeaseAnswer::Acquired {
                    granted: false,
                    retry_in: Some(ms),
                },
            },
        ),
        LeaseOp::ReleaseSlot { key, owner } => {
            crate::limits::release(conn, key, owner)?;
            Ok(LeaseAnswer::Done)
        }
        LeaseOp::Schedule(row) => {
            let next: Option<i64> = conn
                .one(
                    "INSERT INTO schedules (name, definition_name, cron, timezone, input, context, tags, \
                         priority, next_at, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10) \
                     ON CONFLICT (name) DO UPDATE SET definition_name = excluded.definition_name, \
                         cron = excluded.cron, timezone = excluded.timezone, input = excluded.input, \
                         context = excluded.context, tags = excluded.tags, priority = excluded.priority, \
                         next_at = CASE WHEN schedules.cron = excluded.cron \
                             AND schedules.timezone IS NOT DISTINCT FROM excluded.timezone \
                             AND schedules.next_at IS NOT NULL \
                             THEN schedules.next_at ELSE excluded.next_at END, \
                         updated_at = excluded.updated_at \
                     RETURNING next_at",
                    params![
                        row.name,
                        row.definition_name,
                        row.cron,
                        row.timezone,
                        row.input,
                        row.context,
                        crate::write::tags_json(&row.tags),
                        row.priority,
                        row.next_at,
                        row.updated_at,
                    ],
                    |r| r.get(0),
                )
                .map_err(|e| Error::write("schedule", &row.name, e))?;
            Ok(LeaseAnswer::Scheduled { next })
        }
        LeaseOp::Unschedule { name } => {
            conn.execute("DELETE FROM schedules WHERE name = ?1", params![name])
                .map_err(|e| Error::write("schedule", name, e))?;
            Ok(LeaseAnswer::Done)
        }
        LeaseOp::Tick {
            name,
            due,
            next,
            run,
        } => {
            let moved = conn
                .execute(
                    "UPDATE schedules SET next_at = ?3 WHERE name = ?1 AND next_at = ?2",
                    params![name, due, next],
                )
                .map_err(|e| Error::write("schedule", name, e))?;
            match run {
                Some(run) if moved > 0 => enqueue(conn, run),
                _ => Ok(LeaseAnswer::Done),
            }
        }
        LeaseOp::StopWaiting { waiter } => {
            crate::limits::stop_waiting(conn, waiter)?;
            Ok(LeaseAnswer::Done)
        }
        LeaseOp::DropSlots { owner } => {
            crate::limits::renew(conn, owner, None)?;
            Ok(LeaseAnswer::Done)
        }
        LeaseOp::ClaimWork {
            owner,
            names,
            limit,
            now,
            until,
            aging_ms,
            skip,
        } => {
            let names = names
                .as_ref()
                .map(|n| serde_json::to_string(n).unwrap_or_default());
            let skip = serde_json::to_string(skip).unwrap_or_default();
            let mut claimed = Vec::new();
            let ids: Vec<(String, i64)> = conn
                .rows(RESUMABLE, params![now, names, limit, skip], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .map_err(read)?;
            for (id, priority) in ids {
                if let Some(token) = take(conn, &id, owner, *now, *until)? {
                    claimed.push(Claimed {
                        run_id: id,
                        token,
                        queued: false,
                        priority,
                    });
                }
            }
            // The best candidates in one scan of the queue, then taken in order. A claim
            // changes what the next may take: a concurrency key taken in this batch, and
            // run limits (counted again after each take). A definition whose run limit is
            // full is left out of the next scans, so it never stands in front of others.
            let mut skip_list: Vec<String> = serde_json::from_str(&skip).unwrap_or_default();
            let mut keys_taken = std::collections::HashSet::new();
            let mut limited = std::collections::HashMap::new();
            let mut full_names: Vec<String> = Vec::new();
            for _ in 0..16 {
                if claimed.len() >= *limit as usize {
                    break;
                }
                let want = (*limit as usize - claimed.len()) * 2 + 8;
                let skip = serde_json::to_string(&skip_list).unwrap_or_default();
                let full = serde_json::to_string(&full_names).unwrap_or_default();
                let batch: Vec<(String, Option<String>, Option<String>, i64)> = conn
                    .rows(
                        NEXT_QUEUED,
                        params![now, names, (*aging_ms).max(1), skip, want as i64, full],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )
                    .map_err(read)?;
                if batch.is_empty() {
                    break;
                }
                let (before, blocked_before) = (claimed.len(), full_names.len());
                let mut all_held = false;
                for (id, name, key, priority) in batch {
                    if claimed.len() >= *limit as usize {
                        break;
                    }
                    if name.as_ref().is_some_and(|n| full_names.contains(n)) {
                        continue;
                    }
                    skip_list.push(id.clone());
                    if let Some(k) = &key {
                        if keys_taken.contains(k) || key_busy(conn, k, &id, *now)? {
                            continue;
                        }
                    }
                    let mut checks = Vec::new();
                    let mut held_back = None;
                    for lk in [
                        name.as_ref().map(|n| format!("workflow:{n}")),
                        Some("*".to_owned()),
                    ]
                    .into_iter()
                    .flatten()
                    {
                        let has = match limited.get(&lk) {
                            Some(&has) => has,
                            None => {
                                let has = crate::limits::exists(conn, &lk)?;
                                limited.insert(lk.clone(), has);
                                has
                            }
                        };
                        if !has {
                            continue;
                        }
                        let in_use = runs_in_progress(conn, &lk, *now)?;
                        match crate::limits::check(conn, &lk, *now, Some(in_use))? {
                            c @ Check::Allowed(_) => checks.push((lk, c)),
                            _ => {
                                held_back = Some(lk);
                                break;
                            }
                        }
                    }
                    match held_back.as_deref() {
                        Some("*") => {
                            all_held = true;
                            break;
                        }
                        Some(_) => {
                            // Unblocked only when one of its runs ends: not in this claim.
                            full_names.extend(name);
                            continue;
                        }
                        None => {}
                    }
                    let Some(token) = take(conn, &id, owner, *now, *until)? else {
                        continue;
                    };
                    for (lk, c) in checks {
                        crate::limits::consume(conn, &lk, c, *now)?;
                    }
                    if let Some(k) = key {
                        keys_taken.insert(k);
                    }
                    claimed.push(Claimed {
                        run_id: id,
                        token,
                        queued: true,
                        priority,
                    });
                }
                if all_held || (claimed.len() == before && full_names.len() == blocked_before) {
                    break;
                }
            }
            Ok(LeaseAnswer::Work(claimed))
        }
        LeaseOp::Release { owner, runs } => {
            let ids = serde_json::to_string(runs).unwrap_or_default();
            conn.execute(
                "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL \
                 WHERE lease_owner = ?1 AND id IN (SELECT value FROM json_each(?2))",
                params![owner, ids],
            )
            .map_err(read)?;
            Ok(LeaseAnswer::Released)
        }
    }
}

/// Top-level runs nobody holds (or whose holder's lease expired) that have something to
/// do, oldest change first. Each part starts from an index (running runs by status, due
/// timers, undelivered events; `CROSS JOIN` keeps SQLite from starting at the runs), so an
/// idle poll does not visit every resting machine. `?1` now, `?2` definition names (JSON) or null, `?3` limit, `?4`
/// runs to skip (JSON).
const RESUMABLE: &str = "\
    SELECT id, priority FROM ( \
      SELECT r.id, r.priority, r.updated_at FROM runs r \
        WHERE r.status = 'running' AND r.parent_run_id IS NULL AND r.definition_name IS NOT NULL \
          AND (r.lease_owner IS NULL OR r.lease_expires_at <= ?1) \
          AND (CAST(?2 AS TEXT) IS NULL OR r.definition_name IN (SELECT value FROM json_each(?2))) \
          AND r.id NOT IN (SELECT value FROM json_each(?4)) \
      UNION \
      SELECT r.id, r.priority, r.updated_at FROM timers t CROSS JOIN runs r ON r.id = t.run_id \
        WHERE t.fired_at IS NULL AND t.due_at <= ?1 \
          AND r.status IN ('running', 'waitingForEvent', 'sleeping') \
          AND r.parent_run_id IS NULL AND r.definition_name IS NOT NULL \
          AND (r.lease_owner IS NULL OR r.lease_expires_at <= ?1) \
          AND (CAST(?2 AS TEXT) IS NULL OR r.definition_name IN (SELECT value FROM json_each(?2))) \
          AND r.id NOT IN (SELECT value FROM json_each(?4)) \
      UNION \
      SELECT r.id, r.priority, r.updated_at FROM pending_events e CROSS JOIN runs r ON r.id = e.run_id \
        WHERE e.delivered_at IS NULL \
          AND r.status IN ('running', 'waitingForEvent', 'sleeping') \
          AND r.parent_run_id IS NULL AND r.definition_name IS NOT NULL \
          AND (r.lease_owner IS NULL OR r.lease_expires_at <= ?1) \
          AND (CAST(?2 AS TEXT) IS NULL OR r.definition_name IN (SELECT value FROM json_each(?2))) \
          AND r.id NOT IN (SELECT value FROM json_each(?4)) \
    ) AS resumable ORDER BY updated_at \
    LIMIT ?3";

/// The queued runs to start next: due, not held, their concurrency key free, by effective
/// priority. `?1` now, `?2` definition names (JSON) or null, `?3` ms of waiting per
/// priority point, `?4` runs to skip (JSON), `?5` how many, `?6` definitions whose run
/// limit is full (JSON). A key is taken by a live run or by a queued one claimed just now.
const NEXT_QUEUED: &str = "\
    SELECT id, definition_name, concurrency_key, priority FROM runs q \
    WHERE q.status = 'queued' AND (q.run_at IS NULL OR q.run_at <= ?1) \
      AND (q.lease_owner IS NULL OR q.lease_expires_at <= ?1) \
      AND (CAST(?2 AS TEXT) IS NULL OR q.definition_name IN (SELECT value FROM json_each(?2))) \
      AND q.id NOT IN (SELECT value FROM json_each(?4)) \
      AND (q.definition_name IS NULL OR q.definition_name NOT IN (SELECT value FROM json_each(?6))) \
      AND (q.concurrency_key IS NULL OR NOT EXISTS ( \
        SELECT 1 FROM runs o WHERE o.concurrency_key = q.concurrency_key AND o.id <> q.id \
          AND (o.status IN ('running', 'waitingForEvent', 'sleeping') \
            OR (o.status = 'queued' AND o.lease_owner IS NOT NULL AND o.lease_expires_at > ?1)))) \
    ORDER BY q.priority + (?1 - coalesce(q.run_at, q.created_at)) / CAST(?3 AS REAL) DESC, q.created_at, q.id \
    LIMIT ?5 /*pg:FOR UPDATE OF q SKIP LOCKED*/";

/// Whether [`LeaseOp::ClaimWork`] would find anything, read without the write lock (an
/// idle worker polls this, not the writer).
pub(crate) fn work_ready(
    conn: &dyn Db,
    names: Option<&[String]>,
    now: i64,
    skip: &[String],
) -> Result<bool> {
    let names = names.map(|n| serde_json::to_string(n).unwrap_or_default());
    let skip = serde_json::to_string(skip).unwrap_or_default();
    let read = |e| Error::read("the queue", e);
    let resumable: Option<String> = conn
        .row(RESUMABLE, params![now, names, 1, skip], |r| r.get(0))
        .map_err(read)?;
    if resumable.is_some() {
        return Ok(true);
    }
    let queued: Option<String> = conn
        .row(NEXT_QUEUED, params![now, names, 1, skip, 1, "[]"], |r| {
            r.get(0)
        })
        .map_err(read)?;
    Ok(queued.is_some())
}

/// Top-level runs in progress that a run limit `key` (`workflow:<name>` or `*`) counts:
/// those running, and queued ones claimed and about to start.
fn runs_in_progress(conn: &dyn Db, key: &str, now: i64) -> Result<i64> {
    let name = key.strip_prefix("workflow:");
    conn.one(
        "SELECT count(*) FROM runs WHERE parent_run_id IS NULL \
           AND (CAST(?1 AS TEXT) IS NULL OR definition_name = ?1) \
           AND (status = 'running' OR (status = 'queued' AND lease_owner IS NOT NULL AND lease_expires_at > ?2))",
        params![name, now],
        |r| r.get(0),
    )
    .map_err(|e| Error::read(format!("the runs the limit {key:?} counts"), e))
}

/// Whether a run other than `id` holds the concurrency key `key`. The scan that found
/// `id` said it was free; another process may have taken it since (PostgreSQL), so the
/// key is locked and looked at again.
fn key_busy(conn: &dyn Db, key: &str, id: &str, now: i64) -> Result<bool> {
    let read = |e| Error::read(format!("the runs of concurrency key {key:?}"), e);
    conn.lock(key).map_err(read)?;
    conn.one(
        "SELECT EXISTS (SELECT 1 FROM runs o WHERE o.concurrency_key = ?1 AND o.id <> ?2 \
           AND (o.status IN ('running', 'waitingForEvent', 'sleeping') \
             OR (o.status = 'queued' AND o.lease_owner IS NOT NULL AND o.lease_expires_at > ?3)))",
        params![key, id, now],
        |r| r.get(0),
    )
    .map_err(read)
}

/// Every schedule (`due`: only those whose next tick came by then), by name.
pub(crate) fn schedules(conn: &dyn Db, due: Option<i64>) -> Result<Vec<crate::ScheduleRow>> {
    conn.rows(
        "SELECT name, definition_name, cron, timezone, input, context, tags, priority, next_at, \
             created_at, updated_at FROM schedules \
         WHERE CAST(?1 AS INTEGER) IS NULL OR (next_at IS NOT NULL AND next_at <= ?1) ORDER BY name",
        params![due],
        |r| {
            let tags: String = r.get(6)?;
            Ok(crate::ScheduleRow {
                name: r.get(0)?,
                definition_name: r.get(1)?,
                cron: r.get(2)?,
                timezone: r.get(3)?,
                input: r.get(4)?,
                context: r.get(5)?,
                tags: serde_json::from_str(&tags).unwrap_or_default(),
                priority: r.get(7)?,
                next_at: r.get(8)?,
                created_at: r.get(9)?,
                updated_at: r.get(10)?,
            })
        },
    )
    .map_err(|e| Error::read("schedules", e))
}

/// Take one run found free: its next token, or `None` if it is no longer free.
fn take(conn: &dyn Db, id: &str, owner: &str, now: i64, until: i64) -> Result<Option<i64>> {
    conn.row(
        "UPDATE runs SET lease_owner = ?2, lease_expires_at = ?4, lease_token = lease_token + 1 \
         WHERE id = ?1 AND (lease_owner IS NULL OR lease_owner = ?2 OR lease_expires_at <= ?3) \
         RETURNING lease_token",
        params![id, owner, now, until],
        |r| r.get(0),
    )
    .map_err(|e| Error::read("leases", e))
}

fn enqueue(conn: &dyn Db, q: &QueuedRun) -> Result<LeaseAnswer> {
    let snapshot = q.context.as_ref().map(|c| format!("{{\"context\":{c}}}"));
    let (owner, until, token) = match &q.claim {
        Some((owner, until)) => (Some(owner.as_str()), Some(*until), 1),
        None => (None, None, 0),
    };
    // A key taken already (by a run committed before, or by another process's enqueue in
    // flight: the insert waits for it) leaves the insert undone instead of failing it.
    let inserted = conn
        .execute(
            "INSERT INTO runs (id, name, kind, definition_name, definition_version, status, input, \
                 tags, info, snapshot, created_at, updated_at, priority, run_at, idempotency_key, \
                 concurrency_key, lease_owner, lease_expires_at, lease_token) \
             VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?12, ?13, ?14, ?15, \
                 ?16, ?17) \
             ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
            params![
            q.id,
            q.name,
            q.kind.as_str(),
            q.definition.0,
            q.definition.1,
            q.input,
            crate::write::tags_json(&q.tags),
            q.info,
            snapshot,
            q.created_at,
            q.priority,
            q.run_at,
            q.idempotency_key,
            q.concurrency_key,
            owner,
            until,
            token,
            ],
        )
        .map_err(|e| Error::write("run", &q.id, e))?;
    if inserted == 0 {
        let key = q.idempotency_key.as_deref().unwrap_or_default();
        let found: Option<String> = conn
            .row(
                "SELECT id FROM runs WHERE idempotency_key = ?1",
                params![key],
                |r| r.get(0),
            )
            .map_err(|e| Error::read("queue", e))?;
        return match found {
            Some(run_id) => Ok(LeaseAnswer::Enqueued {
                run_id,
                created: false,
                token: None,
            }),
            None => Err(Error::NotFound {
                what: "run with idempotency key",
                id: key.to_owned(),
            }),
        };
    }
    Ok(LeaseAnswer::Enqueued {
        run_id: q.id.clone(),
        created: true,
        token: q.claim.as_ref().map(|_| 1),
    })
}

/// A submission's fence: its records are written only if `owner` still holds `run_id`
/// with `token`.
pub(crate) fn check_fence(conn: &dyn Db, run_id: &str, owner: &str, token: i64) -> Result<()> {
    // The row stays locked until the commit (PostgreSQL): no claim can slip in between this
    // check and the records it lets through. SQLite's writer holds the whole database.
    let row: Option<(Option<String>, i64, Option<i64>)> = conn
        .row(
            "SELECT lease_owner, lease_token, lease_expires_at FROM runs WHERE id = ?1 \
             /*pg:FOR UPDATE*/",
            params![run_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(|e| Error::read("leases", e))?;
    match row {
        Some((Some(o), t, _)) if o == owner && t == token => Ok(()),
        Some((holder, _, expires_at)) => Err(Error::LeaseLost {
            run_id: run_id.to_owned(),
            holder,
            expires_at,
        }),
        // A run whose row is gone (pruned) has no lease to lose: the write fails on its own.
        None => Ok(()),
    }
}
