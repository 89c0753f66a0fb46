//! Counting semaphores keyed by name, without the waiting: a waiter is an id the caller
//! maps to whatever wakes it (a JS promise resolver, a channel).

use std::collections::{HashMap, VecDeque};

#[derive(Debug, Default)]
struct Slot {
    limit: u32,
    current: u32,
    waiters: VecDeque<u64>,
}

/// Limits, holders and FIFO waiters per key. A key without a limit is unlimited and not
/// tracked; a limit of 0 blocks until raised.
#[derive(Debug, Default)]
pub struct SemaphoreTable {
    slots: HashMap<String, Slot>,
}

impl SemaphoreTable {
    /// A table with the given limits.
    pub fn new<I: IntoIterator<Item = (String, u32)>>(limits: I) -> Self {
        SemaphoreTable {
            slots: limits
                .into_iter()
                .map(|(k, limit)| {
                    (
                        k,
                        Slot {
                            limit,
                            ..Slot::default()
                        },
                    )
                })
                .collect(),
        }
    }

    /// Take a slot for `waiter` if one is free (true), or queue it (false) to be returned
    /// later by [`release`](Self::release) or [`set_limit`](Self::set_limit).
    pub fn acquire(&mut self, key: &str, waiter: u64) -> bool {
        let Some(slot) = self.slots.get_mut(key) else {
            return true;
        };
        if slot.current < slot.limit && slot.waiters.is_empty() {
            slot.current += 1;
            true
        } else {
            slot.waiters.push_back(waiter);
            false
        }
    }

    /// Give a slot back; returns the waiter that now holds it, if any. Releasing more than
    /// was acquired leaves the count at zero.
    pub fn release(&mut self, key: &str) -> Option<u64> {
        let slot = self.slots.get_mut(key)?;
        slot.current = slot.current.saturating_sub(1);
        Self::grant(slot).next()
    }

    /// Change (or create) a key's limit; returns the waiters that now hold slots.
    pub fn set_limit(&mut self, key: &str, limit: u32) -> Vec<u64> {
        let slot = self.slots.entry(key.to_string()).or_default();
        slot.limit = limit;
        Self::grant(slot).collect()
    }

    /// Slots of `key` held now.
    pub fn current(&self, key: &str) -> u32 {
        self.slots.get(key).map_or(0, |s| s.current)
    }

    /// Waiters queued on `key`.
    pub fn waiting(&self, key: &str) -> usize {
        self.slots.get(key).map_or(0, |s| s.waiters.len())
    }

    /// Every key with a limit, as `(key, limit, held, waiting)`, in no particular order.
    pub fn counts(&self) -> impl Iterator<Item = (&str, u32, u32, usize)> + '_ {
        self.slots
            .iter()
            .map(|(k, s)| (k.as_str(), s.limit, s.current, s.waiters.len()))
    }

    fn grant(slot: &mut Slot) -> impl Iterator<Item = u64> + '_ {
        std::iter::from_fn(move || {
            if slot.current < slot.limit {
                let w = slot.waiters.pop_front()?;
                slot.current += 1;
                Some(w)
            } else {
                None
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_fifo() {
        let mut t = SemaphoreTable::new([("a".to_string(), 2)]);
        assert!(t.acquire("a", 1));
        assert!(t.acquire("a", 2));
        assert!(!t.acquire("a", 3));
        assert!(!t.acquire("a", 4));
        assert_eq!(t.current("a"), 2);
        assert_eq!(t.release("a"), Some(3));
        assert_eq!(t.release("a"), Some(4));
        assert_eq!(t.release("a"), None);
        assert_eq!(t.release("a"), None);
        assert_eq!(t.release("a"), None);
        assert_eq!(t.current("a"), 0);
        assert!(t.acquire("unknown", 9));
        assert_eq!(t.current("unknown"), 0);
    }

    #[test]
    fn counts_list_limited_keys_only() {
        let mut t = SemaphoreTable::new([("a".to_string(), 1)]);
        t.set_limit("b", 0);
        assert!(t.acquire("a", 1));
        assert!(!t.acquire("a", 2));
        assert!(!t.acquire("b", 3));
        assert!(t.acquire("unlimited", 4));
        let mut counts: Vec<_> = t.counts().collect();
        counts.sort();
        assert_eq!(counts, vec![("a", 1, 1, 1), ("b", 0, 0, 1)]);
    }

    #[test]
    fn zero_limit_blocks_until_raised() {
        let mut t = SemaphoreTable::new([("k".to_string(), 0)]);
        assert!(!t.acquire("k", 1));
        assert!(!t.acquire("k", 2));
        assert!(!t.acquire("k", 3));
        assert_eq!(t.set_limit("k", 2), vec![1, 2]);
        assert_eq!(t.waiting("k"), 1);
        // Lowering the limit below the holders wakes nobody until enough are released.
        assert!(t.set_limit("k", 1).is_empty());
        assert_eq!(t.release("k"), None);
        assert_eq!(t.release("k"), Some(3));
    }
}
