//! The `adaptive` table of [`BreakerSettings`](super::BreakerSettings).

use serde::{Deserialize, Serialize};

use super::capture::required;
use super::duration::HumanDuration;
use crate::circuit_breaker::AdaptiveThresholds;

/// An [`AdaptiveThresholds`] as written: its floor, and its rows by rate.
///
/// Kept as written rather than as an `AdaptiveThresholds`, whose rows cannot be read back, so
/// that settings serialize the way they were read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename = "AdaptiveThresholds")]
pub(super) struct AdaptiveFields {
    #[serde(deserialize_with = "required")]
    consecutive_failures: u32,
    #[serde(deserialize_with = "required")]
    open_duration: HumanDuration,
    #[serde(
        default,
        deserialize_with = "required",
        skip_serializing_if = "Vec::is_empty"
    )]
    above: Vec<AdaptiveRow>,
}

/// One row of `above`: the arguments of [`AdaptiveThresholds::above`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdaptiveRow {
    #[serde(deserialize_with = "required")]
    rate_per_minute: u32,
    #[serde(deserialize_with = "required")]
    consecutive_failures: u32,
    #[serde(deserialize_with = "required")]
    open_duration: HumanDuration,
}

impl AdaptiveFields {
    pub(super) fn thresholds(&self) -> AdaptiveThresholds {
        self.above.iter().fold(
            AdaptiveThresholds::new(self.consecutive_failures, self.open_duration.0),
            |table, row| {
                table.above(
                    row.rate_per_minute,
                    row.consecutive_failures,
                    row.open_duration.0,
                )
            },
        )
    }
}
