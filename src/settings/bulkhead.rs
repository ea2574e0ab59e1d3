//! [`BulkheadSettings`]: a bulkhead's knobs, from a file.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::capture::{self, leaf};
use super::duration::{self, HumanDuration};
use crate::bulkhead::{self, BulkheadLayer};
use crate::ConfigError;

/// The settings of one [bulkhead](crate::bulkhead), read from a configuration file: one
/// optional field per plain-data method of [`bulkhead::Builder`], named after it. A field left
/// out keeps the builder's default.
///
/// | field | builder method | example |
/// | --- | --- | --- |
/// | `name` | [`name`](bulkhead::Builder::name) | `"openai"` |
/// | `max_concurrent` | [`max_concurrent`](bulkhead::Builder::max_concurrent) | `16` |
/// | `max_queue` | [`max_queue`](bulkhead::Builder::max_queue) | `64` |
/// | `max_wait` | [`max_wait`](bulkhead::Builder::max_wait) | `"2s"` |
///
/// How long a call keeps its slot ([`hold_permit`](bulkhead::Builder::hold_permit)) is a type,
/// not data: set it on the [`builder`](BulkheadSettings::builder).
///
/// Deserializing runs [`Builder::build`](bulkhead::Builder::build), so a value out of range is
/// an error naming the field, and a `BulkheadSettings` that exists always builds.
/// `BulkheadSettings::default()` (an empty table) is the builder's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct BulkheadSettings {
    fields: BulkheadFields,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename = "BulkheadSettings")]
struct BulkheadFields {
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
    max_concurrent: Option<usize>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    max_queue: Option<usize>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    max_wait: Option<HumanDuration>,
}

impl BulkheadFields {
    fn builder(&self) -> bulkhead::Builder {
        let mut b = BulkheadLayer::builder();
        if let Some(name) = &self.name {
            b = b.name(name.clone());
        }
        if let Some(n) = self.max_concurrent {
            b = b.max_concurrent(n);
        }
        if let Some(n) = self.max_queue {
            b = b.max_queue(n);
        }
        if let Some(d) = self.max_wait {
            b = b.max_wait(d.0);
        }
        b
    }

    fn check(self) -> Result<BulkheadSettings, ConfigError> {
        self.builder().build()?;
        Ok(BulkheadSettings { fields: self })
    }
}

impl<'de> Deserialize<'de> for BulkheadSettings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        capture::checked(deserializer, BulkheadFields::check)
    }
}

impl BulkheadSettings {
    /// A [`bulkhead::Builder`] with these settings (and the builder's defaults for the rest),
    /// for adding what is code rather than data, or overriding a setting, before
    /// [`build`](bulkhead::Builder::build).
    pub fn builder(&self) -> bulkhead::Builder {
        self.fields.builder()
    }

    /// The bulkhead layer these settings describe. It cannot fail: these settings were checked
    /// by the same builder when they were read.
    pub fn layer(&self) -> BulkheadLayer {
        self.builder()
            .build()
            .expect("settings are checked by the builder when deserialized")
    }

    /// The bulkhead's name (`name`), if set.
    pub fn name(&self) -> Option<&str> {
        self.fields.name.as_deref()
    }

    /// `max_concurrent`, if set.
    pub fn max_concurrent(&self) -> Option<usize> {
        self.fields.max_concurrent
    }

    /// `max_queue`, if set.
    pub fn max_queue(&self) -> Option<usize> {
        self.fields.max_queue
    }

    /// `max_wait`, if set.
    pub fn max_wait(&self) -> Option<Duration> {
        duration::get(self.fields.max_wait)
    }
}

impl From<&BulkheadSettings> for bulkhead::Builder {
    fn from(settings: &BulkheadSettings) -> Self {
        settings.builder()
    }
}
