//! The errors at the store's boundary.
//!
//! Every variant names what failed (which file, which migration, which record, which read)
//! so a message that reaches a user through the binding needs no further context.
//!
//! `Error` is `Clone` because one failed commit is reported to every caller whose records
//! were in that group commit; the SQLite and JSON causes are therefore held in `Arc`s.

use std::sync::Arc;

use crate::db::DbError;

/// The result type of the store.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in the store.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database file could not be opened or configured.
    #[error("cannot open the database {path}: {source}")]
    Open {
        /// The path (or `:memory:`) that was being opened.
        path: String,
        /// The database's error.
        #[source]
        source: Arc<DbError>,
    },

    /// A schema migration failed; the database is left at the version before it.
    #[error("migrating the database to schema version {version} failed: {source}")]
    Migration {
        /// The schema version the failing migration would have produced.
        version: u32,
        /// The database's error.
        #[source]
        source: Arc<DbError>,
    },

    /// The database was written by a newer build whose schema this build does not know.
    #[error(
        "the database has schema version {found}, newer than the version {supported} this build of ramus-store supports"
    )]
    SchemaTooNew {
        /// The version recorded in the database.
        found: u32,
        /// The newest version this build knows.
        supported: u32,
    },

    /// One record could not be written; the other records of its group commit were kept.
    #[error("writing {what} {id} failed: {source}")]
    Write {
        /// The kind of record (`run`, `step`, `timer`, ...).
        what: &'static str,
        /// The record's id (or `name` for a definition).
        id: String,
        /// The database's error.
        #[source]
        source: Arc<DbError>,
    },

    /// An update named a row that does not exist.
    #[error("cannot update {what} {id}: no such {what}")]
    NotFound {
        /// The kind of row (`run`, `step`, `pending event`, `timer`).
        what: &'static str,
        /// The id that was not found.
        id: String,
    },

    /// Beginning or committing a group transaction failed; none of its records were kept.
    #[error("committing a group of {records} records failed: {source}")]
    Commit {
        /// How many records the failed transaction held.
        records: usize,
        /// The database's error.
        #[source]
        source: Arc<DbError>,
    },

    /// Pruning runs failed; nothing was deleted.
    #[error("pruning runs failed: {source}")]
    Prune {
        /// The database's error.
        #[source]
        source: Arc<DbError>,
    },

    /// A read failed, or a stored value could not be decoded.
    #[error("reading {what} failed: {source}")]
    Read {
        /// What was being read (`runs`, `steps of run X`, ...).
        what: String,
        /// The database's error.
        #[source]
        source: Arc<DbError>,
    },

    /// A value that must be JSON text is not.
    #[error("{what} is not valid JSON: {source}")]
    InvalidJson {
        /// Which value (`config of definition X`).
        what: String,
        /// The parse error.
        #[source]
        source: Arc<serde_json::Error>,
    },

    /// The writer no longer holds the run's lease: another process took the run over (or
    /// it was released), so the writer's records are refused.
    #[error("run {run_id} is no longer held by this engine{}", holder.as_deref().map(|h| format!(": {h} holds it")).unwrap_or_default())]
    LeaseLost {
        /// The run.
        run_id: String,
        /// Who holds it now, if anyone.
        holder: Option<String>,
        /// When the holder's lease expires.
        expires_at: Option<i64>,
    },

    /// The store was closed, or its writer thread is gone.
    #[error("the store is closed")]
    Closed,
}

impl Error {
    pub(crate) fn open(path: &str, source: impl Into<DbError>) -> Self {
        Error::Open {
            path: path.to_owned(),
            source: Arc::new(source.into()),
        }
    }

    pub(crate) fn read(what: impl Into<String>, source: impl Into<DbError>) -> Self {
        Error::Read {
            what: what.into(),
            source: Arc::new(source.into()),
        }
    }

    pub(crate) fn write(
        what: &'static str,
        id: impl Into<String>,
        source: impl Into<DbError>,
    ) -> Self {
        Error::Write {
            what,
            id: id.into(),
            source: Arc::new(source.into()),
        }
    }

    pub(crate) fn commit(records: usize, source: impl Into<DbError>) -> Self {
        Error::Commit {
            records,
            source: Arc::new(source.into()),
        }
    }

    /// Whether retrying the transaction this error ended can succeed (PostgreSQL aborted
    /// it to break a deadlock between processes).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Write { source, .. }
            | Error::Commit { source, .. }
            | Error::Read { source, .. }
            | Error::Prune { source } => source.is_retryable(),
            _ => false,
        }
    }
}
