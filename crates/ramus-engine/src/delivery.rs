//! Delivery of events other processes store for runs live here: a process that runs a
//! machine looks for them every poll interval, and hands each to its run once.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use ramus_store::{PendingEvent, Store};

/// The runs whose stored events are looked for, each with what its engine needs to reach it
/// (`T`: the Rust engine needs nothing, the Node binding the run's key), and the ids of the
/// events already handed over, so each is delivered once while its delivery commits.
///
/// ```
/// use ramus_engine::delivery::Watched;
/// use ramus_store::{Durability, SqliteStore};
///
/// let store = SqliteStore::open(":memory:", Durability::Sync).unwrap();
/// let watched = Watched::<u32>::default();
/// watched.watch("run-1", 7, []);
/// assert!(watched.poll(&store).is_empty()); // nothing stored for it
/// ```
pub struct Watched<T> {
    runs: Mutex<HashMap<String, (T, HashSet<String>)>>,
    version: Mutex<Option<i64>>,
}

impl<T> Default for Watched<T> {
    fn default() -> Self {
        Watched {
            runs: Mutex::new(HashMap::new()),
            version: Mutex::new(None),
        }
    }
}

impl<T: Clone> Watched<T> {
    /// Look for `run_id`'s events; `taken`: ids already delivered whose delivery may not be
    /// committed yet (a resumed run's).
    pub fn watch(&self, run_id: &str, tag: T, taken: impl IntoIterator<Item = String>) {
        self.lock()
            .insert(run_id.to_owned(), (tag, taken.into_iter().collect()));
    }

    /// Stop looking for a run's events (it ended, or is no longer live here).
    pub fn unwatch(&self, run_id: &str) {
        self.lock().remove(run_id);
    }

    /// Stop looking for any.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// One look: only when the database changed since the last (its `data_version`), and
    /// each event once, with the tag of its run.
    pub fn poll(&self, store: &dyn Store) -> Vec<(T, PendingEvent)> {
        let mut out = Vec::new();
        let Ok(version) = store.data_version() else {
            return out;
        };
        let run_ids: Vec<String> = {
            let runs = self.lock();
            let mut v = self.version.lock().unwrap_or_else(|e| e.into_inner());
            if runs.is_empty() || *v == Some(version) {
                return out;
            }
            *v = Some(version);
            runs.keys().cloned().collect()
        };
        for run_id in run_ids {
            let Ok(pending) = store.pending_events(&run_id) else {
                continue;
            };
            let mut runs = self.lock();
            let Some((tag, taken)) = runs.get_mut(&run_id) else {
                continue;
            };
            // Events whose delivery is committed are no longer pending: forget them.
            taken.retain(|id| pending.iter().any(|e| &e.id == id));
            for e in pending {
                if taken.insert(e.id.clone()) {
                    out.push((tag.clone(), e));
                }
            }
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (T, HashSet<String>)>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }
}
