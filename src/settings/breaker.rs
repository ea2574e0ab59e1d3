//! [`BreakerSettings`]: a circuit breaker's knobs, from a file.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::adaptive::AdaptiveFields;
use super::capture::{self, leaf, required};
use super::duration::{self, HumanDuration};
use crate::circuit_breaker::{self as cb, AdaptiveThresholds, CircuitBreakerLayer};
use crate::ConfigError;

/// The settings of one [circuit breaker](crate::circuit_breaker), read from a configuration
/// file: one optional field per plain-data method of [`circuit_breaker::Builder`](cb::Builder),
/// named after it. A field left out keeps the builder's default.
///
/// | field | builder method | example |
/// | --- | --- | --- |
/// | `name` | [`name`](cb::Builder::name) | `"openai"` |
/// | `consecutive_failures` | [`consecutive_failures`](cb::Builder::consecutive_failures) | `5` |
/// | `failure_rate` | [`failure_rate`](cb::Builder::failure_rate) | `0.5` |
/// | `minimum_calls` | [`minimum_calls`](cb::Builder::minimum_calls) | `20` |
/// | `count_window` | [`count_window`](cb::Builder::count_window) | `100` |
/// | `time_window` | [`time_window`](cb::Builder::time_window) | `"60s"` |
/// | `slow_calls` | [`slow_calls`](cb::Builder::slow_calls) | `{ threshold = "10s", rate = 0.5 }` |
/// | `open_duration` | [`open_duration`](cb::Builder::open_duration) | `"30s"` |
/// | `max_open_duration` | [`max_open_duration`](cb::Builder::max_open_duration) | `"5m"` |
/// | `half_open_permits` | [`half_open_permits`](cb::Builder::half_open_permits) | `3` |
/// | `success_threshold` | [`success_threshold`](cb::Builder::success_threshold) | `2` |
/// | `probe_timeout` | [`probe_timeout`](cb::Builder::probe_timeout) | `"20s"` |
/// | `mode` | [`fail_fast`](cb::Builder::fail_fast) when `"fail_fast"` | `"wait"` (default) or `"fail_fast"` |
/// | `retry_after_bounds` | [`retry_after_bounds`](cb::Builder::retry_after_bounds) | `{ min = "1s", max = "10m" }` |
/// | `history_len` | [`history_len`](cb::Builder::history_len) | `32` |
/// | `adaptive` | [`adaptive`](cb::Builder::adaptive) | see below |
///
/// Durations are strings such as `"30s"`, `"250ms"` or `"1m 30s"`. The builder methods that
/// take two values take a table: `slow_calls` (`threshold`, `rate`) and `retry_after_bounds`
/// (`min`, `max`), both fields required. Set `count_window` or `time_window`, not both (the
/// builder would keep whichever it was given last, which a table does not order).
///
/// `adaptive` is an [`AdaptiveThresholds`] table: `consecutive_failures` and `open_duration`
/// for any rate (the floor, as in [`AdaptiveThresholds::new`]), and rows `above` it, as in
/// [`AdaptiveThresholds::above`]:
///
/// ```toml
/// [adaptive]
/// consecutive_failures = 10
/// open_duration = "60s"
/// above = [
///     { rate_per_minute = 50, consecutive_failures = 5, open_duration = "45s" },
///     { rate_per_minute = 100, consecutive_failures = 3, open_duration = "30s" },
/// ]
/// ```
///
/// The classifier is not a setting: it is code, given to the builder
/// ([`classifier`](cb::Builder::classifier)) after [`builder`](BreakerSettings::builder).
///
/// # Always buildable
///
/// Deserializing runs [`Builder::build`](cb::Builder::build), so a value out of range is an
/// error naming the field (see [`from_deserializer`](super::from_deserializer)), and a
/// `BreakerSettings` that exists always builds. `BreakerSettings::default()` (an empty table)
/// is the builder's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct BreakerSettings {
    fields: BreakerFields,
}

/// Whether a breaker waits or fails fast while its circuit is open (see
/// [`fail_fast`](cb::Builder::fail_fast)). Written `"wait"` or `"fail_fast"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `poll_ready` is `Pending` while the circuit is open (the builder's default).
    #[default]
    Wait,
    /// `call` returns a [`CircuitOpen`](crate::circuit_breaker::error::CircuitOpen) error at
    /// once while the circuit is open ([`fail_fast`](cb::Builder::fail_fast)).
    FailFast,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename = "BreakerSettings")]
struct BreakerFields {
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    name: Option<String>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    consecutive_failures: Option<u32>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    failure_rate: Option<f64>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    minimum_calls: Option<u32>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    count_window: Option<u32>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    time_window: Option<HumanDuration>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    slow_calls: Option<SlowCalls>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    open_duration: Option<HumanDuration>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    max_open_duration: Option<HumanDuration>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    half_open_permits: Option<u32>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    success_threshold: Option<u32>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    probe_timeout: Option<HumanDuration>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    mode: Option<Mode>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    retry_after_bounds: Option<RetryAfterBounds>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    history_len: Option<usize>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    adaptive: Option<AdaptiveFields>,
}

/// `slow_calls = { threshold = "10s", rate = 0.5 }`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlowCalls {
    #[serde(deserialize_with = "required")]
    threshold: HumanDuration,
    #[serde(deserialize_with = "required")]
    rate: f64,
}

/// `retry_after_bounds = { min = "1s", max = "10m" }`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryAfterBounds {
    #[serde(deserialize_with = "required")]
    min: HumanDuration,
    #[serde(deserialize_with = "required")]
    max: HumanDuration,
}

impl BreakerFields {
    fn builder(&self) -> cb::Builder {
        let mut b = CircuitBreakerLayer::builder();
        if let Some(name) = &self.name {
            b = b.name(name.clone());
        }
        if let Some(n) = self.consecutive_failures {
            b = b.consecutive_failures(n);
        }
        if let Some(rate) = self.failure_rate {
            b = b.failure_rate(rate);
        }
        if let Some(n) = self.minimum_calls {
            b = b.minimum_calls(n);
        }
        if let Some(n) = self.count_window {
            b = b.count_window(n);
        }
        if let Some(window) = self.time_window {
            b = b.time_window(window.0);
        }
        if let Some(slow) = self.slow_calls {
            b = b.slow_calls(slow.threshold.0, slow.rate);
        }
        if let Some(d) = self.open_duration {
            b = b.open_duration(d.0);
        }
        if let Some(d) = self.max_open_duration {
            b = b.max_open_duration(d.0);
        }
        if let Some(n) = self.half_open_permits {
            b = b.half_open_permits(n);
        }
        if let Some(n) = self.success_threshold {
            b = b.success_threshold(n);
        }
        if let Some(d) = self.probe_timeout {
            b = b.probe_timeout(d.0);
        }
        if self.mode == Some(Mode::FailFast) {
            b = b.fail_fast();
        }
        if let Some(bounds) = self.retry_after_bounds {
            b = b.retry_after_bounds(bounds.min.0, bounds.max.0);
        }
        if let Some(n) = self.history_len {
            b = b.history_len(n);
        }
        if let Some(table) = &self.adaptive {
            b = b.adaptive(table.thresholds());
        }
        b
    }

    fn check(self) -> Result<BreakerSettings, ConfigError> {
        if self.count_window.is_some() && self.time_window.is_some() {
            return Err(ConfigError::new(
                "time_window",
                "set either count_window or time_window, not both",
            ));
        }
        self.builder().build()?;
        Ok(BreakerSettings { fields: self })
    }
}

impl<'de> Deserialize<'de> for BreakerSettings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        capture::checked(deserializer, BreakerFields::check)
    }
}

impl BreakerSettings {
    /// A [`circuit_breaker::Builder`](cb::Builder) with these settings (and the builder's
    /// defaults for the rest), for adding what is code rather than data — a classifier — or
    /// overriding a setting, before [`build`](cb::Builder::build).
    ///
    /// Unnamed settings (say, one table per provider, keyed by the provider's name) can take
    /// their name from where they are: `settings.builder().name(settings.name().unwrap_or(key))`.
    pub fn builder(&self) -> cb::Builder {
        self.fields.builder()
    }

    /// The breaker layer these settings describe. It cannot fail: these settings were checked
    /// by the same builder when they were read.
    pub fn layer(&self) -> CircuitBreakerLayer {
        self.builder()
            .build()
            .expect("settings are checked by the builder when deserialized")
    }

    /// The breaker's name (`name`), if set.
    pub fn name(&self) -> Option<&str> {
        self.fields.name.as_deref()
    }

    /// `consecutive_failures`, if set.
    pub fn consecutive_failures(&self) -> Option<u32> {
        self.fields.consecutive_failures
    }

    /// `failure_rate`, if set.
    pub fn failure_rate(&self) -> Option<f64> {
        self.fields.failure_rate
    }

    /// `minimum_calls`, if set.
    pub fn minimum_calls(&self) -> Option<u32> {
        self.fields.minimum_calls
    }

    /// `count_window`, if set.
    pub fn count_window(&self) -> Option<u32> {
        self.fields.count_window
    }

    /// `time_window`, if set.
    pub fn time_window(&self) -> Option<Duration> {
        duration::get(self.fields.time_window)
    }

    /// `slow_calls` as `(threshold, rate)`, if set.
    pub fn slow_calls(&self) -> Option<(Duration, f64)> {
        self.fields.slow_calls.map(|s| (s.threshold.0, s.rate))
    }

    /// `open_duration`, if set.
    pub fn open_duration(&self) -> Option<Duration> {
        duration::get(self.fields.open_duration)
    }

    /// `max_open_duration`, if set.
    pub fn max_open_duration(&self) -> Option<Duration> {
        duration::get(self.fields.max_open_duration)
    }

    /// `half_open_permits`, if set.
    pub fn half_open_permits(&self) -> Option<u32> {
        self.fields.half_open_permits
    }

    /// `success_threshold`, if set.
    pub fn success_threshold(&self) -> Option<u32> {
        self.fields.success_threshold
    }

    /// `probe_timeout`, if set.
    pub fn probe_timeout(&self) -> Option<Duration> {
        duration::get(self.fields.probe_timeout)
    }

    /// `mode`, if set ([`Mode::Wait`] when not).
    pub fn mode(&self) -> Option<Mode> {
        self.fields.mode
    }

    /// `retry_after_bounds` as `(min, max)`, if set.
    pub fn retry_after_bounds(&self) -> Option<(Duration, Duration)> {
        self.fields.retry_after_bounds.map(|b| (b.min.0, b.max.0))
    }

    /// `history_len`, if set.
    pub fn history_len(&self) -> Option<usize> {
        self.fields.history_len
    }

    /// The `adaptive` table, if set.
    pub fn adaptive(&self) -> Option<AdaptiveThresholds> {
        self.fields
            .adaptive
            .as_ref()
            .map(AdaptiveFields::thresholds)
    }
}

impl From<&BreakerSettings> for cb::Builder {
    fn from(settings: &BreakerSettings) -> Self {
        settings.builder()
    }
}
