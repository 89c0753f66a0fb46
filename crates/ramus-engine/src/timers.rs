//! The in-memory side of durable timers: every armed timer of the runs on one clock, in
//! due order. (The durable side is a `timers` row per timer, written by the run's
//! writer; after a restart the rows arm this wheel again.)

use std::collections::{BTreeMap, HashMap};

use crate::runtime::RunKey;

/// One timer that fell due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Due {
    /// The run it belongs to.
    pub run: RunKey,
    /// The run's timer id.
    pub timer: u64,
    /// When it was due.
    pub at: u64,
}

/// Armed timers ordered by due time (ties in arming order).
#[derive(Debug, Default)]
pub struct TimerWheel {
    by_due: BTreeMap<(u64, u64), (RunKey, u64)>,
    by_timer: HashMap<(RunKey, u64), (u64, u64)>,
    seq: u64,
    /// Timers of runs that keep the process alive while they are armed.
    keep_alive: HashMap<(RunKey, u64), ()>,
    /// The earliest due time changed since [`take_changed`](Self::take_changed).
    changed: bool,
}

impl TimerWheel {
    /// Arm (or re-arm) a run's timer.
    pub fn arm(&mut self, run: RunKey, timer: u64, at: u64, keep_alive: bool) {
        self.clear(run, timer);
        self.seq += 1;
        let earliest = self.next_due();
        self.by_due.insert((at, self.seq), (run, timer));
        self.by_timer.insert((run, timer), (at, self.seq));
        if keep_alive {
            self.keep_alive.insert((run, timer), ());
        }
        if earliest.is_none_or(|e| at < e) {
            self.changed = true;
        }
    }

    /// Disarm a run's timer (nothing when it is not armed).
    pub fn clear(&mut self, run: RunKey, timer: u64) {
        if let Some(key) = self.by_timer.remove(&(run, timer)) {
            let first = self.by_due.keys().next().copied();
            self.by_due.remove(&key);
            self.keep_alive.remove(&(run, timer));
            if first == Some(key) {
                self.changed = true;
            }
        }
    }

    /// Disarm every timer of a run.
    pub fn clear_run(&mut self, run: RunKey) {
        let timers: Vec<u64> = self
            .by_timer
            .keys()
            .filter(|(r, _)| *r == run)
            .map(|&(_, t)| t)
            .collect();
        for t in timers {
            self.clear(run, t);
        }
    }

    /// When the earliest timer falls due.
    pub fn next_due(&self) -> Option<u64> {
        self.by_due.keys().next().map(|&(at, _)| at)
    }

    /// The timers due at or before `now`, earliest first, disarmed.
    pub fn pop_due(&mut self, now: u64) -> Vec<Due> {
        let mut due = Vec::new();
        while let Some((&(at, seq), _)) = self.by_due.iter().next() {
            if at > now {
                break;
            }
            let (run, timer) = self.by_due.remove(&(at, seq)).expect("present");
            self.by_timer.remove(&(run, timer));
            self.keep_alive.remove(&(run, timer));
            due.push(Due { run, timer, at });
            self.changed = true;
        }
        due
    }

    /// The timers armed for a run, with their due times.
    pub fn armed(&self, run: RunKey) -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = self
            .by_timer
            .iter()
            .filter(|((r, _), _)| *r == run)
            .map(|(&(_, t), &(at, _))| (t, at))
            .collect();
        v.sort_by_key(|&(t, at)| (at, t));
        v
    }

    /// Whether any armed timer belongs to a run that keeps the process alive.
    pub fn keeps_alive(&self) -> bool {
        !self.keep_alive.is_empty()
    }

    /// Number of armed timers.
    pub fn len(&self) -> usize {
        self.by_due.len()
    }

    /// Whether no timer is armed.
    pub fn is_empty(&self) -> bool {
        self.by_due.is_empty()
    }

    /// Whether the earliest due time changed since the last call (a sleeper waiting for
    /// the old one must wake and look again).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> RunKey {
        RunKey { index: i, gen: 1 }
    }

    #[test]
    fn due_order_clear_and_ties() {
        let mut w = TimerWheel::default();
        w.arm(key(1), 1, 50, false);
        w.arm(key(2), 1, 20, true);
        w.arm(key(3), 7, 20, false);
        assert!(w.take_changed());
        assert_eq!(w.next_due(), Some(20));
        assert!(w.keeps_alive());
        w.clear(key(2), 1);
        assert!(!w.keeps_alive());
        assert_eq!(w.pop_due(10), vec![]);
        assert_eq!(
            w.pop_due(60),
            vec![
                Due {
                    run: key(3),
                    timer: 7,
                    at: 20
                },
                Due {
                    run: key(1),
                    timer: 1,
                    at: 50
                }
            ]
        );
        assert!(w.is_empty());
        w.arm(key(1), 2, 5, false);
        w.arm(key(1), 3, 6, false);
        w.clear_run(key(1));
        assert!(w.is_empty());
    }
}
