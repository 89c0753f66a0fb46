//! The schema and its migrations.
//!
//! `meta` holds `schema_version`; `MIGRATIONS[i]` takes the schema from version `i` to
//! `i + 1`. Opening a database applies the missing migrations in one `BEGIN IMMEDIATE`
//! transaction, so two processes opening the same new file serialize on the write lock and
//! the second sees the first's result instead of failing on `CREATE TABLE`. Migrations
//! are append-only: a released migration is never edited, a change is a new one.
//! `docs/schema.md` documents the result and must change with it.

use std::sync::Arc;

use rusqlite::params;

use crate::db::{Backend, Db, DbError};

use crate::error::{Error, Result};

/// The ordered migrations. The schema version of a database is how many were applied.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
    CREATE TABLE definitions (
        name        TEXT    NOT NULL,
        version     INTEGER NOT NULL CHECK (version >= 1),
        kind        TEXT    NOT NULL CHECK (kind IN ('dag', 'machine')),
        hash        TEXT    NOT NULL,
        config      TEXT    NOT NULL,
        created_at  INTEGER NOT NULL,
        PRIMARY KEY (name, version)
    );

    CREATE TABLE runs (
        id                  TEXT    NOT NULL PRIMARY KEY,
        name                TEXT    NOT NULL,
        kind                TEXT    NOT NULL CHECK (kind IN ('dag', 'machine')),
        definition_name     TEXT,
        definition_version  INTEGER,
        status              TEXT    NOT NULL,
        input               TEXT,
        output              TEXT,
        error               TEXT,
        tags                TEXT    NOT NULL DEFAULT '[]',
        info                TEXT,
        trace_id            TEXT,
        span_id             TEXT,
        parent_run_id       TEXT,
        parent_step_id      TEXT,
        snapshot            TEXT,
        created_at          INTEGER NOT NULL,
        updated_at          INTEGER NOT NULL,
        ended_at            INTEGER
    );
    CREATE INDEX runs_created ON runs (created_at);
    CREATE INDEX runs_name_created ON runs (name, created_at);
    CREATE INDEX runs_status_created ON runs (status, created_at);
    CREATE INDEX runs_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;

    CREATE TABLE steps (
        id              TEXT    NOT NULL PRIMARY KEY,
        run_id          TEXT    NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        seq             INTEGER NOT NULL,
        node            TEXT    NOT NULL,
        parent_step_id  TEXT,
        input           TEXT,
        output          TEXT,
        error           TEXT,
        status          TEXT    NOT NULL,
        attempt         INTEGER NOT NULL DEFAULT 1,
        started_at      INTEGER,
        ended_at        INTEGER
    );
    CREATE UNIQUE INDEX steps_run_seq ON steps (run_id, seq);

    CREATE TABLE transitions (
        id          TEXT    NOT NULL PRIMARY KEY,
        run_id      TEXT    NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        step_id     TEXT,
        seq         INTEGER NOT NULL,
        from_state  TEXT,
        to_state    TEXT    NOT NULL,
        event_type  TEXT,
        event_data  TEXT,
        time        INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX transitions_run_seq ON transitions (run_id, seq);

    CREATE TABLE events (
        id              TEXT    NOT NULL PRIMARY KEY,
        run_id          TEXT    NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        step_id         TEXT,
        parent_step_id  TEXT,
        type            TEXT    NOT NULL,
        source          TEXT,
        source_node     TEXT,
        data            TEXT,
        time            INTEGER NOT NULL
    );
    CREATE INDEX events_run_time ON events (run_id, time);

    CREATE TABLE pending_events (
        id            TEXT    NOT NULL PRIMARY KEY,
        run_id        TEXT    NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        type          TEXT    NOT NULL,
        data          TEXT,
        queue         INTEGER NOT NULL DEFAULT 0 CHECK (queue IN (0, 1)),
        created_at    INTEGER NOT NULL,
        delivered_at  INTEGER
    );
    -- (run_id, delivered_at) serves both "undelivered events of a run" and the
    -- foreign-key lookup of the cascade, which a partial index could not.
    CREATE INDEX pending_events_run ON pending_events (run_id, delivered_at, created_at);

    CREATE TABLE timers (
        id        TEXT    NOT NULL PRIMARY KEY,
        run_id    TEXT    NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        kind      TEXT    NOT NULL CHECK (kind IN ('delay', 'timeout')),
        due_at    INTEGER NOT NULL,
        payload   TEXT,
        fired_at  INTEGER
    );
    CREATE INDEX timers_run ON timers (run_id);
    CREATE INDEX timers_due ON timers (due_at) WHERE fired_at IS NULL;
    "#,
    // 2: timers of kind 'retry' (the wait before a step's next attempt; SQLite cannot
    // change a CHECK in place: the table is copied), steps whose output came from a cache,
    // the cache itself (`sqliteCache`, or the engine's own database), and run leases.
    r#"
    ALTER TABLE steps ADD COLUMN cached INTEGER NOT NULL DEFAULT 0 CHECK (cached IN (0, 1));

    ALTER TABLE runs ADD COLUMN lease_owner TEXT;
    ALTER TABLE runs ADD COLUMN lease_expires_at INTEGER;
    ALTER TABLE runs ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0;

    CREATE TABLE IF NOT EXISTS cache (
        node        TEXT    NOT NULL,
        key         TEXT    NOT NULL,
        value       TEXT    NOT NULL,
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER,
        PRIMARY KEY (node, key)
    );

    CREATE TABLE timers_v2 (
        id        TEXT    NOT NULL PRIMARY KEY,
        run_id    TEXT    NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        kind      TEXT    NOT NULL CHECK (kind IN ('delay', 'timeout', 'retry')),
        due_at    INTEGER NOT NULL,
        payload   TEXT,
        fired_at  INTEGER
    );
    INSERT INTO timers_v2 (id, run_id, kind, due_at, payload, fired_at)
        SELECT id, run_id, kind, due_at, payload, fired_at FROM timers;
    DROP TABLE timers;
    ALTER TABLE timers_v2 RENAME TO timers;
    CREATE INDEX timers_run ON timers (run_id);
    CREATE INDEX timers_due ON timers (due_at) WHERE fired_at IS NULL;
    "#,
    // 3: the queue. A queued run is a row with status 'queued' that a worker claims (its
    // lease) and starts; `priority` orders the queue (aged by waiting time), `run_at` holds
    // a run back until then, `idempotency_key` makes a second enqueue return the first run,
    // and runs sharing a `concurrency_key` run one at a time. Workers also look for runs
    // that received events while nobody held them: that index serves them.
    r#"
    ALTER TABLE runs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN run_at INTEGER;
    ALTER TABLE runs ADD COLUMN idempotency_key TEXT;
    ALTER TABLE runs ADD COLUMN concurrency_key TEXT;
    CREATE UNIQUE INDEX runs_idempotency ON runs (idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX runs_queued ON runs (created_at) WHERE status = 'queued';
    CREATE INDEX runs_concurrency ON runs (concurrency_key)
        WHERE concurrency_key IS NOT NULL;
    CREATE INDEX pending_events_undelivered ON pending_events (created_at)
        WHERE delivered_at IS NULL;
    "#,
    // 4: limits shared by every process on the store (`engine.limits`). A limit caps the
    // slots held at once (`concurrency`) and how fast they are taken (`rate_count` per
    // `rate_ms`, a token bucket: `tokens` as of `refilled_at`). A hold is one slot of a
    // key taken by an engine (`owner`), expiring with its lease unless renewed, so a dead
    // process's slots come back.
    r#"
    CREATE TABLE limits (
        key          TEXT    NOT NULL PRIMARY KEY,
        concurrency  INTEGER CHECK (concurrency IS NULL OR concurrency >= 0),
        rate_count   INTEGER CHECK (rate_count IS NULL OR rate_count >= 1),
        rate_ms      INTEGER CHECK (rate_ms IS NULL OR rate_ms >= 1),
        tokens       REAL    NOT NULL DEFAULT 0,
        refilled_at  INTEGER NOT NULL DEFAULT 0,
        updated_at   INTEGER NOT NULL
    );
    CREATE TABLE limit_holds (
        key          TEXT    NOT NULL,
        owner        TEXT    NOT NULL,
        acquired_at  INTEGER NOT NULL,
        expires_at   INTEGER NOT NULL
    );
    CREATE INDEX limit_holds_key ON limit_holds (key, expires_at);
    CREATE INDEX limit_holds_owner ON limit_holds (owner);
    "#,
    // 5: cron schedules (`engine.schedule`). `next_at` is the next tick; the worker that
    // moves it on (compare and set) enqueues that tick's run, so each tick starts once.
    r#"
    CREATE TABLE schedules (
        name             TEXT    NOT NULL PRIMARY KEY,
        definition_name  TEXT    NOT NULL,
        cron             TEXT    NOT NULL,
        timezone         TEXT,
        input            TEXT,
        context          TEXT,
        tags             TEXT    NOT NULL DEFAULT '[]',
        priority         INTEGER NOT NULL DEFAULT 0,
        next_at          INTEGER,
        created_at       INTEGER NOT NULL,
        updated_at       INTEGER NOT NULL
    );
    CREATE INDEX schedules_next ON schedules (next_at) WHERE next_at IS NOT NULL;
    "#,
    // 6: steps waiting for a limit's slot, so that slots go to waiters in order (higher
    // priority first, then the longest waiting) across processes, and readers can count
    // them. A waiter refreshes its row each time it looks; a dead process's rows expire.
    r#"
    CREATE TABLE limit_waits (
        id          TEXT    NOT NULL PRIMARY KEY,
        key         TEXT    NOT NULL,
        owner       TEXT    NOT NULL,
        priority    INTEGER NOT NULL DEFAULT 0,
        since       INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL
    );
    CREATE INDEX limit_waits_key ON limit_waits (key, priority, since);
    "#,
    // 7: time travel. A machine step keeps the context it started with (a JSON Patch from
    // the previous step's) and what the machine was doing then, so any step can be read
    // back (`contextAt`) or forked from; a forked run names the run and step it came from.
    // A rerun sets a node's steps aside (`superseded_at`) instead of deleting them.
    r#"
    ALTER TABLE steps ADD COLUMN context TEXT;
    ALTER TABLE steps ADD COLUMN snapshot TEXT;
    ALTER TABLE steps ADD COLUMN superseded_at INTEGER;
    ALTER TABLE runs ADD COLUMN forked_from_run_id TEXT;
    ALTER TABLE runs ADD COLUMN forked_from_step_id TEXT;
    CREATE INDEX runs_forked ON runs (forked_from_run_id) WHERE forked_from_run_id IS NOT NULL;
    "#,
];

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The error of the migration to `version`.
fn err(version: u32) -> impl Fn(DbError) -> Error {
    move |source| Error::Migration {
        version,
        source: Arc::new(source),
    }
}

/// Bring the database to [`SCHEMA_VERSION`]. Returns the version found before.
pub(crate) fn migrate(conn: &dyn Backend, now_ms: i64) -> Result<u32> {
    conn.begin().map_err(err(1))?;
    let result = migrate_in(conn, now_ms);
    let ended = match &result {
        Ok(Some(_)) => conn.commit(),
        _ => conn.rollback(),
    }
    .map_err(err(SCHEMA_VERSION));
    let found = result?;
    ended?;
    // `None`: nothing to do (the no-op `CREATE TABLE IF NOT EXISTS` was rolled back).
    Ok(found.unwrap_or(SCHEMA_VERSION))
}

/// The migration inside its transaction: `Some(found)` once applied, `None` when the
/// database was already at [`SCHEMA_VERSION`].
fn migrate_in(conn: &dyn Backend, now_ms: i64) -> Result<Option<u32>> {
    // Two processes opening one new database: the second waits here for the first's
    // schema (SQLite's write lock is already held by `begin`).
    conn.lock("ramus-store schema").map_err(err(1))?;
    // `meta` exists before any migration because it records which ones ran.
    conn.batch(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL)",
    )
    .map_err(err(1))?;
    let found: u32 = (conn as &dyn Db)
        .row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            &[],
            |row| row.get::<String>(0),
        )
        .map_err(err(1))?
        .map(|v| v.parse().unwrap_or(u32::MAX))
        .unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == SCHEMA_VERSION {
        return Ok(None);
    }
    if found == 0 {
        conn.prelude().map_err(err(1))?;
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = i as u32 + 1;
        conn.batch(sql).map_err(err(version))?;
    }
    let set = "INSERT INTO meta (key, value) VALUES (?1, ?2) \
               ON CONFLICT (key) DO UPDATE SET value = excluded.value";
    let stamp = [
        ("schema_version", SCHEMA_VERSION.to_string()),
        ("migrated_at", now_ms.to_string()),
        (
            "writer",
            concat!("ramus-store ", env!("CARGO_PKG_VERSION")).to_owned(),
        ),
    ];
    for (key, value) in stamp {
        conn.execute(set, params![key, value])
            .map_err(err(SCHEMA_VERSION))?;
    }
    if found == 0 {
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('created_at', ?1) ON CONFLICT (key) DO NOTHING",
            params![now_ms.to_string()],
        )
        .map_err(err(1))?;
    }
    Ok(Some(found))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    #[test]
    fn version_2_keeps_the_timers_of_a_version_1_file_and_takes_retry_timers() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(
            "CREATE TABLE meta (key TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL);
             INSERT INTO meta VALUES ('schema_version', '1');
             INSERT INTO runs (id, name, kind, status, created_at, updated_at)
                 VALUES ('r', 'n', 'machine', 'sleeping', 1, 1);
             INSERT INTO timers VALUES ('t', 'r', 'delay', 50, '{\"timer\":1}', NULL);",
        )
        .unwrap();
        assert!(conn
            .execute(
                "INSERT INTO timers VALUES ('u', 'r', 'retry', 60, NULL, NULL)",
                []
            )
            .is_err());
        assert_eq!(migrate(&conn, 5).unwrap(), 1);
        let kept: (String, i64, String) = conn
            .query_row(
                "SELECT kind, due_at, payload FROM timers WHERE id = 't'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(kept, ("delay".into(), 50, r#"{"timer":1}"#.into()));
        conn.execute(
            "INSERT INTO timers VALUES ('u', 'r', 'retry', 60, NULL, NULL)",
            [],
        )
        .unwrap();
        let indexes: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'timers' AND name IN ('timers_run', 'timers_due')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 2);
        // The cascade still holds.
        conn.execute_batch("PRAGMA foreign_keys = ON; DELETE FROM runs;")
            .unwrap();
        let left: i64 = conn
            .query_row("SELECT count(*) FROM timers", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0);
    }
}
