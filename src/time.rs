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
#[cfg(loom)]
#[doc(hidden)]
pub mod loom_clock {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    use std::time::Duration;

    use tokio::time::Instant;

    static BASE: OnceLock<std::time::Instant> = OnceLock::new();
    static OFFSET_NANOS: AtomicU64 = AtomicU64::new(0);

    /// Now on the mock clock.
    pub fn now() -> Instant {
        let base = *BASE.get_or_init(std::time::Instant::now);
        Instant::from_std(base + Duration::from_nanos(OFFSET_NANOS.load(Ordering::SeqCst)))
    }

    /// Moves the mock clock forward (call outside the model's threads).
    pub fn advance(by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        OFFSET_NANOS.fetch_add(nanos, Ordering::SeqCst);
    }
}
