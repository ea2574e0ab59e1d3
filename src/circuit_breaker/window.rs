//! Sliding windows of recent outcomes for the failure-rate and slow-call rules.
//!
//! Both windows are fixed-size and lock-free: recording is O(1) (a count window is one ring
//! slot swap, a time window one bucket update) and reading the rates is O(buckets). A window is
//! emptied whenever the circuit closes, so it only ever describes the current closed phase.

use std::time::Duration;

use tokio::time::Instant;

use super::config::{WindowKind, TIME_WINDOW_BUCKETS};
use crate::sync::{AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};

/// What the window holds right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) calls: u32,
    pub(crate) failures: u32,
    pub(crate) slow: u32,
}

impl Totals {
    pub(crate) fn failure_rate(&self) -> Option<f64> {
        (self.calls > 0).then(|| f64::from(self.failures) / f64::from(self.calls))
    }

    pub(crate) fn slow_rate(&self) -> Option<f64> {
        (self.calls > 0).then(|| f64::from(self.slow) / f64::from(self.calls))
    }
}

#[derive(Debug)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    pub(crate) fn new(kind: WindowKind, origin: Instant) -> Self {
        match kind {
            WindowKind::Count(n) => Window::Count(CountWindow::new(n)),
            WindowKind::Time(d) => Window::Time(TimeWindow::new(d, origin)),
        }
    }

    /// Whether recording needs the current time.
    pub(crate) fn needs_clock(&self) -> bool {
        matches!(self, Window::Time(_))
    }

    /// Records one outcome. Returns the totals after it only for a failed or slow call: only
    /// those can trip a rate rule (a success never trips), so a plain success skips summing
    /// the window.
    #[inline]
    pub(crate) fn record(&self, failed: bool, slow: bool, now: Option<Instant>) -> Option<Totals> {
        match self {
            Window::Count(w) => {
                w.record(failed, slow);
                (failed || slow).then(|| w.totals())
            }
            Window::Time(w) => {
                let now = now.unwrap_or_else(crate::time::now);
                w.record(failed, slow, now);
                (failed || slow).then(|| w.totals(now))
            }
        }
    }

    pub(crate) fn totals(&self, now: Instant) -> Totals {
        match self {
            Window::Count(w) => w.totals(),
            Window::Time(w) => w.totals(now),
        }
    }

    pub(crate) fn clear(&self) {
        match self {
            Window::Count(w) => w.clear(),
            Window::Time(w) => w.clear(),
        }
    }
}

const OCCUPIED: u8 = 0b001;
const FAILED: u8 = 0b010;
const SLOW: u8 = 0b100;

/// The last `n` outcomes in a ring, with running totals kept in step: each record swaps one slot
/// and adjusts the totals by the difference, so the totals always equal the ring's contents once
/// concurrent recorders finish.
#[derive(Debug)]
pub(crate) struct CountWindow {
    slots: Box<[AtomicU8]>,
    /// Calls recorded, wrapping at 2³²; the ring position is this modulo the ring's length. At
    /// the wrap (once per 4 billion calls) the position jumps unless the length divides 2³²:
    /// a few slots then keep an outcome for one lap more, and the totals still match the ring.
    next: AtomicU32,
    len: FastRem,
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

impl CountWindow {
    fn new(n: u32) -> Self {
        Self {
            slots: (0..n).map(|_| AtomicU8::new(0)).collect(),
            next: AtomicU32::new(0),
            len: FastRem::new(n),
            calls: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            slow: AtomicU32::new(0),
        }
    }

    #[inline]
    fn record(&self, failed: bool, slow: bool) {
        let index = self.len.rem(self.next.fetch_add(1, Relaxed));
        let new = OCCUPIED | if failed { FAILED } else { 0 } | if slow { SLOW } else { 0 };
        let slot = &self.slots[index];
        // The common case, an outcome like the one it replaces, changes nothing: skip the write.
        // (A recorder a whole lap ahead may write this slot meanwhile; then this sample is the
        // one that is lost, and the totals still match the ring.)
        if slot.load(Relaxed) == new {
            return;
        }
        let old = slot.swap(new, Relaxed);
        if old & OCCUPIED == 0 {
            self.calls.fetch_add(1, Relaxed);
        }
        adjust(&self.failures, old & FAILED != 0, failed);
        adjust(&self.slow, old & SLOW != 0, slow);
    }

    fn totals(&self) -> Totals {
        Totals {
            calls: self.calls.load(Relaxed),
            failures: self.failures.load(Relaxed),
            slow: self.slow.load(Relaxed),
        }
    }

    fn clear(&self) {
        for slot in self.slots.iter() {
            slot.store(0, Relaxed);
        }
        self.next.store(0, Relaxed);
        self.calls.store(0, Relaxed);
        self.failures.store(0, Relaxed);
        self.slow.store(0, Relaxed);
    }
}

/// `a % d` for a fixed `d` by two multiplications: a division would cost more than the rest of
/// a count window's record (Lemire, Kaser and Kurz, "Faster remainder by direct computation",
/// 2019: for 32-bit `a` and `d`, `a % d` is the high word of `((M * a) mod 2⁶⁴) * d` with
/// `M = ⌊(2⁶⁴ − 1) / d⌋ + 1`).
#[derive(Debug, Clone, Copy)]
struct FastRem {
    d: u32,
    m: u64,
}

impl FastRem {
    fn new(d: u32) -> Self {
        assert!(d > 0, "a count window has at least one slot");
        FastRem {
            d,
            // Wraps to 0 for d = 1, which makes every remainder 0, as it should be.
            m: (u64::MAX / u64::from(d)).wrapping_add(1),
        }
    }

    #[inline]
    fn rem(self, a: u32) -> usize {
        let low = self.m.wrapping_mul(u64::from(a));
        ((u128::from(low) * u128::from(self.d)) >> 64) as usize
    }
}

fn adjust(total: &AtomicU32, was: bool, is: bool) {
    match (was, is) {
        (false, true) => {
            total.fetch_add(1, Relaxed);
        }
        (true, false) => {
            total.fetch_sub(1, Relaxed);
        }
        _ => {}
    }
}

/// The outcomes of the last `window`, in [`TIME_WINDOW_BUCKETS`] buckets. Each bucket is tagged
/// with the epoch (bucket-sized slice of time since `origin`) it counts; a bucket whose tag is
/// stale is reset by the first recorder of the new epoch, so memory is fixed and no clean-up task
/// is needed.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    origin: Instant,
    bucket_nanos: u64,
    /// The epoch the last recorder or reader computed (see [`epoch`](Self::epoch)).
    last_epoch: AtomicU64,
    buckets: Box<[Bucket]>,
}

#[derive(Debug)]
struct Bucket {
    /// Epoch this bucket counts, plus one (0 = never used).
    epoch: AtomicU64,
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

impl TimeWindow {
    fn new(window: Duration, origin: Instant) -> Self {
        let bucket_nanos = (window.as_nanos() / u128::from(TIME_WINDOW_BUCKETS)).max(1);
        Self {
            origin,
            bucket_nanos: u64::try_from(bucket_nanos).unwrap_or(u64::MAX),
            last_epoch: AtomicU64::new(0),
            buckets: (0..TIME_WINDOW_BUCKETS)
                .map(|_| Bucket {
                    epoch: AtomicU64::new(0),
                    calls: AtomicU32::new(0),
                    failures: AtomicU32::new(0),
                    slow: AtomicU32::new(0),
                })
                .collect(),
        }
    }

    #[inline]
    fn epoch(&self, now: Instant) -> u64 {
        // u64 nanoseconds cover 584 years of uptime; u128 division would cost more than the
        // rest of the call.
        let since = now.saturating_duration_since(self.origin);
        let nanos = since.as_secs() * 1_000_000_000 + u64::from(since.subsec_nanos());
        // Nearly every call falls in the epoch the previous one computed: confirm that with a
        // multiplication, and divide (a 64-bit division, far slower) only when it moved.
        // The guess is always checked, so a stale one from another thread is merely a miss.
        let guess = self.last_epoch.load(Relaxed);
        // No overflow: `guess` was once `nanos / bucket_nanos` for some u64 `nanos`.
        if nanos
            .checked_sub(guess * self.bucket_nanos)
            .is_some_and(|into| into < self.bucket_nanos)
        {
            return guess;
        }
        let epoch = nanos / self.bucket_nanos;
        self.last_epoch.store(epoch, Relaxed);
        epoch
    }

    #[inline]
    fn record(&self, failed: bool, slow: bool, now: Instant) {
        let epoch = self.epoch(now);
        let tag = epoch + 1;
        // The bucket count is a constant, so this remainder compiles to a multiplication.
        let bucket = &self.buckets[(epoch % u64::from(TIME_WINDOW_BUCKETS)) as usize];
        let seen = bucket.epoch.load(Relaxed);
        if seen != tag
            && bucket
                .epoch
                .compare_exchange(seen, tag, Relaxed, Relaxed)
                .is_ok()
        {
            // Reusing the slot for a new epoch: a concurrent recorder of the new epoch may lose
            // its sample here, which a rate over many calls tolerates.
            bucket.calls.store(0, Relaxed);
            bucket.failures.store(0, Relaxed);
            bucket.slow.store(0, Relaxed);
        }
        bucket.calls.fetch_add(1, Relaxed);
        if failed {
            bucket.failures.fetch_add(1, Relaxed);
        }
        if slow {
            bucket.slow.fetch_add(1, Relaxed);
        }
    }

    fn totals(&self, now: Instant) -> Totals {
        self.totals_at(self.epoch(now))
    }

    fn totals_at(&self, epoch: u64) -> Totals {
        let oldest = (epoch + 1).saturating_sub(self.buckets.len() as u64);
        let mut totals = Totals::default();
        for bucket in self.buckets.iter() {
            let tag = bucket.epoch.load(Relaxed);
            if tag == 0 || tag - 1 < oldest || tag - 1 > epoch {
                continue;
            }
            totals.calls += bucket.calls.load(Relaxed);
            totals.failures += bucket.failures.load(Relaxed);
            totals.slow += bucket.slow.load(Relaxed);
        }
        totals
    }

    fn clear(&self) {
        for bucket in self.buckets.iter() {
            bucket.epoch.store(0, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_remainder_is_the_remainder() {
        let edges = [
            0,
            1,
            2,
            99,
            100,
            101,
            65_535,
            65_536,
            u32::MAX - 1,
            u32::MAX,
        ];
        let mut lcg = 0x2545_f491_u32;
        let mut next = || {
            lcg = lcg.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            lcg
        };
        let divisors = (1..=1_000).chain([65_535, 65_536, 1 << 31, u32::MAX - 1, u32::MAX]);
        for d in divisors {
            let fast = FastRem::new(d);
            for a in edges.into_iter().chain((0..200).map(|_| next())) {
                assert_eq!(fast.rem(a), (a % d) as usize, "{a} % {d}");
            }
        }
    }

    #[test]
    fn the_ring_position_wraps_with_the_counter() {
        let w = CountWindow::new(3);
        w.next.store(u32::MAX, Relaxed);
        w.record(true, false); // position u32::MAX % 3 = 0
        w.record(true, false); // the counter wraps to 0: position 0 again
        assert_eq!(w.totals().calls, 1, "the second record replaced the first");
        assert_eq!(w.totals().failures, 1);
    }

    #[test]
    fn count_window_is_a_sliding_not_cumulative_window() {
        let w = CountWindow::new(4);
        for _ in 0..1000 {
            w.record(false, false);
        }
        // After 1000 successes, 4 failures fill a window of 4: 100 % failure.
        for _ in 0..3 {
            w.record(true, false);
        }
        assert_eq!(
            w.totals(),
            Totals {
                calls: 4,
                failures: 3,
                slow: 0
            }
        );
        w.record(true, true);
        assert_eq!(
            w.totals(),
            Totals {
                calls: 4,
                failures: 4,
                slow: 1
            }
        );
        w.clear();
        assert_eq!(w.totals(), Totals::default());
    }

    #[tokio::test(start_paused = true)]
    async fn time_window_forgets_old_buckets() {
        let origin = crate::time::now();
        let w = TimeWindow::new(Duration::from_secs(20), origin);
        w.record(true, false, origin);
        w.record(false, false, origin + Duration::from_millis(999));
        assert_eq!(w.totals(origin + Duration::from_secs(1)).calls, 2);
        // Bucket 0 still inside the window at 19.999 s, gone at 20 s.
        assert_eq!(w.totals(origin + Duration::from_millis(19_999)).failures, 1);
        assert_eq!(
            w.totals(origin + Duration::from_secs(20)),
            Totals::default()
        );
        // Reusing bucket 0 for epoch 20 resets it.
        w.record(false, true, origin + Duration::from_secs(20));
        assert_eq!(
            w.totals(origin + Duration::from_secs(20)),
            Totals {
                calls: 1,
                failures: 0,
                slow: 1
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_epoch_is_exact_in_any_order_of_calls() {
        let origin = crate::time::now();
        let w = TimeWindow::new(Duration::from_secs(20), origin); // 1 s buckets
                                                                  // Forwards, backwards (another thread's older `now`), across and at boundaries.
        let millis = [
            0, 999, 1_000, 5_500, 1_001, 0, 86_400_000, 999, 1_999, 2_000, 2_000,
        ];
        for ms in millis {
            let now = origin + Duration::from_millis(ms);
            assert_eq!(w.epoch(now), ms / 1_000, "at {ms} ms");
        }
    }
}
