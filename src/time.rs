//! The crate's one clock.
//!
//! Normally tokio's (`tokio::time::Instant::now()`), so `#[tokio::test(start_paused = true)]`
//! drives every timer. Under `--cfg loom`, a clock that only moves when a model
//! advances it, because loom needs every execution of a model to be deterministic.

use std::num::NonZeroU64;
use std::time::Duration;

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

/// An instant as nanoseconds after an origin, in one word (and `Option<Stamp>` in one word
/// too): call guards carry their start time in this form, because a moved `Option<Instant>`
/// (two words, written in two narrow halves) stalls the loads that move it on x86.
///
/// An instant before the origin is taken as the origin; after it, exact to the nanosecond for
/// 584 years.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp(NonZeroU64);

impl Stamp {
    /// `instant`, as a stamp after `origin`.
    #[inline]
    pub(crate) fn new(instant: Instant, origin: Instant) -> Stamp {
        let nanos = instant.saturating_duration_since(origin).as_nanos();
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX - 1);
        Stamp(NonZeroU64::MIN.saturating_add(nanos))
    }

    /// The instant, given the same `origin`.
    #[inline]
    pub(crate) fn instant(self, origin: Instant) -> Instant {
        origin + Duration::from_nanos(self.0.get() - 1)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_gives_back_its_instant() {
        let origin = Instant::now();
        for nanos in [0, 1, 999, 1_000_000_007, 86_400 * 1_000_000_000] {
            let at = origin + Duration::from_nanos(nanos);
            assert_eq!(Stamp::new(at, origin).instant(origin), at);
        }
        assert_eq!(std::mem::size_of::<Option<Stamp>>(), 8);
    }

    #[test]
    fn an_instant_before_the_origin_is_the_origin() {
        let origin = Instant::now() + Duration::from_secs(5);
        let before = origin - Duration::from_secs(1);
        assert_eq!(Stamp::new(before, origin).instant(origin), origin);
    }
}
