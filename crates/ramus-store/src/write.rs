//! The SQL of each write. Every function runs inside the writer's open transaction, on
//! statements from the connection's prepared-statement cache, so a record costs one
//! `sqlite3_step` and its bindings, not a parse.

use std::sync::Arc;

use rusqlite::params;

use crate::db::{Db, DbResult};

use crate::error::{Error, Result};
use crate::hash::content_hash;
use crate::model::{DefinitionVersion, NewDefinition, Record, RunStatus};

const UPSERT_RUN: &str = "\
    INSERT INTO runs (id, name, kind, definition_name, definition_version, status, input, \
        output, error, tags, info, trace_id, span_id, parent_run_id, parent_step_id, snapshot, \
        created_at, updated_at, ended_at, forked_from_run_id, forked_from_step_id) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, \
        ?20, ?21) \
    ON CONFLICT (id) DO UPDATE SET name = excluded.name, kind = excluded.kind, \
        definition_name = excluded.definition_name, \
        definition_version = excluded.definition_version, status = excluded.status, \
        input = excluded.input, output = excluded.output, error = excluded.error, \
        tags = excluded.tags, info = excluded.info, trace_id = excluded.trace_id, \
        span_id = excluded.span_id, parent_run_id = excluded.parent_run_id, \
        parent_step_id = excluded.parent_step_id, snapshot = excluded.snapshot, \
        updated_at = excluded.updated_at, ended_at = excluded.ended_at, \
        forked_from_run_id = excluded.forked_from_run_id, \
        forked_from_step_id = excluded.forked_from_step_id";

const UPDATE_RUN: &str = "\
    UPDATE runs SET status = ?2, updated_at = ?3, output = coalesce(?4, output), \
        error = coalesce(?5, error), snapshot = coalesce(?6, snapshot), \
        info = coalesce(?7, info), ended_at = coalesce(?8, ended_at), \
        parent_step_id = coalesce(?9, parent_step_id) \
    WHERE id = ?1";

const UPSERT_STEP: &str = "\
    INSERT INTO steps (id, run_id, seq, node, parent_step_id, input, output, error, status, \
        attempt, started_at, ended_at, cached, context, snapshot, superseded_at) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
    ON CONFLICT (id) DO UPDATE SET run_id = excluded.run_id, seq = excluded.seq, \
        node = excluded.node, parent_step_id = excluded.parent_step_id, \
        input = excluded.input, output = excluded.output, error = excluded.error, \
        status = excluded.status, attempt = excluded.attempt, \
        started_at = excluded.started_at, ended_at = excluded.ended_at, cached = excluded.cached, \
        context = excluded.context, snapshot = excluded.snapshot, \
        superseded_at = excluded.superseded_at";

const UPDATE_STEP: &str = "\
    UPDATE steps SET status = ?2, output = coalesce(?3, output), error = coalesce(?4, error), \
        started_at = coalesce(?5, started_at), ended_at = coalesce(?6, ended_at), \
        cached = ?7 \
    WHERE id = ?1";

const INSERT_TRANSITION: &str = "\
    INSERT INTO transitions (id, run_id, step_id, seq, from_state, to_state, event_type, \
        event_data, time) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

const INSERT_EVENT: &str = "\
    INSERT INTO events (id, run_id, step_id, parent_step_id, type, source, source_node, data, \
        time) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

const INSERT_PENDING: &str = "\
    INSERT INTO pending_events (id, run_id, type, data, queue, created_at, delivered_at) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

const DELIVER_PENDING: &str = "UPDATE pending_events SET delivered_at = ?2 WHERE id = ?1";

const INSERT_TIMER: &str = "\
    INSERT INTO timers (id, run_id, kind, due_at, payload, fired_at) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

const FIRE_TIMER: &str = "UPDATE timers SET fired_at = ?2 WHERE id = ?1";

const DELETE_TIMER: &str = "DELETE FROM timers WHERE id = ?1";

pub(crate) const LATEST_DEFINITION: &str = "\
    SELECT version, hash FROM definitions WHERE name = ?1 ORDER BY version DESC LIMIT 1";

const INSERT_DEFINITION: &str = "\
    INSERT INTO definitions (name, version, kind, hash, config, created_at) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// Runs to prune and, recursively, the runs started inside them: a child run is part of
/// its parent and is never left behind pointing at a deleted one.
const PRUNE: &str = "\
    WITH RECURSIVE doomed (id) AS ( \
        SELECT id FROM runs WHERE created_at < ?1 \
            AND (status = ?2 OR (CAST(?2 AS TEXT) IS NULL AND status IN ('finished', 'error', 'cancelled'))) \
        UNION SELECT runs.id FROM runs JOIN doomed ON runs.parent_run_id = doomed.id \
    ) \
    DELETE FROM runs WHERE id IN (SELECT id FROM doomed)";

/// Apply one record.
pub(crate) fn apply(conn: &dyn Db, record: &Record) -> Result<()> {
    let changed = apply_sql(conn, record).map_err(|source| {
        let (what, id) = record.describe();
        Error::write(what, id, source)
    })?;
    // Updates of rows that do not exist are the engine's bug (a step before its run, an id
    // typed twice): say so instead of silently writing nothing.
    let is_update = matches!(
        record,
        Record::RunUpdate(_)
            | Record::RunReopened { .. }
            | Record::RunRedefined { .. }
            | Record::StepUpdate(_)
            | Record::EventDelivered { .. }
            | Record::TimerFired { .. }
    );
    if is_update && changed == 0 {
        let (what, id) = record.describe();
        return Err(Error::NotFound {
            what,
            id: id.to_owned(),
        });
    }
    if let Record::Definition(def) = record {
        put_definition(conn, def)?;
    }
    if let Record::Fence {
        run_id,
        owner,
        token,
    } = record
    {
        crate::lease::check_fence(conn, run_id, owner, *token)?;
    }
    Ok(())
}

fn apply_sql(conn: &dyn Db, record: &Record) -> DbResult<usize> {
    match record {
        Record::Run(r) => {
            let tags = tags_json(&r.tags);
            conn.execute(UPSERT_RUN, params![
                r.id,
                r.name,
                r.kind,
                r.definition_name,
                r.definition_version,
                r.status,
                r.input,
                r.output,
                r.error,
                tags,
                r.info,
                r.trace_id,
                r.span_id,
                r.parent_run_id,
                r.parent_step_id,
                r.snapshot,
                r.created_at,
                r.updated_at,
                r.ended_at,
                r.forked_from_run_id,
                r.forked_from_step_id,
            ])
        }
        Record::RunUpdate(u) => conn.execute(UPDATE_RUN, params![
            u.id,
            u.status,
            u.updated_at,
            u.output,
            u.error,
            u.snapshot,
            u.info,
            u.ended_at,
            u.parent_step_id,
        ]),
        Record::Step(s) => conn.execute(UPSERT_STEP, params![
            s.id,
            s.run_id,
            s.seq,
            s.node,
            s.parent_step_id,
            s.input,
            s.output,
            s.error,
            s.status,
            s.attempt,
            s.started_at,
            s.ended_at,
            s.cached,
            s.context,
            s.snapshot,
            s.superseded_at,
        ]),
        Record::StepUpdate(u) => conn.execute(UPDATE_STEP, params![
            u.id,
            u.status,
            u.output,
            u.error,
            u.started_at,
            u.ended_at,
            u.cached,
        ]),
        Record::Transition(t) => conn.execute(INSERT_TRANSITION, params![
            t.id,
            t.run_id,
            t.step_id,
            t.seq,
            t.from_state,
            t.to_state,
            t.event_type,
            t.event_data,
            t.time,
        ]),
        Record::Event(e) => conn.execute(INSERT_EVENT, params![
            e.id,
            e.run_id,
            e.step_id,
            e.parent_step_id,
            e.event_type,
            e.source,
            e.source_node,
            e.data,
            e.time,
        ]),
        Record::PendingEvent(e) => conn.execute(INSERT_PENDING, params![
            e.id,
            e.run_id,
            e.event_type,
            e.data,
            e.queue,
            e.created_at,
            e.delivered_at,
        ]),
        Record::EventDelivered { id, at } => conn.execute(DELIVER_PENDING, params![id, at]),
        Record::Timer(t) => conn.execute(INSERT_TIMER, params![
            t.id, t.run_id, t.kind, t.due_at, t.payload, t.fired_at,
        ]),
        Record::TimerFired { id, at } => conn.execute(FIRE_TIMER, params![id, at]),
        Record::TimerCancelled { id } => conn.execute(DELETE_TIMER, params![id]),
        Record::RunReopened { id, input, at } => conn.execute(
            "UPDATE runs SET status = 'running', output = NULL, error = NULL, ended_at = NULL, \
             input = coalesce(?2, input), updated_at = ?3 WHERE id = ?1",
            params![id, input, at],
        ),
        Record::RunRedefined { id, name, version } => conn.execute(
            "UPDATE runs SET definition_name = ?2, definition_version = ?3 WHERE id = ?1",
            params![id, name, version],
        ),
        // One pass over the run's steps (`json_each` of the names), not one per node.
        Record::StepsSuperseded { run_id, nodes, at } => conn.execute(
            // A step still open (the run was interrupted) ends with it: the runs it started
            // are not continued by the node's new step.
            "UPDATE steps SET superseded_at = ?3, \
                 status = CASE WHEN status IN ('running', 'pending') THEN 'cancelled' ELSE status END, \
                 ended_at = coalesce(ended_at, ?3) \
             WHERE run_id = ?1 AND superseded_at IS NULL \
                 AND node IN (SELECT value FROM json_each(?2))",
            params![run_id, serde_json::to_string(nodes).unwrap_or_default(), at],
        ),
        // Needs a read and a hash; done by `put_definition` in `apply`.
        Record::Definition(_) => Ok(0),
        // A read and a comparison; done by `check_fence` in `apply`.
        Record::Fence { .. } => Ok(0),
        Record::Lease {
            run_id,
            owner,
            until,
        } => conn.execute(
            "UPDATE runs SET lease_owner = ?2, lease_expires_at = ?3, lease_token = lease_token + 1 WHERE id = ?1",
            params![run_id, owner, until],
        ),
    }
}

/// `tags` as the JSON array stored in `runs.tags`.
pub(crate) fn tags_json(tags: &[String]) -> String {
    serde_json::to_string(tags).expect("a list of strings always serializes")
}

/// The version that `def`'s content has or would get, without writing: the latest version
/// when its hash matches, else the next one.
pub(crate) fn resolve_definition(
    conn: &dyn Db,
    def: &NewDefinition,
) -> Result<(DefinitionVersion, bool)> {
    let hash = content_hash(&def.config, || {
        format!("the config of definition {:?}", def.name)
    })?;
    let latest: Option<(i64, String)> = conn
        .row(LATEST_DEFINITION, params![def.name], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .map_err(|source| Error::read(format!("definition {:?}", def.name), source))?;
    let (version, created) = match latest {
        Some((version, latest_hash)) if latest_hash == hash => (version, false),
        Some((version, _)) => (version + 1, true),
        None => (1, true),
    };
    Ok((
        DefinitionVersion {
            name: def.name.clone(),
            version,
            hash,
            created,
        },
        created,
    ))
}

/// Store `def` as a new version unless the latest version has the same content.
pub(crate) fn put_definition(conn: &dyn Db, def: &NewDefinition) -> Result<DefinitionVersion> {
    let (version, created) = resolve_definition(conn, def)?;
    if created {
        conn.execute(
            INSERT_DEFINITION,
            params![
                def.name,
                version.version,
                def.kind,
                version.hash,
                def.config,
                def.created_at,
            ],
        )
        .map_err(|source| Error::write("definition", &def.name, source))?;
    }
    Ok(version)
}

/// Delete the runs created before `older_than` (with `status`, if given), the runs started
/// inside them, and by cascade all their steps, transitions, events, pending events and
/// timers. Returns how many runs were deleted.
pub(crate) fn prune(conn: &dyn Db, older_than: i64, status: Option<RunStatus>) -> Result<usize> {
    // One statement: the database makes it atomic with its cascades, so a failure deletes
    // nothing and needs no savepoint of its own.
    conn.execute(PRUNE, params![older_than, status])
        .map_err(|source| Error::Prune {
            source: Arc::new(source),
        })
}
