//! [`FleetSettings`]: a fleet's connection and sharing knobs, from a file (features `serde` and
//! `redis`).

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::capture::{self, leaf, required};
use super::duration::{self, HumanDuration};
use crate::fleet::{self, Fleet};
use crate::ConfigError;

/// The settings of a [`Fleet`], read from a configuration file: one optional field per
/// plain-data method of [`fleet::Builder`], named after it. A field left out keeps the builder's
/// default.
///
/// | field | builder method | example |
/// | --- | --- | --- |
/// | `url` | [`url`](fleet::Builder::url) | `"redis://10.0.0.5:6379/"` |
/// | `prefix` | [`prefix`](fleet::Builder::prefix) | `"tower-breaker"` |
/// | `fleet` | [`fleet`](fleet::Builder::fleet) | `"llm-gateway"` |
/// | `share_manual` | [`share_manual`](fleet::Builder::share_manual) | `true` |
/// | `share_failures` | [`share_failures`](fleet::Builder::share_failures) | `false` |
/// | `failure_window` | [`failure_window`](fleet::Builder::failure_window) | `"10s"` |
/// | `probe_lease` | [`probe_lease`](fleet::Builder::probe_lease) | `"20s"` |
/// | `command_timeout` | [`command_timeout`](fleet::Builder::command_timeout) | `"500ms"` |
/// | `reconnect_backoff` | [`reconnect_backoff`](fleet::Builder::reconnect_backoff) | `{ min = "100ms", max = "5s" }` |
/// | `queue_capacity` | [`queue_capacity`](fleet::Builder::queue_capacity) | `1024` |
/// | `max_remote_open` | [`max_remote_open`](fleet::Builder::max_remote_open) | `"1h"` |
///
/// Deserializing runs the builder's checks (without connecting or spawning anything), so a value
/// out of range is an error naming the field, and a `FleetSettings` that exists always builds
/// (given a tokio runtime). The runtime is code, not data: pass it to the
/// [`builder`](FleetSettings::builder) if [`build`](fleet::Builder::build) does not run on one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct FleetSettings {
    fields: FleetFields,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename = "FleetSettings")]
struct FleetFields {
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    url: Option<String>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    prefix: Option<String>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    fleet: Option<String>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    share_manual: Option<bool>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    share_failures: Option<bool>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    failure_window: Option<HumanDuration>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    probe_lease: Option<HumanDuration>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    command_timeout: Option<HumanDuration>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    reconnect_backoff: Option<Backoff>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    queue_capacity: Option<usize>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    max_remote_open: Option<HumanDuration>,
}

/// `reconnect_backoff = { min = "100ms", max = "5s" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Backoff {
    #[serde(deserialize_with = "required")]
    min: HumanDuration,
    #[serde(deserialize_with = "required")]
    max: HumanDuration,
}

impl FleetFields {
    fn builder(&self) -> fleet::Builder {
        let mut b = Fleet::builder();
        if let Some(url) = &self.url {
            b = b.url(url.clone());
        }
        if let Some(prefix) = &self.prefix {
            b = b.prefix(prefix.clone());
        }
        if let Some(name) = &self.fleet {
            b = b.fleet(name.clone());
        }
        if let Some(share) = self.share_manual {
            b = b.share_manual(share);
        }
        if let Some(share) = self.share_failures {
            b = b.share_failures(share);
        }
        if let Some(d) = self.failure_window {
            b = b.failure_window(d.0);
        }
        if let Some(d) = self.probe_lease {
            b = b.probe_lease(d.0);
        }
        if let Some(d) = self.command_timeout {
            b = b.command_timeout(d.0);
        }
        if let Some(backoff) = self.reconnect_backoff {
            b = b.reconnect_backoff(backoff.min.0, backoff.max.0);
        }
        if let Some(n) = self.queue_capacity {
            b = b.queue_capacity(n);
        }
        if let Some(d) = self.max_remote_open {
            b = b.max_remote_open(d.0);
        }
        b
    }

    fn check(self) -> Result<FleetSettings, ConfigError> {
        self.builder().check()?;
        Ok(FleetSettings { fields: self })
    }
}

impl<'de> Deserialize<'de> for FleetSettings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        capture::checked(deserializer, FleetFields::check)
    }
}

impl FleetSettings {
    /// A [`fleet::Builder`] with these settings (and the builder's defaults for the rest), for
    /// adding a runtime or overriding a setting before [`build`](fleet::Builder::build).
    pub fn builder(&self) -> fleet::Builder {
        self.fields.builder()
    }

    /// Builds the [`Fleet`] these settings describe on the current tokio runtime (see
    /// [`fleet::Builder::build`]); the only error left is a missing runtime.
    pub fn build(&self) -> Result<Fleet, ConfigError> {
        self.builder().build()
    }

    /// `url`, if set. (It may hold a password: `Debug` of the built fleet leaves it out.)
    pub fn url(&self) -> Option<&str> {
        self.fields.url.as_deref()
    }

    /// `prefix`, if set.
    pub fn prefix(&self) -> Option<&str> {
        self.fields.prefix.as_deref()
    }

    /// `fleet`, if set.
    pub fn fleet(&self) -> Option<&str> {
        self.fields.fleet.as_deref()
    }

    /// `share_manual`, if set.
    pub fn share_manual(&self) -> Option<bool> {
        self.fields.share_manual
    }

    /// `share_failures`, if set.
    pub fn share_failures(&self) -> Option<bool> {
        self.fields.share_failures
    }

    /// `failure_window`, if set.
    pub fn failure_window(&self) -> Option<Duration> {
        duration::get(self.fields.failure_window)
    }

    /// `probe_lease`, if set.
    pub fn probe_lease(&self) -> Option<Duration> {
        duration::get(self.fields.probe_lease)
    }

    /// `command_timeout`, if set.
    pub fn command_timeout(&self) -> Option<Duration> {
        duration::get(self.fields.command_timeout)
    }

    /// `reconnect_backoff` as `(min, max)`, if set.
    pub fn reconnect_backoff(&self) -> Option<(Duration, Duration)> {
        self.fields.reconnect_backoff.map(|b| (b.min.0, b.max.0))
    }

    /// `queue_capacity`, if set.
    pub fn queue_capacity(&self) -> Option<usize> {
        self.fields.queue_capacity
    }

    /// `max_remote_open`, if set.
    pub fn max_remote_open(&self) -> Option<Duration> {
        duration::get(self.fields.max_remote_open)
    }
}

impl From<&FleetSettings> for fleet::Builder {
    fn from(settings: &FleetSettings) -> Self {
        settings.builder()
    }
}
