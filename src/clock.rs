//! Timers and clocks from JS. Runs on the system clock fire their timers from a tokio
//! task that sleeps until the earliest one and wakes the JS thread through a weak
//! threadsafe function (it keeps the process alive only while a `keepAlive` run has a
//! timer armed). Runs on a test clock fire theirs when the test advances it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use ramus_engine::{Runtime, TestClock, SYSTEM_CLOCK};
use tokio::sync::watch;

use crate::{ctx, napi_error, with_ctx, JsResult as Result};

/// The runtime of the binding's background tasks (the timer sleeper, event pollers).
pub(crate) static TOKIO: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("ramus-wakeups")
        .enable_time()
        .build()
        .expect("a tokio runtime for timers")
});

type Wake = Arc<ThreadsafeFunction<(), (), i32, Status, false, true>>;

struct Timers {
    wake: Option<Wake>,
    deadline: Option<watch::Sender<Option<u64>>>,
    /// Whether the wake function is referenced (keeps the event loop alive).
    referenced: bool,
    env: Option<usize>,
    tests: HashMap<u32, Arc<TestClock>>,
}

thread_local! {
    static TIMERS: RefCell<Timers> = RefCell::new(Timers {
        wake: None,
        deadline: None,
        referenced: false,
        env: None,
        tests: HashMap::new(),
    });
}

/// Hand the binding the face's `onWake(recordCount)`, called on the JS thread after due
/// system-clock timers fired, or commits that steps waited for came back (their records
/// are in the shared buffer).
#[napi]
pub fn init_timers(env: Env, on_wake: Function<i32, ()>) -> Result<()> {
    let wake: Wake = Arc::new(
        on_wake
            .build_threadsafe_function::<()>()
            .weak::<true>()
            .callee_handled::<false>()
            .build_callback(|call| {
                let n = ctx(|c| {
                    let now = c.rt.now(SYSTEM_CLOCK);
                    c.fire(&call.env, SYSTEM_CLOCK, now)
                })
                .unwrap_or(0);
                // The sleeper waits for a new deadline after each wake: give it one even when
                // nothing changed (the timer it woke for may have been cleared meanwhile).
                with_ctx(|c| publish(&c.rt));
                Ok(n)
            })
            .map_err(napi_error)?,
    );
    let (tx, mut rx) = watch::channel::<Option<u64>>(None);
    let handle = wake.clone();
    TOKIO.spawn(async move {
        loop {
            let due = *rx.borrow_and_update();
            match due {
                None => {
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
                Some(at) => {
                    let now = ramus_engine::Clock::now_ms(&ramus_engine::SystemClock);
                    let wait = std::time::Duration::from_millis(at.saturating_sub(now));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {
                            handle.call((), ThreadsafeFunctionCallMode::NonBlocking);
                            if rx.changed().await.is_err() {
                                return;
                            }
                        }
                        changed = rx.changed() => {
                            if changed.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        }
    });
    // Sync runs launch a step once its start is committed: the writer thread wakes this
    // thread, so the JS thread never waits for a commit and concurrent runs share them.
    let on_commit = wake.clone();
    with_ctx(|c| {
        c.rt.wake_on_commit(Arc::new(move || {
            on_commit.call((), ThreadsafeFunctionCallMode::NonBlocking);
        }))
    });
    TIMERS.with(|t| {
        let mut t = t.borrow_mut();
        t.wake = Some(wake);
        t.deadline = Some(tx);
        t.env = Some(env.raw() as usize);
    });
    Ok(())
}

/// Tell the sleeper the system clock's earliest deadline, and keep the process alive
/// while a `keepAlive` run has a timer armed.
fn publish(rt: &Runtime) {
    let next = rt.next_due(SYSTEM_CLOCK);
    // A step waiting for its commit keeps the process alive as a due timer does.
    let keep = rt.keeps_alive(SYSTEM_CLOCK) || rt.holds_steps();
    TIMERS.with(|t| {
        let mut t = t.borrow_mut();
        if let Some(tx) = &t.deadline {
            tx.send_replace(next);
        }
        if keep != t.referenced {
            if let (Some(w), Some(env)) = (t.wake.as_ref(), t.env) {
                let env = env as napi::sys::napi_env;
                // SAFETY: `env` is this thread's, saved at init; the function is alive
                // (the thread-local holds it).
                let status = unsafe {
                    if keep {
                        napi::sys::napi_ref_threadsafe_function(env, w.raw())
                    } else {
                        napi::sys::napi_unref_threadsafe_function(env, w.raw())
                    }
                };
                if status == napi::sys::Status::napi_ok {
                    t.referenced = keep;
                }
            }
        }
    });
}

/// After every call: the sleeper learns of a changed deadline.
pub(crate) fn after_call(rt: &mut Runtime) {
    if rt.take_timers_changed(SYSTEM_CLOCK) | rt.take_holds_changed() {
        publish(rt);
    }
}

/// A test clock at `start` (ms); runs created with its id take their time from it.
#[napi]
pub fn clock_create(start: f64) -> u32 {
    let clock = Arc::new(TestClock::new(start.max(0.0) as u64));
    let id = with_ctx(|c| {
        c.rt.add_clock(Arc::clone(&clock) as Arc<dyn ramus_engine::Clock>)
    });
    TIMERS.with(|t| t.borrow_mut().tests.insert(id, clock));
    id
}

fn test_clock(id: u32) -> Option<Arc<TestClock>> {
    TIMERS.with(|t| t.borrow().tests.get(&id).cloned())
}

/// A clock's time (ms).
#[napi]
pub fn clock_now(id: u32) -> f64 {
    with_ctx(|c| c.rt.now(id) as f64)
}

/// Move a test clock to `ms` (never backwards) without firing anything.
#[napi]
pub fn clock_set(id: u32, ms: f64) {
    if let Some(c) = test_clock(id) {
        c.set(ms.max(0.0) as u64);
    }
}

/// When a clock's next timer falls due (ms), or -1.
#[napi]
pub fn clock_next(id: u32) -> f64 {
    with_ctx(|c| c.rt.next_due(id).map_or(-1.0, |t| t as f64))
}

/// Fire the earliest timers of a test clock if they fall due at or before `upto`: the
/// clock moves to their time first. Returns the record count (their records are in the
/// shared buffer), or -1 when nothing was due.
#[napi]
pub fn clock_fire(env: Env, id: u32, upto: f64) -> Result<i32> {
    let Some(clock) = test_clock(id) else {
        return Ok(-1);
    };
    ctx(|c| match c.rt.next_due(id) {
        Some(at) if at as f64 <= upto => {
            clock.set(at);
            c.fire(&env, id, at)
        }
        _ => Ok(-1),
    })
}

/// Forget a test clock (its runs keep their timers' rows, not their wake-ups).
#[napi]
pub fn clock_drop(id: u32) {
    TIMERS.with(|t| t.borrow_mut().tests.remove(&id));
    with_ctx(|c| c.rt.remove_clock(id));
}
