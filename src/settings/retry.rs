//! [`RetrySettings`]: a retry policy's knobs, from a file.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use tower::retry::budget::{Budget, TpsBudget};

use super::capture::{self, leaf, required};
use super::duration::{self, HumanDuration};
use super::BudgetSettings;
use crate::circuit_breaker::DefaultClassifier;
use crate::retry::{self, ByClone, RetryPolicy};
use crate::ConfigError;

/// The settings of a breaker-aware [`RetryPolicy`], read from a configuration file: one
/// optional field per plain-data method of [`retry::Builder`], named after it, and its budget.
/// A field left out keeps the builder's default.
///
/// | field | builder method | example |
/// | --- | --- | --- |
/// | `max_attempts` | [`max_attempts`](retry::Builder::max_attempts) | `3` |
/// | `backoff` | [`backoff`](retry::Builder::backoff) | `{ base = "100ms", max = "10s" }` |
/// | `jitter` | [`jitter`](retry::Builder::jitter) | `0.5` |
/// | `max_retry_after` | [`max_retry_after`](retry::Builder::max_retry_after) | `"30s"` |
/// | `budget` | [`RetryPolicy::builder`]'s budget: a [`BudgetSettings`] table | `{ retry_percent = 0.1 }` |
///
/// `backoff` takes both its values (`base` and `max`), as the builder method does. The
/// classifier, the breaker's handle ([`circuit`](retry::Builder::circuit)) and how requests
/// are copied ([`clone_with`](retry::Builder::clone_with)) are code: set them on the
/// [`builder`](RetrySettings::builder).
///
/// Deserializing runs [`Builder::build`](retry::Builder::build), so a value out of range is
/// an error naming the field, and a `RetrySettings` that exists always builds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct RetrySettings {
    fields: RetryFields,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename = "RetrySettings")]
struct RetryFields {
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    max_attempts: Option<u32>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    backoff: Option<Backoff>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    jitter: Option<f64>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    max_retry_after: Option<HumanDuration>,
    #[serde(
        default,
        deserialize_with = "leaf",
        skip_serializing_if = "Option::is_none"
    )]
    budget: Option<BudgetSettings>,
}

/// `backoff = { base = "100ms", max = "10s" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Backoff {
    #[serde(deserialize_with = "required")]
    base: HumanDuration,
    #[serde(deserialize_with = "required")]
    max: HumanDuration,
}

impl RetryFields {
    fn apply<B>(
        &self,
        mut b: retry::Builder<DefaultClassifier, B, ByClone>,
    ) -> retry::Builder<DefaultClassifier, B, ByClone> {
        if let Some(n) = self.max_attempts {
            b = b.max_attempts(n);
        }
        if let Some(backoff) = self.backoff {
            b = b.backoff(backoff.base.0, backoff.max.0);
        }
        if let Some(ratio) = self.jitter {
            b = b.jitter(ratio);
        }
        if let Some(d) = self.max_retry_after {
            b = b.max_retry_after(d.0);
        }
        b
    }

    fn check(self) -> Result<RetrySettings, ConfigError> {
        // The budget checked itself; any budget will do for the builder's checks.
        self.apply(RetryPolicy::builder(Arc::new(TpsBudget::default())))
            .build()?;
        Ok(RetrySettings { fields: self })
    }
}

impl<'de> Deserialize<'de> for RetrySettings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        capture::checked(deserializer, RetryFields::check)
    }
}

impl RetrySettings {
    /// A [`retry::Builder`] with these settings, spending a new budget made from `budget` (or
    /// `TpsBudget::default()`), for adding what is code rather than data (a classifier, the
    /// breaker's [`circuit`](retry::Builder::circuit) handle) before
    /// [`build`](retry::Builder::build).
    pub fn builder(&self) -> retry::Builder<DefaultClassifier, TpsBudget, ByClone> {
        self.builder_with_budget(Arc::new(self.budget()))
    }

    /// Like [`builder`](RetrySettings::builder), spending `budget` instead of one made from
    /// the settings: to share one budget between policies.
    pub fn builder_with_budget<B: Budget>(
        &self,
        budget: Arc<B>,
    ) -> retry::Builder<DefaultClassifier, B, ByClone> {
        self.fields.apply(RetryPolicy::builder(budget))
    }

    /// The retry policy these settings describe, with a budget of its own. It cannot fail:
    /// these settings were checked by the same builder when they were read.
    pub fn policy(&self) -> RetryPolicy {
        self.builder()
            .build()
            .expect("settings are checked by the builder when deserialized")
    }

    /// A new budget from the `budget` table, or `TpsBudget::default()` without one.
    pub fn budget(&self) -> TpsBudget {
        self.fields
            .budget
            .as_ref()
            .map_or_else(TpsBudget::default, BudgetSettings::budget)
    }

    /// `max_attempts`, if set.
    pub fn max_attempts(&self) -> Option<u32> {
        self.fields.max_attempts
    }

    /// `backoff` as `(base, max)`, if set.
    pub fn backoff(&self) -> Option<(Duration, Duration)> {
        self.fields.backoff.map(|b| (b.base.0, b.max.0))
    }

    /// `jitter`, if set.
    pub fn jitter(&self) -> Option<f64> {
        self.fields.jitter
    }

    /// `max_retry_after`, if set.
    pub fn max_retry_after(&self) -> Option<Duration> {
        duration::get(self.fields.max_retry_after)
    }

    /// The `budget` table, if set.
    pub fn budget_settings(&self) -> Option<&BudgetSettings> {
        self.fields.budget.as_ref()
    }
}
