//! `sqliteCache(path)` and an engine's own cache: the step-result cache of `ramus-store`.

use napi_derive::napi;
use ramus_store::SqliteCache;

use crate::reads::store_error;
use crate::JsResult as Result;

/// Cached step results in a SQLite file (see `SqliteCache`). Times come from the face, so
/// a `TestClock` decides what has expired.
#[napi]
pub struct NativeCache {
    inner: SqliteCache,
}

#[napi]
impl NativeCache {
    /// Open (creating if needed) the cache in the database at `path`.
    #[napi(constructor)]
    pub fn new(path: String) -> Result<Self> {
        Ok(NativeCache {
            inner: SqliteCache::open(&path).map_err(store_error)?,
        })
    }

    /// The value for `(node, key)` unless it expired by `now`.
    #[napi]
    pub fn get(&self, node: String, key: String, now: f64) -> Result<Option<String>> {
        self.inner.get(&node, &key, now as i64).map_err(store_error)
    }

    /// Store `value` for `(node, key)`, for `ttl` ms (forever without one).
    #[napi]
    pub fn set(
        &self,
        node: String,
        key: String,
        value: String,
        now: f64,
        ttl: Option<f64>,
    ) -> Result<()> {
        self.inner
            .set(&node, &key, &value, now as i64, ttl.map(|t| t as i64))
            .map_err(store_error)
    }

    /// Forget `node`'s entries (and expired ones), or everything.
    #[napi]
    pub fn clear(&self, node: Option<String>, now: f64) -> Result<()> {
        self.inner
            .clear(node.as_deref(), now as i64)
            .map_err(store_error)
    }
}
