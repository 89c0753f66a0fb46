//! Time, injected. The core takes `now` as an argument; the engine asks a [`Clock`]. Runs
//! on a [`SystemClock`] fire their timers when the wall clock reaches them; runs on a
//! [`TestClock`] fire them when a test advances it, so a month-long agent is tested in
//! milliseconds with no sleeps.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where a run's time comes from.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// Whether time only moves when told to (a test clock): nothing sleeps on it.
    fn is_manual(&self) -> bool {
        false
    }
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// Where a [`TestClock`] starts unless told otherwise: 2026-01-01T00:00:00Z.
pub const TEST_CLOCK_START: u64 = 1_767_225_600_000;

/// A clock that moves only when a test moves it.
///
/// ```
/// use ramus_engine::{Clock, TestClock};
/// let clock = TestClock::new(1_000);
/// clock.advance(250);
/// assert_eq!(clock.now_ms(), 1_250);
/// ```
#[derive(Debug)]
pub struct TestClock {
    now: AtomicU64,
}

impl TestClock {
    /// A clock at `start_ms`.
    pub fn new(start_ms: u64) -> TestClock {
        TestClock {
            now: AtomicU64::new(start_ms),
        }
    }

    /// Move to `ms` (never backwards: time in a test only goes forward).
    pub fn set(&self, ms: u64) {
        self.now.fetch_max(ms, Ordering::AcqRel);
    }

    /// Move forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.now.fetch_add(ms, Ordering::AcqRel);
    }
}

impl Default for TestClock {
    fn default() -> Self {
        TestClock::new(TEST_CLOCK_START)
    }
}

impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::Acquire)
    }
    fn is_manual(&self) -> bool {
        true
    }
}
