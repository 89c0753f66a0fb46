//! Where a test's store lives: a new SQLite file, or, when `RAMUS_TEST_PG` names a
//! PostgreSQL server (`.ci/run` sets it), a new schema of its own on that server.

use std::sync::atomic::{AtomicU32, Ordering};

use tempfile::TempDir;

/// A location for one test's store inside `dir` (SQLite) or on `RAMUS_TEST_PG`.
#[allow(dead_code)]
pub fn location(dir: &TempDir, file: &str) -> String {
    match std::env::var("RAMUS_TEST_PG") {
        Ok(base) if !base.is_empty() => fresh_schema(&base),
        _ => dir.path().join(file).to_str().unwrap().to_owned(),
    }
}

/// A URL of `base` whose tables go to a schema nobody used before (the store creates it).
pub fn fresh_schema(base: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let schema = format!(
        "t_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros()
    );
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-csearch_path%3D{schema}")
}
