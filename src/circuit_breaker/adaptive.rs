//! Adaptive thresholds: the consecutive-failure threshold and the open duration follow the
//! request rate, with fixed memory.

use std::time::Duration;

use tokio::time::Instant;

use crate::sync::{AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use crate::ConfigError;

/// A table from request rate to thresholds: under heavy load trip sooner and probe sooner,
/// under light load tolerate more.
///
/// The rate is the number of calls recorded over the last minute, measured in six 10-second
/// buckets (so it trails by at most 10 s, and memory is fixed — no list of timestamps). The row
/// in force is the one with the highest `rate_per_minute` that the rate is strictly above (a
/// rate of exactly 100 is not above 100), or the floor given to [`new`](AdaptiveThresholds::new).
///
/// With a table set, it replaces the builder's `consecutive_failures` and `open_duration`; the
/// row in force is re-evaluated at each recorded call, and a new open duration applies from the
/// next trip.
///
/// ```
/// use std::time::Duration;
/// use tower_breaker::circuit_breaker::{AdaptiveThresholds, CircuitBreakerLayer};
///
/// // A ready-made table: over 100/min: 3 failures, 30 s; over 50/min: 5, 45 s; else 10, 60 s.
/// let layer = CircuitBreakerLayer::builder()
///     .adaptive(AdaptiveThresholds::seed())
///     .build()
///     .unwrap();
/// # let _ = layer;
/// let custom = AdaptiveThresholds::new(20, Duration::from_secs(90))
///     .above(1_000, 5, Duration::from_secs(20));
/// # let _ = custom;
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveThresholds {
    /// Rows sorted by `above`, ascending; the first row has `above` = 0 (the floor).
    rows: Vec<Row>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Row {
    above: u32,
    consecutive_failures: u32,
    open_duration: Duration,
}

impl AdaptiveThresholds {
    /// A table whose floor (any rate) is `consecutive_failures` and `open_duration`.
    pub fn new(consecutive_failures: u32, open_duration: Duration) -> Self {
        AdaptiveThresholds {
            rows: vec![Row {
                above: 0,
                consecutive_failures,
                open_duration,
            }],
        }
    }

    /// Adds a row: when more than `rate_per_minute` calls were recorded in the last minute, trip
    /// after `consecutive_failures` and stay open `open_duration`. Replaces a row with the same
    /// rate.
    pub fn above(
        mut self,
        rate_per_minute: u32,
        consecutive_failures: u32,
        open_duration: Duration,
    ) -> Self {
        let row = Row {
            above: rate_per_minute,
            consecutive_failures,
            open_duration,
        };
        match self
            .rows
            .binary_search_by_key(&rate_per_minute, |r| r.above)
        {
            Ok(i) => self.rows[i] = row,
            Err(i) => self.rows.insert(i, row),
        }
        self
    }

    /// A ready-made table: over 100 calls a minute, 3 failures and 30 s open; over 50, 5 and
    /// 45 s; otherwise 10 and 60 s.
    pub fn seed() -> Self {
        AdaptiveThresholds::new(10, Duration::from_secs(60))
            .above(50, 5, Duration::from_secs(45))
            .above(100, 3, Duration::from_secs(30))
    }

    /// The `(consecutive_failures, open_duration)` for a rate.
    pub fn thresholds_for(&self, rate_per_minute: u64) -> (u32, Duration) {
        let row = self.rows[self.row_for(rate_per_minute)];
        (row.consecutive_failures, row.open_duration)
    }

    fn row_for(&self, rate: u64) -> usize {
        self.rows
            .iter()
            .rposition(|r| rate > u64::from(r.above) || r.above == 0)
            .unwrap_or(0)
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.rows.len() > usize::from(u8::MAX) {
            return Err(ConfigError::new("adaptive", "at most 255 rows"));
        }
        for row in &self.rows {
            if row.consecutive_failures == 0 {
                return Err(ConfigError::new(
                    "adaptive",
                    "consecutive_failures must be at least 1",
                ));
            }
            if row.open_duration.is_zero() {
                return Err(ConfigError::new(
                    "adaptive",
                    "open_duration must be positive",
                ));
            }
        }
        Ok(())
    }
}

const BUCKETS: usize = 6;
const BUCKET: Duration = Duration::from_secs(10);

/// The live state: a rate meter and the row in force.
#[derive(Debug)]
pub(crate) struct Adaptive {
    table: AdaptiveThresholds,
    origin: Instant,
    epochs: [AtomicU64; BUCKETS],
    counts: [AtomicU32; BUCKETS],
    row: AtomicU8,
}

impl Adaptive {
    pub(crate) fn new(table: AdaptiveThresholds, origin: Instant) -> Self {
        let row = table.row_for(0) as u8;
        Adaptive {
            table,
            origin,
            epochs: std::array::from_fn(|_| AtomicU64::new(0)),
            counts: std::array::from_fn(|_| AtomicU32::new(0)),
            row: AtomicU8::new(row),
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.origin).as_secs() / BUCKET.as_secs()) + 1
    }

    /// Counts one call; returns the new `(consecutive_failures, open_duration)` if the row in
    /// force changed.
    pub(crate) fn record(&self, now: Instant) -> Option<(u32, Duration)> {
        let epoch = self.epoch(now);
        let i = (epoch % BUCKETS as u64) as usize;
        let seen = self.epochs[i].load(Relaxed);
        if seen != epoch
            && self.epochs[i]
                .compare_exchange(seen, epoch, Relaxed, Relaxed)
                .is_ok()
        {
            self.counts[i].store(0, Relaxed);
        }
        self.counts[i].fetch_add(1, Relaxed);
        let row = self.table.row_for(self.rate_at(epoch)) as u8;
        (self.row.swap(row, Relaxed) != row).then(|| self.current())
    }

    /// Calls recorded in the last minute (the current bucket and the five before it).
    pub(crate) fn rate(&self, now: Instant) -> u64 {
        self.rate_at(self.epoch(now))
    }

    fn rate_at(&self, epoch: u64) -> u64 {
        let oldest = epoch.saturating_sub(BUCKETS as u64 - 1);
        (0..BUCKETS)
            .filter(|&i| (oldest..=epoch).contains(&self.epochs[i].load(Relaxed)))
            .map(|i| u64::from(self.counts[i].load(Relaxed)))
            .sum()
    }

    /// The `(consecutive_failures, open_duration)` for the rate as of `now`, and that rate:
    /// what the next recorded call would put in force. Reported by `stats()`, so that the
    /// figures follow the rate down after traffic stops, when no call re-evaluates the row.
    pub(crate) fn at(&self, now: Instant) -> (u32, Duration, u64) {
        let rate = self.rate(now);
        let (failures, open) = self.table.thresholds_for(rate);
        (failures, open, rate)
    }

    /// The `(consecutive_failures, open_duration)` in force.
    pub(crate) fn current(&self) -> (u32, Duration) {
        let row = self.table.rows[usize::from(self.row.load(Relaxed))];
        (row.consecutive_failures, row.open_duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_table_boundaries_are_strictly_above() {
        let t = AdaptiveThresholds::seed();
        let s = Duration::from_secs;
        assert_eq!(t.thresholds_for(0), (10, s(60)));
        assert_eq!(t.thresholds_for(50), (10, s(60)));
        assert_eq!(t.thresholds_for(51), (5, s(45)));
        assert_eq!(t.thresholds_for(100), (5, s(45)));
        assert_eq!(t.thresholds_for(101), (3, s(30)));
        assert_eq!(t.thresholds_for(u64::MAX), (3, s(30)));
    }

    #[tokio::test(start_paused = true)]
    async fn rate_meter_forgets_calls_older_than_a_minute() {
        let origin = Instant::now();
        let a = Adaptive::new(AdaptiveThresholds::seed(), origin);
        for _ in 0..51 {
            a.record(origin);
        }
        assert_eq!(a.current().0, 5);
        assert_eq!(a.rate(origin + Duration::from_secs(59)), 51);
        // The first bucket (0..10 s) leaves the window at 60 s.
        assert_eq!(a.rate(origin + Duration::from_secs(60)), 0);
        assert_eq!(
            a.record(origin + Duration::from_secs(60)),
            Some((10, Duration::from_secs(60)))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stats_follow_the_rate_down_after_traffic_stops() {
        use crate::circuit_breaker::CircuitBreakerLayer;
        use tower::{service_fn, Service, ServiceExt};
        use tower_layer::Layer;

        let layer = CircuitBreakerLayer::builder()
            .adaptive(AdaptiveThresholds::seed())
            .build()
            .unwrap();
        let handle = layer.handle();
        let mut svc = layer.layer(service_fn(|_: ()| async { Ok::<_, &str>(()) }));
        for _ in 0..150 {
            svc.ready().await.unwrap().call(()).await.unwrap();
        }
        let busy = handle.stats();
        assert_eq!(busy.request_rate, Some(150));
        assert_eq!(busy.consecutive_failure_threshold, 3);
        assert_eq!(busy.open_duration, Duration::from_secs(30));
        // No call for over a minute: the figures are those of a quiet breaker, not the last
        // busy minute's.
        tokio::time::advance(Duration::from_secs(61)).await;
        let quiet = handle.stats();
        assert_eq!(quiet.request_rate, Some(0));
        assert_eq!(quiet.consecutive_failure_threshold, 10);
        assert_eq!(quiet.open_duration, Duration::from_secs(60));
    }
}
