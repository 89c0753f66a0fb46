//! Fresh ids for rows the engine makes outside a run's recorder (runs, stored events,
//! timers, transitions).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::{LazyLock, Mutex};

use ramus_core::IdGen;

/// A fresh seed: the OS-seeded keys of `RandomState`, so ids made in different processes
/// never share their random bits.
pub fn seed() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}

/// A fresh UUIDv7 for the moment `now_ms`, as text.
pub fn new_id(now_ms: u64) -> String {
    // One generator per process keeps ids minted in the same millisecond ordered.
    static IDS: LazyLock<Mutex<IdGen>> = LazyLock::new(|| Mutex::new(IdGen::new(seed())));
    let mut ids = IDS.lock().unwrap_or_else(|e| e.into_inner());
    ids.next(now_ms).to_string()
}
