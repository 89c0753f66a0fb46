//! What a step does when it fails or runs too long: retries with backoff, and DAG node
//! timeouts. Both executors read the same policy; the waits are timers the driver arms
//! (durable ones in a stored run), so a retry survives a restart.
//!
//! ```
//! use ramus_core::{Backoff, RetryPolicy};
//!
//! let p = RetryPolicy { attempts: 4, backoff: Backoff::Exponential, initial_ms: 100, max_ms: Some(250), ..RetryPolicy::default() };
//! assert_eq!(p.delay_ms(1, 0), 100); // after the first failed attempt
//! assert_eq!(p.delay_ms(2, 0), 200);
//! assert_eq!(p.delay_ms(3, 0), 250); // capped by `max`
//! assert!(p.retries_after(3));
//! assert!(!p.retries_after(4)); // the fourth attempt was the last
//! ```

/// How the wait between attempts grows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backoff {
    /// Always `initial`.
    Fixed,
    /// `initial`, then twice as long after each failure.
    #[default]
    Exponential,
}

/// Who decides whether an error is worth another attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetryOn {
    /// The config's own function (the face keeps it).
    Inline,
    /// A predicate registered in the engine under this key.
    Registered(String),
}

/// A step's `retry`: how many attempts in all, and how long to wait between them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// How the wait grows.
    pub backoff: Backoff,
    /// The first wait, in milliseconds.
    pub initial_ms: u64,
    /// The longest wait.
    pub max_ms: Option<u64>,
    /// Wait a random time between half the backoff and all of it, so that many steps
    /// failing together do not all retry at the same moment.
    pub jitter: bool,
    /// Which errors are retried; without one, every failure of the runner is (a
    /// cancellation never is).
    pub retry_on: Option<RetryOn>,
}

/// The first wait when `retry.initial` is not given.
pub const DEFAULT_RETRY_INITIAL_MS: u64 = 1000;
/// At most this many attempts: a step's attempts have step slots of their own.
pub const MAX_ATTEMPTS: u32 = 1000;

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 1,
            backoff: Backoff::Exponential,
            initial_ms: DEFAULT_RETRY_INITIAL_MS,
            max_ms: None,
            jitter: false,
            retry_on: None,
        }
    }
}

impl RetryPolicy {
    /// Whether a failure of attempt `attempt` (1-based) is followed by another attempt.
    pub fn retries_after(&self, attempt: u32) -> bool {
        attempt < self.attempts.min(MAX_ATTEMPTS)
    }

    /// Whether a timeout of attempt `attempt` is a question for the `retryOn` (see
    /// [`Guards::retries_timeout`](crate::Guards::retries_timeout)): it names one, and
    /// another attempt is allowed.
    pub fn asks_on_timeout(&self, attempt: u32) -> bool {
        self.retry_on.is_some() && self.retries_after(attempt)
    }

    /// The wait after attempt `attempt` failed; `seed` picks the jitter (the same seed gives
    /// the same wait, so a run is replayable).
    pub fn delay_ms(&self, attempt: u32, seed: u64) -> u64 {
        let base = match self.backoff {
            Backoff::Fixed => self.initial_ms,
            Backoff::Exponential => {
                let doublings = attempt.saturating_sub(1).min(63);
                self.initial_ms.saturating_mul(1u64 << doublings)
            }
        };
        let capped = self
            .max_ms
            .map_or(base, |m| base.min(m))
            .min(crate::machine::MAX_DURATION_MS);
        if !self.jitter || capped < 2 {
            return capped;
        }
        let half = capped / 2;
        half + mix(seed ^ u64::from(attempt)) % (capped - half + 1)
    }
}

/// What a DAG node or machine state declares about failing and running long.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepPolicy {
    /// Its `retry`.
    pub retry: Option<RetryPolicy>,
    /// DAG nodes: cancel an attempt that runs longer, failing it with a `TimeoutError`
    /// (then `retry` applies). `(ms, label)`: the label is how the config wrote it.
    pub timeout: Option<(u64, String)>,
}

impl StepPolicy {
    /// Whether the policy asks for anything.
    pub fn is_empty(&self) -> bool {
        self.retry.is_none() && self.timeout.is_none()
    }
}

/// splitmix64: a well-spread hash of a seed.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_between_half_and_all_of_the_backoff() {
        let p = RetryPolicy {
            attempts: 10,
            backoff: Backoff::Fixed,
            initial_ms: 1000,
            jitter: true,
            ..RetryPolicy::default()
        };
        let waits: Vec<u64> = (0..200).map(|seed| p.delay_ms(1, seed)).collect();
        assert!(waits.iter().all(|&w| (500..=1000).contains(&w)));
        // Not one value for every seed.
        assert!(waits.iter().any(|&w| w != waits[0]));
        assert_eq!(p.delay_ms(1, 7), p.delay_ms(1, 7));
    }

    #[test]
    fn exponential_backoff_saturates_instead_of_overflowing() {
        let p = RetryPolicy {
            attempts: MAX_ATTEMPTS,
            initial_ms: u64::MAX / 4,
            ..RetryPolicy::default()
        };
        assert_eq!(p.delay_ms(200, 0), crate::machine::MAX_DURATION_MS);
        assert!(!p.retries_after(MAX_ATTEMPTS));
    }
}
