//! The reads, on the read connection. In WAL mode they see the last committed state and
//! never wait for the writer (nor make it wait).

use rusqlite::types::{Type, Value};
use rusqlite::{params, Connection, ToSql};

use crate::db::{Db, Row};

use crate::error::{Error, Result};
use crate::model::{
    CurrentStep, CustomEvent, Definition, PendingEvent, Run, RunFilter, RunQuery, RunSummary, Step,
    StepStatus, Timer, Transition,
};

const RUN_COLUMNS: &str = "id, name, kind, definition_name, definition_version, status, input, \
    output, error, tags, info, trace_id, span_id, parent_run_id, parent_step_id, snapshot, \
    created_at, updated_at, ended_at, forked_from_run_id, forked_from_step_id";

fn run_row(row: &Row<'_>) -> rusqlite::Result<Run> {
    let tags: String = row.get(9)?;
    let tags = serde_json::from_str(&tags)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(9, Type::Text, Box::new(e)))?;
    Ok(Run {
        id: row.get(0)?,
        name: row.get(1)?,
        kind: row.get(2)?,
        definition_name: row.get(3)?,
        definition_version: row.get(4)?,
        status: row.get(5)?,
        input: row.get(6)?,
        output: row.get(7)?,
        error: row.get(8)?,
        tags,
        info: row.get(10)?,
        trace_id: row.get(11)?,
        span_id: row.get(12)?,
        parent_run_id: row.get(13)?,
        parent_step_id: row.get(14)?,
        snapshot: row.get(15)?,
        created_at: row.get(16)?,
        updated_at: row.get(17)?,
        ended_at: row.get(18)?,
        forked_from_run_id: row.get(19)?,
        forked_from_step_id: row.get(20)?,
    })
}

const STEP_COLUMNS: &str = "id, run_id, seq, node, parent_step_id, input, output, error, \
    status, attempt, started_at, ended_at, cached, context, snapshot, superseded_at";

fn step_row(row: &Row<'_>) -> rusqlite::Result<Step> {
    Ok(Step {
        id: row.get(0)?,
        run_id: row.get(1)?,
        seq: row.get(2)?,
        node: row.get(3)?,
        parent_step_id: row.get(4)?,
        input: row.get(5)?,
        output: row.get(6)?,
        error: row.get(7)?,
        status: row.get(8)?,
        attempt: row.get(9)?,
        started_at: row.get(10)?,
        ended_at: row.get(11)?,
        cached: row.get(12)?,
        context: row.get(13)?,
        snapshot: row.get(14)?,
        superseded_at: row.get(15)?,
    })
}

const TRANSITION_COLUMNS: &str =
    "id, run_id, step_id, seq, from_state, to_state, event_type, event_data, time";

fn transition_row(row: &Row<'_>) -> rusqlite::Result<Transition> {
    Ok(Transition {
        id: row.get(0)?,
        run_id: row.get(1)?,
        step_id: row.get(2)?,
        seq: row.get(3)?,
        from_state: row.get(4)?,
        to_state: row.get(5)?,
        event_type: row.get(6)?,
        event_data: row.get(7)?,
        time: row.get(8)?,
    })
}

const EVENT_COLUMNS: &str =
    "id, run_id, step_id, parent_step_id, type, source, source_node, data, time";

fn event_row(row: &Row<'_>) -> rusqlite::Result<CustomEvent> {
    Ok(CustomEvent {
        id: row.get(0)?,
        run_id: row.get(1)?,
        step_id: row.get(2)?,
        parent_step_id: row.get(3)?,
        event_type: row.get(4)?,
        source: row.get(5)?,
        source_node: row.get(6)?,
        data: row.get(7)?,
        time: row.get(8)?,
    })
}

const PENDING_COLUMNS: &str = "id, run_id, type, data, queue, created_at, delivered_at";

fn pending_row(row: &Row<'_>) -> rusqlite::Result<PendingEvent> {
    Ok(PendingEvent {
        id: row.get(0)?,
        run_id: row.get(1)?,
        event_type: row.get(2)?,
        data: row.get(3)?,
        queue: row.get(4)?,
        created_at: row.get(5)?,
        delivered_at: row.get(6)?,
    })
}

const TIMER_COLUMNS: &str = "id, run_id, kind, due_at, payload, fired_at";

fn timer_row(row: &Row<'_>) -> rusqlite::Result<Timer> {
    Ok(Timer {
        id: row.get(0)?,
        run_id: row.get(1)?,
        kind: row.get(2)?,
        due_at: row.get(3)?,
        payload: row.get(4)?,
        fired_at: row.get(5)?,
    })
}

const DEFINITION_COLUMNS: &str = "name, version, kind, hash, config, created_at";

fn definition_row(row: &Row<'_>) -> rusqlite::Result<Definition> {
    Ok(Definition {
        name: row.get(0)?,
        version: row.get(1)?,
        kind: row.get(2)?,
        hash: row.get(3)?,
        config: row.get(4)?,
        created_at: row.get(5)?,
    })
}

/// Run `sql` with `params` and collect its rows; `what` names the read in errors.
fn collect<T>(
    conn: &dyn Db,
    what: impl Fn() -> String,
    sql: &str,
    params: &[&dyn ToSql],
    map: fn(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    conn.rows(sql, params, map)
        .map_err(|source| Error::read(what(), source))
}

fn refs(values: &[Value]) -> Vec<&dyn ToSql> {
    values.iter().map(|v| v as &dyn ToSql).collect()
}

pub(crate) fn runs(conn: &dyn Db, filter: &RunFilter) -> Result<Vec<Run>> {
    let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE 1 = 1");
    let mut params: Vec<Value> = Vec::new();
    if let Some(name) = &filter.name {
        sql.push_str(" AND name = ?");
        params.push(Value::Text(name.clone()));
    }
    if let Some(status) = filter.status {
        sql.push_str(" AND status = ?");
        params.push(Value::Text(status.as_str().to_owned()));
    }
    for tag in &filter.tags {
        sql.push_str(" AND EXISTS (SELECT 1 FROM json_each(runs.tags) WHERE json_each.value = ?)");
        params.push(Value::Text(tag.clone()));
    }
    sql.push_str(" ORDER BY created_at DESC, id DESC");
    if let Some(limit) = filter.limit {
        sql.push_str(" LIMIT ?");
        params.push(Value::Integer(limit.into()));
    }
    collect(conn, || "runs".to_owned(), &sql, &refs(&params), run_row)
}

pub(crate) fn run(conn: &dyn Db, id: &str) -> Result<Option<Run>> {
    conn.row(
        &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
        params![id],
        run_row,
    )
    .map_err(|source| Error::read(format!("run {id}"), source))
}

pub(crate) fn lease(conn: &dyn Db, id: &str) -> Result<Option<(String, i64)>> {
    conn.row(
        "SELECT lease_owner, lease_expires_at FROM runs WHERE id = ?1 AND lease_owner IS NOT NULL",
        params![id],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
    .map_err(|source| Error::read(format!("the lease of run {id}"), source))
}

pub(crate) fn max_seqs(conn: &dyn Db, run_id: &str) -> Result<(i64, i64)> {
    conn.one(
        "SELECT (SELECT coalesce(max(seq), 0) FROM steps WHERE run_id = ?1), \
                (SELECT coalesce(max(seq), 0) FROM transitions WHERE run_id = ?1)",
        params![run_id],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
    .map_err(|source| Error::read(format!("sequence numbers of run {run_id}"), source))
}

pub(crate) fn open_steps(conn: &dyn Db, run_id: &str) -> Result<Vec<(String, String, StepStatus)>> {
    collect(
        conn,
        || format!("open steps of run {run_id}"),
        "SELECT id, node, status FROM steps WHERE run_id = ?1 AND status IN ('running', 'pending') \
         ORDER BY seq",
        params![run_id],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )
}

pub(crate) fn settled_steps(
    conn: &dyn Db,
    run_id: &str,
) -> Result<Vec<(String, bool, Option<String>)>> {
    collect(
        conn,
        || format!("settled steps of run {run_id}"),
        "SELECT node, status = 'finished', CASE status WHEN 'finished' THEN output ELSE error END \
         FROM steps WHERE run_id = ?1 AND status IN ('finished', 'error') ORDER BY seq",
        params![run_id],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )
}

pub(crate) fn children(conn: &dyn Db, run_id: &str) -> Result<Vec<Run>> {
    collect(
        conn,
        || format!("runs started inside run {run_id}"),
        &format!("SELECT {RUN_COLUMNS} FROM runs WHERE parent_run_id = ?1 ORDER BY created_at, id"),
        params![run_id],
        run_row,
    )
}

pub(crate) fn steps(conn: &dyn Db, run_id: &str) -> Result<Vec<Step>> {
    collect(
        conn,
        || format!("steps of run {run_id}"),
        &format!("SELECT {STEP_COLUMNS} FROM steps WHERE run_id = ?1 ORDER BY seq"),
        params![run_id],
        step_row,
    )
}

/// A run's steps that count (not set aside by a rerun), in `seq` order: what a DAG
/// restore reads (its open steps among them), without the columns it does not.
pub(crate) fn current_steps(conn: &dyn Db, run_id: &str) -> Result<Vec<CurrentStep>> {
    collect(
        conn,
        || format!("current steps of run {run_id}"),
        "SELECT id, node, status, CASE WHEN status IN ('error', 'cancelled') THEN error ELSE output END \
         FROM steps WHERE run_id = ?1 AND superseded_at IS NULL ORDER BY seq",
        params![run_id],
        |row| {
            Ok(CurrentStep {
                id: row.get(0)?,
                node: row.get(1)?,
                status: row.get(2)?,
                value: row.get(3)?,
            })
        },
    )
}

pub(crate) fn step(conn: &dyn Db, id: &str) -> Result<Option<Step>> {
    conn.row(
        &format!("SELECT {STEP_COLUMNS} FROM steps WHERE id = ?1"),
        params![id],
        step_row,
    )
    .map_err(|source| Error::read(format!("step {id}"), source))
}

/// `(seq, context)` of a run's steps up to `seq`, latest first, from the last whole
/// context on (a patch that replaces the root): what rebuilding the context at `seq` reads.
/// The whole one is found walking back the `(run_id, seq)` index, so a long run's earlier
/// history is not read.
pub(crate) fn step_contexts(conn: &dyn Db, run_id: &str, seq: i64) -> Result<Vec<(i64, String)>> {
    collect(
        conn,
        || format!("step contexts of run {run_id}"),
        "SELECT seq, context FROM steps WHERE run_id = ?1 AND seq <= ?2 AND context IS NOT NULL \
             AND seq >= coalesce((SELECT w.seq FROM steps w WHERE w.run_id = ?1 AND w.seq <= ?2 \
                 AND w.context LIKE ?3 \
                 ORDER BY w.seq DESC LIMIT 1), CAST(0 AS INTEGER)) \
         ORDER BY seq DESC",
        params![run_id, seq, format!("{}%", crate::model::WHOLE_CONTEXT)],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
}

pub(crate) fn transitions(conn: &dyn Db, run_id: &str) -> Result<Vec<Transition>> {
    collect(
        conn,
        || format!("transitions of run {run_id}"),
        &format!("SELECT {TRANSITION_COLUMNS} FROM transitions WHERE run_id = ?1 ORDER BY seq"),
        params![run_id],
        transition_row,
    )
}

pub(crate) fn events(conn: &dyn Db, run_id: &str) -> Result<Vec<CustomEvent>> {
    collect(
        conn,
        || format!("events of run {run_id}"),
        &format!("SELECT {EVENT_COLUMNS} FROM events WHERE run_id = ?1 ORDER BY time, id"),
        params![run_id],
        event_row,
    )
}

pub(crate) fn pending_events(conn: &dyn Db, run_id: &str) -> Result<Vec<PendingEvent>> {
    collect(
        conn,
        || format!("pending events of run {run_id}"),
        &format!(
            "SELECT {PENDING_COLUMNS} FROM pending_events \
             WHERE run_id = ?1 AND delivered_at IS NULL ORDER BY created_at, id"
        ),
        params![run_id],
        pending_row,
    )
}

pub(crate) fn due_timers(conn: &dyn Db, now: i64) -> Result<Vec<Timer>> {
    collect(
        conn,
        || "due timers".to_owned(),
        &format!(
            "SELECT {TIMER_COLUMNS} FROM timers \
             WHERE fired_at IS NULL AND due_at <= ?1 ORDER BY due_at, id"
        ),
        params![now],
        timer_row,
    )
}

pub(crate) fn timers(conn: &dyn Db, run_id: &str) -> Result<Vec<Timer>> {
    collect(
        conn,
        || format!("timers of run {run_id}"),
        &format!("SELECT {TIMER_COLUMNS} FROM timers WHERE run_id = ?1 ORDER BY due_at, id"),
        params![run_id],
        timer_row,
    )
}

pub(crate) fn latest_version(conn: &dyn Db, name: &str) -> Result<Option<i64>> {
    conn.one(
        "SELECT max(version) FROM definitions WHERE name = ?1",
        params![name],
        |row| row.get(0),
    )
    .map_err(|source| Error::read(format!("latest version of definition {name}"), source))
}

pub(crate) fn definition(
    conn: &dyn Db,
    name: &str,
    version: Option<i64>,
) -> Result<Option<Definition>> {
    let result = match version {
        Some(version) => conn.row(
            &format!(
                "SELECT {DEFINITION_COLUMNS} FROM definitions WHERE name = ?1 AND version = ?2"
            ),
            params![name, version],
            definition_row,
        ),
        None => conn.row(
            &format!(
                "SELECT {DEFINITION_COLUMNS} FROM definitions WHERE name = ?1 \
                 ORDER BY version DESC LIMIT 1"
            ),
            params![name],
            definition_row,
        ),
    };
    result.map_err(|source| Error::read(format!("definition {name:?}"), source))
}

pub(crate) fn schema_version(conn: &dyn Db) -> Result<u32> {
    conn.one(
        "SELECT value FROM meta WHERE key = 'schema_version'",
        &[],
        |row| row.get::<String>(0),
    )
    .map_err(|source| Error::read("schema version", source))
    .map(|v| v.parse().unwrap_or(0))
}

/// The run list of a run browser: like [`runs`] but with a name search, a time window, a
/// top-level switch and each run's step count; the snapshot column is not read.
pub(crate) fn run_list(conn: &dyn Db, query: &RunQuery) -> Result<Vec<RunSummary>> {
    let columns = RUN_COLUMNS.replace("snapshot", "NULL");
    let mut sql = format!(
        "SELECT {columns}, (SELECT count(*) FROM steps s WHERE s.run_id = runs.id) \
         FROM runs WHERE 1 = 1"
    );
    let mut params: Vec<Value> = Vec::new();
    if let Some(name) = &query.name_contains {
        sql.push_str(" AND instr(lower(name), lower(?)) > 0");
        params.push(Value::Text(name.clone()));
    }
    if let Some(status) = query.status {
        sql.push_str(" AND status = ?");
        params.push(Value::Text(status.as_str().to_owned()));
    }
    for tag in &query.tags {
        sql.push_str(" AND EXISTS (SELECT 1 FROM json_each(runs.tags) WHERE json_each.value = ?)");
        params.push(Value::Text(tag.clone()));
    }
    if let Some(since) = query.since {
        sql.push_str(" AND created_at >= ?");
        params.push(Value::Integer(since));
    }
    if let Some(until) = query.until {
        sql.push_str(" AND created_at < ?");
        params.push(Value::Integer(until));
    }
    if query.top_level {
        sql.push_str(" AND parent_run_id IS NULL");
    }
    sql.push_str(" ORDER BY created_at DESC, id DESC");
    if let Some(limit) = query.limit {
        sql.push_str(" LIMIT ?");
        params.push(Value::Integer(limit.into()));
    }
    collect(
        conn,
        || "run list".to_owned(),
        &sql,
        &refs(&params),
        |row| {
            Ok(RunSummary {
                run: run_row(row)?,
                steps: row.get(21)?,
            })
        },
    )
}

/// SQLite's `data_version` of the read connection: it changes whenever another connection
/// (this store's writer, or another process) commits, so a poller can skip re-reading an
/// unchanged database.
pub(crate) fn data_version(conn: &Connection) -> Result<i64> {
    conn.query_row("PRAGMA data_version", [], |row| row.get(0))
        .map_err(|source| Error::read("data version", source))
}

/// The schema version in `meta`, or `None` when the file has no `meta` table.
pub(crate) fn probe(conn: &Connection) -> Result<Option<u32>> {
    let has_meta: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta')",
            [],
            |row| row.get(0),
        )
        .map_err(|source| Error::read("schema", source))?;
    if !has_meta {
        return Ok(None);
    }
    schema_version(conn as &dyn Db).map(Some)
}
