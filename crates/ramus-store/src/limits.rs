//! Limits shared by every process on the store: a key caps the slots held at once
//! (`concurrency`) and how fast they are taken (`rate`, a token bucket). Step limits are
//! held per slot in `limit_holds` (an engine's holds expire with its leases unless
//! renewed, so a dead process's slots come back); run limits (`workflow:<name>`, `*`) count
//! the runs in progress when a worker claims queued runs. Every check and take runs in the
//! writer's transaction, so two processes never both take the last slot.

use rusqlite::params;

use crate::db::{Db, DbError};

use crate::error::{Error, Result};

/// One key's limit (`engine.limits`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    /// The key: a node's or state's `semaphoreKey`, `workflow:<name>`, or `*`.
    pub key: String,
    /// At most this many at once.
    pub concurrency: Option<i64>,
    /// At most `count` per `per_ms`, in bursts of up to `count`.
    pub rate: Option<(i64, i64)>,
}

/// Whether a key lets one more in at `now`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Check {
    /// Yes; the bucket then holds this many tokens (when it has a rate).
    Allowed(Option<f64>),
    /// No: all its slots are held.
    Full,
    /// No: its rate allows the next in this many ms.
    Wait(i64),
}

struct Row {
    concurrency: Option<i64>,
    rate: Option<(i64, i64)>,
    tokens: f64,
    refilled_at: i64,
}

fn row(conn: &dyn Db, key: &str) -> Result<Option<Row>> {
    // Locked until the commit (PostgreSQL): whoever reads a limit to take from it goes
    // one at a time, across processes, so two cannot both take its last slot.
    conn.row(
        "SELECT concurrency, rate_count, rate_ms, tokens, refilled_at FROM limits WHERE key = ?1 \
         /*pg:FOR UPDATE*/",
        params![key],
        |r| {
            let count: Option<i64> = r.get(1)?;
            let ms: Option<i64> = r.get(2)?;
            Ok(Row {
                concurrency: r.get(0)?,
                rate: count.zip(ms),
                tokens: r.get(3)?,
                refilled_at: r.get(4)?,
            })
        },
    )
    .map_err(|e| Error::read(format!("the limit {key:?}"), e))
}

/// Whether `key` has a limit (a cap or a rate).
pub(crate) fn exists(conn: &dyn Db, key: &str) -> Result<bool> {
    conn.row(
        "SELECT 1 FROM limits WHERE key = ?1 AND (concurrency IS NOT NULL OR rate_count IS NOT NULL)",
        params![key],
        |_| Ok(()),
    )
    .map(|found| found.is_some())
    .map_err(|e| Error::read(format!("the limit {key:?}"), e))
}

/// Whether `key` lets one more in at `now`, with `in_use` taken already (`None`: count
/// the key's live holds).
pub(crate) fn check(conn: &dyn Db, key: &str, now: i64, in_use: Option<i64>) -> Result<Check> {
    let Some(row) = row(conn, key)? else {
        return Ok(Check::Allowed(None));
    };
    if let Some(max) = row.concurrency {
        let used = match in_use {
            Some(n) => n,
            None => conn
                .one(
                    "SELECT count(*) FROM limit_holds WHERE key = ?1 AND expires_at > ?2",
                    params![key, now],
                    |r| r.get(0),
                )
                .map_err(|e| Error::read(format!("the holds of limit {key:?}"), e))?,
        };
        if used >= max {
            return Ok(Check::Full);
        }
    }
    let Some((count, per_ms)) = row.rate else {
        return Ok(Check::Allowed(None));
    };
    let elapsed = (now - row.refilled_at).max(0) as f64;
    let tokens = (row.tokens + elapsed * count as f64 / per_ms as f64).min(count as f64);
    if tokens >= 1.0 {
        Ok(Check::Allowed(Some(tokens - 1.0)))
    } else {
        Ok(Check::Wait(
            // Less a hair: float error must not push an exact wait one ms further.
            (((1.0 - tokens) * per_ms as f64 / count as f64 - 1e-6).ceil() as i64).max(1),
        ))
    }
}

/// Take what [`check`] allowed: the bucket's tokens after it.
pub(crate) fn consume(conn: &dyn Db, key: &str, allowed: Check, now: i64) -> Result<()> {
    if let Check::Allowed(Some(tokens)) = allowed {
        conn.execute(
            "UPDATE limits SET tokens = ?2, refilled_at = ?3 WHERE key = ?1",
            params![key, tokens, now],
        )
        .map_err(|e| write_err(key, e))?;
    }
    Ok(())
}

fn write_err(key: &str, e: DbError) -> Error {
    Error::write("limit", key, e)
}

/// Set limits (a new rate starts with a full bucket); keys not named keep theirs.
pub(crate) fn set(conn: &dyn Db, limits: &[Limit], now: i64) -> Result<()> {
    for l in limits {
        let (count, ms) = l.rate.unzip();
        conn.execute(
            "INSERT INTO limits (key, concurrency, rate_count, rate_ms, tokens, refilled_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, coalesce(?3, CAST(0 AS INTEGER)), ?5, ?5) \
             ON CONFLICT (key) DO UPDATE SET concurrency = excluded.concurrency, \
                 rate_count = excluded.rate_count, rate_ms = excluded.rate_ms, \
                 tokens = CASE WHEN limits.rate_count IS NOT DISTINCT FROM excluded.rate_count \
                     AND limits.rate_ms IS NOT DISTINCT FROM excluded.rate_ms \
                     THEN limits.tokens ELSE excluded.tokens END, \
                 refilled_at = CASE WHEN limits.rate_count IS NOT DISTINCT FROM excluded.rate_count \
                     AND limits.rate_ms IS NOT DISTINCT FROM excluded.rate_ms \
                     THEN limits.refilled_at ELSE excluded.refilled_at END, \
                 updated_at = excluded.updated_at",
            params![l.key, l.concurrency, count, ms, now],
        )
        .map_err(|e| write_err(&l.key, e))?;
    }
    Ok(())
}

/// Take one slot of `key` for `owner` until `until`, if its limit lets one more in and no
/// waiter ranks before `waiter` (higher `priority`, or as high and waiting longer); a
/// waiter that does not get one is recorded (or refreshed) in `limit_waits`, and leaves
/// it when it does.
#[allow(clippy::too_many_arguments)]
pub(crate) fn acquire(
    conn: &dyn Db,
    key: &str,
    owner: &str,
    waiter: &str,
    priority: i64,
    now: i64,
    until: i64,
) -> Result<Check> {
    // The limit is locked first (PostgreSQL), so the line and the slots are read and
    // changed by one taker at a time.
    row(conn, key)?;
    let since: Option<i64> = conn
        .row(
            "SELECT since FROM limit_waits WHERE id = ?1",
            params![waiter],
            |r| r.get(0),
        )
        .map_err(|e| Error::read(format!("the waiters of limit {key:?}"), e))?;
    let ahead: bool = conn
        .one(
            "SELECT EXISTS (SELECT 1 FROM limit_waits WHERE key = ?1 AND id <> ?2 AND expires_at > ?3 \
               AND (priority > ?4 OR (priority = ?4 AND since < ?5)))",
            params![key, waiter, now, priority, since.unwrap_or(now)],
            |r| r.get(0),
        )
        .map_err(|e| Error::read(format!("the waiters of limit {key:?}"), e))?;
    let allowed = if ahead {
        Check::Full
    } else {
        check(conn, key, now, None)?
    };
    match allowed {
        Check::Allowed(_) => {
            consume(conn, key, allowed, now)?;
            conn.execute(
                "INSERT INTO limit_holds (key, owner, acquired_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![key, owner, now, until],
            )
            .map_err(|e| write_err(key, e))?;
            if since.is_some() {
                conn.execute("DELETE FROM limit_waits WHERE id = ?1", params![waiter])
                    .map_err(|e| write_err(key, e))?;
            }
        }
        _ => {
            conn.execute(
                "INSERT INTO limit_waits (id, key, owner, priority, since, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at",
                params![waiter, key, owner, priority, now, until],
            )
            .map_err(|e| write_err(key, e))?;
        }
    }
    Ok(allowed)
}

/// A waiter left the line (its step no longer wants a slot).
pub(crate) fn stop_waiting(conn: &dyn Db, waiter: &str) -> Result<()> {
    conn.execute("DELETE FROM limit_waits WHERE id = ?1", params![waiter])
        .map_err(|e| write_err("waits", e))?;
    Ok(())
}

/// Give back one slot of `key` that `owner` holds.
pub(crate) fn release(conn: &dyn Db, key: &str, owner: &str) -> Result<()> {
    conn.execute(
        "DELETE FROM limit_holds WHERE rowid = \
         (SELECT rowid FROM limit_holds WHERE key = ?1 AND owner = ?2 ORDER BY acquired_at LIMIT 1)",
        params![key, owner],
    )
    .map_err(|e| write_err(key, e))?;
    Ok(())
}

/// Extend `owner`'s holds that have not expired by `now` to `until` (`Some((now,
/// until))`), or drop its holds and waits (`None`: it closes). An expired hold is not
/// brought back: its slot may be another process's now.
pub(crate) fn renew(conn: &dyn Db, owner: &str, until: Option<(i64, i64)>) -> Result<()> {
    let r = match until {
        Some((now, until)) => conn.execute(
            "UPDATE limit_holds SET expires_at = ?3 WHERE owner = ?1 AND expires_at > ?2",
            params![owner, now, until],
        ),
        None => conn
            .execute("DELETE FROM limit_waits WHERE owner = ?1", params![owner])
            .and_then(|_| conn.execute("DELETE FROM limit_holds WHERE owner = ?1", params![owner])),
    };
    r.map_err(|e| write_err("holds", e))?;
    Ok(())
}

/// One key's limit and use: `(key, concurrency, rate, held, waiting)`.
pub type LimitUse = (String, Option<i64>, Option<(i64, i64)>, i64, i64);

/// Every limit with the slots held now.
pub(crate) fn all(conn: &dyn Db, now: i64) -> Result<Vec<LimitUse>> {
    conn.rows(
        "SELECT l.key, l.concurrency, l.rate_count, l.rate_ms, \
             (SELECT count(*) FROM limit_holds h WHERE h.key = l.key AND h.expires_at > ?1), \
             (SELECT count(*) FROM limit_waits w WHERE w.key = l.key AND w.expires_at > ?1) \
         FROM limits l ORDER BY l.key",
        params![now],
        |r| {
            let count: Option<i64> = r.get(2)?;
            let ms: Option<i64> = r.get(3)?;
            Ok((r.get(0)?, r.get(1)?, count.zip(ms), r.get(4)?, r.get(5)?))
        },
    )
    .map_err(|e| Error::read("limits", e))
}
