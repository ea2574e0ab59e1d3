//! How long the circuit stays open.

use std::time::Duration;

/// The open duration after `retrips` consecutive failed half-open phases: `base · 2^retrips`,
/// capped at `max`, minus up to 20 % jitter on re-trips (so a fleet of clients that tripped
/// together does not probe together), never below `base`. The first trip is exactly `base`.
pub(crate) fn open_duration(base: Duration, max: Duration, retrips: u32, random: u64) -> Duration {
    if retrips == 0 || max <= base {
        return base;
    }
    let factor = 1u32.checked_shl(retrips.min(31)).unwrap_or(u32::MAX);
    let grown = base.checked_mul(factor).unwrap_or(max).min(max);
    // `random` in [0, 2^64) scaled to [0, 20 %] of `grown`.
    let fraction = (random >> 11) as f64 / (1u64 << 53) as f64;
    let jitter = grown.mul_f64(0.2 * fraction);
    grown.saturating_sub(jitter).max(base)
}

/// A small, fast PRNG (SplitMix64) for jitter; seeded per breaker from `RandomState`.
#[derive(Debug, Clone)]
pub(crate) struct Jitter(u64);

impl Jitter {
    pub(crate) fn new() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Jitter(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn first_trip_is_exact_and_no_backoff_without_max() {
        assert_eq!(open_duration(S(60), S(600), 0, u64::MAX), S(60));
        assert_eq!(open_duration(S(60), S(60), 5, u64::MAX), S(60));
    }

    #[test]
    fn retrips_double_with_bounded_jitter_and_cap() {
        for random in [0, u64::MAX / 3, u64::MAX] {
            let d1 = open_duration(S(10), S(100), 1, random);
            assert!(d1 <= S(20) && d1 >= S(16), "{d1:?}");
            let d2 = open_duration(S(10), S(100), 2, random);
            assert!(d2 <= S(40) && d2 >= S(32), "{d2:?}");
            let capped = open_duration(S(10), S(100), 30, random);
            assert!(capped <= S(100) && capped >= S(80), "{capped:?}");
            let huge = open_duration(S(10), S(100), u32::MAX, random);
            assert!(huge <= S(100) && huge >= S(80), "{huge:?}");
        }
        assert_eq!(open_duration(S(10), S(100), 1, 0), S(20));
    }

    #[test]
    fn jitter_source_varies() {
        let mut j = Jitter::new();
        let a = j.next();
        let b = j.next();
        assert_ne!(a, b);
    }
}
