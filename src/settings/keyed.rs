//! [`KeyedSettings`]: keyed breakers' knobs, from a file.

use std::fmt;
use std::hash::Hash;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::capture::{self, leaf};
use super::duration::{self, HumanDuration};
use super::{BreakerSettings, BulkheadSettings};
use crate::keyed::{self, KeyedLayer};
use crate::ConfigError;

/// The settings of a [keyed](crate::keyed) layer (one breaker per key), read from a
/// configuration file: the plain-data methods of [`keyed::Builder`], named after them. A field
/// left out keeps the builder's default.
///
/// | field | builder method | example |
/// | --- | --- | --- |
/// | `max_keys` | [`max_keys`](keyed::Builder::max_keys) | `256` |
/// | `idle_timeout` | [`idle_timeout`](keyed::Builder::idle_timeout) | `"10m"` |
/// | `breaker` | [`breaker`](keyed::Builder::breaker) | a [`BreakerSettings`] table |
/// | `bulkhead` | [`bulkhead`](keyed::Builder::bulkhead) | a [`BulkheadSettings`] table |
///
/// As with the builder, each key's breaker and bulkhead are named after the key (a `name` in
/// `breaker` or `bulkhead` is not used), every key's breaker fails fast whatever its `mode`,
/// and per-key bulkheads do not queue (their `max_queue` and `max_wait` are not used); see
/// [`keyed`](crate::keyed).
///
/// The function that takes the key from a request, and per-key adjustments
/// ([`configure`](keyed::Builder::configure)), are code: give them to
/// [`builder`](KeyedSettings::builder).
///
/// Deserializing runs [`Builder::build`](keyed::Builder::build), so a value out of range is an
/// error naming the field — `breaker.failure_rate` in a nested table — and a `KeyedSettings`
/// that exists always builds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct KeyedSettings {
    fields: KeyedFields,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename = "KeyedSettings")]
struct KeyedFields {
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    max_keys: Option<usize>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    idle_timeout: Option<HumanDuration>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    breaker: Option<BreakerSettings>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    bulkhead: Option<BulkheadSettings>,
}

impl KeyedFields {
    fn builder<Req, K, F>(&self, key_fn: F) -> keyed::Builder<K, F>
    where
        F: Fn(&Req) -> K,
    {
        let mut b = KeyedLayer::builder::<Req, K, F>(key_fn);
        if let Some(breaker) = &self.breaker {
            b = b.breaker(breaker.builder());
        }
        if let Some(bulkhead) = &self.bulkhead {
            b = b.bulkhead(bulkhead.builder());
        }
        if let Some(n) = self.max_keys {
            b = b.max_keys(n);
        }
        if let Some(d) = self.idle_timeout {
            b = b.idle_timeout(d.0);
        }
        b
    }

    fn check(self) -> Result<KeyedSettings, ConfigError> {
        // The key function plays no part in what `build` checks.
        self.builder(|_: &()| String::new()).build()?;
        Ok(KeyedSettings { fields: self })
    }
}

impl<'de> Deserialize<'de> for KeyedSettings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        capture::checked(deserializer, KeyedFields::check)
    }
}

impl KeyedSettings {
    /// A [`keyed::Builder`] with these settings, taking each request's key with `key_fn`, for
    /// adding what is code rather than data ([`configure`](keyed::Builder::configure)) before
    /// [`build`](keyed::Builder::build).
    ///
    /// To give the keys' breakers a classifier, replace the breaker with one made from the same
    /// settings ([`keyed::Builder::breaker`] keeps `max_keys`, `idle_timeout` and the bulkhead):
    /// `.breaker(settings.breaker().map(BreakerSettings::builder).unwrap_or_default().classifier(c))`.
    pub fn builder<Req, K, F>(&self, key_fn: F) -> keyed::Builder<K, F>
    where
        F: Fn(&Req) -> K,
    {
        self.fields.builder(key_fn)
    }

    /// The keyed layer these settings describe, taking each request's key with `key_fn`. It
    /// cannot fail: these settings were checked by the same builder when they were read.
    pub fn layer<Req, K, F>(&self, key_fn: F) -> KeyedLayer<K, F>
    where
        F: Fn(&Req) -> K,
        K: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static,
    {
        self.builder(key_fn)
            .build()
            .expect("settings are checked by the builder when deserialized")
    }

    /// `max_keys`, if set.
    pub fn max_keys(&self) -> Option<usize> {
        self.fields.max_keys
    }

    /// `idle_timeout`, if set.
    pub fn idle_timeout(&self) -> Option<Duration> {
        duration::get(self.fields.idle_timeout)
    }

    /// The `breaker` table every key's breaker starts from, if set (the breaker's defaults
    /// when not).
    pub fn breaker(&self) -> Option<&BreakerSettings> {
        self.fields.breaker.as_ref()
    }

    /// The `bulkhead` table, if set: then each key also gets its own bulkhead.
    pub fn bulkhead(&self) -> Option<&BulkheadSettings> {
        self.fields.bulkhead.as_ref()
    }
}
