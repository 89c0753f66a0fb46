//! UUIDv7 identifiers for runs, steps and events.
//!
//! The generator is deterministic for a given seed and sequence of timestamps: the core
//! never reads the clock or the OS entropy source itself, which keeps replays exact.

use std::fmt;
use std::str::FromStr;

/// A UUIDv7 held as a `u128`: cheap to copy and compare, formatted only when a sink
/// (a JS listener, the store) needs the text.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Id(pub u128);

impl Id {
    /// The milliseconds since the Unix epoch stored in the id.
    pub fn timestamp_ms(self) -> u64 {
        (self.0 >> 80) as u64
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = uuid::Uuid::encode_buffer();
        f.write_str(
            uuid::Uuid::from_u128(self.0)
                .hyphenated()
                .encode_lower(&mut buf),
        )
    }
}

impl FromStr for Id {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(|u| Id(u.as_u128()))
    }
}

/// Generates UUIDv7 ids (RFC 9562) that are strictly increasing within one generator:
/// `rand_a` holds a counter (RFC 9562 §6.2, method 1) so ids made in the same
/// millisecond still sort in creation order, and `rand_b` comes from a splitmix64
/// stream seeded by the driver.
#[derive(Clone, Debug)]
pub struct IdGen {
    last_ms: u64,
    seq: u16,
    rng: u64,
}

impl IdGen {
    /// A generator whose random bits derive from `seed`.
    pub fn new(seed: u64) -> Self {
        IdGen {
            last_ms: 0,
            seq: 0,
            rng: seed,
        }
    }

    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The next id for a moment `now_ms` (milliseconds since the Unix epoch).
    pub fn next(&mut self, now_ms: u64) -> Id {
        let random = self.next_random();
        if now_ms > self.last_ms {
            self.last_ms = now_ms;
            // Start the counter in the lower half so a burst in one millisecond has room.
            self.seq = (random >> 52) as u16 & 0x7FF;
        } else {
            self.seq += 1;
            if self.seq > 0xFFF {
                // Counter exhausted: borrow the next millisecond rather than repeat an id.
                self.last_ms += 1;
                self.seq = 0;
            }
        }
        let ts = (self.last_ms & 0xFFFF_FFFF_FFFF) as u128;
        let rand_b = (random & 0x3FFF_FFFF_FFFF_FFFF) as u128;
        Id((ts << 80) | (0x7 << 76) | ((self.seq as u128) << 64) | (0b10 << 62) | rand_b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v7_and_increasing() {
        let mut g = IdGen::new(42);
        let mut last = Id(0);
        for i in 0..10_000u64 {
            let id = g.next(1_700_000_000_000 + i / 1000);
            assert!(id > last, "ids must increase");
            let u = uuid::Uuid::from_u128(id.0);
            assert_eq!(u.get_version_num(), 7);
            assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
            last = id;
        }
        assert_eq!(last.timestamp_ms(), 1_700_000_000_009);
        let text = last.to_string();
        assert_eq!(text.parse::<Id>().unwrap(), last);
    }

    #[test]
    fn counter_overflow_moves_to_next_millisecond() {
        let mut g = IdGen::new(1);
        let first = g.next(5);
        let mut last = first;
        for _ in 0..5000 {
            let id = g.next(5);
            assert!(id > last);
            last = id;
        }
        assert!(last.timestamp_ms() > 5);
    }
}
