//! [`BudgetSettings`]: a retry budget, from a file.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use tower::retry::budget::TpsBudget;

use super::capture::{self, leaf};
use super::duration::{self, HumanDuration};
use crate::ConfigError;

const DEFAULT_TTL: Duration = Duration::from_secs(10);
const DEFAULT_MIN_PER_SEC: u32 = 10;
const DEFAULT_RETRY_PERCENT: f32 = 0.2;

/// A tower [`TpsBudget`] (how many re-sends or retries may be spent), read from a
/// configuration file: the arguments of [`TpsBudget::new`], by name. A field left out keeps
/// the value of `TpsBudget::default()`.
///
/// | field | meaning | default |
/// | --- | --- | --- |
/// | `ttl` | how long a request's deposit counts; 1 s to 60 s | `"10s"` |
/// | `min_per_sec` | retries allowed per second whatever the traffic | `10` |
/// | `retry_percent` | retries allowed per request (0.2: one for every five requests); 0 to 1000 | `0.2` |
///
/// `TpsBudget::new` panics outside those ranges, so they are checked when the settings are
/// read: an error names the field, and a `BudgetSettings` that exists always builds.
///
/// A budget shared between several failovers or retry policies is one `Arc` given to each in
/// code; each `budget` table read from a file makes a budget of its own.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct BudgetSettings {
    fields: BudgetFields,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename = "BudgetSettings")]
struct BudgetFields {
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    ttl: Option<HumanDuration>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    min_per_sec: Option<u32>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    retry_percent: Option<f32>,
}

impl BudgetFields {
    fn values(&self) -> (Duration, u32, f32) {
        (
            duration::get(self.ttl).unwrap_or(DEFAULT_TTL),
            self.min_per_sec.unwrap_or(DEFAULT_MIN_PER_SEC),
            self.retry_percent.unwrap_or(DEFAULT_RETRY_PERCENT),
        )
    }

    fn check(self) -> Result<BudgetSettings, ConfigError> {
        let (ttl, min_per_sec, retry_percent) = self.values();
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&ttl) {
            return Err(ConfigError::new("ttl", "must be between 1s and 60s"));
        }
        if min_per_sec >= i32::MAX as u32 {
            return Err(ConfigError::new(
                "min_per_sec",
                "must be less than 2147483647",
            ));
        }
        // `contains` is false for NaN, which `TpsBudget::new` would panic on too.
        if !(0.0..=1000.0).contains(&retry_percent) {
            return Err(ConfigError::new("retry_percent", "must be in [0, 1000]"));
        }
        Ok(BudgetSettings { fields: self })
    }
}

impl<'de> Deserialize<'de> for BudgetSettings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        capture::checked(deserializer, BudgetFields::check)
    }
}

impl BudgetSettings {
    /// A new budget with these settings.
    pub fn budget(&self) -> TpsBudget {
        let (ttl, min_per_sec, retry_percent) = self.fields.values();
        TpsBudget::new(ttl, min_per_sec, retry_percent)
    }

    /// `ttl`, if set.
    pub fn ttl(&self) -> Option<Duration> {
        duration::get(self.fields.ttl)
    }

    /// `min_per_sec`, if set.
    pub fn min_per_sec(&self) -> Option<u32> {
        self.fields.min_per_sec
    }

    /// `retry_percent`, if set.
    pub fn retry_percent(&self) -> Option<f32> {
        self.fields.retry_percent
    }
}
