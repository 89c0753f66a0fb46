//! A step-result cache in SQLite: the `cache` table of an engine's own database (schema
//! version 2), or of any file given to `sqliteCache(path)`.
//!
//! ```
//! use ramus_store::SqliteCache;
//!
//! let cache = SqliteCache::open(":memory:").unwrap();
//! cache.set("fetch", "k1", r#"{"page":1}"#, 1_000, Some(500)).unwrap();
//! assert_eq!(cache.get("fetch", "k1", 1_200).unwrap().as_deref(), Some(r#"{"page":1}"#));
//! assert_eq!(cache.get("fetch", "k1", 1_500).unwrap(), None); // expired
//! ```

use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension};

use crate::error::{Error, Result};

/// The table, as migration 2 creates it in an engine's database; a file that is not one
/// gets only this table.
const CREATE: &str = "CREATE TABLE IF NOT EXISTS cache (
    node        TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    PRIMARY KEY (node, key)
)";

/// Cached step results by node (or state) and key, each with an optional expiry.
pub struct SqliteCache {
    conn: Mutex<Connection>,
    path: String,
}

impl SqliteCache {
    /// Open (creating if needed) the cache in the database at `path` (`":memory:"` for a
    /// private one). Several processes may share a file: writes wait for each other.
    pub fn open(path: &str) -> Result<SqliteCache> {
        let conn = Connection::open(path).map_err(|e| Error::open(path, e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| Error::open(path, e))?;
        if path != ":memory:" {
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(|e| Error::open(path, e))?;
        }
        conn.execute_batch(CREATE)
            .map_err(|e| Error::open(path, e))?;
        Ok(SqliteCache {
            conn: Mutex::new(conn),
            path: path.to_owned(),
        })
    }

    /// The value cached for `(node, key)`, unless it expired by `now` (ms).
    pub fn get(&self, node: &str, key: &str, now: i64) -> Result<Option<String>> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        conn.prepare_cached(
            "SELECT value FROM cache WHERE node = ?1 AND key = ?2 \
             AND (expires_at IS NULL OR expires_at > ?3)",
        )
        .and_then(|mut s| {
            s.query_row((node, key, now), |r| r.get::<_, String>(0))
                .optional()
        })
        .map_err(|e| Error::read(format!("the cache in {}", self.path), e))
    }

    /// Cache `value` for `(node, key)` at `now`, for `ttl_ms` (forever when `None`).
    pub fn set(
        &self,
        node: &str,
        key: &str,
        value: &str,
        now: i64,
        ttl_ms: Option<i64>,
    ) -> Result<()> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        conn.prepare_cached(
            "INSERT OR REPLACE INTO cache (node, key, value, created_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut s| s.execute((node, key, value, now, ttl_ms.map(|t| now.saturating_add(t)))))
        .map(|_| ())
        .map_err(|e| self.write_error(key, e))
    }

    /// Forget the entries of `node`, or all of them; and those expired by `now`.
    pub fn clear(&self, node: Option<&str>, now: i64) -> Result<()> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let r = match node {
            Some(n) => conn.execute(
                "DELETE FROM cache WHERE node = ?1 OR expires_at <= ?2",
                (n, now),
            ),
            None => conn.execute("DELETE FROM cache", ()),
        };
        r.map(|_| ()).map_err(|e| self.write_error("*", e))
    }

    fn write_error(&self, key: &str, e: rusqlite::Error) -> Error {
        Error::Write {
            what: "cache entry",
            id: key.to_owned(),
            source: std::sync::Arc::new(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_per_node_and_key_and_clear_forgets_them() {
        let c = SqliteCache::open(":memory:").unwrap();
        c.set("a", "k", "1", 0, None).unwrap();
        c.set("b", "k", "2", 0, None).unwrap();
        assert_eq!(c.get("a", "k", 10).unwrap().as_deref(), Some("1"));
        assert_eq!(c.get("b", "k", 10).unwrap().as_deref(), Some("2"));
        c.set("a", "k", "3", 1, None).unwrap();
        assert_eq!(c.get("a", "k", 10).unwrap().as_deref(), Some("3"));
        c.clear(Some("a"), 10).unwrap();
        assert_eq!(c.get("a", "k", 10).unwrap(), None);
        assert_eq!(c.get("b", "k", 10).unwrap().as_deref(), Some("2"));
        c.clear(None, 10).unwrap();
        assert_eq!(c.get("b", "k", 10).unwrap(), None);
    }

    #[test]
    fn an_engine_database_shares_its_cache_table() {
        let dir = std::env::temp_dir().join(format!("ramus-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("engine.sqlite");
        let path = path.to_str().unwrap();
        let store = crate::SqliteStore::open(path, crate::Durability::Batched).unwrap();
        let c = SqliteCache::open(path).unwrap();
        c.set("n", "k", "v", 0, Some(10)).unwrap();
        assert_eq!(c.get("n", "k", 5).unwrap().as_deref(), Some("v"));
        store.close().unwrap();
        drop(c);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
