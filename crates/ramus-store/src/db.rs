//! One SQL layer for both databases. Every statement of the store is written once, in the
//! dialect SQLite and PostgreSQL share, with `?N` placeholders; a [`Db`] runs it on its
//! connection. The PostgreSQL connection rewrites the few spellings that differ (see
//! `pg::translate`), so what a record or a lease means is decided in one place whichever
//! database holds it.
//!
//! Parameters and rows go through rusqlite's value types ([`ToSql`], [`FromSql`]): the
//! model's enums already convert to and from them, and SQLite, the default store, pays
//! nothing for the layer.

use std::fmt;

use rusqlite::types::{FromSql, FromSqlError, Type, Value, ValueRef};
use rusqlite::{Connection, ToSql};

/// An error of the database beneath the store.
#[derive(Debug)]
#[non_exhaustive]
pub enum DbError {
    /// From SQLite (or decoding a value read from it).
    Sqlite(rusqlite::Error),
    /// From PostgreSQL: its message and SQLSTATE code, when the server sent one.
    Postgres {
        /// The server's message (or the client's, for a lost connection).
        message: String,
        /// The SQLSTATE (`40P01` for a deadlock, `23505` for a unique violation).
        code: Option<String>,
    },
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::Sqlite(e) => e.fmt(f),
            DbError::Postgres {
                message,
                code: Some(code),
            } => write!(f, "{message} (SQLSTATE {code})"),
            DbError::Postgres { message, .. } => f.write_str(message),
        }
    }
}

impl std::error::Error for DbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DbError::Sqlite(e) => Some(e),
            DbError::Postgres { .. } => None,
        }
    }
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError::Sqlite(e)
    }
}

impl DbError {
    /// A failure that retrying the whole transaction can cure: PostgreSQL broke a deadlock
    /// or a serialization conflict between two processes by aborting this one.
    pub fn is_retryable(&self) -> bool {
        matches!(self, DbError::Postgres { code: Some(c), .. } if c == "40P01" || c == "40001")
    }
}

/// The database's result type.
pub type DbResult<T> = std::result::Result<T, DbError>;

/// One row of a result, whichever database it came from.
pub enum Row<'a> {
    /// A row still in SQLite's statement: read in place.
    Sqlite(&'a rusqlite::Row<'a>),
    /// A row already read off the wire.
    Values(&'a [Value]),
}

impl Row<'_> {
    /// Column `i` as a `T`, as `rusqlite::Row::get` would give it.
    pub fn get<T: FromSql>(&self, i: usize) -> rusqlite::Result<T> {
        match self {
            Row::Sqlite(row) => row.get(i),
            Row::Values(values) => {
                let value = values
                    .get(i)
                    .ok_or(rusqlite::Error::InvalidColumnIndex(i))?;
                T::column_result(ValueRef::from(value)).map_err(|e| match e {
                    FromSqlError::InvalidType => {
                        rusqlite::Error::InvalidColumnType(i, format!("column {i}"), type_of(value))
                    }
                    other => rusqlite::Error::FromSqlConversionFailure(
                        i,
                        type_of(value),
                        Box::new(other),
                    ),
                })
            }
        }
    }
}

fn type_of(v: &Value) -> Type {
    match v {
        Value::Null => Type::Null,
        Value::Integer(_) => Type::Integer,
        Value::Real(_) => Type::Real,
        Value::Text(_) => Type::Text,
        Value::Blob(_) => Type::Blob,
    }
}

/// A connection the store's statements run on.
pub trait Db {
    /// Run a statement; how many rows it changed.
    fn execute(&self, sql: &str, params: &[&dyn ToSql]) -> DbResult<usize>;
    /// Run a query and hand each row to `each`.
    fn each_row(
        &self,
        sql: &str,
        params: &[&dyn ToSql],
        each: &mut dyn FnMut(&Row<'_>) -> rusqlite::Result<()>,
    ) -> DbResult<()>;
    /// Run statements without parameters (schema changes).
    fn batch(&self, sql: &str) -> DbResult<()>;
    /// Hold a lock on `key` until the transaction ends, against other processes. SQLite's
    /// single writer already holds the whole database: nothing to do there.
    fn lock(&self, _key: &str) -> DbResult<()> {
        Ok(())
    }
}

impl dyn Db + '_ {
    /// Every row, mapped.
    pub fn rows<T>(
        &self,
        sql: &str,
        params: &[&dyn ToSql],
        mut map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> DbResult<Vec<T>> {
        let mut out = Vec::new();
        self.each_row(sql, params, &mut |row| {
            out.push(map(row)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The first row, mapped, if there is one.
    pub fn row<T>(
        &self,
        sql: &str,
        params: &[&dyn ToSql],
        map: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> DbResult<Option<T>> {
        let mut map = Some(map);
        let mut out = None;
        self.each_row(sql, params, &mut |row| {
            if let Some(map) = map.take() {
                out = Some(map(row)?);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The one row a query always returns (an aggregate), mapped.
    pub fn one<T>(
        &self,
        sql: &str,
        params: &[&dyn ToSql],
        map: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> DbResult<T> {
        self.row(sql, params, map)?
            .ok_or(DbError::Sqlite(rusqlite::Error::QueryReturnedNoRows))
    }
}

/// SQLite: statements from the connection's cache, rows read in place.
impl Db for Connection {
    fn execute(&self, sql: &str, params: &[&dyn ToSql]) -> DbResult<usize> {
        Ok(self.prepare_cached(sql)?.execute(params)?)
    }

    fn each_row(
        &self,
        sql: &str,
        params: &[&dyn ToSql],
        each: &mut dyn FnMut(&Row<'_>) -> rusqlite::Result<()>,
    ) -> DbResult<()> {
        let mut stmt = self.prepare_cached(sql)?;
        let mut rows = stmt.query(params)?;
        while let Some(row) = rows.next()? {
            each(&Row::Sqlite(row))?;
        }
        Ok(())
    }

    fn batch(&self, sql: &str) -> DbResult<()> {
        Ok(self.execute_batch(sql)?)
    }
}

/// The writer's connection: its transactions, and what differs in them between databases.
pub(crate) trait Backend: Db + Send {
    /// Begin the writer's transaction; SQLite takes the write lock at once.
    fn begin(&self) -> DbResult<()>;
    /// Commit the transaction (PostgreSQL also announces the commit to its listeners).
    fn commit(&self) -> DbResult<()> {
        self.execute("COMMIT", &[]).map(|_| ())
    }
    /// Roll the transaction back.
    fn rollback(&self) -> DbResult<()> {
        self.execute("ROLLBACK", &[]).map(|_| ())
    }
    /// Whether a transaction is open: SQLite rolls one back by itself after some errors
    /// (disk full), and what followed would then run outside it.
    fn in_transaction(&self) -> bool;
    /// Whether a failed statement spoils the whole transaction until it is rolled back to a
    /// savepoint (PostgreSQL): then every submission and lease change gets its own.
    fn savepoint_always(&self) -> bool;
    /// Give the connection back to the server until it is used again (a closed store on
    /// PostgreSQL keeps answering reads, without holding one of the server's connections).
    fn disconnect(&self) {}
    /// What a new database needs before its first migration (PostgreSQL: the functions
    /// that stand in for SQLite's).
    fn prelude(&self) -> DbResult<()> {
        Ok(())
    }
    /// The SQLite connection, for what only SQLite has (checkpoints, `data_version`).
    fn sqlite(&self) -> Option<&Connection> {
        None
    }
}

impl Backend for Connection {
    fn begin(&self) -> DbResult<()> {
        Db::execute(self, "BEGIN IMMEDIATE", &[]).map(|_| ())
    }
    fn in_transaction(&self) -> bool {
        !self.is_autocommit()
    }
    fn savepoint_always(&self) -> bool {
        false
    }
    fn sqlite(&self) -> Option<&Connection> {
        Some(self)
    }
}
