//! The crate's one clock.
//!
//! Normally tokio's (`tokio::time::Instant::now()`), so `#[tokio::test(start_paused = true)]`
//! drives every timer (decision 12). Under `--cfg loom`, a clock that only moves when a model
//! advances it, because loom needs every execution of a model to be deterministic.

use tokio::time::Instant;

/// Now, on the crate's clock.
#[cfg(not(loom))]
#[inline]
pub(crate) fn now() -> Instant {
    Instant::now()
}

#[cfg(loom)]
pub(crate) fn now() -> Instant {
    loom_clock::now()
}

/// The clock loom models drive (hidden; only built with `--cfg loom`).
///
/// One clock per OS thread: loom runs a model's threads as coroutines on the test's own thread,
/// so they all share it, while models that the test harness runs in parallel never see each
/// other's `advance` (a shared clock made their executions nondeterministic, which loom reports
/// as an internal index panic).
#[cfg(loom)]
#[doc(hidden)]
pub mod loom_clock {
    use std::cell::Cell;
    use std::sync::OnceLock;
    use std::time::Duration;

    use tokio::time::Instant;

    static BASE: OnceLock<std::time::Instant> = OnceLock::new();

    std::thread_local! {
        static OFFSET_NANOS: Cell<u64> = const { Cell::new(0) };
    }

    /// Now on the mock clock.
    pub fn now() -> Instant {
        let base = *BASE.get_or_init(std::time::Instant::now);
        Instant::from_std(base + Duration::from_nanos(OFFSET_NANOS.with(Cell::get)))
    }

    /// Moves the mock clock forward.
    pub fn advance(by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        OFFSET_NANOS.with(|offset| offset.set(offset.get().saturating_add(nanos)));
    }

    /// Puts the clock back to its start, so every execution of a model sees the same times.
    pub fn reset() {
        OFFSET_NANOS.with(|offset| offset.set(0));
    }
}
