//! Run ownership: a live run is held by one engine through a lease on its row (owner,
//! expiry, fencing token). Claims, renewals and fences run in the writer's transactions, so
//! two processes claiming one run are serialized by SQLite's write lock: exactly one wins.

use rusqlite::{Connection, OptionalExtension};

use crate::error::{Error, Result};

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
    /// Extend the leases `owner` holds on `runs` to `until`.
    Renew {
        /// Who holds them.
        owner: String,
        /// The runs it believes it holds.
        runs: Vec<String>,
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
}

pub(crate) fn apply(conn: &Connection, op: &LeaseOp) -> Result<LeaseAnswer> {
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
                .prepare_cached(
                    "UPDATE runs SET lease_owner = ?2, lease_expires_at = ?4, lease_token = lease_token + 1 \
                     WHERE id = ?1 AND (lease_owner IS NULL OR lease_owner = ?2 OR lease_owner = ?5 \
                         OR lease_expires_at <= ?3) \
                     RETURNING lease_token",
                )
                .and_then(|mut s| {
                    s.query_row((run_id, owner, now, until, dead), |r| r.get(0))
                        .optional()
                })
                .map_err(read)?;
            if let Some(token) = token {
                return Ok(LeaseAnswer::Claimed { token });
            }
            let held: Option<(Option<String>, Option<i64>)> = conn
                .prepare_cached("SELECT lease_owner, lease_expires_at FROM runs WHERE id = ?1")
                .and_then(|mut s| {
                    s.query_row([run_id], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
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
        LeaseOp::Renew { owner, runs, until } => {
            let ids = serde_json::to_string(runs).unwrap_or_default();
            conn.prepare_cached(
                "UPDATE runs SET lease_expires_at = ?3 \
                 WHERE lease_owner = ?1 AND id IN (SELECT value FROM json_each(?2))",
            )
            .and_then(|mut s| s.execute((owner, &ids, until)))
            .map_err(read)?;
            let lost = conn
                .prepare_cached(
                    "SELECT value FROM json_each(?2) WHERE value NOT IN \
                     (SELECT id FROM runs WHERE lease_owner = ?1 AND id IN (SELECT value FROM json_each(?2)))",
                )
                .and_then(|mut s| {
                    s.query_map((owner, &ids), |r| r.get::<_, String>(0))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(read)?;
            Ok(LeaseAnswer::Renewed { lost })
        }
        LeaseOp::Release { owner, runs } => {
            let ids = serde_json::to_string(runs).unwrap_or_default();
            conn.prepare_cached(
                "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL \
                 WHERE lease_owner = ?1 AND id IN (SELECT value FROM json_each(?2))",
            )
            .and_then(|mut s| s.execute((owner, &ids)))
            .map_err(read)?;
            Ok(LeaseAnswer::Released)
        }
    }
}

/// A submission's fence: its records are written only if `owner` still holds `run_id`
/// with `token`.
pub(crate) fn check_fence(conn: &Connection, run_id: &str, owner: &str, token: i64) -> Result<()> {
    let row: Option<(Option<String>, i64, Option<i64>)> = conn
        .prepare_cached("SELECT lease_owner, lease_token, lease_expires_at FROM runs WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([run_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
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
