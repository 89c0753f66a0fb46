//! The store on PostgreSQL: the same schema, statements and writer as on SQLite (see
//! `db`), on three connections: the writer's, the reader's, and one that `LISTEN`s for the
//! commits of every process on the database, which is what `data_version` counts.
//!
//! Where the databases differ the writer adapts: every submission and lease change runs
//! in a savepoint (a failed statement spoils a PostgreSQL transaction), rows that decide
//! who may go on (a run's lease when a fence is checked, a limit being taken from, a
//! queued run being claimed) are locked until the commit, and a deadlock the server breaks
//! by failing one side is retried.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::BytesMut;
use postgres::types::{FromSql, IsNull, ToSql as PgToSql, Type};
use postgres::{Client, NoTls, Statement};
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::ToSql;

use crate::db::{Backend, Db, DbError, DbResult, Row};
use crate::error::{Error, Result};
use crate::store::{Conn, Options, SqliteStore};

/// The channel every commit notifies.
const CHANNEL: &str = "ramus_store";

/// Whether `location` names a PostgreSQL database (`postgres://…` or `postgresql://…`).
pub fn is_postgres(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// `url` without its password, to show in messages and `location()`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (auth, host) = match rest.split_once('@') {
        Some((auth, host)) if !auth.contains('/') => (auth, host),
        _ => return url.to_owned(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://{auth}@{host}"),
    }
}

impl From<postgres::Error> for DbError {
    fn from(e: postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => DbError::Postgres {
                message: match db.detail() {
                    Some(detail) => format!("{}: {} ({detail})", db.severity(), db.message()),
                    None => format!("{}: {}", db.severity(), db.message()),
                },
                code: Some(db.code().code().to_owned()),
            },
            None => DbError::Postgres {
                message: match e.source() {
                    Some(cause) => format!("{e}: {cause}"),
                    None => e.to_string(),
                },
                code: e.code().map(|c| c.code().to_owned()),
            },
        }
    }
}

/// Rewrite the store's SQL (SQLite's spelling) for PostgreSQL: `?N` and `?` become `$N`,
/// `/*pg:…*/` becomes `…` (clauses only PostgreSQL has, such as `FOR UPDATE`), and the
/// few names that differ are swapped. String literals and other comments are kept as
/// they are.
pub(crate) fn translate(sql: &str) -> String {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 16);
    let mut i = 0;
    let mut next_param = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' | b'"' => {
                let end = sql[i + 1..].find(c as char).map_or(b.len(), |j| i + 2 + j);
                out.push_str(&sql[i..end]);
                i = end;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                let end = sql[i..].find('\n').map_or(b.len(), |j| i + j);
                out.push_str(&sql[i..end]);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = sql[i..].find("*/").map_or(b.len(), |j| i + j + 2);
                match sql[i..end].strip_prefix("/*pg:") {
                    Some(inner) => out.push_str(inner.trim_end_matches("*/")),
                    None => out.push_str(&sql[i..end]),
                }
                i = end;
            }
            b'?' => {
                let digits = b[i + 1..].iter().take_while(|d| d.is_ascii_digit()).count();
                out.push('$');
                if digits > 0 {
                    out.push_str(&sql[i + 1..i + 1 + digits]);
                } else {
                    next_param += 1;
                    out.push_str(&next_param.to_string());
                }
                i += 1 + digits;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let len = b[i..]
                    .iter()
                    .take_while(|d| d.is_ascii_alphanumeric() || **d == b'_')
                    .count();
                let word = &sql[i..i + len];
                out.push_str(match word {
                    "INTEGER" => "BIGINT",
                    "REAL" => "DOUBLE PRECISION",
                    "json_each" => "ramus_json_each",
                    "instr" => "strpos",
                    "rowid" => "ctid",
                    // `CROSS JOIN … ON` pins SQLite's join order; PostgreSQL plans its own.
                    "CROSS" => "",
                    w => w,
                });
                i += len;
            }
            _ => {
                let len = sql[i..].chars().next().map_or(1, char::len_utf8);
                out.push_str(&sql[i..i + len]);
                i += len;
            }
        }
    }
    out
}

/// A parameter as PostgreSQL wants it: rusqlite's value, converted to the type the server
/// inferred for its place (an integer bound where a `bigint`, an `int4` or a `text` is
/// wanted, ...).
#[derive(Debug)]
struct Param<'a>(ValueRef<'a>);

type BoxError = Box<dyn StdError + Sync + Send>;

fn put<T: PgToSql>(v: T, ty: &Type, out: &mut BytesMut) -> std::result::Result<IsNull, BoxError> {
    v.to_sql(ty, out)
}

impl PgToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> std::result::Result<IsNull, BoxError> {
        match self.0 {
            ValueRef::Null => Ok(IsNull::Yes),
            ValueRef::Integer(i) => match *ty {
                Type::INT8 => put(i, ty, out),
                Type::INT4 => put(i32::try_from(i)?, ty, out),
                Type::INT2 => put(i16::try_from(i)?, ty, out),
                Type::FLOAT8 => put(i as f64, ty, out),
                Type::FLOAT4 => put(i as f32, ty, out),
                Type::BOOL => put(i != 0, ty, out),
                _ => put(i.to_string(), ty, out),
            },
            ValueRef::Real(f) => match *ty {
                Type::FLOAT8 => put(f, ty, out),
                Type::FLOAT4 => put(f as f32, ty, out),
                Type::INT8 if f.fract() == 0.0 => put(f as i64, ty, out),
                _ => put(f.to_string(), ty, out),
            },
            ValueRef::Text(t) => {
                let s = std::str::from_utf8(t)?;
                match *ty {
                    Type::INT8 => put(s.parse::<i64>()?, ty, out),
                    Type::INT4 => put(s.parse::<i32>()?, ty, out),
                    Type::JSONB => {
                        out.extend_from_slice(&[1]);
                        out.extend_from_slice(t);
                        Ok(IsNull::No)
                    }
                    Type::JSON => {
                        out.extend_from_slice(t);
                        Ok(IsNull::No)
                    }
                    _ => {
                        out.extend_from_slice(t);
                        Ok(IsNull::No)
                    }
                }
            }
            ValueRef::Blob(b) => put(b, ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// A column as rusqlite's value, whatever PostgreSQL type it came in.
struct Column(Value);

impl<'a> FromSql<'a> for Column {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> std::result::Result<Self, BoxError> {
        Ok(Column(match *ty {
            Type::INT8 => Value::Integer(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Integer(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => Value::Integer(i16::from_sql(ty, raw)?.into()),
            Type::OID => Value::Integer(u32::from_sql(ty, raw)?.into()),
            Type::BOOL => Value::Integer(bool::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Real(f32::from_sql(ty, raw)?.into()),
            Type::BYTEA => Value::Blob(raw.to_vec()),
            Type::JSONB => Value::Text(std::str::from_utf8(raw.get(1..).unwrap_or(&[]))?.into()),
            Type::VOID => Value::Null,
            _ => Value::Text(std::str::from_utf8(raw)?.to_owned()),
        }))
    }

    fn from_sql_null(_: &Type) -> std::result::Result<Self, BoxError> {
        Ok(Column(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Run `f`, a call of the blocking client, where it may block: the client drives its
/// connection with a runtime of its own, which cannot start on a thread that already runs
/// tokio tasks (the engine's timers and pollers read the store from there), so from such
/// a thread the call goes to a short-lived thread of its own.
fn blocking<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// One connection, its prepared statements (by the store's SQL text) and whether a
/// transaction is open.
pub(crate) struct PgConn {
    /// Where to connect again after [`Backend::disconnect`].
    url: String,
    client: RefCell<Option<Client>>,
    statements: RefCell<HashMap<String, Statement>>,
    in_transaction: Cell<bool>,
}

impl PgConn {
    fn connect(url: &str) -> Result<PgConn> {
        let conn = PgConn {
            url: url.to_owned(),
            client: RefCell::new(None),
            statements: RefCell::new(HashMap::new()),
            in_transaction: Cell::new(false),
        };
        // At once, so a wrong URL fails the open rather than the first read.
        drop(conn.client().map_err(|e| Error::open(&redact(url), e))?);
        Ok(conn)
    }

    /// Create the schema the URL's `search_path` names first, if it does not exist yet:
    /// `?options=-csearch_path%3Dname` gives an application (or a test) tables of its own
    /// on a shared database without a step before the first open.
    fn own_schema(&self) -> DbResult<()> {
        let row = self.call(|client| {
            client.query_one(
                "SELECT current_schema() IS NULL, current_setting('search_path')",
                &[],
            )
        })?;
        let (missing, path): (bool, String) = (row.get(0), row.get(1));
        let first = path.split(',').next().unwrap_or_default().trim();
        if missing && !first.is_empty() && first != "\"$user\"" {
            let name = first.trim_matches('"').replace('"', "\"\"");
            self.raw(&format!("CREATE SCHEMA IF NOT EXISTS \"{name}\""))?;
        }
        Ok(())
    }

    /// The connection, opened again if it was closed or lost.
    fn client(&self) -> DbResult<std::cell::RefMut<'_, Client>> {
        let mut slot = self.client.borrow_mut();
        // A connection the server dropped (a restart) is replaced between transactions;
        // inside one the failure must surface, since what it did is gone.
        let broken = slot.as_ref().is_none_or(Client::is_closed);
        if broken && !self.in_transaction.get() {
            let url = self.url.as_str();
            *slot = Some(blocking(|| Client::connect(url, NoTls))?);
            self.statements.borrow_mut().clear();
        }
        Ok(std::cell::RefMut::map(slot, |c| {
            c.as_mut().expect("connected above")
        }))
    }

    /// Call the client where it may block (see [`blocking`]).
    fn call<T: Send>(
        &self,
        f: impl FnOnce(&mut Client) -> std::result::Result<T, postgres::Error> + Send,
    ) -> DbResult<T> {
        let mut client = self.client()?;
        let client: &mut Client = &mut client;
        Ok(blocking(|| f(client))?)
    }

    /// Run statements as they are (no translation, no parameters).
    fn raw(&self, sql: &str) -> DbResult<()> {
        self.call(|client| client.batch_execute(sql))
    }

    /// Run `f` with the prepared statement of `sql` and `params` bound for it.
    fn with_params<T>(
        &self,
        sql: &str,
        params: &[&dyn ToSql],
        f: impl FnOnce(
                &mut Client,
                &Statement,
                &[&(dyn PgToSql + Sync)],
            ) -> std::result::Result<T, postgres::Error>
            + Send,
    ) -> DbResult<T>
    where
        T: Send,
    {
        let stmt = self.statement(sql)?;
        let outputs = outputs(params)?;
        let bound = bind(&outputs)?;
        let refs: Vec<&(dyn PgToSql + Sync)> =
            bound.iter().map(|p| p as &(dyn PgToSql + Sync)).collect();
        self.call(|client| f(client, &stmt, &refs))
    }

    fn statement(&self, sql: &str) -> DbResult<Statement> {
        if let Some(stmt) = self.statements.borrow().get(sql) {
            return Ok(stmt.clone());
        }
        let translated = translate(sql);
        let stmt = self.call(|client| client.prepare(&translated))?;
        let mut cache = self.statements.borrow_mut();
        // Filters make many shapes of a few reads; a bound keeps them from piling up.
        if cache.len() >= 512 {
            cache.clear();
        }
        cache.insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        self.disconnect();
    }
}

/// rusqlite's values of `params`, borrowed where they can be.
fn outputs<'a>(params: &'a [&'a dyn ToSql]) -> DbResult<Vec<ToSqlOutput<'a>>> {
    Ok(params
        .iter()
        .map(|p| p.to_sql())
        .collect::<rusqlite::Result<_>>()?)
}

fn bind<'a>(outputs: &'a [ToSqlOutput<'a>]) -> DbResult<Vec<Param<'a>>> {
    outputs
        .iter()
        .map(|o| match o {
            ToSqlOutput::Borrowed(v) => Ok(Param(*v)),
            ToSqlOutput::Owned(v) => Ok(Param(ValueRef::from(v))),
            _ => Err(DbError::Postgres {
                message: "a parameter of a kind PostgreSQL cannot take".into(),
                code: None,
            }),
        })
        .collect()
}

impl Db for PgConn {
    fn execute(&self, sql: &str, params: &[&dyn ToSql]) -> DbResult<usize> {
        let changed = self.with_params(sql, params, |client, stmt, params| {
            client.execute(stmt, params)
        })?;
        Ok(changed as usize)
    }

    fn each_row(
        &self,
        sql: &str,
        params: &[&dyn ToSql],
        each: &mut dyn FnMut(&Row<'_>) -> rusqlite::Result<()>,
    ) -> DbResult<()> {
        let rows = self.with_params(sql, params, |client, stmt, params| {
            client.query(stmt, params)
        })?;
        let mut values = Vec::new();
        for row in rows {
            values.clear();
            for i in 0..row.len() {
                values.push(row.try_get::<_, Column>(i)?.0);
            }
            each(&Row::Values(&values))?;
        }
        Ok(())
    }

    fn batch(&self, sql: &str) -> DbResult<()> {
        self.raw(&translate(sql))
    }

    fn lock(&self, key: &str) -> DbResult<()> {
        self.execute(
            "SELECT pg_advisory_xact_lock(hashtext(?1))",
            rusqlite::params![key],
        )
        .map(|_| ())
    }
}

impl Backend for PgConn {
    fn begin(&self) -> DbResult<()> {
        self.raw("BEGIN")?;
        self.in_transaction.set(true);
        Ok(())
    }

    fn in_transaction(&self) -> bool {
        self.in_transaction.get()
    }

    fn savepoint_always(&self) -> bool {
        true
    }

    fn disconnect(&self) {
        self.statements.borrow_mut().clear();
        if let Some(client) = self.client.borrow_mut().take() {
            // Closing says goodbye to the server, a blocking call too.
            blocking(move || drop(client));
        }
    }

    fn commit(&self) -> DbResult<()> {
        // The notification is delivered to every listener once the commit is done, never
        // for a rollback. A failure leaves the transaction open for the caller's rollback.
        self.raw(&format!("NOTIFY {CHANNEL}; COMMIT"))?;
        self.in_transaction.set(false);
        Ok(())
    }

    fn rollback(&self) -> DbResult<()> {
        self.in_transaction.set(false);
        self.raw("ROLLBACK")
    }

    fn prelude(&self) -> DbResult<()> {
        // SQLite's `json_each(text)` as the store uses it: the elements of a JSON array of
        // strings, in a column `value`.
        self.raw(
            "CREATE OR REPLACE FUNCTION ramus_json_each(text) RETURNS TABLE (value text) \
             LANGUAGE sql IMMUTABLE AS $$ SELECT jsonb_array_elements_text($1::jsonb) $$",
        )
    }
}

/// The connection that counts commits: it `LISTEN`s on [`CHANNEL`] and adds one to
/// `version` per notification, until `stop` is set.
pub(crate) struct Listener {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Listener {
    fn start(url: &str, version: Arc<AtomicI64>) -> Result<Listener> {
        let location = redact(url);
        let mut client = blocking(|| {
            let mut client = Client::connect(url, NoTls)?;
            client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
            Ok::<_, postgres::Error>(client)
        })
        .map_err(|e| Error::open(&location, e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("ramus-store-listener".into())
            .spawn(move || {
                while !stopped.load(Ordering::Acquire) {
                    let mut notifications = client.notifications();
                    let mut seen = 0;
                    let mut iter = notifications.timeout_iter(Duration::from_millis(100));
                    loop {
                        match postgres::fallible_iterator::FallibleIterator::next(&mut iter) {
                            Ok(Some(_)) => seen += 1,
                            Ok(None) => break,
                            Err(_) => {
                                // The connection is gone: every poller re-reads from now on
                                // (the count moves each time) rather than trusting a stale one.
                                version.fetch_add(1, Ordering::AcqRel);
                                std::thread::sleep(Duration::from_millis(100));
                                break;
                            }
                        }
                        if seen > 0 {
                            version.fetch_add(seen, Ordering::AcqRel);
                            seen = 0;
                        }
                    }
                }
            })
            .map_err(|e| {
                Error::open(
                    &location,
                    rusqlite::Error::InvalidParameterName(format!(
                        "cannot start the listener thread: {e}"
                    )),
                )
            })?;
        Ok(Listener {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// The schema version of the Ramus tables at `url`, or `None` when there are none.
pub(crate) fn probe(url: &str) -> Result<Option<u32>> {
    let conn = PgConn::connect(url)?;
    let has_meta = (&conn as &dyn Db)
        .one("SELECT to_regclass('meta') IS NOT NULL", &[], |r| {
            r.get::<bool>(0)
        })
        .map_err(|e| Error::read("schema", e))?;
    if !has_meta {
        return Ok(None);
    }
    crate::read::schema_version(&conn).map(Some)
}

impl SqliteStore {
    /// Open the PostgreSQL database at `url` (`postgres://user:password@host:port/db`; a
    /// `?options=-csearch_path%3Dname` keeps the tables in a schema of their own), creating
    /// or migrating the schema, with `options` (the SQLite-only ones are ignored).
    ///
    /// ```no_run
    /// use ramus_store::{Durability, Options, SqliteStore, Store};
    /// # fn main() -> ramus_store::Result<()> {
    /// let store = SqliteStore::open_postgres(
    ///     "postgres://postgres@127.0.0.1:5432/ramus",
    ///     Options::new(Durability::Sync),
    /// )?;
    /// assert!(store.runs(&Default::default())?.len() < usize::MAX);
    /// # Ok(()) }
    /// ```
    pub fn open_postgres(url: &str, options: Options) -> Result<SqliteStore> {
        let location = redact(url);
        let writer = PgConn::connect(url)?;
        writer.own_schema().map_err(|e| Error::open(&location, e))?;
        crate::schema::migrate(&writer, crate::store::now_ms())?;
        let reader = PgConn::connect(url)?;
        let version = Arc::new(AtomicI64::new(1));
        let listener = Listener::start(url, Arc::clone(&version))?;
        let mut store = SqliteStore::assemble(
            &location,
            &options,
            Some(Box::new(reader) as Conn),
            Box::new(writer),
            None,
            Some(version),
        )?;
        store.set_listener(listener);
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translates_placeholders_markers_and_names() {
        assert_eq!(
            translate("SELECT value FROM json_each(?2) WHERE a = ? AND b = 'x?' /*pg:FOR UPDATE*/"),
            "SELECT value FROM ramus_json_each($2) WHERE a = $1 AND b = 'x?' FOR UPDATE"
        );
        assert_eq!(
            translate("CREATE TABLE t (a INTEGER, b REAL) -- a comment's ?\n"),
            "CREATE TABLE t (a BIGINT, b DOUBLE PRECISION) -- a comment's ?\n"
        );
        assert_eq!(
            translate("FROM timers t CROSS JOIN runs r ON r.id = t.run_id"),
            "FROM timers t  JOIN runs r ON r.id = t.run_id"
        );
    }

    #[test]
    fn redacts_the_password() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }
}
