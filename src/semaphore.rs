//! Keyed counting semaphores for `LocalSemaphore`: the counting in the core's
//! `SemaphoreTable`, the promise resolvers in the face.

use std::collections::HashMap;

use napi_derive::napi;
use ramus_core::SemaphoreTable;

use crate::{coded, JsResult as Result};

/// One key of a [`NativeSemaphore`], for `LocalSemaphore.counts`.
#[napi(object)]
pub struct SemaphoreCount {
    /// The key.
    pub key: String,
    /// Its limit.
    pub limit: u32,
    /// Slots held now.
    pub current: u32,
    /// Acquires waiting for a slot.
    pub pending: u32,
}

/// Keyed counting semaphores for `LocalSemaphore`; the JS face keeps the promise
/// resolvers, keyed by the waiter ids this hands out.
#[napi]
pub struct NativeSemaphore {
    table: SemaphoreTable,
    next_waiter: u32,
}

fn limit_value(key: &str, limit: f64) -> Result<u32> {
    if limit.is_finite() && limit >= 0.0 && limit.fract() == 0.0 && limit <= u32::MAX as f64 {
        Ok(limit as u32)
    } else {
        Err(coded(
            "ERR_INVALID_ARGUMENT",
            format!("Semaphore limit for '{key}' must be a non-negative integer, got {limit}"),
        ))
    }
}

#[napi]
impl NativeSemaphore {
    /// Limits per key.
    #[napi(constructor)]
    pub fn new(limits: HashMap<String, f64>) -> Result<Self> {
        let limits = limits
            .into_iter()
            .map(|(k, v)| limit_value(&k, v).map(|l| (k, l)))
            .collect::<Result<Vec<_>>>()?;
        Ok(NativeSemaphore {
            table: SemaphoreTable::new(limits),
            next_waiter: 0,
        })
    }

    /// 0 when a slot was taken now, else the waiter id that a later release will return.
    #[napi]
    pub fn acquire(&mut self, key: String) -> u32 {
        self.next_waiter = self.next_waiter.wrapping_add(1).max(1);
        if self.table.acquire(&key, self.next_waiter as u64) {
            0
        } else {
            self.next_waiter
        }
    }

    /// Give a slot back; returns the waiter that now holds it, or 0.
    #[napi]
    pub fn release(&mut self, key: String) -> u32 {
        self.table.release(&key).map_or(0, |w| w as u32)
    }

    /// Change or create a key's limit; returns the waiters that now hold slots.
    #[napi]
    pub fn set_limit(&mut self, key: String, limit: f64) -> Result<Vec<u32>> {
        let limit = limit_value(&key, limit)?;
        Ok(self
            .table
            .set_limit(&key, limit)
            .into_iter()
            .map(|w| w as u32)
            .collect())
    }

    /// Slots of `key` held now.
    #[napi]
    pub fn current(&self, key: String) -> u32 {
        self.table.current(&key)
    }

    /// Every key with a limit: its limit, the slots held and the acquires waiting.
    #[napi]
    pub fn counts(&self) -> Vec<SemaphoreCount> {
        self.table
            .counts()
            .map(|(key, limit, current, pending)| SemaphoreCount {
                key: key.to_owned(),
                limit,
                current,
                pending: pending as u32,
            })
            .collect()
    }
}
